//! The YAML as users write it: `kind: Gateway` documents, decoded field by
//! field from the position-carrying tree, with every problem reported.
//!
//! Field-level checks (types, ranges, URL syntax, durations, unknown fields)
//! live here; checks across routes and documents live in `load.rs`.

use super::decode::{join, Decoder};
use super::fields::{f, Field, Ty, BOOL, LABELS, PORT, STR};
use super::model::{LimitSettings, PathPattern, ServerSettings, API_VERSION};
use super::services::{decode_route_upstream, decode_service, ServiceSpec, UpstreamSpec};
use super::values::parse_path_pattern;
use super::yaml::{Node, Pos};
use crate::policy::{self, PolicyConfig, PolicySpec, DEFAULT_ORDER};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One `kind: Gateway` document, decoded (fields that failed are left out).
#[derive(Debug, Clone)]
pub struct GatewayDoc {
    pub file: String,
    pub pos: Pos,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub listeners: Vec<ListenerSpec>,
    pub routes: Vec<RouteSpec>,
    /// Every route id written, also of routes that have other errors, so
    /// duplicate ids are reported in the same run.
    pub route_ids: Vec<RouteId>,
    pub server: Option<(ServerSettings, Pos)>,
    /// `spec.policies`: run on every route of this document.
    pub policies: Vec<PolicySpec>,
    /// `spec.services`: upstream services any route may name.
    pub services: Vec<ServiceSpec>,
    /// Every service name written (name, position, field path), also of
    /// services that have other errors.
    pub service_names: Vec<(String, Pos, String)>,
}

impl GatewayDoc {
    /// A document of `file` at `pos` with nothing in it yet.
    pub fn empty(file: &str, pos: Pos) -> GatewayDoc {
        GatewayDoc {
            file: file.to_string(),
            pos,
            name: String::new(),
            labels: BTreeMap::new(),
            listeners: Vec::new(),
            routes: Vec::new(),
            route_ids: Vec::new(),
            server: None,
            policies: Vec::new(),
            services: Vec::new(),
            service_names: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub name: String,
    pub host: IpAddr,
    pub port: u16,
    /// `limits:` of this listener, over the server's.
    pub limits: LimitSettings,
    pub tls: Option<super::tls::ListenerTls>,
    /// Cleartext HTTP/2 with prior knowledge.
    pub h2c: bool,
    pub pos: Pos,
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct RouteId {
    pub id: String,
    pub pos: Pos,
    /// Field path of the id, e.g. `spec.routes[1].id`.
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub id: String,
    pub pos: Pos,
    pub path: String,
    pub paths: Vec<(PathPattern, Pos)>,
    pub methods: Option<Vec<http::Method>>,
    pub host: Option<String>,
    pub upstream: UpstreamSpec,
    pub max_body_size: Option<u64>,
    pub allow_encoded_slashes: bool,
    pub allow_path_parameters: bool,
    pub policies: Vec<PolicySpec>,
    /// Flex routing (from an ApiInstance): regex rules instead of `paths`.
    pub flex: Option<std::sync::Arc<super::rules::FlexRoute>>,
}

pub const DOC_FIELDS: &[Field] = &[
    f("apiVersion", Ty::Enum(&[API_VERSION])).req(),
    f("kind", Ty::Enum(&["Gateway"])).req(),
    f("metadata", Ty::Obj(METADATA_FIELDS)).req(),
    f("spec", Ty::Obj(SPEC_FIELDS)).req(),
];
pub const METADATA_FIELDS: &[Field] = &[
    f("name", STR)
        .req()
        .doc("Names the document (its shared policies' state)."),
    f("labels", LABELS),
];
const SPEC_FIELDS: &[Field] = &[
    f("listeners", Ty::List(&Ty::Obj(LISTENER_FIELDS), false)).doc(
        "Where the gateway accepts connections (required unless the document has only `server`).",
    ),
    f("routes", Ty::List(&Ty::Obj(ROUTE_FIELDS), false)),
    f("server", Ty::Obj(super::settings::SERVER_FIELDS)).doc("Process-wide settings."),
    f("policies", Ty::Policies).doc("Policies run on every route of this document."),
    f(
        "services",
        Ty::List(&Ty::Obj(super::services::SERVICE_FIELDS), false),
    )
    .doc("Upstream services any route may name."),
];
const LISTENER_FIELDS: &[Field] = &[
    f("name", STR).req(),
    f("port", PORT).req(),
    f("protocol", Ty::AnyCase(&["HTTP", "HTTPS"])).default("\"HTTP\""),
    f("host", Ty::Text("an IP address or localhost"))
        .default("\"0.0.0.0\"")
        .doc("The address to listen on."),
    f("limits", Ty::Obj(super::settings::LIMIT_FIELDS))
        .doc("Client limits of this listener, over the server's."),
    f("tls", Ty::Obj(super::tls::TLS_FIELDS)).doc("Certificates of an HTTPS listener."),
    f("h2c", BOOL)
        .default("false")
        .doc("Cleartext HTTP/2 with prior knowledge."),
];
const ROUTE_FIELDS: &[Field] = &[
    f("id", STR).req(),
    f("path", Ty::List(&Ty::Text("a path pattern"), true))
        .req()
        .doc("Path patterns: /exact, /prefix/*, /items/{id}."),
    f("methods", Ty::List(&Ty::AnyCase(METHODS), true))
        .doc("Methods allowed (default: every method)."),
    f("host", Ty::Text("a host name")).doc("Host name, or *.example.com."),
    f("upstream", Ty::Obj(super::route_upstream::UPSTREAM_FIELDS))
        .req()
        .doc("Where requests go: a `url`, a `service`, or weighted `services`."),
    f("policies", Ty::Policies),
    f("maxBodySize", Ty::Size),
    f("allowEncodedSlashes", BOOL).default("false"),
    f("allowPathParameters", BOOL).default("false"),
];

pub const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// Decode one document. Returns `None` when it is not usable at all
/// (errors are in the decoder either way).
pub fn decode_document(d: &mut Decoder, doc: &Node) -> Option<GatewayDoc> {
    let fields = d.map(doc, "", DOC_FIELDS)?;
    if let Some(v) = d.required(&fields, "apiVersion", "") {
        if let Some(text) = d.scalar(v, "apiVersion", "a string") {
            if text != API_VERSION {
                d.error(
                    v.pos,
                    "apiVersion",
                    format!("unsupported apiVersion {text:?} (expected {API_VERSION})"),
                );
            }
        }
    }
    if let Some(v) = d.required(&fields, "kind", "") {
        if let Some(text) = d.scalar(v, "kind", "a string") {
            if text != "Gateway" {
                d.error(
                    v.pos,
                    "kind",
                    format!(
                        "unsupported kind {text:?} (supported: Gateway, {})",
                        super::flex::KINDS.join(", ")
                    ),
                );
                return None;
            }
        }
    }
    let mut out = GatewayDoc::empty(&d.file, doc.pos);
    if let Some(meta) = d.required(&fields, "metadata", "") {
        decode_metadata(d, meta, &mut out);
    }
    let spec = d.required(&fields, "spec", "")?;
    let spec = d.map(spec, "spec", SPEC_FIELDS)?;
    match spec.get("listeners") {
        Some(list) => {
            for (i, item) in d
                .list(list, "spec.listeners", false)?
                .into_iter()
                .enumerate()
            {
                if let Some(l) = decode_listener(d, item, &format!("spec.listeners[{i}]")) {
                    out.listeners.push(l);
                }
            }
            if out.listeners.is_empty() && d.errors.is_empty() {
                d.error(
                    list.pos,
                    "spec.listeners",
                    "at least one listener is required",
                );
            }
        }
        // a document of server settings only (beside Flex resources)
        None if spec.get("server").is_some() && spec.get("routes").is_none() => {}
        None => d.error(spec.pos, "spec", "missing required field `listeners`"),
    }
    if let Some(list) = spec.get("policies") {
        let name = out.name.clone();
        out.policies = decode_policies(d, list, "spec.policies", Some(&name));
    }
    if let Some(list) = spec.get("services") {
        for (item, at) in d.items(list, "spec.services", false) {
            if let Some(s) = decode_service(d, item, &at, &mut out.service_names) {
                out.services.push(s);
            }
        }
    }
    if let Some(list) = spec.get("routes") {
        if let Some(items) = d.list(list, "spec.routes", false) {
            for (i, item) in items.into_iter().enumerate() {
                let path = format!("spec.routes[{i}]");
                if let Some(r) = decode_route(d, item, &path, &mut out.route_ids) {
                    out.routes.push(r);
                }
            }
        }
    }
    if let Some(server) = spec.get("server") {
        out.server =
            super::settings::decode_server(d, server, "spec.server").map(|s| (s, server.pos));
    }
    Some(out)
}

fn decode_metadata(d: &mut Decoder, node: &Node, out: &mut GatewayDoc) {
    let Some(meta) = d.map(node, "metadata", METADATA_FIELDS) else {
        return;
    };
    if let Some(name) = d.required(&meta, "name", "metadata") {
        if let Some(name) = d.string(name, "metadata.name") {
            out.name = name;
        }
    }
    if let Some(labels) = meta.get("labels") {
        let Some(labels) = d.map_any(labels, "metadata.labels") else {
            return;
        };
        for (k, v) in labels.keys() {
            if let Some(v) = d.scalar(v, &join("metadata.labels", k), "a string") {
                out.labels.insert(k.to_string(), v.to_string());
            }
        }
    }
}

fn decode_listener(d: &mut Decoder, node: &Node, path: &str) -> Option<ListenerSpec> {
    let f = d.map(node, path, LISTENER_FIELDS)?;
    let name = d
        .required(&f, "name", path)
        .and_then(|n| d.string(n, &join(path, "name")));
    let port = d
        .required(&f, "port", path)
        .and_then(|n| d.port(n, &join(path, "port")));
    let mut https = false;
    if let Some(p) = f.get("protocol") {
        let field = join(path, "protocol");
        if let Some(text) = d.scalar(p, &field, "a protocol") {
            if text.eq_ignore_ascii_case("HTTPS") {
                https = true;
            } else if !text.eq_ignore_ascii_case("HTTP") {
                d.error(
                    p.pos,
                    &field,
                    format!("unsupported protocol {text:?} (supported: HTTP, HTTPS)"),
                );
            }
        }
    }
    let tls = match (https, f.get("tls")) {
        (true, Some(n)) => super::tls::decode(d, n, &join(path, "tls")).map(Some),
        (true, None) => {
            d.error(
                f.pos,
                path,
                "protocol HTTPS needs `tls: {certificates: [{cert: FILE, key: FILE}]}`",
            );
            None
        }
        (false, Some(n)) => {
            d.error(
                n.pos,
                &join(path, "tls"),
                "`tls` applies to `protocol: HTTPS` listeners only",
            );
            None
        }
        (false, None) => Some(None),
    };
    let host = match f.get("host") {
        None => Some(IpAddr::from([0, 0, 0, 0])),
        Some(h) => {
            let field = join(path, "host");
            let text = d.scalar(h, &field, "an IP address")?;
            match text {
                "localhost" => Some(IpAddr::from([127, 0, 0, 1])),
                _ => match text.parse::<IpAddr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        d.error(
                            h.pos,
                            &field,
                            format!("{text:?} is not an IP address to listen on (try \"0.0.0.0\" or \"127.0.0.1\")"),
                        );
                        None
                    }
                },
            }
        }
    };
    let limits = match f.get("limits") {
        Some(n) => super::settings::decode_limits(d, n, &join(path, "limits")),
        None => Some(LimitSettings::default()),
    };
    let h2c = match f.get("h2c") {
        None => Some(false),
        Some(n) => {
            let field = join(path, "h2c");
            let on = d.bool(n, &field);
            if on == Some(true) && https {
                d.error(
                    n.pos,
                    &field,
                    "h2c is cleartext HTTP/2; an HTTPS listener offers h2 by ALPN (`tls.alpn`)",
                );
                None
            } else {
                on
            }
        }
    };
    Some(ListenerSpec {
        name: name?,
        host: host?,
        port: port?,
        limits: limits?,
        tls: tls?,
        h2c: h2c?,
        pos: node.pos,
        path: path.to_string(),
    })
}

fn decode_route(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    ids: &mut Vec<RouteId>,
) -> Option<RouteSpec> {
    let f = d.map(node, path, ROUTE_FIELDS)?;
    let errors_before = d.errors.len();
    let id_path = join(path, "id");
    let id = d.required(&f, "id", path).and_then(|n| {
        let id = d.string(n, &id_path)?;
        ids.push(RouteId {
            id: id.clone(),
            pos: n.pos,
            path: id_path.clone(),
        });
        Some(id)
    });
    let mut paths = Vec::new();
    if let Some(list) = d.required(&f, "path", path) {
        let field = join(path, "path");
        for (i, item) in d
            .list(list, &field, true)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let item_path = format!("{field}[{i}]");
            if let Some(text) = d.scalar(item, &item_path, "a path") {
                match parse_path_pattern(text) {
                    Ok(p) => {
                        if paths.iter().any(|(q, _)| *q == p) {
                            d.error(item.pos, &item_path, format!("duplicate path {text:?}"));
                        } else {
                            paths.push((p, item.pos));
                        }
                    }
                    Err(why) => d.error(item.pos, &item_path, why),
                }
            }
        }
        if paths.is_empty() && d.errors.len() == errors_before {
            d.error(list.pos, &field, "at least one path is required");
        }
    }
    let methods = f
        .get("methods")
        .and_then(|m| decode_methods(d, m, &join(path, "methods")));
    let host = f.get("host").and_then(|h| {
        let field = join(path, "host");
        let text = d.string(h, &field)?;
        let host = text.to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if bare.is_empty()
            || !bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            d.error(
                h.pos,
                &field,
                format!("{text:?} is not a host name (example: api.example.com or *.example.com)"),
            );
            return None;
        }
        Some(host)
    });
    let upstream = d
        .required(&f, "upstream", path)
        .and_then(|u| decode_route_upstream(d, u, &join(path, "upstream"), id.as_deref()));
    let max_body_size = f
        .get("maxBodySize")
        .and_then(|n| d.size(n, &join(path, "maxBodySize")));
    let allow_encoded_slashes = match f.get("allowEncodedSlashes") {
        Some(n) => d
            .bool(n, &join(path, "allowEncodedSlashes"))
            .unwrap_or(false),
        None => false,
    };
    let allow_path_parameters = match f.get("allowPathParameters") {
        Some(n) => d
            .bool(n, &join(path, "allowPathParameters"))
            .unwrap_or(false),
        None => false,
    };
    let policies = f
        .get("policies")
        .map(|list| decode_policies(d, list, &join(path, "policies"), None))
        .unwrap_or_default();
    if d.errors.len() > errors_before {
        return None;
    }
    Some(RouteSpec {
        id: id?,
        pos: node.pos,
        path: path.to_string(),
        paths,
        methods,
        host,
        upstream: upstream?,
        max_body_size,
        allow_encoded_slashes,
        allow_path_parameters,
        policies,
        flex: None,
    })
}

fn decode_methods(d: &mut Decoder, node: &Node, path: &str) -> Option<Vec<http::Method>> {
    let items = d.list(node, path, true)?;
    let before = d.errors.len();
    let mut out: Vec<http::Method> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let field = format!("{path}[{i}]");
        let Some(text) = d.scalar(item, &field, "an HTTP method") else {
            continue;
        };
        let upper = text.to_ascii_uppercase();
        if !METHODS.contains(&upper.as_str()) {
            d.error(
                item.pos,
                &field,
                format!(
                    "{text:?} is not an HTTP method (expected one of: {})",
                    METHODS.join(", ")
                ),
            );
            continue;
        }
        match http::Method::from_bytes(upper.as_bytes()) {
            Ok(m) if !out.contains(&m) => out.push(m),
            Ok(_) => d.error(item.pos, &field, format!("duplicate method {upper}")),
            Err(_) => d.error(item.pos, &field, format!("{text:?} is not an HTTP method")),
        }
    }
    if out.is_empty() && d.errors.len() == before {
        d.error(
            node.pos,
            path,
            "at least one method is required (leave `methods` out to allow every method)",
        );
        return None;
    }
    Some(out)
}

/// A policy list (`spec.policies` or a route's `policies`): each item is
/// `{<policy name>: {config}, order: N}`. Secret references in the config
/// are resolved before the policy decodes it.
pub fn decode_policies(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    document: Option<&str>,
) -> Vec<PolicySpec> {
    let mut out: Vec<PolicySpec> = Vec::new();
    for (i, item) in d
        .list(node, path, false)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let at = format!("{path}[{i}]");
        let mut known: Vec<&str> = policy::NAMES.to_vec();
        known.push("order");
        let before = d.errors.len();
        let Some(f) = d.map_names(item, &at, &known) else {
            continue;
        };
        let misspelt = d.errors.len() > before;
        let order = match f.get("order") {
            Some(n) => d.int(n, &join(&at, "order"), -10_000, 10_000),
            None => Some(i64::from(DEFAULT_ORDER)),
        };
        let mut names = f.keys().filter(|(k, _)| *k != "order");
        let Some((name, body)) = names.next() else {
            if misspelt {
                continue; // the unknown name was reported, with a suggestion
            }
            d.error(
                item.pos,
                &at,
                format!("expected one policy (one of: {})", policy::NAMES.join(", ")),
            );
            continue;
        };
        if names.next().is_some() {
            d.error(
                item.pos,
                &at,
                "one policy per list item (start another item with `- `)",
            );
            continue;
        }
        let field = join(&at, name);
        let body = d.resolve_references(body, &field);
        let Some(config) = PolicyConfig::decode(d, name, &body, &field) else {
            continue;
        };
        if out.iter().any(|q| q.name() == config.name()) {
            d.error(
                item.pos,
                &at,
                format!("policy {} is listed twice", config.name()),
            );
            continue;
        }
        let Some(order) = order else { continue };
        out.push(PolicySpec {
            config,
            order: order as i32,
            document: document.map(str::to_string),
            when: None,
            tier: 1,
        });
    }
    out
}
