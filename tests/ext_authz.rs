//! External authorization against a real service in both of Envoy's modes
//! (tests/ext_authz_server.py): the gRPC `Authorization/Check` with
//! Envoy's published definitions, and plain HTTP. What the service was
//! told, what the upstream and the client get when it allows, denies or
//! cannot answer (refused unless `failureModeAllow`), and the headers a
//! client forges for the service to vouch for.

use crate::support::*;
use base64::Engine;
use std::time::{Duration, Instant};

fn grpc_policies(port: u16, extra: &str) -> String {
    format!(
        r#"    - policyRef: {{name: native-ext-authz-flex}}
      config:
        uri: h2://127.0.0.1:{port}
        serverType: grpc
        serverVersion: v3
        requestTimeout: 1000
        includePeerCertificate: false
        allowedHeaders: [authorization, x-tenant, x-remove-me, x-user, x-groups]
{extra}"#
    )
}

fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Response {
    gw.connect().request("GET", path, headers, b"")
}

/// Flex's `native-ext-authz-flex` with a gRPC service, from a Flex file
/// as written.
#[test]
fn a_grpc_service_allows_denies_and_a_failed_check_refuses() {
    let mut service = PyService::start("ext_authz_server.py", "grpc");
    let backend = Backend::echo();
    let gw = serve_flex_api("shop", &backend.url(), &grpc_policies(service.port, ""));
    // the gateway under `FLEX_HEADER_RAW_VALUE_ENABLE=false` (after this one)
    let policies = grpc_policies(service.port, "");
    let text_gw = || {
        let api = flex_api("shop", "{port}", &backend.url(), &policies);
        let gw = Gateway::start_files(
            &[("api.yaml", api), ("server.yaml", SERVER_ONLY.to_string())],
            &[("FLEX_HEADER_RAW_VALUE_ENABLE", "false")],
        );
        gw.wait_ready();
        gw
    };

    // allowed: the service's headers set, appended and removed upstream,
    // and its response header for the client
    let r = get(
        &gw,
        "/api/orders/7?x=1",
        &[
            ("authorization", "Bearer good"),
            ("x-request-id", "authz-1"),
            ("x-tenant", "acme"),
            ("x-hidden", "not for the service"),
            ("x-user", "mallory"),
            ("x-groups", "guest"),
            ("x-remove-me", "1"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-authz"), Some("ok"));
    let seen = backend.last();
    assert_eq!(
        seen.header("x-user"),
        Some("alice"),
        "the service's word, not the client's"
    );
    let groups: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-groups"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(groups, ["guest", "admin"], "appended");
    assert_eq!(seen.header("x-remove-me"), None);
    assert_eq!(seen.header("x-tenant"), Some("acme"));

    // what the service was told, read with Envoy's definitions
    let checks = service.lines();
    assert_eq!(checks.len(), 1, "{checks:?}");
    let attrs = &checks[0]["check"]["attributes"];
    let http = &attrs["request"]["http"];
    assert_eq!(http["method"], "GET");
    assert_eq!(http["path"], "/api/orders/7?x=1");
    assert_eq!(http["query"], "x=1");
    assert_eq!(http["id"], "authz-1");
    assert_eq!(http["scheme"], "http");
    assert_eq!(http["protocol"], "HTTP/1.1");
    assert_eq!(http["host"], "localhost", "the client's Host");
    // Flex's default: each header line's raw bytes in header_map (JSON
    // gives bytes in base64), the text map empty
    assert!(http.get("headers").is_none(), "{http}");
    let lines: Vec<(String, String)> = http["headerMap"]["headers"]
        .as_array()
        .expect("header_map")
        .iter()
        .map(|h| {
            let raw = h["rawValue"].as_str().unwrap_or_default();
            let raw = base64::engine::general_purpose::STANDARD.decode(raw);
            let raw = String::from_utf8(raw.unwrap()).unwrap();
            (h["key"].as_str().unwrap().to_string(), raw)
        })
        .collect();
    let line = |k: &str| lines.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(line("authorization"), Some("Bearer good"));
    assert_eq!(line("x-tenant"), Some("acme"));
    assert_eq!(line("x-hidden"), None, "only allowedHeaders: {http}");
    assert_eq!(line(":path"), None, "only allowedHeaders: {http}");
    assert_eq!(
        attrs["source"]["address"]["socketAddress"]["address"],
        "127.0.0.1"
    );
    assert_eq!(
        attrs["destination"]["address"]["socketAddress"]["portValue"],
        gw.port
    );
    assert!(
        attrs["request"]["time"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{attrs}"
    );

    // FLEX_HEADER_RAW_VALUE_ENABLE=false: the headers map, as text; a
    // repeated header's lines joined
    {
        let text = text_gw();
        let r = get(
            &text,
            "/api/orders/8",
            &[
                ("authorization", "Bearer good"),
                ("x-tenant", "a"),
                ("x-tenant", "b"),
            ],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let checks = service.lines();
        let http = &checks.last().unwrap()["check"]["attributes"]["request"]["http"];
        assert!(http.get("headerMap").is_none(), "{http}");
        assert_eq!(http["headers"]["authorization"], "Bearer good");
        assert_eq!(http["headers"]["x-tenant"], "a,b");
        assert!(text
            .admin("/config")
            .text()
            .contains("FLEX_HEADER_RAW_VALUE_ENABLE=false"));
        assert_eq!(backend.last().header("x-user"), Some("alice"));
    }

    // denied: the service's status, headers and body, nothing upstream
    let before = backend.seen.lock().unwrap().len();
    let r = get(&gw, "/api/orders/7", &[("authorization", "Bearer nope")]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"shop\""));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), r#"{"error":"who are you"}"#);
    let r = get(&gw, "/api/orders/7", &[]);
    assert_eq!(r.status, 401);

    // the service cannot decide, or is too slow: refused (403), fail closed
    let r = get(&gw, "/api/orders/7", &[("authorization", "Bearer broken")]);
    assert_eq!(r.status, 403, "{}", r.text());
    let started = Instant::now();
    let r = get(&gw, "/api/orders/7", &[("authorization", "Bearer slow")]);
    assert_eq!(r.status, 403);
    assert!(
        started.elapsed() < Duration::from_millis(2800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        backend.seen.lock().unwrap().len(),
        before,
        "nothing went upstream"
    );

    // the service goes away: still refused
    service.stop();
    let r = get(&gw, "/api/orders/7", &[("authorization", "Bearer good")]);
    assert_eq!(r.status, 403);
    assert_eq!(backend.seen.lock().unwrap().len(), before);

    assert_eq!(
        gw.metric("flexgw_ext_authz_checks_total{result=\"allowed\"}"),
        1.0
    );
    assert_eq!(
        gw.metric("flexgw_ext_authz_checks_total{result=\"denied\"}"),
        2.0
    );
    assert_eq!(
        gw.metric("flexgw_ext_authz_checks_total{result=\"failed\"}"),
        3.0
    );
}

/// `failureModeAllow: true` lets requests through when the service cannot
/// answer — only when written — and never when it denies.
#[test]
fn failure_mode_allow_passes_only_failed_checks() {
    let mut service = PyService::start("ext_authz_server.py", "grpc");
    let backend = Backend::echo();
    let gw = serve_flex_api(
        "shop",
        &backend.url(),
        &grpc_policies(service.port, "        failureModeAllow: true\n"),
    );
    assert_eq!(
        get(&gw, "/api/x", &[("authorization", "Bearer nope")]).status,
        401
    );
    assert_eq!(
        get(&gw, "/api/x", &[("authorization", "Bearer broken")]).status,
        200
    );
    service.stop();
    assert_eq!(
        get(&gw, "/api/x", &[("authorization", "Bearer good")]).status,
        200
    );
    assert_eq!(
        gw.metric("flexgw_ext_authz_checks_total{result=\"failed_allowed\"}"),
        2.0
    );
}

fn http_routes(port: u16, backend: &Backend) -> String {
    format!(
        r#"    - id: orders
      path: "/api/*"
      upstream: {{url: "{url}"}}
      policies:
        - external-authorization:
            uri: http://127.0.0.1:{port}/authz
            serverType: http
            requestTimeout: 1000
            allowedHeaders: [x-tenant]
            serviceRequestHeadersToAdd: [{{key: x-gateway, value: edge-1}}]
            serviceResponseUpstreamHeaders: [x-user]
            serviceResponseUpstreamHeadersToAppend: [x-groups]
            serviceResponseClientHeaders: [www-authenticate]
            serviceResponseClientHeadersOnSuccess: [x-ratelimit-remaining]
"#,
        url = backend.url()
    )
}

/// The HTTP mode, from a `kind: Gateway` file: what the service is sent,
/// which of its headers reach the upstream and the client, its denials and
/// redirects passed on, its failures refused.
#[test]
fn an_http_service_is_asked_with_the_request_and_its_answer_is_followed() {
    let service = PyService::start("ext_authz_server.py", "http");
    let backend = Backend::echo();
    let gw = Gateway::start(&config_with_routes(&http_routes(service.port, &backend)));

    let r = gw.connect().request(
        "POST",
        "/api/orders/7?x=1",
        &[
            ("authorization", "Bearer good"),
            ("x-tenant", "acme"),
            ("x-hidden", "no"),
            ("content-type", "application/json"),
        ],
        b"{\"qty\":1}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-remaining"), Some("9"));
    assert_eq!(r.header("x-other"), None, "not listed for the client");
    let seen = backend.last();
    assert_eq!(seen.header("x-user"), Some("alice"));
    assert_eq!(seen.header("x-groups"), Some("admin"));
    assert_eq!(seen.header("x-other"), None);
    assert_eq!(
        seen.body, b"{\"qty\":1}",
        "the body went upstream untouched"
    );

    let checks = service.lines();
    assert_eq!(checks.len(), 1);
    let check = &checks[0];
    assert_eq!(check["method"], "POST");
    assert_eq!(check["path"], "/authz/api/orders/7?x=1");
    assert_eq!(check["body"], 0, "no body to the service");
    let header = |name: &str| -> Vec<String> {
        check["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(header("authorization"), ["Bearer good"]);
    assert_eq!(header("x-tenant"), ["acme"]);
    assert_eq!(header("x-gateway"), ["edge-1"]);
    assert_eq!(header("host"), ["localhost"], "the client's Host");
    assert!(header("x-hidden").is_empty() && header("content-type").is_empty());

    // a denial as the service wrote it, with the listed headers only
    let r = get(&gw, "/api/orders/7", &[("authorization", "Bearer nope")]);
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), r#"{"error":"who are you"}"#);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"shop\""));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-debug"), None);
    // a redirect (a login page) goes to the client, not followed
    let r = get(
        &gw,
        "/api/orders/7",
        &[("authorization", "Bearer redirect")],
    );
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("https://login.example/"));
    // a denial body past the bound, and a slow service: refused
    let r = get(&gw, "/api/orders/7", &[("authorization", "Bearer broken")]);
    assert_eq!(r.status, 403);
    assert!(r.text().len() < 1024, "not the service's 70 KB");
    let r = get(&gw, "/api/orders/7", &[("authorization", "Bearer slow")]);
    assert_eq!(r.status, 403);
    assert_eq!(
        backend.seen.lock().unwrap().len(),
        1,
        "only the allowed request went upstream"
    );
    // the keep-alive connection survives a local answer
    let mut c = gw.connect();
    assert_eq!(c.request("GET", "/api/a", &[], b"").status, 401);
    assert_eq!(
        c.request("GET", "/api/b", &[("authorization", "Bearer good")], b"")
            .status,
        200
    );
}

/// Headers the HTTP service vouches for upstream are the gateway's word:
/// a client's own copy never reaches the upstream, in any spelling, also
/// when the service allows without naming them.
#[test]
fn a_client_cannot_forge_the_headers_the_service_vouches_for() {
    let service = PyService::start("ext_authz_server.py", "http");
    let backend = Backend::echo();
    let gw = Gateway::start(&config_with_routes(&http_routes(service.port, &backend)));
    for (name, value) in [
        ("x-user", "admin"),
        ("X-User", "admin"),
        ("x_user", "admin"),
        ("X-GROUPS", "root"),
        ("x_groups", "root"),
    ] {
        let r = get(
            &gw,
            "/api/me",
            &[("authorization", "Bearer anon"), (name, value)],
        );
        assert_eq!(r.status, 200, "{name}");
        let seen = backend.last();
        assert_eq!(seen.header("x-user"), None, "{name}: {:?}", seen.headers);
        assert_eq!(seen.header("x_user"), None, "{name}: {:?}", seen.headers);
        assert_eq!(seen.header("x-groups"), None, "{name}: {:?}", seen.headers);
        assert_eq!(seen.header("x_groups"), None, "{name}: {:?}", seen.headers);
    }
    // raw bytes: forged copies beside the service's value
    let (status, _, out) = raw(
        gw.port,
        b"GET /api/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\nX-User: admin\r\nX_User: root\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{out}");
    let seen = backend.last();
    let users: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-user"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(users, ["alice"]);
}

/// What validate says about the fields.
#[test]
fn validate_names_what_is_wrong() {
    let dir = temp_dir("extauthz");
    let file = flex_api_file(
        &dir,
        r#"    - policyRef: {name: native-ext-authz-flex}
      config:
        uri: ftp://authz:9000
        serverType: grpc
        serverVersion: v2
        requestTimeout: 0
        allowedHeaders: ["bad header"]
"#,
    );
    let (ok, out, err) = validate(&file);
    let text = err + &out;
    assert!(!ok, "{text}");
    assert!(
        text.contains("config.uri") && text.contains("h2://"),
        "{text}"
    );
    assert!(
        text.contains("config.serverVersion") && text.contains("only v3"),
        "{text}"
    );
    assert!(text.contains("config.requestTimeout"), "{text}");
    assert!(
        text.contains("\"bad header\" is not a header name"),
        "{text}"
    );

    // HTTP-only fields on a gRPC service: loaded, and said
    let file = flex_api_file(
        &dir,
        r#"    - policyRef: {name: native-ext-authz-flex}
      config:
        uri: http://authz:9000
        serviceResponseUpstreamHeaders: [x-user]
"#,
    );
    let (ok, out, err) = validate(&file);
    let text = err + &out;
    assert!(ok, "{text}");
    assert!(
        text.contains("serviceResponseUpstreamHeaders") && text.contains("serverType: http only"),
        "{text}"
    );
}
