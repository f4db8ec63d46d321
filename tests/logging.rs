//! Message logging (`message-logging`, Flex's `message-logging-flex`) as an
//! operator reads it: lines built from the request before the upstream
//! call and from the response after it, only when their condition holds,
//! at their level, in the runtime log; the request itself unchanged.
//! Flex's log outputs (file, http, syslog, stdout) as a log pipeline
//! receives them, under rotation, and when one of them is down.

use crate::support::*;
use std::sync::{Arc, Mutex};
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
    let gw = serve_flex_api("shop", &backend.url(), policies);
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

/// What message logging cannot log is refused where it is written.
#[test]
fn message_logging_refuses_what_it_cannot_log() {
    let dir = temp_dir("msglog");
    let file = flex_api_file(
        &dir,
        r##"    - policyRef: {name: message-logging-flex}
      config:
        maxPayloadSize: 1GB
        loggingConfiguration:
          - itemName: body
            itemData: {message: "#[now()]", level: INFO, firstSection: true}
          - itemName: loud
            itemData: {message: "x", level: LOUD, firstSection: true}
    - policyRef: {name: header-injection-flex}
      config:
        inboundHeaders: [{key: x-body, value: "#[payload.id]"}]
"##,
    );
    let (ok, out, err) = validate(&file);
    let text = err + &out;
    assert!(!ok, "{text}");
    assert!(text.contains("`now(...)` is not supported"), "{text}");
    assert!(text.contains("itemData.level"), "{text}");
    assert!(
        text.contains("maxPayloadSize") && text.contains("at most 16777216"),
        "{text}"
    );
    // only message logging reads the body
    assert!(
        text.contains("`payload.id` (the body) is read only by message logging"),
        "{text}"
    );
}

/// `payload` reads the body as it streams to the upstream (the request's
/// before the call, the response's after it): the first `maxPayloadSize`
/// bytes are kept for the line, the body itself goes on whole.
#[test]
fn message_logging_reads_bodies_within_a_bound() {
    let backend = Backend::echo();
    let policies = r##"    - policyRef: {name: message-logging-flex}
      config:
        maxPayloadSize: 64
        loggingConfiguration:
          - itemName: head
            itemData: {message: "#[attributes.method] #[vars.reqId]", level: INFO, firstSection: true}
          - itemName: order
            itemData:
              message: "order #[payload.id default 'none'] qty #[payload.qty default 0] by #[attributes.headers['x-user']]: #[payload default 'no body']"
              conditional: "#[attributes.queryParams['big'] == null]"
              level: INFO
              firstSection: true
          - itemName: big
            itemData:
              message: "id #[payload.id default 'unreadable'] first bytes #[payload]"
              conditional: "#[attributes.queryParams['big'] == 'yes']"
              level: INFO
              firstSection: true
          - itemName: answer
            itemData:
              message: "answered #[attributes.statusCode] ok=#[payload.ok]: #[payload]"
              level: WARN
              secondSection: true
"##;
    let gw = serve_flex_api("shop", &backend.url(), policies);
    let mut c = gw.connect();
    let small = br#"{"id":"o-1","qty":5}"#;
    let r = c.request(
        "POST",
        "/api/orders",
        &[
            ("x-user", "ada"),
            ("x-request-id", "pl-1"),
            ("content-type", "application/json"),
        ],
        small,
    );
    assert_eq!(r.status, 200);
    let r = c.request("GET", "/api/orders/1", &[("x-request-id", "pl-2")], b"");
    assert_eq!(r.status, 200);
    let mut big = br#"{"id":"big","pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 200_000));
    big.extend_from_slice(br#""}"#);
    let r = c.request(
        "PUT",
        "/api/orders/2?big=yes",
        &[("x-request-id", "pl-3")],
        &big,
    );
    assert_eq!(r.status, 200);
    // the bodies went on whole
    let seen = backend.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].body, small);
    assert_eq!(seen[2].body_len, big.len() as u64);

    let mut log = String::new();
    wait_until(Duration::from_secs(10), "the message lines", || {
        log = gw.log_text();
        log.matches("[answer]").count() >= 3
    });
    let line = |item: &str, req: &str| -> String {
        let found: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("[req: {req}]")) && l.contains(&format!("[{item}]")))
            .collect();
        assert_eq!(found.len(), 1, "{item} for {req}: {log}");
        found[0].to_string()
    };
    assert!(
        line("order", "pl-1").ends_with(r#"order o-1 qty 5 by ada: {"id":"o-1","qty":5}"#),
        "{log}"
    );
    assert!(
        line("order", "pl-2").ends_with("order none qty 0 by : no body"),
        "{log}"
    );
    // cut at 64 bytes: not JSON any more, so no member reads
    let b = line("big", "pl-3");
    let first = String::from_utf8_lossy(&big[..64]).to_string();
    assert!(
        b.ends_with(&format!("id unreadable first bytes {first}")),
        "{b}"
    );
    assert!(
        line("answer", "pl-1").contains(r#"answered 200 ok=true: {"ok":true,"path":"/orders"}"#),
        "{log}"
    );
    // the head's item did not wait for the body: it comes before the body's
    let at = |item: &str| log.find(&line(item, "pl-1")).unwrap();
    assert!(at("head") < at("order"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("[req: pl-3]") && l.contains("[order]")),
        "{log}"
    );
    assert_eq!(gw.metric("flexgw_log_lines_dropped_total"), 0.0);
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

/// Message logging items of the access-log example in Flex's docs
/// (a line before the upstream call, one after it).
const ACCESS_ITEMS: &str = r##"    - policyRef: {name: message-logging-flex}
      config:
        loggingConfiguration:
          - itemName: "Access Log Request"
            itemData:
              message: "#[attributes.method ++ ' ' ++ attributes.requestPath ++ ' ' ++ vars.reqId]"
              level: INFO
              firstSection: true
          - itemName: "Access Log Response"
            itemData:
              message: "#['status ' ++ attributes.statusCode ++ ' ' ++ vars.reqId]"
              level: INFO
              secondSection: true
"##;

fn logging_config(spec: &str) -> String {
    format!(
        "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Configuration\nmetadata: {{name: logging}}\nspec:\n  logging:\n{spec}"
    )
}

/// A syslog server on a UDP port of loopback: the datagrams it received.
fn syslog_listener() -> (u16, Arc<Mutex<Vec<String>>>) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        // ends with the test process; a weak reference stops it earlier
        let weak = Arc::downgrade(&seen);
        drop(seen);
        while let Some(seen) = weak.upgrade() {
            if let Ok(n) = socket.recv(&mut buf) {
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).to_string());
            }
        }
    });
    (port, got)
}

/// Flex's `logging.outputs` as written in its docs: runtime lines to a
/// file (Flex's template) and syslog; access lines (message logging and
/// the JSON access log) to the file, an HTTP collector (JSON lines, with
/// its header and basic credentials), syslog and stdout.
#[test]
fn flex_log_outputs_deliver_runtime_and_access_lines_to_file_http_syslog_and_stdout() {
    let backend = Backend::echo();
    let collector = Backend::start(|_| Reply::Json(200, "{}".into()));
    let (syslog_port, datagrams) = syslog_listener();
    let api = flex_api("shop", "{port}", &backend.url(), ACCESS_ITEMS);
    let logging = logging_config(&format!(
        r#"    outputs:
    - name: default
      type: file
      parameters:
        file: "{{dir}}/flex.log"
        format: template
        template: |
          [{{logger}}][{{level}}][{{kind}}] {{message}}
    - name: collector
      type: http
      parameters:
        Host: 127.0.0.1
        Port: {}
        URI: /receiver/v1/http/key
        Format: json_lines
        json_date_key: timestamp
        json_date_format: iso8601
        header: "X-Sumo-Category flex"
        http_User: shipper
        http_Passwd: s3cret-pass
    - name: rsyslog
      type: syslog
      parameters: {{host: 127.0.0.1, port: {syslog_port}, mode: udp, syslog_format: rfc5424}}
    - name: console
      type: stdout
    runtimeLogs:
      logLevel: info
      outputs: [default, rsyslog]
    accessLogs:
      outputs: [default, collector, rsyslog, console]
"#,
        collector.port
    ));
    let gw = Gateway::start_files(
        &[
            ("api.yaml", api),
            ("logging.yaml", logging),
            ("server.yaml", SERVER_ONLY.to_string()),
        ],
        &[("RUST_LOG", "")],
    );
    gw.wait_ready();
    let mut c = gw.connect();
    for i in 0..3 {
        let id = format!("out-req-{i}");
        let r = c.request(
            "GET",
            &format!("/api/items/{i}"),
            &[("x-request-id", &id)],
            b"",
        );
        assert_eq!(r.status, 200);
    }
    // the file: Flex's template, runtime and access lines
    let file = gw.dir.join("flex.log");
    let mut text = String::new();
    wait_until(Duration::from_secs(10), "the file output", || {
        text = std::fs::read_to_string(&file).unwrap_or_default();
        text.contains("status 200 out-req-2") && text.contains("\"requestId\":\"out-req-2\"")
    });
    assert!(
        text.contains("[message-logging][info][access] [req: out-req-0] [")
            && text.contains("GET /api/items/0 out-req-0"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("[access][info][access] {") && l.contains("out-req-1")),
        "the JSON access line, as the message: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("][info][runtime] ready: pid")),
        "runtime lines: {text}"
    );
    // the collector: JSON lines, its header, its credentials
    let mut posts = Vec::new();
    wait_until(Duration::from_secs(10), "the HTTP collector", || {
        posts = collector.seen.lock().unwrap().clone();
        posts
            .iter()
            .any(|p| String::from_utf8_lossy(&p.body).contains("status 200 out-req-2"))
    });
    let p = &posts[0];
    assert_eq!(p.method, "POST");
    assert_eq!(p.target, "/receiver/v1/http/key");
    assert_eq!(p.header("x-sumo-category"), Some("flex"));
    assert_eq!(p.header("content-type"), Some("application/x-ndjson"));
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(b"shipper:s3cret-pass")
    );
    assert_eq!(p.header("authorization"), Some(expected.as_str()));
    let records: Vec<serde_json::Value> = posts
        .iter()
        .flat_map(|p| {
            String::from_utf8_lossy(&p.body)
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        records.iter().all(|r| r["kind"] == "access"),
        "access lines only: {records:?}"
    );
    let r = records
        .iter()
        .find(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.contains("GET /api/items/1 out-req-1"))
        })
        .expect("the request line of out-req-1");
    assert_eq!(r["logger"], "message-logging");
    assert_eq!(r["level"], "info");
    assert!(
        r["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{r}"
    );
    // syslog: RFC 5424, runtime and access
    let mut got = Vec::new();
    wait_until(Duration::from_secs(10), "the syslog datagrams", || {
        got = datagrams.lock().unwrap().clone();
        got.iter().any(|d| d.contains("status 200 out-req-2"))
            && got.iter().any(|d| d.contains("ready: pid"))
    });
    let d = got
        .iter()
        .find(|d| d.contains("status 200 out-req-2"))
        .unwrap();
    assert!(d.starts_with("<14>1 "), "facility user, severity info: {d}");
    assert!(d.contains(" flex-gateway "), "{d}");
    // stdout: JSON lines
    let mut out = String::new();
    wait_until(Duration::from_secs(10), "the stdout output", || {
        out = std::fs::read_to_string(gw.dir.join("stdout.log")).unwrap_or_default();
        out.contains("status 200 out-req-2")
    });
    for l in out.lines().filter(|l| l.contains("out-req")) {
        let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line on stdout");
        assert!(v["date"].as_f64().is_some(), "{v}");
    }
    // the password is never shown
    let config = gw.admin("/config").text();
    assert!(config.contains("\"collector\""), "{config}");
    assert!(!config.contains("s3cret-pass"), "{config}");
    assert!(!gw.log_text().contains("s3cret-pass"));
    assert_eq!(gw.metric("flexgw_log_lines_dropped_total"), 0.0);
}

/// A file output under rotation: the real logrotate renames the file
/// and signals SIGUSR1 (the gateway reopens at once); a rename without a
/// signal is noticed within seconds; a reload that names another file
/// moves the lines there. No line is lost on the way.
#[test]
fn file_outputs_follow_logrotate_sigusr1_renames_and_reloads() {
    let backend = Backend::echo();
    let api = flex_api("shop", "{port}", &backend.url(), ACCESS_ITEMS);
    let logging = |file: &str| {
        logging_config(&format!(
            "    outputs:\n    - {{name: f, type: file, parameters: {{path: \"{{dir}}/logs\", file: {file}, mkdir: on}}}}\n    accessLogs: {{outputs: [f]}}\n"
        ))
    };
    let gw = Gateway::start_files(
        &[
            ("api.yaml", api),
            ("logging.yaml", logging("gw.log")),
            ("server.yaml", SERVER_ONLY.to_string()),
        ],
        &[],
    );
    gw.wait_ready();
    let logs = gw.dir.join("logs");
    let read = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
    let get = |id: &str| {
        let r = gw
            .connect()
            .request("GET", "/api/x", &[("x-request-id", id)], b"");
        assert_eq!(r.status, 200);
    };
    let landed = |name: &str, id: &str| {
        let needle = format!("status 200 {id}");
        wait_until(Duration::from_secs(10), &format!("{id} in {name}"), || {
            read(name).contains(&needle)
        });
    };
    get("rot-1");
    landed("gw.log", "rot-1");
    // plain JSON lines by default
    let first = read("gw.log");
    for l in first.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
        assert_eq!(v["kind"], "access", "{v}");
    }

    // the real logrotate: rename, create, SIGUSR1
    let conf = gw.dir.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{}/*.log {{\n  rotate 3\n  missingok\n  create 0640\n  postrotate\n    kill -USR1 {}\n  endscript\n}}\n",
            logs.display(),
            gw.child.id()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(gw.dir.join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("logrotate (Debian package logrotate; .ci/deps installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(read("gw.log.1").contains("status 200 rot-1"));
    wait_until(Duration::from_secs(10), "the SIGUSR1 notice", || {
        gw.log_text().contains("SIGUSR1: log files reopen")
    });
    get("rot-2");
    landed("gw.log", "rot-2");
    assert!(
        !read("gw.log.1").contains("rot-2"),
        "the rotated file is left alone"
    );

    // a rename without a signal (a rotation whose postrotate failed)
    std::fs::rename(logs.join("gw.log"), logs.join("moved.log")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    get("rot-3");
    landed("gw.log", "rot-3");
    assert!(read("moved.log").contains("status 200 rot-2"));

    // a reload that names another file
    std::fs::write(
        gw.dir.join("logging.yaml"),
        logging("other.log").replace("{dir}", &gw.dir.display().to_string()),
    )
    .unwrap();
    wait_until(Duration::from_secs(15), "the reload", || {
        gw.log_text().matches("log output \"f\" ready").count() >= 2
    });
    get("rot-4");
    landed("other.log", "rot-4");
    assert!(!read("gw.log").contains("rot-4"));
    assert_eq!(gw.metric("flexgw_log_lines_dropped_total"), 0.0);
}

/// An HTTP collector that accepts connections and never answers: every
/// request still succeeds at once, the file output beside it still gets
/// its lines, and the lost lines are counted.
#[test]
fn a_blackholed_http_output_changes_no_request() {
    let backend = Backend::echo();
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hole.incoming().flatten() {
            held.push(s); // accepted, never read, never answered
        }
    });
    let api = flex_api("shop", "{port}", &backend.url(), ACCESS_ITEMS);
    let logging = logging_config(&format!(
        "    outputs:\n    - {{name: hole, type: http, parameters: {{host: 127.0.0.1, port: {hole_port}, retry_limit: 0}}}}\n    - {{name: f, type: file, parameters: {{file: \"{{dir}}/access.log\"}}}}\n    accessLogs: {{outputs: [hole, f]}}\n"
    ));
    let gw = Gateway::start_files(
        &[
            ("api.yaml", api),
            ("logging.yaml", logging),
            ("server.yaml", SERVER_ONLY.to_string()),
        ],
        &[],
    );
    gw.wait_ready();
    let mut c = gw.connect();
    for i in 0..40 {
        let r = c.request(
            "GET",
            "/api/x",
            &[("x-request-id", &format!("bh-{i}"))],
            b"",
        );
        assert_eq!(r.status, 200);
    }
    assert_eq!(backend.count(), 40);
    wait_until(Duration::from_secs(10), "the file output", || {
        std::fs::read_to_string(gw.dir.join("access.log"))
            .unwrap_or_default()
            .contains("status 200 bh-39")
    });
    // the collector's timeout (5 s) ends the batch: dropped, counted, said
    wait_until(Duration::from_secs(20), "the dropped lines counted", || {
        gw.metric("flexgw_log_lines_dropped_total") > 0.0
    });
    wait_until(Duration::from_secs(5), "the warning", || {
        gw.log_text().contains("log output \"hole\"")
    });
}
