//! The user's walkthrough (shared/seed/README.md), step by step, against the
//! real binaries: the demo catalog backend and the gateway running the
//! bundled conf/gateway.yaml (ports moved to free ones).

mod support;
use support::*;

/// conf/gateway.yaml with the listener on `{port}`, the upstream on the
/// catalog's port and the process files in the test's directory.
fn bundled_config(catalog_port: u16) -> String {
    std::fs::read_to_string(repo_path("conf/gateway.yaml"))
        .expect("conf/gateway.yaml")
        .replace("port: 8081", "port: {port}")
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{catalog_port}"))
        .replace("/tmp/flex-gateway-demo.pid", "{dir}/gw.pid")
        .replace("/tmp/flex-gateway-demo-upgrade.sock", "{dir}/upgrade.sock")
        .replace("127.0.0.1:9901", "127.0.0.1:{admin}")
}

#[test]
fn walkthrough_end_to_end() {
    let catalog = Catalog::start();
    let gw = Gateway::start(&bundled_config(catalog.port));
    let mut c = gw.connect();

    // 1. the three products
    let r = c.get("/api/products");
    assert_eq!(r.status, 200);
    let products = r.json();
    let names: Vec<&str> = products
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["API Gateway", "Service Mesh", "Event Bus"]);
    assert_eq!(products[2]["status"], "beta");

    // 2. product 2
    let r = c.get("/api/products/2");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "Service Mesh");
    assert_eq!(r.json()["category"], "networking");

    // 3. health, rate limited
    let r = c.get("/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "UP");
    assert!(r.json()["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));

    // 4. headers pass through
    let r = c.request(
        "GET",
        "/api/products",
        &[("X-API-Key", "demo-key"), ("Accept", "application/json")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_array().map(Vec::len), Some(3));

    // 5. the backend's 404 passes through unchanged
    let r = c.get("/api/products/999");
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), serde_json::json!({"error": "Product not found"}));

    // /status goes to the backend too (its own 404)
    let r = c.get("/status");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "Not found");
    assert!(
        r.json().get("requestId").is_none(),
        "the backend's 404, not the gateway's"
    );

    // POST on a GET route: the gateway's 405 with Allow
    let r = c.request(
        "POST",
        "/api/products",
        &[("content-type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["status"], 405);

    // a path no route matches: the gateway's own 404 JSON
    let r = c.get("/no/such/path");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["status"], 404);
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(body["requestId"].as_str(), r.header("x-request-id"));

    // every one of these went over the one client connection
    let r = c.get("/api/products/1");
    assert_eq!(r.status, 200);
}

#[test]
fn headers_reach_the_backend() {
    let backend = Backend::echo();
    let gw = Gateway::start(&config_with_routes(&format!(
        r#"    - id: public-products
      path: ["/api/products", "/api/products/*"]
      methods: ["GET"]
      upstream:
        url: "{}""#,
        backend.url()
    )));
    let r = gw.connect().request(
        "GET",
        "/api/products",
        &[("X-API-Key", "demo-key"), ("Accept", "application/json")],
        b"",
    );
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert_eq!(seen.header("x-api-key"), Some("demo-key"));
    assert_eq!(seen.header("accept"), Some("application/json"));
}
