//! The response cache (`response-cache`, Flex's `http-caching-flex`): what
//! a client gets from the cache, what the backend is spared, and what an
//! attacker cannot make the cache serve to someone else (variants kept
//! apart by `Vary`, personal answers never stored, a cached answer never
//! given to a client the policies before the cache refuse).

use crate::support::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A backend whose answers tell the cases apart: the path picks headers,
/// the body counts the backend's answers.
fn backend() -> Backend {
    let n = Arc::new(AtomicUsize::new(0));
    Backend::start(move |seen| {
        let n = n.fetch_add(1, Ordering::SeqCst) + 1;
        let path = seen.target.split('?').next().unwrap_or_default();
        let header = |name: &str, value: &str| vec![(name.to_string(), value.to_string())];
        let body = serde_json::json!({"n": n, "path": seen.target, "method": seen.method});
        let (status, headers) = match path {
            "/short" => (200, header("cache-control", "max-age=1")),
            "/no-store" => (200, header("cache-control", "no-store")),
            "/private" => (200, header("cache-control", "private, max-age=60")),
            "/cookie" => (200, header("set-cookie", "session=s3cret")),
            "/broken" => (500, vec![]),
            "/missing" => (404, vec![]),
            "/lang" => {
                let lang = seen.header("accept-language").unwrap_or("none").to_string();
                let body = serde_json::json!({"n": n, "lang": lang});
                return Reply::JsonWith(200, header("vary", "Accept-Language"), body.to_string());
            }
            "/etag" | "/modified" => {
                // fresh for a second, then revalidated: 304 while the
                // client's validator is the current one
                let (name, value, asked) = match path {
                    "/etag" => ("etag", "\"v1\"", "if-none-match"),
                    _ => (
                        "last-modified",
                        "Tue, 01 Dec 2026 10:00:00 GMT",
                        "if-modified-since",
                    ),
                };
                let mut headers = header("cache-control", "max-age=1");
                headers.push((name.to_string(), value.to_string()));
                if seen.header(asked) == Some(value) {
                    return Reply::JsonWith(304, headers, String::new());
                }
                (200, headers)
            }
            "/big" => return Reply::Bytes(2 << 20),
            "/slow" => {
                return Reply::Delayed(
                    Duration::from_millis(400),
                    Box::new(Reply::Json(200, body.to_string())),
                )
            }
            _ => (200, vec![]),
        };
        Reply::JsonWith(status, headers, body.to_string())
    })
}

/// A gateway serving one Flex API with `http-caching-flex` (`config`: its
/// YAML flow mapping, or empty for Flex's defaults) before `backend`.
fn cached(backend: &Backend, config: &str) -> Gateway {
    let config = if config.is_empty() {
        String::new()
    } else {
        format!("      config: {config}\n")
    };
    let policies = format!("    - policyRef: {{name: http-caching-flex}}\n{config}");
    serve_flex_api("shop", &backend.url(), &policies)
}

fn n(r: &Response) -> u64 {
    r.json()["n"].as_u64().unwrap_or(0)
}

#[test]
fn a_stored_answer_is_served_again_without_the_backend() {
    let backend = backend();
    let gw = cached(&backend, "{invalidationHeader: x-cache-invalidate}");
    let mut c = gw.connect();

    // a miss, then hits: the same answer, an Age, the backend asked once
    let first = c.get("/api/products/1");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("age"), None, "a fetched answer has no Age");
    for _ in 0..3 {
        let again = c.get("/api/products/1");
        assert_eq!((again.status, n(&again)), (200, n(&first)));
        assert!(
            again.header("age").is_some(),
            "a stored answer says its Age"
        );
        assert!(again.header("x-request-id").is_some());
    }
    assert_eq!(backend.count(), 1);
    // a HEAD is answered from the GET's entry; a POST is never
    let head = c.request("HEAD", "/api/products/1", &[], b"");
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(backend.count(), 1);
    let post = c.request("POST", "/api/products/1", &[], b"{}");
    assert_eq!(post.json()["method"], "POST");
    assert_eq!(backend.count(), 2);
    // the key is the path (Flex's default): another path is another entry
    assert_ne!(n(&c.get("/api/products/2")), n(&first));
    assert_eq!(backend.count(), 3);

    // stored by status (Flex's list): 404 yes, 500 no
    let missing = n(&c.get("/api/missing"));
    assert_eq!(n(&c.get("/api/missing")), missing);
    let broken = n(&c.get("/api/broken"));
    assert_ne!(n(&c.get("/api/broken")), broken);
    // what the backend's headers forbid is never stored
    for path in ["/api/no-store", "/api/private", "/api/cookie"] {
        let a = c.get(path);
        let b = c.get(path);
        assert_ne!(n(&a), n(&b), "{path} was served from the cache");
    }
    // the client may ask for a fresh answer, which is then stored
    let fresh = c.request(
        "GET",
        "/api/products/1",
        &[("cache-control", "no-cache")],
        b"",
    );
    assert_ne!(n(&fresh), n(&first));
    assert_eq!(n(&c.get("/api/products/1")), n(&fresh));
    let pragma = c.request("GET", "/api/products/1", &[("pragma", "no-cache")], b"");
    assert_ne!(n(&pragma), n(&fresh));

    // max-age shortens an entry's life below the ttl
    let short = n(&c.get("/api/short"));
    assert_eq!(n(&c.get("/api/short")), short);
    std::thread::sleep(Duration::from_millis(1300));
    assert_ne!(
        n(&c.get("/api/short")),
        short,
        "served after max-age ran out"
    );

    // the invalidation header: one key, then all
    let now = n(&c.get("/api/products/1"));
    let other = n(&c.get("/api/products/2"));
    let r = c.request(
        "GET",
        "/api/products/1",
        &[("x-cache-invalidate", "invalidate")],
        b"",
    );
    assert_ne!(n(&r), now, "the key's entry was dropped");
    assert_eq!(n(&c.get("/api/products/2")), other, "only that key");
    c.request(
        "GET",
        "/api/x",
        &[("x-cache-invalidate", "invalidate-all")],
        b"",
    );
    assert_ne!(n(&c.get("/api/products/2")), other, "every entry dropped");

    // counted, and in the access log
    assert!(gw.metric("flexgw_cache_lookups_total{result=\"hit\"}") >= 7.0);
    assert!(gw.metric("flexgw_cache_lookups_total{result=\"bypass\"}") >= 1.0);
    assert!(gw.metric("flexgw_cache_stores_total{result=\"uncacheable\"}") >= 4.0);
    assert!(gw.metric("flexgw_cache_invalidations_total") >= 2.0);
    wait_until(
        Duration::from_secs(5),
        "cache results in the access log",
        || {
            let log = gw.log_text();
            log.contains(r#""cache":"hit""#) && log.contains(r#""cache":"miss""#)
        },
    );
}

#[test]
fn variants_are_kept_apart_by_vary_and_a_header_cannot_poison_another_clients_answer() {
    let backend = backend();
    let gw = cached(&backend, "");
    let mut c = gw.connect();
    let lang = |c: &mut Client, l: Option<&str>| {
        let headers: Vec<(&str, &str)> = l.map(|l| ("Accept-Language", l)).into_iter().collect();
        let r = c.request("GET", "/api/lang", &headers, b"");
        (
            r.json()["lang"].as_str().unwrap_or_default().to_string(),
            n(&r),
        )
    };
    let (en, en_n) = lang(&mut c, Some("en"));
    assert_eq!(en, "en");
    // an attacker's value is a variant of its own, never served for "en"
    let (evil, _) = lang(&mut c, Some("<script>alert(1)</script>"));
    assert_eq!(evil, "<script>alert(1)</script>");
    let (fr, fr_n) = lang(&mut c, Some("fr"));
    assert_eq!(fr, "fr");
    let (none, _) = lang(&mut c, None);
    assert_eq!(none, "none");
    assert_eq!(backend.count(), 4);
    // each variant is served from the cache to its own value only
    assert_eq!(lang(&mut c, Some("en")), ("en".to_string(), en_n));
    assert_eq!(lang(&mut c, Some("fr")), ("fr".to_string(), fr_n));
    // the header's name in any letter case is the same header
    let r = c.request("GET", "/api/lang", &[("ACCEPT-LANGUAGE", "en")], b"");
    assert_eq!((r.json()["lang"].as_str(), n(&r)), (Some("en"), en_n));
    assert_eq!(backend.count(), 4);
}

#[test]
fn policies_before_the_cache_run_on_hits_and_those_after_it_only_on_misses() {
    let backend = backend();
    let url = backend.url();
    // kind: Gateway, our own names: an API key before the cache, a rate
    // limit and a response header after it
    // (the document's policies run first: the outer header)
    let gw = Gateway::start(&config_with(
        "    - header-injection:\n        response: [{name: X-Before, value: outer}]",
        &format!(
            r#"    - id: shop
      path: "/api/*"
      upstream: {{url: "{url}"}}
      policies:
        - api-key: {{keys: ["k-1", "k-2"]}}
        - response-cache: {{ttl: 60}}
        - rate-limiting: {{maxRequests: 2, period: 60}}
        - header-injection:
            response: [{{name: X-After, value: "inner {{request_id}}"}}]"#
        ),
    ));
    let mut c = gw.connect();
    let key = |k: &'static str| vec![("x-api-key", k)];

    let first = c.request("GET", "/api/account", &key("k-1"), b"");
    assert_eq!(first.status, 200);
    let stored_after = first.header("x-after").map(str::to_string);
    assert!(stored_after.is_some());
    // hits: the rate limit after the cache counts none of them
    for _ in 0..5 {
        let hit = c.request("GET", "/api/account", &key("k-2"), b"");
        assert_eq!((hit.status, n(&hit)), (200, n(&first)), "{}", hit.text());
        assert_eq!(
            hit.header("x-before"),
            Some("outer"),
            "the outer policy ran"
        );
        // the inner policy's header is the stored one, from the miss
        assert_eq!(hit.header("x-after").map(str::to_string), stored_after);
    }
    assert_eq!(backend.count(), 1);
    // an unauthenticated client is refused before the cache, whatever it holds
    for headers in [vec![], key("wrong"), vec![("X-Api-Key", "")]] {
        let r = c.request("GET", "/api/account", &headers, b"");
        assert_eq!(r.status, 401, "{headers:?}: {}", r.text());
        assert!(!r.text().contains("\"n\""), "a cached answer leaked");
    }
    // misses do pass the rate limit after the cache: the 3rd is refused
    assert_eq!(c.request("GET", "/api/a", &key("k-1"), b"").status, 200);
    let third = c.request("GET", "/api/b", &key("k-1"), b"");
    assert_eq!(third.status, 429, "{}", third.text());
    assert_eq!(third.header("x-before"), Some("outer"));
    // and the refused miss was not stored: still refused, never a 200
    let again = c.request("GET", "/api/b", &key("k-1"), b"");
    assert_eq!(again.status, 429);
    assert_eq!(backend.count(), 2);
}

#[test]
fn cache_deception_a_personal_answer_under_a_static_looking_path_is_not_stored() {
    // the backend ignores the extension and answers the account page,
    // marked private as personal answers are
    let backend = Backend::start(|seen| match seen.header("authorization") {
        Some(who) => Reply::JsonWith(
            200,
            vec![("cache-control".into(), "private".into())],
            serde_json::json!({"account": who}).to_string(),
        ),
        None => Reply::Json(401, r#"{"error":"sign in"}"#.into()),
    });
    let gw = cached(&backend, "");
    let mut c = gw.connect();
    for path in ["/api/account.css", "/api/account/x.js", "/api/account;.png"] {
        let victim = c.request("GET", path, &[("authorization", "Bearer victim")], b"");
        if victim.status == 400 {
            continue; // `;` parameters are refused before any policy
        }
        assert_eq!(victim.json()["account"], "Bearer victim", "{path}");
        let attacker = c.get(path);
        assert_eq!(attacker.status, 401, "{path}: {}", attacker.text());
        assert!(!attacker.text().contains("victim"), "{path}");
    }
}

#[test]
fn a_large_answer_reaches_the_client_whole_but_is_not_stored() {
    let backend = backend();
    let gw = cached(&backend, "");
    let mut c = gw.connect();
    for round in 1..=2 {
        let r = c.get("/api/big");
        assert_eq!((r.status, r.body.len()), (200, 2 << 20));
        assert_eq!(backend.count(), round, "fetched again: never stored");
    }
    assert!(gw.metric("flexgw_cache_stores_total{result=\"too_big\"}") >= 2.0);
}

#[test]
fn concurrent_misses_on_one_key_ask_the_backend_once() {
    let backend = backend();
    let gw = cached(&backend, "");
    let port = gw.port;
    let answers: Vec<u64> = std::thread::scope(|s| {
        let all: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(move || {
                    let r = Client::connect(port).get("/api/slow");
                    assert_eq!(r.status, 200);
                    n(&r)
                })
            })
            .collect();
        all.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(backend.count(), 1, "the others waited for the first");
    assert!(answers.iter().all(|a| *a == answers[0]));
}

#[test]
fn distributed_entries_are_shared_by_every_gateway_through_redis() {
    let redis = RedisServer::start();
    let storage = format!("{{address: \"{}\", timeout: 500ms}}", redis.address());
    shared_through(&storage, &format!("redis {}", redis.address()), &[]);
}

#[test]
fn distributed_entries_are_shared_through_a_redis_cluster_over_tls() {
    // the nodes speak only TLS, as `localhost` (the certificate's name):
    // the gateway verifies each against the CA it is given
    let dir = temp_dir("cluster-tls");
    let authority = Ca::new();
    let (cert, key) = authority.issue(&dir, "node", &["localhost"], None);
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, authority.cert.to_pem().unwrap()).unwrap();
    let cluster = RedisCluster::start_tls(3, 0, [&ca, &cert, &key]);
    let first = cluster.nodes[0].port;
    let storage =
        format!("{{cluster: {{addresses: [\"localhost:{first}\"]}}, tls: true, timeout: 500ms}}");
    let ca = ca.display().to_string();
    shared_through(
        &storage,
        &format!("redis cluster localhost:{first}"),
        &[("SSL_CERT_FILE", &ca)],
    );
    // a policy's entries and their index share one node (the scripts
    // touch them together); nothing went wrong on the way
    let holders: Vec<usize> = cluster
        .masters()
        .into_iter()
        .map(|p| cluster.keys(p, "flexgw:cache:*").len())
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert!(holders[0] >= 3, "entries and the index: {holders:?}");
}

#[test]
fn a_reload_that_changes_the_shared_storage_moves_the_cache_there() {
    let redis = RedisServer::start();
    let backend = backend();
    let policies =
        "    - policyRef: {name: http-caching-flex}\n      config: {distributed: true}\n";
    let api = flex_api("shop", "{port}", &backend.url(), policies);
    let server = SERVER_ONLY.replace(
        "  server:\n",
        &format!(
            "  server:\n    sharedStorage: {{redis: {{address: \"{}\", db: 0, timeout: 500ms}}}}\n",
            redis.address()
        ),
    );
    let gw = Gateway::start_files(&[("api.yaml", api), ("server.yaml", server)], &[]);
    gw.wait_ready();
    let mut c = gw.connect();
    let first = c.get("/api/products/1");
    assert_eq!(n(&c.get("/api/products/1")), n(&first), "stored in db 0");
    // database 1 from now on (as a deploy writes a file)
    let file = gw.dir.join("server.yaml");
    let text = std::fs::read_to_string(&file).expect("server.yaml");
    std::fs::write(gw.dir.join("server.tmp"), text.replace("db: 0", "db: 1")).expect("write");
    std::fs::rename(gw.dir.join("server.tmp"), &file).expect("rename");
    wait_until(Duration::from_secs(10), "the reload", || {
        gw.admin("/config").text().contains("\"db\":1")
    });
    let after = c.get("/api/products/1");
    assert_ne!(n(&after), n(&first), "db 1 has no entry yet");
    assert_eq!(n(&c.get("/api/products/1")), n(&after), "stored in db 1");
    assert_eq!(backend.count(), 2);
    let in_db1 = redis.cli(&["-n", "1", "--scan", "--pattern", "flexgw:cache:*"]);
    assert!(
        in_db1.lines().count() >= 2,
        "the entry and its index in db 1"
    );
}

/// Two gateways (with `env`) sharing the cache through
/// `sharedStorage.redis: STORAGE`; `/config` names it as `shown`.
fn shared_through(storage: &str, shown: &str, env: &[(&str, &str)]) {
    let backend = backend();
    let policies = "    - policyRef: {name: http-caching-flex}\n      config: {distributed: true, invalidationHeader: x-cache-invalidate}\n";
    let api = flex_api("shop", "{port}", &backend.url(), policies);
    let server = SERVER_ONLY.replace(
        "  server:\n",
        &format!("  server:\n    sharedStorage: {{redis: {storage}}}\n"),
    );
    let start = || {
        let gw = Gateway::start_files(
            &[("api.yaml", api.clone()), ("server.yaml", server.clone())],
            env,
        );
        gw.wait_ready();
        gw
    };
    let (a, b) = (start(), start());
    let (mut ca, mut cb) = (a.connect(), b.connect());
    let first = ca.get("/api/products/1");
    let from_b = cb.get("/api/products/1");
    assert_eq!(n(&from_b), n(&first), "the other gateway served the entry");
    assert!(from_b.header("age").is_some());
    let lang = cb.request("GET", "/api/lang", &[("accept-language", "de")], b"");
    let lang_a = ca.request("GET", "/api/lang", &[("accept-language", "de")], b"");
    assert_eq!(n(&lang_a), n(&lang), "a variant is shared too");
    assert_eq!(backend.count(), 2);
    // invalidated through one, gone for both
    cb.request(
        "GET",
        "/api/z",
        &[("x-cache-invalidate", "invalidate-all")],
        b"",
    );
    assert_ne!(n(&ca.get("/api/products/1")), n(&first));
    // an entry with a validator outlives its freshness in Redis: the other
    // gateway revalidates it (304) and serves the stored body; one without
    // is gone with its freshness
    let tagged = ca.get("/api/etag");
    let short = ca.get("/api/short");
    std::thread::sleep(Duration::from_millis(1300));
    let before = backend.count();
    let again = cb.get("/api/etag");
    assert_eq!(backend.count(), before + 1);
    assert!(backend.last().header("if-none-match").is_some());
    assert_eq!((again.status, n(&again)), (200, n(&tagged)));
    assert_eq!(n(&ca.get("/api/etag")), n(&tagged), "refreshed for both");
    assert_ne!(n(&cb.get("/api/short")), n(&short));
    assert_eq!(backend.last().header("if-none-match"), None);
    assert_eq!(backend.count(), before + 2);
    assert!(a.admin("/config").text().contains(shown));
    assert_eq!(a.metric("flexgw_shared_storage_errors_total"), 0.0);
    assert_eq!(b.metric("flexgw_shared_storage_errors_total"), 0.0);
}

#[test]
fn flex_files_with_the_caching_policy_validate_with_their_notices_and_errors() {
    let dir = temp_dir("cache-validate");
    let file = flex_api_file(
        &dir,
        "    - policyRef: {name: http-caching-flex}\n      config:\n        httpCachingKey: \"#[attributes.requestPath]\"\n        maxCacheEntries: 10000\n        ttl: 500\n        useHttpCacheHeaders: false\n        requestExpression: \"#[attributes.method == 'GET' or attributes.method == 'HEAD']\"\n        responseExpression: \"#[[200, 203, 204, 206, 300, 301, 404, 405, 410, 414, 501] contains attributes.statusCode]\"\n        distributed: false\n        persistCache: true\n",
    );
    let (ok, out, err) = validate(&file);
    assert!(ok, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("persistCache is accepted but not applied"),
        "{out}{err}"
    );
    let file = flex_api_file(
        &dir,
        "    - policyRef: {name: http-caching-flex}\n      config:\n        responseExpression: \"#[attributes.statusCode in [200]]\"\n        tll: 5\n",
    );
    let (ok, out, err) = validate(&file);
    let all = format!("{out}{err}");
    assert!(!ok);
    assert!(
        all.contains("api.yaml:11:") && all.contains("responseExpression"),
        "{all}"
    );
    assert!(
        all.contains("config.tll: unknown field (did you mean `ttl`?)"),
        "{all}"
    );
}

#[test]
fn expired_entries_are_revalidated_and_ranges_are_served_from_the_cache() {
    let backend = backend();
    let gw = cached(&backend, "");
    let mut c = gw.connect();

    // revalidation: an expired entry with a validator is asked about with
    // it; the backend's 304 refreshes the entry and its body is served
    for (path, validator) in [
        ("/api/etag", "if-none-match"),
        ("/api/modified", "if-modified-since"),
    ] {
        let before = backend.count();
        let first = c.get(path);
        assert_eq!(first.status, 200);
        assert_eq!(backend.last().header(validator), None);
        assert_eq!(n(&c.get(path)), n(&first), "{path}: a hit");
        assert_eq!(backend.count(), before + 1);
        std::thread::sleep(Duration::from_millis(1300));
        let again = c.get(path);
        assert_eq!(
            backend.count(),
            before + 2,
            "{path}: asked again once expired"
        );
        assert!(
            backend.last().header(validator).is_some(),
            "{path}: the backend was not asked with the entry's validator"
        );
        assert_eq!(
            (again.status, n(&again), again.text().len()),
            (200, n(&first), first.text().len()),
            "{path}: the stored answer, whole, after the backend's 304"
        );
        // refreshed: fresh again, served without the backend
        assert_eq!(n(&c.get(path)), n(&first));
        assert_eq!(backend.count(), before + 2, "{path}: refreshed by the 304");
    }
    // a client's own conditional request is answered from the entry
    let etag = c.get("/api/etag").header("etag").unwrap().to_string();
    let before = backend.count();
    let r = c.request("GET", "/api/etag", &[("if-none-match", &etag)], b"");
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!(backend.count(), before);
    // an entry without a validator is fetched anew once expired
    let short = n(&c.get("/api/short"));
    std::thread::sleep(Duration::from_millis(1300));
    c.get("/api/short");
    assert_eq!(backend.last().header("if-none-match"), None);
    assert_ne!(n(&c.get("/api/short")), short);
    wait_until(
        Duration::from_secs(5),
        "revalidated in the access log",
        || gw.log_text().contains(r#""cache":"revalidated""#),
    );
    assert!(gw.metric("flexgw_cache_lookups_total{result=\"revalidated\"}") >= 2.0);

    // ranges: a stored answer's bytes, without the backend
    let whole = c.get("/api/products/7");
    let body = whole.body.clone();
    assert!(body.len() > 20);
    let before = backend.count();
    let ranged =
        |c: &mut Client, r: &str| c.request("GET", "/api/products/7", &[("range", r)], b"");
    let part = ranged(&mut c, "bytes=2-9");
    assert_eq!(part.status, 206, "{}", part.text());
    assert_eq!(part.body, body[2..10]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 2-9/{}", body.len()).as_str())
    );
    let tail = ranged(&mut c, "bytes=-5");
    assert_eq!(
        (tail.status, &tail.body[..]),
        (206, &body[body.len() - 5..])
    );
    let open = ranged(&mut c, "bytes=10-");
    assert_eq!((open.status, &open.body[..]), (206, &body[10..]));
    // two ranges: a multipart answer with both parts
    let multi = ranged(&mut c, "bytes=0-1,4-5");
    assert_eq!(multi.status, 206);
    assert!(multi
        .header("content-type")
        .is_some_and(|t| t.starts_with("multipart/byteranges")));
    let text = multi.text();
    assert!(
        text.contains(&String::from_utf8_lossy(&body[0..2]).to_string())
            && text.contains(&format!("bytes 4-5/{}", body.len())),
        "{text}"
    );
    // past the end: 416 with the length; garbage: the whole answer
    let past = ranged(&mut c, "bytes=5000-6000");
    assert_eq!(past.status, 416);
    assert_eq!(
        past.header("content-range"),
        Some(format!("bytes */{}", body.len()).as_str())
    );
    let bad = ranged(&mut c, "lines=1-2");
    assert_eq!((bad.status, bad.body.clone()), (200, body.clone()));
    assert_eq!(backend.count(), before, "every range from the entry");
    // a range on a miss: the backend is asked for the whole answer (which
    // is stored), the client gets its range
    let miss = c.request("GET", "/api/products/8", &[("range", "bytes=0-3")], b"");
    assert_eq!(backend.count(), before + 1);
    assert_eq!(backend.last().header("range"), None);
    assert_eq!(miss.status, 206);
    let full = c.get("/api/products/8");
    assert_eq!(backend.count(), before + 1, "the whole answer was stored");
    assert_eq!(miss.body, full.body[..4]);
}
