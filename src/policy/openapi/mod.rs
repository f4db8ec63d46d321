//! `openapi-validation` (Flex's `spec-validation-flex`, the same fields):
//! requests checked against an OpenAPI 3.0 or 3.1 document before they go
//! upstream.
//!
//! ```yaml
//! - openapi-validation:
//!     spec: /etc/flex-gateway/catalog.openapi.yaml   # a file (YAML or JSON), or the document inline
//!     apiBasePath: /api                # default: the first server's path
//!     blockOperation: true             # false: log what fails, let it through
//!     strictParamsValidation: false    # true: unknown query parameters fail
//!     maxBodySize: 1MB                 # a JSON body is held and checked up to this
//! ```
//!
//! Checked: the path is one of the document's and the method one of its
//! operations; path, query and header parameters are present when
//! required and of their schema's type and constraints; a JSON request
//! body (held until complete, at most `maxBodySize`) against its schema;
//! a required body is present and of a media type the operation takes.
//! A failure is 400 with the usual JSON error naming where and which rule
//! (`request body /items/1/qty: 0 is less than the minimum of 1
//! (minimum)`); a body over the bound is 413. The document is read and
//! compiled when the configuration loads: a document that does not load
//! is a validate error.

mod schema;
mod spec;

use super::{Decision, LocalResponse, Policy};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, STR};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::RequestHeader;
use schema::Breach;
use serde_json::{json, Value};
use spec::{In, Spec};
use std::sync::Arc;

pub const FIELDS: &[Field] = &[
    f(
        "spec",
        Ty::Text("a file (YAML or JSON) or the document inline"),
    )
    .req()
    .doc("The OpenAPI 3.0 or 3.1 document."),
    f("source", STR).doc("Flex's `source`: accepted (the document is `spec`)."),
    f("apiBasePath", STR)
        .doc("The path the document's paths are under (default: the first server's path)."),
    f("blockOperation", BOOL)
        .default("true")
        .doc("Refuse a failing request (false: log it and let it through)."),
    f("strictParamsValidation", BOOL)
        .default("false")
        .doc("Query parameters the operation does not declare fail."),
    f("maxBodySize", Ty::Size)
        .default("\"1MB\"")
        .doc("The largest JSON body held for checking (larger: 413)."),
];

const MAX_BODY: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the document came from (a path, or `inline`).
    pub source: String,
    pub spec: Arc<Spec>,
    pub block: bool,
    pub strict: bool,
    pub max_body: u64,
}

impl PartialEq for Config {
    fn eq(&self, o: &Config) -> bool {
        self.source == o.source
            && self.spec.doc == o.spec.doc
            && self.spec.base == o.spec.base
            && (self.block, self.strict, self.max_body) == (o.block, o.strict, o.max_body)
    }
}

/// The document's text as YAML (JSON is YAML too) → JSON.
fn parse(text: &str) -> Result<Value, String> {
    let docs = crate::config::yaml::parse_documents(text)
        .map_err(|e| format!("line {}, column {}: {}", e.pos.line, e.pos.col, e.message))?;
    match docs.as_slice() {
        [one] => Ok(one.to_json()),
        _ => Err("expected one document".into()),
    }
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let errors = d.errors.len();
    let flag = |d: &mut Decoder, key: &str, default: bool| match f.get(key) {
        Some(n) => d.bool(n, &join(path, key)),
        None => Some(default),
    };
    let block = flag(d, "blockOperation", true);
    let strict = flag(d, "strictParamsValidation", false);
    let max_body = match f.get("maxBodySize") {
        Some(n) => d.size(n, &join(path, "maxBodySize")),
        None => Some(MAX_BODY),
    };
    if let Some(n) = f.get("source") {
        d.string(n, &join(path, "source"));
    }
    let base = f
        .get("apiBasePath")
        .and_then(|n| d.string(n, &join(path, "apiBasePath")))
        .map(|b| {
            if b.starts_with('/') {
                b
            } else {
                format!("/{b}")
            }
        });
    let spec = d.required(&f, "spec", path).and_then(|n| {
        let at = join(path, "spec");
        let text = d.string(n, &at)?;
        let inline = text.contains('\n') || text.trim_start().starts_with('{');
        let (source, body) = if inline {
            ("inline".to_string(), text)
        } else {
            match std::fs::read_to_string(&text) {
                Ok(b) => (text, b),
                Err(e) => {
                    d.error(n.pos, &at, format!("cannot read {text}: {e}"));
                    return None;
                }
            }
        };
        match parse(&body).and_then(|doc| Spec::compile(doc, base.as_deref())) {
            Ok(s) => Some((source, Arc::new(s))),
            Err(e) => {
                d.error(n.pos, &at, format!("{source}: {e}"));
                None
            }
        }
    });
    if d.errors.len() > errors {
        return None;
    }
    let (source, spec) = spec?;
    Some(Config {
        source,
        spec,
        block: block?,
        strict: strict?,
        max_body: max_body?,
    })
}

pub fn describe(c: &Config) -> Value {
    json!({
        "spec": c.source,
        "apiBasePath": if c.spec.base.is_empty() { "/" } else { c.spec.base.as_str() },
        "blockOperation": c.block,
        "strictParamsValidation": c.strict,
        "maxBodySize": c.max_body,
    })
}

/// A request body being held for its check.
#[derive(Clone)]
struct Held {
    schema: Arc<Value>,
    buf: BytesMut,
    /// The body went past `maxBodySize` (not blocking: no longer copied).
    over: bool,
}

struct OpenApi {
    c: Config,
}

impl OpenApi {
    /// A failed check: refused (400) or, not blocking, logged.
    fn failed(&self, b: Breach, x: &Exchange, status: u16) -> Decision {
        let message = format!("{}: {} ({})", b.at, b.message, b.rule);
        if self.c.block {
            return Decision::Respond(LocalResponse::new(
                status,
                format!("OpenAPI validation: {message}"),
            ));
        }
        log::warn!(
            "[req: {}] [{}] OpenAPI validation (not blocking): {message}",
            x.request_id,
            x.route_id
        );
        Decision::Continue
    }

    fn check_head(&self, req: &RequestHeader, x: &mut Exchange) -> Result<(), Breach> {
        let spec = &self.c.spec;
        let (op, path_values) = spec.find(req.uri.path(), req.method.as_str())?;
        let checker = spec.checker();
        let query: Vec<(String, String)> = req
            .uri
            .query()
            .map(|q| {
                q.split('&')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        let decode = |s: &str| {
                            percent_encoding::percent_decode_str(&s.replace('+', " "))
                                .decode_utf8_lossy()
                                .into_owned()
                        };
                        (decode(k), decode(v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for p in &op.params {
            let raw: Vec<String> = match p.location {
                In::Path => path_values
                    .iter()
                    .filter(|(n, _)| *n == p.name)
                    .map(|(_, v)| v.clone())
                    .collect(),
                In::Query => query
                    .iter()
                    .filter(|(n, _)| *n == p.name)
                    .map(|(_, v)| v.clone())
                    .collect(),
                In::Header => req
                    .headers
                    .get_all(p.name.as_str())
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect(),
                In::Cookie => continue,
            };
            let at = format!(
                "{} parameter {:?}",
                match p.location {
                    In::Path => "path",
                    In::Query => "query",
                    _ => "header",
                },
                p.name
            );
            if raw.is_empty() {
                if p.required {
                    return Err(Breach {
                        at,
                        rule: "required",
                        message: "is required".into(),
                    });
                }
                continue;
            }
            let v = spec::typed(&spec.doc, &p.schema, &raw, p.explode);
            checker.check(&p.schema, &v).map_err(|mut b| {
                b.at = format!("{at}{}", b.at);
                b
            })?;
        }
        if self.c.strict {
            for (name, _) in &query {
                if !op
                    .params
                    .iter()
                    .any(|p| p.location == In::Query && p.name == *name)
                {
                    return Err(Breach {
                        at: format!("query parameter {name:?}"),
                        rule: "strictParamsValidation",
                        message: "is not a parameter of the operation".into(),
                    });
                }
            }
        }
        let Some(body) = &op.body else {
            return Ok(());
        };
        if super::common::headers_end_stream(req) {
            return match body.required {
                true => Err(Breach {
                    at: "request body".into(),
                    rule: "required",
                    message: "is required".into(),
                }),
                false => Ok(()),
            };
        }
        let media = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let accepted = body.types.is_empty()
            || body.types.iter().any(|t| {
                let t = t.to_ascii_lowercase();
                t == media
                    || t == "*/*"
                    || t.strip_suffix("/*")
                        .is_some_and(|major| media.split('/').next() == Some(major))
            });
        if !accepted {
            return Err(Breach {
                at: "request body".into(),
                rule: "content-type",
                message: format!(
                    "{:?} is not a media type of the operation ({})",
                    media,
                    body.types.join(", ")
                ),
            });
        }
        let json = media == "application/json" || media.ends_with("+json");
        if let (true, Some(schema)) = (json, &body.json) {
            x.ext.insert(Held {
                schema: schema.clone(),
                buf: BytesMut::new(),
                over: false,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Policy for OpenApi {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        match self.check_head(req, x) {
            Ok(()) => Decision::Continue,
            Err(b) => self.failed(b, x, 400),
        }
    }

    fn body_hooks(&self) -> (bool, bool) {
        (true, false)
    }

    fn on_request_body(
        &self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        x: &mut Exchange,
    ) -> pingora::Result<Decision> {
        let Some(held) = x.ext.get_mut::<Held>() else {
            return Ok(Decision::Continue);
        };
        if let Some(chunk) = body.as_ref() {
            if held.over || held.buf.len() as u64 + chunk.len() as u64 > self.c.max_body {
                if !held.over {
                    held.over = true;
                    held.buf = BytesMut::new();
                    let b = Breach {
                        at: "request body".into(),
                        rule: "maxBodySize",
                        message: format!(
                            "is over {} bytes, the most that is checked",
                            self.c.max_body
                        ),
                    };
                    return Ok(self.failed(b, x, 413));
                }
                return Ok(Decision::Continue);
            }
            held.buf.extend_from_slice(chunk);
            if self.c.block {
                // held back until the whole body is checked
                *body = None;
            }
        }
        if !end_of_stream {
            return Ok(Decision::Continue);
        }
        let Some(held) = x.ext.remove::<Held>() else {
            return Ok(Decision::Continue);
        };
        if held.over {
            return Ok(Decision::Continue);
        }
        let whole = held.buf.freeze();
        let result = match serde_json::from_slice::<Value>(&whole) {
            Ok(v) => self
                .c
                .spec
                .checker()
                .check(&held.schema, &v)
                .map_err(|mut b| {
                    b.at = format!("request body {}", if b.at.is_empty() { "/" } else { &b.at });
                    b
                }),
            Err(e) => Err(Breach {
                at: "request body".into(),
                rule: "json",
                message: format!("is not JSON: {e}"),
            }),
        };
        match result {
            Ok(()) => {
                if self.c.block {
                    *body = Some(whole);
                }
                Ok(Decision::Continue)
            }
            Err(b) => {
                let d = self.failed(b, x, 400);
                if matches!(d, Decision::Continue) && self.c.block {
                    *body = Some(whole);
                }
                Ok(d)
            }
        }
    }
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    Arc::new(OpenApi { c: c.clone() })
}
