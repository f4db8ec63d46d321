//! Micro-benchmarks of the per-request work that is ours (not Pingora's):
//! route matching at 10 / 100 / 1,000 routes, path normalisation, the
//! rate-limit check and the JSON error body. `cargo bench --bench micro`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use flex_gateway::config::load_str;
use flex_gateway::config::model::Route;
use flex_gateway::path::normalize;
use flex_gateway::policy::rate_limit::{Config as RateLimitConfig, RateLimiter};
use flex_gateway::response::error_body;
use flex_gateway::router::{Match, Router};
use http::Method;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

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
    let limiter = RateLimiter::new(&RateLimitConfig {
        max_requests: u64::MAX / 2,
        period: Duration::from_secs(60),
    });
    c.bench_function("rate_limit_check", |b| {
        b.iter(|| black_box(limiter.check()))
    });
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

criterion_group!(
    benches,
    route_matching,
    path_normalisation,
    rate_limit,
    json_error
);
criterion_main!(benches);
