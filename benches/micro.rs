//! Micro-benchmarks of the per-request work that is ours (not Pingora's):
//! route matching at 10 / 100 / 1,000 routes, path normalisation, the
//! rate-limit check, the JSON error body, and each policy's cost per request
//! through the chain (request, upstream-request and response hooks), alone
//! and as a chain of five; the forwarding headers each request gets.
//! `cargo bench --bench micro`.
//!
//! Heap allocations are counted too (a counting global allocator, per
//! thread): `policy_per_request` prints how many one request through each
//! chain makes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use flex_gateway::config::load_str;
use flex_gateway::config::model::Route;
use flex_gateway::exchange::Exchange;
use flex_gateway::forwarding::{forward, Hop};
use flex_gateway::ops::metrics::Metrics;
use flex_gateway::path::normalize;
use flex_gateway::policy::jwt::Jwt;
use flex_gateway::policy::rate_limit::window::Limit;
use flex_gateway::policy::rate_limit::{Config as RateLimitConfig, KeySource, RateLimiter};
use flex_gateway::policy::PolicyConfig;
use flex_gateway::response::error_body;
use flex_gateway::router::{Match, Router};
use flex_gateway::runtime::Snapshot;
use http::Method;
use pingora::http::{RequestHeader, ResponseHeader};
use std::hint::black_box;
use std::sync::Arc;

/// The system allocator, counting allocations while [`COUNTING`] is on
/// (off while criterion times: one relaxed load per allocation then).
struct Counting;

static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count_one() {
    use std::sync::atomic::Ordering::Relaxed;
    if COUNTING.load(Relaxed) {
        ALLOCATIONS.fetch_add(1, Relaxed);
    }
}

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_one();
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_one();
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        count_one();
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and reallocations) made running `f`, per call (the
/// process's: nothing else runs meanwhile).
fn allocations_per_call(calls: u64, mut f: impl FnMut()) -> f64 {
    use std::sync::atomic::Ordering::Relaxed;
    f(); // caches warm: what a request costs once they are
    COUNTING.store(true, Relaxed);
    let before = ALLOCATIONS.load(Relaxed);
    for _ in 0..calls {
        f();
    }
    let n = ALLOCATIONS.load(Relaxed) - before;
    COUNTING.store(false, Relaxed);
    n as f64 / calls as f64
}

/// `n` routes: half exact (`/svc/rNNNN/status`), half wildcard (`/svc/rNNNN/*`).
fn routes(n: usize) -> Vec<Arc<Route>> {
    let mut yaml = String::from(
        "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {name: b}\nspec:\n  listeners: [{name: l, port: 9000}]\n  routes:\n",
    );
    for i in 0..n {
        let path = if i % 2 == 0 {
            format!("/svc/r{i:04}/status")
        } else {
            format!("/svc/r{i:04}/*")
        };
        yaml.push_str(&format!(
            "    - id: r{i}\n      path: \"{path}\"\n      methods: [GET]\n      upstream: {{url: \"http://127.0.0.1:1\"}}\n"
        ));
    }
    let config = load_str("bench.yaml", &yaml).expect("valid bench config");
    config.listeners[0].routes.clone()
}

fn route_matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for n in [10usize, 100, 1000] {
        let table = routes(n);
        let router = Router::new(table.iter().map(|r| (r.as_ref(), r.clone())));
        let last_exact = format!("/svc/r{:04}/status", n - 2);
        let last_wild = format!("/svc/r{:04}/items/42", n - 1);
        let cases = [
            ("exact_hit", last_exact.as_str()),
            ("wildcard_hit", last_wild.as_str()),
            ("miss", "/nothing/here/at/all"),
        ];
        for (name, path) in cases {
            group.bench_with_input(BenchmarkId::new(name, n), &path, |b, path| {
                b.iter(|| {
                    let found =
                        router.find(black_box("api.example.com"), &Method::GET, black_box(path));
                    black_box(matches!(found, Match::Found(_)))
                })
            });
        }
    }
    group.finish();
}

/// `n` Flex routes in one ApiInstance: `/svc/rNNNN(/.*)` with a methods
/// rule, half of them also a header rule; regex routing through one set.
fn flex_routes(n: usize) -> Vec<Arc<Route>> {
    let mut yaml = String::from(
        "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: ApiInstance\nmetadata: {name: b}\nspec:\n  address: http://0.0.0.0:9000/api\n  services:\n    s:\n      address: http://127.0.0.1:1\n      routes:\n",
    );
    for i in 0..n {
        let header = if i % 2 == 0 {
            ", headers: {x-tenant: \"acme|globex\"}"
        } else {
            ""
        };
        yaml.push_str(&format!(
            "        - rules: [{{path: \"/svc/r{i:04}(/.*)\", methods: \"GET|POST\"{header}}}]\n          config: {{destinationPath: /v1}}\n"
        ));
    }
    let config = load_str("bench.yaml", &yaml).expect("valid flex bench config");
    config.listeners[0].routes.clone()
}

/// Flex regex routes: 1,000 of them, the last one hit (the worst case for
/// a route-by-route scan), and a miss.
fn flex_route_matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("flex_route_match");
    let mut headers = http::HeaderMap::new();
    headers.insert("x-tenant", "acme".parse().unwrap());
    for n in [10usize, 100, 1000] {
        let table = flex_routes(n);
        let router = Router::new(table.iter().map(|r| (r.as_ref(), r.clone())));
        let last = format!("/api/svc/r{:04}/items/42", n - 1);
        let cases = [("last_hit", last.as_str()), ("miss", "/api/nothing/here")];
        for (name, path) in cases {
            group.bench_with_input(BenchmarkId::new(name, n), &path, |b, path| {
                b.iter(|| {
                    let found = router.route(
                        black_box("api.example.com"),
                        &Method::GET,
                        black_box(path),
                        &headers,
                    );
                    black_box(matches!(found.0, Match::Found(_)))
                })
            });
        }
    }
    group.finish();
}

fn path_normalisation(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    for (name, path) in [
        ("clean", "/api/products/2"),
        ("dots_and_slashes", "/api//products/./x/../2"),
        ("percent", "/api/%70roducts/%2E%2E/products/2"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(normalize(black_box(path)).is_ok()))
        });
    }
    group.finish();
}

fn rate_limit(c: &mut Criterion) {
    let config = |key| RateLimitConfig {
        reset_in_ms: false,
        limits: vec![Limit {
            max: u64::MAX / 2,
            period_ms: 60_000,
        }],
        key,
        max_keys: 100_000,
        expose_headers: true,
        clusterizable: false,
        fail_open: true,
        scope: "bench".into(),
        redis: None,
    };
    let limiter = RateLimiter::new(&config(None));
    c.bench_function("rate_limit_check", |b| {
        b.iter(|| black_box(limiter.check_local(b"all", 1_000)))
    });
    // one of 100,000 client keys per request (the map full of live keys)
    let per_client = RateLimiter::new(&config(Some(KeySource::ClientIp)));
    let keys: Vec<Vec<u8>> = (0..100_000u32)
        .map(|i| format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255).into_bytes())
        .collect();
    for k in &keys {
        per_client.check_local(k, 1_000);
    }
    let mut i = 0;
    c.bench_function("rate_limit_check_100k_keys", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(per_client.check_local(&keys[i], 1_000))
        })
    });
}

/// Poll a future that completes without waiting (every policy here: no I/O).
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("a policy waited in a micro-benchmark"),
    }
}

const SECRET: &str = "bench-password-1";
const KEY: &str = "bench-api-key-0123456789";

/// A route per policy under test (and "none", the base cost of the
/// hooks' plumbing), and in a second document a chain of five: a
/// document-level rate limit, then api-key, jwt-validation (token in
/// X-Token), basic auth and a route rate limit.
/// The document of the `openapi-validation` route (JSON: one line).
const OPENAPI_SPEC: &str = r#"{"openapi": "3.1.0", "paths": {"/x/orders": {"get": {"parameters": [{"name": "a", "in": "query", "required": true, "schema": {"type": "integer", "minimum": 1}}]}, "post": {"requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["customer", "items"], "properties": {"customer": {"type": "string", "maxLength": 40}, "items": {"type": "array", "maxItems": 100, "items": {"type": "object", "required": ["sku", "qty"], "additionalProperties": false, "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"}, "qty": {"type": "integer", "minimum": 1}}}}}}}}}}}}}"#;

fn policy_routes(public_pem: &std::path::Path, bcrypt_hash: &str) -> Snapshot {
    let pem = public_pem.display();
    let jwt =
        format!("jwt-validation: {{keys: [{{algorithm: RS256, publicKey: \"file:{pem}\"}}]}}");
    let jwt_x = format!(
        "jwt-validation: {{token: {{header: X-Token}}, keys: [{{algorithm: RS256, publicKey: \"file:{pem}\"}}]}}"
    );
    let basic = format!(
        "http-basic-authentication: {{users: [{{username: u, passwordHash: \"{bcrypt_hash}\"}}]}}"
    );
    let api_key = format!("api-key: {{keys: [\"{KEY}\"]}}");
    let rl = "rate-limiting: {maxRequests: 1000000000000, period: 60}".to_string();
    let cors = "cors: {origins: [\"https://app.example.com\"], allowCredentials: true}".to_string();
    let ranges: Vec<String> = (0..1000u32)
        .map(|i| format!("\"10.{}.{}.0/24\"", i / 256, i % 256))
        .chain(["\"127.0.0.0/8\"".to_string()])
        .collect();
    let ip = format!("ip-allowlist: {{ips: [{}]}}", ranges.join(", "));
    let inject = "header-injection: {request: [{name: X-Client-Ip, value: \"{client_ip}\"}, {name: X-Route, value: \"{route_id}\"}], response: [{name: X-Frame-Options, value: DENY}]}".to_string();
    let remove = "header-removal: {request: [\"x-internal-*\"], response: [server]}".to_string();
    let rewrite = "path-rewrite: {pattern: \"^/x/(.*)$\", replacement: \"/api/$1\"}".to_string();
    let head = |name: &str| {
        format!("apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  listeners: [{{name: l, port: 9000}}]\n")
    };
    let route = |id: &str, policies: &[&String]| {
        let mut r = format!(
            "    - id: {id}\n      path: /{id}\n      upstream: {{url: \"http://127.0.0.1:1\"}}\n"
        );
        if !policies.is_empty() {
            r.push_str("      policies:\n");
            for p in policies {
                r.push_str(&format!("        - {p}\n"));
            }
        }
        r
    };
    let mut yaml = head("single");
    yaml.push_str("  routes:\n");
    yaml.push_str(&route("none", &[]));
    yaml.push_str(&route("rate-limiting", &[&rl]));
    yaml.push_str(&route("api-key", &[&api_key]));
    yaml.push_str(&route("http-basic-authentication", &[&basic]));
    yaml.push_str(&route("jwt-validation", &[&jwt]));
    yaml.push_str(&route("cors", &[&cors]));
    yaml.push_str(&route("ip-allowlist", &[&ip]));
    yaml.push_str(&route("header-injection", &[&inject]));
    yaml.push_str(&route("header-removal", &[&remove]));
    yaml.push_str(&route("path-rewrite", &[&rewrite]));
    // the request's head (path, method, a typed query parameter) and, in
    // openapi_validation_post_1kb, a 1 KB JSON body against its schema
    let openapi = format!("openapi-validation: {{spec: '{OPENAPI_SPEC}'}}");
    yaml.push_str(&route("openapi-validation", &[&openapi]));
    // custom policies: the 286-byte hand-written filter of conf/ (the host's
    // own cost) and, when the test filters are built, the SDK-built one
    // adding a response header from its JSON config
    let wat = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/custom-policy.yaml"
    ))
    .expect("conf/custom-policy.yaml");
    let module = wat
        .lines()
        .find_map(|l| l.trim().strip_prefix("module: "))
        .expect("module line")
        .to_string();
    let wasm_wat = format!("proxy-wasm: {{module: {module}, instances: 1}}");
    yaml.push_str(&route("proxy-wasm-wat", &[&wasm_wat]));
    // FLEXGW_BENCH_WASM: another SDK-built module adding a response header
    // (e.g. the SDK's http_config example; its config is the value)
    let (sdk, root) = match std::env::var("FLEXGW_BENCH_WASM") {
        Ok(path) => (std::path::PathBuf::from(path), "main"),
        Err(_) => (
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/wasm-filters/wasm32-wasip1/release/flexgw_test_filters.wasm"),
            "config",
        ),
    };
    let wasm_sdk = format!(
        "proxy-wasm: {{module: \"{}\", rootId: \"{root}\", config: {{header: x-team, value: payments}}, instances: 1}}",
        sdk.display()
    );
    if sdk.exists() {
        yaml.push_str(&route("proxy-wasm-sdk", &[&wasm_sdk]));
    } else {
        eprintln!(
            "proxy-wasm-sdk: not measured ({} not built: cargo test --test wasm builds it)",
            sdk.display()
        );
    }
    yaml.push_str("---\n");
    yaml.push_str(&head("five"));
    yaml.push_str(&format!("  policies:\n    - {rl}\n  routes:\n"));
    yaml.push_str(&route("chain-of-5", &[&api_key, &jwt_x, &basic, &rl]));
    let config = load_str("bench.yaml", &yaml).expect("valid bench config");
    Snapshot::build(config, None, &Metrics::new())
}

fn policies(c: &mut Criterion) {
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    let dir = std::env::temp_dir().join(format!("flexgw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let rsa = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
    let public = dir.join("public.pem");
    std::fs::write(&public, rsa.public_key_to_pem().expect("pem")).expect("write");
    let private = rsa.private_key_to_pem_pkcs8().expect("pem");
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &serde_json::json!({"sub": "bench", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&private).expect("key"),
    )
    .expect("sign");
    let hash = bcrypt::hash(SECRET, 4).expect("bcrypt");
    let snapshot = policy_routes(&public, &hash);
    let mut req = RequestHeader::build("GET", b"/x/orders?a=1", None).expect("request");
    req.insert_header("x-api-key", KEY).expect("header");
    req.insert_header("origin", "https://app.example.com")
        .expect("header");
    req.insert_header("authorization", format!("Bearer {token}"))
        .expect("header");
    let mut basic_req = req.clone();
    use base64::Engine;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("u:{SECRET}"));
    basic_req
        .insert_header("authorization", format!("Basic {creds}"))
        .expect("header");
    basic_req.insert_header("x-token", &token).expect("header");
    let mut group = c.benchmark_group("policy_per_request");
    let mut allocations = Vec::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime");
    for id in [
        "none",
        "rate-limiting",
        "api-key",
        "http-basic-authentication",
        "jwt-validation",
        "cors",
        "ip-allowlist",
        "header-injection",
        "header-removal",
        "path-rewrite",
        "openapi-validation",
        "proxy-wasm-wat",
        "proxy-wasm-sdk",
        "chain-of-5",
    ] {
        let Some(route) = snapshot.routes.get(id).cloned() else {
            continue;
        };
        let r = if matches!(id, "http-basic-authentication" | "chain-of-5") {
            &basic_req
        } else {
            &req
        };
        // basic auth's first check is a real bcrypt one (on the blocking
        // pool: not what is measured here); later ones hit its cache
        let mut x = Exchange::new();
        x.client_ip = Some(std::net::IpAddr::from([127, 0, 0, 1]));
        let mut ran = flex_gateway::policy::chain::Ran::default();
        let mut r = r.clone();
        let rejected = rt.block_on(route.chain.on_request(&mut r, &mut x, &mut ran, None));
        assert!(rejected.is_none(), "{id}: {rejected:?}");
        // one request through the chain: its request, upstream-request,
        // response and logging hooks
        let mut one = || {
            let mut x = Exchange::new();
            x.client_ip = Some(std::net::IpAddr::from([127, 0, 0, 1]));
            x.path = "/x/orders".into();
            let mut ran = flex_gateway::policy::chain::Ran::default();
            let rejected = ready(
                route
                    .chain
                    .on_request(black_box(&mut r), &mut x, &mut ran, None),
            );
            assert!(rejected.is_none());
            let mut up = r.clone();
            route
                .chain
                .on_upstream_request(&mut up, &mut x, ran)
                .expect("upstream");
            let mut resp = ResponseHeader::build(200, None).expect("response");
            route
                .chain
                .on_response(
                    &mut resp,
                    &mut x,
                    ran,
                    flex_gateway::policy::chain::Side::All,
                )
                .expect("response");
            route.chain.on_logging(&x, 200, ran);
            black_box(resp);
        };
        allocations.push((id, allocations_per_call(1000, &mut one)));
        group.bench_function(id, |b| b.iter(&mut one));
    }
    group.finish();
    eprintln!("allocations per request through the chain (the request head's copy upstream and the response head included):");
    for (id, n) in &allocations {
        eprintln!("  {id:<28} {n:>6.1}");
    }

    // openapi-validation on a POST with a 1 KB JSON body: the head's check,
    // then the body held, parsed and checked against its schema
    let route = snapshot.routes["openapi-validation"].clone();
    let items: Vec<String> = (0..36)
        .map(|i| format!("{{\"sku\":\"ABC-{:03}\",\"qty\":{}}}", i, i + 1))
        .collect();
    let order = bytes::Bytes::from(format!(
        "{{\"customer\":\"bench\",\"items\":[{}]}}",
        items.join(",")
    ));
    let mut post = RequestHeader::build("POST", b"/x/orders", None).expect("request");
    post.insert_header("content-type", "application/json")
        .expect("header");
    post.insert_header("content-length", order.len().to_string())
        .expect("header");
    c.bench_function(
        &format!("openapi_validation_post_{}_bytes", order.len()),
        |b| {
            b.iter(|| {
                let mut x = Exchange::new();
                let mut ran = flex_gateway::policy::chain::Ran::default();
                let mut r = post.clone();
                let rejected = ready(route.chain.on_request(&mut r, &mut x, &mut ran, None));
                assert!(rejected.is_none());
                let mut chunk = Some(order.clone());
                let refused = route
                    .chain
                    .on_request_body(&mut chunk, true, &mut x, ran)
                    .expect("body");
                assert!(refused.is_none() && chunk.is_some());
                black_box(chunk)
            })
        },
    );

    // the verification a cache miss pays: RS256 signature and claims
    let jwt = match &snapshot.routes["jwt-validation"].config.policies[0].config {
        PolicyConfig::Jwt(c) => Jwt::new(c),
        _ => unreachable!("the jwt route's policy"),
    };
    c.bench_function("jwt_rs256_uncached", |b| {
        b.iter(|| black_box(ready(jwt.verify_uncached(black_box(&token)))))
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The IP-set lookup at 10,000 ranges (IPv4 /24s and IPv6 /48s).
fn ip_lookup(c: &mut Criterion) {
    use flex_gateway::ipset::{parse_net, IpSet};
    let mut nets = Vec::new();
    for i in 0..5000u32 {
        // every other /24 and /48: nothing merges, 5,000 intervals each
        let j = 2 * i;
        nets.push(parse_net(&format!("11.{}.{}.0/24", j / 256, j % 256)).expect("v4"));
        nets.push(parse_net(&format!("2001:db8:{j:x}::/48")).expect("v6"));
    }
    let set = IpSet::new(nets);
    assert!(set.contains("11.30.78.9".parse().expect("ip")));
    assert!(!set.contains("11.30.79.9".parse().expect("ip")));
    let mut group = c.benchmark_group("ip_lookup_10000_ranges");
    for (name, ip) in [
        ("v4_hit", "11.30.78.9"),
        ("v4_miss", "192.0.2.1"),
        ("v6_hit", "2001:db8:1f00::1"),
        ("v6_miss", "2001:db9::1"),
        ("mapped_v4_hit", "::ffff:11.30.78.9"),
    ] {
        let ip: std::net::IpAddr = ip.parse().expect("ip");
        group.bench_function(name, |b| b.iter(|| black_box(set.contains(black_box(ip)))));
    }
    group.finish();
}

/// The request as Pingora parses wrk's (`Host` only), copied for the
/// upstream as Pingora does, then given the forwarding headers; with and
/// without an `X-Forwarded-For` from a proxy in front.
fn forward_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_headers");
    for (name, xff) in [("plain", None), ("behind_a_proxy", Some("203.0.113.7"))] {
        let mut req = RequestHeader::build("GET", b"/api/products", Some(2)).unwrap();
        req.insert_header("Host", "127.0.0.1:18083").unwrap();
        if let Some(xff) = xff {
            req.insert_header("X-Forwarded-For", xff).unwrap();
        }
        let id = http::HeaderValue::from_static("9eecca89d00cd07b0a9471a0ef3900e1");
        let authority = http::HeaderValue::from_static("127.0.0.1:18080");
        if xff.is_none() {
            // Pingora's copy of the request for the upstream, alone
            group.bench_function("copy_only", |b| b.iter(|| black_box(req.clone())));
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut upstream = req.clone();
                let hop = Hop {
                    host: req.headers.get(http::header::HOST),
                    peer: Some(black_box([127, 0, 0, 1].into())),
                    tls: false,
                    authority: &authority,
                    request_id: &id,
                };
                forward(&mut upstream, &hop).unwrap();
                black_box(upstream)
            })
        });
    }
    group.finish();
}

fn json_error(c: &mut Criterion) {
    c.bench_function("json_error_body", |b| {
        b.iter(|| {
            black_box(error_body(
                black_box(404),
                "no route for this path",
                "9eecca89d00cd07b0a9471a0ef3900e1",
            ))
        })
    });
}

/// JSON and XML threat protection: one 1 KB body checked whole (the
/// scanners' work per request; chunking does not change it).
fn threat_scan(c: &mut Criterion) {
    use flex_gateway::policy::threat::{json, xml};
    let items: Vec<String> = (0..10)
        .map(|i| {
            format!(
                r#"{{"sku":"SKU-{i:05}","name":"Widget model {i}","quantity":{},"price":{}.5,"tags":["blue","large"]}}"#,
                i % 7 + 1,
                12 + i
            )
        })
        .collect();
    let order = format!(
        r#"{{"order":{{"id":48213,"customer":"ACME Corporation","currency":"EUR","items":[{}]}}}}"#,
        items.join(",")
    );
    let xml_items: String = (0..10)
        .map(|i| format!(r#"<item sku="SKU-{i:05}" qty="{}"><name>Widget model {i}</name><price>{}.5</price></item>"#, i % 7 + 1, 12 + i))
        .collect();
    let xml_order = format!(
        r#"<?xml version="1.0"?><order id="48213" customer="ACME Corporation">{xml_items}</order>"#
    );
    let jl = json::Limits::from_fields([Some(10), Some(100), Some(80), Some(1000), Some(4096)]);
    let xl = xml::Limits::from_fields([
        Some(10),
        Some(8),
        Some(100),
        Some(4096),
        Some(256),
        Some(256),
    ]);
    let mut group = c.benchmark_group("threat_scan_1kb");
    group.bench_function(format!("json_{}_bytes", order.len()), |b| {
        b.iter(|| {
            let mut s = json::Scanner::new(jl);
            s.feed(black_box(order.as_bytes())).unwrap();
            s.finish().unwrap();
        })
    });
    group.bench_function(format!("xml_{}_bytes", xml_order.len()), |b| {
        b.iter(|| {
            let mut s = xml::Scanner::new(xl);
            s.feed(black_box(xml_order.as_bytes())).unwrap();
            s.finish().unwrap();
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    threat_scan,
    route_matching,
    flex_route_matching,
    path_normalisation,
    rate_limit,
    json_error,
    forward_headers,
    policies,
    ip_lookup
);
criterion_main!(benches);
