//! Flex `kind: Extension`: custom policies deployed the way Flex Local
//! Mode deploys them (and the PDK's `make build` writes them).
//!
//! ```yaml
//! kind: Extension                # the definition: the policy's config schema
//! metadata: {name: block}
//! spec:
//!   extends: [{name: extension-definition}]
//!   properties: {source: {type: string, format: service}, frequency: {type: integer, default: 60}}
//!   required: [source]
//! ---
//! kind: Extension                # the implementation: the WebAssembly module
//! metadata: {name: block-v1-0-impl}
//! spec:
//!   extends: [{name: block}, {name: extension-implementation}, {name: envoy-filter}, {name: proxy-wasm-filter}]
//!   properties:
//!     rootId: {type: string, default: main}
//!     implementation: {type: string, default: "base64://AGFzbQEAAAAB..."}
//! ```
//!
//! A `PolicyBinding` (or an `ApiInstance`'s `spec.policies` item) names
//! the implementation in `policyRef`; its `config` is checked against the
//! definition (types, required fields, unknown keys), the definition's
//! defaults are filled in, and the filter gets it as JSON.

use super::resources::{Binding, Meta, Resource};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, STR, STRS};
use crate::config::yaml::{Node, Pos};
use crate::config::ConfigError;
#[cfg(feature = "wasm")]
use crate::config::{decode::suggest, yaml::Value as Yaml};
use crate::policy::PolicyConfig;
#[cfg(feature = "wasm")]
use serde_json::Map;
use serde_json::Value;

pub const SPEC_FIELDS: &[Field] = &[
    f("extends", Ty::List(&Ty::Obj(EXTENDS_FIELDS), false)).req(),
    f("properties", Ty::Dict(&Ty::Dict(&Ty::Any)))
        .doc("The policy's config schema: name: {type, format, default}."),
    f("required", STRS),
];
const EXTENDS_FIELDS: &[Field] = &[f("name", STR).req(), f("namespace", STR)];

/// Names an Extension extends that say what it is, not which policy.
const BUILTIN: &[&str] = &[
    "extension-definition",
    "extension-implementation",
    "extension-authentication",
    "envoy-filter",
    "proxy-wasm-filter",
];

#[derive(Debug, Clone)]
pub struct ExtensionRes {
    pub meta: Meta,
    pub role: Role,
}

#[derive(Debug, Clone)]
pub enum Role {
    /// The policy's config schema.
    Definition {
        properties: Vec<Property>,
        required: Vec<String>,
    },
    /// The WebAssembly module implementing the definition `definition`.
    Implementation {
        definition: String,
        root_id: String,
        /// `base64://...` (or a path), where it is.
        module: String,
        module_pos: Pos,
    },
}

#[derive(Debug, Clone)]
pub struct Property {
    pub name: String,
    /// JSON-schema type: string, integer, number, boolean, array, object.
    pub ty: Option<String>,
    pub format: Option<String>,
    pub default: Option<Value>,
}

/// A binding's `policyRef` to an Extension, resolved in compile.
#[derive(Debug, Clone)]
pub struct ExtensionRef {
    pub name: String,
    pub namespace: String,
    pub name_pos: Pos,
    pub name_path: String,
    pub config: Option<Node>,
    pub config_pos: Pos,
    pub config_path: String,
}

pub fn decode(d: &mut Decoder, spec: &Node, meta: Meta) -> Option<ExtensionRes> {
    let f = d.map(spec, "spec", SPEC_FIELDS)?;
    let before = d.errors.len();
    let mut extends = Vec::new();
    if let Some(list) = d.required(&f, "extends", "spec") {
        for (item, at) in d.items(list, "spec.extends", false) {
            if let Some(g) = d.map(item, &at, EXTENDS_FIELDS) {
                if let Some(n) = d.required(&g, "name", &at) {
                    if let Some(name) = d.string(n, &join(&at, "name")) {
                        extends.push(name);
                    }
                }
            }
        }
    }
    let mut properties = Vec::new();
    let mut property_nodes = Vec::new();
    if let Some(p) = f.get("properties") {
        if let Some(p) = d.map_any(p, "spec.properties") {
            for (name, node) in p.keys() {
                let path = join("spec.properties", name);
                let Some(g) = d.map_any(node, &path) else {
                    continue;
                };
                let text = |d: &mut Decoder, key: &str| {
                    g.get(key).and_then(|n| d.string(n, &join(&path, key)))
                };
                let ty = text(d, "type");
                let format = text(d, "format");
                properties.push(Property {
                    name: name.to_string(),
                    ty,
                    format,
                    default: g.get("default").map(Node::to_json),
                });
                property_nodes.push((name.to_string(), g.get("default").cloned()));
            }
        }
    }
    let mut required = Vec::new();
    if let Some(r) = f.get("required") {
        for (item, at) in d.items(r, "spec.required", false) {
            if let Some(name) = d.string(item, &at) {
                required.push(name);
            }
        }
    }
    if d.errors.len() != before {
        return None;
    }
    let has = |n: &str| extends.iter().any(|e| e == n);
    let role = if has("extension-implementation") {
        let Some(definition) = extends.iter().find(|e| !BUILTIN.contains(&e.as_str())) else {
            d.error(
                spec.pos,
                "spec.extends",
                "an implementation extends its definition (by name) and extension-implementation",
            );
            return None;
        };
        let default_of = |name: &str| {
            property_nodes
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.clone())
        };
        let Some(module) = default_of("implementation") else {
            d.error(
                spec.pos,
                "spec.properties.implementation.default",
                "the WebAssembly module is missing (base64://... as the PDK writes it)",
            );
            return None;
        };
        let root_id = default_of("rootId")
            .and_then(|n| n.text().map(str::to_string))
            .unwrap_or_else(|| "main".to_string());
        Role::Implementation {
            definition: definition.clone(),
            root_id,
            module: module.text().unwrap_or_default().to_string(),
            module_pos: module.pos,
        }
    } else if has("extension-definition") {
        Role::Definition {
            properties,
            required,
        }
    } else {
        d.error(
            spec.pos,
            "spec.extends",
            "an Extension extends extension-definition (a policy's definition) or extension-implementation (its WebAssembly module)",
        );
        return None;
    };
    Some(ExtensionRes { meta, role })
}

fn find<'r>(exts: &[&'r ExtensionRes], namespace: &str, name: &str) -> Option<&'r ExtensionRes> {
    exts.iter()
        .find(|e| e.meta.name == name && e.meta.namespace == namespace)
        .or_else(|| {
            exts.iter()
                .find(|e| e.meta.name == name && e.meta.namespace == "default")
        })
        .copied()
}

/// Resolve the bindings (and instances' inline policies) that name an
/// Extension into `proxy-wasm` policies; errors go to `errors`.
pub fn resolve(resources: &[Resource], errors: &mut Vec<ConfigError>) -> Vec<Resource> {
    let exts: Vec<&ExtensionRes> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Extension(e) => Some(e),
            _ => None,
        })
        .collect();
    let mut out = Vec::with_capacity(resources.len());
    for r in resources {
        match r {
            Resource::Binding(b) => {
                if let Some(b) = resolve_binding(b, &exts, errors) {
                    out.push(Resource::Binding(Box::new(b)));
                }
            }
            Resource::Instance(i) => {
                let mut i = i.clone();
                i.policies = i
                    .policies
                    .iter()
                    .filter_map(|b| resolve_binding(b, &exts, errors))
                    .collect();
                out.push(Resource::Instance(i));
            }
            other => out.push(other.clone()),
        }
    }
    out
}

fn resolve_binding(
    b: &Binding,
    exts: &[&ExtensionRes],
    errors: &mut Vec<ConfigError>,
) -> Option<Binding> {
    let super::catalog::Bound::Extension(e) = &b.policy else {
        return Some(b.clone());
    };
    let mut d = Decoder::new(b.meta.file.clone());
    if find(exts, &e.namespace, &e.name).is_none() && super::catalog::is_catalog_name(&e.name) {
        // Flex's docs write included policies as `kind: Extension` too:
        // with no Extension of that name, the name is the catalog's
        let bound = super::catalog::decode(
            &mut d,
            &e.name,
            e.name_pos,
            e.config.as_ref(),
            e.config_pos,
            &e.config_path,
            &e.name_path,
        );
        errors.append(&mut d.errors);
        let mut b = b.clone();
        b.policy = bound?;
        return Some(b);
    }
    #[cfg(feature = "wasm")]
    let resolved = resolve_ref(&mut d, b, e, exts);
    #[cfg(not(feature = "wasm"))]
    let resolved: Option<PolicyConfig> = {
        let _ = exts;
        d.error(
            e.name_pos,
            &e.name_path,
            "custom policies (Extensions) need a build with the `wasm` feature",
        );
        None
    };
    errors.append(&mut d.errors);
    let mut b = b.clone();
    b.policy = super::catalog::Bound::Policy(Box::new(resolved?));
    Some(b)
}

#[cfg(feature = "wasm")]
fn resolve_ref(
    d: &mut Decoder,
    b: &Binding,
    e: &ExtensionRef,
    exts: &[&ExtensionRes],
) -> Option<PolicyConfig> {
    let Some(imp) = find(exts, &e.namespace, &e.name) else {
        let mut known: Vec<&str> = super::catalog::FLEX_NAMES.to_vec();
        known.extend(exts.iter().map(|x| x.meta.name.as_str()));
        let hint = suggest(&e.name, &known)
            .map(|s| format!(" (did you mean {s:?}?)"))
            .unwrap_or_else(|| {
                format!(
                    " (no Flex policy and no Extension of that name; supported: {})",
                    super::catalog::FLEX_NAMES.join(", ")
                )
            });
        d.error(
            e.name_pos,
            &e.name_path,
            format!("unknown policy {:?}{hint}", e.name),
        );
        return None;
    };
    let Role::Implementation {
        definition,
        root_id,
        module,
        module_pos,
    } = &imp.role
    else {
        let impls: Vec<&str> = exts
            .iter()
            .filter(|x| matches!(&x.role, Role::Implementation { definition, .. } if *definition == imp.meta.name))
            .map(|x| x.meta.name.as_str())
            .collect();
        d.error(
            e.name_pos,
            &e.name_path,
            format!(
                "{:?} is an Extension definition; bind its implementation ({})",
                e.name,
                if impls.is_empty() {
                    "none is configured".to_string()
                } else {
                    impls.join(", ")
                }
            ),
        );
        return None;
    };
    let Some(Role::Definition {
        properties,
        required,
    }) = find(exts, &imp.meta.namespace, definition).map(|x| &x.role)
    else {
        d.error(
            e.name_pos,
            &e.name_path,
            format!("the implementation {:?} extends {definition:?}, which is not a configured Extension definition", e.name),
        );
        return None;
    };
    let config = check_config(d, properties, required, e)?;
    // the module lives in the implementation's file
    let mut md = Decoder::new(imp.meta.file.clone());
    let module_node = Node {
        value: Yaml::Scalar {
            text: module.clone(),
            quoted: true,
        },
        pos: *module_pos,
    };
    let path = "spec.properties.implementation.default";
    let parsed = crate::policy::wasm::read_module(&mut md, &module_node, path)
        .and_then(|(bytes, _)| crate::policy::wasm::compile(&mut md, &module_node, path, &bytes));
    d.errors.append(&mut md.errors);
    d.files.append(&mut md.files);
    let module = parsed?;
    let inline = matches!(b.target, super::resources::Target::Inline);
    let policy = if inline {
        e.name.clone()
    } else {
        b.meta.name.clone()
    };
    let mut c = crate::policy::wasm::Config::new(module, policy.clone());
    c.root_id = root_id.clone();
    c.config = config.to_string().into_bytes();
    c.flex = Some(crate::wasm::FlexIdentity {
        policy,
        namespace: b.meta.namespace.clone(),
        api: String::new(),
    });
    crate::policy::wasm::check(d, &module_node, &e.name_path, &c)
        .then_some(PolicyConfig::ProxyWasm(c))
}

#[cfg(feature = "wasm")]
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The binding's config checked against the definition, defaults filled.
#[cfg(feature = "wasm")]
fn check_config(
    d: &mut Decoder,
    properties: &[Property],
    required: &[String],
    e: &ExtensionRef,
) -> Option<Value> {
    let before = d.errors.len();
    let mut out = Map::new();
    let given: Vec<(String, Node)> = match e.config.as_ref().map(|n| &n.value) {
        None => Vec::new(),
        Some(Yaml::Map(pairs)) => pairs
            .iter()
            .map(|(k, v)| (k.text().unwrap_or_default().to_string(), v.clone()))
            .collect(),
        Some(_) if e.config.as_ref().is_some_and(Node::is_null) => Vec::new(),
        Some(_) => {
            d.error(
                e.config_pos,
                &e.config_path,
                "expected a mapping of the policy's properties",
            );
            return None;
        }
    };
    let names: Vec<&str> = properties.iter().map(|p| p.name.as_str()).collect();
    for (key, node) in &given {
        let path = join(&e.config_path, key);
        let Some(p) = properties.iter().find(|p| p.name == *key) else {
            let hint = suggest(key, &names)
                .map(|s| format!(" (did you mean {s:?}?)"))
                .unwrap_or_else(|| format!(" (the definition has: {})", names.join(", ")));
            d.error(node.pos, &path, format!("unknown property{hint}"));
            continue;
        };
        let value = node.to_json();
        if let Some(ty) = &p.ty {
            let got = json_type(&value);
            let fits = got == ty || (ty == "number" && got == "integer");
            // a quoted number or a plain word for a string is the user's
            // intent in YAML: strings stay strings, numbers must be numbers
            let value = match (&value, ty.as_str()) {
                (Value::Number(_) | Value::Bool(_), "string") => {
                    out.insert(
                        key.clone(),
                        Value::String(node.text().unwrap_or_default().to_string()),
                    );
                    continue;
                }
                _ => value,
            };
            if !fits {
                d.error(
                    node.pos,
                    &path,
                    format!("expected {} {ty}, found {}", article(ty), node.kind()),
                );
                continue;
            }
            if p.format.as_deref() == Some("service") {
                let url = value.as_str().unwrap_or_default();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    d.error(
                        node.pos,
                        &path,
                        format!("{url:?} is not a service URL (http://host:port)"),
                    );
                    continue;
                }
            }
            out.insert(key.clone(), value);
        } else {
            out.insert(key.clone(), value);
        }
    }
    for p in properties {
        if out.contains_key(&p.name) || given.iter().any(|(k, _)| *k == p.name) {
            continue;
        }
        match &p.default {
            Some(v) => {
                out.insert(p.name.clone(), v.clone());
            }
            None if required.contains(&p.name) => {
                d.error(
                    e.config_pos,
                    &e.config_path,
                    format!("required property {:?} is missing", p.name),
                );
            }
            None => {}
        }
    }
    (d.errors.len() == before).then_some(Value::Object(out))
}

#[cfg(feature = "wasm")]
fn article(ty: &str) -> &'static str {
    match ty {
        "integer" | "array" | "object" => "an",
        _ => "a",
    }
}
