//! `cors`: Cross-Origin Resource Sharing, answered by the gateway.
//!
//! ```yaml
//! - cors:
//!     origins: ["https://app.example.com", "https://*.example.com"]   # or ["*"]
//!     methods: [GET, POST, PUT]               # default: GET, HEAD, POST
//!     headers: [Content-Type, Authorization]  # request headers allowed (["*"]: any)
//!     exposeHeaders: [X-Request-Id]           # response headers scripts may read
//!     allowCredentials: false                 # cookies / Authorization from browsers
//!     maxAge: 30s                             # how long browsers cache a preflight
//! ```
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//! is answered here, never forwarded, even on a route whose `methods` lack
//! OPTIONS: `204` with the `Access-Control-Allow-*` headers when the origin,
//! method and requested headers are allowed, `403` without them otherwise.
//! Other requests are proxied as usual; an allowed origin gets
//! `Access-Control-Allow-Origin` (and `-Credentials`, `-Expose-Headers`) on
//! the response, proxied or written by the gateway (a 401 from a later
//! authentication policy stays readable by the page). With credentials the
//! origin is echoed, never `*`. `Vary: Origin` is added whenever the answer
//! depends on the origin. CORS always runs first in a chain, so preflights
//! are not refused for lacking credentials.

use super::{common, Decision, LocalResponse, Policy};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, SECONDS};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub const FIELDS: &[Field] = &[
    f(
        "origins",
        Ty::List(&Ty::Text("an origin, * or https://*.example.com"), true),
    )
    .req(),
    f("methods", Ty::List(&Ty::Text("an HTTP method"), true)),
    f("headers", Ty::List(&Ty::Name("a header name or *"), true)),
    f("exposeHeaders", Ty::List(&Ty::Name("a header name"), true)),
    f("allowCredentials", BOOL).default("false"),
    f("maxAge", SECONDS),
];

/// An allowed origin: exact, any (`*`), or any subdomain of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    Any,
    /// `https://app.example.com[:port]`, lower-case.
    Exact(String),
    /// `https://*.example.com[:port]`: (scheme, `.example.com`, port suffix).
    Subdomains(String, String, String),
}

impl OriginRule {
    fn parse(text: &str) -> Result<OriginRule, String> {
        if text == "*" {
            return Ok(OriginRule::Any);
        }
        let lower = text.trim_end_matches('/').to_ascii_lowercase();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return Err(format!(
                "{text:?} is not an origin (scheme://host[:port], e.g. https://app.example.com)"
            ));
        };
        if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
            return Err(format!(
                "{text:?} is not an origin (scheme://host[:port], no path)"
            ));
        }
        if let Some(domain) = rest.strip_prefix("*.") {
            let (host, port) = match domain.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, format!(":{p}")),
                _ => (domain, String::new()),
            };
            if host.is_empty() || host.contains('*') {
                return Err(format!(
                    "{text:?}: write subdomain patterns as https://*.example.com"
                ));
            }
            return Ok(OriginRule::Subdomains(
                format!("{scheme}://"),
                format!(".{host}"),
                port,
            ));
        }
        if rest.contains('*') {
            return Err(format!(
                "{text:?}: `*` only as the whole origin or as the first label (https://*.example.com)"
            ));
        }
        Ok(OriginRule::Exact(lower))
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginRule::Any => origin != "null",
            OriginRule::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginRule::Subdomains(scheme, domain, port) => {
                let origin = origin.to_ascii_lowercase();
                let Some(rest) = origin.strip_prefix(scheme.as_str()) else {
                    return false;
                };
                let Some(host) = rest.strip_suffix(port.as_str()) else {
                    return false;
                };
                if !port.is_empty() || !host.contains(':') {
                    host.len() > domain.len()
                        && host.ends_with(domain.as_str())
                        && !host[..host.len() - domain.len()].is_empty()
                        && !host.contains([':', '/', '@'])
                } else {
                    false
                }
            }
        }
    }
}

/// A serialized origin (RFC 6454 §6.2): `scheme://host[:port]` and
/// nothing else — a scheme of letters, digits, `+ - .`; a host of letters,
/// digits, `- . _ ~` or an IPv6 literal; a port of digits. An `Origin` with
/// a path, query, fragment, userinfo, `%`, `\` or whitespace is no origin
/// and matches no pattern (it could be read otherwise by whoever checks it
/// next).
fn serialized_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok || rest.is_empty() {
        return false;
    }
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let Some((v6, after)) = inner.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(p) => ("v6", p),
                None => return false,
            },
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (rest, ""),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let port_ok = (port.is_empty() && !rest.ends_with(':'))
        || (port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty());
    host_ok && port_ok
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub origins: Vec<OriginRule>,
    pub methods: Vec<http::Method>,
    /// Lower-case names; `None`: any header.
    pub headers: Option<Vec<String>>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: Duration,
}

fn names(d: &mut Decoder, node: &Node, path: &str) -> Vec<String> {
    d.parsed_list(node, path, "a header name", |text| {
        if text == "*" {
            return Ok("*".to_string());
        }
        http::HeaderName::from_bytes(text.as_bytes())
            .map(|h| h.as_str().to_string())
            .map_err(|_| format!("{text:?} is not a header name"))
    })
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let before = d.errors.len();
    let mut origins = Vec::new();
    if let Some(list) = d.required(&f, "origins", path) {
        let field = join(path, "origins");
        origins = d.parsed_list(list, &field, "an origin", OriginRule::parse);
        if origins.is_empty() && d.errors.len() == before {
            d.error(
                list.pos,
                &field,
                "at least one origin is required (or \"*\")",
            );
        }
    }
    let methods = match f.get("methods") {
        None => vec![http::Method::GET, http::Method::HEAD, http::Method::POST],
        Some(n) => d.parsed_list(n, &join(path, "methods"), "an HTTP method", |text| {
            let upper = text.to_ascii_uppercase();
            if !crate::config::schema::METHODS.contains(&upper.as_str()) {
                return Err(format!("{text:?} is not an HTTP method"));
            }
            http::Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())
        }),
    };
    let headers = match f.get("headers") {
        None => Some(Vec::new()),
        Some(n) if matches!(&n.value, crate::config::yaml::Value::Scalar { text, .. } if text == "*") => {
            None
        }
        Some(n) => {
            let list = names(d, n, &join(path, "headers"));
            if list.iter().any(|h| h == "*") {
                None
            } else {
                Some(list)
            }
        }
    };
    let expose_headers = f
        .get("exposeHeaders")
        .map(|n| names(d, n, &join(path, "exposeHeaders")))
        .unwrap_or_default();
    let allow_credentials = match f.get("allowCredentials") {
        Some(n) => d.bool(n, &join(path, "allowCredentials")),
        None => Some(false),
    };
    let max_age = match f.get("maxAge") {
        Some(n) => d.duration(n, &join(path, "maxAge"), true),
        None => Some(Duration::from_secs(30)),
    };
    if d.errors.len() > before {
        return None;
    }
    Some(Config {
        origins,
        methods,
        headers,
        expose_headers,
        allow_credentials: allow_credentials?,
        max_age: max_age?,
    })
}

pub fn describe(c: &Config) -> Value {
    json!({
        "origins": c.origins.iter().map(|o| match o {
            OriginRule::Any => "*".to_string(),
            OriginRule::Exact(e) => e.clone(),
            OriginRule::Subdomains(s, d, p) => format!("{s}*{d}{p}"),
        }).collect::<Vec<_>>(),
        "methods": c.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "headers": c.headers.clone().unwrap_or_else(|| vec!["*".into()]),
        "exposeHeaders": c.expose_headers,
        "allowCredentials": c.allow_credentials,
        "maxAgeSeconds": c.max_age.as_secs(),
    })
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    Arc::new(Cors {
        methods: c
            .methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        expose: (!c.expose_headers.is_empty())
            .then(|| common::shared_value(c.expose_headers.join(", ")))
            .flatten(),
        only_any: c.origins.iter().all(|o| *o == OriginRule::Any) && !c.allow_credentials,
        config: c.clone(),
    })
}

pub struct Cors {
    config: Config,
    methods: String,
    /// `Access-Control-Expose-Headers`, made once.
    expose: Option<http::HeaderValue>,
    /// Every origin is allowed and nothing is credentialed: the answer does
    /// not depend on the origin (`*`, no `Vary`).
    only_any: bool,
}

/// What this request's `Access-Control-Allow-Origin` is, if any (the
/// request's own `Origin` value, shared, or `*`).
#[derive(Clone)]
struct Allowed(http::HeaderValue);

/// This policy answered a preflight: its response is complete.
#[derive(Clone, Copy)]
struct Preflight;

impl Cors {
    /// Whether `origin` is one this policy allows.
    fn allows(&self, origin: &str) -> bool {
        serialized_origin(origin) && self.config.origins.iter().any(|o| o.matches(origin))
    }

    fn allow_origin(&self, origin: &str) -> Option<String> {
        if !self.allows(origin) {
            return None;
        }
        Some(if self.only_any {
            "*".to_string()
        } else {
            origin.to_string()
        })
    }

    fn preflight(&self, req: &RequestHeader) -> Option<Decision> {
        if req.method != http::Method::OPTIONS {
            return None;
        }
        let origin = req.headers.get(http::header::ORIGIN)?.to_str().ok()?;
        let method = req
            .headers
            .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)?
            .to_str()
            .ok()?;
        let vary = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";
        let refuse = |why: &str| {
            Some(Decision::Respond(
                LocalResponse::new(403, format!("CORS preflight refused: {why}"))
                    .with_header("vary", vary),
            ))
        };
        let Some(allow_origin) = self.allow_origin(origin) else {
            return refuse("origin not allowed");
        };
        if !self.config.methods.iter().any(|m| m.as_str() == method) {
            return refuse("method not allowed");
        }
        let requested: Vec<String> = req
            .headers
            .get_all(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if let Some(allowed) = &self.config.headers {
            if let Some(h) = requested.iter().find(|h| !allowed.contains(h)) {
                return refuse(&format!("header {h} not allowed"));
            }
        }
        let mut resp = LocalResponse::new(204, "")
            .with_header("access-control-allow-origin", allow_origin)
            .with_header("access-control-allow-methods", self.methods.clone())
            .with_header(
                "access-control-max-age",
                self.config.max_age.as_secs().to_string(),
            );
        if !requested.is_empty() {
            resp = resp.with_header("access-control-allow-headers", requested.join(", "));
        }
        if self.config.allow_credentials {
            resp = resp.with_header("access-control-allow-credentials", "true");
        }
        if !self.only_any {
            resp = resp.with_header("vary", vary);
        }
        Some(Decision::Respond(resp))
    }
}

#[async_trait]
impl Policy for Cors {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        if let Some(answer) = self.preflight(req) {
            x.ext.insert(Preflight);
            return answer;
        }
        if let Some(value) = req.headers.get(http::header::ORIGIN) {
            if value.to_str().is_ok_and(|o| self.allows(o)) {
                let value = match self.only_any {
                    true => http::HeaderValue::from_static("*"),
                    false => value.clone(),
                };
                x.ext.insert(Allowed(value));
            }
        }
        Decision::Continue
    }

    fn on_method_not_allowed(&self, req: &RequestHeader, x: &mut Exchange) -> Decision {
        match self.preflight(req) {
            Some(answer) => {
                x.ext.insert(Preflight);
                answer
            }
            None => Decision::Continue,
        }
    }

    fn on_response(&self, resp: &mut ResponseHeader, x: &mut Exchange) -> pingora::Result<()> {
        if x.ext.get::<Preflight>().is_some() {
            return Ok(()); // our own preflight answer is complete
        }
        if !self.only_any {
            resp.append_header(http::header::VARY, http::HeaderValue::from_static("Origin"))?;
        }
        // the upstream's own CORS headers never contradict the gateway's
        for h in [
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
        ] {
            if resp.headers.contains_key(&h) {
                resp.remove_header(&h);
            }
        }
        let Some(Allowed(origin)) = x.ext.get::<Allowed>() else {
            return Ok(());
        };
        resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())?;
        if self.config.allow_credentials {
            resp.insert_header(
                http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                http::HeaderValue::from_static("true"),
            )?;
        }
        if let Some(expose) = &self.expose {
            resp.insert_header(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_rules() {
        let sub = OriginRule::parse("https://*.example.com").unwrap();
        assert!(sub.matches("https://app.example.com"));
        assert!(sub.matches("https://a.b.example.com"));
        assert!(sub.matches("HTTPS://APP.EXAMPLE.COM"));
        assert!(!sub.matches("https://example.com"), "not the apex");
        assert!(!sub.matches("http://app.example.com"), "scheme");
        assert!(!sub.matches("https://app.example.com:8443"), "port");
        assert!(!sub.matches("https://evilexample.com"));
        assert!(!sub.matches("https://app.example.com.evil.net"));
        let port = OriginRule::parse("https://*.example.com:8443").unwrap();
        assert!(port.matches("https://a.example.com:8443"));
        assert!(!port.matches("https://a.example.com"));
        let exact = OriginRule::parse("https://App.example.com/").unwrap();
        assert!(exact.matches("https://app.example.com"));
        assert!(!exact.matches("https://app.example.com:443"));
        assert!(!OriginRule::Any.matches("null"));
        assert!(OriginRule::parse("app.example.com").is_err());
        assert!(OriginRule::parse("https://a.*.com").is_err());
    }

    #[test]
    fn only_serialized_origins_are_origins() {
        for o in [
            "https://app.example.com",
            "http://localhost:8080",
            "https://[::1]",
            "https://[2001:db8::1]:8443",
            "chrome-extension://abcdef",
            "https://a_b.example.com",
        ] {
            assert!(serialized_origin(o), "{o}");
        }
        for o in [
            "null",
            "",
            "https://",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com?x",
            "https://app.example.com#x",
            "https://app.example.com\\@evil.net",
            "https://user@app.example.com",
            "https://evil.net@app.example.com",
            "https://app.example.com%2f.evil.net",
            "https://app.example.com:",
            "https://app.example.com:80:80",
            "https://app.example.com:8a",
            "https://app.example.com ",
            " https://app.example.com",
            "https://app .example.com",
            "https://app.example.com\t",
            "1https://app.example.com",
            "https//app.example.com",
            "https://[::1",
            "https://[::1]x",
            "https://[zz::1]",
        ] {
            assert!(!serialized_origin(o), "{o:?}");
        }
    }
}
