//! `flex-gateway validate`: exit codes and the errors users read.

use crate::support::*;
use std::process::Command;

fn validate_text(text: &str) -> (bool, String) {
    let dir = temp_dir("validate");
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, text).expect("write");
    let (ok, _, err) = validate(&file);
    let _ = std::fs::remove_dir_all(&dir);
    (ok, err.replace(&file.display().to_string(), "gateway.yaml"))
}

#[test]
fn the_users_seed_file_validates_unchanged() {
    let (ok, out, err) = validate(&repo_path("tests/fixtures/seed-gateway-config.yaml"));
    assert!(ok, "{err}");
    assert!(out.contains("OK"), "{out}");
    // and the original in shared/, when the checkout has it beside it
    let shared = repo_path("../shared/seed/gateway-config.yaml");
    if shared.exists() {
        let (ok, _, err) = validate(&shared);
        assert!(ok, "{err}");
    }
}

#[test]
fn every_file_under_conf_validates() {
    let mut n = 0;
    for entry in std::fs::read_dir(repo_path("conf")).expect("conf/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let (ok, _, err) = validate(&path);
            assert!(ok, "{}: {err}", path.display());
            n += 1;
        }
    }
    assert!(n > 0);
}

#[test]
fn every_problem_is_listed_with_line_column_and_field() {
    let seed = std::fs::read_to_string(repo_path("tests/fixtures/seed-gateway-config.yaml"))
        .expect("seed");
    let broken = seed
        .replace("maxRequests: 100", "maxRequests: \"lots\"")
        .replace("timeout: 30s", "timeout: 30 s")
        .replace("port: 8081", "port: 70000")
        .replace("      methods: [\"GET\"]\n      upstream:\n        url: \"http://host.docker.internal:3000\"\n      policies:",
                 "      methods: [\"GET\"]\n      upstream:\n        url: \"ftp://host.docker.internal:3000\"\n      policies:")
        .replace("protocol: HTTP", "protocol: HTTP\n      tsl: true");
    let (ok, err) = validate_text(&broken);
    assert!(!ok);
    let expected = [
        "gateway.yaml:12:13: spec.listeners[0].port: port 70000 is out of range (1-65535)",
        "gateway.yaml:14:7: spec.listeners[0].tsl: unknown field (did you mean `tls`?)",
        "gateway.yaml:27:18: spec.routes[0].upstream.timeout: \"30 s\" is not a duration (try 30s, 1500ms or 2m)",
        "gateway.yaml:36:14: spec.routes[1].upstream.url: unsupported scheme \"ftp\"",
        "gateway.yaml:39:26: spec.routes[1].policies[0].rate-limiting.maxRequests: expected a positive integer, found \"lots\"",
    ];
    for line in expected {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    assert!(err.contains("5 problem(s) found"), "{err}");

    // a duplicate id is reported even when that route has other problems
    let dup = seed
        .replace("    - id: health-check", "    - id: public-products")
        .replace("maxRequests: 100", "maxRequests: 0");
    let (ok, err) = validate_text(&dup);
    assert!(!ok);
    assert!(err.contains("gateway.yaml:29:11: spec.routes[1].id: duplicate route id \"public-products\" (first defined at gateway.yaml:19:11)"), "{err}");
    assert!(err.contains("spec.routes[1].policies[0].rate-limiting.maxRequests: expected a positive integer, found \"0\""), "{err}");
}

#[test]
fn typographic_quotes_get_a_hint() {
    let seed = std::fs::read_to_string(repo_path("tests/fixtures/seed-gateway-config.yaml"))
        .expect("seed");
    let pasted = seed
        .replace("\"0.0.0.0\"", "\u{201C}0.0.0.0\u{201D}")
        .replace("[\"GET\"]", "[\u{201C}GET\u{201D}]");
    let (ok, err) = validate_text(&pasted);
    assert!(!ok);
    assert!(
        err.contains("gateway.yaml:14:13: spec.listeners[0].host:"),
        "{err}"
    );
    assert!(err.contains("typographic quotes"), "{err}");
    assert!(err.contains("spec.routes[0].methods[0]"), "{err}");
}

#[test]
fn syntax_errors_point_at_the_line() {
    let (ok, err) = validate_text(
        "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nspec: [unclosed\n",
    );
    assert!(!ok);
    assert!(err.contains("gateway.yaml:"), "{err}");
    assert!(err.contains("invalid YAML"), "{err}");
}

#[test]
fn clashes_and_duplicates_across_documents() {
    let doc = |name: &str, id: &str, path: &str| {
        format!(
            "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata:\n  name: {name}\nspec:\n  listeners:\n    - name: l\n      port: 9000\n  routes:\n    - id: {id}\n      path: [\"{path}\"]\n      upstream:\n        url: http://127.0.0.1:1\n"
        )
    };
    // a conf.d directory: two files share port 9000 without clashing
    let dir = temp_dir("confd");
    std::fs::write(dir.join("a.yaml"), doc("a", "one", "/a")).expect("write");
    std::fs::write(
        dir.join("b.yml"),
        format!(
            "{}---\n{}",
            doc("b", "two", "/b"),
            doc("c", "three", "/c/*")
        ),
    )
    .expect("write");
    std::fs::write(dir.join("notes.txt"), "not config").expect("write");
    let (ok, out, err) = validate(&dir);
    assert!(ok, "{err}");
    assert!(out.contains("3 gateway(s), 1 listener(s)"), "{out}");

    // a duplicate id and a clashing path are errors naming both places
    std::fs::write(dir.join("c.yaml"), doc("d", "one", "/a")).expect("write");
    let (ok, _, err) = validate(&dir);
    assert!(!ok);
    assert!(
        err.contains(
            "c.yaml:10:11: spec.routes[0].id: duplicate route id \"one\" (first defined at"
        ),
        "{err}"
    );
    assert!(
        err.contains("c.yaml:11:14: spec.routes[0].path[0]: path /a clashes with route \"one\""),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn field_rules() {
    let base = |route: &str| {
        format!("apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata:\n  name: x\nspec:\n  listeners:\n    - name: l\n      port: 9000\n  routes:\n{route}")
    };
    let cases = [
        ("    - id: r\n      path: api\n      upstream: {url: http://h}\n", "must start with /"),
        ("    - id: r\n      path: /a/*/b\n      upstream: {url: http://h}\n", "only allowed as a final"),
        ("    - id: r\n      path: /a/../b\n      upstream: {url: http://h}\n", "not in normal form"),
        ("    - id: r\n      path: /a\n      methods: [FETCH]\n      upstream: {url: http://h}\n", "is not an HTTP method"),
        ("    - id: r\n      path: /a\n      upstream: {url: http://h, timeout: 0s}\n", "greater than zero"),
        ("    - id: r\n      path: /a\n      upstream: {url: \"http://\"}\n", "upstream.url"),
        ("    - id: r\n      path: /a\n      upstream: {url: http://h}\n      policies:\n        - rate-limiting: {maxRequests: 0, period: 60}\n", "expected a positive integer, found \"0\""),
        ("    - id: r\n      path: /a\n      upstream: {url: http://h}\n      policies:\n        - rate-limiting: {maxRequests: -5, period: 60}\n", "expected a positive integer, found \"-5\""),
        ("    - id: r\n      path: /a\n      upstream: {url: http://h}\n      policies:\n        - rate-limitting: {maxRequests: 5, period: 60}\n", "did you mean `rate-limiting`"),
        ("    - id: r\n      path: /a\n      upstream: {url: http://h}\n      policies:\n        - rate-limiting: {maxRequests: 5}\n", "missing required field `period`"),
        ("    - id: r\n      path: [/a, /a]\n      upstream: {url: http://h}\n", "duplicate path"),
        ("    - path: /a\n      upstream: {url: http://h}\n", "missing required field `id`"),
    ];
    for (route, expected) in cases {
        let (ok, err) = validate_text(&base(route));
        assert!(!ok, "accepted:\n{route}");
        assert!(
            err.contains(expected),
            "expected {expected:?} for:\n{route}\ngot:\n{err}"
        );
    }
}

#[test]
fn missing_config_is_a_clear_error() {
    let (ok, _, err) = validate(std::path::Path::new("/nonexistent/flex-gateway.yaml"));
    assert!(!ok);
    assert!(
        err.contains("/nonexistent/flex-gateway.yaml: cannot read"),
        "{err}"
    );
}

#[test]
fn policy_config_errors_name_line_column_and_field() {
    let text = r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata: {name: g}
spec:
  listeners: [{name: l, port: 9000}]
  policies:
    - http-basic-authentication:
        users:
          - {username: alice, password: x}
          - {username: alice, password: y}
          - {username: bob, passwordHash: "$2b$12$abc"}
    - api-key: {keys: []}
  routes:
    - id: a
      path: /a
      upstream: {url: "http://127.0.0.1:1"}
      policies:
        - jwt-validation:
            keys:
              - {algorithm: RS257, publicKey: "x"}
              - {algorithm: RS256, publicKey: "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----"}
              - {algorithm: HS256, secret: short}
              - {algorithm: none, secret: "0123456789abcdef0123456789abcdef"}
            jwks: [{url: "ftp://idp.example.com/jwks"}]
          order: ten
        - oauth2-introspection: {url: "https://idp.example.com/i", clientId: gw}
        - api-keys: {}
        - rate-limiting: {maxRequests: 1, period: 1s, burst: 2}
        - rate-limiting: {maxRequests: 1, period: 1s}
          http-basic-authentication: {}
        - jwt-validation: {token: {cookie: s}, jwks: [{url: "https://idp/jwks"}], claims: [{name: x, pattern: "("}]}
        - http-basic-authentication: {users: [{username: u, password: "${FLEXGW_SURELY_UNSET_VAR}"}]}
"#;
    let (ok, err) = validate_text(text);
    assert!(!ok);
    let expected = [
        "gateway.yaml:10:14: spec.policies[0].http-basic-authentication.users[1].username: duplicate user \"alice\"",
        "gateway.yaml:11:43: spec.policies[0].http-basic-authentication.users[2].passwordHash: not a valid bcrypt hash",
        "gateway.yaml:12:17: spec.policies[1].api-key: no keys",
        "gateway.yaml:20:29: spec.routes[0].policies[0].jwt-validation.keys[0].algorithm: unknown algorithm \"RS257\"",
        "gateway.yaml:21:47: spec.routes[0].policies[0].jwt-validation.keys[1].publicKey: not an RSA public key in PEM",
        "gateway.yaml:22:44: spec.routes[0].policies[0].jwt-validation.keys[2].secret: a HS256 secret must be at least 32 bytes",
        "gateway.yaml:23:29: spec.routes[0].policies[0].jwt-validation.keys[3].algorithm: `none` is never accepted",
        "gateway.yaml:24:26: spec.routes[0].policies[0].jwt-validation.jwks[0].url: \"ftp://idp.example.com/jwks\" is not an http(s) URL",
        "gateway.yaml:25:18: spec.routes[0].policies[0].order: expected an integer",
        "gateway.yaml:26:34: spec.routes[0].policies[1].oauth2-introspection: give `clientId` and `clientSecret`, or `authorization`",
        "gateway.yaml:27:11: spec.routes[0].policies[2].api-keys: unknown field (did you mean `api-key`?)",
        "gateway.yaml:28:55: spec.routes[0].policies[3].rate-limiting.burst: unknown field",
        "gateway.yaml:29:11: spec.routes[0].policies[4]: one policy per list item",
        "gateway.yaml:31:111: spec.routes[0].policies[5].jwt-validation.claims[0].pattern: invalid regular expression: unclosed group",
        "gateway.yaml:32:71: spec.routes[0].policies[6].http-basic-authentication.users[0].password: environment variable FLEXGW_SURELY_UNSET_VAR is not set",
    ];
    assert!(err.contains("15 problem(s) found"), "{err}");
    for line in expected {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
}

#[test]
fn access_policy_errors_name_line_column_and_field() {
    let text = r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata: {name: g}
spec:
  listeners: [{name: l, port: 9000}]
  routes:
    - id: a
      path: /a/*
      upstream: {url: "http://127.0.0.1:1"}
      policies:
        - ip-allowlist: {ips: [10.0.0.0/33, "2001:db8::/32", example.com]}
        - path-rewrite: {pattern: "^/a/(.*)$", replacement: "/b/$2"}
        - header-injection:
            request:
              - {name: Transfer-Encoding, value: chunked}
              - {name: X-A, value: "{nope}"}
        - header-removal: {request: [connection, "x-ok-*"]}
        - cors: {origins: ["app.example.com", "https://a.*.example.com"]}
    - id: b
      path: /b
      upstream: {url: "http://127.0.0.1:1"}
      policies:
        - path-rewrite: {pattern: "^/b/(", replacement: "/c"}
  server:
    trustedProxies: [10.0.0.1, not-an-ip]
"#;
    let (ok, err) = validate_text(text);
    assert!(!ok);
    let expected = [
        "gateway.yaml:11:32: spec.routes[0].policies[0].ip-allowlist.ips[0]: \"10.0.0.0/33\" is not an IP address or CIDR range",
        "gateway.yaml:11:62: spec.routes[0].policies[0].ip-allowlist.ips[2]: \"example.com\" is not an IP address or CIDR range",
        "gateway.yaml:12:61: spec.routes[0].policies[1].path-rewrite.replacement: `2` is not a group of the pattern (it has 1 numbered group(s))",
        "gateway.yaml:15:24: spec.routes[0].policies[2].header-injection.request[0].name: transfer-encoding is a hop-by-hop or framing header",
        "gateway.yaml:16:36: spec.routes[0].policies[2].header-injection.request[1].value: unknown variable `{nope}`",
        "gateway.yaml:17:38: spec.routes[0].policies[3].header-removal.request[0]: connection is a hop-by-hop or framing header",
        "gateway.yaml:18:28: spec.routes[0].policies[4].cors.origins[0]: \"app.example.com\" is not an origin",
        "gateway.yaml:18:47: spec.routes[0].policies[4].cors.origins[1]: \"https://a.*.example.com\": `*` only as the whole origin or as the first label",
        "gateway.yaml:23:35: spec.routes[1].policies[0].path-rewrite.pattern: invalid regular expression: unclosed group",
        "gateway.yaml:25:32: spec.server.trustedProxies[1]: \"not-an-ip\" is not an IP address or CIDR range",
    ];
    for line in expected {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    assert!(err.contains("10 problem(s) found"), "{err}");
}

#[test]
fn validate_never_prints_a_secret_value() {
    let dir = temp_dir("secret");
    let file = dir.join("gateway.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata: {name: g}
spec:
  listeners: [{name: l, port: 9000}]
  routes:
    - id: a
      path: /a
      upstream: {url: "http://127.0.0.1:1"}
      policies:
        - api-key: {header: "${FLEXGW_TEST_LEAKY}", keys: ["k"]}
        - jwt-validation: {keys: [{algorithm: HS256, secret: "x-${FLEXGW_TEST_SHORT}"}]}
"#,
    )
    .expect("write");
    let out = Command::new(GATEWAY)
        .args(["validate", "-c"])
        .arg(&file)
        .env("FLEXGW_TEST_LEAKY", "not a header: s3cr3t-value")
        .env("FLEXGW_TEST_SHORT", "tiny-s3cr3t")
        .output()
        .expect("run validate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("api-key.header: \"<redacted>\" is not a header name"),
        "{err}"
    );
    assert!(
        err.contains("jwt-validation.keys[0].secret: a HS256 secret must be at least 32 bytes"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "a secret leaked:\n{err}");
}

#[test]
fn limit_errors_name_line_column_and_field() {
    let text = r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata: {name: limits}
spec:
  listeners:
    - name: http
      port: 8081
      limits:
        maxHeaderSize: 2MB
        headerTimout: 5s
  routes:
    - {id: all, path: "/*", upstream: {url: "http://127.0.0.1:3000"}}
  server:
    limits:
      maxConnections: 0
      keepaliveTimeout: soon
"#;
    let (ok, err) = validate_text(text);
    assert!(!ok);
    for want in [
        "gateway.yaml:9:24: spec.listeners[0].limits.maxHeaderSize: must be at most 1MB",
        "gateway.yaml:10:9: spec.listeners[0].limits.headerTimout: unknown field",
        "headerTimeout",
        "gateway.yaml:15:23: spec.server.limits.maxConnections:",
        "gateway.yaml:16:25: spec.server.limits.keepaliveTimeout:",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn service_errors_name_line_column_and_field() {
    let text = r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata: {name: g}
spec:
  listeners: [{name: l, port: 8080}]
  services:
    - name: catalog
      targets: ["http://10.0.0.1:3000", {url: "http://10.0.0.2:3000", weight: 0}]
      loadBalancing: hash
    - name: catalog
      targets: []
      loadBalancing: fastest
      healthCheck: {path: health, interval: 1s, timeout: 2s, expectedStatus: 2xx}
      passiveHealthCheck: {ejectionTime: 60s, maxEjectionTime: 10s}
      circuitBreaker: {openTime: 5s}
  routes:
    - id: a
      path: /a
      upstream: {service: catalgo}
    - id: b
      path: /b
      upstream: {url: "http://x:1", service: catalog}
    - id: c
      path: /c
      upstream: {services: [{name: catalog, weight: 0}], retries: {maxRetries: 20, retryOn: [sometimes]}}
"#;
    let (ok, err) = validate_text(text);
    assert!(!ok);
    for expected in [
        "gateway.yaml:8:79: spec.services[0].targets[1].weight: expected a positive integer",
        "gateway.yaml:9:22: spec.services[0].loadBalancing: `hash` needs `hashOn`",
        "gateway.yaml:11:16: spec.services[1].targets: at least one target is required",
        "gateway.yaml:12:22: spec.services[1].loadBalancing: unknown algorithm \"fastest\" (expected one of: round-robin, random, least-requests, hash)",
        "spec.services[1].healthCheck.path: \"health\" is not a request path",
        "spec.services[1].healthCheck.expectedStatus: \"2xx\" is not a status or range",
        "spec.services[1].healthCheck.timeout: must not be longer than `interval`",
        "spec.services[1].passiveHealthCheck.maxEjectionTime: must not be shorter than `ejectionTime`",
        "spec.services[1].circuitBreaker.openTime: applies with `failureThreshold` only",
        "gateway.yaml:19:27: spec.routes[0].upstream.service: unknown service \"catalgo\" (did you mean \"catalog\"?)",
        "gateway.yaml:10:13: spec.services[1].name: service name \"catalog\" is already used at gateway.yaml:7:13",
        "spec.routes[1].upstream: give one of `url`, `service` or `services`, not url and service",
        "spec.routes[2].upstream.services: at least one service needs a weight above 0",
        "spec.routes[2].upstream.retries.maxRetries: expected an integer from 0 to 10",
        "spec.routes[2].upstream.retries.retryOn[0]: \"sometimes\" is not a retry condition",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn rate_limit_spike_and_storage_errors() {
    let text = r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata: {name: g}
spec:
  listeners: [{name: l, port: 8080}]
  routes:
    - id: a
      path: /a
      upstream: {url: "http://127.0.0.1:1"}
      policies:
        - rate-limiting: {maxRequests: 1, period: 1s, limits: [], key: "cookie:x"}
        - spike-control: {maxRequests: 0, queueLimit: -1}
    - id: b
      path: /b
      upstream: {url: "http://127.0.0.1:1"}
      policies:
        - rate-limiting: {limits: [{maxRequests: 5, period: 10ms}]}
  server:
    sharedStorage: {redis: {address: "localhost", db: x}}
"#;
    let (ok, err) = validate_text(text);
    assert!(!ok);
    for expected in [
        "spec.routes[0].policies[0].rate-limiting.limits: give either maxRequests and period, or limits, not both",
        "spec.routes[0].policies[0].rate-limiting.key: \"cookie:x\" is not a rate-limit key (expected client-ip, header:NAME, query:NAME, consumer, claim:NAME or a Flex expression #[...])",
        "spec.routes[0].policies[1].spike-control.maxRequests: expected a positive integer",
        "spec.routes[0].policies[1].spike-control.queueLimit: expected an integer from 0 to 100000",
        "spec.routes[1].policies[0].rate-limiting.limits[0].period: the period must be at least 100ms",
        "spec.server.sharedStorage.redis.address: \"localhost\" is not host:port",
        "spec.server.sharedStorage.redis.db: expected an integer",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn upstream_tls_errors() {
    let text = r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata: {name: g}
spec:
  listeners: [{name: l, port: 8080}]
  services:
    - name: s
      targets: ["https://10.0.0.1:443"]
      tls: {ca: /nonexistent/ca.pem, cert: /nonexistent/c.pem, verify: maybe}
  routes:
    - id: a
      path: /a
      upstream: {service: s, tls: {verify: false}}
"#;
    let (ok, err) = validate_text(text);
    assert!(!ok);
    for expected in [
        "spec.services[0].tls.ca: cannot read /nonexistent/ca.pem",
        "spec.services[0].tls: a client certificate needs both `cert` and `key`",
        "spec.services[0].tls.verify: expected true or false",
        "spec.routes[0].upstream.tls: `tls` here applies to a `url`; set it on the service instead",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

/// The fenced YAML blocks of a Markdown text: (line, text). A block right
/// after `<!-- example: not validated (why) -->` is left out.
fn yaml_blocks(md: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String, bool)> = None;
    let mut previous = "";
    for (i, line) in md.lines().enumerate() {
        match &mut open {
            None if line == "```yaml" || line == "```yml" => {
                let skip = previous.starts_with("<!-- example: not validated");
                open = Some((i + 2, String::new(), skip));
            }
            Some((start, text, skip)) if line == "```" => {
                if !*skip {
                    out.push((*start, std::mem::take(text)));
                }
                open = None;
            }
            Some((_, text, _)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    out
}

fn indented(text: &str, n: usize) -> String {
    text.lines()
        .map(|l| match l.trim().is_empty() {
            true => "\n".to_string(),
            false => format!("{}{l}\n", " ".repeat(n)),
        })
        .collect()
}

/// A documentation example as whole configurations to validate: documents
/// as they are; a `spec:` fragment under a header, with a listener and a
/// route when it shows none; each item of a policy list (alternatives) on
/// a route of its own. None: YAML that is not the gateway's (Helm values,
/// Prometheus).
fn example_configs(block: &str) -> Option<Vec<String>> {
    const HEAD: &str =
        "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {name: example}\n";
    const LISTENER: &str = "  listeners: [{name: example, port: 18080}]\n";
    const ROUTE_HEAD: &str =
        "  routes:\n    - id: example\n      path: /example\n      upstream: {url: \"http://127.0.0.1:1\"}\n";
    let first = block
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))?;
    let spec = |body: &str| {
        let mut out = format!("{HEAD}spec:\n");
        if !body.lines().any(|l| l.starts_with("  listeners:")) {
            out.push_str(LISTENER);
        }
        if !body.lines().any(|l| l.starts_with("  routes:")) {
            out.push_str(ROUTE_HEAD);
        }
        out + body
    };
    if first.starts_with("apiVersion:") {
        return Some(vec![block.to_string()]);
    }
    if first.starts_with("spec:") {
        return Some(vec![spec(block.split_once("spec:\n")?.1)]);
    }
    if first.starts_with("services:") {
        return Some(vec![spec(&indented(block, 2))]);
    }
    if first.starts_with("policies:") {
        return Some(vec![format!(
            "{HEAD}spec:\n{LISTENER}{ROUTE_HEAD}{}",
            indented(block, 6)
        )]);
    }
    if first.starts_with("- ") {
        // each top-level item is one way to write it
        let mut items: Vec<String> = Vec::new();
        for l in block.lines() {
            if l.starts_with("- ") || items.is_empty() {
                items.push(String::new());
            }
            let item = items.last_mut()?;
            item.push_str(l);
            item.push('\n');
        }
        return Some(
            items
                .iter()
                .map(|i| {
                    format!(
                        "{HEAD}spec:\n{LISTENER}{ROUTE_HEAD}      policies:\n{}",
                        indented(i, 8)
                    )
                })
                .collect(),
        );
    }
    None
}

/// Every configuration the documentation shows (README and docs/), as
/// (page:line, whole configuration), in page order.
fn doc_example_configs() -> Vec<(String, String)> {
    let mut pages = vec![repo_path("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(repo_path("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    let mut out = Vec::new();
    for page in &pages {
        let md = std::fs::read_to_string(page).expect("read page");
        let name = page.file_name().unwrap().to_string_lossy().to_string();
        for (line, block) in yaml_blocks(&md) {
            for config in example_configs(&block).unwrap_or_default() {
                out.push((format!("{name}:{line}"), config));
            }
        }
    }
    out
}

/// Every `${NAME}` a configuration reads: a value of its own, long
/// enough for any key.
fn example_env(config: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = config;
    while let Some((_, after)) = rest.split_once("${") {
        let Some((var, tail)) = after.split_once('}') else {
            break;
        };
        out.push((
            var.to_string(),
            format!("{var}-an-example-value-of-forty-bytes-or-more"),
        ));
        rest = tail;
    }
    out
}

#[test]
fn every_yaml_example_in_the_docs_validates() {
    let dir = temp_dir("doc-examples");
    let mut checked = 0;
    let mut failures = Vec::new();
    for (name, config) in doc_example_configs() {
        let file = dir.join(format!("{}.yaml", name.replace(':', "-")));
        std::fs::write(&file, &config).expect("write");
        let out = Command::new(GATEWAY)
            .args(["validate", "-c"])
            .arg(&file)
            .envs(example_env(&config))
            .output()
            .expect("run validate");
        checked += 1;
        if out.status.success() {
            continue;
        }
        // files the example names on the reader's machine
        // (certificates, key files) are not here: that error, and
        // what follows from it on the same line, is expected
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| !l.ends_with("problem(s) found"))
            .collect();
        let at = |l: &str| l.split(':').take(2).collect::<Vec<_>>().join(":");
        let unreadable: Vec<String> = errors
            .iter()
            .filter(|l| l.contains("cannot read"))
            .map(|l| at(l))
            .collect();
        let real: Vec<&&str> = errors
            .iter()
            .filter(|l| !l.contains("cannot read") && !unreadable.contains(&at(l)))
            .collect();
        if !real.is_empty() {
            failures.push(format!("{name}:\n{config}\n{err}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked >= 20, "only {checked} examples found");
}

fn schema_text() -> String {
    let out = Command::new(GATEWAY)
        .arg("schema")
        .output()
        .expect("run schema");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Every `*.yaml` under `dir`, sorted.
fn yaml_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A test fixture with the placeholders the tests fill in filled.
fn fixture_text(path: &std::path::Path) -> String {
    let mut text = std::fs::read_to_string(path).expect("read fixture");
    for (from, to) in [
        ("{backend}", "http://127.0.0.1:1"),
        ("{backend2}", "http://127.0.0.1:2"),
        ("{port}", "18080"),
        ("{port2}", "18081"),
        ("{admin}", "127.0.0.1:19901"),
    ] {
        text = text.replace(from, to);
    }
    text
}

#[test]
fn the_shipped_schema_is_the_one_the_binary_prints() {
    let shipped = std::fs::read_to_string(repo_path("schema/flex-gateway.schema.json"))
        .expect("schema/flex-gateway.schema.json");
    assert!(
        shipped == schema_text(),
        "schema/flex-gateway.schema.json is out of date: \
         run `flex-gateway schema > schema/flex-gateway.schema.json`"
    );
}

/// check-jsonschema accepts every document of every configuration in the
/// repository and the docs (each document on its own: a file of several
/// is read one document at a time, as editors do); and mutations of the
/// valid single-file ones (an unknown key, a wrong type, a misspelt
/// value, a dropped field) get the same verdict from the schema and from
/// `validate` (tests/schema_mutations.py says what "the same" means).
#[test]
fn the_schema_accepts_every_valid_file_and_agrees_with_validate() {
    let bin = pytools();
    let dir = temp_dir("schema");
    let schema = dir.join("schema.json");
    std::fs::write(&schema, schema_text()).expect("write schema");
    // every configuration: (name, text)
    let mut configs: Vec<(String, String)> = Vec::new();
    for root in ["conf", "packaging/conf.d", "tests/fixtures"] {
        for path in yaml_files(&repo_path(root)) {
            let name = path
                .strip_prefix(repo_path(""))
                .unwrap()
                .display()
                .to_string();
            configs.push((name, fixture_text(&path)));
        }
    }
    let from_repo = configs.len();
    configs.extend(doc_example_configs());
    assert!(from_repo >= 15 && configs.len() >= from_repo + 20);
    let docs_dir = dir.join("documents");
    std::fs::create_dir(&docs_dir).unwrap();
    let mut documents = Vec::new();
    for (name, text) in &configs {
        let mut doc = String::new();
        let mut n = 0;
        for line in text.lines().chain(std::iter::once("---")) {
            if line == "---" || line.starts_with("--- ") {
                if doc
                    .lines()
                    .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                {
                    let file = docs_dir.join(format!("{}-{n}.yaml", name.replace(['/', ':'], "_")));
                    std::fs::write(&file, &doc).unwrap();
                    documents.push(file);
                    n += 1;
                }
                doc.clear();
                continue;
            }
            doc.push_str(line);
            doc.push('\n');
        }
    }
    let out = Command::new(bin.join("check-jsonschema"))
        .arg("--schemafile")
        .arg(&schema)
        .args(&documents)
        .output()
        .expect("run check-jsonschema");
    assert!(
        out.status.success(),
        "check-jsonschema refused documents the gateway accepts:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(documents.len() >= 60, "{} documents", documents.len());

    // mutations of every single-file configuration that validates here
    let bases_dir = dir.join("bases");
    std::fs::create_dir(&bases_dir).unwrap();
    let mut bases = Vec::new();
    let mut env = vec![("FLEX_TEST_PASSWORD".to_string(), "a-password".to_string())];
    let singles = configs.iter().filter(|(name, _)| {
        !name.starts_with("conf/flex/") && !name.starts_with("tests/fixtures/flex/resource-based")
    });
    for (i, (_, text)) in singles.enumerate() {
        let file = bases_dir.join(format!("{i}.yaml"));
        std::fs::write(&file, text).unwrap();
        let vars = example_env(text);
        let ok = Command::new(GATEWAY)
            .args(["validate", "-c"])
            .arg(&file)
            .envs(vars.clone())
            .envs(env.clone())
            .output()
            .expect("validate")
            .status
            .success();
        if ok {
            bases.push(file);
            env.extend(vars);
        }
    }
    assert!(bases.len() >= 20, "{} bases", bases.len());
    let out = Command::new(bin.join("python"))
        .arg(repo_path("tests/schema_mutations.py"))
        .arg(&schema)
        .arg(GATEWAY)
        .arg(dir.join("mutations"))
        .args(&bases)
        .envs(env)
        .output()
        .expect("run schema_mutations.py");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the schema and validate disagree:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the summary line: every kind of mutation was tried, many times
    let summary = report.lines().last().unwrap_or_default();
    for kind in ["dropped", "misspelt", "unknown-key", "wrong-type"] {
        assert!(summary.contains(kind), "{summary}");
    }
    let total: usize = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(total >= 800, "{summary}");
    // ... on the config of every policy, ours and Flex's
    let covered: Vec<&str> = report
        .lines()
        .find_map(|l| l.strip_prefix("policies: "))
        .unwrap_or_default()
        .split(' ')
        .collect();
    let missing: Vec<&&str> = flex_gateway::policy::NAMES
        .iter()
        .chain(flex_gateway::config::flex::catalog::FLEX_NAMES)
        .filter(|n| !covered.contains(n))
        .collect();
    assert!(missing.is_empty(), "no mutation touched {missing:?}");
}
