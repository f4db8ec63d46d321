//! The rate-limiting policy as a client sees it.

use crate::support::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn limited(backend: &Backend, max: u32, period: &str) -> String {
    config_with_routes(&format!(
        r#"    - id: limited
      path: ["/health", "/status"]
      methods: ["GET"]
      upstream:
        url: "{}"
      policies:
        - rate-limiting:
            maxRequests: {max}
            period: {period}
    - id: open
      path: "/open"
      upstream:
        url: "{}""#,
        backend.url(),
        backend.url()
    ))
}

#[test]
fn exactly_max_requests_succeed_per_window() {
    fresh_window(Duration::from_secs(60), Duration::from_secs(15));
    let backend = Backend::echo();
    let gw = Gateway::start(&limited(&backend, 100, "60"));
    let mut c = gw.connect();
    let mut ok = 0;
    let mut limited_count = 0;
    for i in 0..150 {
        // both paths of the route share its counter
        let path = if i % 2 == 0 { "/health" } else { "/status" };
        let r = c.get(path);
        assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
        let reset: u64 = r
            .header("x-ratelimit-reset")
            .expect("reset")
            .parse()
            .expect("number");
        assert!((1..=60).contains(&reset), "reset {reset}");
        match r.status {
            200 => {
                ok += 1;
                assert_eq!(
                    r.header("x-ratelimit-remaining"),
                    Some((100 - ok).to_string().as_str())
                );
            }
            429 => {
                limited_count += 1;
                assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
                let retry: u64 = r
                    .header("retry-after")
                    .expect("retry-after")
                    .parse()
                    .expect("number");
                assert!((1..=60).contains(&retry));
                assert_eq!(r.header("content-type"), Some("application/json"));
                let body = r.json();
                assert_eq!(body["status"], 429);
                assert_eq!(body["requestId"].as_str(), r.header("x-request-id"));
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited_count), (100, 50));
    assert_eq!(
        backend.count(),
        100,
        "rejected requests never reach the backend"
    );

    // a route without the policy is not limited and carries no headers
    let r = c.get("/open");
    assert_eq!(r.status, 200);
    assert!(r.header("x-ratelimit-limit").is_none());
}

#[test]
fn the_window_resets() {
    let backend = Backend::echo();
    let gw = Gateway::start(&limited(&backend, 2, "1s"));
    let mut c = gw.connect();
    // three requests in one 1-second window (a slow machine may straddle
    // two: then again, in the next window)
    let second = || window_of(Duration::from_secs(1));
    let r = loop {
        // at the start of the next window (50 ms into it)
        fresh_window(Duration::from_secs(1), Duration::from_millis(1001));
        let start = second();
        let statuses = [c.get("/health").status, c.get("/health").status];
        let r = c.get("/health");
        if second() == start {
            assert_eq!(statuses, [200, 200]);
            break r;
        }
    };
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    // poll (not sleep) until the next window admits a request again
    wait_until(std::time::Duration::from_secs(5), "a new window", || {
        c.get("/health").status == 200
    });
}

/// Routes with per-client limits (`key`), several limits in one policy,
/// and optionally Redis as shared storage.
fn keyed(backend: &Backend, redis: Option<&str>) -> String {
    let config = config_with_routes(&format!(
        r#"    - id: per-tenant
      path: /t/*
      upstream: {{url: "{0}"}}
      policies:
        - rate-limiting: {{maxRequests: 2, period: 10m, key: "header:X-Tenant"}}
    - id: two-limits
      path: /two
      upstream: {{url: "{0}"}}
      policies:
        - rate-limiting:
            key: client-ip
            limits:
              - {{maxRequests: 3, period: 1s}}
              - {{maxRequests: 5, period: 10m}}
    - id: shared-open
      path: /open/*
      upstream: {{url: "{0}"}}
      policies:
        - rate-limiting: {{maxRequests: 4, period: 10m, key: "header:X-Key"}}
    - id: shared-closed
      path: /closed/*
      upstream: {{url: "{0}"}}
      policies:
        - rate-limiting: {{maxRequests: 4, period: 10m, key: "header:X-Key", failOpen: false}}"#,
        backend.url()
    ));
    match redis {
        None => config,
        Some(addr) => with_server_settings(
            &config,
            &[&format!(
                "sharedStorage: {{redis: {{address: \"{addr}\", timeout: 300ms}}}}"
            )],
        ),
    }
}

#[test]
fn ten_thousand_client_keys_each_get_their_own_exact_quota() {
    fresh_window(Duration::from_secs(600), Duration::from_secs(60));
    let backend = Backend::echo();
    let gw = Gateway::start(&keyed(&backend, None));
    let mut c = gw.connect();
    for t in 0..10_000 {
        let tenant = format!("tenant-{t}");
        let h = [("x-tenant", tenant.as_str())];
        for expected in [200, 200, 429] {
            let r = c.request("GET", "/t/x", &h, b"");
            assert_eq!(r.status, expected, "{tenant}");
        }
    }
    assert_eq!(backend.count(), 20_000);
    // no key: counted under the client IP, like any other key
    assert_eq!(c.get("/t/y").status, 200);
    assert_eq!(c.get("/t/y").status, 200);
    assert_eq!(c.get("/t/y").status, 429);
}

#[test]
fn every_limit_of_a_policy_must_pass() {
    fresh_window(Duration::from_secs(600), Duration::from_secs(30));
    let backend = Backend::echo();
    let gw = Gateway::start(&keyed(&backend, None));
    let mut c = gw.connect();
    // the per-second limit: 3 in one second (poll into a fresh second first)
    fresh_window(Duration::from_secs(1), Duration::from_millis(500));
    let statuses: Vec<u16> = (0..4).map(|_| c.get("/two").status).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    let r = c.get("/two");
    assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
    // the next seconds: two more fit the 10-minute limit of 5, then it refuses
    let mut ok = 0;
    wait_until(Duration::from_secs(5), "two more in later seconds", || {
        if c.get("/two").status == 200 {
            ok += 1;
        }
        ok == 2
    });
    fresh_window(Duration::from_secs(1), Duration::from_millis(500));
    let r = c.get("/two");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(backend.count(), 5);
}

/// Wait (up to 15 s) until `keys` fresh keys counted at `a` are each seen
/// counted at `b`: the two gateways share their counts again (with many
/// keys, on every node of a cluster).
fn wait_shared(a: &mut Client, b: &mut Client, what: &str, keys: usize) {
    let mut n = 0;
    wait_until(Duration::from_secs(15), what, || {
        n += 1;
        (0..keys).all(|k| {
            let key = format!("probe-{n}-{k}");
            let h = [("x-key", key.as_str())];
            a.request("GET", "/closed/x", &h, b"").status == 200
                && b.request("GET", "/closed/x", &h, b"")
                    .header("x-ratelimit-remaining")
                    == Some("2")
        })
    });
}

/// Send alternately to two gateways; how many were allowed.
fn alternate(a: &mut Client, b: &mut Client, path: &str, key: &str, n: usize) -> usize {
    (0..n)
        .filter(|i| {
            let c = if i % 2 == 0 { &mut *a } else { &mut *b };
            c.request("GET", path, &[("x-key", key)], b"").status == 200
        })
        .count()
}

#[test]
fn two_gateways_share_a_limit_through_redis_and_survive_its_loss() {
    fresh_window(Duration::from_secs(600), Duration::from_secs(90));
    let mut redis = RedisServer::start();
    let backend = Backend::echo();
    let config = keyed(&backend, Some(&redis.address()));
    let (g1, g2) = (Gateway::start(&config), Gateway::start(&config));
    let (mut a, mut b) = (g1.connect(), g2.connect());

    // 4 allowed in total, not 4 per process
    assert_eq!(alternate(&mut a, &mut b, "/open/x", "k1", 10), 4);
    assert_eq!(alternate(&mut a, &mut b, "/closed/x", "k1", 10), 4);
    let r = a.request("GET", "/open/x", &[("x-key", "k1")], b"");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));

    // Redis gone: fail-open counts locally (each process its own 4);
    // fail-closed answers 503
    redis.kill();
    let r = a.request("GET", "/closed/x", &[("x-key", "k2")], b"");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], 503);
    let local = (0..6)
        .filter(|_| a.request("GET", "/open/x", &[("x-key", "k2")], b"").status == 200)
        .count();
    assert_eq!(local, 4, "counted locally while Redis is down");
    assert!(g1.metric("flexgw_shared_storage_errors_total") >= 1.0);
    assert_eq!(g1.connect().get("/live-check-unrouted").status, 404);

    // Redis back (empty): shared counting resumes by itself
    redis.restart();
    wait_shared(&mut a, &mut b, "shared counting again", 1);
    assert_eq!(alternate(&mut a, &mut b, "/open/x", "k3", 10), 4);
    assert_eq!(alternate(&mut a, &mut b, "/closed/x", "k3", 10), 4);
}

#[test]
fn spike_control_delays_a_burst_up_to_its_queue() {
    let backend = Backend::echo();
    let gw = Gateway::start(&config_with_routes(&format!(
        r#"    - id: smooth
      path: /s
      upstream: {{url: "{}"}}
      policies:
        - spike-control: {{maxRequests: 5, period: 1s, delay: 1s, delayAttempts: 3, queueLimit: 10}}"#,
        backend.url()
    )));
    let port = gw.port;
    let started = std::time::Instant::now();
    let burst: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let r = Client::connect(port).get("/s");
                (
                    r.status,
                    started.elapsed(),
                    r.header("retry-after").map(str::to_string),
                )
            })
        })
        .collect();
    let results: Vec<_> = burst.into_iter().map(|t| t.join().unwrap()).collect();
    let passed: Vec<Duration> = results.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    // 5 at once, 10 queued and delayed (not refused), 5 over the queue
    assert_eq!(passed.len(), 15, "{results:?}");
    assert_eq!(refused.len(), 5, "{results:?}");
    let delayed = passed
        .iter()
        .filter(|d| **d >= Duration::from_millis(900))
        .count();
    assert_eq!(delayed, 10, "{results:?}");
    for r in &refused {
        assert!(
            r.1 < Duration::from_millis(900),
            "the full queue refuses at once"
        );
        assert!(r.2.is_some());
    }
    assert_eq!(backend.count(), 15);
    // never more than 5 passed in any second: the rate holds
    let mut times = passed.clone();
    times.sort();
    for w in times.windows(6) {
        assert!(w[5] - w[0] >= Duration::from_millis(900), "{times:?}");
    }
}

#[test]
fn redis_with_a_password_from_the_environment() {
    fresh_window(Duration::from_secs(600), Duration::from_secs(30));
    let redis = RedisServer::start_with_password(Some("s3cret-pass"));
    let backend = Backend::echo();
    let config = with_server_settings(
        &keyed(&backend, None),
        &[&format!(
            "sharedStorage: {{redis: {{address: \"{}\", password: \"${{REDIS_PASSWORD}}\", timeout: 300ms}}}}",
            redis.address()
        )],
    );
    let good = Gateway::start_with_env(&config, &[("REDIS_PASSWORD", "s3cret-pass")]);
    let good2 = Gateway::start_with_env(&config, &[("REDIS_PASSWORD", "s3cret-pass")]);
    let (mut a, mut b) = (good.connect(), good2.connect());
    assert_eq!(
        alternate(&mut a, &mut b, "/closed/x", "k1", 10),
        4,
        "shared"
    );
    // the password is not shown
    assert!(!good.admin("/config").text().contains("s3cret-pass"));
    // a wrong password: Redis refuses; fail-closed answers 503, errors counted
    let wrong = Gateway::start_with_env(&config, &[("REDIS_PASSWORD", "wrong")]);
    let r = wrong
        .connect()
        .request("GET", "/closed/x", &[("x-key", "k2")], b"");
    assert_eq!(r.status, 503);
    assert!(wrong.metric("flexgw_shared_storage_errors_total") >= 1.0);
    assert!(
        !wrong.log_text().contains("wrong\""),
        "the password is not logged"
    );
}

/// The current window of `/closed/*`'s 10-minute limit.
fn window() -> u64 {
    window_of(Duration::from_secs(600))
}

/// Whether the window is still the one counted in at `spent` (a slow run
/// may outlast the 90 s `fresh_window` left it: then the new window's
/// counts start at zero and what was spent cannot be checked).
fn still(spent: u64) -> bool {
    let same = window() == spent;
    if !same {
        eprintln!("the 10-minute window rolled over: spent counts not checked");
    }
    same
}

/// [`keyed`] and `/busy/*`, limited far beyond what a test sends.
fn with_busy(backend: &Backend) -> String {
    keyed(backend, None).replace(
        "    - id: shared-open",
        &format!(
            "    - id: busy
      path: /busy/*
      upstream: {{url: \"{}\"}}
      policies:
        - rate-limiting: {{maxRequests: 100000000, period: 10m, key: \"header:X-Key\"}}
    - id: shared-open",
            backend.url()
        ),
    )
}

#[test]
fn redis_over_tls_is_verified_against_the_trusted_authorities() {
    fresh_window(Duration::from_secs(600), Duration::from_secs(30));
    let dir = temp_dir("redis-tls");
    let ca = Ca::new();
    let (cert, key) = ca.issue(&dir, "redis", &["localhost"], None);
    std::fs::write(dir.join("ca.pem"), ca.cert.to_pem().unwrap()).unwrap();
    let redis = RedisServer::start_tls(&cert, &key);
    let backend = Backend::echo();
    let config = |address: String| {
        with_server_settings(
            &keyed(&backend, None),
            &[&format!(
                "sharedStorage: {{redis: {{address: \"{address}\", tls: true, timeout: 500ms}}}}"
            )],
        )
    };
    let ca_file = dir.join("ca.pem").display().to_string();
    let trusted = [("SSL_CERT_FILE", ca_file.as_str())];
    let good = config(format!("localhost:{}", redis.port));
    let (g1, g2) = (
        Gateway::start_with_env(&good, &trusted),
        Gateway::start_with_env(&good, &trusted),
    );
    let (mut a, mut b) = (g1.connect(), g2.connect());
    assert_eq!(
        alternate(&mut a, &mut b, "/closed/x", "k1", 10),
        4,
        "shared over TLS"
    );
    assert_eq!(g1.metric("flexgw_shared_storage_errors_total"), 0.0);
    // `rediss://` says the same
    let url = config(format!("rediss://localhost:{}", redis.port)).replace(", tls: true", "");
    let g3 = Gateway::start_with_env(&url, &trusted);
    let r = g3
        .connect()
        .request("GET", "/closed/x", &[("x-key", "k1")], b"");
    assert_eq!(r.status, 429, "counted by the other two");
    // a certificate the gateway cannot verify: no shared counting at all
    // (a fail-closed limit refuses), whether its authority is unknown or
    // it names another host
    for (config, env) in [
        (good.clone(), vec![]),
        (
            config(format!("127.0.0.1:{}", redis.port)),
            trusted.to_vec(),
        ),
    ] {
        let g = Gateway::start_with_env(&config, &env);
        let r = g
            .connect()
            .request("GET", "/closed/x", &[("x-key", "k2")], b"");
        assert_eq!(r.status, 503, "{config}");
        assert!(g.metric("flexgw_shared_storage_errors_total") >= 1.0);
    }
}

/// Requests to `/busy/x` on each gateway (a thread each, the key cycling
/// over `keys` values) until [`Load::finish`], which asserts that every
/// one was allowed.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(usize, Vec<u16>)>>,
}

impl Load {
    fn start(ports: [u16; 2], keys: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = ports
            .into_iter()
            .map(|port| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut c = Client::connect(port);
                    let (mut ok, mut other, mut n) = (0usize, Vec::new(), 0usize);
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let key = format!("load-{}", n % keys);
                        match c.request("GET", "/busy/x", &[("x-key", &key)], b"").status {
                            200 => ok += 1,
                            s => other.push(s),
                        }
                        // steady, not flat out: the other tests share the cores
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    (ok, other)
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let (ok, other) = t.join().expect("load thread");
            assert!(ok > 50, "{ok} requests under load");
            assert!(
                other.is_empty(),
                "requests refused during the failover: {other:?}"
            );
        }
    }
}

#[test]
fn a_sentinel_failover_under_load_is_followed_and_counts_stay_shared() {
    fresh_window(Duration::from_secs(600), Duration::from_secs(90));
    let mut master = RedisServer::start();
    let replica = RedisServer::start_replica_of(master.port);
    let sentinel = RedisSentinel::start(master.port);
    wait_until(
        Duration::from_secs(20),
        "the Sentinel knows the replica",
        || {
            sentinel
                .ask(&["replicas", "mymaster"])
                .contains(&replica.port.to_string())
        },
    );
    let backend = Backend::echo();
    let config = with_server_settings(
        &with_busy(&backend),
        &[&format!(
            "sharedStorage: {{redis: {{sentinel: {{addresses: [\"127.0.0.1:{}\"], masterName: mymaster}}, timeout: 300ms}}}}",
            sentinel.port
        )],
    );
    let (g1, g2) = (Gateway::start(&config), Gateway::start(&config));
    let (mut a, mut b) = (g1.connect(), g2.connect());
    assert_eq!(
        alternate(&mut a, &mut b, "/closed/x", "k1", 10),
        4,
        "shared through the master"
    );
    let spent = window();
    let shown = g1.admin("/config").text();
    assert!(shown.contains("\"masterName\":\"mymaster\""), "{shown}");
    wait_replicated("the replica acknowledges the counts", || {
        master.replication()
    });

    // load on both gateways while the master dies and the replica takes over
    let load = Load::start([g1.port, g2.port], 1);
    std::thread::sleep(Duration::from_millis(300));
    master.kill();
    wait_until(
        Duration::from_secs(20),
        "the Sentinel promotes the replica",
        || sentinel.master_port() == Some(replica.port),
    );
    // both gateways count through the new master
    wait_shared(&mut a, &mut b, "shared counting through the new master", 1);
    std::thread::sleep(Duration::from_millis(300));
    load.finish();
    // what was counted before the failover was replicated: k1 stays spent
    if still(spent) {
        assert_eq!(
            a.request("GET", "/closed/x", &[("x-key", "k1")], b"")
                .status,
            429
        );
    }
    assert_eq!(
        alternate(&mut a, &mut b, "/closed/x", "k2", 10),
        4,
        "shared again"
    );
}

#[test]
fn a_redis_cluster_spreads_clients_over_its_nodes_and_survives_a_master_failover() {
    fresh_window(Duration::from_secs(600), Duration::from_secs(90));
    let mut cluster = RedisCluster::start(3, 1);
    let backend = Backend::echo();
    let config = with_server_settings(
        &with_busy(&backend),
        &[&format!(
            "sharedStorage: {{redis: {{cluster: {{addresses: {}}}, timeout: 300ms}}}}",
            cluster.addresses()
        )],
    );
    let (g1, g2) = (Gateway::start(&config), Gateway::start(&config));
    let (mut a, mut b) = (g1.connect(), g2.connect());
    // every client's quota is exact across both gateways, whichever node
    // holds its counts
    for k in 0..30 {
        let key = format!("k{k}");
        assert_eq!(alternate(&mut a, &mut b, "/closed/x", &key, 6), 4, "{key}");
    }
    let spent = window();
    // two limits of one policy (one script, two keys): both counted
    let two: Vec<u16> = (0..4).map(|_| a.get("/two").status).collect();
    assert!(two.starts_with(&[200, 200]), "{two:?}");
    // the clients' counts are spread over every master
    for port in cluster.masters() {
        let keys = cluster.keys(port, "flexgw:rl:*");
        assert!(keys.len() >= 2, "node {port}: {keys:?}");
    }
    let shown = g1.admin("/config").text();
    assert!(shown.contains("\"cluster\":{\"addresses\":["), "{shown}");
    assert_eq!(g1.metric("flexgw_shared_storage_errors_total"), 0.0);
    for m in cluster.masters() {
        cluster.wait_replicated(m);
    }

    // load on both gateways while one master dies and its replica takes over
    let load = Load::start([g1.port, g2.port], 16);
    std::thread::sleep(Duration::from_millis(300));
    let masters = cluster.masters();
    let victim = masters[0];
    cluster.node(victim).kill();
    wait_until(
        Duration::from_secs(30),
        "a replica takes over the dead master's slots",
        || {
            let now = cluster.masters();
            now.len() == 3 && !now.contains(&victim)
        },
    );
    // both gateways count through the new master: fresh keys on every node
    wait_shared(&mut a, &mut b, "shared counting again", 30);
    std::thread::sleep(Duration::from_millis(300));
    load.finish();
    // what was counted before the failover was replicated: spent stays spent
    for k in (0..30).take_while(|_| still(spent)) {
        let key = format!("k{k}");
        let r = a.request("GET", "/closed/x", &[("x-key", key.as_str())], b"");
        assert_eq!(r.status, 429, "{key}");
    }
}
