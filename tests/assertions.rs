//! What the gateway tells a backend must be true: tried as an attacker
//! would. Identity headers the gateway asserts are never the client's,
//! header-name spellings a CGI backend merges are handled, forwarding
//! headers come from trusted proxies only, credentials come once, JWT
//! registered claims are required and typed, one host has one spelling,
//! `;` path parameters and method case variants cannot step around a
//! route, and CORS matches only real origins. Every case checks what the
//! backend saw, not only the status.

use crate::support::*;
use base64::Engine;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const SECRET: &str = "assertions-test-secret-0123456789abcdef";

/// Raw request bytes; the response's status.
fn raw_status(port: u16, request: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(request.as_bytes()).expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An HS256 token with exactly this header and payload.
fn token(header: Value, payload: Value) -> String {
    use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let key = PKey::hmac(SECRET.as_bytes()).unwrap();
    let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
    signer.update(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(&signer.sign_to_vec().unwrap()))
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"sub": "alice", "exp": 4_000_000_000u64});
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}

fn hs(extra: Value) -> String {
    token(json!({"alg": "HS256", "typ": "JWT"}), claims(extra))
}

/// A gateway whose routes (made from the backend's URL) all go to one
/// echoing backend.
fn gateway(routes: impl Fn(&str) -> String) -> (Backend, Gateway) {
    let backend = Backend::echo();
    let gw = Gateway::start(&config_with_routes(&routes(&backend.url())));
    (backend, gw)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn identity_headers_are_the_gateways_word_or_absent() {
    let (backend, gw) = gateway(|url| {
        format!(
            r##"    - id: keyed
      path: "/keyed/*"
      upstream: {{url: "{url}"}}
      policies:
        - api-key: {{keys: [{{consumer: consumer-1, key: k-1}}], consumerHeader: X-Consumer}}
        - header-injection:
            request:
              - {{name: X-Client-Ip, value: "{{client_ip}}"}}
              - {{name: X-Who, value: "{{consumer}}"}}
              - {{name: X-Tenant, value: "{{claim.tenant}}"}}
              - {{name: X-Flex-User, value: "#[attributes.headers['x-nothing-here']]"}}
              - {{name: X-Static, value: fixed}}
    - id: token
      path: "/token/*"
      upstream: {{url: "{url}"}}
      policies:
        - jwt-validation:
            keys: [{{algorithm: HS256, secret: "{SECRET}"}}]
            forwardClaims: {{tenant: X-Tenant, sub: X-User-Id}}"##
        )
    });
    let forged = [
        ("X-Consumer", "admin"),
        ("x-consumer", "admin"),
        ("X-CONSUMER", "root"),
        ("X-Who", "admin"),
        ("X-Client-Ip", "10.0.0.1"),
        ("X-Tenant", "other-tenant"),
        ("x-tenant", "second-copy"),
        ("X-Flex-User", "admin"),
        ("X-User-Id", "admin"),
        ("X-Static", "client"),
    ];
    let mut c = gw.connect();
    let mut headers = forged.to_vec();
    headers.push(("x-api-key", "k-1"));
    let r = c.request("GET", "/keyed/a", &headers, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = backend.last();
    let all = |name: &str| -> Vec<String> {
        seen.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    };
    // the gateway's values, once
    assert_eq!(all("x-consumer"), ["consumer-1"]);
    assert_eq!(all("x-who"), all("x-consumer"));
    assert_eq!(all("x-client-ip"), ["127.0.0.1"]);
    assert_eq!(all("x-static"), ["fixed"]);
    // no value for this request: no header at all, never the client's
    assert!(all("x-tenant").is_empty(), "{:?}", all("x-tenant"));
    assert!(all("x-flex-user").is_empty(), "{:?}", all("x-flex-user"));
    // X-User-Id is asserted on the token route only: here it is the client's
    assert_eq!(all("x-user-id"), ["admin"]);

    // a verified token without the forwarded claim: no X-Tenant either
    let t = hs(json!({}));
    let mut headers = forged.to_vec();
    let auth = bearer(&t);
    headers.push(("authorization", &auth));
    let r = c.request("GET", "/token/a", &headers, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = backend.last();
    assert_eq!(seen.header("x-tenant"), None);
    assert_eq!(seen.header("x-user-id"), Some("alice"));
    assert_eq!(
        seen.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-user-id"))
            .count(),
        1
    );
    // with the claim: its value only
    let t = hs(json!({"tenant": "acme"}));
    let auth = bearer(&t);
    let r = c.request(
        "GET",
        "/token/a",
        &[("authorization", &auth), ("x-tenant", "evil")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(backend.last().header("x-tenant"), Some("acme"));
}

#[test]
fn underscored_header_names_are_dropped_refused_or_allowed() {
    let backend = Backend::echo();
    let url = backend.url();
    let routes = format!(
        r#"    - id: keyed
      path: "/*"
      upstream: {{url: "{url}"}}
      policies:
        - api-key: {{keys: [{{consumer: consumer-1, key: k-1}}], consumerHeader: X-Consumer}}
        - header-removal: {{request: ["x-internal-*", X-Debug]}}"#
    );
    let spellings = [
        ("X_Consumer", "admin"),
        ("x_consumer", "admin"),
        ("X_Internal_Role", "admin"),
        ("x_debug", "1"),
        ("X_Forwarded_For", "10.0.0.1"),
    ];
    let mut headers = spellings.to_vec();
    headers.push(("x-api-key", "k-1"));
    let has_underscore = |seen: &Seen| seen.headers.iter().any(|(k, _)| k.contains('_'));

    // default: dropped before routing, counted
    let gw = Gateway::start(&config_with_routes(&routes));
    let r = gw.connect().request("GET", "/a", &headers, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = backend.last();
    assert!(!has_underscore(&seen), "{:?}", seen.headers);
    assert_eq!(seen.header("x-consumer"), Some("consumer-1"));
    assert_eq!(
        gw.metric("flexgw_request_headers_dropped_total{reason=\"underscore\"}"),
        5.0
    );
    drop(gw);

    // reject: 400, nothing forwarded
    let gw = Gateway::start(&with_server_settings(
        &config_with_routes(&routes),
        &["limits: {underscoresInHeaders: reject}"],
    ));
    let before = backend.count();
    let r = gw.connect().request(
        "GET",
        "/a",
        &[("x-api-key", "k-1"), ("X_Consumer", "a")],
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(backend.count(), before);
    let r = gw
        .connect()
        .request("GET", "/a", &[("x-api-key", "k-1")], b"");
    assert_eq!(r.status, 200);
    drop(gw);

    // allow: passed, but what the gateway removes or asserts matches
    // both spellings
    let gw = Gateway::start(&with_server_settings(
        &config_with_routes(&routes),
        &["limits: {underscoresInHeaders: allow}"],
    ));
    let mut headers = spellings.to_vec();
    headers.push(("x-api-key", "k-1"));
    headers.push(("x_other", "kept"));
    let r = gw.connect().request("GET", "/a", &headers, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = backend.last();
    assert_eq!(seen.header("x_consumer"), None, "asserted: both spellings");
    assert_eq!(seen.header("x-consumer"), Some("consumer-1"));
    assert_eq!(seen.header("x_internal_role"), None, "removal pattern");
    assert_eq!(seen.header("x_debug"), None, "removal name");
    assert_eq!(seen.header("x_other"), Some("kept"));
    // a listener-level setting is validated
    let dir = temp_dir("underscores");
    let file = dir.join("gw.yaml");
    std::fs::write(
        &file,
        with_server_settings(
            &config_with_routes(&routes),
            &["limits: {underscoresInHeaders: maybe}"],
        )
        .replace("{port}", "8081")
        .replace("{admin}", "9901")
        .replace("{dir}", "/tmp"),
    )
    .unwrap();
    let (ok, out, err) = validate(&file);
    let text = err + &out;
    assert!(!ok);
    assert!(
        text.contains("underscoresInHeaders") && text.contains("expected allow, drop or reject"),
        "{text}"
    );
}

#[test]
fn forwarded_and_x_real_ip_come_only_from_trusted_proxies() {
    let backend = Backend::echo();
    let url = backend.url();
    let routes = format!("    - id: all\n      path: \"/*\"\n      upstream: {{url: \"{url}\"}}");
    let forged = [
        (
            "Forwarded",
            "for=203.0.113.9;proto=https;host=admin.example.com",
        ),
        ("forwarded", "for=\"[2001:db8::1]\""),
        ("X-Real-IP", "203.0.113.9"),
        ("x-real-ip", "10.0.0.1"),
        ("X-REAL-IP", "10.0.0.2"),
    ];
    let gw = Gateway::start(&config_with_routes(&routes));
    let r = gw.connect().request("GET", "/a", &forged, b"");
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert_eq!(seen.header("forwarded"), None);
    assert_eq!(seen.header("x-real-ip"), None);
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(
        gw.metric("flexgw_request_headers_dropped_total{reason=\"untrusted_forwarding\"}") >= 2.0
    );
    drop(gw);
    // from a trusted proxy they pass as it sent them
    let gw = Gateway::start(&with_server_settings(
        &config_with_routes(&routes),
        &["trustedProxies: [127.0.0.1]"],
    ));
    let r = gw.connect().request(
        "GET",
        "/a",
        &[
            ("Forwarded", "for=203.0.113.9"),
            ("X-Real-IP", "203.0.113.9"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert_eq!(seen.header("forwarded"), Some("for=203.0.113.9"));
    assert_eq!(seen.header("x-real-ip"), Some("203.0.113.9"));
}

#[test]
fn credentials_come_once_or_the_request_is_refused() {
    let (backend, gw) = gateway(|url| {
        format!(
            r#"    - id: keyed
      path: "/keyed/*"
      upstream: {{url: "{url}"}}
      policies:
        - api-key: {{keys: ["k-1"], queryParam: apikey, keepKey: true}}
    - id: token
      path: "/token/*"
      upstream: {{url: "{url}"}}
      policies:
        - jwt-validation:
            keys: [{{algorithm: HS256, secret: "{SECRET}"}}]
            keepToken: true
    - id: header-token
      path: "/htoken/*"
      upstream: {{url: "{url}"}}
      policies:
        - jwt-validation:
            keys: [{{algorithm: HS256, secret: "{SECRET}"}}]
            token: {{header: X-Token}}
    - id: open
      path: "/open/*"
      upstream: {{url: "{url}"}}"#
        )
    });
    let good = hs(json!({}));
    let port = gw.port;
    let before = backend.count();
    for (target, lines) in [
        (
            "/token/a",
            format!("Authorization: Bearer {good}\r\nAuthorization: Bearer forged\r\n"),
        ),
        (
            "/token/a",
            format!("authorization: Bearer {good}\r\nAUTHORIZATION: Bearer {good}\r\n"),
        ),
        (
            "/token/a",
            format!("Authorization: Bearer {good}\r\nauthorization: \r\n"),
        ),
        (
            "/open/a",
            "Authorization: Basic YTpi\r\nAuthorization: Bearer x\r\n".to_string(),
        ),
        (
            "/keyed/a",
            "X-Api-Key: k-1\r\nX-Api-Key: other\r\n".to_string(),
        ),
        (
            "/keyed/a",
            "x-api-key: k-1\r\nX-API-KEY: k-1\r\n".to_string(),
        ),
        ("/keyed/a?apikey=k-1&apikey=other", String::new()),
        ("/keyed/a?apikey=k-1&api%6Bey=k-1", String::new()),
        (
            "/htoken/a",
            format!("X-Token: {good}\r\nx-token: {good}\r\n"),
        ),
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\n{lines}\r\n");
        assert_eq!(raw_status(port, &req), 400, "{target} {lines:?}");
    }
    assert_eq!(backend.count(), before, "nothing reached the backend");
    // one copy: what was verified is what goes upstream
    let mut c = gw.connect();
    let auth = bearer(&good);
    assert_eq!(
        c.request("GET", "/token/a", &[("authorization", &auth)], b"")
            .status,
        200
    );
    assert_eq!(backend.last().header("authorization"), Some(auth.as_str()));
    assert_eq!(
        c.request("GET", "/keyed/a", &[("x-api-key", "k-1")], b"")
            .status,
        200
    );
    assert_eq!(backend.last().header("x-api-key"), Some("k-1"));
    assert_eq!(c.get("/keyed/a?apikey=k-1").status, 200);
    assert_eq!(
        c.request("GET", "/htoken/a", &[("x-token", &good)], b"")
            .status,
        200
    );
}

#[test]
fn jwt_issuer_audience_and_crit_are_strict() {
    let (backend, gw) = gateway(|url| {
        format!(
            r#"    - id: strict
      path: "/*"
      upstream: {{url: "{url}"}}
      policies:
        - jwt-validation:
            keys: [{{algorithm: HS256, secret: "{SECRET}"}}]
            issuers: [iss-a]
            audiences: [orders]"#
        )
    });
    let mut c = gw.connect();
    let status = |c: &mut Client, t: &str| {
        let auth = bearer(t);
        c.request("GET", "/x", &[("authorization", &auth)], b"")
            .status
    };
    let ok = json!({"iss": "iss-a", "aud": "orders"});
    assert_eq!(status(&mut c, &hs(ok.clone())), 200);
    assert_eq!(
        status(&mut c, &hs(json!({"iss": "iss-a", "aud": ["x", "orders"]}))),
        200
    );
    let before = backend.count();
    for bad in [
        json!({"aud": "orders"}),
        json!({"iss": null, "aud": "orders"}),
        json!({"iss": 7, "aud": "orders"}),
        json!({"iss": ["iss-a"], "aud": "orders"}),
        json!({"iss": {"v": "iss-a"}, "aud": "orders"}),
        json!({"iss": "iss-b", "aud": "orders"}),
        json!({"iss": "ISS-A", "aud": "orders"}),
        json!({"iss": "iss-a"}),
        json!({"iss": "iss-a", "aud": null}),
        json!({"iss": "iss-a", "aud": 1}),
        json!({"iss": "iss-a", "aud": []}),
        json!({"iss": "iss-a", "aud": ["orders", 1]}),
        json!({"iss": "iss-a", "aud": [null]}),
        json!({"iss": "iss-a", "aud": {"orders": true}}),
        json!({"iss": "iss-a", "aud": "orders2"}),
        json!({"iss": "iss-a", "aud": ["other"]}),
    ] {
        assert_eq!(status(&mut c, &hs(bad.clone())), 401, "{bad}");
    }
    // crit: extensions the gateway does not understand
    for header in [
        json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
        json!({"alg": "HS256", "crit": ["b64"], "b64": false}),
        json!({"alg": "HS256", "crit": []}),
        json!({"alg": "HS256", "crit": "x"}),
        json!({"alg": "HS256", "typ": "JWT", "crit": null}),
    ] {
        let t = token(header.clone(), claims(ok.clone()));
        assert_eq!(status(&mut c, &t), 401, "{header}");
    }
    assert_eq!(
        backend.count(),
        before,
        "no refused token reached the backend"
    );
}

#[test]
fn jwt_validation_flex_keeps_flex_defaults_for_aud() {
    let backend = Backend::echo();
    let url = backend.url();
    let api = |mandatory: bool| {
        format!(
            r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: ApiInstance
metadata: {{name: orders}}
spec:
  address: http://127.0.0.1:{{port}}/
  services:
    orders: {{address: "{url}"}}
  policies:
    - policyRef: {{name: jwt-validation-flex}}
      config:
        signingMethod: hmac
        signingKeyLength: 256
        textKey: "{SECRET}"
        validateAudClaim: true
        supportedAudiences: "orders, billing"
        mandatoryAudClaim: {mandatory}
"#
        )
    };
    let status = |port: u16, t: &str| {
        let auth = bearer(t);
        Client::connect(port)
            .request("GET", "/x", &[("authorization", &auth)], b"")
            .status
    };
    let gw = Gateway::start_files(
        &[
            ("server.yaml", SERVER_ONLY.to_string()),
            ("api.yaml", api(false)),
        ],
        &[],
    );
    // Flex: without aud the token passes unless mandatoryAudClaim
    assert_eq!(status(gw.port, &hs(json!({}))), 200);
    assert_eq!(status(gw.port, &hs(json!({"aud": "billing"}))), 200);
    assert_eq!(status(gw.port, &hs(json!({"aud": "other"}))), 401);
    assert_eq!(status(gw.port, &hs(json!({"aud": null}))), 401);
    assert_eq!(status(gw.port, &hs(json!({"aud": 3}))), 401);
    let t = token(
        json!({"alg": "HS256", "crit": ["exp"]}),
        claims(json!({"aud": "orders"})),
    );
    assert_eq!(status(gw.port, &t), 401);
    drop(gw);
    let gw = Gateway::start_files(
        &[
            ("server.yaml", SERVER_ONLY.to_string()),
            ("api.yaml", api(true)),
        ],
        &[],
    );
    assert_eq!(status(gw.port, &hs(json!({}))), 401);
    assert_eq!(status(gw.port, &hs(json!({"aud": ["x", "orders"]}))), 200);
    let _ = backend.count();
}

#[test]
fn one_host_has_one_spelling() {
    let a = Backend::echo();
    let other = Backend::echo();
    let gw = Gateway::start(&config_with_routes(&format!(
        r#"    - id: api
      path: "/*"
      host: api.example.com
      upstream: {{url: "{}"}}
    - id: rest
      path: "/*"
      upstream: {{url: "{}"}}"#,
        a.url(),
        other.url()
    )));
    let port = gw.port;
    for host in [
        "api.example.com",
        "API.EXAMPLE.COM",
        "Api.Example.Com",
        "api.example.com.",
        "api.example.com:80",
        "API.example.com.:80",
        "api.example.com:",
        "api.example.com:0080",
    ] {
        let before = a.count();
        let req = format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(raw_status(port, &req), 200, "{host}");
        assert_eq!(
            a.count(),
            before + 1,
            "{host} routed to the api.example.com route"
        );
        assert_eq!(
            a.last().header("x-forwarded-host"),
            Some("api.example.com"),
            "{host}"
        );
    }
    // an absolute-form target: its authority, normalised the same way
    let req = "GET http://API.example.com/x HTTP/1.1\r\nHost: API.example.com\r\n\r\n";
    assert_eq!(raw_status(port, req), 200);
    assert_eq!(a.last().header("x-forwarded-host"), Some("api.example.com"));
    // a port other than the default stays (host routes match the name)
    let req = "GET /x HTTP/1.1\r\nHost: API.example.com:8080\r\n\r\n";
    assert_eq!(raw_status(port, req), 200);
    assert_eq!(
        a.last().header("x-forwarded-host"),
        Some("api.example.com:8080")
    );
    let req = "GET /x HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
    assert_eq!(raw_status(port, req), 200);
    assert_eq!(
        other.last().header("x-forwarded-host"),
        Some("www.example.com")
    );
    let (ca, co) = (a.count(), other.count());
    for host in [
        "api.example.com,evil.example.com",
        "evil.example.com, api.example.com",
        "user@api.example.com",
        "api.example.com@evil.example.com",
        "api.example.com:99999",
        "api.example.com:0",
        "api.example.com:80:80",
        "api.example.com:http",
        "api .example.com",
        "api.example.com/admin",
        "api.example.com?x",
        "api.example.com#x",
        "api%2eexample.com",
        "api..example.com",
        "api.example.com..",
        ".api.example.com",
        "api.example.com\\x",
        "[::1",
        "[::1]x",
        "[zz::1]",
        "*.example.com",
        "api.example.com;x",
    ] {
        let req = format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(raw_status(port, &req), 400, "{host}");
    }
    assert_eq!((a.count(), other.count()), (ca, co), "nothing forwarded");
}

#[test]
fn path_parameters_and_method_case_cannot_step_around_a_route() {
    let (backend, gw) = gateway(|url| {
        format!(
            r#"    - id: admin
      path: "/admin/*"
      upstream: {{url: "{url}"}}
      policies:
        - api-key: {{keys: ["k-1"]}}
    - id: jsessions
      path: "/app/*"
      allowPathParameters: true
      upstream: {{url: "{url}"}}
    - id: writes
      path: "/orders/*"
      methods: [GET]
      upstream: {{url: "{url}"}}
    - id: open
      path: "/*"
      allowPathParameters: true
      upstream: {{url: "{url}"}}"#
        )
    });
    let port = gw.port;
    let before = backend.count();
    for target in [
        "/admin;x/secret",
        "/admin;/secret",
        "/admin;jsessionid=1/secret",
        "/admin/secret;x",
        "/;x/admin/secret",
        "/x/..;/admin/secret",
        "/app/../admin;x/secret",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        let status = raw_status(port, &req);
        assert!(
            status == 400 || status == 401,
            "{target}: {status} (routed past the admin route?)"
        );
    }
    assert_eq!(backend.count(), before, "the backend saw none of them");
    // a route that takes parameters: routed without them, forwarded with them
    let mut c = gw.connect();
    assert_eq!(c.get("/app/cart;jsessionid=abc/items").status, 200);
    assert_eq!(backend.last().target, "/app/cart;jsessionid=abc/items");
    // on a route without the opt-in (after routing without them): 400
    let req = "GET /orders;v=1/1 HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(raw_status(port, req), 400);

    // method case variants of standard methods
    let before = backend.count();
    for method in [
        "post", "Post", "pOST", "get", "Get", "delete", "put", "patch", "options", "Head",
    ] {
        let req = format!("{method} /orders/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(raw_status(port, &req), 400, "{method}");
    }
    assert_eq!(backend.count(), before);
    // the method as written: POST is not the GET-only route's (it falls
    // through to the open route)
    let req = "POST /orders/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(raw_status(port, req), 200);
    assert_eq!(backend.last().method, "POST");
    let req = "GET /orders/1 HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(raw_status(port, req), 200);
}

#[test]
fn cors_matches_only_serialized_origins() {
    let (_backend, gw) = gateway(|url| {
        format!(
            r#"    - id: api
      path: "/*"
      upstream: {{url: "{url}"}}
      policies:
        - cors:
            origins: ["https://app.example.com", "https://*.example.com"]
            allowCredentials: true"#
        )
    });
    let mut c = gw.connect();
    for origin in [
        "https://app.example.com",
        "https://a.b.example.com",
        "HTTPS://APP.EXAMPLE.COM",
    ] {
        let r = c.request("GET", "/x", &[("origin", origin)], b"");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(origin),
            "{origin}"
        );
    }
    for origin in [
        "https://app.example.com/",
        "https://app.example.com/path",
        "https://app.example.com?x=1",
        "https://app.example.com#x",
        "https://evil.net@app.example.com",
        "https://app.example.com@evil.net",
        "https://app.example.com%2F.evil.net",
        "https://a.example.com%60.evil.net",
        "https://app.example.com\\.evil.net",
        "https://app.example.com:",
        "https://app.example.com:443:1",
        "https://app .example.com",
        "null",
        "file://",
        "https://x.example.com/.evil.net",
    ] {
        let r = c.request("GET", "/x", &[("origin", origin)], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin:?}");
        let r = c.request(
            "OPTIONS",
            "/x",
            &[("origin", origin), ("access-control-request-method", "PUT")],
            b"",
        );
        assert_eq!(
            r.header("access-control-allow-origin"),
            None,
            "preflight {origin:?}"
        );
    }
}
