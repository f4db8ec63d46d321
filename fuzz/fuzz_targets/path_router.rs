//! The path normaliser and the router on arbitrary paths: no panic; a
//! normalised path normalises to itself, has no dot segment and no empty
//! segment, and routes like its percent-encoded spelling.
#![no_main]

use flex_gateway::config::load_str;
use flex_gateway::path::normalize;
use flex_gateway::router::{Match, Router};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn router() -> &'static Router<String> {
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

fn route_of(path: &str) -> String {
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

fuzz_target!(|data: &[u8]| {
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
});
