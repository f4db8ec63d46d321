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

use super::common::{self, BearerRefusal, TokenSource};
use super::{Decision, Policy, REDACTED};
use crate::config::decode::{join, Decoder};
use crate::config::yaml::{Node, Value as Yaml};
use crate::exchange::Exchange;
use async_trait::async_trait;
use http::HeaderName;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pingora::http::RequestHeader;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FIELDS: &[&str] = &[
    "realm",
    "token",
    "keys",
    "jwks",
    "jwksTtl",
    "jwksTimeout",
    "jwksMinRefresh",
    "leeway",
    "requireExp",
    "issuers",
    "audiences",
    "claims",
    "forwardClaims",
    "keepToken",
];
const KEY_FIELDS: &[&str] = &["kid", "algorithm", "algorithms", "secret", "publicKey"];
const JWKS_FIELDS: &[&str] = &["url", "algorithms"];
const CLAIM_FIELDS: &[&str] = &["name", "value", "pattern"];
const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
/// Verified tokens remembered; past this many the cache starts afresh.
const CACHE_LIMIT: usize = 10_000;
/// A verified token without `exp` is re-verified after this long.
const CACHE_NO_EXP: Duration = Duration::from_secs(300);

/// Key material, compared by value (a reload with the same key keeps the
/// policy) and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Material(String);

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfig {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    /// HMAC secret or public-key PEM.
    pub material: Material,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    pub url: String,
    pub algorithms: Vec<Algorithm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimCheck {
    Value(String),
    /// A regular expression matched against the whole value.
    Pattern(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub realm: String,
    pub token: TokenSource,
    pub keys: Vec<KeyConfig>,
    pub jwks: Vec<JwksConfig>,
    pub jwks_ttl: Duration,
    pub jwks_timeout: Duration,
    pub jwks_min_refresh: Duration,
    pub leeway: Duration,
    pub require_exp: bool,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub claims: Vec<(String, ClaimCheck)>,
    pub forward_claims: Vec<(String, HeaderName)>,
    pub keep_token: bool,
}

fn algorithm(d: &mut Decoder, node: &Node, path: &str) -> Option<Algorithm> {
    let text = d.scalar(node, path, "an algorithm")?;
    if text.eq_ignore_ascii_case("none") {
        d.error(
            node.pos,
            path,
            "`none` is never accepted: unsigned tokens prove nothing",
        );
        return None;
    }
    match ALGORITHMS.iter().find(|a| a.eq_ignore_ascii_case(text)) {
        Some(a) => Algorithm::from_str(a).ok(),
        None => {
            d.error(
                node.pos,
                path,
                format!(
                    "unknown algorithm {text:?} (expected one of: {})",
                    ALGORITHMS.join(", ")
                ),
            );
            None
        }
    }
}

fn algorithms(d: &mut Decoder, node: &Node, path: &str) -> Option<Vec<Algorithm>> {
    let before = d.errors.len();
    let out: Vec<Algorithm> = d
        .list(node, path, true)?
        .into_iter()
        .enumerate()
        .filter_map(|(i, n)| algorithm(d, n, &format!("{path}[{i}]")))
        .collect();
    if d.errors.len() > before {
        return None;
    }
    if out.is_empty() {
        d.error(node.pos, path, "at least one algorithm is required");
        return None;
    }
    Some(out)
}

fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The decoding key for this material and algorithm, or why not.
fn decoding_key(material: &str, alg: Algorithm) -> Result<DecodingKey, String> {
    let pem = material.as_bytes();
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Ok(DecodingKey::from_secret(pem)),
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem)
            .map_err(|e| format!("not an RSA public key in PEM ({e})")),
        Algorithm::ES256 | Algorithm::ES384 => {
            DecodingKey::from_ec_pem(pem).map_err(|e| format!("not an EC public key in PEM ({e})"))
        }
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem)
            .map_err(|e| format!("not an Ed25519 public key in PEM ({e})")),
    }
}

fn decode_key(d: &mut Decoder, node: &Node, path: &str) -> Option<KeyConfig> {
    let f = d.map(node, path, KEY_FIELDS)?;
    let kid = f.get("kid").and_then(|n| d.string(n, &join(path, "kid")));
    let algs = match (f.get("algorithm"), f.get("algorithms")) {
        (Some(n), None) => algorithm(d, n, &join(path, "algorithm")).map(|a| vec![a]),
        (None, Some(n)) => algorithms(d, n, &join(path, "algorithms")),
        (Some(_), Some(n)) => {
            d.error(n.pos, path, "give `algorithm` or `algorithms`, not both");
            None
        }
        (None, None) => {
            d.error(f.pos, path, "missing `algorithm` (e.g. RS256 or HS256)");
            None
        }
    }?;
    let hmac = algs.iter().filter(|a| is_hmac(**a)).count();
    if hmac != 0 && hmac != algs.len() {
        d.error(
            node.pos,
            path,
            "one key cannot serve both HMAC (HS*) and public-key algorithms",
        );
        return None;
    }
    let (field, material) = match (f.get("secret"), f.get("publicKey")) {
        (Some(n), None) if hmac > 0 => ("secret", n),
        (None, Some(n)) if hmac == 0 => ("publicKey", n),
        (Some(n), None) => {
            d.error(
                n.pos,
                &join(path, "secret"),
                "a `secret` is for HS256/384/512; public-key algorithms need `publicKey` (PEM)",
            );
            return None;
        }
        (None, Some(n)) => {
            d.error(
                n.pos,
                &join(path, "publicKey"),
                "HS256/384/512 keys are a `secret`, not a `publicKey`",
            );
            return None;
        }
        (Some(_), Some(n)) => {
            d.error(n.pos, path, "give `secret` or `publicKey`, not both");
            return None;
        }
        (None, None) => {
            d.error(
                f.pos,
                path,
                "missing the key: `secret` (HS*) or `publicKey` (PEM)",
            );
            return None;
        }
    };
    let at = join(path, field);
    let text = d.string(material, &at)?;
    for a in &algs {
        if is_hmac(*a) {
            let min = match a {
                Algorithm::HS384 => 48,
                Algorithm::HS512 => 64,
                _ => 32,
            };
            if text.len() < min {
                d.error(
                    material.pos,
                    &at,
                    format!(
                        "a {a:?} secret must be at least {min} bytes (RFC 7518 §3.2); this one has {}",
                        text.len()
                    ),
                );
                return None;
            }
        } else if let Err(why) = decoding_key(&text, *a) {
            d.error(material.pos, &at, format!("{why} (for {a:?})"));
            return None;
        }
    }
    Some(KeyConfig {
        kid,
        algorithms: algs,
        material: Material(text),
    })
}

fn decode_jwks(d: &mut Decoder, node: &Node, path: &str) -> Option<JwksConfig> {
    let f = d.map(node, path, JWKS_FIELDS)?;
    let url = d.required(&f, "url", path).and_then(|n| {
        let field = join(path, "url");
        let url = d.string(n, &field)?;
        match url.parse::<http::Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() =>
            {
                Some(url)
            }
            _ => {
                d.error(
                    n.pos,
                    &field,
                    format!("{url:?} is not an http(s) URL (example: https://idp.example.com/.well-known/jwks.json)"),
                );
                None
            }
        }
    });
    let algs = match f.get("algorithms") {
        Some(n) => algorithms(d, n, &join(path, "algorithms")),
        None => Some(ASYMMETRIC.to_vec()),
    };
    Some(JwksConfig {
        url: url?,
        algorithms: algs?,
    })
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let errors = d.errors.len();
    let realm = common::realm(d, f.get("realm"), path);
    let token = TokenSource::decode(d, f.get("token"), path);
    let keys: Vec<KeyConfig> = match f.get("keys") {
        Some(list) => d
            .items(list, &join(path, "keys"), false)
            .into_iter()
            .filter_map(|(item, at)| decode_key(d, item, &at))
            .collect(),
        None => Vec::new(),
    };
    let jwks: Vec<JwksConfig> = match f.get("jwks") {
        Some(list) => d
            .items(list, &join(path, "jwks"), false)
            .into_iter()
            .filter_map(|(item, at)| decode_jwks(d, item, &at))
            .collect(),
        None => Vec::new(),
    };
    if keys.is_empty() && jwks.is_empty() && d.errors.len() == errors {
        d.error(f.pos, path, "no keys: give `keys`, `jwks`, or both");
    }
    let duration = |d: &mut Decoder, key: &str, default: Duration| match f.get(key) {
        Some(n) => d.duration(n, &join(path, key), false),
        None => Some(default),
    };
    let jwks_ttl = duration(d, "jwksTtl", Duration::from_secs(3600));
    let jwks_timeout = duration(d, "jwksTimeout", Duration::from_secs(10));
    let jwks_min_refresh = duration(d, "jwksMinRefresh", Duration::from_secs(5));
    let leeway = match f.get("leeway") {
        Some(n) if matches!(&n.value, Yaml::Scalar { text, .. } if text == "0" || text == "0s") => {
            Some(Duration::ZERO)
        }
        Some(n) => d.duration(n, &join(path, "leeway"), true),
        None => Some(Duration::ZERO),
    };
    let flag = |d: &mut Decoder, key: &str, default: bool| match f.get(key) {
        Some(n) => d.bool(n, &join(path, key)),
        None => Some(default),
    };
    let require_exp = flag(d, "requireExp", true);
    let keep_token = flag(d, "keepToken", true);
    let mut strings = |key: &str| match f.get(key) {
        Some(n) => d.parsed_list(n, &join(path, key), "a string", |s| Ok(s.to_string())),
        None => Vec::new(),
    };
    let issuers = strings("issuers");
    let audiences = strings("audiences");
    let mut claims = Vec::new();
    if let Some(list) = f.get("claims") {
        for (item, at) in d.items(list, &join(path, "claims"), false) {
            let Some(c) = d.map(item, &at, CLAIM_FIELDS) else {
                continue;
            };
            let name = d
                .required(&c, "name", &at)
                .and_then(|n| d.string(n, &join(&at, "name")));
            let check = match (c.get("value"), c.get("pattern")) {
                (Some(v), None) => d
                    .scalar(v, &join(&at, "value"), "a string")
                    .map(|s| ClaimCheck::Value(s.to_string())),
                (None, Some(p)) => {
                    let pf = join(&at, "pattern");
                    d.string(p, &pf).and_then(|s| {
                        common::regex(d, &anchored(&s), p, &pf).map(|_| ClaimCheck::Pattern(s))
                    })
                }
                _ => {
                    d.error(c.pos, &at, "give exactly one of `value` or `pattern`");
                    None
                }
            };
            if let (Some(name), Some(check)) = (name, check) {
                claims.push((name, check));
            }
        }
    }
    let mut forward_claims = Vec::new();
    if let Some(n) = f.get("forwardClaims") {
        let field = join(path, "forwardClaims");
        if let Some(m) = d.map_any(n, &field) {
            for (claim, h) in m.keys() {
                if let Some(h) = common::header_name(d, h, &join(&field, claim)) {
                    forward_claims.push((claim.to_string(), h));
                }
            }
        }
    }
    if d.errors.len() > errors {
        return None;
    }
    Some(Config {
        realm: realm?,
        token: token?,
        keys,
        jwks,
        jwks_ttl: jwks_ttl?,
        jwks_timeout: jwks_timeout?,
        jwks_min_refresh: jwks_min_refresh?,
        leeway: leeway?,
        require_exp: require_exp?,
        issuers,
        audiences,
        claims,
        forward_claims,
        keep_token: keep_token?,
    })
}

fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

pub fn describe(c: &Config) -> Value {
    let algs = |a: &[Algorithm]| a.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>();
    json!({
        "realm": c.realm,
        "token": c.token.describe(),
        "keys": c.keys.iter().map(|k| json!({"kid": k.kid, "algorithms": algs(&k.algorithms), "key": REDACTED})).collect::<Vec<_>>(),
        "jwks": c.jwks.iter().map(|j| json!({"url": j.url, "algorithms": algs(&j.algorithms)})).collect::<Vec<_>>(),
        "jwksTtlSeconds": c.jwks_ttl.as_secs(),
        "jwksTimeoutMs": c.jwks_timeout.as_millis() as u64,
        "jwksMinRefreshMs": c.jwks_min_refresh.as_millis() as u64,
        "leewaySeconds": c.leeway.as_secs(),
        "requireExp": c.require_exp,
        "issuers": c.issuers,
        "audiences": c.audiences,
        "claims": c.claims.iter().map(|(n, check)| match check {
            ClaimCheck::Value(v) => json!({"name": n, "value": v}),
            ClaimCheck::Pattern(p) => json!({"name": n, "pattern": p}),
        }).collect::<Vec<_>>(),
        "forwardClaims": c.forward_claims.iter().map(|(c, h)| (c.clone(), json!(h.as_str()))).collect::<Map<String, Value>>(),
        "keepToken": c.keep_token,
    })
}

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

/// A verification key with the algorithms it may verify.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// One JWKS URL and the keys last fetched from it.
struct KeySet {
    url: String,
    algorithms: Vec<Algorithm>,
    timeout: Duration,
    min_refresh: Duration,
    ttl: Duration,
    keys: RwLock<Option<(Arc<Vec<Key>>, Instant)>>,
    /// One fetch at a time; holds when the last attempt started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl KeySet {
    fn current(&self) -> Option<(Arc<Vec<Key>>, Instant)> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fetch the set (unless another fetch just did, or `rate_limited` and
    /// the last attempt is younger than `min_refresh`). Failures keep the
    /// last good keys.
    async fn refresh(&self, rate_limited: bool) {
        let asked = Instant::now();
        let mut last = self.fetching.lock().await;
        if let Some(at) = *last {
            if at >= asked || (rate_limited && at.elapsed() < self.min_refresh) {
                return; // someone fetched while we waited, or too soon
            }
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                log::info!(
                    "jwt-validation: fetched {} keys from {}",
                    keys.len(),
                    self.url
                );
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) =
                    Some((Arc::new(keys), Instant::now()));
            }
            Err(e) => log::warn!(
                "jwt-validation: cannot fetch keys from {} ({e}); {}",
                self.url,
                if self.current().is_some() {
                    "keeping the last good keys"
                } else {
                    "no keys yet: tokens for this set get 503"
                }
            ),
        }
    }

    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        let doc: Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        let Some(list) = doc.get("keys").and_then(Value::as_array) else {
            return Err("no `keys` array".into());
        };
        Ok(list
            .iter()
            .filter_map(|k| {
                let jwk: Jwk = serde_json::from_value(k.clone()).ok()?;
                jwk_key(&jwk, &self.algorithms)
            })
            .collect())
    }
}

/// A JWK as a verification key, limited to the set's algorithms (and to
/// the key's own `alg` when it names one). Symmetric keys only when the set
/// allows an HS algorithm; encryption keys never.
fn jwk_key(jwk: &Jwk, allowed: &[Algorithm]) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
    ) {
        return None;
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => {
            vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        }
    };
    let own = jwk
        .common
        .key_algorithm
        .and_then(|a| Algorithm::from_str(&format!("{a:?}")).ok());
    let algorithms: Vec<Algorithm> = family
        .into_iter()
        .filter(|a| allowed.contains(a) && own.is_none_or(|o| o == *a))
        .collect();
    if algorithms.is_empty() {
        return None;
    }
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
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
        if self.config.issuers.is_empty() {
            v.iss = None;
        } else {
            v.set_issuer(&self.config.issuers);
        }
        if self.config.audiences.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.config.audiences);
        }
        v
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
            Some(Ok(claims)) => Ok(claims),
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
    async fn on_request(&self, req: &RequestHeader, x: &mut Exchange) -> Decision {
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

    fn on_upstream_request(&self, up: &mut RequestHeader, x: &mut Exchange) -> pingora::Result<()> {
        let Some(Accepted { claims }) = x.ext.get::<Accepted>() else {
            return Ok(());
        };
        for (claim, header) in &self.config.forward_claims {
            // a client-sent copy never reaches the upstream
            up.remove_header(header);
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

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
