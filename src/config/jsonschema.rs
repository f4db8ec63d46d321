//! `flex-gateway schema`: a JSON Schema (draft 2020-12) of every document
//! the gateway reads — `kind: Gateway` and Flex's ApiInstance, Service,
//! PolicyBinding, Configuration and Extension — made from the field tables
//! the decoder reads with (`fields.rs`), so editor completion and
//! `validate` know the same fields, types, enums and defaults.
//!
//! The schema checks what a field table says: names, types, ranges,
//! enums, required fields. `validate` checks more (files exist, references
//! resolve, certificates match their keys, rules across documents); a
//! document the schema refuses, `validate` refuses too.

use super::fields::{Field, Ty};
use serde_json::{json, Map, Value};

/// The schema, as printed by `flex-gateway schema`.
pub fn schema() -> Value {
    let mut defs = Map::new();
    for (name, fields) in crate::policy::FIELDS {
        defs.insert(format!("policy:{name}"), object(fields));
    }
    for (name, fields) in super::flex::catalog::FIELDS {
        defs.insert(format!("flex:{name}"), object(fields));
    }
    defs.insert("policies".into(), policy_list());
    defs.insert("bindingConfig".into(), binding_config());
    defs.insert("Gateway".into(), object(super::schema::DOC_FIELDS));
    let mut kinds = vec![Value::from("Gateway")];
    let mut branches = vec![branch("Gateway")];
    for (kind, spec) in super::flex::resources::KIND_SPECS {
        let mut doc = object(super::flex::resources::FLEX_DOC_FIELDS);
        doc["properties"]["kind"] = json!({ "const": kind });
        doc["properties"]["spec"] = ty(spec);
        defs.insert((*kind).into(), doc);
        kinds.push(Value::from(*kind));
        branches.push(branch(kind));
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "flex-gateway configuration",
        "description": format!(
            "A document of a flex-gateway configuration (flex-gateway {}): kind Gateway, or a Flex Gateway Local Mode resource. Made by `flex-gateway schema`.",
            env!("CARGO_PKG_VERSION")
        ),
        "type": "object",
        "required": ["kind"],
        "properties": { "kind": { "enum": kinds } },
        "allOf": branches,
        "$defs": defs,
    })
}

/// The document's kind picks its definition.
fn branch(kind: &str) -> Value {
    json!({
        "if": { "properties": { "kind": { "const": kind } }, "required": ["kind"] },
        "then": { "$ref": format!("#/$defs/{kind}") },
    })
}

/// `- <policy name>: {config}` with an optional `order`: exactly one policy
/// per item.
fn policy_list() -> Value {
    let mut properties = Map::new();
    let mut one_of = Vec::new();
    for (name, _) in crate::policy::FIELDS {
        properties.insert(
            (*name).into(),
            json!({ "$ref": format!("#/$defs/policy:{name}") }),
        );
        one_of.push(json!({ "required": [name] }));
    }
    properties.insert(
        "order".into(),
        json!({
            "type": "integer", "minimum": -10_000, "maximum": 10_000, "default": crate::policy::DEFAULT_ORDER,
            "description": "Lower runs first on the request.",
        }),
    );
    json!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
            "oneOf": one_of,
        },
    })
}

/// A mapping with these fields only.
fn object(fields: &[Field]) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for f in fields {
        properties.insert(f.name.into(), field(f));
        if f.required {
            required.push(Value::from(f.name));
        }
    }
    let mut out = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        out["required"] = Value::Array(required);
    }
    out
}

fn field(f: &Field) -> Value {
    let mut out = ty(&f.ty);
    let what = match f.ty {
        Ty::Text(what) | Ty::Name(what) | Ty::Url(what) => what,
        Ty::List(Ty::Text(what) | Ty::Name(what) | Ty::Url(what), _) => what,
        _ => "",
    };
    let description = match (f.doc, what) {
        ("", "") => None,
        (doc, "") => Some(doc.to_string()),
        ("", what) => Some(capitalised(what)),
        (doc, what) => Some(format!("{doc} ({what})")),
    };
    if let (Some(d), Value::Object(m)) = (description, &mut out) {
        m.insert("description".into(), Value::from(d));
    }
    if let (Some(default), Value::Object(m)) = (f.default, &mut out) {
        let v: Value = serde_json::from_str(default)
            .unwrap_or_else(|e| panic!("default of {}: {default}: {e}", f.name));
        m.insert("default".into(), v);
    }
    out
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `30s`, `1500ms`, `2m`, `1h`, `1m30s` (`decode::parse_duration`).
const DURATION: &str = "^([0-9]+(ms|s|m|h))+$";
/// `1048576`, `512KB`, `10 MB`, `1GiB` (`decode::parse_size`).
const SIZE: &str = "^\\s*[0-9]+\\s*([KkMmGg]([Ii]?[Bb])?|[Bb])?\\s*$";

fn ty(t: &Ty) -> Value {
    match *t {
        Ty::Any => json!({}),
        // YAML's unquoted numbers and booleans are read as their text
        Ty::Str | Ty::Name(_) => json!({ "type": ["string", "number", "boolean"], "minLength": 1 }),
        // parsed further: no number or boolean is one
        Ty::Text(_) => json!({ "type": "string", "minLength": 1 }),
        Ty::Url(_) => json!({ "type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://." }),
        Ty::Scalar => json!({ "type": ["string", "number", "boolean"] }),
        Ty::Int(min, max) => {
            let mut v = json!({ "type": "integer", "minimum": min });
            if max != i64::MAX {
                v["maximum"] = json!(max);
            }
            v
        }
        Ty::Number(min, max) => json!({ "type": "number", "minimum": min, "maximum": max }),
        Ty::Bool => json!({ "type": "boolean" }),
        Ty::Duration(bare) => {
            let text = json!({ "type": "string", "pattern": DURATION });
            if bare {
                json!({ "anyOf": [text, { "type": "integer", "minimum": 0 }] })
            } else {
                text
            }
        }
        Ty::Size => json!({
            "anyOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": SIZE },
            ],
        }),
        Ty::Enum(values) => json!({ "enum": values }),
        Ty::AnyCase(values) => json!({
            "anyOf": [
                { "enum": values },
                { "type": "string", "pattern": any_case(values) },
            ],
        }),
        Ty::List(item, single) => {
            let list = json!({ "type": "array", "items": ty(item) });
            if single {
                json!({ "anyOf": [list, ty(item)] })
            } else {
                list
            }
        }
        Ty::Obj(fields) => object(fields),
        Ty::Dict(value) => json!({ "type": "object", "additionalProperties": ty(value) }),
        Ty::AnyCaseKeys(fields) => {
            let props: serde_json::Map<String, Value> = fields
                .iter()
                .map(|f| (any_case(&[f.name]), ty(&f.ty)))
                .collect();
            json!({ "type": "object", "patternProperties": props, "additionalProperties": false })
        }
        Ty::Either(forms) => json!({ "anyOf": forms.iter().map(ty).collect::<Vec<_>>() }),
        Ty::Policies => json!({ "$ref": "#/$defs/policies" }),
        Ty::Binding(fields) => binding(fields),
    }
}

/// A Flex binding: its `config` is the named policy's.
fn binding(fields: &[Field]) -> Value {
    let mut out = object(fields);
    out["allOf"] = json!([{ "$ref": "#/$defs/bindingConfig" }]);
    out
}

/// A binding's `config` by its `policyRef.name` (a catalog name, or ours;
/// an Extension's config is checked by `validate` against its definition).
fn binding_config() -> Value {
    let flex = super::flex::catalog::FIELDS
        .iter()
        .map(|(name, fields)| (*name, format!("flex:{name}"), *fields));
    let ours = crate::policy::FIELDS
        .iter()
        .map(|(name, fields)| (*name, format!("policy:{name}"), *fields));
    let branches: Vec<Value> = flex
        .chain(ours)
        .map(|(name, def, fields)| {
            let mut then = json!({ "properties": { "config": { "$ref": format!("#/$defs/{def}") } } });
            // a policy with required fields needs its config
            if fields.iter().any(|f| f.required) {
                then["required"] = json!(["config"]);
            }
            json!({
                "if": {
                    "properties": { "policyRef": {
                        "properties": { "name": { "const": name } },
                        "required": ["name"],
                        "not": { "properties": { "kind": { "const": "Extension" } }, "required": ["kind"] },
                    } },
                    "required": ["policyRef"],
                },
                "then": then,
            })
        })
        .collect();
    json!({ "allOf": branches })
}

/// A pattern matching any of `values` in any letter case (JSON Schema's
/// regular expressions have no case-insensitive flag).
fn any_case(values: &[&str]) -> String {
    let alternatives: Vec<String> = values
        .iter()
        .map(|v| {
            v.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                    } else if "^$\\.*+?()[]{}|/".contains(c) {
                        format!("\\{c}")
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        })
        .collect();
    format!("^({})$", alternatives.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_case_patterns() {
        assert_eq!(any_case(&["http", "h2"]), "^([Hh][Tt][Tt][Pp]|[Hh]2)$");
        assert_eq!(any_case(&["a-b", "x.y"]), "^([Aa]-[Bb]|[Xx]\\.[Yy])$");
    }

    #[test]
    fn every_policy_and_kind_is_defined() {
        let s = schema();
        let defs = s["$defs"].as_object().unwrap();
        for name in crate::policy::NAMES {
            assert!(defs.contains_key(&format!("policy:{name}")), "{name}");
        }
        for kind in super::super::flex::KINDS {
            assert!(defs.contains_key(*kind), "{kind}");
        }
        // every default is valid JSON (field() panics otherwise) and the
        // listener's port is typed
        let port = &defs["Gateway"]["properties"]["spec"]["properties"]["listeners"]["items"]
            ["properties"]["port"];
        assert_eq!(port["type"], "integer");
        assert_eq!(port["maximum"], 65535);
    }
}
