//! `http-basic-authentication-flex`, `jwt-validation-flex`,
//! `oauth2-token-introspection-flex`.

use super::accessor;
use super::{bool_or, map, millis, ours, scalar, seq};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, POSITIVE, STR, STRS};
use crate::config::yaml::{Node, Value};
use crate::policy::{self, PolicyConfig};

pub(super) fn basic_auth(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(c, path, BASIC_AUTH)?;
    let user = d.required(&f, "username", path).cloned();
    let pass = d.required(&f, "password", path).cloned();
    let (user, pass) = (user?, pass?);
    let node = map(
        c.pos,
        vec![(
            "users",
            seq(
                f.pos,
                vec![map(f.pos, vec![("username", user), ("password", pass)])],
            ),
        )],
    );
    ours(d, &[("users[0]", "")], |d| {
        policy::basic_auth::decode(d, &node, path).map(PolicyConfig::BasicAuth)
    })
}

pub const JWT_FIELDS: &[Field] = &[
    f("signingMethod", Ty::AnyCase(&["rsa", "hmac", "es"])).default("\"rsa\""),
    f("signingKeyLength", Ty::Int(256, 512))
        .default("256")
        .doc("256, 384 or 512."),
    f(
        "jwtOrigin",
        Ty::Enum(&["httpBearerAuthenticationHeader", "customExpression"]),
    )
    .default("\"httpBearerAuthenticationHeader\""),
    f(
        "jwtExpression",
        Ty::Text("#[attributes.headers['NAME']] or #[attributes.queryParams['NAME']]"),
    ),
    f("jwtKeyOrigin", Ty::Enum(&["text", "jwks"])).default("\"text\""),
    f("textKey", Ty::Str).doc("The PEM public key, or the HMAC secret."),
    f("jwksUrl", Ty::Url("an http(s) URL")),
    f("jwksServiceTimeToLive", POSITIVE)
        .default("60")
        .doc("Minutes."),
    f("jwksServiceConnectionTimeout", POSITIVE)
        .default("10000")
        .doc("Milliseconds."),
    f("validateAudClaim", BOOL).default("false"),
    f(
        "supportedAudiences",
        Ty::Either(&[Ty::Text("audiences, comma-separated"), STRS]),
    ),
    f("mandatoryAudClaim", BOOL).default("false"),
    f("mandatoryExpClaim", BOOL).default("false"),
    f("mandatoryNbfClaim", BOOL)
        .default("false")
        .doc("true is not supported yet."),
    f("validateCustomClaim", BOOL).default("false"),
    f(
        "mandatoryCustomClaims",
        Ty::List(&Ty::Obj(CUSTOM_CLAIM), false),
    ),
    f(
        "nonMandatoryCustomClaims",
        Ty::List(&Ty::Obj(CUSTOM_CLAIM), false),
    )
    .doc("Not supported yet."),
    f("skipClientIdValidation", BOOL).default("false"),
];
const CUSTOM_CLAIM: &[Field] = &[f("key", STR).req(), f("value", Ty::Scalar).req()];
pub const BASIC_AUTH: &[Field] = &[f("username", STR).req(), f("password", STR).req()];
pub const LDAP: &[Field] = &[
    f(
        "ldapServerURL",
        Ty::Text("ldap://host:port or ldaps://host:port"),
    )
    .default("\"ldap://127.0.0.1:389\""),
    f("ldapServerUserDn", STR).req(),
    f("ldapServerUserPassword", STR).req(),
    f("ldapSearchBase", STR).req(),
    f("ldapSearchFilter", STR).default("\"(uid={0})\""),
    f("ldapSearchInSubtree", BOOL).default("false"),
    f(
        "authorizationOrigin",
        Ty::Enum(&["httpBasicAuthenticationHeader", "customExpression"]),
    )
    .default("\"httpBasicAuthenticationHeader\"")
    .doc("Flex 1.14: where the Basic credential is read."),
    f(
        "authorizationExpression",
        Ty::Text("#[attributes.headers['NAME']] or #[attributes.queryParams['NAME']]"),
    )
    .doc("With customExpression: the credential, `Basic <base64>` or the base64 alone."),
];

/// `ldap-authentication-flex` onto `ldap-authentication` (Flex's fields
/// renamed; the rest at our defaults).
pub(super) fn ldap(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    const RENAMES: &[(&str, &str)] = &[
        ("url", "ldapServerURL"),
        ("bindDn", "ldapServerUserDn"),
        ("bindPassword", "ldapServerUserPassword"),
        ("searchBase", "ldapSearchBase"),
        ("searchFilter", "ldapSearchFilter"),
        ("searchInSubtree", "ldapSearchInSubtree"),
    ];
    let f = d.map(c, path, LDAP)?;
    let mut tree: Vec<(&str, Node)> = RENAMES
        .iter()
        .filter_map(|(ours, flex)| f.get(flex).map(|n| (*ours, n.clone())))
        .collect();
    if let Some(source) = credential_origin(
        d,
        &f,
        path,
        ("authorizationOrigin", "httpBasicAuthenticationHeader"),
        "authorizationExpression",
    )? {
        tree.push(("credentials", source));
    }
    let node = map(f.pos, tree);
    let renames = [RENAMES, &[("credentials", "authorizationExpression")]].concat();
    ours(d, &renames, |d| {
        policy::ldap::decode(d, &node, path).map(PolicyConfig::LdapAuth)
    })
}
pub const INTROSPECTION: &[Field] = &[
    f("introspectionURL", Ty::Url("an http(s) URL")).req(),
    f("authorizationValue", STR)
        .req()
        .doc("The Authorization header value sent to the endpoint."),
    f("validatedTokenTTL", POSITIVE).doc("Seconds a valid token is remembered."),
    f("authenticationTimeout", POSITIVE)
        .default("10000")
        .doc("Milliseconds."),
    f(
        "scopes",
        Ty::Either(&[Ty::Text("scopes, space-separated"), STRS]),
    ),
    f(
        "scopeValidationCriteria",
        Ty::AnyCase(&["AND", "OR", "all", "any"]),
    )
    .default("\"AND\""),
    f("exposeHeaders", BOOL)
        .default("false")
        .doc("true is not supported yet."),
    f("maxCacheEntries", POSITIVE).default("1000"),
    f("skipClientIdValidation", BOOL).default("false"),
    f("consumerBy", Ty::Any).doc("Not supported yet."),
];

/// Flex's `<x>Origin` / `<x>Expression` pair: `Some(None)` for the
/// standard header (`origin.1`), `Some(Some(our {header|queryParam: NAME}))`
/// for `customExpression`, `None` when it is wrong (the error reported).
fn credential_origin(
    d: &mut Decoder,
    f: &crate::config::decode::Fields,
    path: &str,
    origin: (&str, &str),
    expression: &str,
) -> Option<Option<Node>> {
    let Some(n) = f.get(origin.0) else {
        return Some(None);
    };
    let at = join(path, origin.0);
    match d.scalar(n, &at, "a string")? {
        o if o == origin.1 => Some(None),
        "customExpression" => match f.get(expression) {
            Some(e) => token_source(d, e, &join(path, expression)).map(Some),
            None => {
                d.error(
                    f.pos,
                    path,
                    format!("{} customExpression needs `{expression}`", origin.0),
                );
                None
            }
        },
        other => {
            d.error(
                n.pos,
                &at,
                format!("{other:?}: expected {} or customExpression", origin.1),
            );
            None
        }
    }
}

/// Where the token is: `#[attributes.headers['x']]` / `queryParams['t']`
/// as our `token: {header|queryParam}`.
fn token_source(d: &mut Decoder, n: &Node, path: &str) -> Option<Node> {
    use crate::policy::expr::Accessor;
    let (key, name) = match accessor(d, n, path)? {
        Some(Accessor::Header(h)) => ("header", h),
        Some(Accessor::Query(q)) => ("queryParam", q),
        _ => {
            d.error(
                n.pos,
                path,
                "a header (#[attributes.headers['NAME']]) or a query parameter (#[attributes.queryParams['NAME']]) is supported",
            );
            return None;
        }
    };
    Some(map(n.pos, vec![(key, scalar(n.pos, name))]))
}

pub(super) fn jwt_validation(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(c, path, JWT_FIELDS)?;
    let before = d.errors.len();
    let pos = f.pos;
    let text = |d: &mut Decoder, key: &str, default: &str| -> Option<String> {
        match f.get(key) {
            Some(n) => d
                .scalar(n, &join(path, key), "a string")
                .map(str::to_string),
            None => Some(default.to_string()),
        }
    };
    let method = text(d, "signingMethod", "rsa")?;
    let length = match f.get("signingKeyLength") {
        Some(n) => d.int(n, &join(path, "signingKeyLength"), 256, 512)?,
        None => 256,
    };
    let algorithm = match (method.to_ascii_lowercase().as_str(), length) {
        ("none", _) => {
            let at = f.get("signingMethod").map_or(pos, |n| n.pos);
            d.error(
                at,
                &join(path, "signingMethod"),
                "`none` is never accepted: unsigned tokens prove nothing",
            );
            return None;
        }
        ("rsa", 256 | 384 | 512) => format!("RS{length}"),
        ("hmac", 256 | 384 | 512) => format!("HS{length}"),
        ("es", 256 | 384) => format!("ES{length}"),
        (m, l) => {
            d.error(
                pos,
                &join(path, "signingMethod"),
                format!("{m} with signingKeyLength {l} is not supported (rsa or hmac: 256, 384, 512; es: 256, 384)"),
            );
            return None;
        }
    };
    let mut tree: Vec<(&str, Node)> = Vec::new();
    if let Some(source) = credential_origin(
        d,
        &f,
        path,
        ("jwtOrigin", "httpBearerAuthenticationHeader"),
        "jwtExpression",
    )? {
        tree.push(("token", source));
    }
    let key_origin = text(d, "jwtKeyOrigin", "text")?;
    match key_origin.as_str() {
        "text" => {
            let key = d.required(&f, "textKey", path)?.clone();
            let field = if algorithm.starts_with("HS") {
                "secret"
            } else {
                "publicKey"
            };
            let k = map(
                key.pos,
                vec![("algorithm", scalar(pos, algorithm.clone())), (field, key)],
            );
            tree.push(("keys", seq(pos, vec![k])));
        }
        "jwks" => {
            let url = d.required(&f, "jwksUrl", path)?.clone();
            let j = map(
                url.pos,
                vec![
                    ("url", url.clone()),
                    ("algorithms", seq(pos, vec![scalar(pos, algorithm.clone())])),
                ],
            );
            tree.push(("jwks", seq(pos, vec![j])));
            let minutes = match f.get("jwksServiceTimeToLive") {
                Some(n) => d.positive_int(n, &join(path, "jwksServiceTimeToLive"))?,
                None => 60,
            };
            tree.push(("jwksTtl", scalar(pos, format!("{minutes}m"))));
            let timeout = match f.get("jwksServiceConnectionTimeout") {
                Some(n) => millis(d, n, &join(path, "jwksServiceConnectionTimeout"))?,
                None => scalar(pos, "10000ms"),
            };
            tree.push(("jwksTimeout", timeout));
        }
        other => {
            d.error(
                f.get("jwtKeyOrigin").map_or(pos, |n| n.pos),
                &join(path, "jwtKeyOrigin"),
                format!("{other:?}: expected text or jwks"),
            );
            return None;
        }
    }
    let flag = |d: &mut Decoder, key: &str| bool_or(d, f.get(key), &join(path, key), false);
    if flag(d, "validateAudClaim")? {
        let Some(n) = f.get("supportedAudiences") else {
            d.error(pos, path, "validateAudClaim needs `supportedAudiences`");
            return None;
        };
        let ap = join(path, "supportedAudiences");
        // a comma-separated string, or a list
        let list = match &n.value {
            Value::Scalar { text, .. } => text
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(|a| scalar(n.pos, a))
                .collect(),
            Value::Seq(items) => items.clone(),
            Value::Map(_) => {
                d.error(n.pos, &ap, "expected audiences, comma-separated or a list");
                return None;
            }
        };
        tree.push(("audiences", seq(n.pos, list)));
    }
    let require_exp = flag(d, "mandatoryExpClaim")?;
    tree.push(("requireExp", scalar(pos, require_exp.to_string())));
    if flag(d, "mandatoryNbfClaim")? {
        d.error(
            f.get("mandatoryNbfClaim").map_or(pos, |n| n.pos),
            &join(path, "mandatoryNbfClaim"),
            "a mandatory nbf claim is not supported yet (an nbf present is always checked)",
        );
    }
    // Flex: a token without aud passes unless mandatoryAudClaim (default
    // false); one with aud must match supportedAudiences
    let require_aud = flag(d, "mandatoryAudClaim")?;
    let _ = flag(d, "skipClientIdValidation")?; // no client contracts in Local Mode
    if flag(d, "validateCustomClaim")? {
        if let Some(list) = f.get("nonMandatoryCustomClaims") {
            d.error(
                list.pos,
                &join(path, "nonMandatoryCustomClaims"),
                "optional custom claims are not supported yet (mandatoryCustomClaims are)",
            );
        }
        let mut claims = Vec::new();
        if let Some(list) = f.get("mandatoryCustomClaims") {
            for (item, at) in d.items(list, &join(path, "mandatoryCustomClaims"), false) {
                let Some(g) = d.map(item, &at, CUSTOM_CLAIM) else {
                    continue;
                };
                let key = d.required(&g, "key", &at).cloned();
                let value = d.required(&g, "value", &at).and_then(|v| {
                    let vp = join(&at, "value");
                    let text = d.scalar(v, &vp, "a value")?;
                    if text.contains("#[") {
                        d.error(
                            v.pos,
                            &vp,
                            "claim values are compared as written; expressions are not supported here yet",
                        );
                        return None;
                    }
                    Some(v.clone())
                });
                if let (Some(k), Some(v)) = (key, value) {
                    claims.push(map(item.pos, vec![("name", k), ("value", v)]));
                }
            }
        }
        tree.push(("claims", seq(pos, claims)));
    }
    if d.errors.len() > before {
        return None;
    }
    let node = map(c.pos, tree);
    let renames = [
        ("publicKey", "textKey"),
        ("secret", "textKey"),
        ("keys[0]", ""),
        ("jwks[0]", ""),
        ("url", "jwksUrl"),
        ("audiences", "supportedAudiences"),
        ("claims", "mandatoryCustomClaims"),
        ("name", "key"),
    ];
    ours(d, &renames, |d| {
        policy::jwt::decode(d, &node, path).map(|mut c| {
            c.missing_status = 400;
            c.require_aud = require_aud;
            PolicyConfig::Jwt(c)
        })
    })
}

pub(super) fn introspection(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(c, path, INTROSPECTION)?;
    let before = d.errors.len();
    let pos = f.pos;
    let mut tree: Vec<(&str, Node)> = Vec::new();
    if let Some(u) = d.required(&f, "introspectionURL", path) {
        tree.push(("url", u.clone()));
    }
    if let Some(a) = d.required(&f, "authorizationValue", path) {
        tree.push(("authorization", a.clone()));
    }
    if let Some(n) = f.get("validatedTokenTTL") {
        if let Some(s) = d.positive_int(n, &join(path, "validatedTokenTTL")) {
            tree.push(("cacheTtl", scalar(n.pos, format!("{s}s"))));
        }
    }
    let timeout = match f.get("authenticationTimeout") {
        Some(n) => millis(d, n, &join(path, "authenticationTimeout")),
        None => Some(scalar(pos, "10000ms")),
    };
    if let Some(t) = timeout {
        tree.push(("timeout", t));
    }
    if let Some(n) = f.get("scopes") {
        let list = match &n.value {
            Value::Scalar { text, .. } => {
                text.split_whitespace().map(|s| scalar(n.pos, s)).collect()
            }
            Value::Seq(items) => items.clone(),
            Value::Map(_) => {
                d.error(
                    n.pos,
                    &join(path, "scopes"),
                    "expected scopes, space-separated or a list",
                );
                Vec::new()
            }
        };
        if !list.is_empty() {
            tree.push(("scopes", seq(n.pos, list)));
        }
    }
    if let Some(n) = f.get("scopeValidationCriteria") {
        tree.push(("scopeMatch", n.clone()));
    }
    if let Some(n) = f.get("maxCacheEntries") {
        tree.push(("maxCacheEntries", n.clone()));
    }
    if bool_or(
        d,
        f.get("exposeHeaders"),
        &join(path, "exposeHeaders"),
        false,
    )? {
        d.error(
            f.get("exposeHeaders").map_or(pos, |n| n.pos),
            &join(path, "exposeHeaders"),
            "exposing the introspection response as headers is not supported yet",
        );
    }
    if let Some(n) = f.get("consumerBy") {
        d.error(
            n.pos,
            &join(path, "consumerBy"),
            "consumerBy is not supported yet",
        );
    }
    let _ = bool_or(
        d,
        f.get("skipClientIdValidation"),
        &join(path, "skipClientIdValidation"),
        false,
    )?;
    if d.errors.len() > before {
        return None;
    }
    let node = map(c.pos, tree);
    let renames = [
        ("url", "introspectionURL"),
        ("authorization", "authorizationValue"),
        ("cacheTtl", "validatedTokenTTL"),
        ("timeout", "authenticationTimeout"),
        ("scopeMatch", "scopeValidationCriteria"),
    ];
    ours(d, &renames, |d| {
        policy::introspection::decode(d, &node, path).map(PolicyConfig::Introspection)
    })
}
