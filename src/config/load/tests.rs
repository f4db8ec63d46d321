use super::*;
use crate::policy::{rate_limit, PolicyConfig, PolicySpec};
use std::time::Duration;

const SEED: &str = include_str!("../../../tests/fixtures/seed-gateway-config.yaml");

fn errors(text: &str) -> Vec<String> {
    match load_str("g.yaml", text) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn seed_file_gives_the_expected_model() {
    let c = load_str("seed.yaml", SEED).expect("seed validates");
    assert_eq!(c.gateways, vec!["product-gateway"]);
    assert_eq!(c.listeners.len(), 1);
    let l = &c.listeners[0];
    assert_eq!(l.addr.to_string(), "0.0.0.0:8081");
    let ids: Vec<&str> = l.routes.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["public-products", "health-check"]);
    let products = &l.routes[0];
    assert_eq!(products.upstream.services.len(), 1);
    let service = &products.upstream.services[0].name;
    assert_eq!(service, "route:public-products");
    let inline = c.services.iter().find(|s| &s.name == service).unwrap();
    assert_eq!(inline.targets[0].upstream.host, "host.docker.internal");
    assert_eq!(inline.targets[0].upstream.port, 3000);
    assert_eq!(
        products.upstream.timeouts,
        crate::config::model::Timeouts::all(Duration::from_secs(30))
    );
    assert_eq!(products.methods, Some(vec![http::Method::GET]));
    let health = &l.routes[1];
    assert_eq!(
        health.policies,
        vec![PolicySpec {
            config: PolicyConfig::RateLimit(rate_limit::Config {
                limits: vec![rate_limit::window::Limit {
                    max: 100,
                    period_ms: 60_000
                }],
                key: None,
                max_keys: 100_000,
                expose_headers: true,
                clusterizable: true,
                fail_open: true,
                reset_in_ms: false,
                scope: "route:health-check".into(),
                redis: None,
            }),
            order: 50,
            document: None,
            when: None,
            tier: 1,
        }]
    );
    assert_eq!(c.server, crate::config::model::ServerSettings::default());
}

fn doc(name: &str, host: &str, port: u16, routes: &str) -> String {
    format!(
        "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata:\n  name: {name}\nspec:\n  listeners:\n    - name: l\n      port: {port}\n      host: \"{host}\"\n  routes:\n{routes}"
    )
}

fn route(id: &str, path: &str, methods: &str) -> String {
    format!("    - id: {id}\n      path: \"{path}\"\n      methods: {methods}\n      upstream: {{url: \"http://127.0.0.1:1\"}}\n")
}

#[test]
fn documents_share_a_port_and_routes_join_its_listener() {
    let text = format!(
        "{}---\n{}---\n{}",
        doc("a", "0.0.0.0", 9000, &route("a1", "/a", "[GET]")),
        doc("b", "0.0.0.0", 9000, &route("b1", "/a", "[POST]")),
        doc("c", "127.0.0.1", 9001, &route("c1", "/c", "[GET]")),
    );
    let c = load_str("g.yaml", &text).expect("valid");
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(
        c.listeners[0].routes.len(),
        2,
        "same path, disjoint methods: no clash"
    );
    assert_eq!(c.listeners[1].routes.len(), 1);
}

#[test]
fn a_shared_port_must_mean_the_same_address() {
    let text = format!(
        "{}---\n{}",
        doc("a", "0.0.0.0", 9000, &route("a1", "/a", "[GET]")),
        doc("b", "127.0.0.1", 9000, &route("b1", "/b", "[GET]")),
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("port 9000 is already declared for host 0.0.0.0 at g.yaml:7:7"),
        "{errs:?}"
    );
}

#[test]
fn clashes_need_overlapping_methods_on_the_same_listener() {
    let any = "[GET, POST, PUT, PATCH, DELETE]";
    let text = format!(
        "{}---\n{}",
        doc("a", "0.0.0.0", 9000, &route("a1", "/x/*", "[GET]")),
        doc("b", "0.0.0.0", 9000, &route("b1", "/x/*", any)),
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("path /x/* clashes with route \"a1\""),
        "{errs:?}"
    );
    // the same pattern on another port is fine
    let text = format!(
        "{}---\n{}",
        doc("a", "0.0.0.0", 9000, &route("a1", "/x/*", "[GET]")),
        doc("b", "0.0.0.0", 9001, &route("b1", "/x/*", "[GET]")),
    );
    assert!(errors(&text).is_empty());
}

#[test]
fn server_settings_once() {
    let server = "  server:\n    threads: 3\n    gracePeriod: 20\n    shutdownTimeout: 2s\n    accessLog: false\n";
    let one = format!(
        "{}{server}",
        doc("a", "0.0.0.0", 9000, &route("a1", "/a", "[GET]"))
    );
    let c = load_str("g.yaml", &one).expect("valid");
    assert_eq!(c.server.threads, 3);
    assert_eq!(c.server.grace_period, Duration::from_secs(20));
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(2));
    assert!(!c.server.access_log);
    let two = format!(
        "{one}---\n{}{server}",
        doc("b", "0.0.0.0", 9000, &route("b1", "/b", "[GET]"))
    );
    let errs = errors(&two);
    assert!(
        errs.iter()
            .any(|e| e.contains("server settings are already given at g.yaml:")),
        "{errs:?}"
    );
}

#[test]
fn work_stealing_follows_threads_unless_set() {
    let settings = |server: &str| {
        let text = format!(
            "{}  server:\n{server}",
            doc("a", "0.0.0.0", 9000, &route("a1", "/a", "[GET]"))
        );
        let s = load_str("g.yaml", &text).expect("valid").server;
        (s.threads, s.work_stealing())
    };
    // one thread: its own single-threaded runtime; more: work stealing
    assert_eq!(settings("    threads: 1\n"), (1, false));
    assert_eq!(settings("    threads: 2\n"), (2, true));
    assert_eq!(
        settings("    threads: 1\n    workStealing: true\n"),
        (1, true)
    );
    assert_eq!(
        settings("    threads: 4\n    workStealing: false\n"),
        (4, false)
    );
}

#[test]
fn unsupported_kind_and_version() {
    let text = SEED.replace("kind: Gateway", "kind: Ingress");
    let errs = errors(&text);
    assert!(
        errs[0].contains(
            "unsupported kind \"Ingress\" (supported: Gateway, ApiInstance, Service, PolicyBinding, Configuration, Extension)"
        ),
        "{errs:?}"
    );
    let text = SEED.replace("v1alpha1", "v2");
    let errs = errors(&text);
    assert!(
        errs[0].contains("g.yaml:1:13: apiVersion: unsupported apiVersion"),
        "{errs:?}"
    );
}

#[test]
fn upstream_urls() {
    use crate::config::values::parse_upstream_url;
    let u = parse_upstream_url("http://Example.com:8080/v1/").expect("valid");
    assert_eq!(
        (u.host.as_str(), u.port, u.base_path.as_str(), u.tls),
        ("example.com", 8080, "/v1", false)
    );
    assert_eq!(u.authority, "example.com:8080");
    let u = parse_upstream_url("https://api.example.com").expect("valid");
    assert_eq!((u.port, u.tls, u.base_path.as_str()), (443, true, ""));
    let u = parse_upstream_url("http://[::1]:3000").expect("valid");
    assert_eq!(u.host, "::1");
    for bad in [
        "ftp://h",
        "h:3000",
        "http://",
        "http://h:0",
        "http://h/?q=1",
        "http://u:p@h",
    ] {
        assert!(parse_upstream_url(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn document_policies_come_first_and_order_overrides() {
    let text = "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  listeners: [{name: l, port: 9000}]\n  policies:\n    - rate-limiting: {maxRequests: 100, period: 60}\n  routes:\n    - id: a\n      path: /a\n      upstream: {url: \"http://127.0.0.1:1\"}\n      policies:\n        - http-basic-authentication: {users: [{username: u, password: p}]}\n          order: 10\n    - id: b\n      path: /b\n      upstream: {url: \"http://127.0.0.1:1\"}\n      policies:\n        - http-basic-authentication: {users: [{username: u, password: p}]}\n";
    let c = load_str("g.yaml", text).expect("valid");
    let names = |i: usize| -> Vec<(&str, i32, bool)> {
        c.listeners[0].routes[i]
            .policies
            .iter()
            .map(|p| (p.name(), p.order, p.document.is_some()))
            .collect()
    };
    assert_eq!(
        names(0),
        [
            ("http-basic-authentication", 10, false),
            ("rate-limiting", 50, true)
        ]
    );
    assert_eq!(
        names(1),
        [
            ("rate-limiting", 50, true),
            ("http-basic-authentication", 50, false)
        ]
    );
}
