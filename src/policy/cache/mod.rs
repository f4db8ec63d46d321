//! `response-cache` (Flex's `http-caching-flex`, the same fields): responses
//! kept and served again without asking the upstream, on `pingora-cache`'s
//! state machine (lookup, cache lock so concurrent misses fetch once,
//! `Vary`, `Age`) over our own bounded stores ([`store`]).
//!
//! Where it sits in the chain matters, as in Flex: the policies before it
//! run on every request (authentication before the cache: no cached
//! response reaches a client it would refuse); the policies after it run
//! only when the upstream is asked (a rate limit after it counts misses).
//! Its request hook decides whether the request may be answered from the
//! cache and stops the chain there ([`super::Decision::Defer`]); the proxy
//! looks the key up, and on a miss runs the rest of the chain before going
//! upstream. On a miss, the later policies' response hooks run before the
//! response is stored, so a hit carries what they added.
//!
//! - `requestExpression` (GET and HEAD by default) says which requests may
//!   be served from the cache; `httpCachingKey` (the path by default) is
//!   the key. A HEAD is answered from a GET's entry but never stored.
//! - `responseExpression` (Flex's list of statuses) says which responses
//!   are stored, for `ttl` seconds at most. With `useHttpCacheHeaders`
//!   (default), `Cache-Control: no-store`, `no-cache` or `private` on the
//!   response keeps it out, `s-maxage` / `max-age` / `Expires` shorten its
//!   life, and a request's `no-cache` skips the lookup (the answer is
//!   stored anew) and `no-store` keeps the answer out of the cache.
//! - Never stored, whatever the expressions say: responses with
//!   `Set-Cookie`, `Vary: *`, partial (206) and 304 answers, answers to
//!   HEAD, bodies over 1 MB (which still reach the client whole).
//! - `Vary` is honoured: a response that varies by a header is served only
//!   to requests with the same values of it.
//! - `invalidationHeader`: a request with that header set to `invalidate`
//!   drops its key's entry, `invalidate-all` every entry, before the
//!   lookup.
//! - `distributed: true` keeps entries in the server's shared storage
//!   (Redis), for every gateway process; without shared storage it is a
//!   validate-time notice and entries stay local.
//! - `persistCache` is accepted; entries in memory do not outlive the
//!   process (with `distributed: true` they live in Redis).

pub mod store;

use super::expr::{parse_value, Expr, Input, Piece};
use super::{Decision, Policy};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora_cache::cache_control::CacheControl;
use pingora_cache::key::{hash_key, CacheKey, HashBinary};
use pingora_cache::{CacheMeta, VarianceBuilder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{json, Value};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};
use store::Store;

const DEFAULT_KEY: &str = "#[attributes.requestPath]";
const DEFAULT_REQUEST: &str = "#[attributes.method == 'GET' or attributes.method == 'HEAD']";
const DEFAULT_RESPONSE: &str =
    "#[[200, 203, 204, 206, 300, 301, 404, 405, 410, 414, 501] contains attributes.statusCode]";

pub const FIELDS: &[Field] = &[
    f("httpCachingKey", Ty::Text("a value with Flex expressions"))
        .default("\"#[attributes.requestPath]\"")
        .doc("The entry's key, evaluated per request."),
    f("maxCacheEntries", Ty::Int(1, 10_000_000)).default("10000"),
    f("maxCacheSize", Ty::Size)
        .default("\"64MB\"")
        .doc("Bytes the entries of this policy may hold in memory (least recently used out first)."),
    f("ttl", Ty::Int(1, 31_536_000))
        .default("600")
        .doc("Seconds an entry is served, at most."),
    f("useHttpCacheHeaders", BOOL).default("true"),
    f("invalidationHeader", Ty::Scalar)
        .default("\"\"")
        .doc("A request header: `invalidate` drops the key's entry, `invalidate-all` every entry."),
    f("requestExpression", Ty::Text("a Flex expression")).default(
        "\"#[attributes.method == 'GET' or attributes.method == 'HEAD']\"",
    ),
    f("responseExpression", Ty::Text("a Flex expression")).default(
        "\"#[[200, 203, 204, 206, 300, 301, 404, 405, 410, 414, 501] contains attributes.statusCode]\"",
    ),
    f("distributed", BOOL)
        .default("false")
        .doc("Entries in the shared storage (Redis), for every gateway process."),
    f("persistCache", BOOL)
        .default("false")
        .doc("Accepted; entries in memory do not outlive the process."),
];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub key: Vec<Piece>,
    pub max_entries: usize,
    pub max_bytes: usize,
    pub ttl: Duration,
    pub use_headers: bool,
    pub invalidation: Option<http::HeaderName>,
    pub request: Expr,
    pub response: Expr,
    pub distributed: bool,
    pub persist: bool,
    /// The instance's scope and shared storage (set when the configuration
    /// is assembled).
    pub scope: String,
    pub redis: Option<crate::store::RedisSettings>,
}

fn expression(d: &mut Decoder, node: Option<&Node>, path: &str, default: &str) -> Option<Expr> {
    let (text, pos) = match node {
        Some(n) => (d.scalar(n, path, "a Flex expression")?.to_string(), n.pos),
        None => (default.to_string(), Default::default()),
    };
    let inner = text
        .trim()
        .strip_prefix("#[")
        .and_then(|t| t.strip_suffix(']'));
    let Some(inner) = inner else {
        d.error(
            pos,
            path,
            format!("{text:?} is not an expression: write #[...]"),
        );
        return None;
    };
    match Expr::parse(inner) {
        Ok(e) => Some(e),
        Err(why) => {
            d.error(pos, path, why);
            None
        }
    }
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let key = match f.get("httpCachingKey") {
        Some(n) => {
            let p = join(path, "httpCachingKey");
            d.scalar(n, &p, "a value with Flex expressions")
                .map(str::to_string)
                .and_then(|t| match parse_value(&t) {
                    Ok(pieces) => Some(pieces),
                    Err(why) => {
                        d.error(n.pos, &p, why);
                        None
                    }
                })
        }
        None => parse_value(DEFAULT_KEY).ok(),
    };
    let int = |d: &mut Decoder, k: &str, min: i64, max: i64, default: i64| match f.get(k) {
        Some(n) => d.int(n, &join(path, k), min, max),
        None => Some(default),
    };
    let max_entries = int(d, "maxCacheEntries", 1, 10_000_000, 10_000);
    let ttl = int(d, "ttl", 1, 31_536_000, 600);
    let max_bytes = match f.get("maxCacheSize") {
        Some(n) => d.size(n, &join(path, "maxCacheSize")),
        None => Some(64 << 20),
    };
    let flag = |d: &mut Decoder, k: &str, default: bool| match f.get(k) {
        Some(n) => d.bool(n, &join(path, k)),
        None => Some(default),
    };
    let use_headers = flag(d, "useHttpCacheHeaders", true);
    let distributed = flag(d, "distributed", false);
    let persist = flag(d, "persistCache", false);
    let invalidation = match f.get("invalidationHeader") {
        None => Some(None),
        Some(n) => {
            let p = join(path, "invalidationHeader");
            match d.scalar(n, &p, "a header name").map(str::trim) {
                None => None,
                Some("") => Some(None),
                Some(h) => match http::HeaderName::from_bytes(h.as_bytes()) {
                    Ok(h) => Some(Some(h)),
                    Err(_) => {
                        d.error(n.pos, &p, format!("{h:?} is not a header name"));
                        None
                    }
                },
            }
        }
    };
    let request = expression(
        d,
        f.get("requestExpression"),
        &join(path, "requestExpression"),
        DEFAULT_REQUEST,
    );
    let response = expression(
        d,
        f.get("responseExpression"),
        &join(path, "responseExpression"),
        DEFAULT_RESPONSE,
    );
    if persist == Some(true) && distributed == Some(false) {
        if let Some(n) = f.get("persistCache") {
            d.notice(
                n.pos,
                &join(path, "persistCache"),
                "persistCache is accepted but not applied: entries are kept in memory and do not outlive the process (with distributed: true they live in the shared storage)",
            );
        }
    }
    Some(Config {
        key: key?,
        max_entries: max_entries? as usize,
        max_bytes: max_bytes? as usize,
        ttl: Duration::from_secs(ttl? as u64),
        use_headers: use_headers?,
        invalidation: invalidation?,
        request: request?,
        response: response?,
        distributed: distributed?,
        persist: persist?,
        scope: String::new(),
        redis: None,
    })
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    let store = match (&c.redis, c.distributed) {
        (Some(r), true) => Store::Shared(store::shared(
            &c.scope,
            crate::store::redis(r),
            c.max_entries,
        )),
        (None, true) => {
            log::warn!(
                "response cache ({}): distributed: true without sharedStorage; entries are kept in this process",
                c.scope
            );
            Store::Local(store::local(&c.scope, c.max_entries, c.max_bytes))
        }
        _ => Store::Local(store::local(&c.scope, c.max_entries, c.max_bytes)),
    };
    Arc::new(ResponseCache {
        c: Arc::new(c.clone()),
        store,
    })
}

fn source(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => t.clone(),
            Piece::Expr(e) => format!("#[{}]", e.source()),
        })
        .collect()
}

pub fn describe(c: &Config) -> Value {
    let storage = match (&c.redis, c.distributed) {
        (Some(r), true) => format!("redis {}", r.describe()),
        (None, true) => "memory (distributed: true, but no sharedStorage is configured)".into(),
        _ => "memory".into(),
    };
    json!({
        "httpCachingKey": source(&c.key),
        "maxCacheEntries": c.max_entries,
        "maxCacheSizeBytes": c.max_bytes,
        "ttlSeconds": c.ttl.as_secs(),
        "useHttpCacheHeaders": c.use_headers,
        "invalidationHeader": c.invalidation.as_ref().map(|h| h.as_str()),
        "requestExpression": format!("#[{}]", c.request.source()),
        "responseExpression": format!("#[{}]", c.response.source()),
        "distributed": c.distributed,
        "storage": storage,
        "persistCache": match (c.persist, c.distributed && c.redis.is_some()) {
            (false, _) => "off",
            (true, true) => "applied (entries live in the shared storage)",
            (true, false) => "not applied (entries are kept in memory)",
        },
        "maxEntryBytes": store::MAX_ENTRY,
    })
}

/// The cache lock every response cache shares: concurrent misses on one
/// key wait for the first to fetch it (its key names the policy instance,
/// so one route never waits on another's). A writer holding it longer than
/// 10 s lets the waiters go upstream themselves.
pub fn lock() -> &'static pingora_cache::lock::CacheKeyLockImpl {
    static LOCK: LazyLock<&'static pingora_cache::lock::CacheKeyLockImpl> = LazyLock::new(|| {
        Box::leak(pingora_cache::lock::CacheLock::new_boxed(
            Duration::from_secs(10),
        ))
    });
    *LOCK
}

/// Why a response is not stored, when the reason is the request's, not
/// the response's: the key is not marked uncacheable for it.
const ASKED_HEAD: Refusal = "only answers to GET are stored";
const ASKED_NO_STORE: Refusal = "the request said no-store";
const PARTIAL: Refusal = "partial and not-modified answers are not stored";

/// The keys whose last answer could not be stored (by the response's own
/// terms: status, Cache-Control, Set-Cookie, ...): their next requests go
/// straight upstream, without a lookup or the cache lock, so a hot key
/// that is never stored does not queue its requests behind one another.
/// A storable answer to one of them clears the mark. Bounded: 16 × 8,192
/// keys (128-bit hashes), least recently used out.
pub fn predictor() -> &'static (dyn pingora_cache::predictor::CacheablePredictor + Sync) {
    type P = pingora_cache::predictor::Predictor<16>;
    static PREDICTOR: LazyLock<&'static P> = LazyLock::new(|| {
        let by_request = |r: &'static str| matches!(r, ASKED_HEAD | ASKED_NO_STORE | PARTIAL);
        Box::leak(Box::new(P::new(8192, Some(by_request))))
    });
    *PREDICTOR
}

/// What the cache did for a request, for the access log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache.
    Hit,
    /// Looked up, not found (or skipped by the request's `no-cache`):
    /// asked upstream.
    Miss,
    /// Found but no longer fresh: asked upstream (with the entry's
    /// validators, if it has any), which sent a new answer.
    Expired,
    /// Found but no longer fresh; the backend answered the conditional
    /// request `304 Not Modified`: the entry was refreshed and served.
    Revalidated,
    /// The request may not be served from the cache (`requestExpression`).
    Bypass,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Expired => "expired",
            Outcome::Revalidated => "revalidated",
            Outcome::Bypass => "bypass",
        }
    }
}

/// The cache's counters, handles kept so a request touches no label map.
pub struct Counts {
    /// `flexgw_cache_lookups_total{result}`.
    pub lookups: Family<[(&'static str, &'static str); 1], Counter>,
    hit: Counter,
    miss: Counter,
    expired: Counter,
    revalidated: Counter,
    bypass: Counter,
    /// `flexgw_cache_stores_total{result}`: stored, uncacheable, too_big.
    pub stores: Family<[(&'static str, &'static str); 1], Counter>,
    stored: Counter,
    uncacheable: Counter,
    pub(crate) too_big: Counter,
    /// `flexgw_cache_evictions_total`.
    pub evicted: Counter,
    /// `flexgw_cache_invalidations_total`.
    pub invalidations: Counter,
}

pub static COUNTS: LazyLock<Counts> = LazyLock::new(|| {
    let lookups = Family::default();
    let stores = Family::default();
    let one = |f: &Family<_, Counter>, r| f.get_or_create(&[("result", r)]).clone();
    Counts {
        hit: one(&lookups, "hit"),
        miss: one(&lookups, "miss"),
        expired: one(&lookups, "expired"),
        revalidated: one(&lookups, "revalidated"),
        bypass: one(&lookups, "bypass"),
        stored: one(&stores, "stored"),
        uncacheable: one(&stores, "uncacheable"),
        too_big: one(&stores, "too_big"),
        lookups,
        stores,
        evicted: Counter::default(),
        invalidations: Counter::default(),
    }
});

impl Counts {
    pub fn count(&self, o: Outcome) {
        match o {
            Outcome::Hit => &self.hit,
            Outcome::Miss => &self.miss,
            Outcome::Expired => &self.expired,
            Outcome::Revalidated => &self.revalidated,
            Outcome::Bypass => &self.bypass,
        }
        .inc();
    }
}

pub struct ResponseCache {
    c: Arc<Config>,
    store: Store,
}

/// A request the cache may answer: what the proxy's cache phases need.
#[derive(Clone)]
pub struct Lookup {
    c: Arc<Config>,
    pub store: Store,
    /// The key's hash (computed once: `pingora-cache` asks for it several
    /// times a request).
    key: HashBinary,
    /// The request said `Cache-Control: no-cache` (or `Pragma: no-cache`).
    pub no_cache: bool,
    /// The request said `no-store`.
    no_store: bool,
}

/// The request may not be answered from the cache (`requestExpression`).
#[derive(Clone, Copy)]
pub struct Bypassed;

fn request_directives(req: &RequestHeader) -> (bool, bool) {
    let cc = CacheControl::from_req_headers(req);
    let no_cache = cc.as_ref().is_some_and(|c| c.no_cache())
        || req
            .headers
            .get_all(http::header::PRAGMA)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"));
    (no_cache, cc.as_ref().is_some_and(|c| c.no_store()))
}

impl ResponseCache {
    fn key(&self, input: &Input) -> String {
        let mut key = String::with_capacity(self.c.scope.len() + 64);
        // the instance's scope first: one route's entries are never another's
        key.push_str(&self.c.scope);
        key.push('\0');
        for p in &self.c.key {
            match p {
                Piece::Text(t) => key.push_str(t),
                Piece::Expr(e) => key.push_str(&e.eval(input).text()),
            }
        }
        key
    }
}

#[async_trait]
impl Policy for ResponseCache {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        let input = Input::request(req, x);
        let key = self.key(&input);
        if let Some(h) = &self.c.invalidation {
            let asked = req.headers.get(h).map(|v| v.as_bytes().trim_ascii());
            let done = match asked {
                Some(v) if v.eq_ignore_ascii_case(b"invalidate") => {
                    Some(self.store.invalidate(&cache_key(hash_key(&key))).await)
                }
                Some(v) if v.eq_ignore_ascii_case(b"invalidate-all") => {
                    Some(self.store.invalidate_all().await)
                }
                _ => None,
            };
            match done {
                Some(Ok(())) => {
                    COUNTS.invalidations.inc();
                }
                Some(Err(e)) => log::warn!("response cache: invalidation failed: {e}"),
                None => {}
            }
        }
        if !self.c.request.eval(&input).truthy() {
            x.ext.insert(Bypassed);
            return Decision::Continue;
        }
        let (no_cache, no_store) = match self.c.use_headers {
            true => request_directives(req),
            false => (false, false),
        };
        x.ext.insert(Lookup {
            c: self.c.clone(),
            store: self.store,
            key: hash_key(&key),
            no_cache,
            no_store,
        });
        Decision::Defer
    }
}

/// Why a response is not stored.
pub type Refusal = &'static str;

/// A `pingora-cache` key for a key's hash (the hash is what it uses).
fn cache_key(hash: HashBinary) -> CacheKey {
    let mut k = CacheKey::new(Vec::new(), "");
    k.set_primary_bin_override(hash);
    k
}

impl Lookup {
    pub fn cache_key(&self) -> CacheKey {
        cache_key(self.key)
    }

    /// Whether this response is stored, and until when.
    pub fn admit(
        &self,
        req: &RequestHeader,
        resp: &ResponseHeader,
        x: &Exchange,
    ) -> Result<CacheMeta, Refusal> {
        let out = self.decide(req, resp, x);
        match &out {
            Ok(_) => COUNTS.stored.inc(),
            Err(_) => COUNTS.uncacheable.inc(),
        };
        out
    }

    fn decide(
        &self,
        req: &RequestHeader,
        resp: &ResponseHeader,
        x: &Exchange,
    ) -> Result<CacheMeta, Refusal> {
        let status = resp.status.as_u16();
        if req.method != http::Method::GET {
            return Err(ASKED_HEAD);
        }
        if self.no_store {
            return Err(ASKED_NO_STORE);
        }
        if matches!(status, 206 | 304) || resp.status.is_informational() {
            return Err(PARTIAL);
        }
        let input = Input {
            method: Some(req.method.as_str()),
            query: req.uri.query(),
            headers: Some(&resp.headers),
            x,
            status: Some(status),
            payload: None,
        };
        if !self.c.response.eval(&input).truthy() {
            return Err("responseExpression");
        }
        if resp.headers.contains_key(http::header::SET_COOKIE) {
            return Err("responses that set cookies are not stored");
        }
        if vary_names(resp).any(|n| n == "*") {
            return Err("Vary: *");
        }
        let now = SystemTime::now();
        let mut ttl = self.c.ttl;
        if self.c.use_headers {
            if let Some(cc) = CacheControl::from_resp_headers(resp) {
                if cc.no_store() || cc.no_cache() || cc.private() {
                    return Err("Cache-Control forbids storing");
                }
                let given = cc
                    .s_maxage()
                    .ok()
                    .flatten()
                    .or_else(|| cc.max_age().ok().flatten());
                if let Some(secs) = given {
                    ttl = ttl.min(Duration::from_secs(secs.into()));
                } else if let Some(left) = expires_in(resp, now) {
                    ttl = ttl.min(left);
                }
            } else if let Some(left) = expires_in(resp, now) {
                ttl = ttl.min(left);
            }
            let age = header_u64(resp, http::header::AGE).unwrap_or(0);
            ttl = ttl.saturating_sub(Duration::from_secs(age));
        }
        if ttl.is_zero() {
            return Err("already stale");
        }
        Ok(CacheMeta::new(now + ttl, now, 0, 0, resp.clone()))
    }
}

fn header_u64(resp: &ResponseHeader, h: http::header::HeaderName) -> Option<u64> {
    resp.headers.get(h)?.to_str().ok()?.trim().parse().ok()
}

/// What `Expires` leaves (against the response's `Date`, else now); an
/// invalid date is in the past (RFC 9111 §5.3).
fn expires_in(resp: &ResponseHeader, now: SystemTime) -> Option<Duration> {
    let date = |h| {
        resp.headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(|v| httpdate::parse_http_date(v).ok())
    };
    let expires = date(http::header::EXPIRES)?;
    let Some(expires) = expires else {
        return Some(Duration::ZERO);
    };
    let base = date(http::header::DATE).flatten().unwrap_or(now);
    Some(expires.duration_since(base).unwrap_or(Duration::ZERO))
}

/// The header names a response's `Vary` lists, lower-case.
fn vary_names(resp: &ResponseHeader) -> impl Iterator<Item = String> + '_ {
    resp.headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

/// The variant of a stored response a request asks for: a hash of the
/// request's values of the headers its `Vary` names (`None`: no `Vary`).
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let names: Vec<String> = vary_names(meta.response_header()).collect();
    if names.is_empty() {
        return None;
    }
    let mut names = names;
    names.sort();
    names.dedup();
    let mut v = VarianceBuilder::new();
    for n in names {
        let values: Vec<u8> = req
            .headers
            .get_all(n.as_str())
            .iter()
            .flat_map(|v| v.as_bytes().iter().copied().chain([b'\n']))
            .collect();
        v.add_owned_name_value(n, values);
    }
    v.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;

    fn config(text: &str) -> Result<Config, String> {
        let docs = yaml::parse_documents(text).map_err(|e| format!("{e:?}"))?;
        let mut d = Decoder::new("t.yaml");
        let c = decode(&mut d, &docs[0], "config");
        match c {
            Some(c) if d.errors.is_empty() => Ok(c),
            _ => Err(format!("{:?}", d.errors)),
        }
    }

    fn lookup(c: Config) -> Lookup {
        Lookup {
            store: Store::Local(store::local("test:decide", 10, 1 << 20)),
            c: Arc::new(c),
            key: hash_key("k"),
            no_cache: false,
            no_store: false,
        }
    }

    fn resp(status: u16, headers: &[(&'static str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in headers {
            r.append_header(*n, *v).unwrap();
        }
        r
    }

    fn ttl(l: &Lookup, r: &ResponseHeader) -> Result<u64, Refusal> {
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let m = l.decide(&req, r, &Exchange::new())?;
        Ok(m.fresh_until()
            .duration_since(SystemTime::now())
            .unwrap()
            .as_secs_f64()
            .round() as u64)
    }

    #[test]
    fn flex_defaults_and_http_cache_headers() {
        let l = lookup(config("{}").unwrap());
        assert_eq!(ttl(&l, &resp(200, &[])), Ok(600));
        assert_eq!(ttl(&l, &resp(404, &[])), Ok(600));
        assert!(ttl(&l, &resp(500, &[])).is_err());
        assert!(ttl(&l, &resp(206, &[])).is_err(), "never a partial answer");
        assert_eq!(
            ttl(&l, &resp(200, &[("cache-control", "max-age=30")])),
            Ok(30)
        );
        assert_eq!(
            ttl(
                &l,
                &resp(200, &[("cache-control", "max-age=30, s-maxage=90")])
            ),
            Ok(90)
        );
        assert_eq!(
            ttl(&l, &resp(200, &[("cache-control", "max-age=9000")])),
            Ok(600)
        );
        assert_eq!(
            ttl(
                &l,
                &resp(200, &[("cache-control", "max-age=30"), ("age", "10")])
            ),
            Ok(20)
        );
        for cc in ["no-store", "no-cache", "private", "private, max-age=60"] {
            assert!(
                ttl(&l, &resp(200, &[("cache-control", cc)])).is_err(),
                "{cc}"
            );
        }
        assert!(ttl(&l, &resp(200, &[("set-cookie", "s=1")])).is_err());
        assert!(ttl(&l, &resp(200, &[("vary", "Accept, *")])).is_err());
        let date = httpdate::fmt_http_date(SystemTime::now());
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        assert_eq!(
            ttl(&l, &resp(200, &[("date", &date), ("expires", &later)])),
            Ok(120)
        );
        assert!(
            ttl(&l, &resp(200, &[("expires", "0")])).is_err(),
            "invalid: past"
        );
        // the headers ignored when told so
        let l = lookup(config("useHttpCacheHeaders: false\nttl: 5").unwrap());
        assert_eq!(ttl(&l, &resp(200, &[("cache-control", "no-store")])), Ok(5));
        assert!(ttl(&l, &resp(200, &[("set-cookie", "s=1")])).is_err());
    }

    #[test]
    fn expressions_and_fields() {
        let c = config(
            "httpCachingKey: \"#[attributes.requestPath]-#[attributes.headers['x-tenant']]\"\nresponseExpression: \"#[attributes.statusCode == 201]\"\ninvalidationHeader: x-invalidate",
        )
        .unwrap();
        assert_eq!(
            c.invalidation.as_ref().map(|h| h.as_str()),
            Some("x-invalidate")
        );
        let l = lookup(c);
        assert!(ttl(&l, &resp(200, &[])).is_err());
        assert_eq!(ttl(&l, &resp(201, &[])), Ok(600));
        assert!(config("requestExpression: attributes.method").is_err());
        assert!(config("responseExpression: \"#[sizeOf(x)]\"").is_err());
        assert!(config("ttl: 0").is_err());
        assert!(config("maxCachEntries: 5").is_err());
    }

    #[test]
    fn variants_by_the_vary_headers_values() {
        let meta = |vary: &str| {
            let now = SystemTime::now();
            CacheMeta::new(now, now, 0, 0, resp(200, &[("vary", vary)]))
        };
        let req = |lang: Option<&str>| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            if let Some(l) = lang {
                r.insert_header("accept-language", l).unwrap();
            }
            r
        };
        let m = meta("Accept-Language");
        let (en, fr, none) = (
            variance(&m, &req(Some("en"))),
            variance(&m, &req(Some("fr"))),
            variance(&m, &req(None)),
        );
        assert!(en.is_some() && en != fr && en != none && fr != none);
        assert_eq!(
            en,
            variance(&meta("accept-language, Accept-Language"), &req(Some("en")))
        );
        let now = SystemTime::now();
        assert_eq!(
            variance(
                &CacheMeta::new(now, now, 0, 0, resp(200, &[])),
                &req(Some("en"))
            ),
            None
        );
    }
}
