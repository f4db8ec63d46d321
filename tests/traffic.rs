//! Upstream services against real backends on loopback: load balancing,
//! weighted splits, active health checks with targets stopped and
//! restarted, passive ejection, retries, circuit breaking.

use crate::support::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A config with `services` (YAML list items under `spec.services`) and
/// `routes`.
fn config(services: &str, routes: &str) -> String {
    config_with_routes(routes).replace(
        "  routes:\n",
        &format!("  services:\n{services}\n  routes:\n"),
    )
}

/// Requests the backend saw whose target starts with `prefix`.
fn hits(b: &Backend, prefix: &str) -> usize {
    b.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.target.starts_with(prefix))
        .count()
}

/// A backend answering `/health` with `health` (shared switch: true 200,
/// false 500) and everything else with 200 JSON.
fn backend_with_health(up: Arc<AtomicBool>) -> Backend {
    Backend::start(move |seen| {
        if seen.target == "/health" && !up.load(Ordering::SeqCst) {
            return Reply::Json(500, "{}".into());
        }
        Reply::Json(200, format!("{{\"path\":{:?}}}", seen.target))
    })
}

fn target_state(gw: &Gateway, service: &str, port: u16) -> serde_json::Value {
    let all = gw.admin("/upstreams").json();
    all["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .and_then(|s| {
            s["targets"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["address"] == format!("127.0.0.1:{port}"))
                .cloned()
        })
        .unwrap_or_else(|| panic!("no target {port} in {all}"))
}

#[test]
fn weighted_round_robin_and_a_canary_split_between_services() {
    let (a, b, c) = (Backend::echo(), Backend::echo(), Backend::echo());
    let gw = Gateway::start(&config(
        &format!(
            r#"    - name: main
      targets:
        - {{url: "{}", weight: 3}}
        - {{url: "{}", weight: 1}}
    - name: canary
      targets: ["{}"]"#,
            a.url(),
            b.url(),
            c.url()
        ),
        r#"    - id: weighted
      path: /w/*
      upstream: {service: main}
    - id: split
      path: /s/*
      upstream:
        services:
          - {name: main, weight: 90}
          - {name: canary, weight: 10}"#,
    ));
    let mut client = gw.connect();
    for _ in 0..400 {
        assert_eq!(client.get("/w/x").status, 200);
    }
    // smooth weighted round robin from one client: exact
    assert_eq!((hits(&a, "/w/"), hits(&b, "/w/")), (300, 100));

    for _ in 0..2000 {
        assert_eq!(client.get("/s/x").status, 200);
    }
    let canary = hits(&c, "/s/");
    // binomial(2000, 0.1): mean 200, sd 13.4; ±5 sd
    assert!((133..=267).contains(&canary), "canary got {canary} of 2000");
    assert_eq!(hits(&a, "/s/") + hits(&b, "/s/") + canary, 2000);
}

#[test]
fn least_requests_sends_new_requests_to_the_idle_target() {
    let handler = |seen: &Seen| {
        if seen.target == "/slow" {
            Reply::Delayed(
                Duration::from_millis(1500),
                Box::new(Reply::Json(200, "{}".into())),
            )
        } else {
            Reply::Json(200, "{}".into())
        }
    };
    let (a, b) = (Backend::start(handler), Backend::start(handler));
    let gw = Gateway::start(&config(
        &format!(
            "    - name: pool\n      loadBalancing: least-requests\n      targets: [\"{}\", \"{}\"]",
            a.url(),
            b.url()
        ),
        "    - id: all\n      path: /*\n      upstream: {service: pool}",
    ));
    let port = gw.port;
    let slow = std::thread::spawn(move || Client::connect(port).get("/slow").status);
    wait_until(
        Duration::from_secs(5),
        "the slow request reached a target",
        || hits(&a, "/slow") + hits(&b, "/slow") == 1,
    );
    let busy_is_a = hits(&a, "/slow") == 1;
    let mut client = gw.connect();
    for _ in 0..10 {
        assert_eq!(client.get("/fast").status, 200);
    }
    let (busy, idle) = if busy_is_a { (&a, &b) } else { (&b, &a) };
    assert_eq!(
        hits(idle, "/fast"),
        10,
        "every request went to the idle target"
    );
    assert_eq!(hits(busy, "/fast"), 0);
    assert_eq!(slow.join().unwrap(), 200);
    // with both idle again, both get traffic
    for _ in 0..10 {
        client.get("/after");
    }
    assert!(hits(&a, "/after") > 0 && hits(&b, "/after") > 0);
}

#[test]
fn consistent_hashing_keeps_a_key_on_one_target() {
    let backends: Vec<Backend> = (0..3).map(|_| Backend::echo()).collect();
    let urls: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.url()))
        .collect();
    let gw = Gateway::start(&config(
        &format!(
            "    - name: pool\n      loadBalancing: hash\n      hashOn: header:X-User\n      targets: [{}]",
            urls.join(", ")
        ),
        "    - id: all\n      path: /*\n      upstream: {service: pool}",
    ));
    let mut client = gw.connect();
    let mut used = std::collections::HashSet::new();
    for user in 0..30 {
        let path = format!("/u{user}/");
        for _ in 0..5 {
            let r = client.request("GET", &path, &[("x-user", &format!("user-{user}"))], b"");
            assert_eq!(r.status, 200);
        }
        let on: Vec<usize> = backends.iter().map(|b| hits(b, &path)).collect();
        assert!(
            on.iter().filter(|&&n| n > 0).count() == 1 && on.iter().sum::<usize>() == 5,
            "user-{user} spread over targets: {on:?}"
        );
        used.insert(on.iter().position(|&n| n > 0).unwrap());
    }
    assert!(used.len() >= 2, "30 keys all on one target");
}

#[test]
fn health_checks_take_a_stopped_target_out_and_put_it_back() {
    let up = Arc::new(AtomicBool::new(true));
    let a = backend_with_health(Arc::new(AtomicBool::new(true)));
    let b = backend_with_health(up.clone());
    let gw = Gateway::start(&config(
        &format!(
            r#"    - name: pool
      targets: ["{}", "{}"]
      healthCheck: {{path: /health, interval: 200ms, timeout: 150ms, healthyThreshold: 2, unhealthyThreshold: 2}}"#,
            a.url(),
            b.url()
        ),
        "    - id: all\n      path: /*\n      upstream: {service: pool, retries: {maxRetries: 0}}",
    ));
    wait_until(Duration::from_secs(5), "health checks ran", || {
        hits(&a, "/health") >= 1 && hits(&b, "/health") >= 1
    });
    let up_metric = |port: u16| {
        gw.metric(&format!(
            "flexgw_upstream_target_up{{service=\"pool\",target=\"127.0.0.1:{port}\"}}"
        ))
    };
    assert_eq!(up_metric(b.port), 1.0);

    // b stops: refused connections fail its checks
    b.stop();
    wait_until(Duration::from_secs(5), "b marked unhealthy", || {
        target_state(&gw, "pool", b.port)["healthy"] == false
    });
    assert_eq!(up_metric(b.port), 0.0);
    assert_eq!(target_state(&gw, "pool", a.port)["healthy"], true);
    let before = hits(&a, "/x");
    let mut client = gw.connect();
    for _ in 0..20 {
        assert_eq!(
            client.get("/x").status,
            200,
            "no request goes to the stopped target"
        );
    }
    assert_eq!(hits(&a, "/x") - before, 20);

    // b back: two good checks in a row bring it back
    b.restart();
    wait_until(Duration::from_secs(5), "b healthy again", || {
        target_state(&gw, "pool", b.port)["healthy"] == true
    });
    let before = hits(&b, "/y");
    for _ in 0..10 {
        assert_eq!(client.get("/y").status, 200);
    }
    assert_eq!(hits(&b, "/y") - before, 5, "round robin includes b again");

    // a failing health endpoint (500) counts as unhealthy too; with every
    // target out the service answers 503 at once
    up.store(false, Ordering::SeqCst);
    a.stop();
    wait_until(Duration::from_secs(5), "both unhealthy", || {
        target_state(&gw, "pool", a.port)["healthy"] == false
            && target_state(&gw, "pool", b.port)["healthy"] == false
    });
    let r = gw.connect().get("/z");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-flexgw-refused"), Some("no-healthy-target"));
    assert_eq!(r.json()["status"], 503);
    assert!(
        gw.metric("flexgw_upstream_refused_total{service=\"pool\",reason=\"no-healthy-target\"}")
            >= 1.0
    );
}

#[test]
fn fail_open_serves_when_every_target_fails_its_checks() {
    let down = Arc::new(AtomicBool::new(false));
    let a = backend_with_health(down.clone());
    let gw = Gateway::start(&config(
        &format!(
            r#"    - name: strict
      targets: ["{0}"]
      healthCheck: {{path: /health, interval: 200ms, timeout: 150ms, unhealthyThreshold: 1}}
    - name: lenient
      targets: ["{0}"]
      failOpen: true
      healthCheck: {{path: /health, interval: 200ms, timeout: 150ms, unhealthyThreshold: 1}}"#,
            a.url()
        ),
        "    - id: strict\n      path: /strict\n      upstream: {service: strict}\n    - id: lenient\n      path: /lenient\n      upstream: {service: lenient}",
    ));
    wait_until(
        Duration::from_secs(5),
        "both services see the target down",
        || {
            target_state(&gw, "strict", a.port)["healthy"] == false
                && target_state(&gw, "lenient", a.port)["healthy"] == false
        },
    );
    assert_eq!(gw.connect().get("/strict").status, 503);
    assert_eq!(gw.connect().get("/lenient").status, 200);
    assert_eq!(hits(&a, "/strict"), 0);
    assert_eq!(hits(&a, "/lenient"), 1);
}

#[test]
fn failed_connects_and_5xx_are_retried_on_another_target() {
    let closed = free_port();
    let good = Backend::echo();
    let flaky = Backend::start(|_| Reply::Json(503, "{\"flaky\":true}".into()));
    let gw = Gateway::start(&config(
        &format!(
            r#"    - name: dead-and-alive
      targets: ["http://127.0.0.1:{closed}", "{}"]
    - name: flaky-and-good
      targets: ["{}", "{}"]"#,
            good.url(),
            flaky.url(),
            good.url()
        ),
        r#"    - id: connect
      path: /connect/*
      upstream: {service: dead-and-alive}
    - id: status
      path: /status/*
      upstream: {service: flaky-and-good}"#,
    ));
    let mut client = gw.connect();
    for i in 0..10 {
        assert_eq!(client.get(&format!("/connect/{i}")).status, 200);
        assert_eq!(client.get(&format!("/status/{i}")).status, 200);
    }
    assert_eq!(hits(&good, "/connect/"), 10);
    assert_eq!(hits(&good, "/status/"), 10);
    let flaky_hits = hits(&flaky, "/status/");
    assert!(
        flaky_hits >= 1,
        "round robin sent some to the flaky target first"
    );
    assert!(
        gw.metric("flexgw_upstream_retries_total{service=\"flaky-and-good\"}") >= flaky_hits as f64
    );
}

#[test]
fn requests_with_a_body_and_non_idempotent_methods_are_not_retried() {
    let a = Backend::start(|_| Reply::Json(503, "{\"a\":1}".into()));
    let b = Backend::start(|_| Reply::Json(503, "{\"b\":1}".into()));
    let gw = Gateway::start(&config(
        &format!(
            "    - name: pool\n      targets: [\"{}\", \"{}\"]",
            a.url(),
            b.url()
        ),
        "    - id: all\n      path: /*\n      upstream: {service: pool, retries: {maxRetries: 2}}",
    ));
    let total = || a.count() + b.count();
    let mut client = gw.connect();
    let r = client.request(
        "POST",
        "/p",
        &[("content-type", "application/json")],
        b"{\"x\":1}",
    );
    assert_eq!(r.status, 503, "the upstream's own answer");
    assert_eq!(total(), 1, "a POST is sent once");
    let r = client.request("PUT", "/put", &[], b"body");
    assert_eq!(r.status, 503);
    assert_eq!(total(), 2, "a PUT with a streamed body is sent once");
    // a GET is retried twice (three attempts), then the last answer passes
    let r = client.get("/g");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("\"a\"") || r.text().contains("\"b\""));
    assert_eq!(total(), 5);
}

#[test]
fn limits_answer_503_at_once_and_release_when_requests_end() {
    let slow = Backend::start(|_| {
        Reply::Delayed(
            Duration::from_millis(800),
            Box::new(Reply::Json(200, "{}".into())),
        )
    });
    let gw = Gateway::start(&config(
        &format!(
            "    - name: small\n      targets: [\"{}\"]\n      circuitBreaker: {{maxRequests: 2}}",
            slow.url()
        ),
        "    - id: all\n      path: /*\n      upstream: {service: small}",
    ));
    let port = gw.port;
    let started = Instant::now();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let r = Client::connect(port).get(&format!("/c{i}"));
                (
                    r.status,
                    r.header("x-flexgw-refused").map(str::to_string),
                    started.elapsed(),
                )
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(ok, 2, "{results:?}");
    assert_eq!(refused.len(), 4, "{results:?}");
    for r in &refused {
        assert_eq!(r.1.as_deref(), Some("max-requests"));
        assert!(
            r.2 < Duration::from_millis(700),
            "refused at once, not queued: {:?}",
            r.2
        );
    }
    assert_eq!(slow.count(), 2);
    assert_eq!(
        gw.metric("flexgw_upstream_refused_total{service=\"small\",reason=\"max-requests\"}"),
        4.0
    );
    // the slots were released
    assert_eq!(gw.connect().get("/after").status, 200);
}

#[test]
fn the_error_breaker_opens_probes_and_closes() {
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    let a = Backend::start(move |_| {
        if f.load(Ordering::SeqCst) {
            Reply::Json(500, "{}".into())
        } else {
            Reply::Json(200, "{}".into())
        }
    });
    let gw = Gateway::start(&config(
        &format!(
            "    - name: fragile\n      targets: [\"{}\"]\n      circuitBreaker: {{failureThreshold: 3, failureWindow: 10s, openTime: 1s}}",
            a.url()
        ),
        "    - id: all\n      path: /*\n      upstream: {service: fragile, retries: {maxRetries: 0}}",
    ));
    let mut client = gw.connect();
    for _ in 0..3 {
        assert_eq!(client.get("/x").status, 500);
    }
    let r = client.get("/x");
    assert_eq!(r.status, 503, "open: answered without the target");
    assert_eq!(r.header("x-flexgw-refused"), Some("no-healthy-target"));
    assert_eq!(a.count(), 3);
    assert_eq!(
        gw.metric("flexgw_upstream_breaker_opened_total{service=\"fragile\""),
        1.0
    );
    assert_eq!(target_state(&gw, "fragile", a.port)["breaker"], "open");
    // after openTime one probe goes through; it fails: open again
    wait_until(Duration::from_secs(3), "a probe after openTime", || {
        client.get("/probe").status == 500
    });
    assert_eq!(client.get("/x").status, 503);
    // the target recovers: the next probe closes the breaker
    failing.store(false, Ordering::SeqCst);
    wait_until(Duration::from_secs(3), "the breaker closed", || {
        client.get("/probe").status == 200
    });
    for _ in 0..5 {
        assert_eq!(client.get("/x").status, 200);
    }
    assert_eq!(target_state(&gw, "fragile", a.port)["breaker"], "closed");
}

#[test]
fn passive_checks_eject_a_failing_target() {
    let bad = Backend::start(|_| Reply::Json(502, "{}".into()));
    let good = Backend::echo();
    let gw = Gateway::start(&config(
        &format!(
            "    - name: pool\n      targets: [\"{}\", \"{}\"]\n      passiveHealthCheck: {{consecutiveFailures: 2, ejectionTime: 30s}}",
            bad.url(),
            good.url()
        ),
        "    - id: all\n      path: /*\n      upstream: {service: pool, retries: {maxRetries: 0}}",
    ));
    let mut client = gw.connect();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(client.get("/x").status);
    }
    assert_eq!(
        bad.count(),
        2,
        "ejected after two failures in a row: {statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|&&s| s == 502).count(), 2);
    assert_eq!(good.count(), 18);
    let state = target_state(&gw, "pool", bad.port);
    assert_eq!(state["available"], false);
    assert!(state["ejectedForMs"].as_u64().unwrap() > 20_000);
    assert_eq!(
        gw.metric(&format!(
            "flexgw_upstream_ejections_total{{service=\"pool\",target=\"127.0.0.1:{}\"}}",
            bad.port
        )),
        1.0
    );
}

#[test]
fn the_request_timeout_bounds_every_attempt_together() {
    let slow = || {
        Backend::start(|_| {
            Reply::Delayed(
                Duration::from_secs(3),
                Box::new(Reply::Json(200, "{}".into())),
            )
        })
    };
    let (a, b) = (slow(), slow());
    let gw = Gateway::start(&config(
        &format!(
            "    - name: slow\n      targets: [\"{}\", \"{}\"]",
            a.url(),
            b.url()
        ),
        r#"    - id: bounded
      path: /bounded
      upstream: {service: slow, readTimeout: 500ms, requestTimeout: 800ms, retries: {maxRetries: 5}}
    - id: per-read
      path: /per-read
      upstream: {service: slow, readTimeout: 500ms, retries: {maxRetries: 1}}"#,
    ));
    let started = Instant::now();
    let r = gw.connect().get("/bounded");
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert!(
        took >= Duration::from_millis(750) && took < Duration::from_millis(1500),
        "two attempts of 500ms cut at 800ms in all, took {took:?}"
    );
    assert_eq!(a.count() + b.count(), 2, "the second attempt was cut short");
    // without a request timeout each attempt gets its read timeout
    let started = Instant::now();
    assert_eq!(gw.connect().get("/per-read").status, 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(950),
        "two attempts of 500ms: {took:?}"
    );
}

/// A timed-out request is never sent again to the target that timed out
/// (the struggling backend is not given the same work twice): with one
/// target the client gets 504 after one `timeout`; with another target the
/// retry goes there.
#[test]
fn a_timeout_is_never_retried_on_the_target_that_timed_out() {
    let hung = Backend::start(|_| {
        Reply::Delayed(
            Duration::from_secs(8),
            Box::new(Reply::Json(200, "{\"late\":true}".into())),
        )
    });
    let good = Backend::echo();
    let gw = Gateway::start(&config(
        &format!(
            r#"    - name: hung-and-good
      targets: ["{}", "{}"]
      loadBalancing: round-robin"#,
            hung.url(),
            good.url()
        ),
        &format!(
            r#"    - id: one
      path: /one/*
      upstream: {{url: "{}", timeout: 1s}}
    - id: two
      path: /two/*
      upstream: {{service: hung-and-good, timeout: 1s}}"#,
            hung.url()
        ),
    ));
    // the default retries cover timeouts; the only target timed out
    let r = gw.connect().get("/one/a");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(hits(&hung, "/one/"), 1, "the timed-out target got it once");
    // with two targets, every request is answered by the good one; the
    // hung one got each request at most once (round robin sends some there
    // first)
    let mut client = gw.connect();
    for i in 0..4 {
        let r = client.get(&format!("/two/{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(hits(&good, &format!("/two/{i}")), 1);
        assert!(hits(&hung, &format!("/two/{i}")) <= 1);
    }
    assert!(
        hits(&hung, "/two/") >= 1,
        "round robin sent some there first"
    );
}
