//! `spec.services` (named upstream services), decoded with every problem
//! reported; a route's `upstream` is in `route_upstream.rs`. References
//! between them are checked in `load.rs`, where every document's services
//! are known.

use super::decode::{join, Decoder, Fields};
use super::fields::{f, Field, Ty, BOOL, DURATION, POSITIVE, STR};
use super::model::{
    Balance, CircuitBreaker, ErrorBreaker, HashOn, HealthCheck, PassiveCheck, ServiceConfig,
    TargetSpec, UpstreamTls, DEFAULT_DNS_REFRESH,
};
pub use super::route_upstream::{
    decode_route_upstream, decode_timeouts, UpstreamSpec, TIMEOUT_FIELDS,
};
use super::values::parse_upstream_url;
use super::yaml::{Node, Pos};
use std::time::Duration;

/// A declared service with where it was declared.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub config: ServiceConfig,
    pub pos: Pos,
    pub path: String,
}

pub const SERVICE_FIELDS: &[Field] = &[
    f("name", Ty::Text("letters, digits, `.`, `_`, `-`")).req(),
    f(
        "targets",
        Ty::List(
            &Ty::Either(&[Ty::Url("an upstream URL"), Ty::Obj(TARGET_FIELDS)]),
            false,
        ),
    )
    .req()
    .doc("Upstream URLs, or {url, weight} mappings."),
    f("loadBalancing", Ty::Enum(BALANCE)).default("\"round-robin\""),
    f("hashOn", Ty::Text("header:NAME, cookie:NAME or client-ip"))
        .doc("What `hash` balancing hashes."),
    f("healthCheck", Ty::Obj(HEALTH_FIELDS)).doc("Active health checks."),
    f("passiveHealthCheck", Ty::Obj(PASSIVE_FIELDS)).doc("Outlier ejection from failed requests."),
    f("failOpen", BOOL)
        .default("false")
        .doc("Send to every target when none is healthy."),
    f("dnsRefresh", DURATION).default("\"30s\""),
    f("circuitBreaker", Ty::Obj(BREAKER_FIELDS)),
    f("tls", Ty::Obj(UPSTREAM_TLS_FIELDS)),
    f("http2", BOOL)
        .default("false")
        .doc("Offer HTTP/2 to the targets."),
];
pub const UPSTREAM_TLS_FIELDS: &[Field] = &[
    f("verify", BOOL).default("true"),
    f("ca", Ty::Text("a PEM file")),
    f("cert", Ty::Text("a PEM file")).doc("Client certificate (mTLS), with `key`."),
    f("key", Ty::Text("a PEM file")),
    f("sni", STR),
];
const TARGET_FIELDS: &[Field] = &[
    f("url", Ty::Url("an upstream URL")).req(),
    f("weight", Ty::Int(1, 1000)).default("1"),
];
const HEALTH_FIELDS: &[Field] = &[
    f("path", Ty::Text("a request path")).req(),
    f("interval", DURATION).default("\"10s\""),
    f("timeout", DURATION).default("\"2s\""),
    f(
        "expectedStatus",
        Ty::Either(&[
            Ty::Int(100, 599),
            Ty::Text("a status range such as 200-399"),
        ]),
    )
    .default("\"200-399\""),
    f("healthyThreshold", Ty::Int(1, 100)).default("2"),
    f("unhealthyThreshold", Ty::Int(1, 100)).default("3"),
];
const PASSIVE_FIELDS: &[Field] = &[
    f("consecutiveFailures", Ty::Int(1, 1000)).default("5"),
    f("ejectionTime", DURATION).default("\"30s\""),
    f("maxEjectionTime", DURATION).default("\"300s\""),
];
const BREAKER_FIELDS: &[Field] = &[
    f("maxConnections", POSITIVE),
    f("maxPendingRequests", POSITIVE),
    f("maxRequests", POSITIVE),
    f("maxRetries", POSITIVE),
    f("failureThreshold", Ty::Int(1, 100_000))
        .doc("Errors in `failureWindow` that open the breaker."),
    f("failureWindow", DURATION).default("\"10s\""),
    f("openTime", DURATION).default("\"30s\""),
];
const BALANCE: &[&str] = &["round-robin", "random", "least-requests", "hash"];

/// A service name: letters, digits, `.`, `_`, `-` (so it never collides
/// with the `route:<id>` names of inline URLs).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub(super) fn optional<T>(
    d: &mut Decoder,
    f: &Fields,
    key: &str,
    path: &str,
    default: T,
    decode: impl FnOnce(&mut Decoder, &Node, &str) -> Option<T>,
) -> Option<T> {
    match f.get(key) {
        Some(n) => decode(d, n, &join(path, key)),
        None => Some(default),
    }
}

pub(super) fn count(d: &mut Decoder, n: &Node, path: &str, max: u64) -> Option<u32> {
    let v = d.positive_int(n, path)?;
    if v > max {
        d.error(n.pos, path, format!("{v} is over the maximum of {max}"));
        return None;
    }
    Some(v as u32)
}

pub(super) fn limit(d: &mut Decoder, n: &Node, path: &str) -> Option<usize> {
    d.positive_int(n, path).map(|v| v as usize)
}

pub(super) fn duration(d: &mut Decoder, n: &Node, path: &str) -> Option<Duration> {
    d.duration(n, path, false)
}

/// A declared service; `names` gets its name (with position and field
/// path) even when other fields have errors, so references to it and
/// duplicates are checked in the same run.
pub fn decode_service(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    names: &mut Vec<(String, Pos, String)>,
) -> Option<ServiceSpec> {
    let f = d.map(node, path, SERVICE_FIELDS)?;
    let before = d.errors.len();
    let name = d.required(&f, "name", path).and_then(|n| {
        let at = join(path, "name");
        let name = d.string(n, &at)?;
        if !valid_name(&name) {
            d.error(
                n.pos,
                &at,
                format!("{name:?} is not a service name (letters, digits, '.', '_', '-')"),
            );
            return None;
        }
        names.push((name.clone(), n.pos, at));
        Some(name)
    });
    let mut targets = Vec::new();
    if let Some(list) = d.required(&f, "targets", path) {
        let at = join(path, "targets");
        for (item, item_path) in d.items(list, &at, false) {
            if let Some(t) = decode_target(d, item, &item_path) {
                targets.push(t);
            }
        }
        if targets.is_empty() && d.errors.len() == before {
            d.error(list.pos, &at, "at least one target is required");
        }
    }
    let hash_on = f
        .get("hashOn")
        .and_then(|n| decode_hash_on(d, n, &join(path, "hashOn")));
    let balance = match f.get("loadBalancing") {
        None => Some(Balance::RoundRobin),
        Some(n) => {
            let at = join(path, "loadBalancing");
            match d.scalar(n, &at, "a load-balancing algorithm") {
                Some("round-robin") => Some(Balance::RoundRobin),
                Some("random") => Some(Balance::Random),
                Some("least-requests") => Some(Balance::LeastRequests),
                Some("hash") => match &hash_on {
                    Some(on) => Some(Balance::Hash(on.clone())),
                    None => {
                        if f.get("hashOn").is_none() {
                            d.error(
                                n.pos,
                                &at,
                                "`hash` needs `hashOn` (header:NAME, cookie:NAME or client-ip)",
                            );
                        }
                        None
                    }
                },
                Some(other) => {
                    d.error(
                        n.pos,
                        &at,
                        format!(
                            "unknown algorithm {other:?} (expected one of: {})",
                            BALANCE.join(", ")
                        ),
                    );
                    None
                }
                None => None,
            }
        }
    };
    if let (Some(n), Some(b)) = (f.get("hashOn"), &balance) {
        if !matches!(b, Balance::Hash(_)) {
            d.error(
                n.pos,
                &join(path, "hashOn"),
                "`hashOn` applies to `loadBalancing: hash` only",
            );
        }
    }
    let health_check = match f.get("healthCheck") {
        Some(n) => decode_health_check(d, n, &join(path, "healthCheck")).map(Some),
        None => Some(None),
    };
    let passive = match f.get("passiveHealthCheck") {
        Some(n) => decode_passive(d, n, &join(path, "passiveHealthCheck")).map(Some),
        None => Some(None),
    };
    let fail_open = optional(d, &f, "failOpen", path, false, |d, n, p| d.bool(n, p));
    let dns_refresh = optional(d, &f, "dnsRefresh", path, DEFAULT_DNS_REFRESH, |d, n, p| {
        let t = duration(d, n, p)?;
        if t < Duration::from_secs(1) {
            d.error(n.pos, p, "must be at least 1s");
            return None;
        }
        Some(t)
    });
    let circuit = optional(
        d,
        &f,
        "circuitBreaker",
        path,
        CircuitBreaker::default(),
        decode_breaker,
    );
    let tls = optional(
        d,
        &f,
        "tls",
        path,
        UpstreamTls::default(),
        decode_upstream_tls,
    );
    // https:// targets: h2 offered by ALPN; http:// ones: h2c (prior knowledge)
    let http2 = optional(d, &f, "http2", path, false, |d, n, p| d.bool(n, p));
    if d.errors.len() > before {
        return None;
    }
    Some(ServiceSpec {
        config: ServiceConfig {
            name: name?,
            targets,
            balance: balance?,
            health_check: health_check?,
            passive: passive?,
            fail_open: fail_open?,
            dns_refresh: dns_refresh?,
            circuit: circuit?,
            tls: tls?,
            http2: http2?,
        },
        pos: node.pos,
        path: path.to_string(),
    })
}

/// `http://10.0.0.1:3000` or `{url: http://10.0.0.1:3000, weight: 3}`.
fn decode_target(d: &mut Decoder, node: &Node, path: &str) -> Option<TargetSpec> {
    let (url_node, url_path, weight) = if node.is_scalar() {
        (node, path.to_string(), Some(1))
    } else {
        let f = d.map(node, path, TARGET_FIELDS)?;
        let url = d.required(&f, "url", path)?;
        let weight = optional(d, &f, "weight", path, 1, |d, n, p| count(d, n, p, 1000));
        (url, join(path, "url"), weight)
    };
    let text = d.scalar(url_node, &url_path, "a URL")?;
    match parse_upstream_url(text) {
        Ok(upstream) => Some(TargetSpec {
            upstream,
            weight: weight?,
        }),
        Err(why) => {
            d.error(url_node.pos, &url_path, why);
            None
        }
    }
}

/// `header:X-User`, `cookie:session` or `client-ip`.
fn decode_hash_on(d: &mut Decoder, node: &Node, path: &str) -> Option<HashOn> {
    let text = d.scalar(node, path, "header:NAME, cookie:NAME or client-ip")?;
    let parsed = match text.split_once(':') {
        _ if text == "client-ip" => Some(HashOn::ClientIp),
        Some(("header", name)) => http::HeaderName::from_bytes(name.trim().as_bytes())
            .ok()
            .map(HashOn::Header),
        Some(("cookie", name)) if !name.trim().is_empty() && !name.contains([';', '=', ' ']) => {
            Some(HashOn::Cookie(name.trim().to_string()))
        }
        _ => None,
    };
    if parsed.is_none() {
        d.error(
            node.pos,
            path,
            format!("{text:?} is not a hash key (expected header:NAME, cookie:NAME or client-ip)"),
        );
    }
    parsed
}

/// `200`, `200-399`.
fn parse_status_range(text: &str) -> Option<(u16, u16)> {
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let (lo, hi) = (
        lo.trim().parse::<u16>().ok()?,
        hi.trim().parse::<u16>().ok()?,
    );
    ((100..=599).contains(&lo) && (lo..=599).contains(&hi)).then_some((lo, hi))
}

fn decode_health_check(d: &mut Decoder, node: &Node, path: &str) -> Option<HealthCheck> {
    let f = d.map(node, path, HEALTH_FIELDS)?;
    let check_path = d.required(&f, "path", path).and_then(|n| {
        let at = join(path, "path");
        let p = d.string(n, &at)?;
        if !p.starts_with('/') || p.chars().any(|c| c.is_ascii_control() || c == ' ') {
            d.error(
                n.pos,
                &at,
                format!("{p:?} is not a request path (example: /health)"),
            );
            return None;
        }
        Some(p)
    });
    let interval = optional(d, &f, "interval", path, Duration::from_secs(10), duration);
    let timeout = optional(d, &f, "timeout", path, Duration::from_secs(2), duration);
    let statuses = optional(d, &f, "expectedStatus", path, (200, 399), |d, n, p| {
        let text = d.scalar(n, p, "a status or range")?;
        let range = parse_status_range(text);
        if range.is_none() {
            d.error(
                n.pos,
                p,
                format!("{text:?} is not a status or range (examples: 200, 200-399)"),
            );
        }
        range
    });
    let healthy = optional(d, &f, "healthyThreshold", path, 2, |d, n, p| {
        count(d, n, p, 100)
    });
    let unhealthy = optional(d, &f, "unhealthyThreshold", path, 3, |d, n, p| {
        count(d, n, p, 100)
    });
    if let (Some(i), Some(t), Some(n)) = (interval, timeout, f.get("timeout")) {
        if t > i {
            d.error(
                n.pos,
                &join(path, "timeout"),
                "must not be longer than `interval`",
            );
            return None;
        }
    }
    Some(HealthCheck {
        path: check_path?,
        interval: interval?,
        timeout: timeout?,
        statuses: statuses?,
        healthy_threshold: healthy?,
        unhealthy_threshold: unhealthy?,
    })
}

fn decode_passive(d: &mut Decoder, node: &Node, path: &str) -> Option<PassiveCheck> {
    let f = d.map(node, path, PASSIVE_FIELDS)?;
    let failures = optional(d, &f, "consecutiveFailures", path, 5, |d, n, p| {
        count(d, n, p, 1000)
    });
    let ejection = optional(
        d,
        &f,
        "ejectionTime",
        path,
        Duration::from_secs(30),
        duration,
    );
    let max = optional(
        d,
        &f,
        "maxEjectionTime",
        path,
        Duration::from_secs(300),
        duration,
    );
    if let (Some(e), Some(m), Some(n)) = (ejection, max, f.get("maxEjectionTime")) {
        if m < e {
            d.error(
                n.pos,
                &join(path, "maxEjectionTime"),
                "must not be shorter than `ejectionTime`",
            );
            return None;
        }
    }
    Some(PassiveCheck {
        consecutive_failures: failures?,
        ejection: ejection?,
        max_ejection: max?.max(ejection?),
    })
}

fn decode_breaker(d: &mut Decoder, node: &Node, path: &str) -> Option<CircuitBreaker> {
    let f = d.map(node, path, BREAKER_FIELDS)?;
    let dflt = CircuitBreaker::default();
    let max_connections = optional(d, &f, "maxConnections", path, dflt.max_connections, limit);
    let max_pending = optional(d, &f, "maxPendingRequests", path, dflt.max_pending, limit);
    let max_requests = optional(d, &f, "maxRequests", path, dflt.max_requests, limit);
    let max_retries = optional(d, &f, "maxRetries", path, dflt.max_retries, limit);
    let failures = f
        .get("failureThreshold")
        .map(|n| count(d, n, &join(path, "failureThreshold"), 100_000));
    let window = optional(
        d,
        &f,
        "failureWindow",
        path,
        Duration::from_secs(10),
        duration,
    );
    let open_for = optional(d, &f, "openTime", path, Duration::from_secs(30), duration);
    if failures.is_none() {
        for key in ["failureWindow", "openTime"] {
            if let Some(n) = f.get(key) {
                d.error(
                    n.pos,
                    &join(path, key),
                    "applies with `failureThreshold` only (the error-rate breaker)",
                );
            }
        }
    }
    let errors = match failures {
        Some(failures) => Some(ErrorBreaker {
            failures: failures?,
            window: window?,
            open_for: open_for?,
        }),
        None => None,
    };
    Some(CircuitBreaker {
        max_connections: max_connections?,
        max_pending: max_pending?,
        max_requests: max_requests?,
        max_retries: max_retries?,
        errors,
    })
}

/// `tls:` of a service (or of a route's inline `url`).
pub(super) fn decode_upstream_tls(d: &mut Decoder, node: &Node, path: &str) -> Option<UpstreamTls> {
    use sha2::{Digest, Sha256};
    let f = d.map(node, path, UPSTREAM_TLS_FIELDS)?;
    let before = d.errors.len();
    let mut t = UpstreamTls::default();
    let mut h = Sha256::new();
    if let Some(n) = f.get("verify") {
        t.verify = d.bool(n, &join(path, "verify")).unwrap_or(true);
    }
    if let Some(n) = f.get("sni") {
        t.sni = d.string(n, &join(path, "sni"));
    }
    if let Some(n) = f.get("ca") {
        let field = join(path, "ca");
        if let Some(p) = d.string(n, &field) {
            d.files.push(p.clone().into());
            match super::tls::read_ca_bundle(&field, &p) {
                Ok(pem) => {
                    h.update(pem.bytes.as_slice());
                    t.ca = Some(pem);
                }
                Err(why) => d.error(n.pos, &field, why),
            }
        }
    }
    match (f.get("cert"), f.get("key")) {
        (Some(c), Some(k)) => {
            let cert = d.string(c, &join(path, "cert"));
            let key = d.string(k, &join(path, "key"));
            if let (Some(cert), Some(key)) = (cert, key) {
                d.files.push(cert.clone().into());
                d.files.push(key.clone().into());
                match super::tls::Certificate::read(&cert, &key) {
                    Ok(c) => {
                        h.update(c.fingerprint);
                        t.client = Some((c.cert, c.key));
                    }
                    Err((true, why)) => d.error(c.pos, &join(path, "cert"), why),
                    Err((false, why)) => d.error(k.pos, &join(path, "key"), why),
                }
            }
        }
        (Some(n), None) | (None, Some(n)) => d.error(
            n.pos,
            path,
            "a client certificate needs both `cert` and `key`",
        ),
        (None, None) => {}
    }
    t.fingerprint = h.finalize().into();
    (d.errors.len() == before).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::TimeoutSettings;

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200"), Some((200, 200)));
        assert_eq!(parse_status_range("200-399"), Some((200, 399)));
        assert_eq!(parse_status_range("399-200"), None);
        assert_eq!(parse_status_range("700"), None);
        assert_eq!(parse_status_range("2xx"), None);
    }

    #[test]
    fn timeouts_route_then_server_then_default() {
        use crate::config::model::Timeouts;
        let s = |secs: u64| Some(Duration::from_secs(secs));
        let server = TimeoutSettings {
            timeout: s(20),
            connect: s(2),
            read: None,
            request: s(30),
        };
        let route = TimeoutSettings {
            read: s(5),
            ..TimeoutSettings::default()
        };
        let t = route.resolve(server);
        assert_eq!(
            (t.connect, t.read, t.write, t.request),
            (s(2).unwrap(), s(5).unwrap(), s(20).unwrap(), s(30))
        );
        // a route's `timeout` beats the server's specific ones
        let route = TimeoutSettings {
            timeout: s(10),
            ..TimeoutSettings::default()
        };
        assert_eq!(route.resolve(server).connect, Duration::from_secs(10));
        assert_eq!(
            TimeoutSettings::default().resolve(TimeoutSettings::default()),
            Timeouts::all(Duration::from_secs(60))
        );
    }

    #[test]
    fn names() {
        assert!(valid_name("catalog-v2.internal_1"));
        assert!(!valid_name("route:x"));
        assert!(!valid_name(""));
    }
}
