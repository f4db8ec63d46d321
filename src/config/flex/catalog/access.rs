//! `ip-allowlist-flex`, `ip-blocklist-flex`, `header-injection-flex`,
//! `header-removal-flex`, `cors-flex`.

use super::{accessor, expr, mapped};
use super::{bool_or, map, ours, scalar, seq};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL};
use crate::config::yaml::Node;
use crate::policy::{self, PolicyConfig};

pub const IP_FILTER: &[Field] = &[
    f(
        "ips",
        Ty::List(&Ty::Text("an IP address or CIDR range"), true),
    )
    .req(),
    f(
        "ipExpression",
        Ty::Text("#[attributes.remoteAddress] or the X-Forwarded-For header"),
    )
    .default("\"#[attributes.remoteAddress]\""),
];
const INJECTED: &[Field] = &[
    f("key", Ty::Name("a header name")).req(),
    f("value", Ty::Scalar)
        .req()
        .doc("The value; may hold expressions #[...]."),
];
const INJECTED_LIST: Ty = Ty::List(&Ty::Obj(INJECTED), false);
pub const HEADER_INJECTION: &[Field] = &[
    f("inboundHeaders", INJECTED_LIST).doc("Set on the request going upstream."),
    f("outboundHeaders", INJECTED_LIST).doc("Set on the response to the client."),
];
const REMOVED: Ty = Ty::List(&Ty::Name("a header name, or a pattern with *"), true);
pub const HEADER_REMOVAL: &[Field] = &[
    f("inboundHeaders", REMOVED).doc("Removed from the request going upstream."),
    f("outboundHeaders", REMOVED).doc("Removed from the response to the client."),
];
pub const CORS: &[Field] = &[
    f("publicResource", BOOL)
        .default("true")
        .doc("Any origin (true), or those of `originGroups`."),
    f("supportCredentials", BOOL).default("false"),
    f("originGroups", Ty::List(&Ty::Obj(ORIGIN_GROUP), false)),
];
const ORIGIN_GROUP: &[Field] = &[
    f("origins", Ty::List(&Ty::Text("an origin"), true)),
    f("accessControlMaxAge", Ty::Int(0, 86_400)).default("30"),
    f("allowedMethods", Ty::List(&Ty::Obj(ALLOWED_METHOD), false)),
    f("headers", Ty::List(&Ty::Name("a header name or *"), true)),
    f("exposedHeaders", Ty::List(&Ty::Name("a header name"), true)),
];
const ALLOWED_METHOD: &[Field] = &[
    f("methodName", Ty::Text("an HTTP method")).req(),
    f("isAllowed", BOOL).default("true"),
];

pub(super) fn ip_filter(
    d: &mut Decoder,
    c: &Node,
    path: &str,
    allow: bool,
) -> Option<PolicyConfig> {
    let f = d.map(c, path, IP_FILTER)?;
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

pub(super) fn header_injection(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(c, path, HEADER_INJECTION)?;
    let before = d.errors.len();
    let mut tree = Vec::new();
    for (flex, side) in [
        ("inboundHeaders", "request"),
        ("outboundHeaders", "response"),
    ] {
        let Some(list) = f.get(flex) else { continue };
        let mut items = Vec::new();
        for (item, at) in d.items(list, &join(path, flex), false) {
            let Some(g) = d.map(item, &at, INJECTED) else {
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

pub(super) fn header_removal(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(c, path, HEADER_REMOVAL)?;
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

pub(super) fn cors(d: &mut Decoder, c: &Node, path: &str) -> Option<PolicyConfig> {
    let f = d.map(c, path, CORS)?;
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
        let g = d.map(g, gp, ORIGIN_GROUP)?;
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
                let Some(m) = d.map(item, &at, ALLOWED_METHOD) else {
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
