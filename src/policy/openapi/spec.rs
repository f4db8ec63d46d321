//! An OpenAPI 3.0 / 3.1 document compiled for checking requests: its paths
//! as segment matchers (literal paths before templated ones, as OpenAPI
//! says), each operation's parameters (path-level ones merged with the
//! operation's) and request body, and the document's patterns compiled.

use super::schema::{resolve, Breach, Checker, Patterns};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    /// `{name}`, or a template inside a segment (`{id}.json`): the text
    /// before and after it.
    Param {
        name: String,
        prefix: String,
        suffix: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
    Header,
    Cookie,
}

#[derive(Debug)]
pub struct Param {
    pub name: String,
    pub location: In,
    pub required: bool,
    pub schema: Value,
    /// Query arrays: repeated (`a=1&a=2`, the default) or comma-joined.
    pub explode: bool,
}

#[derive(Debug)]
pub struct Body {
    pub required: bool,
    /// The media types the operation takes (`application/json`, `*/*`).
    pub types: Vec<String>,
    /// The JSON body's schema, when a JSON media type is given one
    /// (shared: a request holding a body keeps a reference).
    pub json: Option<std::sync::Arc<Value>>,
}

#[derive(Debug)]
pub struct Operation {
    pub params: Vec<Param>,
    pub body: Option<Body>,
}

#[derive(Debug)]
struct PathItem {
    template: String,
    segs: Vec<Seg>,
    /// Upper-case method, operation.
    ops: Vec<(String, Operation)>,
}

/// The path parameters' values, by name, percent-decoded.
pub type PathValues = Vec<(String, String)>;

#[derive(Debug)]
pub struct Spec {
    pub doc: Value,
    pub patterns: Patterns,
    /// `apiBasePath` without its trailing `/` (empty for `/`).
    pub base: String,
    paths: Vec<PathItem>,
}

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A `$ref`'s target, or the value itself.
fn deref<'d>(doc: &'d Value, v: &'d Value) -> &'d Value {
    let mut v = v;
    for _ in 0..16 {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => match resolve(doc, r) {
                Some(t) => v = t,
                None => return v,
            },
            None => return v,
        }
    }
    v
}

fn segments(template: &str) -> Result<Vec<Seg>, String> {
    template
        .trim_start_matches('/')
        .split('/')
        .map(|s| match (s.find('{'), s.find('}')) {
            (None, None) => Ok(Seg::Lit(s.to_string())),
            (Some(a), Some(b)) if a < b && s[b + 1..].find(['{', '}']).is_none() => {
                Ok(Seg::Param {
                    name: s[a + 1..b].to_string(),
                    prefix: s[..a].to_string(),
                    suffix: s[b + 1..].to_string(),
                })
            }
            _ => Err(format!(
                "path {template:?}: one template per segment is supported"
            )),
        })
        .collect()
}

fn params(doc: &Value, list: Option<&Value>, at: &str) -> Result<Vec<Param>, String> {
    let mut out = Vec::new();
    for (i, p) in list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = deref(doc, p);
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}/parameters/{i}: no name"))?;
        let location = match p.get("in").and_then(Value::as_str) {
            Some("path") => In::Path,
            Some("query") => In::Query,
            Some("header") => In::Header,
            Some("cookie") => In::Cookie,
            other => return Err(format!("{at}/parameters/{i}: `in` is {other:?}")),
        };
        let schema = p
            .get("schema")
            .cloned()
            .or_else(|| {
                // `content: {media: {schema}}`: the value is that media type
                p.get("content")?
                    .as_object()?
                    .values()
                    .next()?
                    .get("schema")
                    .cloned()
            })
            .unwrap_or(Value::Bool(true));
        let style_form = p
            .get("style")
            .and_then(Value::as_str)
            .is_none_or(|s| s == "form");
        out.push(Param {
            name: if location == In::Header {
                name.to_ascii_lowercase()
            } else {
                name.to_string()
            },
            location,
            required: location == In::Path || p.get("required") == Some(&Value::Bool(true)),
            schema,
            explode: p
                .get("explode")
                .and_then(Value::as_bool)
                .unwrap_or(style_form),
        });
    }
    Ok(out)
}

fn json_type(media: &str) -> bool {
    let m = media
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    m == "application/json" || m.ends_with("+json")
}

impl Spec {
    /// Compile a parsed document; `base`: `apiBasePath` if given.
    pub fn compile(doc: Value, base: Option<&str>) -> Result<Spec, String> {
        let version = doc
            .get("openapi")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !version.starts_with("3.0") && !version.starts_with("3.1") {
            return Err(match doc.get("swagger") {
                Some(_) => "a Swagger 2.0 document: OpenAPI 3.0 or 3.1 is supported (convert it, e.g. with swagger2openapi)".into(),
                None => format!("`openapi: {version}`: OpenAPI 3.0 or 3.1 is supported"),
            });
        }
        let patterns = Patterns::compile(&doc)?;
        let base = match base {
            Some(b) => b.to_string(),
            // the first server's path (`https://api.example.com/v1` → /v1)
            None => doc
                .pointer("/servers/0/url")
                .and_then(Value::as_str)
                .map(|u| match u.split_once("://") {
                    Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]).to_string(),
                    None => u.to_string(),
                })
                .unwrap_or_default(),
        };
        let base = base.trim_end_matches('/').to_string();
        let mut paths = Vec::new();
        for (template, item) in doc
            .get("paths")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let at = format!("#/paths/{}", template.replace('~', "~0").replace('/', "~1"));
            let item = deref(&doc, item);
            let shared = params(&doc, item.get("parameters"), &at)?;
            let mut ops = Vec::new();
            for m in METHODS {
                let Some(op) = item.get(*m) else { continue };
                let op_at = format!("{at}/{m}");
                let mut list = params(&doc, op.get("parameters"), &op_at)?;
                for p in &shared {
                    if !list
                        .iter()
                        .any(|q| q.name == p.name && q.location == p.location)
                    {
                        list.push(Param {
                            name: p.name.clone(),
                            location: p.location,
                            required: p.required,
                            schema: p.schema.clone(),
                            explode: p.explode,
                        });
                    }
                }
                let body = op.get("requestBody").map(|b| {
                    let b = deref(&doc, b);
                    let content = b.get("content").and_then(Value::as_object);
                    Body {
                        required: b.get("required") == Some(&Value::Bool(true)),
                        types: content
                            .map(|c| c.keys().cloned().collect())
                            .unwrap_or_default(),
                        json: content.and_then(|c| {
                            c.iter()
                                .find(|(k, _)| json_type(k))
                                .and_then(|(_, m)| m.get("schema").cloned())
                                .map(std::sync::Arc::new)
                        }),
                    }
                });
                ops.push((m.to_ascii_uppercase(), Operation { params: list, body }));
            }
            paths.push(PathItem {
                template: template.clone(),
                segs: segments(template)?,
                ops,
            });
        }
        // literal segments first, then templated, left to right
        paths.sort_by_key(|p| {
            p.segs
                .iter()
                .map(|s| matches!(s, Seg::Param { .. }))
                .collect::<Vec<_>>()
        });
        Ok(Spec {
            doc,
            patterns,
            base,
            paths,
        })
    }

    pub fn checker(&self) -> Checker<'_> {
        Checker {
            doc: &self.doc,
            patterns: &self.patterns,
        }
    }

    /// The operation for a path (as the client sent it) and method, with
    /// the path parameters' raw values; or why there is none.
    pub fn find(&self, path: &str, method: &str) -> Result<(&Operation, PathValues), Breach> {
        let fail = |rule: &'static str, message: String| Breach {
            at: "path".into(),
            rule,
            message,
        };
        let rest = path
            .strip_prefix(self.base.as_str())
            .filter(|r| r.is_empty() || r.starts_with('/'))
            .ok_or_else(|| {
                fail(
                    "path",
                    format!("{path} is outside the API's base path {}", self.base),
                )
            })?;
        let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        for item in &self.paths {
            if item.segs.len() != parts.len() {
                continue;
            }
            let mut values = Vec::new();
            let matched = item.segs.iter().zip(&parts).all(|(seg, part)| match seg {
                Seg::Lit(l) => l == part,
                Seg::Param {
                    name,
                    prefix,
                    suffix,
                } => {
                    match part
                        .strip_prefix(prefix.as_str())
                        .and_then(|p| p.strip_suffix(suffix.as_str()))
                    {
                        Some(v) if !v.is_empty() => {
                            let v = percent_encoding::percent_decode_str(v)
                                .decode_utf8_lossy()
                                .into_owned();
                            values.push((name.clone(), v));
                            true
                        }
                        _ => false,
                    }
                }
            });
            if !matched {
                continue;
            }
            return match item.ops.iter().find(|(m, _)| m == method) {
                Some((_, op)) => Ok((op, values)),
                None => Err(Breach {
                    at: "method".into(),
                    rule: "method",
                    message: format!(
                        "{method} is not an operation of {} (it has {})",
                        item.template,
                        item.ops
                            .iter()
                            .map(|(m, _)| m.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            };
        }
        Err(fail(
            "path",
            format!("{path} matches no path of the specification"),
        ))
    }
}

/// A parameter's text as the value its schema describes (`"7"` → 7 for an
/// integer); text that is not one stays text, for the schema to refuse.
pub fn typed(doc: &Value, schema: &Value, raw: &[String], explode: bool) -> Value {
    let s = deref(doc, schema);
    let scalar = |s: &Value, t: &str| -> Value {
        let ty = s.get("type").and_then(|t| match t {
            Value::String(x) => Some(x.as_str()),
            Value::Array(xs) => xs.iter().filter_map(Value::as_str).find(|x| *x != "null"),
            _ => None,
        });
        match ty {
            Some("integer") => t
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(t.into())),
            Some("number") => t
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| Value::String(t.into()), Value::Number),
            Some("boolean") => match t {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(t.into()),
            },
            _ => Value::String(t.into()),
        }
    };
    if s.get("type").and_then(Value::as_str) == Some("array") {
        let items = s.get("items").map_or(&Value::Bool(true), |i| deref(doc, i));
        let parts: Vec<&str> = if explode && raw.len() > 1 {
            raw.iter().map(String::as_str).collect()
        } else {
            raw.iter().flat_map(|r| r.split(',')).collect()
        };
        return Value::Array(parts.into_iter().map(|p| scalar(items, p)).collect());
    }
    scalar(s, raw.first().map_or("", String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Spec {
        Spec::compile(
            json!({
                "openapi": "3.1.0",
                "servers": [{"url": "https://shop.example.com/api"}],
                "paths": {
                    "/products/{id}": {"parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
                                       "get": {}, "put": {"requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}}}},
                    "/products/featured": {"get": {}},
                    "/files/{name}.json": {"get": {}}
                }
            }),
            None,
        )
        .unwrap()
    }

    #[test]
    fn paths_methods_and_the_base() {
        let s = spec();
        assert_eq!(s.base, "/api");
        let (_, v) = s.find("/api/products/7", "GET").unwrap();
        assert_eq!(v, [("id".to_string(), "7".to_string())]);
        let (op, v) = s.find("/api/products/featured", "GET").unwrap();
        assert!(
            v.is_empty() && op.params.is_empty(),
            "the literal path wins"
        );
        assert_eq!(
            s.find("/api/files/a%20b.json", "GET").unwrap().1[0].1,
            "a b"
        );
        assert_eq!(
            s.find("/api/products/7", "DELETE").unwrap_err().rule,
            "method"
        );
        assert_eq!(s.find("/api/orders", "GET").unwrap_err().rule, "path");
        assert_eq!(s.find("/apix/products/7", "GET").unwrap_err().rule, "path");
        assert!(
            s.find("/api/products/7", "PUT")
                .unwrap()
                .0
                .body
                .as_ref()
                .unwrap()
                .required
        );
    }

    #[test]
    fn parameters_are_typed_before_they_are_checked() {
        let doc = json!({});
        let t = |schema: Value, raw: &[&str], explode: bool| {
            typed(
                &doc,
                &schema,
                &raw.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                explode,
            )
        };
        assert_eq!(t(json!({"type": "integer"}), &["7"], true), json!(7));
        assert_eq!(t(json!({"type": "integer"}), &["7x"], true), json!("7x"));
        assert_eq!(t(json!({"type": "boolean"}), &["true"], true), json!(true));
        assert_eq!(
            t(
                json!({"type": "array", "items": {"type": "integer"}}),
                &["1", "2"],
                true
            ),
            json!([1, 2])
        );
        assert_eq!(
            t(
                json!({"type": "array", "items": {"type": "integer"}}),
                &["1,2"],
                false
            ),
            json!([1, 2])
        );
    }

    #[test]
    fn what_is_not_openapi_3_is_refused() {
        assert!(Spec::compile(json!({"swagger": "2.0"}), None)
            .unwrap_err()
            .contains("Swagger 2.0"));
        assert!(Spec::compile(
            json!({"openapi": "3.0.3", "paths": {"/a/{x}{y}": {}}}),
            None
        )
        .is_err());
    }
}
