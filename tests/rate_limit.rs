//! The rate-limiting policy as a client sees it.

mod support;
use support::*;

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
    assert_eq!(c.get("/health").status, 200);
    assert_eq!(c.get("/health").status, 200);
    let r = c.get("/health");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    // poll (not sleep) until the next window admits a request again
    wait_until(std::time::Duration::from_secs(5), "a new window", || {
        c.get("/health").status == 200
    });
}
