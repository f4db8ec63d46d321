//! Flex's policy catalog under its own names and field names, mapped onto
//! our policies. Each Flex config is checked field by field (unknown
//! fields get a suggestion in Flex's names), translated into our policy's
//! config tree with the user's positions kept, and decoded by our policy;
//! an error it reports is shown with Flex's field names.
//!
//! `route` and `route-weighted` are routing, not policies: they come back
//! as [`Bound::Route`]. `circuit-breaker-flex` sets a Service's limits.

mod access;
mod auth;
mod routing;
mod tls;
mod traffic;

use super::expr;
use super::resources::Ref;
use crate::config::decode::{suggest, Decoder};
use crate::config::yaml::{Node, Pos, Value};
use crate::policy::{self, PolicyConfig};

/// What a binding's `policyRef` decodes to.
#[derive(Debug, Clone)]
pub enum Bound {
    Policy(Box<PolicyConfig>),
    /// `route` (one target) or `route-weighted` (several, by weight).
    Route(Vec<RouteTo>),
    CircuitBreaker(CircuitPatch),
    /// `tls`: the HTTPS side of the instance's port.
    Tls(Box<crate::config::tls::ListenerTls>),
    /// `tls-outbound`: TLS to a Service, and whether to offer h2.
    TlsOutbound(Box<crate::config::model::UpstreamTls>, bool),
    /// A custom policy (`kind: Extension`), resolved across documents.
    Extension(Box<super::extension::ExtensionRef>),
}

/// A name of Flex's catalog (run or known) or of our own policies.
pub fn is_catalog_name(name: &str) -> bool {
    FLEX_NAMES.contains(&name)
        || NOT_YET.contains(&name)
        || not_in_local_mode(name).is_some()
        || policy::NAMES.contains(&name)
}

/// Why Flex itself does not run `name` in Local Mode, if it does not.
fn not_in_local_mode(name: &str) -> Option<&'static str> {
    NOT_IN_LOCAL_MODE
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why)
}

#[derive(Debug, Clone)]
pub struct RouteTo {
    pub service: Ref,
    pub destination_path: String,
    pub weight: u32,
}

/// `circuit-breaker-flex` thresholds: the fields given.
#[derive(Debug, Clone, Copy, Default)]
pub struct CircuitPatch {
    pub max_connections: Option<usize>,
    pub max_pending: Option<usize>,
    pub max_requests: Option<usize>,
    pub max_retries: Option<usize>,
}

/// Every Flex policy name we run.
pub const FLEX_NAMES: &[&str] = &[
    "route",
    "route-weighted",
    "rate-limiting-flex",
    "spike-control-flex",
    "http-basic-authentication-flex",
    "ip-allowlist-flex",
    "ip-blocklist-flex",
    "header-injection-flex",
    "header-removal-flex",
    "cors-flex",
    "jwt-validation-flex",
    "oauth2-token-introspection-flex",
    "circuit-breaker-flex",
    "tls",
    "tls-outbound",
    "tracing-flex",
    "message-logging-flex",
    "json-threat-protection-flex",
    "xml-threat-protection-flex",
    "ldap-authentication-flex",
    "native-ext-authz-flex",
    "spec-validation-flex",
    "http-caching-flex",
];

/// The config fields of each Flex policy we run (what its decoder reads
/// with): the JSON Schema's source. Names of ours take our policies'.
pub const FIELDS: &[(&str, &[crate::config::fields::Field])] = &[
    ("route", routing::ROUTE_FIELDS),
    ("route-weighted", routing::WEIGHTED_FIELDS),
    ("rate-limiting-flex", traffic::RATE_LIMITING),
    ("spike-control-flex", traffic::SPIKE_CONTROL),
    ("http-basic-authentication-flex", auth::BASIC_AUTH),
    ("ip-allowlist-flex", access::IP_FILTER),
    ("ip-blocklist-flex", access::IP_FILTER),
    ("header-injection-flex", access::HEADER_INJECTION),
    ("header-removal-flex", access::HEADER_REMOVAL),
    ("cors-flex", access::CORS),
    ("jwt-validation-flex", auth::JWT_FIELDS),
    ("oauth2-token-introspection-flex", auth::INTROSPECTION),
    ("circuit-breaker-flex", traffic::CIRCUIT_BREAKER),
    ("tls", tls::TLS_FIELDS),
    ("tls-outbound", tls::TLS_OUT_FIELDS),
    ("tracing-flex", policy::tracing::FIELDS),
    ("message-logging-flex", policy::message_logging::FIELDS),
    ("json-threat-protection-flex", policy::threat::json::FIELDS),
    ("xml-threat-protection-flex", policy::threat::xml::FIELDS),
    ("ldap-authentication-flex", auth::LDAP),
    ("native-ext-authz-flex", policy::ext_authz::FIELDS),
    ("spec-validation-flex", policy::openapi::FIELDS),
    ("http-caching-flex", policy::cache::FIELDS),
];

/// Flex catalog names we know but do not run yet: `validate` says so.
pub const NOT_YET: &[&str] = &[
    "openid-token-enforcement-flex",
    "external-processing-flex",
    "http-basic-authentication-outbound-flex",
];

/// Flex catalog names Flex itself does not run in Local Mode, and why:
/// `validate` says so.
pub const NOT_IN_LOCAL_MODE: &[(&str, &str)] = &[
    (
        "client-id-enforcement-flex",
        "it checks client applications registered in API Manager, which Local Mode has none of; use api-key or jwt-validation-flex",
    ),
    (
        "rate-limiting-sla-based-flex",
        "its tiers come from API Manager contracts, which Local Mode has none of; use rate-limiting-flex with a keySelector",
    ),
    (
        "health-check-flex",
        "it alerts through Anypoint Monitoring; active checks are a `kind: Gateway` service's healthCheck here",
    ),
];

/// Decode the config of the policy called `name`.
pub fn decode(
    d: &mut Decoder,
    name: &str,
    name_pos: Pos,
    config: Option<&Node>,
    pos: Pos,
    path: &str,
    name_path: &str,
) -> Option<Bound> {
    let empty = Node {
        value: Value::Map(Vec::new()),
        pos,
    };
    let c = config.unwrap_or(&empty);
    let policy = |b: Option<PolicyConfig>| b.map(|c| Bound::Policy(Box::new(c)));
    match name {
        "route" => routing::route(d, c, path).map(|r| Bound::Route(vec![r])),
        "route-weighted" => routing::route_weighted(d, c, path).map(Bound::Route),
        "rate-limiting-flex" => policy(traffic::rate_limiting(d, c, path)),
        "spike-control-flex" => policy(traffic::spike_control(d, c, path)),
        "http-basic-authentication-flex" => policy(auth::basic_auth(d, c, path)),
        "ip-allowlist-flex" => policy(access::ip_filter(d, c, path, true)),
        "ip-blocklist-flex" => policy(access::ip_filter(d, c, path, false)),
        "header-injection-flex" => policy(access::header_injection(d, c, path)),
        "header-removal-flex" => policy(access::header_removal(d, c, path)),
        "cors-flex" => policy(access::cors(d, c, path)),
        "jwt-validation-flex" => policy(auth::jwt_validation(d, c, path)),
        "oauth2-token-introspection-flex" => policy(auth::introspection(d, c, path)),
        "ldap-authentication-flex" => policy(auth::ldap(d, c, path)),
        "circuit-breaker-flex" => traffic::circuit_breaker(d, c, path).map(Bound::CircuitBreaker),
        "tls" => tls::tls_inbound(d, c, path).map(|t| Bound::Tls(Box::new(t))),
        "tls-outbound" => {
            tls::tls_outbound(d, c, path).map(|(t, h2)| Bound::TlsOutbound(Box::new(t), h2))
        }
        // the same fields as ours
        "tracing-flex" => policy(PolicyConfig::decode(d, "tracing", c, path)),
        "message-logging-flex" => policy(PolicyConfig::decode(d, "message-logging", c, path)),
        "json-threat-protection-flex" => {
            policy(PolicyConfig::decode(d, "json-threat-protection", c, path))
        }
        "xml-threat-protection-flex" => {
            policy(PolicyConfig::decode(d, "xml-threat-protection", c, path))
        }
        "spec-validation-flex" => policy(PolicyConfig::decode(d, "openapi-validation", c, path)),
        "http-caching-flex" => policy(PolicyConfig::decode(d, "response-cache", c, path)),
        "native-ext-authz-flex" => {
            policy(PolicyConfig::decode(d, "external-authorization", c, path))
        }
        // our own policies, under our names and fields, are accepted too
        n if policy::NAMES.contains(&n) => policy(PolicyConfig::decode(d, n, c, path)),
        n if NOT_YET.contains(&n) => {
            d.error(
                name_pos,
                name_path,
                format!(
                    "policy {n:?} is not supported by flex-gateway yet (supported: {})",
                    FLEX_NAMES.join(", ")
                ),
            );
            None
        }
        n => {
            if let Some(why) = not_in_local_mode(n) {
                d.error(
                    name_pos,
                    name_path,
                    format!("policy {n:?} does not run in Flex's Local Mode: {why}"),
                );
                return None;
            }
            let mut known: Vec<&str> = FLEX_NAMES.to_vec();
            known.extend(NOT_YET);
            known.extend(NOT_IN_LOCAL_MODE.iter().map(|(n, _)| *n));
            let hint = suggest(n, &known)
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_else(|| format!(" (supported: {})", FLEX_NAMES.join(", ")));
            d.error(name_pos, name_path, format!("unknown policy {n:?}{hint}"));
            None
        }
    }
}

// --- building our config trees ------------------------------------------

pub(super) fn scalar(pos: Pos, text: impl Into<String>) -> Node {
    Node {
        value: Value::Scalar {
            text: text.into(),
            quoted: false,
        },
        pos,
    }
}

pub(super) fn map(pos: Pos, pairs: Vec<(&str, Node)>) -> Node {
    Node {
        value: Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (scalar(v.pos, k), v))
                .collect(),
        ),
        pos,
    }
}

pub(super) fn seq(pos: Pos, items: Vec<Node>) -> Node {
    Node {
        value: Value::Seq(items),
        pos,
    }
}

/// Decode our tree with our policy's decoder; errors it reports are
/// shown with Flex's names (`renames`: ours → Flex's).
pub(super) fn ours<T>(
    d: &mut Decoder,
    renames: &[(&str, &str)],
    decode: impl FnOnce(&mut Decoder) -> Option<T>,
) -> Option<T> {
    let before = d.errors.len();
    let out = decode(d);
    for e in &mut d.errors[before..] {
        for (our, flex) in renames {
            if our.contains('[') {
                // a level of ours that Flex does not have
                e.path = e.path.replace(&format!(".{our}"), flex);
                continue;
            }
            e.path = e
                .path
                .split('.')
                .map(|seg| {
                    let (name, index) = seg.split_at(seg.find('[').unwrap_or(seg.len()));
                    if name == *our {
                        format!("{flex}{index}")
                    } else {
                        seg.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(".");
            e.message = e.message.replace(&format!("`{our}`"), &format!("`{flex}`"));
        }
    }
    out
}

/// Milliseconds (a whole number) as our duration text.
pub(super) fn millis(d: &mut Decoder, n: &Node, path: &str) -> Option<Node> {
    let ms = d.positive_int(n, path)?;
    Some(scalar(n.pos, format!("{ms}ms")))
}

/// A field holding one expression (`#[...]`): the accessor it reads when
/// it is a single one, or an error at `n`.
pub(super) fn accessor(
    d: &mut Decoder,
    n: &Node,
    path: &str,
) -> Option<Option<crate::policy::expr::Accessor>> {
    let text = d.scalar(n, path, "an expression")?;
    match expr::single(text) {
        Ok(e) => Some(e.accessor().cloned()),
        Err(why) => {
            d.error(n.pos, path, why);
            None
        }
    }
}

/// A text with expressions, mapped by `f`; an error at `n`.
pub(super) fn mapped<T>(
    d: &mut Decoder,
    n: &Node,
    path: &str,
    f: impl Fn(&str) -> Result<T, String>,
) -> Option<T> {
    let text = d.scalar(n, path, "an expression")?;
    match f(text) {
        Ok(v) => Some(v),
        Err(why) => {
            d.error(n.pos, path, why);
            None
        }
    }
}

pub(super) fn bool_or(
    d: &mut Decoder,
    n: Option<&Node>,
    path: &str,
    default: bool,
) -> Option<bool> {
    match n {
        Some(n) => d.bool(n, path),
        None => Some(default),
    }
}
