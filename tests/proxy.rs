//! Proxying as clients and backends see it: forwarded headers, request ids,
//! path handling, connection reuse, upstream failures, streaming.

use crate::support::*;
use std::time::{Duration, Instant};

fn one_route(url: &str, extra: &str) -> String {
    config_with_routes(&format!(
        r#"    - id: api
      path: ["/api", "/api/*"]
      upstream:
        url: "{url}"{extra}
    - id: health
      path: "/health"
      methods: [GET]
      upstream:
        url: "{url}"
      policies:
        - rate-limiting: {{maxRequests: 1000, period: 60}}"#
    ))
}

#[test]
fn forwarded_headers_and_request_id() {
    let backend = Backend::echo();
    let gw = Gateway::start(&one_route(&backend.url(), ""));
    let mut c = gw.connect();

    let r = c.request(
        "GET",
        "/api/items?x=1&y=2",
        &[("host", "shop.example:8081")],
        b"",
    );
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert_eq!(seen.target, "/api/items?x=1&y=2");
    assert_eq!(
        seen.header("host"),
        Some(format!("127.0.0.1:{}", backend.port).as_str())
    );
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example:8081"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    let id = r.header("x-request-id").expect("generated id");
    assert_eq!(id.len(), 32);
    assert_eq!(seen.header("x-request-id"), Some(id));

    // a client's id and forwarding chain are kept and extended
    let r = c.request(
        "GET",
        "/api",
        &[
            ("x-request-id", "trace-abc-123"),
            ("x-forwarded-for", "203.0.113.7"),
        ],
        b"",
    );
    assert_eq!(r.header("x-request-id"), Some("trace-abc-123"));
    let seen = backend.last();
    assert_eq!(seen.header("x-request-id"), Some("trace-abc-123"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );

    // a chain sent on two lines is one list (RFC 9110 §5.3): both kept,
    // in order, and a forged X-Forwarded-Proto is replaced
    let r = c.request(
        "GET",
        "/api",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "198.51.100.2"),
            ("x-forwarded-proto", "https"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 198.51.100.2, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));

    // ids differ per request
    let a = c.get("/api").header("x-request-id").map(String::from);
    let b = c.get("/api").header("x-request-id").map(String::from);
    assert_ne!(a, b);
}

#[test]
fn upstream_base_path_prefixes_the_request_path() {
    let backend = Backend::echo();
    let gw = Gateway::start(&one_route(&format!("{}/v1/", backend.url()), ""));
    let r = gw.connect().get("/api/products/2?full=true");
    assert_eq!(r.status, 200);
    assert_eq!(backend.last().target, "/v1/api/products/2?full=true");
}

#[test]
fn paths_are_normalised_before_routing_and_forwarding() {
    let backend = Backend::echo();
    let gw = Gateway::start(&one_route(&backend.url(), ""));
    let mut c = gw.connect();

    // climbing out of /api lands on /health: routed (and counted) as /health
    let r = c.get("/api/products/../../health");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-ratelimit-remaining"),
        Some("999"),
        "counted on the health route"
    );
    assert_eq!(backend.last().target, "/health");

    for (raw, upstream) in [
        ("/api//products///2", "/api/products/2"),
        ("/api/./products", "/api/products"),
        ("/api/%70roducts", "/api/products"),
        ("/api/%2e%2e/api/x", "/api/x"),
        ("/api/a%20b", "/api/a%20b"),
    ] {
        let r = c.get(raw);
        assert_eq!(r.status, 200, "{raw}");
        assert_eq!(backend.last().target, upstream, "{raw}");
    }

    // encoded dots cannot smuggle a path past its route either
    let r = c.get("/api/%2E%2E/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("998"));

    // above the root: 400 JSON, connection still usable
    let before = backend.count();
    // ... and so is an encoded slash on a route that did not opt in
    for raw in ["/..", "/api/../../etc/passwd", "/%2e%2e/x", "/api/a%2fb"] {
        let r = c.get(raw);
        assert_eq!(r.status, 400, "{raw}");
        assert_eq!(r.json()["status"], 400);
    }
    let r = c.get("/api/bad%zzescape");
    assert_eq!(r.status, 400);
    assert_eq!(
        backend.count(),
        before,
        "rejected paths never reach the backend"
    );
    assert_eq!(c.get("/api").status, 200);
}

#[test]
fn upstream_connections_are_reused() {
    let backend = Backend::echo();
    let gw = Gateway::start(&one_route(&backend.url(), ""));
    let mut c = gw.connect();
    for i in 0..100 {
        let r = c.get(&format!("/api/items/{i}"));
        assert_eq!(r.status, 200);
    }
    assert_eq!(backend.count(), 100);
    assert_eq!(
        backend
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "100 sequential requests should share one pooled upstream connection"
    );
}

#[test]
fn upstream_failures_are_json_502_and_504_and_the_gateway_keeps_serving() {
    let fast = Backend::echo();
    let slow = Backend::start(|_| {
        Reply::Delayed(
            Duration::from_secs(3),
            Box::new(Reply::Json(200, "{}".into())),
        )
    });
    let closed_port = free_port();
    let gw = Gateway::start(&config_with_routes(&format!(
        r#"    - id: unresolvable
      path: /dns
      upstream: {{url: "http://catalog.invalid:3000"}}
    - id: refused
      path: /refused
      upstream: {{url: "http://127.0.0.1:{closed_port}"}}
    - id: slow
      path: /slow
      upstream: {{url: "{}", timeout: 500ms}}
    - id: fast
      path: /fast
      upstream: {{url: "{}"}}"#,
        slow.url(),
        fast.url()
    )));

    for (path, status) in [("/dns", 502), ("/refused", 502)] {
        let r = gw.connect().get(path);
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        assert_eq!(body["status"], status);
        assert_eq!(body["requestId"].as_str(), r.header("x-request-id"));
    }

    let started = Instant::now();
    let r = gw.connect().get("/slow");
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["status"], 504);
    assert!(
        took < Duration::from_millis(2500),
        "timed out after {took:?}, not the route's 500ms"
    );

    for _ in 0..3 {
        assert_eq!(gw.connect().get("/fast").status, 200);
    }
}

#[test]
fn large_bodies_stream_with_bounded_memory() {
    const SIZE: u64 = 200 * 1024 * 1024;
    let backend = Backend::start(|seen| {
        if seen.method == "GET" {
            Reply::Bytes(SIZE)
        } else {
            Reply::Json(200, format!("{{\"received\":{}}}", seen.body_len))
        }
    });
    let gw = Gateway::start(&one_route(&backend.url(), ""));

    // upload 200 MB
    let mut c = gw.connect();
    c.send_head(
        "POST",
        "/api/upload",
        &[("content-type", "application/octet-stream")],
        SIZE,
    );
    c.send_body_stream(SIZE);
    let r = c.read_response(false, true);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["received"], SIZE);

    // download 200 MB, counted not kept
    c.send_head("GET", "/api/download", &[], 0);
    let r = c.read_response(false, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body_len, SIZE);

    let peak_mib = gw.peak_rss_kib() / 1024;
    println!("gateway peak RSS after 2 x 200 MB: {peak_mib} MiB");
    assert!(peak_mib < 100, "gateway peak RSS {peak_mib} MiB");
}

#[test]
fn one_json_access_log_line_per_request() {
    let backend = Backend::echo();
    let gw = Gateway::start(&one_route(&backend.url(), ""));
    let mut c = gw.connect();
    let r = c.request("GET", "/api/logged", &[("x-request-id", "log-test-1")], b"");
    assert_eq!(r.status, 200);
    let r = c.get("/nowhere");
    assert_eq!(r.status, 404);
    let mut lines = Vec::new();
    wait_until(Duration::from_secs(5), "two access log lines", || {
        lines = gw
            .log_text()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
            .collect();
        lines.len() >= 2
    });
    let first = &lines[0];
    assert_eq!(first["requestId"], "log-test-1");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/api/logged");
    assert_eq!(first["routeId"], "api");
    assert_eq!(first["status"], 200);
    assert_eq!(first["clientIp"], "127.0.0.1");
    assert_eq!(first["upstream"], format!("127.0.0.1:{}", backend.port));
    assert!(first["durationMs"].as_f64().is_some());
    assert!(first["bytesSent"].as_u64().is_some_and(|n| n > 0));
    assert!(first["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(lines[1]["status"], 404);
    assert_eq!(lines[1]["routeId"], serde_json::Value::Null);
}

#[test]
fn access_log_can_be_switched_off() {
    let backend = Backend::echo();
    let gw = Gateway::start_with_env(
        &one_route(&backend.url(), ""),
        &[("RUST_LOG", "info,access=off")],
    );
    assert_eq!(gw.connect().get("/api").status, 200);
    // the request is complete; a marker request on a fresh connection orders the check
    assert_eq!(gw.connect().get("/nowhere").status, 404);
    assert!(
        !gw.log_text().lines().any(|l| l.starts_with('{')),
        "{}",
        gw.log_text()
    );
}
