//! `Configuration` resources: the keys we implement (`sharedStorage`,
//! `timeouts`, `logging`, `probe`, `tracing`) decoded; the rest
//! accepted and kept as notices (said at start, never silently dropped).

use super::compile::{here, Compiled, Errors};
use super::resources::Meta;
use crate::config::fields::{f, Field, Ty, BOOL, DURATION, PORT, POSITIVE, STR};
use std::collections::HashMap;
use std::time::Duration;

/// Flex's default for `timeouts.upstreamResponseSeconds`.
const UPSTREAM_RESPONSE: Duration = Duration::from_secs(15);
use crate::config::decode::{join, Decoder};
use crate::config::yaml::{Node, Value};

/// Flex's `timeouts` (seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlexTimeouts {
    pub upstream_connection_idle: Option<u64>,
    pub upstream_response: Option<u64>,
    pub stream_idle: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ConfigRes {
    pub meta: Meta,
    pub shared_storage: Option<crate::store::RedisSettings>,
    pub timeouts: Option<FlexTimeouts>,
    pub log_level: Option<log::LevelFilter>,
    /// `logging`: outputs of the runtime and access logs.
    pub logging: Option<crate::config::logging::LoggingSettings>,
    /// `probe: {enabled, port}`: `Some(None)` disables it.
    pub probe: Option<Option<u16>>,
    /// `tracing` (with `sampling` and `labels` beside it): `Some(None)`
    /// for a provider that exports nothing here.
    pub tracing: Option<Option<Box<crate::config::model::TracingSettings>>>,
    /// Keys accepted but not applied, reported at start.
    pub not_applied: Vec<String>,
}

pub const CONFIG_KEYS: &[Field] = &[
    f("logging", Ty::Obj(crate::config::logging::FIELDS))
        .doc("Log level, and outputs (file, http, stdout, syslog) for runtime and access logs."),
    f("sharedStorage", Ty::Obj(STORAGE_FIELDS)).doc("Redis for cluster-wide rate limits."),
    f("timeouts", Ty::Obj(TIMEOUT_FIELDS)),
    f("forwardProxy", Ty::Any).doc("Not implemented: accepted and reported."),
    f("proxyProtocol", Ty::Any).doc("Not implemented: accepted and reported."),
    f("circuitBreaker", Ty::Any).doc("Not implemented: accepted and reported."),
    f("tracing", Ty::Obj(crate::config::tracing::FLEX_FIELDS))
        .doc("OpenTelemetry traces (provider opentelemetry: OTLP/gRPC or OTLP/HTTP)."),
    f("sampling", Ty::Obj(crate::config::tracing::SAMPLING_FIELDS))
        .doc("Tracing's sampling, when written beside `tracing`."),
    f(
        "labels",
        Ty::List(&Ty::Obj(crate::config::tracing::LABEL_FIELDS), false),
    )
    .doc("Tracing's labels, when written beside `tracing`."),
    f("probe", Ty::Obj(PROBE_FIELDS)).doc("The readiness probe listener."),
    f("tls", Ty::Any).doc("Not implemented: accepted and reported."),
];
const TIMEOUT_FIELDS: &[Field] = &[
    f("upstreamConnectionIdleSeconds", POSITIVE),
    f("upstreamResponseSeconds", POSITIVE).default("15"),
    f("streamIdleSeconds", POSITIVE),
];
const PROBE_FIELDS: &[Field] = &[
    f("enabled", BOOL).default("true"),
    f("port", PORT).default("3000"),
];
/// Flex's `sharedStorage` (read by `settings::decode_storage` after
/// Flex's forms are rewritten: `db` as a string, `tls` as a mapping).
const STORAGE_FIELDS: &[Field] = &[f("redis", Ty::Obj(FLEX_REDIS_FIELDS)).req()];
const FLEX_REDIS_FIELDS: &[Field] = &[
    f("address", Ty::Text("host:port")).doc("The Redis server; or `sentinel`."),
    f(
        "sentinel",
        Ty::Obj(crate::config::settings::SENTINEL_FIELDS),
    )
    .doc("Redis Sentinel: the master is asked for, and followed after a failover."),
    f("username", STR),
    f("user", STR).doc("Flex's docs' spelling of `username`."),
    f("password", STR),
    f(
        "db",
        Ty::Either(&[Ty::Int(0, 1 << 20), Ty::Text("a database number")]),
    ),
    f(
        "DB",
        Ty::Either(&[Ty::Int(0, 1 << 20), Ty::Text("a database number")]),
    )
    .doc("Flex's docs' spelling of `db`."),
    f("tls", Ty::Either(&[BOOL, Ty::Dict(&Ty::Any)]))
        .doc("TLS to Redis (its settings are not applied)."),
    f("timeout", DURATION),
];

/// A `Configuration` resource's `spec`: one or more of its keys.
pub fn decode(d: &mut Decoder, spec: &Node, meta: Meta) -> Option<ConfigRes> {
    let s = d.map(spec, "spec", CONFIG_KEYS)?;
    let before = d.errors.len();
    let mut out = ConfigRes {
        meta,
        shared_storage: None,
        timeouts: None,
        log_level: None,
        logging: None,
        probe: None,
        tracing: None,
        not_applied: Vec::new(),
    };
    for (key, n) in s.keys() {
        let at = join("spec", key);
        match key {
            "sharedStorage" => {
                out.shared_storage = shared_storage(d, n, &at, &mut out.not_applied);
            }
            "timeouts" => {
                let Some(g) = d.map(n, &at, TIMEOUT_FIELDS) else {
                    continue;
                };
                let secs = |d: &mut Decoder, k: &str| {
                    g.get(k).and_then(|v| d.positive_int(v, &join(&at, k)))
                };
                out.timeouts = Some(FlexTimeouts {
                    upstream_connection_idle: secs(d, "upstreamConnectionIdleSeconds"),
                    upstream_response: secs(d, "upstreamResponseSeconds"),
                    stream_idle: secs(d, "streamIdleSeconds"),
                });
            }
            "logging" => {
                let mut level = None;
                if let Some(l) = crate::config::logging::decode(d, n, &at, &mut level) {
                    out.logging = Some(l);
                    out.log_level = level;
                }
            }
            "probe" => {
                let Some(g) = d.map(n, &at, PROBE_FIELDS) else {
                    continue;
                };
                let enabled = match g.get("enabled") {
                    Some(v) => d.bool(v, &join(&at, "enabled")),
                    None => Some(true),
                };
                let port = match g.get("port") {
                    Some(v) => d.port(v, &join(&at, "port")),
                    None => Some(3000),
                };
                if let (Some(e), Some(p)) = (enabled, port) {
                    out.probe = Some(e.then_some(p));
                }
            }
            "tracing" => {
                let beside = (s.get("sampling"), s.get("labels"));
                out.tracing =
                    crate::config::tracing::decode_flex(d, n, &at, beside, &mut out.not_applied)
                        .map(|t| t.map(Box::new));
            }
            "sampling" | "labels" if s.get("tracing").is_none() => {
                d.error(
                    n.pos,
                    &at,
                    format!("`{key}` configures tracing: it needs `tracing` (its provider) in the same spec"),
                );
            }
            "sampling" | "labels" => {} // read with `tracing`
            other => out
                .not_applied
                .push(format!("{at} ({other} is not implemented)")),
        }
    }
    (d.errors.len() == before).then_some(out)
}

/// Flex's `sharedStorage.redis`: our decoder, with Flex's `tls` mapping
/// (its presence turns TLS on; its settings are reported as not applied),
/// and Flex's spellings `user` and `DB`.
fn shared_storage(
    d: &mut Decoder,
    n: &Node,
    path: &str,
    not_applied: &mut Vec<String>,
) -> Option<crate::store::RedisSettings> {
    let mut node = n.clone();
    if let Value::Map(pairs) = &mut node.value {
        for (k, v) in pairs.iter_mut() {
            let is_redis = matches!(&k.value, Value::Scalar { text, .. } if text == "redis");
            let Value::Map(redis) = &mut v.value else {
                continue;
            };
            if !is_redis {
                continue;
            }
            // Flex's docs write `user` and `DB`: the same as `username`, `db`
            for (alias, name) in [("user", "username"), ("DB", "db")] {
                let has = |t: &str| {
                    redis
                        .iter()
                        .any(|(k, _)| matches!(&k.value, Value::Scalar { text, .. } if text == t))
                };
                if has(alias) && has(name) {
                    d.error(
                        n.pos,
                        &format!("{path}.redis.{alias}"),
                        format!("give `{name}` or `{alias}`, not both"),
                    );
                }
                for (k, _) in redis.iter_mut() {
                    if let Value::Scalar { text, .. } = &mut k.value {
                        if text == alias {
                            *text = name.to_string();
                        }
                    }
                }
            }
            for (k, v) in redis.iter_mut() {
                // Flex documents `db` as a string: "2" is database 2
                if matches!(&k.value, Value::Scalar { text, .. } if text == "db") {
                    if let Value::Scalar { quoted, .. } = &mut v.value {
                        *quoted = false;
                    }
                }
                if matches!(&k.value, Value::Scalar { text, .. } if text == "tls") {
                    if let Value::Map(settings) = &v.value {
                        for (sk, _) in settings {
                            if let Value::Scalar { text, .. } = &sk.value {
                                not_applied.push(format!("{path}.redis.tls.{text}"));
                            }
                        }
                    }
                    v.value = Value::Scalar {
                        text: "true".into(),
                        quoted: false,
                    };
                }
            }
        }
    }
    crate::config::settings::decode_storage(d, &node, path)
}

/// `Configuration` resources into `out` (server settings, log level,
/// notices); each key at most once. The upstream response timeout.
pub(super) fn apply(configs: &[&ConfigRes], out: &mut Compiled, err: &mut Errors) -> Duration {
    let mut response_timeout = UPSTREAM_RESPONSE;
    let mut set_by: HashMap<&str, String> = HashMap::new();
    for c in configs {
        let s = &mut out.server;
        let mut once = |err: &mut Errors, key: &'static str| {
            if let Some(first) = set_by.get(key) {
                err.at(
                    &c.meta.file,
                    c.meta.pos,
                    &format!("spec.{key}"),
                    format!("{key} is already configured at {first}"),
                );
            } else {
                set_by.insert(key, here(&c.meta, c.meta.pos));
            }
        };
        if let Some(r) = &c.shared_storage {
            once(err, "sharedStorage");
            s.shared_storage = Some(r.clone());
        }
        if let Some(t) = c.timeouts {
            once(err, "timeouts");
            if let Some(secs) = t.upstream_response {
                response_timeout = Duration::from_secs(secs);
            }
            if let Some(secs) = t.stream_idle {
                s.body_timeout = Some(Duration::from_secs(secs));
            }
            if t.upstream_connection_idle.is_some() {
                out.notices.push(format!(
                    "{}: timeouts.upstreamConnectionIdleSeconds is not applied (idle upstream connections are kept by the pool's own rules)",
                    c.meta.file
                ));
            }
        }
        if let Some(logging) = &c.logging {
            once(err, "logging");
            out.log_level = c.log_level;
            out.logging = Some(logging.clone());
        }
        if let Some(t) = &c.tracing {
            once(err, "tracing");
            if let Some(t) = t {
                s.tracing = Some((**t).clone());
            }
        }
        if let Some(probe) = c.probe {
            once(err, "probe");
            match probe {
                Some(port) => {
                    s.admin = Some(std::net::SocketAddr::new(
                        crate::config::model::DEFAULT_ADMIN.ip(),
                        port,
                    ))
                }
                None => out.notices.push(format!(
                    "{}: probe.enabled false: the admin listener (probes, metrics) stays on",
                    c.meta.file
                )),
            }
        }
        for key in &c.not_applied {
            out.notices.push(format!(
                "{}: Configuration {:?}: {key} is accepted but not applied",
                c.meta.file,
                c.meta.display()
            ));
        }
    }

    response_timeout
}
