//! Authentication policies and the policy chain, as a client (and an
//! attacker) sees them: statuses, challenges, what reaches the backend, and
//! that secrets never show in logs or `/config`.

use crate::support::*;
use std::time::Duration;

const BOB_PASSWORD: &str = "bob-plain-Secret-0451";
const ALICE_PASSWORD: &str = "alice-Secret-9317";
const MOBILE_KEY: &str = "mk-7f3a9c2e51b84d06";
const FILE_KEY: &str = "pk-partner-66a1d0c3";

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn auth_config(backend: &Backend, keys_file: &std::path::Path, alice_hash: &str) -> String {
    let url = backend.url();
    config_with_routes(&format!(
        r#"    - id: basic
      path: "/basic/*"
      upstream: {{url: "{url}"}}
      policies:
        - http-basic-authentication:
            realm: orders
            users:
              - username: alice
                passwordHash: "{alice_hash}"
              - username: bob
                password: "${{FLEXGW_TEST_BOB_PASSWORD}}"
    - id: basic-keep
      path: "/basic-keep/*"
      upstream: {{url: "{url}"}}
      policies:
        - http-basic-authentication:
            keepCredentials: true
            users: [{{username: bob, password: "${{FLEXGW_TEST_BOB_PASSWORD}}"}}]
    - id: keyed
      path: "/keyed/*"
      upstream: {{url: "{url}"}}
      policies:
        - api-key:
            queryParam: api_key
            consumerHeader: X-Consumer
            keys:
              - {{consumer: mobile, key: "${{FLEXGW_TEST_MOBILE_KEY}}"}}
            keysFile: "{}""#,
        keys_file.display()
    ))
}

fn start_auth_gateway(backend: &Backend) -> Gateway {
    let dir = temp_dir("keys");
    let keys = dir.join("keys.txt");
    std::fs::write(&keys, format!("# partner keys\npartner:{FILE_KEY}\n")).expect("keys");
    let hash = bcrypt::hash(ALICE_PASSWORD, 6).expect("bcrypt");
    Gateway::start_with_env(
        &auth_config(backend, &keys, &hash),
        &[
            ("FLEXGW_TEST_BOB_PASSWORD", BOB_PASSWORD),
            ("FLEXGW_TEST_MOBILE_KEY", MOBILE_KEY),
            ("RUST_LOG", "debug"),
        ],
    )
}

#[test]
fn basic_auth_challenges_checks_and_strips_credentials() {
    let backend = Backend::echo();
    let gw = start_auth_gateway(&backend);
    let mut c = gw.connect();

    let r = c.get("/basic/orders");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Basic realm="orders", charset="UTF-8""#)
    );
    assert_eq!(r.json()["status"], 401);
    assert!(r.json()["requestId"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));

    let wrong = basic("alice", "not-her-password");
    let r = c.request("GET", "/basic/orders", &[("authorization", &wrong)], b"");
    assert_eq!(r.status, 401);
    let unknown = basic("mallory", ALICE_PASSWORD);
    let r = c.request("GET", "/basic/orders", &[("authorization", &unknown)], b"");
    assert_eq!(r.status, 401);
    let r = c.request(
        "GET",
        "/basic/orders",
        &[("authorization", "Basic !!!")],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        backend.count(),
        0,
        "no rejected request reached the backend"
    );

    // bcrypt user, twice (the second from the cache), then the plain one
    let alice = basic("alice", ALICE_PASSWORD);
    for _ in 0..2 {
        let r = c.request("GET", "/basic/orders", &[("authorization", &alice)], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(backend.last().header("authorization"), None);
    }
    let bob = basic("bob", BOB_PASSWORD);
    let r = c.request("GET", "/basic/orders", &[("authorization", &bob)], b"");
    assert_eq!(r.status, 200);
    assert_eq!(backend.count(), 3);

    // keepCredentials: true forwards the header as sent
    let r = c.request("GET", "/basic-keep/x", &[("authorization", &bob)], b"");
    assert_eq!(r.status, 200);
    assert_eq!(backend.last().header("authorization"), Some(bob.as_str()));

    let m = gw.admin("/metrics").text();
    assert!(
        m.contains(
            r#"flexgw_policy_rejections_total{route="basic",policy="http-basic-authentication"} 4"#
        ),
        "{m}"
    );
}

#[test]
fn api_keys_from_header_query_and_file() {
    let backend = Backend::echo();
    let gw = start_auth_gateway(&backend);
    let mut c = gw.connect();

    assert_eq!(c.get("/keyed/a").status, 401);
    let r = c.request("GET", "/keyed/a", &[("x-api-key", "nope")], b"");
    assert_eq!(r.status, 401);
    assert_eq!(c.get("/keyed/a?api_key=nope").status, 401);
    assert_eq!(backend.count(), 0);

    // header; a forged consumer header is replaced
    let r = c.request(
        "GET",
        "/keyed/a?x=1",
        &[("x-api-key", MOBILE_KEY), ("x-consumer", "admin")],
        b"",
    );
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert_eq!(seen.header("x-consumer"), Some("mobile"));
    assert_eq!(seen.header("x-api-key"), None);
    assert_eq!(seen.target, "/keyed/a?x=1");

    // query parameter: removed, the others kept in order
    let r = c.get(&format!("/keyed/b?x=1&api_key={MOBILE_KEY}&y=%2F2"));
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert_eq!(seen.target, "/keyed/b?x=1&y=%2F2");
    assert_eq!(seen.header("x-consumer"), Some("mobile"));

    // from the keys file, with its consumer
    let r = c.request("GET", "/keyed/c", &[("x-api-key", FILE_KEY)], b"");
    assert_eq!(r.status, 200);
    assert_eq!(backend.last().header("x-consumer"), Some("partner"));
    assert_eq!(backend.count(), 3);
}

#[test]
fn secrets_never_show_in_logs_or_config() {
    let backend = Backend::echo();
    let gw = start_auth_gateway(&backend);
    let mut c = gw.connect();
    let alice = basic("alice", ALICE_PASSWORD);
    let bob = basic("bob", BOB_PASSWORD);
    c.request("GET", "/basic/x", &[("authorization", &alice)], b"");
    c.request("GET", "/basic/x", &[("authorization", &bob)], b"");
    c.request(
        "GET",
        "/basic/x",
        &[("authorization", &basic("bob", "wrong"))],
        b"",
    );
    c.request("GET", "/keyed/x", &[("x-api-key", MOBILE_KEY)], b"");
    c.get(&format!("/keyed/x?api_key={FILE_KEY}"));
    c.request("GET", "/keyed/x", &[("x-api-key", "guess-key-1")], b"");

    let config = gw.admin("/config").text();
    assert!(config.contains("\"api-key\""), "{config}");
    assert!(config.contains("<redacted>"), "{config}");
    // the access log is written after each response: poll for the last line
    let mut log = String::new();
    wait_until(Duration::from_secs(10), "six access-log lines", || {
        log =
            gw.log_text() + &std::fs::read_to_string(gw.dir.join("stdout.log")).unwrap_or_default();
        log.matches("\"routeId\":\"keyed\"").count() >= 3
    });
    assert!(log.contains(r#""consumer":"mobile""#), "{log}");
    for secret in [ALICE_PASSWORD, BOB_PASSWORD, MOBILE_KEY, FILE_KEY, "$2b$"] {
        assert!(!config.contains(secret), "/config shows {secret}: {config}");
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }
}

#[test]
fn auth_before_rate_limit_spends_no_quota_and_headers_reach_local_responses() {
    fresh_window(Duration::from_secs(60), Duration::from_secs(15));
    let backend = Backend::echo();
    let url = backend.url();
    // document-level rate limit (one counter for the whole document) and a
    // route whose API key runs first (order 10)
    let config = config_with(
        r#"    - rate-limiting: {maxRequests: 100, period: 60}"#,
        &format!(
            r#"    - id: keyed-limited
      path: "/kl"
      upstream: {{url: "{url}"}}
      policies:
        - api-key: {{keys: ["{MOBILE_KEY}"]}}
          order: 10
        - rate-limiting: {{maxRequests: 3, period: 60}}
    - id: limited-keyed
      path: "/lk"
      upstream: {{url: "{url}"}}
      policies:
        - rate-limiting: {{maxRequests: 3, period: 60}}
        - api-key: {{keys: ["{MOBILE_KEY}"]}}"#
        ),
    );
    let gw = Gateway::start(&config);
    let mut c = gw.connect();
    let key = [("x-api-key", MOBILE_KEY)];

    // /kl: api-key (order 10), then the document limit, then the route limit
    for _ in 0..5 {
        let r = c.get("/kl");
        assert_eq!(r.status, 401);
        assert_eq!(r.header("x-ratelimit-limit"), None, "no limit ran yet");
    }
    for i in 0..3 {
        let r = c.request("GET", "/kl", &key, b"");
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some((2 - i).to_string().as_str())
        );
    }
    let r = c.request("GET", "/kl", &key, b"");
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());

    // /lk: the limits run first and count every request; the 401 carries
    // the rate-limit headers the policies already added
    let r = c.get("/lk");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("2"));
    for _ in 0..2 {
        assert_eq!(c.request("GET", "/lk", &key, b"").status, 200);
    }
    let r = c.request("GET", "/lk", &key, b"");
    assert_eq!(r.status, 429, "the rejected request spent quota on /lk");

    let m = gw.admin("/metrics").text();
    assert!(
        m.contains(r#"flexgw_policy_rejections_total{route="keyed-limited",policy="api-key"} 5"#),
        "{m}"
    );
    assert!(
        m.contains(
            r#"flexgw_policy_rejections_total{route="keyed-limited",policy="rate-limiting"} 1"#
        ),
        "{m}"
    );
    assert_eq!(backend.count(), 5);
}

#[test]
fn a_document_level_limit_is_one_counter_for_all_its_routes() {
    fresh_window(Duration::from_secs(60), Duration::from_secs(15));
    let backend = Backend::echo();
    let url = backend.url();
    let config = config_with(
        r#"    - rate-limiting: {maxRequests: 4, period: 60}"#,
        &format!(
            r#"    - id: one
      path: "/one"
      upstream: {{url: "{url}"}}
    - id: two
      path: "/two"
      upstream: {{url: "{url}"}}"#
        ),
    );
    let gw = Gateway::start(&config);
    let mut c = gw.connect();
    let statuses: Vec<u16> = ["/one", "/two", "/one", "/two", "/one", "/two"]
        .iter()
        .map(|p| c.get(p).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
}

#[test]
fn rotated_secret_and_key_files_take_effect_without_restart() {
    let backend = Backend::echo();
    let dir = temp_dir("rotate");
    let secret = dir.join("password");
    let keys = dir.join("keys");
    std::fs::write(&secret, "first-password\n").expect("write");
    std::fs::write(&keys, "ops:first-key\n").expect("write");
    let url = backend.url();
    let config = config_with_routes(&format!(
        r#"    - id: basic
      path: "/basic"
      upstream: {{url: "{url}"}}
      policies:
        - http-basic-authentication:
            users: [{{username: ops, password: "file:{secret}"}}]
    - id: keyed
      path: "/keyed"
      upstream: {{url: "{url}"}}
      policies:
        - api-key: {{keysFile: "{keys}"}}"#,
        secret = secret.display(),
        keys = keys.display(),
    ));
    let gw = Gateway::start(&config);
    let mut c = gw.connect();
    let old = basic("ops", "first-password");
    let new = basic("ops", "second-password");
    assert_eq!(
        c.request("GET", "/basic", &[("authorization", &old)], b"")
            .status,
        200
    );
    assert_eq!(
        c.request("GET", "/basic", &[("authorization", &new)], b"")
            .status,
        401
    );
    assert_eq!(
        c.request("GET", "/keyed", &[("x-api-key", "first-key")], b"")
            .status,
        200
    );

    // rotate both files; the watcher reloads (no signal, no restart)
    std::fs::write(&secret, "second-password\n").expect("write");
    std::fs::write(&keys, "ops:second-key\n").expect("write");
    wait_until(Duration::from_secs(15), "the rotated password", || {
        c.request("GET", "/basic", &[("authorization", &new)], b"")
            .status
            == 200
    });
    assert_eq!(
        c.request("GET", "/basic", &[("authorization", &old)], b"")
            .status,
        401
    );
    wait_until(Duration::from_secs(15), "the rotated key", || {
        c.request("GET", "/keyed", &[("x-api-key", "second-key")], b"")
            .status
            == 200
    });
    assert_eq!(
        c.request("GET", "/keyed", &[("x-api-key", "first-key")], b"")
            .status,
        401
    );
}
