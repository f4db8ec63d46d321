//! `rate-limiting-flex`, `spike-control-flex`, `circuit-breaker-flex`.

use super::{bool_or, map, millis, ours, scalar, seq};
use super::{expr, mapped, CircuitPatch};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, POSITIVE};
use crate::config::yaml::Node;
use crate::policy::{self, PolicyConfig};

pub const RATE_LIMITING: &[Field] = &[
    f("rateLimits", Ty::List(&Ty::Obj(RATE_LIMIT), false)).req(),
    f("keySelector", Ty::Text("an expression #[...]")).doc("Whose requests are counted together."),
    f("exposeHeaders", BOOL).default("false"),
    f("clusterizable", BOOL).default("true"),
];
const RATE_LIMIT: &[Field] = &[
    f("maximumRequests", POSITIVE).req(),
    f("timePeriodInMilliseconds", POSITIVE).req(),
];
pub const SPIKE_CONTROL: &[Field] = &[
    f("maximumRequests", Ty::Int(1, 1_000_000)).default("1"),
    f("timePeriodInMilliseconds", POSITIVE).default("1000"),
    f("delayTimeInMillis", POSITIVE).default("1000"),
    f("delayAttempts", Ty::Int(0, 100)).default("1"),
    f("queuingLimit", Ty::Int(0, 100_000)).default("0"),
    f("exposeHeaders", BOOL).default("false"),
];
pub const CIRCUIT_BREAKER: &[Field] = &[f("thresholds", Ty::Obj(THRESHOLDS)).req()];
const THRESHOLDS: &[Field] = &[
    f("maxConnections", POSITIVE),
    f("maxPendingRequests", POSITIVE),
    f("maxRequests", POSITIVE),
    f("maxRetries", POSITIVE),
    f("maxConnectionPools", POSITIVE),
];

pub(super) fn rate_limiting(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(c, path, RATE_LIMITING)?;
    let before = d.errors.len();
    let mut limits = Vec::new();
    if let Some(list) = d.required(&f, "rateLimits", path) {
        for (item, at) in d.items(list, &join(path, "rateLimits"), false) {
            let Some(g) = d.map(item, &at, RATE_LIMIT) else {
                continue;
            };
            let max = d.required(&g, "maximumRequests", &at).cloned();
            let period = d
                .required(&g, "timePeriodInMilliseconds", &at)
                .and_then(|n| millis(d, n, &join(&at, "timePeriodInMilliseconds")));
            if let (Some(max), Some(period)) = (max, period) {
                limits.push(map(
                    item.pos,
                    vec![("maxRequests", max), ("period", period)],
                ));
            }
        }
    }
    let mut tree = vec![("limits", seq(f.pos, limits))];
    if let Some(k) = f.get("keySelector") {
        let kp = join(path, "keySelector");
        if let Some(Some(key)) = mapped(d, k, &kp, expr::to_rate_limit_key) {
            tree.push(("key", scalar(k.pos, key)));
        }
    }
    let expose = bool_or(
        d,
        f.get("exposeHeaders"),
        &join(path, "exposeHeaders"),
        false,
    )?;
    tree.push(("exposeHeaders", scalar(f.pos, expose.to_string())));
    if let Some(n) = f.get("clusterizable") {
        tree.push(("clusterizable", n.clone()));
    }
    if d.errors.len() > before {
        return None;
    }
    let renames = [
        ("limits", "rateLimits"),
        ("maxRequests", "maximumRequests"),
        ("period", "timePeriodInMilliseconds"),
        ("key", "keySelector"),
    ];
    let node = map(c.pos, tree);
    ours(d, &renames, |d| {
        policy::rate_limit::decode(d, &node, path).map(|mut c| {
            c.reset_in_ms = true;
            PolicyConfig::RateLimit(c)
        })
    })
}

pub(super) fn spike_control(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(c, path, SPIKE_CONTROL)?;
    let before = d.errors.len();
    let pos = f.pos;
    let mut tree = vec![(
        "maxRequests",
        f.get("maximumRequests")
            .cloned()
            .unwrap_or_else(|| scalar(pos, "1")),
    )];
    for (flex, ours_key, default) in [
        ("timePeriodInMilliseconds", "period", 1000),
        ("delayTimeInMillis", "delay", 1000),
    ] {
        let n = match f.get(flex) {
            Some(n) => millis(d, n, &join(path, flex)),
            None => Some(scalar(pos, format!("{default}ms"))),
        };
        if let Some(n) = n {
            tree.push((ours_key, n));
        }
    }
    tree.push((
        "delayAttempts",
        f.get("delayAttempts")
            .cloned()
            .unwrap_or_else(|| scalar(pos, "1")),
    ));
    tree.push((
        "queueLimit",
        f.get("queuingLimit")
            .cloned()
            .unwrap_or_else(|| scalar(pos, "0")),
    ));
    let expose = bool_or(
        d,
        f.get("exposeHeaders"),
        &join(path, "exposeHeaders"),
        false,
    )?;
    tree.push(("exposeHeaders", scalar(pos, expose.to_string())));
    if d.errors.len() > before {
        return None;
    }
    let renames = [
        ("maxRequests", "maximumRequests"),
        ("period", "timePeriodInMilliseconds"),
        ("delay", "delayTimeInMillis"),
        ("queueLimit", "queuingLimit"),
    ];
    let node = map(c.pos, tree);
    ours(d, &renames, |d| {
        policy::spike::decode(d, &node, path).map(PolicyConfig::SpikeControl)
    })
}

pub(super) fn circuit_breaker(d: &mut Decoder, c: &Node, path: &str) -> Option<CircuitPatch> {
    let f = d.map(c, path, CIRCUIT_BREAKER)?;
    let tp = join(path, "thresholds");
    let t = d.required(&f, "thresholds", path)?;
    let g = d.map(t, &tp, THRESHOLDS)?;
    let before = d.errors.len();
    let mut count = |key: &str| {
        g.get(key)
            .and_then(|n| d.positive_int(n, &join(&tp, key)).map(|v| v as usize))
    };
    let patch = CircuitPatch {
        max_connections: count("maxConnections"),
        max_pending: count("maxPendingRequests"),
        max_requests: count("maxRequests"),
        max_retries: count("maxRetries"),
    };
    let _ = count("maxConnectionPools"); // checked; one pool per service here
    (d.errors.len() == before).then_some(patch)
}
