//! The checks behind the fuzz targets, shared with the normal test suite
//! (`tests/fuzz_corpus.rs` runs every corpus file through them). Each takes
//! arbitrary bytes and panics when a property fails.

#![allow(dead_code)]

use flex_gateway::config::load_str;
use flex_gateway::config::ClientLimits;
use flex_gateway::framing::check_request;
use flex_gateway::path::normalize;
use flex_gateway::router::{Match, Router};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use pingora_http::RequestHeader;
use std::sync::OnceLock;

/// The configuration loader on arbitrary text: it never panics, and every
/// error it reports points at a line and column inside the text (or at the
/// file as a whole).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // secret references would read the environment and files: keep the
    // input to what a config file says by itself
    if text.contains("${") || text.contains("file:") {
        return;
    }
    if let Err(errors) = flex_gateway::config::load_str("fuzz.yaml", text) {
        assert!(!errors.0.is_empty(), "an error result lists its errors");
        // YAML breaks lines at \n, \r\n and a lone \r
        let lines = text.split(['\n', '\r']).count() + 1;
        for e in &errors.0 {
            assert_eq!(e.file, "fuzz.yaml");
            assert!(e.pos.line <= lines, "{e} is past the end ({lines} lines)");
            assert!(!e.message.is_empty(), "{e} says nothing");
        }
    }
}

/// A few routes: exact and prefix paths, a method list, a host.
pub fn router() -> &'static Router<String> {
    static ROUTER: OnceLock<Router<String>> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let yaml = "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {name: p}\nspec:\n  listeners: [{name: l, port: 9000}]\n  routes:\n    - {id: products, path: [/api/products, \"/api/products/*\"], methods: [GET], upstream: {url: \"http://127.0.0.1:1\"}}\n    - {id: a, path: \"/a/*\", upstream: {url: \"http://127.0.0.1:1\"}}\n    - {id: host, host: api.example.com, path: \"/*\", upstream: {url: \"http://127.0.0.1:1\"}}\n    - {id: root, path: /, upstream: {url: \"http://127.0.0.1:1\"}}\n";
        let config = load_str("p.yaml", yaml).expect("valid");
        Router::new(
            config.listeners[0]
                .routes
                .iter()
                .map(|r| (r.as_ref(), r.id.clone())),
        )
    })
}

/// What `router()` answers for a GET of `path` on host `h`.
pub fn route_of(path: &str) -> String {
    match router().find("h", &http::Method::GET, path) {
        Match::Found(id) => id.clone(),
        Match::MethodNotAllowed { allow, .. } => format!("405 {allow}"),
        Match::NotFound => "404".into(),
    }
}

/// Every unreserved character percent-encoded.
fn encoded(path: &str) -> String {
    let mut out = String::new();
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let end = (i + 3).min(b.len());
            out.push_str(&path[i..end]);
            i = end;
            continue;
        }
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push_str(&format!("%{c:02X}"));
        } else {
            out.push(c as char);
        }
        i += 1;
    }
    out
}

/// The path normaliser and the router on arbitrary paths: no panic; a
/// normalised path normalises to itself, has no dot segment and no empty
/// segment, and routes like its percent-encoded spelling.
pub fn path_router(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    // anything goes to the router, normalised or not
    let _ = router().find("api.example.com", &http::Method::POST, path);
    let Ok(n) = normalize(path) else {
        return;
    };
    let again = normalize(&n).expect("a normalised path normalises");
    assert_eq!(again.as_ref(), n.as_ref(), "not idempotent: {path:?}");
    assert!(n.starts_with('/'), "{path:?} -> {n:?}");
    for seg in n.split('/').skip(1) {
        assert!(seg != "." && seg != "..", "dot segment: {path:?} -> {n:?}");
    }
    assert!(!n.contains("//"), "empty segment: {path:?} -> {n:?}");
    if n.is_ascii() {
        let spelled = encoded(&n);
        let n2 = normalize(&spelled).expect("re-encoding keeps it valid");
        assert_eq!(n2.as_ref(), n.as_ref(), "{spelled:?}");
        assert_eq!(route_of(&n2), route_of(&n));
    }
}

/// Request-head handling on arbitrary bytes, parsed as Pingora parses them
/// (httparse, then a `RequestHeader` with the raw values): the framing check
/// never panics, and a head it lets through has framing only one reading of:
/// at most one all-digit `Content-Length`, never with `Transfer-Encoding`, a
/// `Transfer-Encoding` ending in a single `chunked`, one `Host` on HTTP/1.1,
/// no control characters, and heads within the limits.
pub fn request_head(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = req.parse(data) else {
        return;
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return;
    };
    let Ok(mut head) = RequestHeader::build(method, path.as_bytes(), Some(req.headers.len()))
    else {
        return;
    };
    head.set_version(match req.version {
        Some(1) => http::Version::HTTP_11,
        Some(0) => http::Version::HTTP_10,
        _ => http::Version::HTTP_09,
    });
    for h in req.headers.iter() {
        let Ok(name) = http::HeaderName::from_bytes(h.name.as_bytes()) else {
            return;
        };
        // as Pingora does: the parsed bytes, unchecked
        let value = unsafe {
            http::HeaderValue::from_maybe_shared_unchecked(bytes::Bytes::copy_from_slice(h.value))
        };
        if head.append_header(name, value).is_err() {
            return;
        }
    }
    let limits = ClientLimits::default();
    if check_request(&head, Some(&data[..len]), &limits).is_err() {
        return;
    }
    // accepted: one reading only
    let lengths: Vec<_> = head.headers.get_all(CONTENT_LENGTH).iter().collect();
    let codings: Vec<_> = head.headers.get_all(TRANSFER_ENCODING).iter().collect();
    assert!(lengths.len() <= 1, "several Content-Length");
    assert!(lengths.is_empty() || codings.is_empty(), "CL with TE");
    if let Some(cl) = lengths.first() {
        let b = cl.as_bytes();
        assert!(
            !b.is_empty() && b.iter().all(u8::is_ascii_digit),
            "CL {cl:?}"
        );
    }
    if !codings.is_empty() {
        let all: Vec<String> = codings
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
            .collect();
        assert_eq!(
            all.last().map(String::as_str),
            Some("chunked"),
            "TE {all:?}"
        );
        assert_eq!(
            all.iter().filter(|c| *c == "chunked").count(),
            1,
            "TE {all:?}"
        );
    }
    if head.version == http::Version::HTTP_11 {
        assert_eq!(head.headers.get_all(HOST).iter().count(), 1, "Host");
    }
    for (name, value) in head.headers.iter() {
        assert!(
            !value
                .as_bytes()
                .iter()
                .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f),
            "control character in {name}"
        );
    }
    assert!(len <= limits.max_header_bytes, "head over the limit");
    assert!(head.headers.len() <= limits.max_headers, "too many headers");
    assert!(path.len() <= limits.max_uri_bytes, "target over the limit");
}
