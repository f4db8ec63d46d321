//! `jwt-validation`: the request must carry a JSON Web Token signed by one
//! of the configured keys, within its validity window, with the required
//! issuer, audience and claims.
//!
//! ```yaml
//! - jwt-validation:
//!     realm: orders                       # in WWW-Authenticate (default "flex-gateway")
//!     token: {header: Authorization}      # default (Bearer); or {header: X-Token},
//!                                         # {queryParam: access_token}, {cookie: session}
//!     keys:                               # inline keys, each bound to its algorithms
//!       - {kid: k1, algorithm: HS256, secret: "${JWT_SECRET}"}
//!       - {algorithm: RS256, publicKey: "file:/etc/flex-gateway/rsa.pem"}
//!     jwks:                               # key sets fetched over HTTP(S)
//!       - url: https://idp.example.com/.well-known/jwks.json
//!         algorithms: [RS256, ES256]      # default: every asymmetric algorithm
//!     jwksTtl: 60m                        # refresh interval
//!     jwksTimeout: 10s                    # fetch timeout
//!     jwksMinRefresh: 5s                  # an unknown kid refetches at most this often
//!     leeway: 0s                          # clock skew allowed on exp / nbf
//!     requireExp: true
//!     issuers: [https://idp.example.com/]
//!     audiences: [orders-api]
//!     claims:                             # all required: exact value or regex
//!       - {name: scope, value: "orders:read"}
//!       - {name: tenant, pattern: "acme|globex"}
//!     forwardClaims: {sub: X-User-Id}     # claim -> upstream header (client copies removed)
//!     keepToken: true                     # default: the token goes upstream
//! ```
//!
//! Responses (RFC 6750): no token → 401 `WWW-Authenticate: Bearer
//! realm="..."`; a bad token (signature, algorithm, exp, nbf, iss, aud) →
//! 401 with `error="invalid_token"`; a failed claim requirement → 403 with
//! `error="insufficient_scope"`; no key set was ever fetched and no inline
//! key fits → 503.
//!
//! The algorithm comes from the key, never from the token alone: a token is
//! checked only with keys configured for its `alg`, so `alg: none` and
//! HS/RS confusion (an HS256 token "signed" with an RSA public key) fail.
//! JWKS keys are fetched at start, refreshed every `jwksTtl` (in the
//! background, serving the old keys meanwhile) and when a token names an
//! unknown `kid` (at most once per `jwksMinRefresh`); when a fetch fails the
//! last good keys stay. Verified tokens are cached by SHA-256 of the token
//! (bounded), never past their `exp`.

// config.rs: decoding and /config; jwks.rs: fetched key sets; here: the
// verification, its cache and the hooks.
mod config;
mod jwks;

use config::{anchored, decoding_key};
pub use config::{decode, describe, ClaimCheck, Config, JwksConfig, KeyConfig, Material, FIELDS};

use super::common::{self, BearerRefusal};
use super::{Decision, LocalResponse, Policy};
use crate::exchange::Exchange;
use async_trait::async_trait;
use jsonwebtoken::{Algorithm, Validation};
use jwks::{Key, KeySet};
use pingora::http::RequestHeader;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Verified tokens remembered; past this many the cache starts afresh.
const CACHE_LIMIT: usize = 10_000;
/// A verified token without `exp` is re-verified after this long.
const CACHE_NO_EXP: Duration = Duration::from_secs(300);

pub fn build(c: &Config) -> Arc<dyn Policy> {
    let jwt = Arc::new(Jwt::new(c));
    if !jwt.sets.is_empty() {
        // the first fetch, off the request path (and off any runtime: build
        // may run before Pingora's runtimes exist)
        let sets = jwt.sets.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                for set in sets {
                    rt.block_on(set.refresh(false));
                }
            }
        });
    }
    jwt
}

#[derive(Clone)]
struct Verified {
    claims: Arc<Map<String, Value>>,
    consumer: Option<String>,
    /// Unix seconds after which the cache entry is dead.
    until: u64,
}

pub struct Jwt {
    config: Config,
    challenge: String,
    keys: Vec<Key>,
    sets: Vec<Arc<KeySet>>,
    claims: Vec<(String, ClaimMatcher)>,
    cache: Mutex<HashMap<[u8; 32], Verified>>,
}

enum ClaimMatcher {
    Value(String),
    Pattern(regex::Regex),
}

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Missing,
    Invalid(&'static str),
    Scope(&'static str),
    NoKeys,
}

/// What this policy left for the upstream request.
#[derive(Clone)]
struct Accepted {
    claims: Arc<Map<String, Value>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Jwt {
    pub fn new(c: &Config) -> Jwt {
        let keys = c
            .keys
            .iter()
            .filter_map(|k| {
                // checked at load; a failure here leaves the key out
                let key = decoding_key(&k.material.0, k.algorithms[0]).ok()?;
                Some(Key {
                    kid: k.kid.clone(),
                    algorithms: k.algorithms.clone(),
                    key,
                })
            })
            .collect();
        let sets = c
            .jwks
            .iter()
            .map(|j| {
                Arc::new(KeySet {
                    url: j.url.clone(),
                    algorithms: j.algorithms.clone(),
                    timeout: c.jwks_timeout,
                    min_refresh: c.jwks_min_refresh,
                    ttl: c.jwks_ttl,
                    keys: RwLock::new(None),
                    fetching: tokio::sync::Mutex::new(None),
                })
            })
            .collect();
        let claims = c
            .claims
            .iter()
            .filter_map(|(name, check)| {
                let m = match check {
                    ClaimCheck::Value(v) => ClaimMatcher::Value(v.clone()),
                    ClaimCheck::Pattern(p) => {
                        ClaimMatcher::Pattern(regex::Regex::new(&anchored(p)).ok()?)
                    }
                };
                Some((name.clone(), m))
            })
            .collect();
        Jwt {
            challenge: format!("Bearer realm=\"{}\"", c.realm),
            config: c.clone(),
            keys,
            sets,
            claims,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.config.leeway.as_secs();
        v.validate_nbf = true;
        v.validate_exp = true;
        v.required_spec_claims.clear();
        if self.config.require_exp {
            v.required_spec_claims.insert("exp".into());
        }
        // iss and aud: checked by `registered`, strictly typed
        v.iss = None;
        v.validate_aud = false;
        v
    }

    /// `iss` and `aud` when configured: present (aud: unless Flex's
    /// `mandatoryAudClaim` is false), of their registered types (a string;
    /// for aud a string or a non-empty list of strings), and accepted. A
    /// null, a number or an object is a missing claim, never a match.
    fn registered(&self, claims: &Map<String, Value>) -> Result<(), Failure> {
        let c = &self.config;
        if !c.issuers.is_empty() {
            match claims.get("iss") {
                Some(Value::String(iss)) if c.issuers.contains(iss) => {}
                Some(Value::String(_)) => {
                    return Err(Failure::Invalid("the token's issuer is not accepted"))
                }
                _ => return Err(Failure::Invalid("the token has no issuer (iss) string")),
            }
        }
        if c.audiences.is_empty() && !c.require_aud {
            return Ok(());
        }
        let listed: Vec<&str> = match claims.get("aud") {
            None if !c.require_aud => return Ok(()),
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(items)) if !items.is_empty() => {
                let strings: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                if strings.len() != items.len() {
                    return Err(Failure::Invalid(
                        "the token's audience (aud) is not a list of strings",
                    ));
                }
                strings
            }
            _ => {
                return Err(Failure::Invalid(
                    "the token has no audience (aud): a string or a list of strings",
                ))
            }
        };
        if !c.audiences.is_empty() && !listed.iter().any(|a| c.audiences.iter().any(|x| x == a)) {
            return Err(Failure::Invalid("the token's audience is not accepted"));
        }
        Ok(())
    }

    /// Try every key that fits the token's kid and alg.
    fn try_keys<'k>(
        &self,
        token: &str,
        kid: Option<&str>,
        alg: Algorithm,
        keys: impl Iterator<Item = &'k Key>,
    ) -> Option<Result<Map<String, Value>, jsonwebtoken::errors::Error>> {
        let validation = self.validation(alg);
        let mut last = None;
        for k in keys {
            if !k.algorithms.contains(&alg) {
                continue;
            }
            if let (Some(want), Some(have)) = (kid, k.kid.as_deref()) {
                if want != have {
                    continue;
                }
            }
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
                Ok(data) => return Some(Ok(data.claims)),
                Err(e) => last = Some(Err(e)),
            }
        }
        last
    }

    /// What a cache miss costs: signature and claims, no cache (benchmarks).
    pub async fn verify_uncached(&self, token: &str) -> bool {
        match self.verify(token).await {
            Ok(claims) => self.check_claims(&claims).is_ok(),
            Err(_) => false,
        }
    }

    async fn verify(&self, token: &str) -> Result<Map<String, Value>, Failure> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Failure::Invalid("malformed token or unsupported algorithm"))?;
        if names_critical(token) {
            // RFC 7515 §4.1.11: extensions the recipient must understand;
            // the gateway understands none
            return Err(Failure::Invalid(
                "the token's crit header names extensions the gateway does not understand",
            ));
        }
        let alg = header.alg;
        let kid = header.kid.as_deref();
        let mut result = self.try_keys(token, kid, alg, self.keys.iter());
        if !matches!(result, Some(Ok(_))) && !self.sets.is_empty() {
            // the key sets: fetch when never fetched, refresh when stale (in
            // the background) or when the kid is unknown (rate-limited)
            for set in &self.sets {
                let current = set.current();
                let known_kid = |keys: &[Key]| {
                    kid.is_none_or(|k| keys.iter().any(|key| key.kid.as_deref() == Some(k)))
                };
                let keys = match current {
                    None => {
                        set.refresh(false).await;
                        set.current()
                    }
                    Some((keys, _)) if !known_kid(&keys) => {
                        set.refresh(true).await;
                        set.current()
                    }
                    Some((keys, at)) => {
                        if at.elapsed() >= set.ttl {
                            let s = set.clone();
                            tokio::spawn(async move { s.refresh(true).await });
                        }
                        Some((keys, at))
                    }
                };
                if let Some((keys, _)) = keys {
                    match self.try_keys(token, kid, alg, keys.iter()) {
                        Some(Ok(c)) => {
                            result = Some(Ok(c));
                            break;
                        }
                        Some(Err(e)) => result = Some(Err(e)),
                        None => {}
                    }
                }
            }
        }
        match result {
            Some(Ok(claims)) => self.registered(&claims).map(|()| claims),
            Some(Err(e)) => {
                use jsonwebtoken::errors::ErrorKind::*;
                Err(Failure::Invalid(match e.kind() {
                    ExpiredSignature => "the token has expired",
                    ImmatureSignature => "the token is not valid yet",
                    InvalidIssuer => "the token's issuer is not accepted",
                    InvalidAudience => "the token's audience is not accepted",
                    MissingRequiredClaim(_) => "the token lacks a required claim (exp)",
                    InvalidSignature => "invalid signature",
                    InvalidAlgorithm => "the algorithm does not fit the key",
                    _ => "invalid token",
                }))
            }
            None if self.keys.is_empty() && self.sets.iter().all(|s| s.current().is_none()) => {
                Err(Failure::NoKeys)
            }
            None => Err(Failure::Invalid(
                "no key fits the token's kid and algorithm",
            )),
        }
    }

    fn check_claims(&self, claims: &Map<String, Value>) -> Result<(), Failure> {
        for (name, m) in &self.claims {
            let fits = |s: &str| match m {
                ClaimMatcher::Value(v) => s == v,
                ClaimMatcher::Pattern(re) => re.is_match(s),
            };
            let ok = match claims.get(name) {
                Some(Value::String(s)) => fits(s) || (name == "scope" && s.split(' ').any(&fits)),
                Some(Value::Array(items)) => items.iter().any(|i| match i {
                    Value::String(s) => fits(s),
                    other => fits(&other.to_string()),
                }),
                Some(Value::Null) | None => false,
                Some(other) => fits(&other.to_string()),
            };
            if !ok {
                return Err(Failure::Scope(
                    "a required claim is missing or has another value",
                ));
            }
        }
        Ok(())
    }

    async fn accept(&self, token: &str) -> Result<Verified, Failure> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now_secs();
        if let Some(v) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&digest)
        {
            if now < v.until {
                return Ok(v.clone());
            }
        }
        let claims = self.verify(token).await?;
        self.check_claims(&claims)?;
        let exp = claims.get("exp").and_then(Value::as_u64);
        let until = match exp {
            Some(exp) => exp.min(now + CACHE_NO_EXP.as_secs()),
            None => now + CACHE_NO_EXP.as_secs(),
        };
        let v = Verified {
            consumer: claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_string),
            claims: Arc::new(claims),
            until,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, e| e.until > now);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(digest, v.clone());
        Ok(v)
    }

    fn refuse(&self, f: Failure) -> Decision {
        if let (Failure::Missing, 400) = (&f, self.config.missing_status) {
            return Decision::Respond(LocalResponse::new(400, "bearer token required"));
        }
        let r = match f {
            Failure::Missing => BearerRefusal::Missing,
            Failure::Invalid(why) => BearerRefusal::Invalid(why),
            Failure::Scope(why) => BearerRefusal::Scope(why, ""),
            Failure::NoKeys => {
                BearerRefusal::Unavailable("token signing keys are not available yet")
            }
        };
        common::refuse_bearer(&self.challenge, r)
    }
}

#[async_trait]
impl Policy for Jwt {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        let Some(token) = self.config.token.extract(req) else {
            return self.refuse(Failure::Missing);
        };
        match self.accept(&token).await {
            Ok(v) => {
                if let Some(sub) = v.consumer {
                    x.consumer = Some(sub);
                }
                x.claims = Some(v.claims.clone());
                x.ext.insert(Accepted { claims: v.claims });
                Decision::Continue
            }
            Err(f) => self.refuse(f),
        }
    }

    fn asserted_headers(&self) -> Vec<http::HeaderName> {
        let claims = self.config.forward_claims.iter();
        claims.map(|(_, header)| header.clone()).collect()
    }

    fn credential_headers(&self) -> Vec<http::HeaderName> {
        self.config.token.header().into_iter().collect()
    }

    fn on_upstream_request(&self, up: &mut RequestHeader, x: &mut Exchange) -> pingora::Result<()> {
        let Some(Accepted { claims }) = x.ext.get::<Accepted>() else {
            return Ok(());
        };
        for (claim, header) in &self.config.forward_claims {
            // a client-sent copy never reaches the upstream (the chain
            // removed it before any policy ran)
            let value = match claims.get(claim) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(","),
                Some(Value::Null) | None => continue,
                Some(other) => other.to_string(),
            };
            if let Ok(v) = http::HeaderValue::from_str(&value) {
                up.insert_header(header.clone(), v)?;
            }
        }
        if !self.config.keep_token {
            self.config.token.strip(up);
        }
        Ok(())
    }
}

/// Whether the token's protected header has a `crit` parameter (any
/// value: an empty or malformed one is just as invalid).
fn names_critical(token: &str) -> bool {
    use base64::Engine as _;
    let Some(head) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head.trim_end_matches('='))
    else {
        return false;
    };
    serde_json::from_slice::<Map<String, Value>>(&bytes).is_ok_and(|h| h.contains_key("crit"))
}

#[cfg(test)]
mod tests {
    use super::common::TokenSource;
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn policy(claims: Vec<(String, ClaimCheck)>) -> Jwt {
        Jwt::new(&Config {
            realm: "r".into(),
            token: TokenSource::Bearer,
            keys: vec![KeyConfig {
                kid: None,
                algorithms: vec![Algorithm::HS256],
                material: Material(SECRET.into()),
            }],
            jwks: vec![],
            jwks_ttl: Duration::from_secs(60),
            jwks_timeout: Duration::from_secs(1),
            jwks_min_refresh: Duration::from_secs(1),
            leeway: Duration::ZERO,
            require_exp: true,
            issuers: vec!["iss-a".into()],
            audiences: vec![],
            claims,
            forward_claims: vec![],
            keep_token: true,
            missing_status: 401,
            require_aud: false,
        })
    }

    fn sign(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn claims_exp_iss_and_the_cache() {
        let p = policy(vec![
            ("scope".into(), ClaimCheck::Value("orders:read".into())),
            ("tenant".into(), ClaimCheck::Pattern("acme|globex".into())),
        ]);
        let exp = now_secs() + 600;
        let good = sign(
            json!({"sub": "u1", "iss": "iss-a", "exp": exp, "scope": "x orders:read", "tenant": "acme"}),
        );
        run(async {
            let v = p.accept(&good).await.expect("valid");
            assert_eq!(v.consumer.as_deref(), Some("u1"));
            assert_eq!(v.until, exp.min(now_secs() + 300));
            assert!(p.accept(&good).await.is_ok(), "cached");
            let wrong_tenant = sign(
                json!({"iss": "iss-a", "exp": exp, "scope": "orders:read", "tenant": "acme2"}),
            );
            assert!(matches!(
                p.accept(&wrong_tenant).await,
                Err(Failure::Scope(_))
            ));
            let wrong_iss =
                sign(json!({"iss": "iss-b", "exp": exp, "scope": "orders:read", "tenant": "acme"}));
            assert!(matches!(
                p.accept(&wrong_iss).await,
                Err(Failure::Invalid(_))
            ));
            let no_exp = sign(json!({"iss": "iss-a", "scope": "orders:read", "tenant": "acme"}));
            assert!(matches!(p.accept(&no_exp).await, Err(Failure::Invalid(_))));
            let expired = sign(
                json!({"iss": "iss-a", "exp": now_secs() - 10, "scope": "orders:read", "tenant": "acme"}),
            );
            assert_eq!(
                p.accept(&expired).await.err(),
                Some(Failure::Invalid("the token has expired"))
            );
        });
    }
}
