//! Small pieces several policies need: decoding header names and realms,
//! reading query parameters and cookies, and where a credential is taken
//! from. Policies share these helpers, never each other's code or state.

use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, STR};
use crate::config::yaml::Node;
use http::HeaderName;
use pingora::http::RequestHeader;
use std::borrow::Cow;

pub const DEFAULT_REALM: &str = "flex-gateway";

/// A header value made once and shared by every message that carries it:
/// its clones share one buffer (no allocation per request). `None` when
/// the text is not a valid header value.
pub fn shared_value(text: String) -> Option<http::HeaderValue> {
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text.into_bytes())).ok()
}

pub fn header_name(d: &mut Decoder, node: &Node, path: &str) -> Option<HeaderName> {
    let text = d.string(node, path)?;
    match HeaderName::from_bytes(text.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            d.error(node.pos, path, format!("{text:?} is not a header name"));
            None
        }
    }
}

/// A realm goes inside a quoted string of a `WWW-Authenticate` header.
pub fn realm(d: &mut Decoder, node: Option<&Node>, path: &str) -> Option<String> {
    let Some(node) = node else {
        return Some(DEFAULT_REALM.to_string());
    };
    let field = join(path, "realm");
    let realm = d.string(node, &field)?;
    if realm
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control() || !c.is_ascii())
    {
        d.error(
            node.pos,
            &field,
            "a realm is printable ASCII without `\"` or `\\`",
        );
        return None;
    }
    Some(realm)
}

/// A regular expression, compiled at load; an invalid one is reported in
/// one line (the regex crate's message spans several).
pub fn regex(d: &mut Decoder, pattern: &str, node: &Node, path: &str) -> Option<regex::Regex> {
    match regex::Regex::new(pattern) {
        Ok(re) => Some(re),
        Err(e) => {
            let why = e.to_string();
            let why = why
                .lines()
                .last()
                .unwrap_or("")
                .trim_start_matches("error: ");
            d.error(node.pos, path, format!("invalid regular expression: {why}"));
            None
        }
    }
}

/// Why a bearer token was refused, and the answer RFC 6750 §3 gives.
pub enum BearerRefusal<'a> {
    /// No token: 401 with the bare challenge.
    Missing,
    /// 401 `error="invalid_token"` with this description.
    Invalid(&'a str),
    /// 403 `error="insufficient_scope"` (with the scopes required, if any).
    Scope(&'a str, &'a str),
    /// The token could not be checked: 503 with this message.
    Unavailable(&'a str),
}

/// The gateway's answer; `challenge` is `Bearer realm="..."`.
pub fn refuse_bearer(challenge: &str, r: BearerRefusal<'_>) -> super::Decision {
    use super::{Decision, LocalResponse};
    let (status, message, header) = match r {
        BearerRefusal::Missing => (401, "bearer token required", challenge.to_string()),
        BearerRefusal::Invalid(why) => (
            401,
            why,
            format!("{challenge}, error=\"invalid_token\", error_description=\"{why}\""),
        ),
        BearerRefusal::Scope(why, "") => (
            403,
            why,
            format!("{challenge}, error=\"insufficient_scope\""),
        ),
        BearerRefusal::Scope(why, scope) => (
            403,
            why,
            format!("{challenge}, error=\"insufficient_scope\", scope=\"{scope}\""),
        ),
        BearerRefusal::Unavailable(why) => {
            return Decision::Respond(LocalResponse::new(503, why));
        }
    };
    Decision::Respond(LocalResponse::new(status, message).with_header("www-authenticate", header))
}

/// Whether the request has no body (the headers end the stream): no
/// `Transfer-Encoding` and no `Content-Length` above 0.
pub fn headers_end_stream(req: &RequestHeader) -> bool {
    let te = req.headers.contains_key(http::header::TRANSFER_ENCODING);
    let cl = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    !te && cl.unwrap_or(0) == 0
}

/// The value of query parameter `name` (percent-decoded), if present.
pub fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_encoding::percent_decode_str(k).decode_utf8().ok()?;
        if k != name {
            return None;
        }
        let v = v.replace('+', " ");
        percent_encoding::percent_decode_str(&v)
            .decode_utf8()
            .ok()
            .map(|v| v.into_owned())
    })
}

/// Whether a `key=value` pair of a query is called `name` (however
/// percent-encoded).
fn is_param(pair: &str, name: &str) -> bool {
    let k = pair.split_once('=').map_or(pair, |(k, _)| k);
    percent_encoding::percent_decode_str(k)
        .decode_utf8()
        .is_ok_and(|k| k == name)
}

/// How many parameters of the query are called `name`.
pub fn query_count(query: &str, name: &str) -> usize {
    query.split('&').filter(|pair| is_param(pair, name)).count()
}

/// The query without any parameter called `name`.
pub fn without_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| !is_param(pair, name))
        .collect::<Vec<_>>()
        .join("&")
}

/// Remove every query parameter called `name` from the request's target.
pub fn remove_query_param(req: &mut RequestHeader, name: &str) {
    let Some(query) = req.uri.query() else {
        return;
    };
    let kept = without_param(query, name);
    let path = req.uri.path();
    let uri = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{kept}")
    };
    if let Ok(uri) = uri.parse::<http::Uri>() {
        req.set_uri(uri);
    }
}

/// Where a bearer credential is taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer,
    Header(HeaderName),
    Query(String),
    Cookie(String),
}

pub const TOKEN_FIELDS: &[Field] = &[
    f("header", Ty::Name("a header name")),
    f("queryParam", STR),
    f("cookie", STR),
];

impl TokenSource {
    /// `token: {header: X}` / `{queryParam: q}` / `{cookie: c}`; absent:
    /// `Authorization: Bearer`.
    pub fn decode(d: &mut Decoder, node: Option<&Node>, path: &str) -> Option<TokenSource> {
        Self::decode_at(d, node, path, "token")
    }

    /// [`Self::decode`] for a field of another name (`key`).
    pub fn decode_at(
        d: &mut Decoder,
        node: Option<&Node>,
        path: &str,
        key: &str,
    ) -> Option<TokenSource> {
        let Some(n) = node else {
            return Some(TokenSource::Bearer);
        };
        let field = join(path, key);
        let t = d.map(n, &field, TOKEN_FIELDS)?;
        let mut given = t.keys();
        let Some((which, v)) = given.next() else {
            d.error(n.pos, &field, "give one of: header, queryParam, cookie");
            return None;
        };
        if given.next().is_some() {
            d.error(n.pos, &field, "one source: header, queryParam or cookie");
            return None;
        }
        let at = join(&field, which);
        match which {
            "header" => header_name(d, v, &at).map(|h| {
                if h == http::header::AUTHORIZATION {
                    TokenSource::Bearer
                } else {
                    TokenSource::Header(h)
                }
            }),
            "queryParam" => d.string(v, &at).map(TokenSource::Query),
            _ => d.string(v, &at).map(TokenSource::Cookie),
        }
    }

    pub fn describe(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            TokenSource::Bearer => json!({"header": "Authorization"}),
            TokenSource::Header(h) => json!({"header": h.as_str()}),
            TokenSource::Query(q) => json!({"queryParam": q}),
            TokenSource::Cookie(k) => json!({"cookie": k}),
        }
    }

    /// The token the request carries here, if any.
    pub fn extract<'r>(&self, req: &'r RequestHeader) -> Option<Cow<'r, str>> {
        match self {
            TokenSource::Bearer => {
                let v = req
                    .headers
                    .get(http::header::AUTHORIZATION)?
                    .to_str()
                    .ok()?;
                let (scheme, token) = v.trim().split_once(' ')?;
                let token = token.trim();
                (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token.into())
            }
            TokenSource::Header(h) => {
                let v = req.headers.get(h)?.to_str().ok()?.trim();
                (!v.is_empty()).then_some(v.into())
            }
            TokenSource::Query(q) => query_value(req.uri.query()?, q)
                .filter(|v| !v.is_empty())
                .map(Into::into),
            TokenSource::Cookie(name) => req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    let v = v.trim().trim_matches('"');
                    (k == name && !v.is_empty()).then(|| v.to_string().into())
                }),
        }
    }

    /// The header the token is read from, other than `Authorization`
    /// (which is never allowed twice).
    pub fn header(&self) -> Option<http::HeaderName> {
        match self {
            TokenSource::Header(h) => Some(h.clone()),
            _ => None,
        }
    }

    /// Take the token out of the request going upstream (a cookie stays:
    /// removing one cookie of several is not worth rewriting the header).
    pub fn strip(&self, up: &mut RequestHeader) {
        match self {
            TokenSource::Bearer => {
                up.remove_header(&http::header::AUTHORIZATION);
            }
            TokenSource::Header(h) => {
                up.remove_header(h);
            }
            TokenSource::Query(q) => remove_query_param(up, q),
            TokenSource::Cookie(_) => {}
        }
    }
}

/// A header name and, when it has `-` or `_`, its other spelling
/// (`x-user`, `x_user`): one name to CGI-style backends.
pub fn spellings(name: &http::HeaderName) -> Vec<http::HeaderName> {
    let mut out = vec![name.clone()];
    let s = name.as_str();
    for (from, to) in [('-', "_"), ('_', "-")] {
        if s.contains(from) {
            if let Ok(other) = http::HeaderName::from_bytes(s.replace(from, to).as_bytes()) {
                out.push(other);
            }
        }
    }
    out
}

/// The request's authority (host and port as sent): the Host header, or
/// the authority of an absolute request target (HTTP/2 `:authority`).
pub fn request_authority(req: &pingora::http::RequestHeader) -> &str {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// The request's host without port (see [`request_authority`]).
pub fn request_host(req: &pingora::http::RequestHeader) -> &str {
    let raw = request_authority(req);
    if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or("");
    }
    raw.rsplit_once(':').map_or(raw, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        assert_eq!(
            query_value("a=1&api_key=k%2B1&b=2", "api_key"),
            Some("k+1".into())
        );
        assert_eq!(query_value("api%5Fkey=x", "api_key"), Some("x".into()));
        assert_eq!(query_value("a=1", "api_key"), None);
        assert_eq!(without_param("a=1&api_key=k&b=2", "api_key"), "a=1&b=2");
        assert_eq!(without_param("api_key=k&api_key=j", "api_key"), "");
    }

    #[test]
    fn token_sources() {
        let mut req = RequestHeader::build("GET", b"/x?t=q1", None).unwrap();
        req.insert_header("authorization", "bearer  abc ").unwrap();
        req.insert_header("cookie", "a=1; session=\"c1\"").unwrap();
        req.insert_header("x-token", "h1").unwrap();
        assert_eq!(TokenSource::Bearer.extract(&req).as_deref(), Some("abc"));
        assert_eq!(
            TokenSource::Query("t".into()).extract(&req).as_deref(),
            Some("q1")
        );
        assert_eq!(
            TokenSource::Cookie("session".into())
                .extract(&req)
                .as_deref(),
            Some("c1")
        );
        assert_eq!(
            TokenSource::Header(HeaderName::from_static("x-token"))
                .extract(&req)
                .as_deref(),
            Some("h1")
        );
        req.insert_header("authorization", "Basic abc").unwrap();
        assert_eq!(TokenSource::Bearer.extract(&req), None);
        TokenSource::Query("t".into()).strip(&mut req);
        assert_eq!(req.uri.to_string(), "/x");
    }
}
