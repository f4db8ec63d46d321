//! `rate-limiting`: at most `maxRequests` per `period`, or several limits
//! at once (`limits`: all must allow a request), counted per policy
//! instance (a route's own policy counts that route; a document-level one
//! counts every route of the document together) and, with `key`, per
//! client: its IP, a header, a query parameter, the consumer set by an
//! authentication policy, or a JWT claim. A request without the key is
//! counted under its client IP. Over a limit: 429 with `Retry-After`.
//! Responses that passed the policy carry `X-RateLimit-Limit`,
//! `-Remaining` and `-Reset` (seconds) unless `exposeHeaders: false`.
//!
//! Counting is exact per key in bounded memory ([`window`]). With
//! `spec.server.sharedStorage.redis` configured, counts are shared by
//! every gateway process through Redis (one atomic script per request:
//! check every limit, then count); when Redis cannot be reached,
//! `failOpen: true` (the default) counts locally and `false` answers 503.

pub mod window;

use super::{Decision, LocalResponse, Policy};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, POSITIVE, SECONDS};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use crate::store::{self, RedisSettings};
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use window::{Limit, Verdict, Windows};

pub const FIELDS: &[Field] = &[
    f("maxRequests", POSITIVE).doc("Requests allowed per `period` (or `limits`)."),
    f("period", SECONDS).doc("The window: 1s, 1m, 1h."),
    f("limits", Ty::List(&Ty::Obj(LIMIT_FIELDS), false)).doc("Several windows, all enforced."),
    f("key", Ty::Text(KEYS))
        .default("\"client-ip\"")
        .doc("Whose requests are counted together."),
    f("maxKeys", POSITIVE).default("100000"),
    f("exposeHeaders", BOOL)
        .default("true")
        .doc("RateLimit-* headers on responses."),
    f("clusterizable", BOOL)
        .default("true")
        .doc("Share counts through `sharedStorage` when set."),
    f("failOpen", BOOL)
        .default("true")
        .doc("Serve when the shared storage is down."),
];
const LIMIT_FIELDS: &[Field] = &[f("maxRequests", POSITIVE).req(), f("period", SECONDS).req()];
const KEYS: &str =
    "client-ip, header:NAME, query:NAME, consumer, claim:NAME or a Flex expression #[...]";

/// Whose requests are counted together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    ClientIp,
    Header(http::HeaderName),
    Query(String),
    Consumer,
    Claim(String),
    /// A Flex expression (`#[...]`, `keySelector`): its value as text.
    Expr(Arc<crate::policy::expr::Expr>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub limits: Vec<Limit>,
    /// `None`: one counter for the policy instance.
    pub key: Option<KeySource>,
    pub max_keys: usize,
    pub expose_headers: bool,
    /// Share counts through the server's Redis when one is configured.
    pub clusterizable: bool,
    pub fail_open: bool,
    /// `X-RateLimit-Reset` in milliseconds (Flex's `rate-limiting-flex`)
    /// instead of seconds.
    pub reset_in_ms: bool,
    /// Set when the configuration is assembled: the instance's owner (names
    /// its Redis keys, the same in every process) and the server's Redis.
    pub scope: String,
    pub redis: Option<RedisSettings>,
}

fn decode_period(d: &mut Decoder, n: &Node, field: &str) -> Option<u64> {
    let p = d.duration(n, field, true)?;
    if p < Duration::from_millis(100) {
        d.error(n.pos, field, "the period must be at least 100ms");
        return None;
    }
    Some(p.as_millis() as u64)
}

fn decode_limit(d: &mut Decoder, f: &crate::config::decode::Fields, path: &str) -> Option<Limit> {
    let max = d
        .required(f, "maxRequests", path)
        .and_then(|n| d.positive_int(n, &join(path, "maxRequests")));
    let period = d
        .required(f, "period", path)
        .and_then(|n| decode_period(d, n, &join(path, "period")));
    Some(Limit {
        max: max?,
        period_ms: period?,
    })
}

fn decode_key(d: &mut Decoder, n: &Node, field: &str) -> Option<KeySource> {
    let text = d.scalar(n, field, KEYS)?;
    if let Some(inner) = text.strip_prefix("#[").and_then(|t| t.strip_suffix(']')) {
        return match crate::policy::expr::Expr::parse(inner) {
            Ok(e) => Some(KeySource::Expr(Arc::new(e))),
            Err(why) => {
                d.error(n.pos, field, why);
                None
            }
        };
    }
    let key = match text.split_once(':') {
        _ if text == "client-ip" => Some(KeySource::ClientIp),
        _ if text == "consumer" => Some(KeySource::Consumer),
        Some(("header", name)) => http::HeaderName::from_bytes(name.trim().as_bytes())
            .ok()
            .map(KeySource::Header),
        Some(("query", name)) if !name.trim().is_empty() => {
            Some(KeySource::Query(name.trim().to_string()))
        }
        Some(("claim", name)) if !name.trim().is_empty() => {
            Some(KeySource::Claim(name.trim().to_string()))
        }
        _ => None,
    };
    if key.is_none() {
        d.error(
            n.pos,
            field,
            format!("{text:?} is not a rate-limit key (expected {KEYS})"),
        );
    }
    key
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let before = d.errors.len();
    let mut limits = Vec::new();
    let single = f.get("maxRequests").is_some() || f.get("period").is_some();
    match (single, f.get("limits")) {
        (true, Some(n)) => d.error(
            n.pos,
            &join(path, "limits"),
            "give either maxRequests and period, or limits, not both",
        ),
        (true, None) => limits.extend(decode_limit(d, &f, path)),
        (false, Some(list)) => {
            for (item, at) in d.items(list, &join(path, "limits"), false) {
                if let Some(g) = d.map(item, &at, LIMIT_FIELDS) {
                    limits.extend(decode_limit(d, &g, &at));
                }
            }
            if limits.is_empty() && d.errors.len() == before {
                d.error(
                    list.pos,
                    &join(path, "limits"),
                    "at least one limit is required",
                );
            }
            if limits.len() > 8 {
                d.error(
                    list.pos,
                    &join(path, "limits"),
                    "at most 8 limits per policy",
                );
            }
        }
        (false, None) => d.error(
            f.pos,
            path,
            "missing `maxRequests` and `period` (or `limits`)",
        ),
    }
    let key = f
        .get("key")
        .and_then(|n| decode_key(d, n, &join(path, "key")));
    let max_keys = match f.get("maxKeys") {
        Some(n) => d
            .positive_int(n, &join(path, "maxKeys"))
            .map(|v| v.min(100_000_000) as usize),
        None => Some(100_000),
    };
    let flag = |d: &mut Decoder, key: &str, default: bool| match f.get(key) {
        Some(n) => d.bool(n, &join(path, key)),
        None => Some(default),
    };
    let expose_headers = flag(d, "exposeHeaders", true);
    let clusterizable = flag(d, "clusterizable", true);
    let fail_open = flag(d, "failOpen", true);
    if d.errors.len() > before {
        return None;
    }
    Some(Config {
        limits,
        key,
        max_keys: max_keys?,
        expose_headers: expose_headers?,
        clusterizable: clusterizable?,
        fail_open: fail_open?,
        reset_in_ms: false,
        scope: String::new(),
        redis: None,
    })
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    Arc::new(RateLimiter::new(c))
}

fn ms(v: u64) -> String {
    if v.is_multiple_of(1000) {
        format!("{}s", v / 1000)
    } else {
        format!("{v}ms")
    }
}

pub fn describe(c: &Config) -> Value {
    let key = c.key.as_ref().map(|k| match k {
        KeySource::ClientIp => "client-ip".to_string(),
        KeySource::Header(h) => format!("header:{h}"),
        KeySource::Query(q) => format!("query:{q}"),
        KeySource::Consumer => "consumer".to_string(),
        KeySource::Claim(c) => format!("claim:{c}"),
        KeySource::Expr(e) => format!("#[{}]", e.source()),
    });
    json!({
        "limits": c.limits.iter().map(|l| json!({"maxRequests": l.max, "period": ms(l.period_ms)})).collect::<Vec<_>>(),
        "key": key,
        "maxKeys": c.max_keys,
        "exposeHeaders": c.expose_headers,
        "shared": c.clusterizable && c.redis.is_some(),
        "failOpen": c.fail_open,
    })
}

/// Check every limit; count in each only when all allow. KEYS: one per
/// limit; ARGV: max and expiry (ms) per limit. Returns `[allowed, count
/// per limit...]` (counts after this request when allowed).
static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local counts = {}
local allowed = 1
for i, k in ipairs(KEYS) do
  local c = tonumber(redis.call('GET', k) or '0')
  counts[i] = c
  if c >= tonumber(ARGV[2 * i - 1]) then allowed = 0 end
end
if allowed == 1 then
  for i, k in ipairs(KEYS) do
    counts[i] = redis.call('INCR', k)
    if counts[i] == 1 then redis.call('PEXPIRE', k, ARGV[2 * i]) end
  end
end
local out = {allowed}
for i = 1, #counts do out[i + 1] = counts[i] end
return out
"#,
    )
});

pub struct RateLimiter {
    config: Config,
    local: Windows,
    redis: Option<Arc<store::Redis>>,
}

/// What the limiter decided, kept in the exchange for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitState {
    pub limit: u64,
    pub remaining: u64,
    /// Until the window ends.
    pub reset_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A key as stored: as given when short, else its SHA-256 (bounded memory
/// and Redis key length whatever the client sends).
fn stored_key(kind: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(kind.len() + 1 + value.len().min(64));
    out.extend_from_slice(kind.as_bytes());
    out.push(b':');
    if value.len() <= 64 {
        out.extend_from_slice(value);
    } else {
        let digest = Sha256::digest(value);
        for b in digest {
            out.extend_from_slice(format!("{b:02x}").as_bytes());
        }
    }
    out
}

impl RateLimiter {
    pub fn new(c: &Config) -> Self {
        RateLimiter {
            local: Windows::new(
                c.limits.clone(),
                if c.key.is_some() { c.max_keys } else { 1 },
            ),
            redis: c
                .redis
                .as_ref()
                .filter(|_| c.clusterizable)
                .map(store::redis),
            config: c.clone(),
        }
    }

    /// The counting key of a request.
    fn key(&self, req: &RequestHeader, x: &Exchange) -> Vec<u8> {
        let ip = || {
            let ip = x.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
            stored_key("ip", ip.as_bytes())
        };
        let Some(source) = &self.config.key else {
            return b"all".to_vec();
        };
        let found = match source {
            KeySource::ClientIp => None,
            KeySource::Header(h) => req.headers.get(h).map(|v| stored_key("h", v.as_bytes())),
            KeySource::Query(q) => req
                .uri
                .query()
                .and_then(|qs| super::common::query_value(qs, q))
                .map(|v| stored_key("q", v.as_bytes())),
            KeySource::Consumer => x.consumer.as_ref().map(|c| stored_key("c", c.as_bytes())),
            KeySource::Claim(name) => x.claims.as_ref().and_then(|c| match c.get(name)? {
                Value::String(s) => Some(stored_key("j", s.as_bytes())),
                Value::Number(n) => Some(stored_key("j", n.to_string().as_bytes())),
                _ => None,
            }),
            KeySource::Expr(e) => {
                let input = crate::policy::expr::Input::request(req, x);
                Some(e.eval(&input).text())
                    .filter(|v| !v.is_empty())
                    .map(|v| stored_key("e", v.as_bytes()))
            }
        };
        found.unwrap_or_else(ip)
    }

    /// Count locally (also the fallback when Redis is unreachable).
    pub fn check_local(&self, key: &[u8], now_ms: u64) -> Verdict {
        self.local.hit(key, now_ms)
    }

    async fn check_shared(
        &self,
        redis: &store::Redis,
        key: &[u8],
        now: u64,
    ) -> Result<Verdict, String> {
        let limits = self.local.limits();
        let key = String::from_utf8_lossy(key);
        let scope = &self.config.scope;
        // in a cluster a client's keys share a slot (the script reads them
        // all), and clients spread over the nodes
        let tagged = redis
            .clustered()
            .then(|| redis.tag(&format!("{scope}:{key}")).into_owned());
        let keys: Vec<String> = limits
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let window = now / l.period_ms;
                match &tagged {
                    None => format!("flexgw:rl:{scope}:{i}:{}:{window}:{key}", l.period_ms),
                    Some(t) => format!("flexgw:rl:{t}:{i}:{}:{window}", l.period_ms),
                }
            })
            .collect();
        let args: Vec<u64> = limits
            .iter()
            .flat_map(|l| [l.max, l.period_ms - now % l.period_ms + 1000])
            .collect();
        let out = redis.eval(&SCRIPT, &keys, &args).await?;
        let counts: Vec<u64> = out.iter().skip(1).map(|c| (*c).max(0) as u64).collect();
        if counts.len() != limits.len() {
            return Err("unexpected answer from the rate-limit script".into());
        }
        Ok(window::verdict(limits, &counts, out[0] == 1, now))
    }

    fn refusal(&self, v: &Verdict) -> LocalResponse {
        let period = self
            .local
            .limits()
            .iter()
            .find(|l| l.max == v.limit)
            .map_or(0, |l| l.period_ms);
        LocalResponse::new(
            429,
            format!(
                "rate limit exceeded: {} requests per {}",
                v.limit,
                ms(period)
            ),
        )
        .with_header("retry-after", v.reset_ms.div_ceil(1000).max(1).to_string())
    }
}

#[async_trait]
impl Policy for RateLimiter {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        let key = self.key(req, x);
        let now = now_ms();
        let v = match &self.redis {
            None => self.check_local(&key, now),
            Some(redis) => match self.check_shared(redis, &key, now).await {
                Ok(v) => v,
                Err(_) if self.config.fail_open => self.check_local(&key, now),
                Err(_) => {
                    return Decision::Respond(
                        LocalResponse::new(503, "rate limiting is unavailable; retry shortly")
                            .with_header("retry-after", "1"),
                    )
                }
            },
        };
        let state = RateLimitState {
            limit: v.limit,
            remaining: v.remaining,
            reset_ms: v.reset_ms,
        };
        if self.config.expose_headers {
            // several limits on one request (document and route): the
            // headers report the tightest
            let tightest = match x.ext.get::<RateLimitState>() {
                Some(prev) if prev.remaining <= state.remaining => *prev,
                _ => state,
            };
            x.ext.insert(tightest);
        }
        if v.allowed {
            Decision::Continue
        } else {
            Decision::Respond(self.refusal(&v))
        }
    }

    fn on_response(&self, resp: &mut ResponseHeader, x: &mut Exchange) -> pingora::Result<()> {
        if let (true, Some(s)) = (self.config.expose_headers, x.ext.get::<RateLimitState>()) {
            resp.insert_header("x-ratelimit-limit", s.limit)?;
            resp.insert_header("x-ratelimit-remaining", s.remaining)?;
            let reset = if self.config.reset_in_ms {
                s.reset_ms
            } else {
                s.reset_ms.div_ceil(1000).max(1)
            };
            resp.insert_header("x-ratelimit-reset", reset)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limits: &[(u64, u64)], key: Option<KeySource>) -> RateLimiter {
        RateLimiter::new(&Config {
            reset_in_ms: false,
            limits: limits
                .iter()
                .map(|&(max, period_ms)| Limit { max, period_ms })
                .collect(),
            key,
            max_keys: 1000,
            expose_headers: true,
            clusterizable: true,
            fail_open: true,
            scope: "t".into(),
            redis: None,
        })
    }

    #[test]
    fn counts_exactly_and_reports_remaining() {
        let l = limiter(&[(3, 60_000)], None);
        let t = 600_000 + 15_000;
        let results: Vec<(bool, u64)> = (0..5)
            .map(|_| {
                let v = l.check_local(b"all", t);
                (v.allowed, v.remaining)
            })
            .collect();
        assert_eq!(
            results,
            vec![(true, 2), (true, 1), (true, 0), (false, 0), (false, 0)]
        );
        let v = l.check_local(b"all", t);
        assert_eq!((v.limit, v.reset_ms), (3, 45_000));
    }

    #[test]
    fn keys_come_from_the_request_and_fall_back_to_the_client_ip() {
        let mut req = RequestHeader::build("GET", b"/a?api_key=k1", None).unwrap();
        req.insert_header("x-tenant", "acme").unwrap();
        let mut x = Exchange::new();
        x.client_ip = Some(std::net::IpAddr::from([10, 0, 0, 1]));
        let key =
            |source: KeySource, x: &Exchange| limiter(&[(1, 1000)], Some(source)).key(&req, x);
        let header = KeySource::Header(http::HeaderName::from_static("x-tenant"));
        assert_eq!(key(header, &x), b"h:acme");
        assert_eq!(key(KeySource::Query("api_key".into()), &x), b"q:k1");
        assert_eq!(key(KeySource::ClientIp, &x), b"ip:10.0.0.1");
        assert_eq!(key(KeySource::Consumer, &x), b"ip:10.0.0.1", "no consumer");
        x.consumer = Some("alice".into());
        assert_eq!(key(KeySource::Consumer, &x), b"c:alice");
        let mut claims = serde_json::Map::new();
        claims.insert("tenant".into(), json!(42));
        x.claims = Some(Arc::new(claims));
        assert_eq!(key(KeySource::Claim("tenant".into()), &x), b"j:42");
        let long = "x".repeat(500);
        assert_eq!(stored_key("h", long.as_bytes()).len(), 2 + 64);
    }
}
