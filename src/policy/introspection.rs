//! `oauth2-introspection`: an opaque bearer token is checked by asking the
//! authorization server (RFC 7662): the gateway POSTs `token=...` to the
//! introspection URL, authenticated with its client credentials, and lets
//! the request through only when the answer is `"active": true` and the
//! token carries the required scopes.
//!
//! ```yaml
//! - oauth2-introspection:
//!     url: https://idp.example.com/oauth2/introspect
//!     clientId: gateway                      # HTTP Basic to the endpoint...
//!     clientSecret: "${INTROSPECTION_SECRET}"
//!     # authorization: "Bearer ${IDP_TOKEN}" # ...or a ready Authorization value
//!     timeout: 3s                            # default
//!     cacheTtl: 10m                          # default; never past the token's exp
//!     maxCacheEntries: 1000                  # default
//!     scopes: [orders:read]                  # required scopes...
//!     scopeMatch: all                        # ...all of them (default) or any
//!     realm: orders
//!     token: {header: Authorization}         # as for jwt-validation
//!     keepToken: true                        # default
//! ```
//!
//! No token → 401 `WWW-Authenticate: Bearer realm="..."`; inactive → 401
//! `error="invalid_token"`; missing scopes → 403 `error="insufficient_scope"`;
//! the server slow, unreachable or answering anything but a JSON 200 → 503
//! (never a pass). Active answers are cached (bounded), keyed by the
//! SHA-256 of the token; the consumer is the answer's `username`, else
//! `sub`, else `client_id`.

use super::common::{self, BearerRefusal, TokenSource};
use super::{Decision, Policy, REDACTED};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, DURATION, POSITIVE, STR};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const FIELDS: &[Field] = &[
    f("url", Ty::Url("an http(s) URL"))
        .req()
        .doc("The introspection endpoint (RFC 7662)."),
    f("clientId", STR),
    f("clientSecret", STR),
    f("authorization", STR).doc(
        "The Authorization header value sent to the endpoint (instead of clientId/clientSecret).",
    ),
    f("timeout", DURATION).default("\"3s\""),
    f("cacheTtl", DURATION).default("\"600s\""),
    f("maxCacheEntries", POSITIVE).default("1000"),
    f("scopes", Ty::List(&Ty::Str, true)),
    f("scopeMatch", Ty::AnyCase(&["all", "any", "and", "or"])).default("\"all\""),
    f("realm", STR),
    f("token", Ty::Obj(common::TOKEN_FIELDS))
        .doc("Where the token is read (default: Authorization: Bearer)."),
    f("keepToken", BOOL).default("false"),
];

/// How the gateway authenticates to the introspection endpoint; never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Client { id: String, secret: String },
    Authorization(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub url: String,
    pub credentials: Credentials,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub max_cache_entries: usize,
    pub scopes: Vec<String>,
    /// `true`: every scope (AND); `false`: any one (OR).
    pub all_scopes: bool,
    pub realm: String,
    pub token: TokenSource,
    pub keep_token: bool,
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let errors = d.errors.len();
    let url = d.required(&f, "url", path).and_then(|n| {
        let field = join(path, "url");
        d.http_url(n, &field, None)
    });
    let string =
        |d: &mut Decoder, key: &str| f.get(key).and_then(|n| d.string(n, &join(path, key)));
    let credentials = match (
        string(d, "clientId"),
        string(d, "clientSecret"),
        string(d, "authorization"),
    ) {
        (Some(id), Some(secret), None) => Some(Credentials::Client { id, secret }),
        (None, None, Some(a)) => Some(Credentials::Authorization(a)),
        _ if d.errors.len() > errors => None,
        _ => {
            d.error(
                f.pos,
                path,
                "give `clientId` and `clientSecret`, or `authorization` (the endpoint requires the gateway to authenticate)",
            );
            None
        }
    };
    let duration = |d: &mut Decoder, key: &str, default: Duration| match f.get(key) {
        Some(n) => d.duration(n, &join(path, key), false),
        None => Some(default),
    };
    let timeout = duration(d, "timeout", Duration::from_secs(3));
    let cache_ttl = duration(d, "cacheTtl", Duration::from_secs(600));
    let max_cache_entries = match f.get("maxCacheEntries") {
        Some(n) => d
            .positive_int(n, &join(path, "maxCacheEntries"))
            .map(|n| n as usize),
        None => Some(1000),
    };
    let scopes: Vec<String> = f
        .get("scopes")
        .map(|n| {
            let field = join(path, "scopes");
            d.list(n, &field, true)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .filter_map(|(i, s)| d.string(s, &format!("{field}[{i}]")))
                .collect()
        })
        .unwrap_or_default();
    let all_scopes = match f.get("scopeMatch") {
        None => Some(true),
        Some(n) => {
            let field = join(path, "scopeMatch");
            match d.scalar(n, &field, "all or any") {
                Some(t) if t.eq_ignore_ascii_case("all") || t.eq_ignore_ascii_case("and") => {
                    Some(true)
                }
                Some(t) if t.eq_ignore_ascii_case("any") || t.eq_ignore_ascii_case("or") => {
                    Some(false)
                }
                Some(t) => {
                    d.error(n.pos, &field, format!("{t:?}: expected all or any"));
                    None
                }
                None => None,
            }
        }
    };
    let realm = common::realm(d, f.get("realm"), path);
    let token = TokenSource::decode(d, f.get("token"), path);
    let keep_token = match f.get("keepToken") {
        Some(n) => d.bool(n, &join(path, "keepToken")),
        None => Some(true),
    };
    if d.errors.len() > errors {
        return None;
    }
    Some(Config {
        url: url?,
        credentials: credentials?,
        timeout: timeout?,
        cache_ttl: cache_ttl?,
        max_cache_entries: max_cache_entries?,
        scopes,
        all_scopes: all_scopes?,
        realm: realm?,
        token: token?,
        keep_token: keep_token?,
    })
}

pub fn describe(c: &Config) -> Value {
    let credentials = match &c.credentials {
        Credentials::Client { id, .. } => json!({"clientId": id, "clientSecret": REDACTED}),
        Credentials::Authorization(_) => json!({"authorization": REDACTED}),
    };
    json!({
        "url": c.url,
        "credentials": credentials,
        "timeoutMs": c.timeout.as_millis() as u64,
        "cacheTtlSeconds": c.cache_ttl.as_secs(),
        "maxCacheEntries": c.max_cache_entries,
        "scopes": c.scopes,
        "scopeMatch": if c.all_scopes { "all" } else { "any" },
        "realm": c.realm,
        "token": c.token.describe(),
        "keepToken": c.keep_token,
    })
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    Arc::new(Introspection::new(c))
}

#[derive(Clone)]
struct Active {
    consumer: Option<String>,
    /// Unix seconds after which the cache entry is dead.
    until: u64,
}

pub struct Introspection {
    config: Config,
    client: Option<reqwest::Client>,
    challenge: String,
    cache: Mutex<HashMap<[u8; 32], Active>>,
}

/// This policy let the request through.
#[derive(Clone, Copy)]
struct Accepted;

enum Failure {
    Missing,
    Inactive,
    Scope,
    Unavailable(String),
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Introspection {
    fn new(c: &Config) -> Introspection {
        let client = reqwest::Client::builder()
            .timeout(c.timeout)
            .connect_timeout(c.timeout)
            .build()
            .map_err(|e| log::error!("oauth2-introspection: no HTTP client: {e}"))
            .ok();
        Introspection {
            challenge: format!("Bearer realm=\"{}\"", c.realm),
            config: c.clone(),
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Active> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(digest).filter(|a| now_secs() < a.until).cloned()
    }

    fn remember(&self, digest: [u8; 32], active: Active) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= self.config.max_cache_entries {
            let now = now_secs();
            cache.retain(|_, a| a.until > now);
            while cache.len() >= self.config.max_cache_entries {
                let Some(k) = cache.keys().next().copied() else {
                    break;
                };
                cache.remove(&k);
            }
        }
        cache.insert(digest, active);
    }

    async fn introspect(&self, token: &str) -> Result<Value, Failure> {
        let Some(client) = &self.client else {
            return Err(Failure::Unavailable("no HTTP client".into()));
        };
        let mut req = client
            .post(&self.config.url)
            .header("accept", "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")]);
        req = match &self.config.credentials {
            Credentials::Client { id, secret } => req.basic_auth(id, Some(secret)),
            Credentials::Authorization(v) => req.header("authorization", v),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(Failure::Unavailable(format!("status {}", resp.status())));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| Failure::Unavailable(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| Failure::Unavailable(format!("not JSON: {e}")))
    }

    fn scopes_ok(&self, answer: &Value) -> bool {
        if self.config.scopes.is_empty() {
            return true;
        }
        let granted: Vec<&str> = answer
            .get("scope")
            .and_then(Value::as_str)
            .map(|s| s.split(' ').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let has = |s: &String| granted.contains(&s.as_str());
        if self.config.all_scopes {
            self.config.scopes.iter().all(has)
        } else {
            self.config.scopes.iter().any(has)
        }
    }

    async fn check(&self, token: &str) -> Result<Active, Failure> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(a) = self.cached(&digest) {
            return Ok(a);
        }
        let answer = self.introspect(token).await?;
        if answer.get("active") != Some(&Value::Bool(true)) {
            return Err(Failure::Inactive);
        }
        let now = now_secs();
        if let Some(exp) = answer.get("exp").and_then(Value::as_u64) {
            if exp <= now {
                return Err(Failure::Inactive);
            }
        }
        if !self.scopes_ok(&answer) {
            return Err(Failure::Scope);
        }
        let ttl_end = now + self.config.cache_ttl.as_secs();
        let until = answer
            .get("exp")
            .and_then(Value::as_u64)
            .map_or(ttl_end, |exp| exp.min(ttl_end));
        let consumer = ["username", "sub", "client_id"]
            .iter()
            .find_map(|k| answer.get(*k).and_then(Value::as_str))
            .map(str::to_string);
        let active = Active { consumer, until };
        self.remember(digest, active.clone());
        Ok(active)
    }

    fn refuse(&self, f: Failure) -> Decision {
        let scopes = self.config.scopes.join(" ");
        let r = match &f {
            Failure::Missing => BearerRefusal::Missing,
            Failure::Inactive => BearerRefusal::Invalid("the token is not active"),
            Failure::Scope => BearerRefusal::Scope("the token lacks a required scope", &scopes),
            Failure::Unavailable(why) => {
                log::warn!(
                    "oauth2-introspection: {} did not answer usefully: {why}",
                    self.config.url
                );
                BearerRefusal::Unavailable(
                    "the token could not be checked: the authorization server is unavailable",
                )
            }
        };
        common::refuse_bearer(&self.challenge, r)
    }
}

#[async_trait]
impl Policy for Introspection {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        let Some(token) = self.config.token.extract(req) else {
            return self.refuse(Failure::Missing);
        };
        match self.check(&token).await {
            Ok(active) => {
                if active.consumer.is_some() {
                    x.consumer = active.consumer;
                }
                x.ext.insert(Accepted);
                Decision::Continue
            }
            Err(f) => self.refuse(f),
        }
    }

    fn credential_headers(&self) -> Vec<http::HeaderName> {
        self.config.token.header().into_iter().collect()
    }

    fn on_upstream_request(&self, up: &mut RequestHeader, x: &mut Exchange) -> pingora::Result<()> {
        if !self.config.keep_token && x.ext.get::<Accepted>().is_some() {
            self.config.token.strip(up);
        }
        Ok(())
    }
}
