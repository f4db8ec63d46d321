//! The user's walkthrough (shared/seed/README.md), step by step, against the
//! real binaries: the demo catalog backend and the gateway running the
//! bundled conf/gateway.yaml (ports moved to free ones).

use crate::support::*;

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
    walkthrough(gw.port);
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
