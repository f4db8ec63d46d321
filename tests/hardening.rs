//! Hostile clients and upstreams, over raw sockets: requests whose framing
//! two parsers could read differently are refused with 400 and the
//! connection closed, before anything reaches the backend; oversized heads
//! get 431 / 414; an upstream response with ambiguous framing is a 502.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

#[test]
fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let backend = Backend::echo();
    let gw = Gateway::start(&catch_all_config(&backend.url()));
    let cases: [(&str, &[u8]); 11] = [
        ("CL + TE", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("two CL", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        ("CL list", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello"),
        ("TE not ending in chunked", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        ("chunked twice", b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("no Host", b"GET /a HTTP/1.1\r\nAccept: */*\r\n\r\n"),
        ("two Host", b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
        ("absolute-form vs Host", b"GET http://other.example/a HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("space before colon", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n"),
        ("obs-fold", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n"),
        ("control character", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: b\x01c\r\n\r\n"),
    ];
    for (what, bytes) in cases {
        let (status, closed, text) = raw(gw.port, bytes);
        assert_eq!(status, 400, "{what}: {text}");
        assert!(closed, "{what}: the connection stays open");
    }
    assert_eq!(backend.count(), 0, "nothing reached the backend");

    // a well-formed request still works, on a kept-alive connection
    let (status, closed, _) = raw(gw.port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((status, closed), (200, false));
}

#[test]
fn oversized_heads_get_431_and_414() {
    let backend = Backend::echo();
    let gw = Gateway::start(&catch_all_config(&backend.url()));
    let big = format!(
        "GET /a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(61 * 1024)
    );
    assert_eq!(raw(gw.port, big.as_bytes()).0, 431);
    let mut many = String::from("GET /a HTTP/1.1\r\nHost: x\r\n");
    for i in 0..101 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(raw(gw.port, many.as_bytes()).0, 431);
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    assert_eq!(raw(gw.port, long.as_bytes()).0, 414);
    // at the limits: served
    let fifty = format!(
        "GET /a HTTP/1.1\r\nHost: x\r\nX-Ok: {}\r\n\r\n",
        "a".repeat(50 * 1024)
    );
    assert_eq!(raw(gw.port, fifty.as_bytes()).0, 200);
    assert_eq!(backend.count(), 1);
}

/// A gateway with a route `/NAME` to each upstream URL.
fn gateway_to(upstreams: &[(&str, String)]) -> Gateway {
    gateway_with_limits_to("", upstreams)
}

/// Like [`gateway_to`], with `spec.server.limits` (YAML flow map, or empty).
fn gateway_with_limits_to(limits: &str, upstreams: &[(&str, String)]) -> Gateway {
    let routes: Vec<String> = upstreams
        .iter()
        .map(|(name, url)| {
            format!("    - id: {name}\n      path: \"/{name}\"\n      upstream: {{url: \"{url}\"}}")
        })
        .collect();
    let config = config_with_routes(&routes.join("\n"));
    match limits {
        "" => Gateway::start(&config),
        _ => Gateway::start(&with_server_settings(
            &config,
            &[&format!("limits: {limits}")],
        )),
    }
}

/// An upstream that answers every request with these bytes.
fn raw_upstream(reply: &'static [u8]) -> u16 {
    raw_upstream_then(reply, false)
}

/// An upstream that answers every request with these bytes, then closes
/// the connection (with a reset when `reset`).
fn raw_upstream_then(reply: &'static [u8], reset: bool) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let _ = s.read(&mut buf);
                let _ = s.write_all(reply);
                if reset {
                    // SO_LINGER 0: close sends RST
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                }
            });
        }
    });
    port
}

#[test]
fn an_upstream_that_fails_mid_exchange_is_a_502_or_a_cut_body() {
    let closes = raw_upstream_then(b"", false);
    let half_head = raw_upstream_then(b"HTTP/1.1 200 OK\r\nContent-Le", true);
    let mid_body = raw_upstream_then(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
        true,
    );
    let backend = Backend::echo();
    let gw = gateway_to(&[
        ("closes", format!("http://127.0.0.1:{closes}")),
        ("half-head", format!("http://127.0.0.1:{half_head}")),
        ("mid-body", format!("http://127.0.0.1:{mid_body}")),
        ("fine", backend.url()),
    ]);
    for path in ["/closes", "/half-head"] {
        let r = gw.connect().get(path);
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        assert_eq!(r.json()["status"], 502);
    }
    // the head went out before the reset: the client sees the body cut
    // short and the connection closed, never a shorter body that looks whole
    let mut c = gw.connect();
    c.send_head("GET", "/mid-body", &[], 0);
    let cut = c.try_read_response(false, true);
    match cut {
        Ok(r) => panic!("a whole response from a reset upstream: {}", r.status),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
    }
    for _ in 0..3 {
        assert_eq!(
            gw.connect().get("/fine").status,
            200,
            "the gateway still serves"
        );
    }
}

#[test]
fn an_ambiguous_upstream_response_is_a_502() {
    let two_cl =
        raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
    let huge: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nX-Huge: {}\r\nContent-Length: 2\r\n\r\nok",
            "h".repeat(70 * 1024)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let huge = raw_upstream(huge);
    let backend = Backend::echo();
    let gw = gateway_to(&[
        ("two-cl", format!("http://127.0.0.1:{two_cl}")),
        ("huge", format!("http://127.0.0.1:{huge}")),
        ("fine", backend.url()),
    ]);
    let mut c = gw.connect();
    let r = c.get("/two-cl");
    assert_eq!(r.status, 502, "{}", r.text());
    let mut c = gw.connect();
    let r = c.get("/huge");
    assert_eq!(r.status, 502, "a 70 KB upstream header section");
    assert_eq!(r.header("x-huge"), None);
    let mut c = gw.connect();
    assert_eq!(c.get("/fine").status, 200, "the gateway still serves");

    // a larger maxResponseHeaderSize lets the same response through
    let roomy = gateway_with_limits_to(
        "{maxResponseHeaderSize: 100KB}",
        &[("huge", format!("http://127.0.0.1:{huge}"))],
    );
    let r = roomy.connect().get("/huge");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-huge").map(str::len), Some(70 * 1024));
}

#[test]
fn bodies_over_the_limit_get_413_declared_or_mid_stream() {
    let backend = Backend::echo();
    let url = backend.url();
    let config = config_with_routes(&format!(
        r#"    - id: small
      path: "/small"
      maxBodySize: 1KB
      upstream: {{url: "{url}"}}
    - id: default
      path: "/default"
      upstream: {{url: "{url}"}}"#
    ));
    let config = with_server_settings(&config, &["maxBodySize: 4KB"]);
    let gw = Gateway::start(&config);

    let mut c = gw.connect();
    assert_eq!(c.request("POST", "/small", &[], &[b'a'; 1024]).status, 200);
    assert_eq!(backend.count(), 1);
    // declared too large: refused before the body is read, connection closed
    let head = "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n";
    let (status, closed, text) = raw(gw.port, head.as_bytes());
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("\"status\":413"), "{text}");
    assert!(closed);
    assert_eq!(backend.count(), 1, "nothing forwarded");
    // the server default applies to routes without their own limit
    let mut c = gw.connect();
    assert_eq!(
        c.request("POST", "/default", &[], &[b'a'; 4096]).status,
        200
    );
    let mut c = gw.connect();
    assert_eq!(
        c.request("POST", "/default", &[], &[b'a'; 4097]).status,
        413
    );

    // chunked, no declared length: cut off mid-stream
    let mut chunked =
        String::from("POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..3 {
        chunked.push_str(&format!("400\r\n{}\r\n", "b".repeat(1024)));
    }
    chunked.push_str("0\r\n\r\n");
    let (status, closed, text) = raw(gw.port, chunked.as_bytes());
    assert_eq!(status, 413, "{text}");
    assert!(closed);
    let complete = backend
        .seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|s| s.target == "/small" && s.body_len > 1024)
        .count();
    assert_eq!(complete, 0, "the backend never got more than the limit");
    let mut c = gw.connect();
    assert_eq!(c.get("/small").status, 200, "the gateway still serves");
}

#[test]
fn over_the_in_flight_limit_requests_get_503_at_once() {
    let release = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = release.clone();
    let backend = Backend::start(move |seen| {
        if seen.target == "/slow" {
            // hold the request until the test lets go (bounded: 10 s)
            let start = std::time::Instant::now();
            while !r.load(std::sync::atomic::Ordering::SeqCst)
                && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Reply::Json(200, "{}".into())
    });
    let config = with_server_settings(
        &catch_all_config(&backend.url()),
        &["maxRequestsInFlight: 2"],
    );
    let gw = Gateway::start(&config);
    let port = gw.port;
    let slow: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || Client::connect(port).get("/slow").status))
        .collect();
    wait_until(Duration::from_secs(10), "two requests in flight", || {
        backend.count() == 2
    });
    let mut c = gw.connect();
    let r = c.get("/fast");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["status"], 503);
    assert_eq!(backend.count(), 2, "the refused request was not forwarded");
    release.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in slow {
        assert_eq!(t.join().expect("thread"), 200);
    }
    let mut c = gw.connect();
    assert_eq!(c.get("/fast").status, 200);
    let m = gw.admin("/metrics").text();
    assert!(m.contains("flexgw_overload_rejections_total 1"), "{m}");
}

#[test]
fn path_spellings_a_backend_could_read_differently_are_refused() {
    let backend = Backend::echo();
    let url = backend.url();
    let gw = Gateway::start(&config_with_routes(&format!(
        r#"    - id: files
      path: "/files/*"
      allowEncodedSlashes: true
      upstream: {{url: "{url}"}}
    - id: all
      path: "/*"
      upstream: {{url: "{url}"}}"#
    )));
    for target in [
        "/api/a%2Fb",
        "/api/a%5cb",
        "/api/a\\b",
        "/api/..;/admin",
        "/api/%2e%2e;/admin",
        "/api/%252e%252e/admin",
        "/api/a%00b",
        "/api/a%0d%0ab",
        "/api/%C3%28",
        "/..",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (status, _, text) = raw(gw.port, req.as_bytes());
        assert_eq!(status, 400, "{target}: {text}");
    }
    assert_eq!(backend.count(), 0, "nothing reached the backend");
    // a route that opts in passes encoded slashes through unchanged
    let mut c = gw.connect();
    assert_eq!(c.get("/files/a%2Fb%5Cc").status, 200);
    assert_eq!(backend.last().target, "/files/a%2Fb%5Cc");
    assert_eq!(
        c.get("/files/../api/a%2Fb").status,
        400,
        "routed to /api/*: refused"
    );
    // `;` parameters: refused unless the route takes them
    assert_eq!(c.get("/api/caf%C3%A9;v=1").status, 400);
    assert_eq!(c.get("/files/caf%C3%A9").status, 200);
    assert_eq!(backend.last().target, "/files/caf%C3%A9");
}
