//! Flex's policy catalog under its own names and field names, mapped onto
//! our policies. Each Flex config is checked field by field (unknown
//! fields get a suggestion in Flex's names), translated into our policy's
//! config tree with the user's positions kept, and decoded by our policy;
//! an error it reports is shown with Flex's field names.
//!
//! `route` and `route-weighted` are routing, not policies: they come back
//! as [`Bound::Route`]. `circuit-breaker-flex` sets a Service's limits.

use super::expr;
use super::resources::Ref;
use crate::config::decode::{join, suggest, Decoder};
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
];

/// Flex catalog names we know but do not run yet: `validate` says so.
pub const NOT_YET: &[&str] = &[
    "message-logging-flex",
    "json-threat-protection-flex",
    "http-caching-flex",
    "ldap-authentication-flex",
    "openid-token-enforcement-flex",
    "schema-validation-flex",
    "external-authorization-flex",
    "external-processing-flex",
    "health-check-flex",
    "rate-limiting-sla-based-flex",
    "client-id-enforcement-flex",
    "http-basic-authentication-outbound-flex",
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
        "route" => route(d, c, path).map(|r| Bound::Route(vec![r])),
        "route-weighted" => route_weighted(d, c, path).map(Bound::Route),
        "rate-limiting-flex" => policy(rate_limiting(d, c, path)),
        "spike-control-flex" => policy(spike_control(d, c, path)),
        "http-basic-authentication-flex" => policy(basic_auth(d, c, path)),
        "ip-allowlist-flex" => policy(ip_filter(d, c, path, true)),
        "ip-blocklist-flex" => policy(ip_filter(d, c, path, false)),
        "header-injection-flex" => policy(header_injection(d, c, path)),
        "header-removal-flex" => policy(header_removal(d, c, path)),
        "cors-flex" => policy(cors(d, c, path)),
        "jwt-validation-flex" => policy(jwt_validation(d, c, path)),
        "oauth2-token-introspection-flex" => policy(introspection(d, c, path)),
        "circuit-breaker-flex" => circuit_breaker(d, c, path).map(Bound::CircuitBreaker),
        "tls" => tls_inbound(d, c, path).map(|t| Bound::Tls(Box::new(t))),
        "tls-outbound" => {
            tls_outbound(d, c, path).map(|(t, h2)| Bound::TlsOutbound(Box::new(t), h2))
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
            let mut known: Vec<&str> = FLEX_NAMES.to_vec();
            known.extend(NOT_YET);
            let hint = suggest(n, &known)
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_else(|| format!(" (supported: {})", FLEX_NAMES.join(", ")));
            d.error(name_pos, name_path, format!("unknown policy {n:?}{hint}"));
            None
        }
    }
}

// --- building our config trees ------------------------------------------

fn scalar(pos: Pos, text: impl Into<String>) -> Node {
    Node {
        value: Value::Scalar {
            text: text.into(),
            quoted: false,
        },
        pos,
    }
}

fn map(pos: Pos, pairs: Vec<(&str, Node)>) -> Node {
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

fn seq(pos: Pos, items: Vec<Node>) -> Node {
    Node {
        value: Value::Seq(items),
        pos,
    }
}

/// Decode our tree with our policy's decoder; errors it reports are
/// shown with Flex's names (`renames`: ours → Flex's).
fn ours<T>(
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
fn millis(d: &mut Decoder, n: &Node, path: &str) -> Option<Node> {
    let ms = d.positive_int(n, path)?;
    Some(scalar(n.pos, format!("{ms}ms")))
}

/// A field holding one expression (`#[...]`): the accessor it reads when
/// it is a single one, or an error at `n`.
fn accessor(
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
fn mapped<T>(
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

fn bool_or(d: &mut Decoder, n: Option<&Node>, path: &str, default: bool) -> Option<bool> {
    match n {
        Some(n) => d.bool(n, path),
        None => Some(default),
    }
}

// --- routing ------------------------------------------------------------

const ROUTE_FIELDS: &[&str] = &["destinationRef", "destinationPath"];
const WEIGHTED_FIELDS: &[&str] = &["routes"];
const WEIGHTED_ITEM_FIELDS: &[&str] = &["weight", "destinationRef", "destinationPath"];
const REF_FIELDS: &[&str] = &["name", "namespace", "kind"];

fn destination_ref(d: &mut Decoder, n: &Node, path: &str) -> Option<Ref> {
    let f = d.map(n, path, REF_FIELDS)?;
    if let Some(k) = f.get("kind") {
        let kp = join(path, "kind");
        if d.scalar(k, &kp, "a kind")? != "Service" {
            d.error(k.pos, &kp, "a destination is a Service");
            return None;
        }
    }
    let name = d.required(&f, "name", path)?;
    let np = join(path, "name");
    let text = d.string(name, &np)?;
    let namespace = match f.get("namespace") {
        Some(ns) => d.string(ns, &join(path, "namespace"))?,
        None => String::new(), // the binding's namespace, filled in later
    };
    Some(Ref {
        name: text,
        namespace,
        pos: name.pos,
        path: np,
    })
}

fn route_target(
    d: &mut Decoder,
    f: &crate::config::decode::Fields,
    path: &str,
    weight: u32,
) -> Option<RouteTo> {
    let service = d
        .required(f, "destinationRef", path)
        .and_then(|n| destination_ref(d, n, &join(path, "destinationRef")));
    let destination_path = match f.get("destinationPath") {
        Some(n) => super::resources::destination(d, n, &join(path, "destinationPath")),
        None => Some(String::new()),
    };
    Some(RouteTo {
        service: service?,
        destination_path: destination_path?,
        weight,
    })
}

fn route(d: &mut Decoder, c: &Node, path: &str) -> Option<RouteTo> {
    let f = d.map(c, path, ROUTE_FIELDS)?;
    route_target(d, &f, path, 1)
}

fn route_weighted(d: &mut Decoder, c: &Node, path: &str) -> Option<Vec<RouteTo>> {
    let f = d.map(c, path, WEIGHTED_FIELDS)?;
    let list = d.required(&f, "routes", path)?;
    let before = d.errors.len();
    let mut out = Vec::new();
    for (item, at) in d.items(list, &join(path, "routes"), false) {
        let Some(g) = d.map(item, &at, WEIGHTED_ITEM_FIELDS) else {
            continue;
        };
        let weight = d
            .required(&g, "weight", &at)
            .and_then(|w| d.int(w, &join(&at, "weight"), 1, 100));
        if let (Some(w), Some(r)) = (weight, route_target(d, &g, &at, 1)) {
            out.push(RouteTo {
                weight: w as u32,
                ..r
            });
        }
    }
    if out.is_empty() && d.errors.len() == before {
        d.error(
            list.pos,
            &join(path, "routes"),
            "at least one route is required",
        );
    }
    (d.errors.len() == before).then_some(out)
}

// --- policies -----------------------------------------------------------

fn rate_limiting(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(
        c,
        path,
        &[
            "rateLimits",
            "keySelector",
            "exposeHeaders",
            "clusterizable",
        ],
    )?;
    let before = d.errors.len();
    let mut limits = Vec::new();
    if let Some(list) = d.required(&f, "rateLimits", path) {
        for (item, at) in d.items(list, &join(path, "rateLimits"), false) {
            let Some(g) = d.map(item, &at, &["maximumRequests", "timePeriodInMilliseconds"]) else {
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

fn spike_control(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(
        c,
        path,
        &[
            "maximumRequests",
            "timePeriodInMilliseconds",
            "delayTimeInMillis",
            "delayAttempts",
            "queuingLimit",
            "exposeHeaders",
        ],
    )?;
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

fn basic_auth(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(c, path, &["username", "password"])?;
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

fn ip_filter(d: &mut Decoder, c: &Node, path: &str, allow: bool) -> Option<PolicyConfig> {
    let f = d.map(c, path, &["ips", "ipExpression"])?;
    if let Some(n) = f.get("ipExpression") {
        let ep = join(path, "ipExpression");
        use crate::policy::expr::Accessor;
        let ok = match accessor(d, n, &ep)? {
            Some(Accessor::RemoteAddress) => true,
            Some(Accessor::Header(h)) => h == "x-forwarded-for",
            _ => false,
        };
        if !ok {
            d.error(
                n.pos,
                &ep,
                "only the client address is supported: #[attributes.remoteAddress], or X-Forwarded-For as believed from `trustedProxies` (#[attributes.headers['x-forwarded-for']])",
            );
            return None;
        }
    }
    let ips = d.required(&f, "ips", path)?.clone();
    let node = map(c.pos, vec![("ips", ips)]);
    if allow {
        policy::ip_filter::allow::decode(d, &node, path).map(PolicyConfig::IpAllowlist)
    } else {
        policy::ip_filter::block::decode(d, &node, path).map(PolicyConfig::IpBlocklist)
    }
}

fn header_injection(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(c, path, &["inboundHeaders", "outboundHeaders"])?;
    let before = d.errors.len();
    let mut tree = Vec::new();
    for (flex, side) in [
        ("inboundHeaders", "request"),
        ("outboundHeaders", "response"),
    ] {
        let Some(list) = f.get(flex) else { continue };
        let mut items = Vec::new();
        for (item, at) in d.items(list, &join(path, flex), false) {
            let Some(g) = d.map(item, &at, &["key", "value"]) else {
                continue;
            };
            let key = d.required(&g, "key", &at).cloned();
            let value = d.required(&g, "value", &at).and_then(|v| {
                let vp = join(&at, "value");
                mapped(d, v, &vp, expr::to_template).map(|t| scalar(v.pos, t))
            });
            if let (Some(k), Some(v)) = (key, value) {
                items.push(map(item.pos, vec![("name", k), ("value", v)]));
            }
        }
        tree.push((side, seq(list.pos, items)));
    }
    if d.errors.len() > before {
        return None;
    }
    let node = map(c.pos, tree);
    let renames = [
        ("request", "inboundHeaders"),
        ("response", "outboundHeaders"),
        ("name", "key"),
    ];
    ours(d, &renames, |d| {
        policy::headers::inject::decode(d, &node, path).map(PolicyConfig::HeaderInjection)
    })
}

fn header_removal(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(c, path, &["inboundHeaders", "outboundHeaders"])?;
    let mut tree = Vec::new();
    for (flex, side) in [
        ("inboundHeaders", "request"),
        ("outboundHeaders", "response"),
    ] {
        if let Some(list) = f.get(flex) {
            tree.push((side, list.clone()));
        }
    }
    let node = map(c.pos, tree);
    let renames = [
        ("request", "inboundHeaders"),
        ("response", "outboundHeaders"),
    ];
    ours(d, &renames, |d| {
        policy::headers::remove::decode(d, &node, path).map(PolicyConfig::HeaderRemoval)
    })
}

fn cors(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(
        c,
        path,
        &["publicResource", "supportCredentials", "originGroups"],
    )?;
    let public = bool_or(
        d,
        f.get("publicResource"),
        &join(path, "publicResource"),
        true,
    )?;
    let credentials = bool_or(
        d,
        f.get("supportCredentials"),
        &join(path, "supportCredentials"),
        false,
    )?;
    let pos = f.pos;
    let mut tree = vec![("allowCredentials", scalar(pos, credentials.to_string()))];
    let groups = match f.get("originGroups") {
        Some(list) => d.items(list, &join(path, "originGroups"), false),
        None => Vec::new(),
    };
    if groups.len() > 1 {
        d.error(
            pos,
            &join(path, "originGroups"),
            "one origin group is supported (merge the groups' origins into one)",
        );
        return None;
    }
    let mut origins = None;
    if let Some((g, gp)) = groups.first() {
        let g = d.map(
            g,
            gp,
            &[
                "origins",
                "accessControlMaxAge",
                "allowedMethods",
                "headers",
                "exposedHeaders",
            ],
        )?;
        origins = g.get("origins").cloned();
        if let Some(n) = g.get("accessControlMaxAge") {
            let secs = d.int(n, &join(gp, "accessControlMaxAge"), 0, 86_400)?;
            tree.push(("maxAge", scalar(n.pos, format!("{secs}s"))));
        } else {
            tree.push(("maxAge", scalar(pos, "30s")));
        }
        if let Some(list) = g.get("allowedMethods") {
            let mp = join(gp, "allowedMethods");
            let mut methods = Vec::new();
            for (item, at) in d.items(list, &mp, false) {
                let Some(m) = d.map(item, &at, &["methodName", "isAllowed"]) else {
                    continue;
                };
                let name = d.required(&m, "methodName", &at).cloned();
                let allowed = bool_or(d, m.get("isAllowed"), &join(&at, "isAllowed"), true);
                if let (Some(n), Some(true)) = (name, allowed) {
                    methods.push(n);
                }
            }
            tree.push(("methods", seq(list.pos, methods)));
        }
        if let Some(h) = g.get("headers") {
            tree.push(("headers", h.clone()));
        }
        if let Some(h) = g.get("exposedHeaders") {
            tree.push(("exposeHeaders", h.clone()));
        }
    }
    let origins = match (public, origins) {
        (true, _) => seq(pos, vec![scalar(pos, "*")]),
        (false, Some(o)) => o,
        (false, None) => {
            d.error(
                pos,
                path,
                "publicResource is false: give `originGroups` with the allowed origins",
            );
            return None;
        }
    };
    tree.insert(0, ("origins", origins));
    let node = map(c.pos, tree);
    let renames = [
        ("allowCredentials", "supportCredentials"),
        ("maxAge", "accessControlMaxAge"),
        ("methods", "allowedMethods"),
        ("exposeHeaders", "exposedHeaders"),
    ];
    ours(d, &renames, |d| {
        policy::cors::decode(d, &node, path).map(PolicyConfig::Cors)
    })
}

fn circuit_breaker(d: &mut Decoder, c: &Node, path: &str) -> Option<CircuitPatch> {
    let f = d.map(c, path, &["thresholds"])?;
    let tp = join(path, "thresholds");
    let t = d.required(&f, "thresholds", path)?;
    let g = d.map(
        t,
        &tp,
        &[
            "maxConnections",
            "maxPendingRequests",
            "maxRequests",
            "maxRetries",
            "maxConnectionPools",
        ],
    )?;
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

const JWT_FIELDS: &[&str] = &[
    "signingMethod",
    "signingKeyLength",
    "jwtOrigin",
    "jwtExpression",
    "jwtKeyOrigin",
    "textKey",
    "jwksUrl",
    "jwksServiceTimeToLive",
    "jwksServiceConnectionTimeout",
    "validateAudClaim",
    "supportedAudiences",
    "mandatoryAudClaim",
    "mandatoryExpClaim",
    "mandatoryNbfClaim",
    "validateCustomClaim",
    "mandatoryCustomClaims",
    "nonMandatoryCustomClaims",
    "skipClientIdValidation",
];

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
                "jwtExpression: a header (#[attributes.headers['NAME']]) or a query parameter (#[attributes.queryParams['NAME']]) is supported",
            );
            return None;
        }
    };
    Some(map(n.pos, vec![(key, scalar(n.pos, name))]))
}

fn jwt_validation(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
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
    let origin = text(d, "jwtOrigin", "httpBearerAuthenticationHeader")?;
    match origin.as_str() {
        "httpBearerAuthenticationHeader" => {}
        "customExpression" => {
            let ep = join(path, "jwtExpression");
            match f.get("jwtExpression") {
                Some(n) => tree.push(("token", token_source(d, n, &ep)?)),
                None => {
                    d.error(
                        pos,
                        path,
                        "jwtOrigin customExpression needs `jwtExpression`",
                    );
                    return None;
                }
            }
        }
        other => {
            d.error(
                f.get("jwtOrigin").map_or(pos, |n| n.pos),
                &join(path, "jwtOrigin"),
                format!("{other:?}: expected httpBearerAuthenticationHeader or customExpression"),
            );
            return None;
        }
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
    let _ = flag(d, "mandatoryAudClaim")?; // audiences given: aud is checked
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
                let Some(g) = d.map(item, &at, &["key", "value"]) else {
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
            PolicyConfig::Jwt(c)
        })
    })
}

fn introspection(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(
        c,
        path,
        &[
            "introspectionURL",
            "authorizationValue",
            "validatedTokenTTL",
            "authenticationTimeout",
            "scopes",
            "scopeValidationCriteria",
            "exposeHeaders",
            "maxCacheEntries",
            "skipClientIdValidation",
            "consumerBy",
        ],
    )?;
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

// --- TLS ------------------------------------------------------------------

const TLS_FIELDS: &[&str] = &[
    "certificate",
    "trustedCA",
    "requireClientCertificate",
    "alpn",
    "minversion",
    "maxversion",
    "ciphers",
];
const TLS_OUT_FIELDS: &[&str] = &[
    "skipValidation",
    "certificate",
    "trustedCA",
    "alpn",
    "minversion",
    "maxversion",
    "ciphers",
];
const CERT_FIELDS: &[&str] = &["key", "crt", "keyPassphrase"];

/// `certificate: {key, crt}`: PEM text (as Flex writes it) or file paths.
fn certificate_pair(
    d: &mut Decoder,
    n: &Node,
    path: &str,
) -> Option<(
    crate::config::tls::Pem,
    crate::config::tls::Pem,
    Vec<String>,
    [u8; 32],
)> {
    use crate::config::tls::{check_pair, pem_or_file};
    let f = d.map(n, path, CERT_FIELDS)?;
    if let Some(p) = f.get("keyPassphrase") {
        d.error(
            p.pos,
            &join(path, "keyPassphrase"),
            "encrypted private keys are not supported yet: give the key unencrypted",
        );
        return None;
    }
    let text = |d: &mut Decoder, key: &str| {
        let node = d.required(&f, key, path)?;
        let field = join(path, key);
        let t = d.string(node, &field)?;
        match pem_or_file(&field, &t) {
            Ok(pem) => Some((pem, node.pos)),
            Err(why) => {
                d.error(node.pos, &field, why);
                None
            }
        }
    };
    let crt = text(d, "crt");
    let key = text(d, "key");
    let ((crt, crt_pos), (key, key_pos)) = (crt?, key?);
    match check_pair(&crt, &key) {
        Ok((names, fp)) => Some((crt, key, names, fp)),
        Err((true, why)) => {
            d.error(crt_pos, &join(path, "crt"), why);
            None
        }
        Err((false, why)) => {
            d.error(key_pos, &join(path, "key"), why);
            None
        }
    }
}

/// `minversion` / `maxversion`: TLS 1.0 and 1.1 are raised to 1.2 (said
/// once at start); 1.2 and 1.3 as given.
fn version(
    d: &mut Decoder,
    n: Option<&Node>,
    path: &str,
    default: crate::config::tls::TlsVersion,
) -> Option<crate::config::tls::TlsVersion> {
    use crate::config::tls::{tls_version, TlsVersion};
    let Some(n) = n else {
        return Some(default);
    };
    let text = d.scalar(n, path, "a TLS version")?;
    match text {
        "1.0" | "1.1" => {
            d.notice(
                n.pos,
                path,
                format!("TLS {text} is not offered: raised to 1.2"),
            );
            Some(TlsVersion::Tls12)
        }
        t => tls_version(t).or_else(|| {
            d.error(n.pos, path, format!("{t:?}: expected 1.2 or 1.3"));
            None
        }),
    }
}

fn alpn(d: &mut Decoder, n: Option<&Node>, path: &str) -> Option<(bool, bool)> {
    let Some(n) = n else {
        return Some((true, true));
    };
    let mut out = (false, false);
    for (item, at) in d.items(n, path, true) {
        match d.scalar(item, &at, "h2 or http/1.1")? {
            "h2" => out.0 = true,
            "http/1.1" => out.1 = true,
            other => {
                d.error(item.pos, &at, format!("{other:?}: expected h2 or http/1.1"));
                return None;
            }
        }
    }
    Some(out)
}

fn tls_inbound(d: &mut Decoder, c: &Node, path: &str) -> Option<crate::config::tls::ListenerTls> {
    use crate::config::tls::{
        cipher_lists, read_ca_bundle, Certificate, ClientCertificates, ListenerTls, TlsVersion,
    };
    use sha2::{Digest, Sha256};
    let f = d.map(c, path, TLS_FIELDS)?;
    let before = d.errors.len();
    let cert = d
        .required(&f, "certificate", path)
        .and_then(|n| certificate_pair(d, n, &join(path, "certificate")));
    let min = version(
        d,
        f.get("minversion"),
        &join(path, "minversion"),
        TlsVersion::Tls12,
    );
    let max = version(
        d,
        f.get("maxversion"),
        &join(path, "maxversion"),
        TlsVersion::Tls13,
    );
    let (h2, h1) = alpn(d, f.get("alpn"), &join(path, "alpn"))?;
    let mut ciphers = (None, None);
    if let Some(n) = f.get("ciphers") {
        let field = join(path, "ciphers");
        let names = d.parsed_list(n, &field, "a cipher name", |s| Ok(s.to_string()));
        match cipher_lists(&names) {
            Ok(c) => ciphers = c,
            Err(why) => d.error(n.pos, &field, why),
        }
    }
    let required = bool_or(
        d,
        f.get("requireClientCertificate"),
        &join(path, "requireClientCertificate"),
        false,
    )?;
    let clients = match f.get("trustedCA") {
        Some(n) => {
            let field = join(path, "trustedCA");
            let text = d.string(n, &field)?;
            match read_ca_bundle(&field, &text) {
                Ok(ca) => Some(ClientCertificates {
                    fingerprint: Sha256::digest(ca.bytes.as_slice()).into(),
                    ca,
                    required,
                    forward_header: None,
                }),
                Err(why) => {
                    d.error(n.pos, &field, why);
                    None
                }
            }
        }
        None if required => {
            d.error(
                f.pos,
                &join(path, "requireClientCertificate"),
                "requiring client certificates needs `trustedCA` to verify them",
            );
            None
        }
        None => None,
    };
    if d.errors.len() > before {
        return None;
    }
    let (cert, key, names, fingerprint) = cert?;
    Some(ListenerTls {
        certificates: vec![Certificate {
            cert,
            key,
            names,
            fingerprint,
        }],
        min_version: min?,
        clients,
        h2,
        h1,
        max_version: max?,
        ciphers: ciphers.0,
        ciphersuites: ciphers.1,
    })
}

fn tls_outbound(
    d: &mut Decoder,
    c: &Node,
    path: &str,
) -> Option<(crate::config::model::UpstreamTls, bool)> {
    use crate::config::tls::read_ca_bundle;
    use sha2::{Digest, Sha256};
    let f = d.map(c, path, TLS_OUT_FIELDS)?;
    let before = d.errors.len();
    let mut t = crate::config::model::UpstreamTls::default();
    let mut h = Sha256::new();
    t.verify = !bool_or(
        d,
        f.get("skipValidation"),
        &join(path, "skipValidation"),
        false,
    )?;
    if let Some(n) = f.get("trustedCA") {
        let field = join(path, "trustedCA");
        let text = d.string(n, &field)?;
        match read_ca_bundle(&field, &text) {
            Ok(ca) => {
                h.update(ca.bytes.as_slice());
                t.ca = Some(ca);
            }
            Err(why) => d.error(n.pos, &field, why),
        }
    }
    if let Some(n) = f.get("certificate") {
        if let Some((crt, key, _, fp)) = certificate_pair(d, n, &join(path, "certificate")) {
            h.update(fp);
            t.client = Some((crt, key));
        }
    }
    let (h2, _) = alpn(d, f.get("alpn"), &join(path, "alpn"))?;
    let h2 = h2 && f.get("alpn").is_some();
    for key in ["minversion", "maxversion", "ciphers"] {
        if let Some(n) = f.get(key) {
            d.notice(
                n.pos,
                &join(path, key),
                "not applied to upstream connections (OpenSSL's defaults: TLS 1.2 and 1.3)",
            );
        }
    }
    t.fingerprint = h.finalize().into();
    (d.errors.len() == before).then_some((t, h2))
}
