//! Decoding one Flex resource document (`ApiInstance`, `Service`,
//! `PolicyBinding`, `Configuration`) from the position-carrying tree.
//! References between resources are resolved in `compile.rs`.

use super::catalog::{self, Bound};
pub use super::configuration::{ConfigRes, FlexTimeouts};
use super::{API_VERSIONS, KINDS};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, LABELS, STR};
use crate::config::model::Upstream;
use crate::config::rules::{whole, Rule, RuleSource, Rules};
use crate::config::values::parse_upstream_url;
use crate::config::yaml::{Node, Pos, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `metadata` of any resource, with where the resource is.
#[derive(Debug, Clone)]
pub struct Meta {
    pub kind: &'static str,
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub file: String,
    pub pos: Pos,
}

impl Meta {
    /// `name`, or `namespace/name` outside the default namespace.
    pub fn display(&self) -> String {
        qualified(&self.namespace, &self.name)
    }
}

pub fn qualified(namespace: &str, name: &str) -> String {
    if namespace == "default" {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

#[derive(Debug, Clone)]
pub enum Resource {
    Instance(Instance),
    Service(ServiceRes),
    Binding(Box<Binding>),
    Configuration(Box<ConfigRes>),
    /// A custom policy's definition or implementation.
    Extension(super::extension::ExtensionRes),
}

impl Resource {
    pub fn meta(&self) -> &Meta {
        match self {
            Resource::Instance(r) => &r.meta,
            Resource::Service(r) => &r.meta,
            Resource::Binding(r) => &r.meta,
            Resource::Configuration(r) => &r.meta,
            Resource::Extension(r) => &r.meta,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub meta: Meta,
    pub https: bool,
    pub host: IpAddr,
    pub port: u16,
    /// Without a trailing slash; empty for none.
    pub base_path: String,
    pub address_pos: Pos,
    pub services: Vec<InlineService>,
    /// `spec.policies`: bindings to this instance.
    pub policies: Vec<Binding>,
}

#[derive(Debug, Clone)]
pub struct InlineService {
    pub name: String,
    pub upstream: Upstream,
    /// None given: one catch-all route.
    pub routes: Vec<RouteDef>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct RouteDef {
    pub rules: Rules,
    pub destination_path: String,
}

#[derive(Debug, Clone)]
pub struct ServiceRes {
    pub meta: Meta,
    pub upstream: Upstream,
}

/// A reference to a named resource.
#[derive(Debug, Clone)]
pub struct Ref {
    pub name: String,
    pub namespace: String,
    pub pos: Pos,
    pub path: String,
}

#[derive(Debug, Clone)]
pub enum Target {
    Instance(Ref),
    Service(Ref),
    /// Every ApiInstance carrying these labels (none: every instance).
    Selector(BTreeMap<String, String>),
    /// An instance's own `spec.policies`.
    Inline,
}

#[derive(Debug, Clone)]
pub struct Binding {
    pub meta: Meta,
    pub target: Target,
    pub policy_name: String,
    pub policy: Bound,
    pub order: i32,
    pub rules: Rules,
    pub pos: Pos,
    pub path: String,
}

const DOC_FIELDS: &[Field] = &[
    f("apiVersion", Ty::Enum(API_VERSIONS)).req(),
    f("kind", Ty::Enum(KINDS)).req(),
    f("metadata", Ty::Obj(META_FIELDS)).req(),
    f("spec", Ty::Any).req().doc("The resource, by its kind."),
];
const META_FIELDS: &[Field] = &[
    f("name", STR).req(),
    f("namespace", STR).default("\"default\""),
    f("labels", LABELS),
    f("annotations", Ty::Dict(&Ty::Any)),
];
const INSTANCE_FIELDS: &[Field] = &[
    f(
        "address",
        Ty::Url("http(s)://host:port[/path]: where the API is served"),
    )
    .req(),
    f("services", Ty::Dict(&Ty::Obj(INLINE_SERVICE_FIELDS)))
        .doc("Upstream services of this API, by name."),
    f(
        "policies",
        Ty::List(&Ty::Binding(INLINE_POLICY_FIELDS), false),
    ),
];
const INLINE_SERVICE_FIELDS: &[Field] = &[
    f("address", Ty::Url("an upstream URL")).req(),
    f("routes", Ty::List(&Ty::Obj(ROUTE_FIELDS), false)),
];
const ROUTE_FIELDS: &[Field] = &[
    f("rules", Ty::List(&Ty::Obj(RULE_FIELDS), false)),
    f("config", Ty::Obj(ROUTE_CONFIG_FIELDS)),
];
const ROUTE_CONFIG_FIELDS: &[Field] = &[f("destinationPath", Ty::Text("a path starting with /"))];
const SERVICE_FIELDS: &[Field] = &[f("address", Ty::Url("an upstream URL")).req()];
const BINDING_FIELDS: &[Field] = &[
    f("targetRef", Ty::Obj(TARGET_FIELDS)).req(),
    f("policyRef", Ty::Obj(POLICY_REF_FIELDS)).req(),
    f("config", Ty::Any).doc("The policy's configuration (by `policyRef.name`)."),
    f("order", Ty::Int(-10_000, 10_000)).default("50"),
    f("rules", Ty::List(&Ty::Obj(RULE_FIELDS), false)).doc("Apply only to matching requests."),
];
const INLINE_POLICY_FIELDS: &[Field] = &[
    f("policyRef", Ty::Obj(POLICY_REF_FIELDS)).req(),
    f("config", Ty::Any).doc("The policy's configuration (by `policyRef.name`)."),
    f("order", Ty::Int(-10_000, 10_000)).default("50"),
    f("rules", Ty::List(&Ty::Obj(RULE_FIELDS), false)),
];
const TARGET_FIELDS: &[Field] = &[
    f("kind", Ty::Enum(&["ApiInstance", "Service", "Selector"])).default("\"ApiInstance\""),
    f("name", STR).doc("The target's name (required unless kind is Selector)."),
    f("namespace", STR),
    f("selector", Ty::Obj(SELECTOR_FIELDS)),
];
const SELECTOR_FIELDS: &[Field] = &[f("kind", Ty::Enum(&["ApiInstance"])), f("labels", LABELS)];
const POLICY_REF_FIELDS: &[Field] = &[
    f("name", STR)
        .req()
        .doc("A Flex catalog policy, one of ours, or an Extension's name."),
    f("namespace", STR),
    f("kind", Ty::Enum(&["Extension"])),
];
const RULE_FIELDS: &[Field] = &[
    f("path", Ty::Text("a regular expression")),
    f("methods", Ty::Text("a regular expression")),
    f("host", Ty::Text("a regular expression")),
    f("headers", Ty::Dict(&Ty::Text("a regular expression"))),
];

/// Each kind's `spec`: the JSON Schema's source.
pub const KIND_SPECS: &[(&str, Ty)] = &[
    ("ApiInstance", Ty::Obj(INSTANCE_FIELDS)),
    ("Service", Ty::Obj(SERVICE_FIELDS)),
    ("PolicyBinding", Ty::Binding(BINDING_FIELDS)),
    ("Configuration", Ty::Obj(super::configuration::CONFIG_KEYS)),
    ("Extension", Ty::Obj(super::extension::SPEC_FIELDS)),
];
/// A Flex document's fields (`spec` by kind: [`KIND_SPECS`]).
pub const FLEX_DOC_FIELDS: &[Field] = DOC_FIELDS;

/// The `kind` of a document when it is a Flex resource kind.
pub fn flex_kind(doc: &Node) -> Option<&'static str> {
    let Value::Map(pairs) = &doc.value else {
        return None;
    };
    pairs.iter().find_map(|(k, v)| match (&k.value, &v.value) {
        (Value::Scalar { text: k, .. }, Value::Scalar { text, .. }) if k == "kind" => {
            KINDS.iter().copied().find(|kind| kind == text)
        }
        _ => None,
    })
}

/// Decode one Flex resource (its kind is one of [`KINDS`]).
pub fn decode_resource(d: &mut Decoder, doc: &Node, kind: &'static str) -> Option<Resource> {
    let f = d.map(doc, "", DOC_FIELDS)?;
    if let Some(v) = d.required(&f, "apiVersion", "") {
        if let Some(text) = d.scalar(v, "apiVersion", "a string") {
            if !API_VERSIONS.contains(&text) {
                d.error(
                    v.pos,
                    "apiVersion",
                    format!(
                        "unsupported apiVersion {text:?} (expected {})",
                        API_VERSIONS.join(" or ")
                    ),
                );
            }
        }
    }
    let meta_node = d.required(&f, "metadata", "");
    let meta = decode_meta(d, meta_node, doc.pos, kind);
    let spec = d.required(&f, "spec", "");
    let (meta, spec) = (meta?, spec?);
    match kind {
        "ApiInstance" => decode_instance(d, spec, meta).map(Resource::Instance),
        "Service" => {
            let s = d.map(spec, "spec", SERVICE_FIELDS)?;
            let a = d.required(&s, "address", "spec")?;
            let upstream = service_address(d, a, "spec.address")?;
            Some(Resource::Service(ServiceRes { meta, upstream }))
        }
        "PolicyBinding" => {
            decode_binding(d, spec, "spec", meta, false).map(|b| Resource::Binding(Box::new(b)))
        }
        "Extension" => super::extension::decode(d, spec, meta).map(Resource::Extension),
        _ => super::configuration::decode(d, spec, meta)
            .map(|c| Resource::Configuration(Box::new(c))),
    }
}

fn decode_meta(d: &mut Decoder, node: Option<&Node>, pos: Pos, kind: &'static str) -> Option<Meta> {
    let m = d.map(node?, "metadata", META_FIELDS)?;
    let name = d
        .required(&m, "name", "metadata")
        .and_then(|n| d.string(n, "metadata.name"));
    let namespace = match m.get("namespace") {
        Some(n) => d.string(n, "metadata.namespace"),
        None => Some("default".to_string()),
    };
    let mut labels = BTreeMap::new();
    if let Some(l) = m.get("labels") {
        if let Some(l) = d.map_any(l, "metadata.labels") {
            for (k, v) in l.keys() {
                // YAML 1.1 words (yes, on) stay strings: scalars as written
                if let Some(v) = d.scalar(v, &join("metadata.labels", k), "a string") {
                    labels.insert(k.to_string(), v.to_string());
                }
            }
        }
    }
    Some(Meta {
        kind,
        name: name?,
        namespace: namespace?,
        labels,
        file: d.file.clone(),
        pos,
    })
}

/// `http://0.0.0.0:8080/base`: scheme, IP to listen on, port, base path.
fn instance_address(d: &mut Decoder, n: &Node, path: &str) -> Option<(bool, IpAddr, u16, String)> {
    let text = d.string(n, path)?;
    let fail = |d: &mut Decoder, why: String| {
        d.error(n.pos, path, why);
        None
    };
    let Ok(uri) = text.parse::<http::Uri>() else {
        return fail(
            d,
            format!("{text:?} is not an address (example: http://0.0.0.0:8080/api)"),
        );
    };
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return fail(d, format!("{text:?}: the scheme must be http or https")),
    };
    let Some(auth) = uri.authority() else {
        return fail(d, format!("{text:?} has no host and port"));
    };
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        h => match h.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                return fail(
                    d,
                    format!("{host:?} is not an IP address to listen on (try 0.0.0.0)"),
                )
            }
        },
    };
    let Some(port) = auth.port_u16().filter(|p| *p > 0) else {
        return fail(
            d,
            format!("{text:?} needs a port (example: http://0.0.0.0:8080)"),
        );
    };
    if uri.query().is_some() {
        return fail(d, format!("{text:?}: an address has no query"));
    }
    let base = uri.path().trim_end_matches('/').to_string();
    if let Err(e) = crate::path::normalize(&format!("{base}/")) {
        return fail(d, format!("{text:?}: base path: {}", e.message()));
    }
    Some((https, ip, port, base))
}

fn service_address(d: &mut Decoder, n: &Node, path: &str) -> Option<Upstream> {
    let text = d.scalar(n, path, "a URL")?;
    match parse_upstream_url(text) {
        Ok(u) => Some(u),
        Err(why) => {
            d.error(n.pos, path, why);
            None
        }
    }
}

fn decode_instance(d: &mut Decoder, spec: &Node, meta: Meta) -> Option<Instance> {
    let s = d.map(spec, "spec", INSTANCE_FIELDS)?;
    let before = d.errors.len();
    let address = d
        .required(&s, "address", "spec")
        .and_then(|n| instance_address(d, n, "spec.address").map(|a| (a, n.pos)));
    let mut services = Vec::new();
    if let Some(n) = s.get("services") {
        if let Some(m) = d.map_any(n, "spec.services") {
            for (name, v) in m.keys() {
                let at = join("spec.services", name);
                let Some(g) = d.map(v, &at, INLINE_SERVICE_FIELDS) else {
                    continue;
                };
                let upstream = d
                    .required(&g, "address", &at)
                    .and_then(|a| service_address(d, a, &join(&at, "address")));
                let mut routes = Vec::new();
                if let Some(list) = g.get("routes") {
                    for (item, rp) in d.items(list, &join(&at, "routes"), false) {
                        if let Some(r) = decode_route(d, item, &rp) {
                            routes.push(r);
                        }
                    }
                }
                if let Some(upstream) = upstream {
                    services.push(InlineService {
                        name: name.to_string(),
                        upstream,
                        routes,
                        pos: v.pos,
                    });
                }
            }
        }
    }
    let mut policies = Vec::new();
    if let Some(list) = s.get("policies") {
        for (item, at) in d.items(list, "spec.policies", false) {
            if let Some(b) = decode_binding(d, item, &at, meta.clone(), true) {
                policies.push(b);
            }
        }
    }
    // kept even when a route or policy failed (those are reported and left
    // out), so references to the instance are still checked in this run
    let _ = before;
    let ((https, host, port, base_path), address_pos) = address?;
    Some(Instance {
        meta,
        https,
        host,
        port,
        base_path,
        address_pos,
        services,
        policies,
    })
}

fn decode_route(d: &mut Decoder, node: &Node, path: &str) -> Option<RouteDef> {
    let f = d.map(node, path, ROUTE_FIELDS)?;
    let rules = match f.get("rules") {
        Some(n) => decode_rules(d, n, &join(path, "rules"))?,
        None => Rules::default(),
    };
    let mut destination_path = String::new();
    if let Some(c) = f.get("config") {
        let cp = join(path, "config");
        let g = d.map(c, &cp, ROUTE_CONFIG_FIELDS)?;
        if let Some(n) = g.get("destinationPath") {
            destination_path = destination(d, n, &join(&cp, "destinationPath"))?;
        }
    }
    Some(RouteDef {
        rules,
        destination_path,
    })
}

/// A `destinationPath`: an absolute path, kept without its trailing slash.
pub fn destination(d: &mut Decoder, n: &Node, path: &str) -> Option<String> {
    let text = d.scalar(n, path, "a path")?;
    if !text.is_empty() && !text.starts_with('/') {
        d.error(n.pos, path, format!("{text:?} must start with /"));
        return None;
    }
    if text.contains(['?', '#', ' ']) {
        d.error(n.pos, path, format!("{text:?} is not a path"));
        return None;
    }
    Some(text.trim_end_matches('/').to_string())
}

/// `rules: [{path, methods, host, headers}]`, each a regular expression.
pub fn decode_rules(d: &mut Decoder, node: &Node, path: &str) -> Option<Rules> {
    let before = d.errors.len();
    let mut out = Vec::new();
    for (item, at) in d.items(node, path, false) {
        let Some(f) = d.map(item, &at, RULE_FIELDS) else {
            continue;
        };
        let mut source = RuleSource::default();
        let regex = |d: &mut Decoder, key: &str, out: &mut Option<String>| {
            let n = f.get(key)?;
            let field = join(&at, key);
            let text = d.scalar(n, &field, "a regular expression")?;
            match whole(text) {
                Ok(re) => {
                    *out = Some(text.to_string());
                    Some(re)
                }
                Err(why) => {
                    d.error(n.pos, &field, why);
                    None
                }
            }
        };
        let path_re = regex(d, "path", &mut source.path);
        let methods = regex(d, "methods", &mut source.methods);
        let host = regex(d, "host", &mut source.host);
        let mut headers = Vec::new();
        if let Some(h) = f.get("headers") {
            let hp = join(&at, "headers");
            if let Some(m) = d.map_any(h, &hp) {
                for (name, v) in m.keys() {
                    let field = join(&hp, name);
                    let Ok(hn) = http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                    else {
                        d.error(v.pos, &field, format!("{name:?} is not a header name"));
                        continue;
                    };
                    let Some(text) = d.scalar(v, &field, "a regular expression") else {
                        continue;
                    };
                    match whole(text) {
                        Ok(re) => {
                            source.headers.push((hn.to_string(), text.to_string()));
                            headers.push((hn, re));
                        }
                        Err(why) => d.error(v.pos, &field, why),
                    }
                }
            }
        }
        out.push(Rule {
            path: path_re,
            methods,
            host,
            headers,
            source,
        });
    }
    (d.errors.len() == before).then_some(Rules(out))
}

/// A `PolicyBinding` spec, or an item of an instance's `spec.policies`
/// (`inline`: no `targetRef`, the instance is the target).
fn decode_binding(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    meta: Meta,
    inline: bool,
) -> Option<Binding> {
    let fields = if inline {
        INLINE_POLICY_FIELDS
    } else {
        BINDING_FIELDS
    };
    let f = d.map(node, path, fields)?;
    let before = d.errors.len();
    let target = if inline {
        Some(Target::Inline)
    } else {
        d.required(&f, "targetRef", path)
            .and_then(|n| decode_target(d, n, &join(path, "targetRef"), &meta.namespace))
    };
    let pref_path = join(path, "policyRef");
    let policy_name = d.required(&f, "policyRef", path).and_then(|n| {
        let g = d.map(n, &pref_path, POLICY_REF_FIELDS)?;
        let name = d.required(&g, "name", &pref_path)?;
        let text = d.string(name, &join(&pref_path, "name"))?;
        let kind = match g.get("kind") {
            Some(k) => Some(d.string(k, &join(&pref_path, "kind"))?),
            None => None,
        };
        let namespace = match g.get("namespace") {
            Some(k) => d.string(k, &join(&pref_path, "namespace"))?,
            None => meta.namespace.clone(),
        };
        Some((text, name.pos, kind, namespace))
    });
    let order = match f.get("order") {
        Some(n) => d
            .int(n, &join(path, "order"), -10_000, 10_000)
            .map(|o| o as i32),
        None => Some(crate::policy::DEFAULT_ORDER),
    };
    let rules = match f.get("rules") {
        Some(n) => decode_rules(d, n, &join(path, "rules")),
        None => Some(Rules::default()),
    };
    let (policy_name, name_pos, kind, namespace) = policy_name?;
    let config_path = join(path, "config");
    let config = f.get("config").map(|c| {
        let c = dollar_references(c);
        d.resolve_references(&c, &config_path)
    });
    // a custom policy: resolved against the Extensions of every file
    let extension = match kind.as_deref() {
        Some("Extension") => true,
        Some(other) => {
            d.error(
                name_pos,
                &join(&pref_path, "kind"),
                format!(
                    "unsupported policy kind {other:?} (Extension, or none for a catalog policy)"
                ),
            );
            return None;
        }
        None => !catalog::is_catalog_name(&policy_name),
    };
    let policy = if extension {
        Some(Bound::Extension(Box::new(super::extension::ExtensionRef {
            name: policy_name.clone(),
            namespace,
            name_pos,
            name_path: join(&pref_path, "name"),
            config: config.clone(),
            config_pos: f.get("config").map_or(f.pos, |c| c.pos),
            config_path: config_path.clone(),
        })))
    } else {
        catalog::decode(
            d,
            &policy_name,
            name_pos,
            config.as_ref(),
            f.pos,
            &config_path,
            &join(&pref_path, "name"),
        )
    };
    if d.errors.len() > before {
        return None;
    }
    Some(Binding {
        meta,
        target: target?,
        policy_name,
        policy: policy?,
        order: order?,
        rules: rules?,
        pos: node.pos,
        path: path.to_string(),
    })
}

fn decode_target(d: &mut Decoder, node: &Node, path: &str, namespace: &str) -> Option<Target> {
    let f = d.map(node, path, TARGET_FIELDS)?;
    let kind = match f.get("kind") {
        None => "ApiInstance",
        Some(n) => match d.scalar(n, &join(path, "kind"), "a kind")? {
            "ApiInstance" => "ApiInstance",
            "Service" => "Service",
            "Selector" => "Selector",
            other => {
                d.error(
                    n.pos,
                    &join(path, "kind"),
                    format!("unsupported target kind {other:?} (ApiInstance, Service or Selector)"),
                );
                return None;
            }
        },
    };
    if kind == "Selector" {
        let mut labels = BTreeMap::new();
        if let Some(s) = f.get("selector") {
            let sp = join(path, "selector");
            let g = d.map(s, &sp, SELECTOR_FIELDS)?;
            if let Some(k) = g.get("kind") {
                let kp = join(&sp, "kind");
                if d.scalar(k, &kp, "a kind")? != "ApiInstance" {
                    d.error(k.pos, &kp, "a Selector selects ApiInstance resources only");
                    return None;
                }
            }
            if let Some(l) = g.get("labels") {
                let lp = join(&sp, "labels");
                let m = d.map_any(l, &lp)?;
                for (k, v) in m.keys() {
                    let v = d.scalar(v, &join(&lp, k), "a string")?;
                    labels.insert(k.to_string(), v.to_string());
                }
            }
        }
        return Some(Target::Selector(labels));
    }
    let name = d
        .required(&f, "name", path)
        .and_then(|n| Some((d.string(n, &join(path, "name"))?, n.pos)));
    let ns = match f.get("namespace") {
        Some(n) => d.string(n, &join(path, "namespace")),
        None => Some(namespace.to_string()),
    };
    let (name, pos) = name?;
    let r = Ref {
        name,
        namespace: ns?,
        pos,
        path: join(path, "name"),
    };
    Some(if kind == "Service" {
        Target::Service(r)
    } else {
        Target::Instance(r)
    })
}

/// Flex's `$NAME` (a whole value naming an environment variable) as the
/// `${NAME}` the shared resolver reads.
fn dollar_references(node: &Node) -> Node {
    let value = match &node.value {
        Value::Scalar { text, quoted } => {
            let name = text.strip_prefix('$').filter(|n| {
                !n.is_empty()
                    && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !n.starts_with(|c: char| c.is_ascii_digit())
            });
            match name {
                Some(n) => Value::Scalar {
                    text: format!("${{{n}}}"),
                    quoted: *quoted,
                },
                None => node.value.clone(),
            }
        }
        Value::Seq(items) => Value::Seq(items.iter().map(dollar_references).collect()),
        Value::Map(pairs) => Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), dollar_references(v)))
                .collect(),
        ),
    };
    Node {
        value,
        pos: node.pos,
    }
}
