//! Message logging (`message-logging`, Flex's `message-logging-flex`) as an
//! operator reads it: lines built from the request before the upstream
//! call and from the response after it, only when their condition holds,
//! at their level, in the runtime log; the request itself unchanged.

use crate::support::*;
use std::time::Duration;

#[test]
fn message_logging_writes_conditional_lines_before_and_after_the_upstream_call() {
    let backend = Backend::echo();
    let policies = r##"    - policyRef: {name: message-logging-flex}
      config:
        loggingConfiguration:
          - itemName: audit
            itemData:
              message: "#['user ' ++ (attributes.headers['x-user'] default 'anonymous') ++ ' did ' ++ attributes.method ++ ' ' ++ attributes.requestPath]"
              conditional: "#[attributes.queryParams['audit'] == 'yes']"
              category: shop.audit
              level: INFO
              firstSection: true
          - itemName: answer
            itemData:
              message: "status #[attributes.statusCode] for #[vars.reqId]"
              level: WARN
              secondSection: true
          - itemName: noisy
            itemData:
              message: "#['debug only']"
              level: DEBUG
              firstSection: true
              secondSection: true
"##;
    let api = flex_api("shop", "{port}", &backend.url(), policies);
    let gw = Gateway::start_files(
        &[("api.yaml", api), ("server.yaml", SERVER_ONLY.to_string())],
        &[],
    );
    gw.wait_ready();
    let mut c = gw.connect();
    let r = c.request(
        "GET",
        "/api/orders/7?audit=yes",
        &[("x-user", "ada"), ("x-request-id", "audit-req-1")],
        b"",
    );
    assert_eq!(r.status, 200);
    let r = c.request(
        "POST",
        "/api/orders/8?audit=no",
        &[("x-user", "bob"), ("x-request-id", "quiet-req-2")],
        b"{}",
    );
    assert_eq!(r.status, 200);
    // the requests went on as sent
    let seen = backend.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("x-user"), Some("bob"));

    let mut log = String::new();
    wait_until(Duration::from_secs(10), "the message lines", || {
        log = gw.log_text();
        log.matches("[answer]").count() >= 2
    });
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("message-logging"))
        .collect();
    let audit: Vec<&&str> = lines.iter().filter(|l| l.contains("[audit]")).collect();
    assert_eq!(
        audit.len(),
        1,
        "only the request with audit=yes: {lines:#?}"
    );
    assert!(
        audit[0].contains("INFO")
            && audit[0].contains("[req: audit-req-1]")
            && audit[0].contains("shop.audit: user ada did GET /api/orders/7"),
        "{}",
        audit[0]
    );
    let answers: Vec<&&str> = lines.iter().filter(|l| l.contains("[answer]")).collect();
    assert_eq!(answers.len(), 2, "{lines:#?}");
    assert!(answers[0].contains("WARN"), "{}", answers[0]);
    assert!(
        answers[0].contains("status 200 for audit-req-1")
            && answers[1].contains("status 200 for quiet-req-2"),
        "{answers:#?}"
    );
    // a DEBUG item at the default level (info) is not written
    assert!(!log.contains("debug only"), "{log}");
    assert_eq!(gw.metric("flexgw_log_lines_dropped_total"), 0.0);
}

/// A message that reads the body (`payload`) is refused where it is
/// written: the body is never buffered for a log line.
#[test]
fn message_logging_refuses_what_it_cannot_log() {
    let dir = temp_dir("msglog");
    let file = dir.join("api.yaml");
    std::fs::write(
        &file,
        r##"apiVersion: gateway.mulesoft.com/v1alpha1
kind: ApiInstance
metadata: {name: shop}
spec:
  address: http://127.0.0.1:18080
  services:
    backend: {address: "http://127.0.0.1:3000"}
  policies:
    - policyRef: {name: message-logging-flex}
      config:
        loggingConfiguration:
          - itemName: body
            itemData: {message: "#[payload]", level: INFO, firstSection: true}
          - itemName: loud
            itemData: {message: "x", level: LOUD, firstSection: true}
"##,
    )
    .unwrap();
    let out = std::process::Command::new(GATEWAY)
        .args(["validate", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("`payload` is not supported"), "{text}");
    assert!(text.contains("itemData.level"), "{text}");
}

/// Flex's `runtimeLogs.logLevel` is applied again on reload: a DEBUG
/// item is written once the level is debug, not before.
#[test]
fn a_reload_changes_the_runtime_log_level() {
    let backend = Backend::echo();
    let policies = r##"    - policyRef: {name: message-logging-flex}
      config:
        loggingConfiguration:
          - itemName: detail
            itemData: {message: "debug line #[vars.reqId]", level: DEBUG, firstSection: true}
"##;
    let api = flex_api("shop", "{port}", &backend.url(), policies);
    let level = |l: &str| {
        format!(
            "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Configuration\nmetadata: {{name: logging}}\nspec:\n  logging:\n    runtimeLogs: {{logLevel: {l}}}\n"
        )
    };
    let gw = Gateway::start_files(
        &[
            ("api.yaml", api),
            ("logging.yaml", level("info")),
            ("server.yaml", SERVER_ONLY.to_string()),
        ],
        // RUST_LOG would fix the level for the process
        &[("RUST_LOG", "")],
    );
    gw.wait_ready();
    let mut c = gw.connect();
    let r = c.request("GET", "/api/a", &[("x-request-id", "before-1")], b"");
    assert_eq!(r.status, 200);
    std::fs::write(gw.dir.join("logging.yaml"), level("debug")).unwrap();
    wait_until(Duration::from_secs(15), "the reload to debug", || {
        gw.log_text().contains("log level now debug")
    });
    let r = gw
        .connect()
        .request("GET", "/api/a", &[("x-request-id", "after-2")], b"");
    assert_eq!(r.status, 200);
    wait_until(Duration::from_secs(10), "the debug line", || {
        gw.log_text().contains("debug line after-2")
    });
    assert!(!gw.log_text().contains("debug line before-1"));
}
