//! `spec.server`: process settings (threads, pid file, upgrade socket,
//! drain times, logs, admin listener, runtime tuning), decoded with every
//! problem reported. At most one document may carry them (checked in `load.rs`).

use super::decode::{join, Decoder, Fields};
use super::fields::{f, Field, Ty, BOOL, DURATION, POSITIVE, SECONDS, STR};
use super::model::{LimitSettings, ServerSettings};
use super::yaml::Node;
use crate::store::RedisSettings;
use std::path::PathBuf;

pub const SERVER_FIELDS: &[Field] = &[
    f("threads", POSITIVE).doc("Worker threads per listener (default: one per core)."),
    f("pidFile", Ty::Text("a file path")),
    f("upgradeSocket", Ty::Text("a file path"))
        .doc("Where a new binary takes the listening sockets over."),
    f("gracePeriod", SECONDS).doc("The drain after SIGTERM, whole seconds."),
    f("shutdownTimeout", SECONDS),
    f("errorLog", Ty::Text("a file path")),
    f("accessLog", BOOL)
        .default("true")
        .doc("JSON access log lines on stdout."),
    f("admin", Ty::Obj(ADMIN_FIELDS)).doc("The admin listener (/ready, /metrics, /config)."),
    f("watchConfig", BOOL)
        .default("true")
        .doc("Reload when the config files change."),
    f("workStealing", BOOL),
    f("upstreamKeepalivePool", POSITIVE),
    f(
        "trustedProxies",
        Ty::List(&Ty::Text("an IP address or CIDR range"), true),
    )
    .doc("Proxies whose X-Forwarded-For is believed."),
    f("maxBodySize", Ty::Size),
    f("maxRequestsInFlight", POSITIVE),
    f("limits", Ty::Obj(LIMIT_FIELDS)).doc("Client limits (docs/security.md)."),
    f("sharedStorage", Ty::Obj(STORAGE_FIELDS)).doc("Redis for cluster-wide rate limits."),
    f(
        "upstreamTimeouts",
        Ty::Obj(super::route_upstream::TIMEOUT_FIELDS),
    ),
    f("tracing", Ty::Obj(super::tracing::FIELDS))
        .doc("OpenTelemetry traces, exported over OTLP/HTTP."),
];
const STORAGE_FIELDS: &[Field] = &[f("redis", Ty::Obj(REDIS_FIELDS)).req()];
const REDIS_FIELDS: &[Field] = &[
    f("address", Ty::Text("host:port"))
        .doc("The Redis server; or `sentinel`, which finds the master."),
    f("sentinel", Ty::Obj(SENTINEL_FIELDS))
        .doc("Redis Sentinel: the master is asked for, and followed after a failover."),
    f("cluster", Ty::Obj(CLUSTER_FIELDS))
        .doc("Redis Cluster: its nodes are learnt from these, keys spread by slot."),
    f("username", STR),
    f("password", STR),
    f("db", Ty::Int(0, 1 << 20)).default("0"),
    f("tls", BOOL).default("false"),
    f("timeout", DURATION),
];
pub const SENTINEL_FIELDS: &[Field] = &[
    f("addresses", Ty::List(&Ty::Text("host:port"), true)).req(),
    f("masterName", STR).req(),
    f("username", STR).doc("The Sentinels' own user (ACL), if they require one."),
    f("password", STR).doc("The Sentinels' own password, if they require one."),
];
pub const CLUSTER_FIELDS: &[Field] = &[f("addresses", Ty::List(&Ty::Text("host:port"), true))
    .req()
    .doc("Some of the cluster's nodes (one that answers is enough).")];
pub const LIMIT_FIELDS: &[Field] = &[
    f("maxHeaderSize", Ty::Size),
    f("maxHeaders", Ty::Int(1, 256)),
    f("maxUriLength", Ty::Size),
    f("maxResponseHeaderSize", Ty::Size),
    f("headerTimeout", SECONDS),
    f("handshakeTimeout", SECONDS).default("\"10s\""),
    f("keepaliveTimeout", SECONDS),
    f("bodyTimeout", SECONDS),
    f("upgradeIdleTimeout", SECONDS),
    f("maxConcurrentStreams", Ty::Int(1, 10_000)),
    f("maxConnections", Ty::Int(1, 1 << 24)),
    f("maxConnectionsPerClient", Ty::Int(1, 1 << 24)),
    f(
        "underscoresInHeaders",
        Ty::Enum(&["allow", "drop", "reject"]),
    ),
];
const ADMIN_FIELDS: &[Field] = &[
    f("address", Ty::Text("IP:port")).default("\"127.0.0.1:9901\""),
    f("enabled", BOOL).default("true"),
];

pub fn decode_server(d: &mut Decoder, node: &Node, path: &str) -> Option<ServerSettings> {
    let f: Fields = d.map(node, path, SERVER_FIELDS)?;
    let before = d.errors.len();
    let mut s = ServerSettings::default();
    if let Some(n) = f.get("threads") {
        if let Some(t) = d.positive_int(n, &join(path, "threads")) {
            s.threads = t.min(1024) as usize;
        }
    }
    if let Some(n) = f.get("upstreamKeepalivePool") {
        if let Some(t) = d.positive_int(n, &join(path, "upstreamKeepalivePool")) {
            s.upstream_keepalive_pool = t.min(1 << 20) as usize;
        }
    }
    if let Some(n) = f.get("pidFile") {
        if let Some(p) = d.string(n, &join(path, "pidFile")) {
            s.pid_file = PathBuf::from(p);
        }
    }
    if let Some(n) = f.get("upgradeSocket") {
        if let Some(p) = d.string(n, &join(path, "upgradeSocket")) {
            s.upgrade_socket = PathBuf::from(p);
        }
    }
    for (key, slot) in [
        ("gracePeriod", &mut s.grace_period),
        ("shutdownTimeout", &mut s.shutdown_timeout),
    ] {
        if let Some(n) = f.get(key) {
            let field = join(path, key);
            if let Some(v) = d.duration(n, &field, true) {
                if v.subsec_nanos() != 0 {
                    d.error(n.pos, &field, "must be a whole number of seconds");
                } else {
                    *slot = v;
                }
            }
        }
    }
    if let Some(n) = f.get("errorLog") {
        if let Some(p) = d.string(n, &join(path, "errorLog")) {
            s.error_log = Some(PathBuf::from(p));
        }
    }
    if let Some(n) = f.get("accessLog") {
        if let Some(b) = d.bool(n, &join(path, "accessLog")) {
            s.access_log = b;
        }
    }
    if let Some(n) = f.get("watchConfig") {
        if let Some(b) = d.bool(n, &join(path, "watchConfig")) {
            s.watch_config = b;
        }
    }
    if let Some(n) = f.get("workStealing") {
        s.work_stealing = d.bool(n, &join(path, "workStealing"));
    }
    if let Some(n) = f.get("admin") {
        let apath = join(path, "admin");
        if let Some(a) = d.map(n, &apath, ADMIN_FIELDS) {
            if let Some(addr) = a.get("address") {
                let field = join(&apath, "address");
                if let Some(text) = d.scalar(addr, &field, "an address") {
                    match text.parse::<std::net::SocketAddr>() {
                        Ok(sa) if sa.port() != 0 => s.admin = Some(sa),
                        _ => d.error(
                            addr.pos,
                            &field,
                            format!("{text:?} is not an IP:port address (example: 127.0.0.1:9901)"),
                        ),
                    }
                }
            }
            if let Some(en) = a.get("enabled") {
                if d.bool(en, &join(&apath, "enabled")) == Some(false) {
                    s.admin = None;
                }
            }
        }
    }
    if let Some(n) = f.get("maxBodySize") {
        s.max_body_size = d.size(n, &join(path, "maxBodySize"));
    }
    if let Some(n) = f.get("maxRequestsInFlight") {
        if let Some(v) = d.positive_int(n, &join(path, "maxRequestsInFlight")) {
            s.max_requests_in_flight = v.min(1 << 30) as usize;
        }
    }
    if let Some(n) = f.get("limits") {
        if let Some(l) = decode_limits(d, n, &join(path, "limits")) {
            s.limits = l.over(s.limits);
        }
    }
    if let Some(n) = f.get("tracing") {
        s.tracing = super::tracing::decode(d, n, &join(path, "tracing"));
    }
    if let Some(n) = f.get("upstreamTimeouts") {
        let field = join(path, "upstreamTimeouts");
        if let Some(g) = d.map(n, &field, super::services::TIMEOUT_FIELDS) {
            if let Some(t) = super::services::decode_timeouts(d, &g, &field) {
                s.upstream_timeouts = t;
            }
        }
    }
    if let Some(n) = f.get("sharedStorage") {
        s.shared_storage = decode_storage(d, n, &join(path, "sharedStorage"));
    }
    if let Some(n) = f.get("trustedProxies") {
        let field = join(path, "trustedProxies");
        let nets = d.parsed_list(
            n,
            &field,
            "an IP address or CIDR range",
            crate::ipset::parse_net,
        );
        s.trusted_proxies = crate::ipset::IpSet::new(nets);
    }
    (d.errors.len() == before).then_some(s)
}

/// `sharedStorage: {redis: {...}}`: the Redis server that gateway
/// processes share state through (`${ENV}` and `file:` references allowed,
/// as in policies).
pub fn decode_storage(d: &mut Decoder, node: &Node, path: &str) -> Option<RedisSettings> {
    let node = d.resolve_references(node, path);
    let f = d.map(&node, path, STORAGE_FIELDS)?;
    let rpath = join(path, "redis");
    let r = d.required(&f, "redis", path)?;
    let g = d.map(r, &rpath, REDIS_FIELDS)?;
    let before = d.errors.len();
    let given: Vec<(&str, &Node)> = ["address", "sentinel", "cluster"]
        .into_iter()
        .filter_map(|k| Some((k, g.get(k)?)))
        .collect();
    let address = match given.as_slice() {
        [("address", n)] => host_port(d, n, &join(&rpath, "address"), true)
            .map(|(a, tls)| (a, tls, None, Vec::new())),
        [("sentinel", n)] => decode_sentinel(d, n, &join(&rpath, "sentinel"))
            .map(|s| (String::new(), false, Some(s), Vec::new())),
        [(_, n)] => {
            decode_cluster(d, n, &join(&rpath, "cluster")).map(|c| (String::new(), false, None, c))
        }
        [] => {
            d.error(
                r.pos,
                &rpath,
                "missing `address` (host:port), `sentinel` (addresses and masterName) or `cluster` (addresses)",
            );
            None
        }
        [.., (last, n)] => {
            d.error(
                n.pos,
                &join(&rpath, last),
                "give one of `address` (one server), `sentinel` (which finds the master) or `cluster` (its nodes), not several",
            );
            None
        }
    };
    let text =
        |d: &mut Decoder, key: &str| g.get(key).and_then(|n| d.string(n, &join(&rpath, key)));
    let username = text(d, "username");
    let password = text(d, "password");
    let db = match g.get("db") {
        Some(n) => d.int(n, &join(&rpath, "db"), 0, 1 << 20),
        None => Some(0),
    };
    let tls = match g.get("tls") {
        Some(n) => d.bool(n, &join(&rpath, "tls")),
        None => Some(false),
    };
    let timeout = match g.get("timeout") {
        Some(n) => d.duration(n, &join(&rpath, "timeout"), false),
        None => Some(std::time::Duration::from_millis(500)),
    };
    if let (Some(n), Some(db), true) = (g.get("db"), db, g.get("cluster").is_some()) {
        if db != 0 {
            d.error(
                n.pos,
                &join(&rpath, "db"),
                "Redis Cluster has only database 0",
            );
        }
    }
    if d.errors.len() > before {
        return None;
    }
    let (address, rediss, sentinel, cluster) = address?;
    Some(RedisSettings {
        address,
        sentinel,
        cluster,
        username,
        password,
        db: db?,
        tls: tls? || rediss,
        timeout: timeout?,
    })
}

/// `host:port` (with `redis://` / `rediss://` accepted when `url`): the
/// address and whether it said `rediss://`.
fn host_port(d: &mut Decoder, n: &Node, field: &str, url: bool) -> Option<(String, bool)> {
    let text = d.string(n, field)?;
    let bare = match url {
        true => text
            .strip_prefix("redis://")
            .or_else(|| text.strip_prefix("rediss://"))
            .unwrap_or(&text)
            .trim_end_matches('/'),
        false => text.as_str(),
    };
    let ok = bare.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !h.contains(['/', ' ']) && p.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if !ok {
        d.error(
            n.pos,
            field,
            format!("{text:?} is not host:port (example: 127.0.0.1:6379)"),
        );
        return None;
    }
    Some((bare.to_string(), text.starts_with("rediss://")))
}

/// A non-empty list of `host:port` (`addresses` of a Sentinel or cluster).
fn addresses(d: &mut Decoder, list: &Node, field: &str, what: &str) -> Vec<String> {
    let before = d.errors.len();
    let mut out = Vec::new();
    for (i, item) in d
        .list(list, field, true)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        if let Some((a, _)) = host_port(d, item, &format!("{field}[{i}]"), false) {
            out.push(a);
        }
    }
    if out.is_empty() && d.errors.len() == before {
        d.error(
            list.pos,
            field,
            format!("at least one {what} address is required"),
        );
    }
    out
}

/// `sharedStorage.redis.cluster`.
fn decode_cluster(d: &mut Decoder, node: &Node, path: &str) -> Option<Vec<String>> {
    let f = d.map(node, path, CLUSTER_FIELDS)?;
    let before = d.errors.len();
    let list = d.required(&f, "addresses", path)?;
    let out = addresses(d, list, &join(path, "addresses"), "cluster node");
    (d.errors.len() == before).then_some(out)
}

/// `sharedStorage.redis.sentinel`.
fn decode_sentinel(d: &mut Decoder, node: &Node, path: &str) -> Option<crate::store::Sentinel> {
    let f = d.map(node, path, SENTINEL_FIELDS)?;
    let before = d.errors.len();
    let addresses = match d.required(&f, "addresses", path) {
        Some(list) => addresses(d, list, &join(path, "addresses"), "Sentinel"),
        None => Vec::new(),
    };
    let master_name = d
        .required(&f, "masterName", path)
        .and_then(|n| d.string(n, &join(path, "masterName")));
    let text = |d: &mut Decoder, key: &str| f.get(key).and_then(|n| d.string(n, &join(path, key)));
    let username = text(d, "username");
    let password = text(d, "password");
    (d.errors.len() == before).then_some(crate::store::Sentinel {
        addresses,
        master_name: master_name?,
        username,
        password,
    })
}

/// `limits:` of `spec.server` or of a listener (docs/security.md).
pub fn decode_limits(d: &mut Decoder, node: &Node, path: &str) -> Option<LimitSettings> {
    let f: Fields = d.map(node, path, LIMIT_FIELDS)?;
    let before = d.errors.len();
    let mut l = LimitSettings::default();
    // sizes in bytes (`60KB`), capped where a larger value means nothing
    for (key, slot, cap) in [
        ("maxHeaderSize", &mut l.max_header_bytes, 1 << 20),
        ("maxUriLength", &mut l.max_uri_bytes, 1 << 20),
        (
            "maxResponseHeaderSize",
            &mut l.max_response_header_bytes,
            1 << 20,
        ),
    ] {
        if let Some(n) = f.get(key) {
            let field = join(path, key);
            if let Some(v) = d.size(n, &field) {
                if v > cap {
                    d.error(
                        n.pos,
                        &field,
                        "must be at most 1MB (Pingora's own limit on a message head)",
                    );
                } else {
                    *slot = Some(v as usize);
                }
            }
        }
    }
    for (key, slot, cap) in [
        ("maxHeaders", &mut l.max_headers, 256),
        (
            "maxConcurrentStreams",
            &mut l.max_concurrent_streams,
            10_000,
        ),
        ("maxConnections", &mut l.max_connections, 1 << 24),
        (
            "maxConnectionsPerClient",
            &mut l.max_connections_per_client,
            1 << 24,
        ),
    ] {
        if let Some(n) = f.get(key) {
            let field = join(path, key);
            if let Some(v) = d.positive_int(n, &field) {
                if v > cap {
                    d.error(n.pos, &field, format!("must be at most {cap}"));
                } else {
                    *slot = Some(v as usize);
                }
            }
        }
    }
    for (key, slot) in [
        ("headerTimeout", &mut l.header_timeout),
        ("handshakeTimeout", &mut l.handshake_timeout),
        ("keepaliveTimeout", &mut l.keepalive_timeout),
        ("bodyTimeout", &mut l.body_timeout),
        ("upgradeIdleTimeout", &mut l.upgrade_idle_timeout),
    ] {
        if let Some(n) = f.get(key) {
            *slot = d.duration(n, &join(path, key), true);
        }
    }
    if let Some(n) = f.get("underscoresInHeaders") {
        let field = join(path, "underscoresInHeaders");
        use crate::config::Underscores;
        l.underscores = match d.scalar(n, &field, "allow, drop or reject") {
            Some("allow") => Some(Underscores::Allow),
            Some("drop") => Some(Underscores::Drop),
            Some("reject") => Some(Underscores::Reject),
            Some(other) => {
                d.error(
                    n.pos,
                    &field,
                    format!("{other:?}: expected allow, drop or reject"),
                );
                None
            }
            None => None,
        };
    }
    (d.errors.len() == before).then_some(l)
}
