//! Flex Gateway Local Mode configuration served as written: the corpus
//! under `tests/fixtures/flex/` validated and served against real backends
//! on loopback, Flex's routing table row by row, a mixed conf.d with a
//! `kind: Gateway` document, a reload that adds a PolicyBinding, and
//! `validate` output for broken Flex files.

use crate::support::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Every `*.yaml` under a fixture directory (relative path, text with the
/// backends filled in), plus the server settings.
fn fixture(name: &str, backends: &[&Backend]) -> Vec<(String, String)> {
    let root = repo_path(&format!("tests/fixtures/flex/{name}"));
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    let fill = |t: String| {
        let mut t = t;
        for (i, b) in backends.iter().enumerate() {
            let key = if i == 0 {
                "{backend}".to_string()
            } else {
                format!("{{backend{}}}", i + 1)
            };
            t = t.replace(&key, &b.url());
        }
        t
    };
    let mut out: Vec<(String, String)> = files
        .into_iter()
        .map(|(rel, text)| (rel, fill(text)))
        .collect();
    out.push(("server.yaml".into(), SERVER_ONLY.into()));
    out
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    if dir.is_file() {
        let rel = dir.file_name().unwrap().to_string_lossy().to_string();
        out.push((rel, std::fs::read_to_string(dir).unwrap()));
        return;
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(root, &p, out);
        } else if p.extension().is_some_and(|e| e == "yaml") {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

/// An HS256 token signed with the fixture's `textKey`.
fn hs256(claims: &str) -> String {
    let claims: serde_json::Value = serde_json::from_str(claims).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
    )
    .unwrap()
}

fn start(files: &[(String, String)], env: &[(&str, &str)]) -> Gateway {
    let files: Vec<(&str, String)> = files.iter().map(|(p, t)| (p.as_str(), t.clone())).collect();
    let gw = Gateway::start_files(&files, env);
    gw.wait_ready();
    gw
}

/// `flex-gateway validate` on the gateway's own conf.d.
fn validate(dir: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flex-gateway"))
        .args(["validate", "-c"])
        .arg(dir)
        .envs(env.iter().copied())
        .output()
        .expect("run validate");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn every_row_of_the_documented_routing_table() {
    let backend = Backend::echo();
    let gw = start(&fixture("routing-table", &[&backend]), &[]);
    let (ok, text) = validate(&gw.dir, &[]);
    assert!(ok, "{text}");
    // (listener, row, request, upstream path; None: 404)
    let rows: [(u16, &str, &str, Option<&str>); 9] = [
        (gw.port, "1", "/api/foo/bar", Some("/api/foo/bar")),
        (gw.port, "2", "/api/foo/bar", Some("/foo/bar")),
        (gw.port, "3", "/api/foo/bar", Some("/orders/api/foo/bar")),
        (gw.port, "4", "/api/foo/bar", Some("/orders/foo/bar")),
        (gw.port2, "5", "/api/foo/bar", Some("/foo/bar")),
        (gw.port2, "6", "/api/foo/bar", Some("/bar")),
        (gw.port2, "7", "/api/foo/bar", Some("/orders/bar")),
        (gw.port2, "8", "/api/foo/bar", None),
        (gw.port2, "9", "/api/foo/abc/bar/def", Some("/abc/def")),
    ];
    for (port, row, request, expected) in rows {
        let before = backend.count();
        let mut c = Client::connect(port);
        let r = c.request("GET", &format!("{request}?q=1"), &[("x-row", row)], b"");
        match expected {
            Some(path) => {
                assert_eq!(r.status, 200, "row {row}: {}", r.text());
                // the query string survives the rewrite
                assert_eq!(backend.last().target, format!("{path}?q=1"), "row {row}");
            }
            None => {
                assert_eq!(r.status, 404, "row {row}");
                assert_eq!(backend.count(), before, "row {row} reached the backend");
            }
        }
    }
    // outside the base path, and no rule for the header: 404
    let mut c = Client::connect(gw.port2);
    assert_eq!(
        c.request("GET", "/foo/bar", &[("x-row", "5")], b"").status,
        404
    );
    assert_eq!(
        c.request("GET", "/apix/foo/bar", &[("x-row", "5")], b"")
            .status,
        404
    );
    assert_eq!(
        c.request("GET", "/api/foo/bar", &[("x-row", "0")], b"")
            .status,
        404
    );
}

#[test]
fn the_inline_model_with_an_environment_password() {
    let backend = Backend::echo();
    let env = [("FLEX_TEST_PASSWORD", "s3cret")];
    let gw = start(&fixture("inline.yaml", &[&backend]), &env);
    let mut c = gw.connect();
    let r = c.get("/api/users/1");
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Basic")));
    let auth = ("authorization", "Basic Y2hyaXM6czNjcmV0"); // chris:s3cret
    let r = c.request("GET", "/api/users/1", &[auth], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(backend.last().target, "/v1/apps/users/1");
    let r = c.request("GET", "/api/comments/9", &[auth], b"");
    assert_eq!(r.status, 200);
    assert_eq!(backend.last().target, "/v1/apps/comments/9");
    assert_eq!(c.request("GET", "/api/other/1", &[auth], b"").status, 404);
    // the password is a secret: not in /config
    let config = gw.admin("/config").text();
    assert!(!config.contains("s3cret"), "{config}");
}

#[test]
fn resource_based_conf_d_with_selectors_weighted_routes_and_a_gateway_document() {
    let v1 = Backend::echo();
    let v2 = Backend::echo();
    let env = [("FLEX_TEST_PASSWORD", "s3cret")];
    let gw = start(&fixture("resource-based", &[&v1, &v2]), &env);
    let (ok, text) = validate(&gw.dir, &env);
    assert!(ok, "{text}");
    assert!(
        text.contains("spec.tracing") && text.contains("not applied"),
        "validate names what is not applied: {text}"
    );
    assert!(
        gw.log_text().contains("spec.tracing"),
        "the start log names what is not applied"
    );
    let mut c = gw.connect();

    // route binding: rules, base path, destinationPath; policies in order
    let r = c.request(
        "GET",
        "/shop/orders/7",
        &[("x-client", "a"), ("x-internal", "leak")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = v1.last();
    assert_eq!(seen.target, "/api/7");
    assert_eq!(seen.header("x-gateway"), Some("flex"));
    assert_eq!(seen.header("x-client-address"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-internal"), None, "header-removal-flex");
    assert_eq!(r.header("x-served-by"), Some("flex-gateway"));
    assert_eq!(seen.header("x-request-line"), Some("GET /shop/orders/7"));
    assert_eq!(r.header("x-tier"), Some("basic"));
    let vip = c.request("GET", "/shop/orders/8", &[("x-client", "vip")], b"");
    assert_eq!(vip.header("x-tier"), Some("gold"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
    let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!(reset <= 60_000, "reset in milliseconds: {reset}");

    // the Selector-bound basic auth applies to writes only (its rules)
    let r = c.request("POST", "/shop/orders/7", &[("x-client", "b")], b"{}");
    assert_eq!(r.status, 401);
    assert!(
        r.header("x-ratelimit-limit").is_none(),
        "the Selector binding ran first, before the rate limit"
    );
    let auth = ("authorization", "Basic Y2hyaXM6czNjcmV0");
    let r = c.request("POST", "/shop/orders/7", &[("x-client", "b"), auth], b"{}");
    assert_eq!(r.status, 200);
    // methods outside the route's rule, paths outside it or the base: 404
    assert_eq!(
        c.request("DELETE", "/shop/orders/7", &[auth], b"").status,
        404
    );
    assert_eq!(c.get("/shop/other").status, 404);
    assert_eq!(c.get("/orders/7").status, 404);

    // keySelector: per client, 5 each
    for i in 0..5 {
        let r = c.request("GET", "/shop/orders/1", &[("x-client", "limited")], b"");
        assert_eq!(r.status, 200, "request {i}");
    }
    // the key is lower-cased by the keySelector expression
    let r = c.request("GET", "/shop/orders/1", &[("x-client", "LIMITED")], b"");
    assert_eq!(r.status, 429);
    let r = c.request("GET", "/shop/orders/1", &[("x-client", "other")], b"");
    assert_eq!(r.status, 200);

    // CORS from the allowed origin; another origin gets no CORS headers
    let origin = ("origin", "https://app.example.com");
    let r = c.request("GET", "/shop/canary/x", &[origin, ("x-client", "c")], b"");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let r = c.request(
        "GET",
        "/shop/canary/x",
        &[("origin", "https://evil.example"), ("x-client", "c")],
        b"",
    );
    assert_eq!(r.header("access-control-allow-origin"), None);

    // route-weighted 75/25: the second service gets its share, on its path
    let (before1, before2) = (v1.count(), v2.count());
    for i in 0..400 {
        let key = format!("w{}", i % 100); // 4 each: under the limit
        let r = c.request("GET", "/shop/canary/x", &[("x-client", &key)], b"");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let (n1, n2) = (v1.count() - before1, v2.count() - before2);
    assert_eq!(n1 + n2, 400);
    // 100 expected, sd 8.7: ±5 sd
    assert!((57..=143).contains(&n2), "v2 got {n2} of 400");
    assert_eq!(v2.last().target, "/v2/x");

    // the kind: Gateway document beside them, sharing a port with an
    // ApiInstance whose jwt-validation-flex reads the token from a header
    let mut ops = Client::connect(gw.port2);
    assert_eq!(ops.get("/health").status, 200);
    let r = ops.get("/tokens/x");
    assert_eq!(r.status, 400, "no token: Flex answers 400");
    let bad = ops.request("GET", "/tokens/x", &[("x-token", "not.a.token")], b"");
    assert_eq!(bad.status, 401);
    let user = hs256(r#"{"sub":"u1","role":"user"}"#);
    let r = ops.request("GET", "/tokens/x", &[("x-token", &user)], b"");
    assert_eq!(r.status, 403, "the mandatory custom claim: {}", r.text());
    let admin = hs256(r#"{"sub":"u2","role":"admin"}"#);
    // POST: the Selector-bound basic auth does not reach this instance
    let r = ops.request("POST", "/tokens/x", &[("x-token", &admin)], b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(v1.last().target, "/x");

    // Flex's probe paths on the admin listener
    assert_eq!(gw.admin("/probes/readiness").status, 200);
    assert_eq!(gw.admin("/probes/liveness").status, 200);

    // Flex's probe paths on the admin listener
    assert_eq!(gw.admin("/probes/readiness").status, 200);
    assert_eq!(gw.admin("/probes/liveness").status, 200);

    // circuit-breaker-flex set the Service's limits
    let upstreams = gw.admin("/upstreams").text();
    assert!(
        upstreams.contains("orders-v1") && upstreams.contains("orders-v2"),
        "{upstreams}"
    );
    let config = gw.admin("/config").json();
    let services = config["services"].as_array().expect("services in /config");
    let v1 = services
        .iter()
        .find(|s| s["name"] == "orders-v1")
        .expect("orders-v1 in /config");
    assert_eq!(v1["circuitBreaker"]["maxRequests"], 500, "{v1}");
    // /config shows the Flex routes and the binding rules
    let routes = config["listeners"].to_string();
    assert!(routes.contains(r#""basePath":"/shop""#), "{routes}");
    assert!(routes.contains(r#""path":"/orders(/.*)""#), "{routes}");
    assert!(
        routes.contains(r#""methods":"POST|PUT|DELETE""#),
        "{routes}"
    );
    let v2 = services.iter().find(|s| s["name"] == "orders-v2").unwrap();
    assert_eq!(
        v2["circuitBreaker"]["maxRequests"], 10_000,
        "defaults: {v2}"
    );
}

#[test]
fn a_reload_that_adds_a_policy_binding_takes_effect_without_restart() {
    let backend = Backend::echo();
    let env = [("FLEX_TEST_PASSWORD", "s3cret")];
    let gw = start(&fixture("routing-table", &[&backend]), &env);
    let mut c = gw.connect();
    assert_eq!(
        c.request("GET", "/api/x", &[("x-row", "1")], b"").status,
        200
    );
    let binding = "apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata: {name: late}
spec:
  targetRef: {name: no-base}
  policyRef: {name: ip-allowlist-flex}
  config: {ips: [192.0.2.0/24]}
";
    std::fs::create_dir_all(gw.dir.join("policies")).unwrap();
    std::fs::write(gw.dir.join("policies/late.yaml"), binding).unwrap();
    wait_until(Duration::from_secs(10), "the new binding", || {
        c.request("GET", "/api/x", &[("x-row", "1")], b"").status == 403
    });
    // the other instance is not its target
    let mut other = Client::connect(gw.port2);
    let r = other.request("GET", "/api/foo/bar", &[("x-row", "5")], b"");
    assert_eq!(r.status, 200);
}

/// A broken Flex file: every problem at once, at its line and column, with
/// Flex's field names.
#[test]
fn validate_reports_flex_files_like_gateway_files() {
    let dir = temp_dir("flex-invalid");
    let text = "apiVersion: gateway.mulesoft.com/v1alpha1
kind: ApiInstance
metadata: {name: shop}
spec:
  address: http://0.0.0.0:8080/shop
  services:
    orders:
      address: http://127.0.0.1:9000
      routes:
        - rules: [{path: \"/orders(\"}]
  policies:
    - policyRef: {name: rate-limiting-flx}
    - policyRef: {name: client-id-enforcement-flex}
    - policyRef: {name: rate-limiting-flex}
      config:
        rateLimits: [{maximumRequest: 3, timePeriodInMilliseconds: 1000}]
        keySelector: \"#[now()]\"
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: ApiInstance
metadata: {name: nested}
spec:
  address: http://0.0.0.0:8080/shop/v2
  services:
    s: {address: http://127.0.0.1:9000}
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata: {name: b}
spec:
  targetRef: {name: shpo}
  policyRef: {name: route}
  config:
    destinationRef: {name: missing}
";
    std::fs::write(dir.join("api.yaml"), text).unwrap();
    let (ok, out) = validate(&dir, &[]);
    assert!(!ok, "{out}");
    let expect = [
        "api.yaml:10:26: spec.services.orders.routes[0].rules[0].path: invalid regular expression \"/orders(\"",
        "api.yaml:12:25: spec.policies[0].policyRef.name: unknown policy \"rate-limiting-flx\" (did you mean \"rate-limiting-flex\"?)",
        "api.yaml:13:25: spec.policies[1].policyRef.name: policy \"client-id-enforcement-flex\" does not run in Flex's Local Mode: it checks client applications",
        "api.yaml:16:23: spec.policies[2].config.rateLimits[0].maximumRequest: unknown field (did you mean `maximumRequests`?)",
        "api.yaml:17:22: spec.policies[2].config.keySelector: `now(...)` is not supported in expressions",
        "api.yaml:23:12: spec.address: port 8080: base path \"/shop/v2\" clashes with \"/shop\" of ApiInstance \"shop\"",
        "api.yaml:31:21: spec.targetRef.name: unknown ApiInstance \"shpo\" (did you mean \"shop\"?)",
        "api.yaml:34:28: spec.config.destinationRef.name: unknown Service \"missing\" (defined: nested-s, shop-orders)",
    ];
    for e in expect {
        assert!(out.contains(e), "missing {e:?} in:\n{out}");
    }
}

#[test]
fn introspection_and_spike_control_under_their_flex_names() {
    let backend = Backend::echo();
    // the introspection endpoint: checks the gateway's authorizationValue
    let idp = Backend::start(|seen| {
        if seen.header("authorization") != Some("Basic Z2F0ZXdheTpzM2NyZXQ=") {
            return Reply::Json(401, r#"{"error":"invalid_client"}"#.into());
        }
        let body = String::from_utf8_lossy(&seen.body).to_string();
        let active = body.contains("token=good");
        Reply::Json(
            200,
            serde_json::json!({"active": active, "scope": "read write", "client_id": "app"})
                .to_string(),
        )
    });
    let gw = start(&fixture("more-policies.yaml", &[&backend, &idp]), &[]);
    let mut c = gw.connect();
    assert_eq!(c.get("/orders/1").status, 401, "no token");
    let bad = c.request("GET", "/orders/1", &[("authorization", "Bearer bad")], b"");
    assert_eq!(bad.status, 401);
    let good = c.request("GET", "/orders/1", &[("authorization", "Bearer good")], b"");
    assert_eq!(good.status, 200, "{}", good.text());
    assert_eq!(backend.last().target, "/1");
    assert!(idp.count() >= 2, "the endpoint was asked");
    // spike control on /burst only: 2 pass, the 3rd is refused at once
    assert_eq!(c.get("/burst/a").status, 200);
    assert_eq!(c.get("/burst/b").status, 200);
    assert_eq!(c.get("/burst/c").status, 429);
    // its rules keep it off /orders
    let again = c.request("GET", "/orders/2", &[("authorization", "Bearer good")], b"");
    assert_eq!(again.status, 200);
}
