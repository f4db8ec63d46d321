//! Access-control and transformation policies as clients (and attackers)
//! see them: IP allow/block lists over IPv4 and IPv6 with trusted proxies
//! and forged X-Forwarded-For, CORS (preflights, credentials, subdomain
//! patterns, Vary), header injection and removal, path rewriting.

use crate::support::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

/// Listen on `::` (IPv4 clients arrive as IPv4-mapped IPv6 addresses) and
/// trust `::1` as a proxy.
fn dual_stack(config: String, trusted: &str) -> String {
    config
        .replace("host: \"127.0.0.1\"\n  ", "host: \"::\"\n  ")
        .replace(
            "  server:\n",
            &format!("  server:\n    trustedProxies: [{trusted}]\n"),
        )
}

#[test]
fn ip_lists_over_ipv4_and_ipv6_with_trusted_proxies() {
    let backend = Backend::echo();
    let url = backend.url();
    let config = dual_stack(
        config_with_routes(&format!(
            r#"    - id: allow4
      path: "/allow4"
      upstream: {{url: "{url}"}}
      policies: [{{ip-allowlist: {{ips: [127.0.0.0/8]}}}}]
    - id: allow6
      path: "/allow6"
      upstream: {{url: "{url}"}}
      policies: [{{ip-allowlist: {{ips: ["::1/128"]}}}}]
    - id: block4
      path: "/block4"
      upstream: {{url: "{url}"}}
      policies: [{{ip-blocklist: {{ips: [127.0.0.1, 10.0.0.0/8]}}}}]
    - id: internal
      path: "/internal"
      upstream: {{url: "{url}"}}
      policies: [{{ip-allowlist: {{ips: [10.0.0.0/8, "2001:db8::/32"]}}}}]"#
        )),
        "\"::1\"",
    );
    let gw = Gateway::start(&config);
    let mut v4 = gw.connect();
    let mut v6 = Client::connect_v6(gw.port);

    assert_eq!(v4.get("/allow4").status, 200);
    let r = v6.get("/allow4");
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["status"], 403);
    assert_eq!(v6.get("/allow6").status, 200);
    assert_eq!(v4.get("/allow6").status, 403);
    assert_eq!(
        v4.get("/block4").status,
        403,
        "::ffff:127.0.0.1 matches 127.0.0.1"
    );
    assert_eq!(v6.get("/block4").status, 200);

    // 127.0.0.1 is not a trusted proxy: its X-Forwarded-For changes nothing
    let forged = [("x-forwarded-for", "10.9.9.9")];
    assert_eq!(v4.request("GET", "/internal", &forged, b"").status, 403);
    assert_eq!(v4.request("GET", "/block4", &forged, b"").status, 403);
    // ::1 is trusted: the right-most address that is not a trusted proxy
    assert_eq!(v6.request("GET", "/internal", &forged, b"").status, 200);
    let chain = [("x-forwarded-for", "203.0.113.5, 2001:db8::7, ::1")];
    assert_eq!(v6.request("GET", "/internal", &chain, b"").status, 200);
    let outsider = [("x-forwarded-for", "10.0.0.1, 203.0.113.5")];
    assert_eq!(v6.request("GET", "/internal", &outsider, b"").status, 403);
    assert_eq!(
        v6.request("GET", "/block4", &[("x-forwarded-for", "10.1.2.3")], b"")
            .status,
        403
    );

    let passed = backend.count();
    assert_eq!(passed, 5, "refused requests never reach the backend");
    let m = gw.admin("/metrics").text();
    assert!(
        m.contains(r#"flexgw_policy_rejections_total{route="internal",policy="ip-allowlist"} 2"#),
        "{m}"
    );
}

fn cors_gateway(backend: &Backend) -> Gateway {
    let url = backend.url();
    Gateway::start(&config_with_routes(&format!(
        r#"    - id: api
      path: "/api/*"
      methods: [GET, POST]
      upstream: {{url: "{url}"}}
      policies:
        - api-key: {{keys: ["k-1"]}}
        - cors:
            origins: ["https://app.example.com", "https://*.partner.test"]
            methods: [GET, POST, PUT]
            headers: [Content-Type, X-API-Key]
            exposeHeaders: [X-Request-Id]
            allowCredentials: true
            maxAge: 10m
    - id: public
      path: "/public"
      upstream: {{url: "{url}"}}
      policies:
        - cors: {{origins: ["*"]}}"#
    )))
}

fn preflight<'a>(origin: &'a str, method: &'a str, headers: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("origin", origin),
        ("access-control-request-method", method),
    ];
    if !headers.is_empty() {
        h.push(("access-control-request-headers", headers));
    }
    h
}

#[test]
fn cors_preflights_credentials_and_vary() {
    let backend = Backend::echo();
    let gw = cors_gateway(&backend);
    let mut c = gw.connect();

    // allowed preflight, on a route whose methods lack OPTIONS and PUT, and
    // before the API key policy (listed first) could refuse it
    let r = c.request(
        "OPTIONS",
        "/api/orders",
        &preflight("https://app.example.com", "PUT", "content-type, x-api-key"),
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), None);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, PUT")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type, x-api-key")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));

    // a subdomain of the pattern; not the apex, not a look-alike
    let r = c.request(
        "OPTIONS",
        "/api/x",
        &preflight("https://eu.shop.partner.test", "GET", ""),
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://eu.shop.partner.test")
    );
    for origin in [
        "https://partner.test",
        "https://evilpartner.test",
        "http://eu.partner.test",
        "https://evil.example",
    ] {
        let r = c.request("OPTIONS", "/api/x", &preflight(origin, "GET", ""), b"");
        assert_eq!(r.status, 403, "{origin}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
    }
    // method or header not allowed
    let r = c.request(
        "OPTIONS",
        "/api/x",
        &preflight("https://app.example.com", "DELETE", ""),
        b"",
    );
    assert_eq!(r.status, 403);
    let r = c.request(
        "OPTIONS",
        "/api/x",
        &preflight("https://app.example.com", "GET", "x-secret"),
        b"",
    );
    assert_eq!(r.status, 403);
    assert_eq!(backend.count(), 0, "preflights are never forwarded");

    // an OPTIONS without the preflight headers is an ordinary request: 405
    assert_eq!(c.request("OPTIONS", "/api/x", &[], b"").status, 405);

    // actual requests: allowed origin echoed (credentials: never `*`),
    // exposed headers, Vary; the upstream's own CORS headers are replaced
    let r = c.request(
        "GET",
        "/api/x",
        &[("origin", "https://app.example.com"), ("x-api-key", "k-1")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));
    // the 401 of the API key policy is readable by the allowed page
    let r = c.request(
        "GET",
        "/api/x",
        &[("origin", "https://app.example.com")],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    // a disallowed origin is proxied (CORS is enforced by browsers) without
    // any Access-Control-Allow-* header
    let r = c.request(
        "GET",
        "/api/x",
        &[("origin", "https://evil.example"), ("x-api-key", "k-1")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r
        .headers
        .iter()
        .all(|(k, _)| !k.starts_with("access-control-allow")));
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));

    // `*` without credentials: a literal `*`, no Vary
    let r = c.request("GET", "/public", &[("origin", "https://any.example")], b"");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("vary"), None);
    let r = c.request(
        "OPTIONS",
        "/public",
        &preflight("https://any.example", "POST", ""),
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

fn hs256(claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(b"header-test-secret-0123456789abcdef"),
    )
    .expect("sign")
}

#[test]
fn header_injection_with_every_variable_and_removal_patterns() {
    let backend = Backend::start(|_| {
        Reply::JsonWith(
            200,
            vec![
                ("server".into(), "backend/1.0".into()),
                ("x-powered-by".into(), "php".into()),
                ("x-powered-engine".into(), "v8".into()),
                ("x-kept".into(), "yes".into()),
            ],
            "{}".into(),
        )
    });
    let url = backend.url();
    let gw = Gateway::start(&config_with_routes(&format!(
        r#"    - id: headers
      path: "/h/*"
      upstream: {{url: "{url}"}}
      policies:
        - jwt-validation:
            keys: [{{algorithm: HS256, secret: "header-test-secret-0123456789abcdef"}}]
            requireExp: false
        - header-removal:
            request: [x-debug, "x-internal-*"]
            response: [server, "x-powered-*"]
        - header-injection:
            request:
              - {{name: X-Client-Ip, value: "{{client_ip}}"}}
              - {{name: X-Req, value: "id={{request_id}} route={{route_id}}"}}
              - {{name: X-Consumer, value: "{{consumer}}"}}
              - {{name: X-Tenant, value: "{{claim.tenant}}"}}
              - {{name: X-Roles, value: "{{claim.roles}}"}}
              - {{name: X-Missing, value: "{{claim.nope}}"}}
              - {{name: X-Agent, value: "ua={{header.user-agent}}"}}
              - {{name: X-Via, value: flex, mode: add}}
            response:
              - {{name: Strict-Transport-Security, value: "max-age=63072000"}}
              - {{name: X-Served-For, value: "{{consumer}} {{{{literal}}}}"}}"#
    )));
    let mut c = gw.connect();
    let token = hs256(json!({"sub": "alice", "tenant": "acme", "roles": ["admin", "ops"]}));
    let auth = format!("Bearer {token}");
    let r = c.request(
        "GET",
        "/h/x",
        &[
            ("authorization", &auth),
            ("user-agent", "test-agent/1"),
            ("x-debug", "1"),
            ("x-internal-secret", "s3"),
            ("x-internals", "kept: not matched by x-internal-*"),
            ("x-consumer", "forged"),
            ("x-via", "client"),
            ("x-request-id", "req-777"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = backend.last();
    assert_eq!(seen.header("x-client-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-req"), Some("id=req-777 route=headers"));
    assert_eq!(seen.header("x-consumer"), Some("alice"));
    assert_eq!(seen.header("x-tenant"), Some("acme"));
    assert_eq!(seen.header("x-roles"), Some("admin,ops"));
    assert_eq!(
        seen.header("x-missing"),
        None,
        "unknown claim: header left out"
    );
    assert_eq!(seen.header("x-agent"), Some("ua=test-agent/1"));
    let vias: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-via"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(vias, ["client", "flex"], "mode add appends");
    assert_eq!(seen.header("x-debug"), None);
    assert_eq!(seen.header("x-internal-secret"), None);
    assert!(seen.header("x-internals").is_some());

    assert_eq!(r.header("server"), None);
    assert_eq!(r.header("x-powered-by"), None);
    assert_eq!(r.header("x-powered-engine"), None);
    assert_eq!(r.header("x-kept"), Some("yes"));
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=63072000")
    );
    assert_eq!(r.header("x-served-for"), Some("alice {literal}"));
}

#[test]
fn path_rewrites_keep_query_and_encoding() {
    let backend = Backend::echo();
    let url = backend.url();
    let gw = Gateway::start(&config_with_routes(&format!(
        r#"    - id: strip
      path: "/v1/*"
      allowEncodedSlashes: true
      upstream: {{url: "{url}/base"}}
      policies: [{{path-rewrite: {{stripPrefix: /v1}}}}]
    - id: regex
      path: "/users/*"
      upstream: {{url: "{url}"}}
      policies:
        - path-rewrite: {{pattern: "^/users/(?P<id>[0-9]+)/(.*)$", replacement: "/api/u/$<id>/$2"}}"#
    )));
    let mut c = gw.connect();
    c.get("/v1/orders/7?x=1&y=%2F");
    assert_eq!(backend.last().target, "/base/orders/7?x=1&y=%2F");
    c.get("/v1/a%2Fb%20c");
    assert_eq!(
        backend.last().target,
        "/base/a%2Fb%20c",
        "encoded characters stay encoded"
    );
    c.get("/users/42/profile/photos?size=large");
    assert_eq!(backend.last().target, "/api/u/42/profile/photos?size=large");
    c.get("/users/me/profile");
    assert_eq!(
        backend.last().target,
        "/users/me/profile",
        "no match: unchanged"
    );
    // normalisation first: the rewrite sees the routed path
    c.get("/users/x/../42/./a");
    assert_eq!(backend.last().target, "/api/u/42/a");
}

/// Headless Chromium, or why it cannot run here.
fn chromium() -> Result<String, String> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
        {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !path.is_empty() {
                return Ok(path);
            }
        }
    }
    Err("no chromium on this machine (.ci/deps chromium installs it, as root)".into())
}

/// A page on one origin whose script calls the gateway on another: the
/// browser itself enforces what the gateway's CORS headers say.
#[test]
fn cors_in_a_real_browser() {
    let browser = match chromium() {
        Ok(b) => b,
        Err(why) => {
            println!("SKIPPED cors_in_a_real_browser: {why}");
            return;
        }
    };
    let backend = Backend::echo();
    // the page's server first (its origin goes into the config); the page
    // itself once the gateway's port is known
    let page = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let served = page.clone();
    let pages = Backend::start(move |_| Reply::Html(served.lock().expect("lock").clone()));
    let page_origin = format!("http://127.0.0.1:{}", pages.port);
    let url = backend.url();
    let gw = Gateway::start(&config_with_routes(&format!(
        r#"    - id: allowed
      path: "/allowed"
      methods: [GET, PUT]
      upstream: {{url: "{url}"}}
      policies:
        - cors: {{origins: ["{page_origin}"], methods: [GET, PUT], headers: [X-API-Key], exposeHeaders: [X-Request-Id]}}
    - id: denied
      path: "/denied"
      upstream: {{url: "{url}"}}
      policies:
        - cors: {{origins: ["https://someone-else.example"]}}
    - id: credentialed
      path: "/credentialed"
      upstream: {{url: "{url}"}}
      policies:
        - cors: {{origins: ["{page_origin}"], allowCredentials: true}}
    - id: uncredentialed
      path: "/uncredentialed"
      upstream: {{url: "{url}"}}
      policies:
        - cors: {{origins: ["{page_origin}"]}}"#
    )));
    let gw_origin = format!("http://localhost:{}", gw.port);
    let script = format!(
        r#"<!doctype html><html><body><pre id="out">running</pre><script>
const gw = "{gw_origin}";
const cases = [
  ["allowed", gw + "/allowed", {{}}],
  ["allowed-preflighted", gw + "/allowed", {{method: "PUT", headers: {{"X-API-Key": "k"}}}}],
  ["denied", gw + "/denied", {{}}],
  ["credentialed", gw + "/credentialed", {{credentials: "include"}}],
  ["uncredentialed", gw + "/uncredentialed", {{credentials: "include"}}],
];
(async () => {{
  const results = {{}};
  for (const [name, url, opts] of cases) {{
    try {{
      const r = await fetch(url, opts);
      const id = r.headers.get("x-request-id") ? "+id" : "";
      results[name] = r.status + id;
    }} catch (e) {{ results[name] = "blocked"; }}
  }}
  document.getElementById("out").textContent = "RESULT " + JSON.stringify(results);
}})();
</script></body></html>"#
    );
    *page.lock().expect("lock") = script;
    let out = std::process::Command::new(&browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("{page_origin}/page"))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(pages.count() >= 1, "the browser loaded the page");
    let Some(start) = dom.find("RESULT ") else {
        panic!(
            "no result in the page:\n{dom}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let json: serde_json::Value =
        serde_json::from_str(dom[start + 7..].split('<').next().unwrap_or("").trim())
            .expect("result JSON");
    assert_eq!(
        json["allowed"], "200+id",
        "allowed origin, exposed header readable"
    );
    assert_eq!(
        json["allowed-preflighted"], "200+id",
        "preflight answered, PUT sent"
    );
    assert_eq!(
        json["denied"], "blocked",
        "the browser blocks a disallowed origin"
    );
    assert_eq!(json["credentialed"], "200");
    assert_eq!(
        json["uncredentialed"], "blocked",
        "no Allow-Credentials: blocked"
    );
    // the browser's preflight never reached the backend; the PUT did
    let seen = backend.seen.lock().expect("lock").clone();
    assert!(seen.iter().all(|s| s.method != "OPTIONS"), "{seen:?}");
    assert!(seen
        .iter()
        .any(|s| s.method == "PUT" && s.header("x-api-key") == Some("k")));
}
