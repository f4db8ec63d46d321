//! Custom policies: proxy-wasm filters built with the SDK (tests/wasm-filters)
//! run through the real gateway, in `kind: Gateway` form and as Flex
//! `kind: Extension` resources laid out as the PDK lays them out.

use crate::support::*;
use base64::Engine as _;
use std::time::{Duration, Instant};

/// A route `path` to `backend` with one `proxy-wasm` policy (extra YAML
/// fields, indented for the policy map).
fn wasm_route(id: &str, path: &str, backend: &str, module: &str, fields: &str) -> String {
    format!(
        "    - id: {id}\n      path: \"{path}\"\n      upstream: {{url: \"{backend}\"}}\n      policies:\n        - proxy-wasm:\n            module: \"{module}\"\n{fields}"
    )
}

fn filters() -> Option<String> {
    test_filters().map(|p| p.display().to_string())
}

#[test]
fn sdk_filter_edits_headers_and_answers_locally() {
    let Some(module) = filters() else { return };
    let backend = Backend::echo();
    let gw = Gateway::start(&config_with_routes(&wasm_route(
        "h",
        "/*",
        &backend.url(),
        &module,
        "            rootId: headers\n",
    )));
    let mut c = gw.connect();
    let r = c.request(
        "GET",
        "/api/x",
        &[("x-remove-me", "secret"), ("X-Remove-Me", "again")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-wasm-response"), Some("yes"));
    let seen = backend.last();
    assert_eq!(seen.target, "/api/x");
    // the filter counted the headers it saw (4 pseudo + host + 2 x-remove-me)
    assert_eq!(seen.header("x-wasm-seen"), Some("7"));
    assert_eq!(seen.header("x-remove-me"), None, "{:?}", seen.headers);
    // answered by the filter: the backend never sees it; keep-alive holds
    let before = backend.count();
    let r = c.request("GET", "/hello", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello from WebAssembly\n");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("powered-by"), Some("proxy-wasm"));
    assert!(r.header("x-request-id").is_some());
    assert_eq!(backend.count(), before);
    let r = c.request("GET", "/again", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(backend.last().target, "/again");
}

#[test]
fn plugin_configuration_and_properties_reach_the_filter() {
    let Some(module) = filters() else { return };
    let backend = Backend::echo();
    let routes = [
        wasm_route(
            "config",
            "/config",
            &backend.url(),
            &module,
            "            rootId: config\n            config: {header: x-team, value: payments}\n",
        ),
        wasm_route(
            "props",
            "/props/*",
            &backend.url(),
            &module,
            "            rootId: props\n            name: props-plugin\n",
        ),
    ]
    .join("\n");
    let gw = Gateway::start(&config_with_routes(&routes));
    let mut c = gw.connect();
    let r = c.get("/config");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-team"), Some("payments"));
    let r = c.request("POST", "/props/a?b=1", &[("user-agent", "probe/1")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-p-path"), Some("/props/a?b=1"));
    assert_eq!(r.header("x-p-method"), Some("POST"));
    assert_eq!(r.header("x-p-host"), Some("localhost"), "the client's Host");
    assert_eq!(r.header("x-p-id"), r.header("x-request-id"));
    assert!(
        r.header("x-p-source")
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{:?}",
        r.header("x-p-source")
    );
    assert_eq!(r.header("x-p-plugin"), Some("props-plugin"));
    assert_eq!(r.header("x-p-ua"), Some("probe/1"));
    assert_eq!(r.header("x-p-code"), Some("200"));
}

#[test]
fn filters_rewrite_request_and_response_bodies() {
    let Some(module) = filters() else { return };
    let backend = Backend::start(|seen| {
        Reply::Json(
            200,
            format!(
                "{{\"got\":\"{}\",\"note\":\"a secret and another secret\"}}",
                String::from_utf8_lossy(&seen.body)
            ),
        )
    });
    let routes = [
        wasm_route(
            "body",
            "/body",
            &backend.url(),
            &module,
            "            rootId: body\n",
        ),
        wasm_route(
            "upper",
            "/upper",
            &backend.url(),
            &module,
            "            rootId: upper\n",
        ),
    ]
    .join("\n");
    let gw = Gateway::start(&config_with_routes(&routes));
    let mut c = gw.connect();
    let r = c.get("/body");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        r#"{"got":"","note":"a ****** and another ******"}"#
    );
    // the filter dropped Content-Length: the body goes on chunked, and the
    // connection stays usable
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let r = c.request(
        "POST",
        "/upper",
        &[("content-type", "text/plain")],
        b"make me loud",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = backend.last();
    assert_eq!(seen.body, b"MAKE ME LOUD");
    assert_eq!(seen.header("content-length"), None);
    let r = c.get("/body");
    assert_eq!(r.status, 200);
}

#[test]
fn an_http_call_authorizer_allows_and_denies() {
    let Some(module) = filters() else { return };
    let backend = Backend::echo();
    let authz = Backend::start(|seen| {
        if seen.header("authorization") == Some("Bearer good") {
            Reply::JsonWith(200, vec![("x-user".into(), "alice".into())], "{}".into())
        } else {
            Reply::Json(401, "bad token".into())
        }
    });
    let fields = format!(
        "            rootId: auth\n            services: {{authz: \"{}\"}}\n",
        authz.url()
    );
    let gw = Gateway::start(&config_with_routes(&wasm_route(
        "auth",
        "/*",
        &backend.url(),
        &module,
        &fields,
    )));
    let mut c = gw.connect();
    let r = c.request("GET", "/orders", &[("authorization", "Bearer good")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = backend.last();
    assert_eq!(seen.header("x-user"), Some("alice"));
    // the service saw the call the filter made
    let call = authz.last();
    assert_eq!(call.target, "/check?path=/orders");
    assert_eq!(call.header("host"), Some("authz.local"));
    let before = backend.count();
    let r = c.request("GET", "/orders", &[("authorization", "Bearer forged")], b"");
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), "denied: bad token");
    assert_eq!(r.header("x-denied-by"), Some("authz"));
    assert_eq!(
        backend.count(),
        before,
        "a denied request never reaches the backend"
    );
    // the authorizer down: the filter answers (its own choice), no hang
    authz.stop();
    let t = Instant::now();
    let r = c.request("GET", "/orders", &[("authorization", "Bearer good")], b"");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(backend.count(), before);
}

#[test]
fn shared_data_ticks_and_metrics_work_across_instances() {
    let Some(module) = filters() else { return };
    let backend = Backend::echo();
    let routes = [
        wasm_route(
            "count",
            "/count",
            &backend.url(),
            &module,
            "            rootId: counter\n            instances: 3\n",
        ),
        wasm_route(
            "tick",
            "/tick",
            &backend.url(),
            &module,
            "            rootId: tick\n",
        ),
    ]
    .join("\n");
    let gw = Gateway::start(&config_with_routes(&routes));
    let mut seen = Vec::new();
    for _ in 0..12 {
        // new connections: requests spread over the instances
        let r = gw.connect().get("/count");
        assert_eq!(r.status, 200);
        seen.push(
            r.header("x-count")
                .expect("x-count")
                .parse::<u64>()
                .unwrap(),
        );
    }
    seen.sort();
    assert_eq!(
        seen,
        (1..=12).collect::<Vec<_>>(),
        "one counter shared by three instances"
    );
    assert_eq!(
        gw.metric("flexgw_wasm_counter_total{name=\"test_filter_requests\"}"),
        12.0
    );
    // the root context ticks every 20 ms in the background
    let mut c = gw.connect();
    wait_until(Duration::from_secs(5), "ticks", || {
        c.get("/tick");
        backend
            .last()
            .header("x-ticks")
            .and_then(|t| t.parse::<u64>().ok())
            .is_some_and(|n| n >= 3)
    });
}

#[test]
fn a_failing_filter_fails_its_request_and_the_gateway_keeps_serving() {
    let Some(module) = filters() else { return };
    let backend = Backend::echo();
    let routes = [
        wasm_route(
            "faults",
            "/faults",
            &backend.url(),
            &module,
            "            rootId: faults\n            instances: 1\n            limits: {callbackTimeout: 50ms}\n",
        ),
        wasm_route(
            "open",
            "/open",
            &backend.url(),
            &module,
            "            rootId: faults\n            instances: 1\n            failOpen: true\n",
        ),
    ]
    .join("\n");
    let gw = Gateway::start(&config_with_routes(&routes));
    let mut c = gw.connect();
    assert_eq!(c.get("/faults").status, 200);
    let before = backend.count();
    let r = c.request("GET", "/faults", &[("x-trap", "1")], b"");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("custom policy"), "{}", r.text());
    assert_eq!(backend.count(), before);
    // the instance is rebuilt (at most once a second): the next requests pass
    wait_until(Duration::from_secs(5), "a rebuilt instance", || {
        gw.connect().get("/faults").status == 200
    });
    let before = backend.count();
    let t = Instant::now();
    let r = c.request("GET", "/faults", &[("x-loop", "1")], b"");
    assert_eq!(r.status, 500);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(backend.count(), before);
    // the instance is rebuilt (at most once a second): the next requests pass
    wait_until(Duration::from_secs(5), "a rebuilt instance", || {
        gw.connect().get("/faults").status == 200
    });
    // failOpen: the trapping request goes through
    let r = c.request("GET", "/open", &[("x-trap", "1")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(backend.last().target, "/open");
    let log = gw.log_text();
    assert!(log.contains("ran past its deadline"), "{log}");
}

#[test]
fn validate_reports_modules_that_cannot_run() {
    let Some(module) = filters() else { return };
    let dir = temp_dir("wasm-validate");
    std::fs::write(dir.join("junk.wasm"), b"MZ not wasm").unwrap();
    let config = |fields: &str| {
        config_with_routes(&wasm_route(
            "v",
            "/*",
            "http://127.0.0.1:9",
            &format!("{}/MODULE", dir.display()),
            fields,
        ))
        .replace("{port}", "18999")
        .replace("{admin}", "18998")
        .replace("{dir}", &dir.display().to_string())
    };
    let run = |text: String| {
        let file = dir.join("gw.yaml");
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(GATEWAY)
            .args(["validate", "-c"])
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let (code, text) = run(config("").replace("MODULE", "junk.wasm"));
    assert_eq!(code, Some(1));
    assert!(
        text.contains("not a WebAssembly module") && text.contains("proxy-wasm.module"),
        "{text}"
    );
    let (code, text) = run(config("").replace("MODULE", "missing.wasm"));
    assert_eq!(code, Some(1));
    assert!(text.contains("cannot read the module"), "{text}");
    // the SDK filter refusing its configuration (root id "refuse")
    std::fs::copy(&module, dir.join("f.wasm")).unwrap();
    let (code, text) = run(config("            rootId: refuse\n").replace("MODULE", "f.wasm"));
    assert_eq!(code, Some(1));
    assert!(text.contains("refused its configuration"), "{text}");
    let (code, text) = run(config(
        "            rootId: headers\n            limits: {memory: 100GiB}\n",
    )
    .replace("MODULE", "f.wasm"));
    assert_eq!(code, Some(1));
    assert!(text.contains("limits.memory"), "{text}");
    let (code, text) = run(config("            rootId: headers\n").replace("MODULE", "f.wasm"));
    assert_eq!(code, Some(0), "{text}");
}

/// The Flex layout the PDK's `make build` writes: a definition Extension,
/// an implementation `<policy>-v1-0-impl` with the module as base64.
fn flex_extension(module: &[u8]) -> String {
    format!(
        r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: Extension
metadata:
  name: whois
  labels: {{title: whois, category: Custom}}
spec:
  extends:
    - name: extension-definition
      namespace: default
  properties:
    source:
      type: string
      format: service
    header:
      type: string
      default: x-principal
  required:
    - source
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: Extension
metadata:
  name: whois-v1-0-impl
  labels:
    pdk.mulesoft.com/cargo-anypoint-version: "1.x"
spec:
  extends:
    - name: whois
    - name: extension-implementation
      namespace: default
    - name: envoy-filter
      namespace: default
    - name: proxy-wasm-filter
      namespace: default
  properties:
    rootId:
      type: string
      default: flex
    implementation:
      type: string
      default: "base64://{}"
"#,
        base64::engine::general_purpose::STANDARD.encode(module)
    )
}

/// An ApiInstance on `{port}` in front of `backend`, with `inline`
/// policies (`spec.policies` items) and more documents after it.
fn flex_api(backend: &str, inline: &str, more: &str) -> String {
    let policies = if inline.is_empty() {
        String::new()
    } else {
        format!("  policies:\n{inline}")
    };
    format!(
        r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: ApiInstance
metadata:
  name: orders-api
spec:
  address: http://127.0.0.1:{{port}}
  services:
    orders:
      address: {backend}
{policies}{more}"#
    )
}

#[test]
fn a_flex_extension_runs_like_a_pdk_policy() {
    let Some(module) = test_filters() else { return };
    let bytes = std::fs::read(&module).unwrap();
    let backend = Backend::echo();
    let lookup = Backend::start(|_| Reply::Json(200, "carol".into()));
    let binding = format!(
        r#"---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata:
  name: who-is-calling
spec:
  targetRef: {{kind: ApiInstance, name: orders-api}}
  policyRef: {{kind: Extension, name: whois-v1-0-impl}}
  config:
    source: {}
"#,
        lookup.url()
    );
    let gw = Gateway::start_files(
        &[
            ("server.yaml", SERVER_ONLY.to_string()),
            ("custom-policies/whois.yaml", flex_extension(&bytes)),
            ("api.yaml", flex_api(&backend.url(), "", &binding)),
        ],
        &[],
    );
    let r = gw.connect().get("/orders/7");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = backend.last();
    // the service the policy created from its config (flex_create_service)
    // was called; the `authentication` property was written and read back;
    // the default `header` came from the definition
    assert_eq!(
        seen.header("x-principal"),
        Some(r#"{"principal":"carol"}"#),
        "{:?}",
        seen.headers
    );
    assert_eq!(
        seen.header("x-plugin-name"),
        Some("who-is-calling.default.orders-api")
    );
    assert_eq!(lookup.last().target, "/lookup");
    assert_eq!(lookup.last().header("host"), Some("source"));
}

#[test]
fn an_inline_extension_binding_gets_its_config_checked_against_the_definition() {
    let Some(module) = test_filters() else { return };
    let bytes = std::fs::read(&module).unwrap();
    let dir = temp_dir("flex-ext");
    let inline = |config: &str| {
        format!("    - policyRef:\n        name: whois-v1-0-impl\n        namespace: default\n      config: {config}\n")
    };
    let run = |api: String| {
        std::fs::write(dir.join("ext.yaml"), flex_extension(&bytes)).unwrap();
        std::fs::write(dir.join("api.yaml"), api.replace("{port}", "18997")).unwrap();
        let out = std::process::Command::new(GATEWAY)
            .args(["validate", "-c"])
            .arg(&*dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let with = |config: &str| flex_api("http://127.0.0.1:9", &inline(config), "");
    let (code, text) = run(with("{source: \"http://127.0.0.1:9\"}"));
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(with("{sourc: \"http://127.0.0.1:9\"}"));
    assert_eq!(code, Some(1));
    assert!(
        text.contains("api.yaml:")
            && text.contains("sourc: unknown property (did you mean \"source\"?)"),
        "{text}"
    );
    assert!(
        text.contains("required property \"source\" is missing"),
        "{text}"
    );
    let (code, text) = run(with("{source: [1, 2]}"));
    assert_eq!(code, Some(1));
    assert!(text.contains("expected a string"), "{text}");
    let (code, text) = run(with("{source: \"ftp://x\"}"));
    assert_eq!(code, Some(1));
    assert!(text.contains("not a service URL"), "{text}");
    // binding the definition instead of the implementation
    let (code, text) =
        run(with("{source: \"http://127.0.0.1:9\"}").replace("whois-v1-0-impl", "whois"));
    assert_eq!(code, Some(1));
    assert!(
        text.contains("bind its implementation (whois-v1-0-impl)"),
        "{text}"
    );
    let (code, text) = run(with("{}").replace("whois-v1-0-impl", "whoami"));
    assert_eq!(code, Some(1));
    assert!(text.contains("unknown policy \"whoami\""), "{text}");
}

#[test]
fn a_reload_swaps_the_filter_and_requests_in_flight_finish_on_the_old_one() {
    let Some(module) = filters() else { return };
    let backend = Backend::echo();
    // the authorizer holds each call for a while: requests wait, paused
    let authz = Backend::start(|_| {
        Reply::Delayed(
            Duration::from_millis(1500),
            Box::new(Reply::JsonWith(
                200,
                vec![("x-user".into(), "old".into())],
                "{}".into(),
            )),
        )
    });
    let auth = format!(
        "            rootId: auth\n            services: {{authz: \"{}\"}}\n",
        authz.url()
    );
    let gw = Gateway::start(&config_with_routes(&wasm_route(
        "r",
        "/*",
        &backend.url(),
        &module,
        &auth,
    )));
    gw.wait_ready();
    let file = gw.dir.join("gateway.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let port = gw.port;
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                Client::connect(port).request("GET", "/a", &[("authorization", "Bearer x")], b"")
            })
        })
        .collect();
    wait_until(Duration::from_secs(5), "calls in flight", || {
        authz.count() >= 4
    });
    // a new module configuration: the config filter, tagging responses
    let next = original
        .replace(
            "rootId: auth",
            "rootId: config\n            config: {header: x-generation, value: two}",
        )
        .replace(
            &format!("            services: {{authz: \"{}\"}}\n", authz.url()),
            "",
        );
    assert_ne!(next, original);
    let tmp = file.with_extension("yaml.tmp");
    std::fs::write(&tmp, &next).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let pid = gw.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let mut c = gw.connect();
    wait_until(Duration::from_secs(10), "the new filter", || {
        c.get("/b").header("x-generation") == Some("two")
    });
    for t in in_flight {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-generation"), None, "finished on the old filter");
    }
    let users: Vec<_> = backend
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.target == "/a")
        .map(|s| s.header("x-user").map(str::to_string))
        .collect();
    assert_eq!(users, vec![Some("old".to_string()); 4]);
}

#[test]
fn the_example_policy_builds_and_guards_tenants() {
    let Some(module) = example_policy() else {
        return;
    };
    let backend = Backend::echo();
    let fields = "            config: {header: x-tenant, allowed: [acme, globex]}\n";
    let gw = Gateway::start(&config_with_routes(&wasm_route(
        "orders",
        "/orders/*",
        &backend.url(),
        &module.display().to_string(),
        fields,
    )));
    let mut c = gw.connect();
    let r = c.request("GET", "/orders/1", &[("x-tenant", "acme")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-served-for"), Some("acme"));
    assert_eq!(backend.last().header("x-tenant-verified"), Some("true"));
    let before = backend.count();
    for tenant in [Some("initech"), Some("ACME"), None] {
        let headers: Vec<(&str, &str)> = tenant.map(|t| ("x-tenant", t)).into_iter().collect();
        let r = c.request("GET", "/orders/1", &headers, b"");
        assert_eq!(r.status, 403, "{tenant:?}");
        assert_eq!(r.json()["error"], "unknown tenant");
    }
    assert_eq!(backend.count(), before);
    // a forged verification header does not help
    let r = c.request("GET", "/orders/1", &[("x-tenant-verified", "true")], b"");
    assert_eq!(r.status, 403);
}

#[test]
fn the_root_context_can_resume_a_paused_request() {
    let Some(module) = filters() else { return };
    let backend = Backend::echo();
    let gw = Gateway::start(&config_with_routes(&wasm_route(
        "later",
        "/*",
        &backend.url(),
        &module,
        "            rootId: later\n            instances: 1\n",
    )));
    let t = Instant::now();
    let r = gw.connect().get("/wait");
    assert_eq!(r.status, 200, "{}", r.text());
    // resumed by a 20 ms tick, long before the 30 s pause limit
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(backend.last().header("x-resumed-by"), Some("tick"));
}

#[test]
fn a_filter_can_end_a_context_late_with_proxy_done() {
    let Some(module) = filters() else { return };
    let backend = Backend::echo();
    // the audit service answers once the test opens the gate
    let gate = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let g = gate.clone();
    let audit = Backend::start(move |_| {
        let (open, cv) = &*g;
        let guard = open.lock().unwrap();
        let _ = cv
            .wait_timeout_while(guard, Duration::from_secs(20), |o| !*o)
            .unwrap();
        Reply::Json(200, "{}".into())
    });
    let fields = |more: &str| {
        format!(
            "            rootId: deferred\n            instances: 1\n            services: {{audit: \"{}\"}}\n{more}",
            audit.url()
        )
    };
    let routes = [
        wasm_route("late", "/late", &backend.url(), &module, &fields("")),
        wasm_route(
            "never",
            "/never",
            &backend.url(),
            &module,
            &fields("            config: {done: never}\n            limits: {pauseTimeout: 3s}\n"),
        ),
    ]
    .join("\n");
    let gw = Gateway::start(&config_with_routes(&routes));
    let metric = |name: &str| gw.metric(&format!("flexgw_wasm_counter_total{{name=\"{name}\"}}"));
    let t = Instant::now();
    let r = gw.connect().get("/late");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the client does not wait for the filter's late work"
    );
    wait_until(Duration::from_secs(5), "the audit call", || {
        audit.count() >= 1
    });
    assert!(audit.last().target.starts_with("/audit/request-"));
    // proxy_on_done returned false: no log until the filter says done
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(metric("test_filter_deferred_logged"), 0.0);
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    wait_until(
        Duration::from_secs(5),
        "proxy_on_log after proxy_done",
        || metric("test_filter_deferred_logged") == 1.0,
    );
    assert_eq!(metric("test_filter_deferred_responses"), 1.0);

    // a filter that never calls proxy_done: closed at its pause limit
    assert_eq!(gw.connect().get("/never").status, 200);
    wait_until(Duration::from_secs(5), "the call response", || {
        metric("test_filter_deferred_responses") == 2.0
    });
    assert_eq!(metric("test_filter_deferred_logged"), 1.0, "still open");
    wait_until(
        Duration::from_secs(10),
        "the context closed at its limit",
        || metric("test_filter_deferred_logged") == 2.0,
    );

    // the plugins go (a reload without them): each root context's
    // proxy_on_done calls the audit service and returns false; its
    // proxy_done (on the response) lets the host log and delete it
    let file = gw.dir.join("gateway.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let plain = format!(
        "    - id: plain\n      path: \"/*\"\n      upstream: {{url: \"{}\"}}\n",
        backend.url()
    );
    let next = original.replace(&routes, &plain);
    assert_ne!(next, original);
    let tmp = file.with_extension("yaml.tmp");
    std::fs::write(&tmp, &next).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    wait_until(Duration::from_secs(10), "the root contexts closed", || {
        metric("test_filter_deferred_root_logged") == 2.0
    });
    assert_eq!(metric("test_filter_deferred_root_responses"), 2.0);
    let roots = audit
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.target == "/audit/root")
        .count();
    assert_eq!(roots, 2);
    assert_eq!(
        gw.connect().get("/late").status,
        200,
        "the new config serves"
    );
}
