//! `header-injection` and `header-removal`: add, replace or remove request
//! headers (going upstream) and response headers (going to the client).
//!
//! ```yaml
//! - header-injection:
//!     request:                                  # to the upstream
//!       - {name: X-Client-Ip, value: "{client_ip}"}
//!       - {name: X-Tenant, value: "{claim.tenant}"}
//!       - {name: X-Via, value: flex-gateway, mode: add}   # set (default) replaces; add appends
//!     response:                                 # to the client
//!       - {name: Strict-Transport-Security, value: "max-age=63072000"}
//! - header-removal:
//!     request: [X-Debug, "X-Internal-*"]        # exact names or * patterns
//!     response: [Server, "X-Powered-*"]
//! ```
//!
//! Values are templates compiled at load: `{client_ip}`, `{request_id}`,
//! `{route_id}`, `{consumer}`, `{claim.NAME}` (a verified JWT claim),
//! `{header.NAME}` (a request header), and Flex expressions `#[...]`
//! (`policy/expr.rs`); `{{` and `}}` are literal braces. A
//! header whose variables are not all known for a request (no consumer, no
//! such claim), or whose value comes out empty, is left out for that
//! request, never sent half-filled — and never as the client's copy: the
//! client's headers of that name are removed before the chain runs.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1: Connection, Keep-Alive,
//! Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade) and the framing
//! header Content-Length keep the gateway's treatment: naming them for
//! injection is a validation error, and removal patterns skip them.

use super::common;
use super::{Decision, Policy};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use serde_json::{json, Value};
use std::sync::Arc;

/// Headers whose meaning is the connection's or the message framing's.
pub const PROTECTED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

const VARIABLES: &str =
    "{client_ip}, {request_id}, {route_id}, {consumer}, {claim.NAME}, {header.NAME}, or a Flex expression #[...]";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    ClientIp,
    RequestId,
    RouteId,
    Consumer,
    Claim(String),
    Header(HeaderName),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
    /// A Flex expression, `#[...]`.
    Expr(Arc<super::expr::Expr>),
}

/// The request as templates read it: on the way upstream the request
/// itself, on the way back what the request hook kept.
#[derive(Clone, Copy, Default)]
pub struct Req<'a> {
    pub method: Option<&'a str>,
    pub query: Option<&'a str>,
    pub headers: Option<&'a http::HeaderMap>,
}

/// A header value with variables, compiled once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
    /// Without variables: the value, made once (its clones share it).
    fixed: Option<HeaderValue>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => return Err("a lone `}` (write `}}` for a literal brace)".into()),
                '#' if chars.peek().map(|(_, c)| *c) == Some('[') => {
                    let body = &text[i + 2..];
                    let end = super::expr::closing(body)
                        .ok_or_else(|| format!("unclosed `#[` in {text:?}"))?;
                    let e = super::expr::Expr::parse(&body[..end])?;
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Expr(Arc::new(e)));
                    // skip `[`, the expression and `]`
                    for _ in 0..body[..=end].chars().count() + 1 {
                        chars.next();
                    }
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err("unclosed `{` (write `{{` for a literal brace)".into());
                    };
                    let name = &rest[..end];
                    let var = match name {
                        "client_ip" => Var::ClientIp,
                        "request_id" => Var::RequestId,
                        "route_id" => Var::RouteId,
                        "consumer" => Var::Consumer,
                        _ => match name.split_once('.') {
                            Some(("claim", c)) if !c.is_empty() => Var::Claim(c.to_string()),
                            Some(("header", h)) => match HeaderName::from_bytes(h.as_bytes()) {
                                Ok(h) => Var::Header(h),
                                Err(_) => return Err(format!("{h:?} is not a header name")),
                            },
                            _ => {
                                return Err(format!(
                                    "unknown variable `{{{name}}}` (known: {VARIABLES})"
                                ))
                            }
                        },
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(var));
                    for _ in 0..end + 1 {
                        chars.next();
                    }
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        // a value without variables must be a valid header value now
        let mut fixed = None;
        if parts.iter().all(|p| matches!(p, Part::Text(_))) {
            let whole: String = parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => t.as_str(),
                    Part::Var(_) | Part::Expr(_) => "",
                })
                .collect();
            HeaderValue::from_str(&whole).map_err(|_| {
                format!("{whole:?} is not a valid header value (no control characters)")
            })?;
            fixed = super::common::shared_value(whole);
        }
        Ok(Template {
            source: text.to_string(),
            parts,
            fixed,
        })
    }

    /// No variables or expressions: the same value for every request.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The value for this request; `None` when a variable is unknown here.
    pub fn render(&self, req: Req<'_>, x: &Exchange) -> Option<HeaderValue> {
        use std::fmt::Write;
        let headers = req.headers;
        if let Some(v) = &self.fixed {
            return Some(v.clone());
        }
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(Var::ClientIp) => {
                    let _ = write!(out, "{}", x.client_ip?);
                }
                Part::Var(Var::RequestId) => out.push_str(&x.request_id),
                Part::Var(Var::RouteId) => out.push_str(&x.route_id),
                Part::Var(Var::Consumer) => out.push_str(x.consumer.as_deref()?),
                Part::Var(Var::Claim(c)) => match x.claims.as_ref()?.get(c)? {
                    Value::String(s) => out.push_str(s),
                    Value::Array(items) => {
                        let joined: Vec<String> = items
                            .iter()
                            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                            .collect();
                        out.push_str(&joined.join(","));
                    }
                    Value::Null => return None,
                    other => out.push_str(&other.to_string()),
                },
                Part::Var(Var::Header(h)) => out.push_str(headers?.get(h)?.to_str().ok()?),
                Part::Expr(e) => {
                    let input = super::expr::Input {
                        method: req.method,
                        query: req.query,
                        headers: req.headers,
                        x,
                        status: None,
                        payload: None,
                    };
                    out.push_str(&e.eval(&input).text());
                }
            }
        }
        // nothing to say (an expression that yields nothing): left out, as
        // is a value that became invalid (a claim with a newline)
        if out.trim().is_empty() {
            return None;
        }
        // what `HeaderValue::from_str` accepts (visible ASCII, spaces and
        // tabs), without copying the text
        let valid = out.bytes().all(|b| b == b'\t' || (32..127).contains(&b));
        valid
            .then(|| HeaderValue::from_maybe_shared(bytes::Bytes::from(out.into_bytes())).ok())
            .flatten()
    }
}

fn name(d: &mut Decoder, node: &Node, path: &str) -> Option<HeaderName> {
    let h = common::header_name(d, node, path)?;
    if PROTECTED.contains(&h.as_str()) {
        d.error(
            node.pos,
            path,
            format!(
                "{h} is a hop-by-hop or framing header: the gateway manages it (RFC 9110 §7.6.1)"
            ),
        );
        return None;
    }
    Some(h)
}

/// A header name pattern: exact, or with `*` wildcards (case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }
}

/// `*` matches any run of characters; both sides are lower-case; `-` and
/// `_` match each other (`X-User` and `X_User` are one name to CGI-style
/// backends).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let same = |a: u8, b: u8| a == b || (matches!(a, b'-' | b'_') && matches!(b, b'-' | b'_'));
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if pi < p.len() && same(p[pi], s[si]) {
            pi += 1;
            si += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// `{request: [...], response: [...]}`: each side decoded by `side`; at
/// least one must say something.
fn decode_sides<T>(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    nothing: &str,
    sides: &[Field],
    side: fn(&mut Decoder, &Node, &str) -> Vec<T>,
) -> Option<(Vec<T>, Vec<T>)> {
    let f = d.map(node, path, sides)?;
    let before = d.errors.len();
    let mut one = |key: &str| match f.get(key) {
        Some(n) => side(d, n, &join(path, key)),
        None => Vec::new(),
    };
    let (request, response) = (one("request"), one("response"));
    if request.is_empty() && response.is_empty() && d.errors.len() == before {
        d.error(f.pos, path, nothing);
    }
    (d.errors.len() == before).then_some((request, response))
}

pub mod inject {
    use super::*;

    const ITEM_FIELDS: &[Field] = &[
        f("name", Ty::Name("a header name")).req(),
        f("value", Ty::Scalar)
            .req()
            .doc("The value; may hold Flex expressions #[...]."),
        f("mode", Ty::Enum(&["set", "add"]))
            .default("\"set\"")
            .doc("Replace (set) or append (add)."),
    ];
    const ITEMS: Ty = Ty::List(&Ty::Obj(ITEM_FIELDS), false);
    pub const FIELDS: &[Field] = &[
        f("request", ITEMS).doc("Headers set on the request going upstream."),
        f("response", ITEMS).doc("Headers set on the response to the client."),
    ];

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Injection {
        pub name: HeaderName,
        pub value: Template,
        /// `false`: replace (set); `true`: append (add).
        pub append: bool,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Config {
        pub request: Vec<Injection>,
        pub response: Vec<Injection>,
    }

    fn decode_list(d: &mut Decoder, node: &Node, path: &str) -> Vec<Injection> {
        let mut out = Vec::new();
        for (item, at) in d.items(node, path, false) {
            let Some(f) = d.map(item, &at, ITEM_FIELDS) else {
                continue;
            };
            let h = d
                .required(&f, "name", &at)
                .and_then(|n| name(d, n, &join(&at, "name")));
            let value = d.required(&f, "value", &at).and_then(|n| {
                let field = join(&at, "value");
                let text = d.scalar(n, &field, "a header value")?;
                match Template::parse(text) {
                    Ok(t) => Some(t),
                    Err(why) => {
                        d.error(n.pos, &field, why);
                        None
                    }
                }
            });
            let append = match f.get("mode") {
                None => Some(false),
                Some(m) => {
                    let field = join(&at, "mode");
                    match d.scalar(m, &field, "set or add") {
                        Some("set") => Some(false),
                        Some("add") => Some(true),
                        Some(other) => {
                            d.error(m.pos, &field, format!("{other:?}: expected set or add"));
                            None
                        }
                        None => None,
                    }
                }
            };
            if let (Some(name), Some(value), Some(append)) = (h, value, append) {
                out.push(Injection {
                    name,
                    value,
                    append,
                });
            }
        }
        out
    }

    pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
        let nothing = "nothing to inject: give `request` and/or `response` headers";
        let (request, response) = decode_sides(d, node, path, nothing, FIELDS, decode_list)?;
        Some(Config { request, response })
    }

    pub fn describe(c: &Config) -> Value {
        let list = |l: &[Injection]| {
            l.iter()
                .map(|i| json!({"name": i.name.as_str(), "value": i.value.source, "mode": if i.append { "add" } else { "set" }}))
                .collect::<Vec<_>>()
        };
        json!({"request": list(&c.request), "response": list(&c.response)})
    }

    pub fn build(c: &Config) -> Arc<dyn Policy> {
        Arc::new(Inject(c.clone()))
    }

    pub struct Inject(Config);

    /// The request the response-side templates read (`{header.X}`,
    /// expressions).
    #[derive(Clone)]
    struct RequestSeen {
        method: String,
        query: Option<String>,
        headers: http::HeaderMap,
    }

    #[async_trait]
    impl Policy for Inject {
        fn asserted_headers(&self) -> Vec<HeaderName> {
            // a computed value is the gateway's word: never the client's
            // copy, also when the value cannot be computed for a request
            let dynamic = self.0.request.iter().filter(|i| !i.value.is_static());
            dynamic.map(|i| i.name.clone()).collect()
        }

        async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> Decision {
            let reads_request = self.0.response.iter().any(|i| {
                i.value
                    .parts
                    .iter()
                    .any(|p| matches!(p, Part::Var(Var::Header(_)) | Part::Expr(_)))
            });
            if reads_request {
                x.ext.insert(RequestSeen {
                    method: req.method.as_str().to_string(),
                    query: req.uri.query().map(str::to_string),
                    headers: req.headers.clone(),
                });
            }
            Decision::Continue
        }

        fn on_upstream_request(
            &self,
            up: &mut RequestHeader,
            x: &mut Exchange,
        ) -> pingora::Result<()> {
            for i in &self.0.request {
                let req = Req {
                    method: Some(up.method.as_str()),
                    query: up.uri.query(),
                    headers: Some(&up.headers),
                };
                if let Some(v) = i.value.render(req, x) {
                    if i.append {
                        up.append_header(i.name.clone(), v)?;
                    } else {
                        up.insert_header(i.name.clone(), v)?;
                    }
                }
            }
            Ok(())
        }

        fn on_response(&self, resp: &mut ResponseHeader, x: &mut Exchange) -> pingora::Result<()> {
            let seen = x.ext.get::<RequestSeen>();
            let req = seen.map_or_else(Req::default, |r| Req {
                method: Some(&r.method),
                query: r.query.as_deref(),
                headers: Some(&r.headers),
            });
            for i in &self.0.response {
                let Some(v) = i.value.render(req, x) else {
                    continue;
                };
                if i.append {
                    resp.append_header(i.name.clone(), v)?;
                } else {
                    resp.insert_header(i.name.clone(), v)?;
                }
            }
            Ok(())
        }
    }
}

pub mod remove {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Config {
        pub request: Vec<Pattern>,
        pub response: Vec<Pattern>,
    }

    const NAMES: Ty = Ty::List(&Ty::Name("a header name, or a pattern with *"), true);
    pub const FIELDS: &[Field] = &[
        f("request", NAMES).doc("Headers removed from the request going upstream."),
        f("response", NAMES).doc("Headers removed from the response to the client."),
    ];

    fn decode_list(d: &mut Decoder, node: &Node, path: &str) -> Vec<Pattern> {
        let mut out = Vec::new();
        for (item, at) in d.items(node, path, true) {
            let Some(text) = d.string(item, &at) else {
                continue;
            };
            let lower = text.to_ascii_lowercase();
            let bare = lower.replace('*', "");
            if !bare.is_empty() && HeaderName::from_bytes(bare.as_bytes()).is_err() {
                d.error(
                    item.pos,
                    &at,
                    format!("{text:?} is not a header name or pattern"),
                );
                continue;
            }
            if !lower.contains('*') && PROTECTED.contains(&lower.as_str()) {
                d.error(
                    item.pos,
                    &at,
                    format!("{lower} is a hop-by-hop or framing header: the gateway manages it (RFC 9110 §7.6.1)"),
                );
                continue;
            }
            out.push(Pattern(lower));
        }
        out
    }

    pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
        let nothing = "nothing to remove: give `request` and/or `response` names";
        let (request, response) = decode_sides(d, node, path, nothing, FIELDS, decode_list)?;
        Some(Config { request, response })
    }

    pub fn describe(c: &Config) -> Value {
        let list = |l: &[Pattern]| l.iter().map(|p| p.0.clone()).collect::<Vec<_>>();
        json!({"request": list(&c.request), "response": list(&c.response)})
    }

    pub fn build(c: &Config) -> Arc<dyn Policy> {
        Arc::new(Remove(c.clone()))
    }

    pub struct Remove(Config);

    /// The names in `headers` that a pattern matches, protected ones kept.
    fn doomed(patterns: &[Pattern], headers: &http::HeaderMap) -> Vec<HeaderName> {
        headers
            .keys()
            .filter(|k| !PROTECTED.contains(&k.as_str()))
            .filter(|k| patterns.iter().any(|p| p.matches(k.as_str())))
            .cloned()
            .collect()
    }

    #[async_trait]
    impl Policy for Remove {
        fn on_upstream_request(
            &self,
            up: &mut RequestHeader,
            _x: &mut Exchange,
        ) -> pingora::Result<()> {
            for name in doomed(&self.0.request, &up.headers) {
                up.remove_header(&name);
            }
            Ok(())
        }

        fn on_response(&self, resp: &mut ResponseHeader, _x: &mut Exchange) -> pingora::Result<()> {
            for name in doomed(&self.0.response, &resp.headers) {
                resp.remove_header(&name);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let t = Template::parse("ip={client_ip} c={consumer} t={claim.tenant} {{x}}").unwrap();
        let mut x = Exchange::new();
        x.client_ip = Some("192.0.2.1".parse().unwrap());
        assert_eq!(t.render(Req::default(), &x), None, "no consumer yet");
        x.consumer = Some("alice".into());
        let mut claims = serde_json::Map::new();
        claims.insert("tenant".into(), json!("acme"));
        x.claims = Some(Arc::new(claims));
        assert_eq!(
            t.render(Req::default(), &x).unwrap(),
            "ip=192.0.2.1 c=alice t=acme {x}"
        );
        assert!(Template::parse("{nope}")
            .unwrap_err()
            .contains("unknown variable"));
        assert!(Template::parse("{client_ip").is_err());
        assert!(Template::parse("a\u{7}b").is_err());
        // Flex expressions among the text
        let t = Template::parse(
            "{{#[upper(attributes.method) ++ '!']}} via #[attributes.headers.via default 'none']",
        )
        .unwrap();
        let req = Req {
            method: Some("get"),
            ..Req::default()
        };
        assert_eq!(t.render(req, &x).unwrap(), "{GET!} via none");
        assert!(Template::parse("#[payload]")
            .unwrap_err()
            .contains("`payload`"));
    }

    #[test]
    fn patterns() {
        let p = Pattern("x-internal-*".into());
        assert!(p.matches("x-internal-debug"));
        assert!(!p.matches("x-internals"));
        assert!(Pattern("*-debug".into()).matches("x-trace-debug"));
        assert!(Pattern("x-*-id".into()).matches("x-user-id"));
        assert!(!Pattern("x-*-id".into()).matches("x-user-idx"));
        assert!(Pattern("server".into()).matches("server"));
        assert!(!Pattern("server".into()).matches("server-timing"));
    }
}
