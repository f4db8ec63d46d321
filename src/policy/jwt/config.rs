//! `jwt-validation`'s configuration: decoding with every problem reported
//! (algorithms, key material checked by building the key, JWKS URLs,
//! claim rules), and the `/config` description with keys redacted.

use super::super::common::{self, TokenSource};
use super::super::REDACTED;
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, DURATION, SECONDS, STR, STRS_OR_ONE};
use crate::config::yaml::{Node, Value as Yaml};
use http::HeaderName;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{json, Map, Value};
use std::str::FromStr;
use std::time::Duration;

pub const FIELDS: &[Field] = &[
    f("realm", STR),
    f("token", Ty::Obj(common::TOKEN_FIELDS))
        .doc("Where the token is read (default: Authorization: Bearer)."),
    f("keys", Ty::List(&Ty::Obj(KEY_FIELDS), false))
        .doc("Keys given in the file (or `jwks`, or both)."),
    f("jwks", Ty::List(&Ty::Obj(JWKS_FIELDS), false)).doc("JWKS endpoints to fetch keys from."),
    f("jwksTtl", DURATION).default("\"3600s\""),
    f("jwksTimeout", DURATION).default("\"10s\""),
    f("jwksMinRefresh", DURATION).default("\"5s\""),
    f("leeway", SECONDS)
        .default("0")
        .doc("Clock skew allowed on exp and nbf."),
    f("requireExp", BOOL).default("true"),
    f("issuers", STRS_OR_ONE).doc("Accepted `iss` values."),
    f("audiences", STRS_OR_ONE).doc("Accepted `aud` values (one must match)."),
    f("claims", Ty::List(&Ty::Obj(CLAIM_FIELDS), false))
        .doc("Claims that must have a value or match a pattern."),
    f("forwardClaims", Ty::Dict(&Ty::Name("a header name")))
        .doc("Claim name: header sent upstream."),
    f("keepToken", BOOL).default("true"),
];
const KEY_FIELDS: &[Field] = &[
    f("kid", STR),
    f("algorithm", Ty::Enum(ALGORITHMS)),
    f("algorithms", Ty::List(&Ty::Enum(ALGORITHMS), true)),
    f("secret", STR).doc("The HMAC secret (HS*)."),
    f("publicKey", Ty::Text("a PEM public key or a file")),
];
const JWKS_FIELDS: &[Field] = &[
    f("url", Ty::Url("an http(s) URL")).req(),
    f("algorithms", Ty::List(&Ty::Enum(ALGORITHMS), true)),
];
const CLAIM_FIELDS: &[Field] = &[
    f("name", STR).req(),
    f("value", Ty::Scalar),
    f("pattern", Ty::Text("a regular expression")),
];
const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// The RSA signature algorithms (an RSA key verifies any of them).
pub(super) const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
/// With [`RSA`], the asymmetric algorithms (the default list).
const OTHER_ASYMMETRIC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA];

/// Key material, compared by value (a reload with the same key keeps the
/// policy) and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Material(pub(super) String);

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
    /// A token without `aud` is refused (whenever `audiences` are given;
    /// Flex: `mandatoryAudClaim`, default false).
    pub require_aud: bool,
    pub claims: Vec<(String, ClaimCheck)>,
    pub forward_claims: Vec<(String, HeaderName)>,
    pub keep_token: bool,
    /// The status of a request without a token: 401 (RFC 6750), or 400
    /// as Flex's `jwt-validation-flex` answers.
    pub missing_status: u16,
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
pub(super) fn decoding_key(material: &str, alg: Algorithm) -> Result<DecodingKey, String> {
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
        d.http_url(
            n,
            &field,
            Some("https://idp.example.com/.well-known/jwks.json"),
        )
    });
    let algs = match f.get("algorithms") {
        Some(n) => algorithms(d, n, &join(path, "algorithms")),
        None => Some([RSA, OTHER_ASYMMETRIC].concat()),
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
        require_aud: !audiences.is_empty(),
        issuers,
        audiences,
        claims,
        forward_claims,
        keep_token: keep_token?,
        missing_status: 401,
    })
}

pub(super) fn anchored(pattern: &str) -> String {
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
        "requireAud": c.require_aud,
        "claims": c.claims.iter().map(|(n, check)| match check {
            ClaimCheck::Value(v) => json!({"name": n, "value": v}),
            ClaimCheck::Pattern(p) => json!({"name": n, "pattern": p}),
        }).collect::<Vec<_>>(),
        "forwardClaims": c.forward_claims.iter().map(|(c, h)| (c.clone(), json!(h.as_str()))).collect::<Map<String, Value>>(),
        "keepToken": c.keep_token,
    })
}
