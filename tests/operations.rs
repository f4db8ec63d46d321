//! Operations: admin probes and metrics, hot config reload (SIGHUP and file
//! watch), and zero-downtime binary upgrades, under bounded load.

use crate::support::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn routes(url: &str, extra: &str) -> String {
    config_with_routes(&format!(
        r#"    - id: api
      path: ["/api", "/api/*"]
      upstream:
        url: "{url}"
    - id: limited
      path: "/limited"
      upstream:
        url: "{url}"
      policies:
        - rate-limiting: {{maxRequests: 5, period: 60}}
{extra}"#
    ))
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

fn metric(gw: &Gateway, line_start: &str) -> f64 {
    gw.metric(line_start)
}

fn config_file(gw: &Gateway) -> std::path::PathBuf {
    gw.dir.join("gateway.yaml")
}

/// Rewrite the config file atomically, as a deploy tool would.
fn rewrite(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[test]
fn admin_probes_metrics_and_config() {
    let backend = Backend::echo();
    let gw = Gateway::start(&routes(&backend.url(), ""));
    gw.wait_ready();
    let live = gw.admin("/live");
    assert_eq!(live.status, 200);
    let ready = gw.admin("/ready");
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("ready"))
    );

    let mut c = gw.connect();
    for _ in 0..3 {
        assert_eq!(c.get("/api/x").status, 200);
    }
    for _ in 0..6 {
        c.get("/limited");
    }
    assert_eq!(c.get("/nowhere").status, 404);

    let m = gw.admin("/metrics");
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .is_some_and(|t| t.contains("openmetrics")));
    let expected = [
        r#"flexgw_requests_total{route="api",method="GET",status="2xx"} 3"#,
        r#"flexgw_requests_total{route="limited",method="GET",status="4xx"} 1"#,
        r#"flexgw_policy_rejections_total{route="limited",policy="rate-limiting"} 1"#,
        r#"flexgw_requests_total{route="(none)",method="GET",status="4xx"} 1"#,
        r#"flexgw_request_duration_seconds_count{route="api"} 3"#,
    ];
    // a request is counted in its logging phase, just after its response
    // reached the client: poll until the last one is in
    let mut text = String::new();
    wait_until(Duration::from_secs(10), "the requests in /metrics", || {
        text = gw.admin("/metrics").text();
        expected.iter().all(|e| text.contains(e))
    });
    assert!(!text.contains("/api/x"), "raw paths never become labels");

    // open connections: this one plus two more, until they close
    let mut more: Vec<Client> = (0..2).map(|_| gw.connect()).collect();
    for m in &mut more {
        assert_eq!(m.get("/api").status, 200);
    }
    assert_eq!(metric(&gw, "flexgw_connections_open "), 3.0);
    // the binary's allocator counts: requests add to the count
    let allocations = metric(&gw, "flexgw_heap_allocations_total ");
    assert!(allocations > 0.0, "no allocations counted");
    for m in &mut more {
        assert_eq!(m.get("/api").status, 200);
    }
    assert!(metric(&gw, "flexgw_heap_allocations_total ") > allocations);
    drop(more);
    wait_until(
        Duration::from_secs(5),
        "closed connections to leave the gauge",
        || metric(&gw, "flexgw_connections_open ") == 1.0,
    );

    let config = gw.admin("/config").json();
    let ids: Vec<&str> = config["listeners"][0]["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, ["api", "limited"]);
    assert_eq!(
        config["server"]["admin"],
        format!("127.0.0.1:{}", gw.admin_port)
    );
    assert_eq!(
        std::fs::read_to_string(gw.dir.join("gw.pid"))
            .expect("pid file")
            .trim(),
        gw.child.id().to_string()
    );
}

#[test]
fn reload_by_file_change_and_sighup_keeps_counters_and_rejects_broken_config() {
    fresh_window(Duration::from_secs(60), Duration::from_secs(30));
    let backend = Backend::echo();
    let gw = Gateway::start(&routes(&backend.url(), ""));
    gw.wait_ready();
    let file = config_file(&gw);
    let original = std::fs::read_to_string(&file).expect("config");
    let mut c = gw.connect();
    assert_eq!(c.get("/new").status, 404);
    for _ in 0..3 {
        assert_eq!(c.get("/limited").status, 200);
    }

    // a new route appears without a restart (file watch)
    let with_new = original.replace(
        "  server:\n",
        &format!(
            "    - id: new\n      path: /new\n      upstream: {{url: \"{}\"}}\n  server:\n",
            backend.url()
        ),
    );
    rewrite(&file, &with_new);
    wait_until(Duration::from_secs(10), "the new route", || {
        c.get("/new").status == 200
    });
    // the unchanged rate-limit policy kept its counter: 2 left of 5
    assert_eq!(c.get("/limited").header("x-ratelimit-remaining"), Some("1"));

    // a broken file is rejected whole; the old routes keep serving
    let failures = metric(&gw, r#"flexgw_config_reloads_total{result="failure"}"#);
    rewrite(
        &file,
        &with_new.replace("maxRequests: 5", "maxRequests: lots"),
    );
    wait_until(
        Duration::from_secs(10),
        "the failed reload to be counted",
        || metric(&gw, r#"flexgw_config_reloads_total{result="failure"}"#) > failures,
    );
    // the metric is counted just before the error is logged: wait for the log too
    wait_until(Duration::from_secs(10), "the rejection in the log", || {
        gw.log_text()
            .contains("rejected, the previous config keeps serving")
    });
    assert!(gw
        .log_text()
        .contains("maxRequests: expected a positive integer"));
    assert_eq!(c.get("/new").status, 200);
    assert_eq!(c.get("/api").status, 200);

    // SIGHUP reloads too: restore the original (watch off would not matter)
    rewrite(&file, &original);
    signal(gw.child.id(), "HUP");
    wait_until(Duration::from_secs(10), "the route to go away", || {
        c.get("/new").status == 404
    });
    assert!(
        gw.child.id() > 0 && gw.admin("/live").status == 200,
        "same process"
    );
}

#[test]
fn a_file_dropped_into_conf_d_is_served_and_other_files_are_ignored() {
    let backend = Backend::echo();
    let gw = Gateway::start_conf_dir(&routes(&backend.url(), ""));
    gw.wait_ready();
    let mut c = gw.connect();
    assert_eq!(c.get("/extra").status, 404);
    // the gateway's own log in the same directory changes all the time: no reloads for that
    for _ in 0..20 {
        c.get("/api");
    }
    let reloads = || {
        metric(&gw, r#"flexgw_config_reloads_total{result="success"}"#)
            + metric(&gw, r#"flexgw_config_reloads_total{result="failure"}"#)
    };
    let extra = format!(
        "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {{name: extra}}\nspec:\n  listeners: [{{name: http, port: {}, host: \"127.0.0.1\"}}]\n  routes:\n    - id: extra\n      path: /extra\n      upstream: {{url: \"{}\"}}\n",
        gw.port,
        backend.url()
    );
    rewrite(&gw.dir.join("20-extra.yaml"), &extra);
    wait_until(Duration::from_secs(10), "the dropped-in route", || {
        c.get("/extra").status == 200
    });
    assert_eq!(
        reloads(),
        1.0,
        "exactly one reload: for the new file, none for log writes"
    );
}

/// Keep-alive load in `threads` threads until `stop`; returns (ok, failed, stale retries).
fn load(
    port: Arc<AtomicU64>,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(u64, u64, u64)>> {
    (0..threads)
        .map(|_| {
            let (port, stop) = (port.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed, mut stale) = (0u64, 0u64, 0u64);
                let mut c = Client::connect(port.load(Ordering::Relaxed) as u16);
                while !stop.load(Ordering::Relaxed) {
                    match c.try_request("GET", "/api/load", &[], b"") {
                        Ok(r) if r.status == 200 => {
                            ok += 1;
                            let closing = r
                                .header("connection")
                                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                            if closing {
                                c = Client::connect(port.load(Ordering::Relaxed) as u16);
                            }
                        }
                        Ok(r) => {
                            eprintln!("load: status {}", r.status);
                            failed += 1;
                        }
                        Err(e) if Client::is_stale_close(&e) => {
                            // closed before any response byte: a client retries a GET on a
                            // new connection (RFC 9112 section 9.3.1); counted, not failed
                            stale += 1;
                            c = Client::connect(port.load(Ordering::Relaxed) as u16);
                        }
                        Err(e) => {
                            eprintln!("load: {e}");
                            failed += 1;
                            c = Client::connect(port.load(Ordering::Relaxed) as u16);
                        }
                    }
                }
                (ok, failed, stale)
            })
        })
        .collect()
}

fn finish(handles: Vec<std::thread::JoinHandle<(u64, u64, u64)>>) -> (u64, u64, u64) {
    handles.into_iter().fold((0, 0, 0), |acc, h| {
        let (a, b, c) = h.join().expect("load thread");
        (acc.0 + a, acc.1 + b, acc.2 + c)
    })
}

#[test]
fn fifty_reloads_under_load_fail_no_request() {
    let backend = Backend::echo();
    let gw = Gateway::start(&routes(&backend.url(), ""));
    gw.wait_ready();
    let stop = Arc::new(AtomicBool::new(false));
    let handles = load(Arc::new(AtomicU64::new(gw.port as u64)), 8, stop.clone());
    let started = Instant::now();
    for i in 1..=50 {
        signal(gw.child.id(), "HUP");
        wait_until(Duration::from_secs(10), "reload", || {
            metric(&gw, r#"flexgw_config_reloads_total{result="success"}"#) >= i as f64
        });
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, stale) = finish(handles);
    println!("50 reloads in {took:?} under load: {ok} ok, {failed} failed, {stale} stale keep-alive retries");
    assert_eq!(failed, 0);
    assert_eq!(stale, 0, "an in-process reload closes no connection");
    assert!(ok > 0);
}

fn upgrade(gw: &Gateway, extra: &[&str]) -> (bool, String) {
    let out_path = gw.dir.join(format!(
        "upgrade-{}.log",
        Instant::now().elapsed().as_nanos()
    ));
    let out = std::fs::File::create(&out_path).expect("log");
    let status = Command::new(GATEWAY)
        .args(["upgrade", "-c"])
        .arg(config_file(gw))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().expect("dup")))
        .stderr(Stdio::from(out))
        .status()
        .expect("run upgrade");
    (
        status.success(),
        std::fs::read_to_string(&out_path).unwrap_or_default(),
    )
}

fn current_pid(gw: &Gateway) -> u32 {
    std::fs::read_to_string(gw.dir.join("gw.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

/// Gone, or a zombie waiting to be reaped.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Stops whatever process the pid file names at the end of the test.
struct StopByPidFile<'a>(&'a Gateway);

impl Drop for StopByPidFile<'_> {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.dir.join("gw.pid")) {
            let _ = Command::new("kill").args(["-INT", pid.trim()]).status();
        }
    }
}

#[test]
fn five_binary_upgrades_under_load_drop_nothing() {
    let backend = Backend::start(|seen| {
        if seen.target == "/api/slow" {
            Reply::Delayed(
                Duration::from_secs(3),
                Box::new(Reply::Json(200, "{\"slow\":true}".into())),
            )
        } else {
            Reply::Json(200, "{}".into())
        }
    });
    let gw = Gateway::start(&routes(&backend.url(), ""));
    let _cleanup = StopByPidFile(&gw);
    gw.wait_ready();
    let stop = Arc::new(AtomicBool::new(false));
    let handles = load(Arc::new(AtomicU64::new(gw.port as u64)), 32, stop.clone());

    // a slow request in flight across the first upgrade
    let port = gw.port;
    let slow = std::thread::spawn(move || Client::connect(port).get("/api/slow"));
    wait_until(
        Duration::from_secs(5),
        "the slow request to reach the backend",
        || {
            backend
                .seen
                .lock()
                .expect("lock")
                .iter()
                .any(|s| s.target == "/api/slow")
        },
    );

    let mut times = Vec::new();
    let mut pids = vec![current_pid(&gw)];
    for _ in 0..5 {
        let started = Instant::now();
        let (ok, out) = upgrade(&gw, &[]);
        assert!(ok, "upgrade failed: {out}");
        times.push(started.elapsed());
        let pid = current_pid(&gw);
        assert!(!pids.contains(&pid), "a new process serves");
        pids.push(pid);
        gw.wait_ready();
    }
    let slow = slow.join().expect("slow request");
    assert_eq!(slow.status, 200, "the in-flight slow request completed");
    assert_eq!(slow.json()["slow"], true);
    // keep the load on until every old process has drained and exited
    let load_started = Instant::now();
    for pid in &pids[..5] {
        wait_until(Duration::from_secs(30), "an old process to exit", || {
            exited(*pid)
        });
    }
    let drain = load_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, stale) = finish(handles);
    println!(
        "5 upgrades under 32-connection load: {ok} ok, {failed} failed, {stale} connections closed before a response and retried; upgrade times {times:?}; last drain {drain:?}"
    );
    assert_eq!(failed, 0, "no request failed");
    // A draining process answers with `Connection: close`, so busy clients
    // leave it at a point they expect. What remains is Pingora's: a
    // connection the old process accepted in the last instant of its 5 s
    // overlap is closed unread when its shutdown begins; the client's retry
    // then lands on the new process (the old one accepts no more). So each
    // client connection is cut at most once per upgrade: 32 x 5. Seen: 0-9
    // on an idle machine, up to 30 with both cores busy (the window is
    // wider when the old process is starved), which a bound of 32 made a
    // flaky test. More than one cut per client and upgrade would mean
    // connections cut on the new process too.
    assert!(
        stale <= 32 * 5,
        "{stale} connections closed before a response"
    );
    assert!(ok > 1000);
}

#[test]
fn a_failed_upgrade_leaves_the_old_process_serving() {
    let backend = Backend::echo();
    let gw = Gateway::start(&routes(&backend.url(), ""));
    let _cleanup = StopByPidFile(&gw);
    gw.wait_ready();
    let pid = current_pid(&gw);

    // a binary that cannot start
    let (ok, out) = upgrade(&gw, &["--binary", "/bin/false"]);
    assert!(!ok);
    assert!(out.contains("keeps serving"), "{out}");
    assert_eq!(current_pid(&gw), pid);
    assert_eq!(gw.connect().get("/api").status, 200);

    // an invalid config
    let file = config_file(&gw);
    let good = std::fs::read_to_string(&file).expect("config");
    std::fs::write(&file, good.replace("port: ", "port: x")).expect("write");
    let (ok, out) = upgrade(&gw, &[]);
    assert!(!ok);
    assert!(
        out.contains("upgrade refused, the running gateway is untouched"),
        "{out}"
    );
    assert_eq!(current_pid(&gw), pid);
    assert_eq!(gw.connect().get("/api").status, 200);
    std::fs::write(&file, good).expect("write");
}

#[test]
fn an_upgrade_to_a_port_held_by_another_process_fails_and_the_old_process_serves() {
    let backend = Backend::echo();
    let gw = Gateway::start(&routes(&backend.url(), ""));
    let _cleanup = StopByPidFile(&gw);
    gw.wait_ready();
    let pid = current_pid(&gw);
    // the new config adds a listener on a port someone else holds
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let file = config_file(&gw);
    let good = std::fs::read_to_string(&file).expect("config");
    let more = good.replace(
        "  listeners:\n",
        &format!("  listeners:\n    - {{name: extra, port: {port}, host: \"127.0.0.1\"}}\n"),
    );
    assert_ne!(more, good);
    rewrite(&file, &more);
    let started = Instant::now();
    let (ok, out) = upgrade(&gw, &["--timeout", "10"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{port}")) && out.contains("already in use"),
        "the message names the port and the reason: {out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(current_pid(&gw), pid);
    assert_eq!(gw.connect().get("/api").status, 200);
    rewrite(&file, &good);
}

/// What systemd sees with `Type=notify` and `NotifyAccess=all`: READY=1 and
/// MAINPID= from the first process, then MAINPID= from the upgraded one.
#[test]
fn systemd_is_told_ready_and_the_new_main_pid_after_an_upgrade() {
    use std::os::unix::net::UnixDatagram;
    let backend = Backend::echo();
    let dir = temp_dir("notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let notify = sock_path.display().to_string();
    let gw = Gateway::start_with_env(&routes(&backend.url(), ""), &[("NOTIFY_SOCKET", &notify)]);
    let _cleanup = StopByPidFile(&gw);
    let mut buf = [0u8; 512];
    let recv = |buf: &mut [u8]| {
        let n = sock.recv(buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv(&mut buf);
    assert!(first.contains("READY=1"), "{first}");
    assert!(
        first.contains(&format!("MAINPID={}", gw.child.id())),
        "{first}"
    );

    let out_path = gw.dir.join("upgrade.log");
    let out = std::fs::File::create(&out_path).expect("log");
    let ok = Command::new(GATEWAY)
        .args(["upgrade", "-c"])
        .arg(config_file(&gw))
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::from(out.try_clone().expect("dup")))
        .stderr(Stdio::from(out))
        .status()
        .expect("upgrade")
        .success();
    assert!(
        ok,
        "{}",
        std::fs::read_to_string(&out_path).unwrap_or_default()
    );
    let new_pid = current_pid(&gw);
    assert_ne!(new_pid, gw.child.id());
    // the old process may say more (nothing that ends the service); find the new MAINPID
    let mut seen = Vec::new();
    loop {
        let msg = recv(&mut buf);
        seen.push(msg.clone());
        assert!(
            !msg.contains("STOPPING=1"),
            "an upgrade must not tell systemd the service stops: {seen:?}"
        );
        if msg.contains(&format!("MAINPID={new_pid}")) {
            assert!(msg.contains("READY=1"));
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pingora's `-d/--daemon` flag through our CLI: the command returns, the
/// daemon serves, writes its pid file and stops on SIGINT.
#[test]
fn daemon_mode_serves_in_the_background() {
    let backend = Backend::echo();
    let dir = temp_dir("daemon");
    let port = free_port();
    let admin = free_port_besides(&[port]);
    // a log output too: its writer must run in the daemon, not in the
    // process that forked it
    let logging = "---\napiVersion: gateway.mulesoft.com/v1alpha1\nkind: Configuration\nmetadata: {name: logging}\nspec:\n  logging:\n    outputs:\n    - {name: f, type: file, parameters: {file: \"{dir}/out.log\"}}\n    runtimeLogs: {outputs: [f]}\n    accessLogs: {outputs: [f]}\n";
    let config = (routes(&backend.url(), "") + logging)
        .replace("{port}", &port.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{dir}", &dir.display().to_string());
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, config).expect("write config");
    let log = std::fs::File::create(dir.join("daemon.log")).expect("log");
    let status = Command::new(GATEWAY)
        .args(["run", "-d", "-c"])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("dup")))
        .stderr(Stdio::from(log))
        .status()
        .expect("run -d");
    assert!(status.success(), "run -d exited with {status}");
    let pid_file = dir.join("gw.pid");
    let mut pid = 0u32;
    wait_until(Duration::from_secs(15), "the daemon to be ready", || {
        pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        pid > 0
            && std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
            && Client::connect(admin).get("/ready").status == 200
    });
    assert_eq!(Client::connect(port).get("/api").status, 200);
    wait_until(Duration::from_secs(10), "the daemon's log output", || {
        let out = std::fs::read_to_string(dir.join("out.log")).unwrap_or_default();
        out.contains("\\\"path\\\":\\\"/api\\\"") && out.contains("ready: pid")
    });
    signal(pid, "INT");
    wait_until(Duration::from_secs(10), "the daemon to stop", || {
        exited(pid)
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_port_held_by_another_process_ends_the_start_with_the_reason() {
    use std::process::{Command, Stdio};
    // another process (here: this test) holds the listener's port
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let admin = free_port_besides(&[port]);
    let dir = temp_dir("held");
    let config = config_with_routes(
        r#"    - id: r
      path: "/*"
      upstream: {url: "http://127.0.0.1:1"}"#,
    )
    .replace("{port}", &port.to_string())
    .replace("{admin}", &admin.to_string())
    .replace("{dir}", &dir.display().to_string());
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, config).expect("write");
    let started = std::time::Instant::now();
    let mut child = Command::new(GATEWAY)
        .args(["run", "-c"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // poll /ready while it runs: it must never say ready
    let mut ready_seen = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", admin)) {
            use std::io::{Read, Write};
            let _ = c.write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let mut text = String::new();
            let _ = c.read_to_string(&mut text);
            ready_seen |= text.starts_with("HTTP/1.1 200");
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running after 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(!status.success());
    assert!(!ready_seen, "/ready answered 200");
    let line = err
        .lines()
        .find(|l| l.contains("cannot listen"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("127.0.0.1:{port}")) && line.contains("address already in use"),
        "{err}"
    );
    assert!(!dir.join("gw.pid").exists(), "no pid file");
    drop(held);
}

/// Run the `flex-gateway` command: its exit code and stdout + stderr.
fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(GATEWAY)
        .args(args)
        .output()
        .expect("run flex-gateway");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// The state `/config` gives the file named `name`, and its errors.
fn file_state(gw: &Gateway, name: &str) -> (String, Vec<String>) {
    let config = gw.admin("/config").json();
    let f = config["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in /config files: {config}"))
        .clone();
    let errors = f["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_string())
        .collect();
    (f["state"].as_str().unwrap_or_default().to_string(), errors)
}

#[test]
fn refused_files_are_visible_and_plan_shows_what_a_change_does() {
    let backend = Backend::echo();
    let gw = Gateway::start_conf_dir(&routes(&backend.url(), ""));
    gw.wait_ready();
    let admin = format!("127.0.0.1:{}", gw.admin_port);
    let (code, out) = cli(&["status", "--admin", &admin]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("generation 1"), "{out}");
    assert!(
        out.contains("applied  ") && out.contains("gateway.yaml"),
        "{out}"
    );
    assert_eq!(metric(&gw, "flexgw_config_generation "), 1.0);
    assert_eq!(metric(&gw, "flexgw_config_last_reload_success "), 1.0);

    // a second file: applied, generation 2
    let extra = |path: &str| {
        format!(
            "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {{name: extra}}\nspec:\n  listeners: [{{name: http, port: {}, host: \"127.0.0.1\"}}]\n  routes:\n    - id: extra\n      path: {path}\n      upstream: {{url: \"{}\"}}\n",
            gw.port,
            backend.url()
        )
    };
    let extra_file = gw.dir.join("20-extra.yaml");
    rewrite(&extra_file, &extra("/extra"));
    let mut c = gw.connect();
    wait_until(Duration::from_secs(10), "the second file applied", || {
        c.get("/extra").status == 200 && metric(&gw, "flexgw_config_generation ") == 2.0
    });

    // a broken change to the first file: refused, with its line
    let good = std::fs::read_to_string(config_file(&gw)).expect("config");
    let broken = good.replace("maxRequests: 5", "maxRequests: lots");
    assert_ne!(good, broken);
    rewrite(&config_file(&gw), &broken);
    wait_until(Duration::from_secs(10), "the refusal recorded", || {
        metric(&gw, "flexgw_config_last_reload_success ") == 0.0
    });
    let (state, errors) = file_state(&gw, "gateway.yaml");
    assert_eq!(state, "refused");
    let line = broken
        .lines()
        .position(|l| l.contains("lots"))
        .expect("the broken line")
        + 1;
    assert!(
        errors.len() == 1
            && errors[0].contains(&format!("gateway.yaml:{line}:"))
            && errors[0].contains("maxRequests"),
        "{errors:?}"
    );
    assert_eq!(
        file_state(&gw, "20-extra.yaml").0,
        "applied",
        "unchanged: still what serves"
    );
    // then a valid change to the other file: valid, but not applied
    rewrite(&extra_file, &extra("/extra2"));
    wait_until(Duration::from_secs(10), "the second file pending", || {
        file_state(&gw, "20-extra.yaml").0 == "pending"
    });
    assert_eq!(
        metric(&gw, "flexgw_config_documents{state=\"refused\"}"),
        1.0
    );
    assert_eq!(
        metric(&gw, "flexgw_config_documents{state=\"pending\"}"),
        1.0
    );
    assert_eq!(
        metric(&gw, "flexgw_config_documents{state=\"applied\"}"),
        0.0
    );
    assert_eq!(
        metric(&gw, "flexgw_config_generation "),
        2.0,
        "nothing new applied"
    );
    // the last good configuration serves; readiness holds unless asked to fail
    assert_eq!(c.get("/extra").status, 200);
    assert_eq!(c.get("/extra2").status, 404);
    assert_eq!(gw.admin("/ready").status, 200);
    assert_eq!(gw.admin("/ready?allowPolicyErrors=false").status, 503);
    assert_eq!(
        gw.admin("/probes/readiness?allowConfigErrors=false").status,
        503
    );
    let (code, out) = cli(&["status", "--admin", &admin]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("LAST RELOAD REFUSED") && out.contains("maxRequests"),
        "{out}"
    );
    assert!(
        out.contains("pending  ") && out.contains("20-extra.yaml"),
        "{out}"
    );
    // plan refuses invalid files, as GitHub annotations on their line
    let dir = gw.dir.to_str().expect("utf-8 path");
    let (code, out) = cli(&[
        "plan",
        "-c",
        dir,
        "--against-admin",
        &admin,
        "--format",
        "github",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("::error file={dir}/gateway.yaml,line={line},col=")),
        "{out}"
    );
    let (code, out) = cli(&["validate", "-c", dir, "--format", "github"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("::error file="), "{out}");

    // fixed: applied as generation 3, and the files match the gateway
    rewrite(&config_file(&gw), &good);
    wait_until(Duration::from_secs(10), "the fix applied", || {
        metric(&gw, "flexgw_config_generation ") == 3.0
    });
    assert_eq!(c.get("/extra2").status, 200);
    assert_eq!(metric(&gw, "flexgw_config_last_reload_success "), 1.0);
    assert_eq!(gw.admin("/ready?allowPolicyErrors=false").status, 200);
    let (code, out) = cli(&["plan", "-c", dir, "--against-admin", &admin]);
    assert_eq!((code, out.as_str()), (0, "No changes.\nSecrets were not compared (a running gateway never shows them); a file whose content differs is listed above.\n"));

    // a change planned against the running gateway, and against the files
    let next = temp_dir("plan-next");
    std::fs::write(
        next.join("gateway.yaml"),
        good.replace("maxRequests: 5", "maxRequests: 7"),
    )
    .unwrap();
    std::fs::copy(&extra_file, next.join("20-extra.yaml")).unwrap();
    let next_dir = next.to_str().unwrap();
    let (code, out) = cli(&["plan", "-c", next_dir, "--against-admin", &admin]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("~ route limited (listener 127.0.0.1:{})", gw.port)),
        "{out}"
    );
    assert!(
        out.contains("policies[0].rate-limiting.limits[0].maxRequests: 5 -> 7"),
        "{out}"
    );
    assert!(out.contains("applied by a hot reload"), "{out}");
    assert!(out.contains("Files: ~gateway.yaml\n"), "{out}");
    let (code, out) = cli(&["plan", "-c", next_dir, "--against", dir, "--format", "json"]);
    assert_eq!(code, 2, "{out}");
    let plan: serde_json::Value = serde_json::from_str(&out).expect("JSON plan");
    assert_eq!(plan["needs"], "reload");
    assert_eq!(plan["changes"].as_array().map(Vec::len), Some(1), "{plan}");
    assert_eq!(plan["changes"][0]["fields"][0]["new"], 7);
    // a new port needs a binary upgrade
    let more = free_port_besides(&[gw.port, gw.admin_port]);
    std::fs::write(
        next.join("30-port.yaml"),
        format!("apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {{name: more}}\nspec:\n  listeners: [{{name: more, port: {}, host: \"127.0.0.1\"}}]\n  routes:\n    - id: more\n      path: /more\n      upstream: {{url: \"{}\"}}\n", more, backend.url()),
    )
    .unwrap();
    let (code, out) = cli(&["plan", "-c", next_dir, "--against-admin", &admin]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("+ listener 127.0.0.1:{more}"))
            && out.contains("need a binary upgrade"),
        "{out}"
    );
}

/// The files of conf dir `dir` (the gateway's `*.yaml`), name -> content.
fn yaml_files(dir: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read_to_string(&p).expect("read"))
        })
        .collect()
}

#[test]
fn the_deploy_script_ships_changes_and_rolls_back_refused_ones_under_load() {
    let backend = Backend::echo();
    let gw = Gateway::start_conf_dir(&routes(&backend.url(), ""));
    let _cleanup = StopByPidFile(&gw);
    gw.wait_ready();
    let admin = format!("127.0.0.1:{}", gw.admin_port);
    let backup = temp_dir("deploy-backup");
    let deploy = |src: &Path, env: &[(&str, &str)]| -> (i32, String) {
        let mut cmd = Command::new("sh");
        cmd.arg(repo_path("examples/ci/deploy.sh"))
            .arg(src)
            .arg(&gw.dir)
            .env("FLEXGW", GATEWAY)
            .env("ADMIN", &admin)
            // the new process's output to a file: it outlives the script
            .env(
                "UPGRADE_CMD",
                format!(
                    "{GATEWAY} upgrade -c {0} >>{0}/upgrade.out 2>&1",
                    gw.dir.display()
                ),
            )
            .env("WAIT", "20")
            .env("BACKUP_DIR", backup.join("previous"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        // the script's output to a file, not a pipe (nothing it starts can
        // hold the test up)
        let log = backup.join("deploy.out");
        let file = std::fs::File::create(&log).expect("log");
        let status = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("dup")))
            .stderr(Stdio::from(file))
            .status()
            .expect("run deploy.sh");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (status.code().unwrap_or(-1), text)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let handles = load(Arc::new(AtomicU64::new(gw.port as u64)), 8, stop.clone());
    let current = std::fs::read_to_string(config_file(&gw)).expect("config");
    let route_file = |id: &str, listener_port: u16, extra: &str| {
        format!(
            "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {{name: {id}}}\nspec:\n  listeners: [{{name: {id}, port: {listener_port}, host: \"127.0.0.1\"}}]\n  routes:\n    - id: {id}\n      path: /{id}\n      upstream: {{url: \"{}\"}}\n{extra}",
            backend.url()
        )
    };

    // a good change: a second file with a new route, applied hot
    let good = temp_dir("deploy-good");
    std::fs::write(good.join("gateway.yaml"), &current).unwrap();
    std::fs::write(good.join("20-v2.yaml"), route_file("v2", gw.port, "")).unwrap();
    let (code, out) = deploy(&good, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("+ route v2"), "the plan is shown: {out}");
    assert_eq!(gw.connect().get("/v2").status, 200);
    assert_eq!(yaml_files(&gw.dir), yaml_files(&good));

    // invalid files: nothing is touched
    let invalid = temp_dir("deploy-invalid");
    std::fs::write(
        invalid.join("gateway.yaml"),
        current.replace("maxRequests: 5", "maxRequests: lots"),
    )
    .unwrap();
    let (code, out) = deploy(&invalid, &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(yaml_files(&gw.dir), yaml_files(&good), "nothing changed");

    // valid where the pipeline runs, refused by the gateway (a secret the
    // host does not have): rolled back, the previous files serve again
    let refused = temp_dir("deploy-refused");
    std::fs::write(refused.join("gateway.yaml"), &current).unwrap();
    let auth = "      policies:\n        - http-basic-authentication: {users: [{username: u, password: \"${FLEXGW_DEPLOY_TEST_SECRET}\"}]}\n";
    std::fs::write(refused.join("20-v2.yaml"), route_file("v2", gw.port, auth)).unwrap();
    let (code, out) = deploy(&refused, &[("FLEXGW_DEPLOY_TEST_SECRET", "only-in-ci")]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("FLEXGW_DEPLOY_TEST_SECRET"),
        "the gateway's error is shown: {out}"
    );
    assert_eq!(
        yaml_files(&gw.dir),
        yaml_files(&good),
        "the previous files are back"
    );
    assert_eq!(
        gw.connect().get("/v2").status,
        200,
        "unauthenticated, as before"
    );
    let (code, out) = cli(&["status", "--admin", &admin]);
    assert_eq!(code, 0, "the rollback applied: {out}");

    // a new listener: the plan asks for a binary upgrade, which the script runs
    let first_pid = current_pid(&gw);
    let more_port = free_port_besides(&[gw.port, gw.admin_port]);
    let upgrade = temp_dir("deploy-upgrade");
    for (name, text) in yaml_files(&good) {
        std::fs::write(upgrade.join(name), text).unwrap();
    }
    std::fs::write(
        upgrade.join("30-more.yaml"),
        route_file("more", more_port, ""),
    )
    .unwrap();
    let (code, out) = deploy(&upgrade, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("need a binary upgrade"), "{out}");
    assert_ne!(current_pid(&gw), first_pid, "a new process serves");
    assert_eq!(Client::connect(more_port).get("/more").status, 200);
    wait_until(Duration::from_secs(30), "the old process to drain", || {
        exited(first_pid)
    });

    stop.store(true, Ordering::Relaxed);
    let (ok, failed, stale) = finish(handles);
    println!("deploys under load: {ok} ok, {failed} failed, {stale} stale keep-alive retries");
    assert_eq!(failed, 0, "no request failed");
    // one binary upgrade: each of the 8 clients cut at most once (see
    // five_binary_upgrades_under_load_drop_nothing)
    assert!(stale <= 8, "{stale} connections closed before a response");
    assert!(ok > 100);
}

/// A tool from a Debian package the suite installs (`.ci/test`).
fn debian_tool(name: &str, package: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is missing: install it with `apt-get install -y {package}` (make test does)"
    );
    name.to_string()
}

fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The alert rules pass promtool's checks and unit tests; a real
/// Prometheus scrapes a gateway under a bounded load (every kind of
/// event the dashboard shows: proxied requests, policy rejections, a rate
/// limit, upstream errors, retries, ejections and an open breaker, a
/// refused and a timed-out client, a reload), loads the rules (each
/// healthy), and every query of every panel of the Grafana dashboard
/// returns at least one series through Prometheus' HTTP API.
#[test]
fn the_dashboard_and_alerts_work_against_a_real_prometheus() {
    let promtool = debian_tool("promtool", "prometheus");
    let prometheus = debian_tool("prometheus", "prometheus");
    let rules = repo_path("packaging/prometheus/alerts.yaml");
    for args in [
        vec!["check", "rules", "alerts.yaml"],
        vec!["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(repo_path("packaging/prometheus"))
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let backend = Backend::echo();
    let dead = free_port(); // nothing listens there
    let gw = Gateway::start(&format!(
        r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata: {{name: dashboard}}
spec:
  server:
    admin: {{address: "127.0.0.1:{{admin}}"}}
  listeners:
    - name: http
      port: {{port}}
      limits: {{maxConnectionsPerClient: 4, headerTimeout: 1s}}
  services:
    - name: live
      targets: ["{live}"]
      healthCheck: {{path: /, interval: 1s}}
    - name: dead
      targets: ["http://127.0.0.1:{dead}"]
      passiveHealthCheck: {{consecutiveFailures: 1, ejectionTime: 1s}}
      circuitBreaker: {{failureThreshold: 2, failureWindow: 10s, openTime: 1s}}
  routes:
    - id: ok
      path: /ok
      upstream: {{service: live}}
    - id: limited
      path: /limited
      upstream: {{service: live}}
      policies:
        - rate-limiting: {{maxRequests: 1, period: 1h}}
    - id: keyed
      path: /keyed
      upstream: {{service: live}}
      policies:
        - api-key: {{keys: [a-key-of-the-dashboard-test]}}
    - id: broken
      path: /broken
      upstream:
        service: dead
        retries: {{maxRetries: 1, retryOn: [connect-failure]}}
    - id: down
      path: /down
      upstream: {{url: "http://127.0.0.1:{dead}"}}
"#,
        live = backend.url(),
    ));
    gw.wait_ready();

    // Prometheus: scrapes the admin listener every second, with the rules
    let dir = temp_dir("prometheus");
    let web = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: flex-gateway\n    \
             static_configs: [{{targets: [\"127.0.0.1:{}\"]}}]\n",
            rules.display(),
            gw.admin_port
        ),
    )
    .unwrap();
    let mut prom = Command::new(&prometheus)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("prometheus.log")).unwrap(),
        ))
        .spawn()
        .expect("start prometheus");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prom = Kill(&mut prom);
    wait_until(Duration::from_secs(20), "prometheus ready", || {
        std::net::TcpStream::connect(("127.0.0.1", web)).is_ok()
            && Client::connect(web).get("/-/ready").status == 200
    });

    // the load: bounded, in the background until every query answers
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, port) = (stop.clone(), gw.port);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut c = Client::connect(port);
                for path in ["/ok", "/limited", "/limited", "/keyed", "/broken", "/down"] {
                    let _ = c.try_request("GET", path, &[], b"");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // a client over its connection limit (the fifth), and idle ones cut
    // at the header timeout
    let idle: Vec<_> = (0..6)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", gw.port)).ok())
        .collect();
    // a reload: the same config, touched
    let config = gw.dir.join("gateway.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}# touched\n")).unwrap();

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("packaging/grafana/flex-gateway.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            queries.push((
                panel["title"].as_str().unwrap().to_string(),
                expr.replace("$__rate_interval", "10s"),
            ));
        }
    }
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let ask = |expr: &str| -> serde_json::Value {
        Client::connect(web)
            .get(&format!("/api/v1/query?query={}", percent_encoded(expr)))
            .json()
    };
    let mut empty: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        empty.clear();
        for (title, expr) in &queries {
            let answer = ask(expr);
            assert_eq!(answer["status"], "success", "{title}: {expr}: {answer}");
            if answer["data"]["result"]
                .as_array()
                .is_none_or(|r| r.is_empty())
            {
                empty.push(format!("{title}: {expr}"));
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // what each panel showed (docs/observability.md has one run's table)
    for (title, expr) in &queries {
        let answer = ask(expr);
        let series: Vec<String> = answer["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .take(4)
            .map(|r| {
                let labels: Vec<String> = r["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect();
                let value: f64 = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                format!("{{{}}} {value:.3}", labels.join(","))
            })
            .collect();
        println!(
            "panel | {title} | {} | {}",
            expr.replace('|', "\\|"),
            series.join("; ")
        );
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    drop(idle);
    assert!(
        empty.is_empty(),
        "panels without data after 40 s:\n{}\n\nthe gateway's metrics:\n{}",
        empty.join("\n"),
        gw.admin("/metrics").text()
    );
    // the rules loaded, each evaluated without error
    let rules = Client::connect(web).get("/api/v1/rules").json();
    let loaded: Vec<&serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(loaded.len(), 5, "{rules}");
    for r in loaded {
        assert_eq!(r["health"], "ok", "{r}");
    }
}

/// The OTLP receiver of tests/otlp_receiver.py: its port, and the spans
/// it decoded (one JSON object each).
struct Receiver(PyService);

impl Receiver {
    fn start() -> Receiver {
        Self::start_mode("http")
    }

    /// `http` (OTLP/HTTP) or `grpc` (OTLP/gRPC).
    fn start_mode(mode: &str) -> Receiver {
        Receiver(PyService::start("otlp_receiver.py", mode))
    }

    fn spans(&self) -> Vec<serde_json::Value> {
        self.0.lines()
    }

    fn stop(&mut self) {
        self.0.stop();
    }
}

/// A `traceparent`'s trace id, span id and flags.
fn traceparent_parts(v: &str) -> (String, String, String) {
    let p: Vec<&str> = v.split('-').collect();
    assert_eq!(p.len(), 4, "{v}");
    (p[1].to_string(), p[2].to_string(), p[3].to_string())
}

/// Tracing end to end against a receiver that decodes real OTLP protobuf:
/// the backend's parent is the gateway's CLIENT span, whose parent is the
/// SERVER span, whose parent is the client's; attributes, names, resource;
/// an unsampled parent stays unsampled (and unexported) but propagated; a
/// policy's answer and a 5xx are on the server span; a retry is two CLIENT
/// spans; the trace id is in the access log and a response header; with
/// the receiver gone every request still succeeds and the dropped spans
/// are counted.
#[test]
fn requests_are_traced_to_an_otlp_receiver() {
    let mut receiver = Receiver::start();
    let backend = Backend::echo();
    let dead = free_port();
    let gw = Gateway::start(&format!(
        r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata: {{name: traced}}
spec:
  server:
    admin: {{address: "127.0.0.1:{{admin}}"}}
    tracing:
      endpoint: "http://127.0.0.1:{rport}/v1/traces"
      serviceName: edge
      resourceAttributes: {{deployment.environment: test}}
      headers: {{x-collector-token: a-token}}
      scheduledDelay: 100ms
      timeout: 1s
      responseHeader: traceparent
      policySpans: true
  listeners:
    - {{name: http, port: {{port}}}}
  services:
    - name: flaky
      targets: ["http://127.0.0.1:{dead}", "{live}"]
  routes:
    - id: traced
      path: /traced
      upstream: {{url: "{live}"}}
    - id: denied
      path: /denied
      upstream: {{url: "{live}"}}
      policies:
        - api-key: {{keys: [a-key-nobody-sends]}}
    - id: retried
      path: /retried
      upstream:
        service: flaky
        retries: {{maxRetries: 1, retryOn: [connect-failure]}}
    - id: down
      path: /down
      upstream: {{url: "http://127.0.0.1:{dead}"}}
"#,
        rport = receiver.0.port,
        live = backend.url(),
    ));
    gw.wait_ready();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let mut c = gw.connect();
    let r = c.request(
        "GET",
        "/traced",
        &[
            ("traceparent", &format!("00-{trace}-{parent}-01")),
            ("tracestate", "vendor=1"),
            ("user-agent", "trace-test/1"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    let (t, server_span, flags) =
        traceparent_parts(r.header("traceparent").expect("traceparent answered"));
    assert_eq!((t.as_str(), flags.as_str()), (trace, "01"));
    let seen = backend.seen.lock().unwrap().last().cloned().unwrap();
    let (t, client_span, flags) = traceparent_parts(seen.header("traceparent").unwrap());
    assert_eq!((t.as_str(), flags.as_str()), (trace, "01"));
    assert_ne!(
        client_span, parent,
        "the backend's parent is the gateway's span"
    );
    assert_eq!(seen.header("tracestate"), Some("vendor=1"));
    // no parent: a new trace, sampled (random: 100)
    let r = c.get("/traced");
    let (fresh, _, flags) = traceparent_parts(r.header("traceparent").unwrap());
    assert_ne!(fresh, trace);
    assert_eq!(flags, "01");
    // an unsampled parent: propagated unsampled, not exported
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    c.request(
        "GET",
        "/traced",
        &[(
            "traceparent",
            &format!("00-{unsampled}-b7ad6b7169203331-00"),
        )],
        b"",
    );
    let seen = backend.seen.lock().unwrap().last().cloned().unwrap();
    let (t, _, flags) = traceparent_parts(seen.header("traceparent").unwrap());
    assert_eq!((t.as_str(), flags.as_str()), (unsampled, "00"));
    // a policy answers; an upstream fails; retries
    let denied = c.get("/denied");
    assert_eq!(denied.status, 401);
    // the gateway's own answers carry the trace too
    assert!(denied
        .header("traceparent")
        .is_some_and(|v| v.starts_with("00-")));
    assert_eq!(c.get("/down").status, 502);
    for _ in 0..4 {
        assert_eq!(gw.connect().get("/retried").status, 200);
    }

    let mut spans = Vec::new();
    wait_until(Duration::from_secs(15), "the spans at the receiver", || {
        spans = receiver.spans();
        let servers = spans
            .iter()
            .filter(|s| s["kind"] == "SPAN_KIND_SERVER")
            .count();
        servers >= 8
    });
    assert!(spans.iter().all(|s| s.get("error").is_none()), "{spans:?}");
    let of = |trace: &str| -> Vec<&serde_json::Value> {
        spans.iter().filter(|s| s["traceId"] == trace).collect()
    };
    // the first request: SERVER (parent: the client's) and CLIENT (parent: SERVER)
    let first = of(trace);
    assert_eq!(first.len(), 2, "{first:?}");
    let server = first
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_SERVER")
        .unwrap();
    let client = first
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_CLIENT")
        .unwrap();
    assert_eq!(server["parentSpanId"], parent);
    assert_eq!(server["spanId"], server_span.as_str());
    assert_eq!(client["spanId"], client_span.as_str());
    assert_eq!(client["parentSpanId"], server["spanId"]);
    assert_eq!(server["name"], "GET traced");
    assert_eq!(server["traceState"], "vendor=1");
    let attr = |s: &serde_json::Value, k: &str| s["attributes"][k].clone();
    assert_eq!(attr(server, "http.request.method"), "GET");
    assert_eq!(attr(server, "http.route"), "traced");
    assert_eq!(attr(server, "url.path"), "/traced");
    assert_eq!(attr(server, "url.scheme"), "http");
    assert_eq!(attr(server, "http.response.status_code"), 200);
    assert_eq!(attr(server, "client.address"), "127.0.0.1");
    // the Host header the client sent
    assert_eq!(attr(server, "server.address"), "localhost");
    assert_eq!(attr(server, "server.port"), i64::from(gw.port));
    assert_eq!(attr(server, "user_agent.original"), "trace-test/1");
    assert_eq!(attr(server, "network.protocol.version"), "1.1");
    assert_eq!(attr(client, "http.response.status_code"), 200);
    assert_eq!(attr(client, "server.port"), i64::from(backend.port));
    assert_eq!(server["status"], 0);
    assert_eq!(server["resource"]["service.name"], "edge");
    assert_eq!(server["resource"]["deployment.environment"], "test");
    assert_eq!(server["scope"], "flex-gateway");
    assert_eq!(server["headers"]["x-collector-token"], "a-token");
    let (s0, s1) = (
        server["start"].as_u64().unwrap(),
        server["end"].as_u64().unwrap(),
    );
    let (c0, c1) = (
        client["start"].as_u64().unwrap(),
        client["end"].as_u64().unwrap(),
    );
    assert!(
        s0 <= c0 && c0 <= c1 && c1 <= s1,
        "client span within the server span"
    );
    assert_eq!(of(&fresh).len(), 2);
    assert!(
        of(unsampled).is_empty(),
        "an unsampled trace is not exported"
    );
    // the policy that answered, a failed upstream
    let named = |name: &str| -> Vec<&serde_json::Value> {
        spans.iter().filter(|s| s["name"] == name).collect()
    };
    let denied = named("GET denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(attr(denied[0], "flexgw.policy"), "api-key");
    assert_eq!(attr(denied[0], "http.response.status_code"), 401);
    let denied_trace = of(denied[0]["traceId"].as_str().unwrap());
    assert!(
        denied_trace.iter().all(|s| s["kind"] != "SPAN_KIND_CLIENT"),
        "no upstream call: {denied_trace:?}"
    );
    // policySpans: the policy's own span, under the SERVER span, within it
    let policy: Vec<_> = denied_trace
        .iter()
        .filter(|s| s["kind"] == "SPAN_KIND_INTERNAL")
        .collect();
    assert_eq!(policy.len(), 1, "{denied_trace:?}");
    assert_eq!(policy[0]["name"], "policy api-key");
    assert_eq!(policy[0]["parentSpanId"], denied[0]["spanId"]);
    assert_eq!(attr(policy[0], "flexgw.policy"), "api-key");
    assert_eq!(attr(policy[0], "flexgw.policy.answered"), true);
    assert!(
        denied[0]["start"].as_u64() <= policy[0]["start"].as_u64()
            && policy[0]["end"].as_u64() <= denied[0]["end"].as_u64()
    );
    // a route without policies has none
    assert!(first.iter().all(|s| s["kind"] != "SPAN_KIND_INTERNAL"));
    let down = named("GET down");
    assert_eq!(down[0]["status"], 2, "a 5xx is an error");
    let down_client = of(down[0]["traceId"].as_str().unwrap())
        .into_iter()
        .find(|s| s["kind"] == "SPAN_KIND_CLIENT")
        .cloned()
        .expect("the failed attempt's span");
    assert_eq!(attr(&down_client, "error.type"), "connect_error");
    // a retry: two CLIENT spans in one trace, the first failed
    let retried = named("GET retried");
    assert_eq!(retried.len(), 4);
    let twice: Vec<Vec<&serde_json::Value>> = retried
        .iter()
        .map(|s| {
            of(s["traceId"].as_str().unwrap())
                .into_iter()
                .filter(|c| c["kind"] == "SPAN_KIND_CLIENT")
                .collect::<Vec<_>>()
        })
        .filter(|clients| clients.len() == 2)
        .collect();
    assert!(
        !twice.is_empty(),
        "round robin sends some first to the dead target"
    );
    for clients in twice {
        assert_eq!(attr(clients[0], "error.type"), "connect_error");
        assert_eq!(attr(clients[1], "http.response.status_code"), 200);
        assert_ne!(clients[0]["spanId"], clients[1]["spanId"]);
    }
    // the access log names the trace
    let log =
        std::fs::read_to_string(gw.dir.join("stdout.log")).unwrap_or_default() + &gw.log_text();
    assert!(log.contains(&format!("\"traceId\":\"{trace}\"")), "{log}");
    // counted once the exporter has the collector's answer, which may come
    // after the receiver has shown the spans
    wait_until(Duration::from_secs(10), "exported spans counted", || {
        gw.metric("flexgw_tracing_spans_total{result=\"exported\"}") >= 16.0
    });

    // the collector is gone: requests are unaffected, the loss is counted
    receiver.stop();
    for _ in 0..20 {
        assert_eq!(gw.connect().get("/traced").status, 200);
    }
    wait_until(Duration::from_secs(15), "dropped spans counted", || {
        gw.metric("flexgw_tracing_spans_total{result=\"dropped_export_failed\"}") >= 40.0
    });
}

/// `sampling.random: 10` traces about a tenth of 2,000 requests (inside
/// the binomial's 99.99 % interval, 148 to 252: a 99 % one would fail one
/// run in a hundred), and `x-client-trace-id` with `sampling.client: 100`
/// traces every request that sends it.
#[test]
fn sampling_follows_the_configured_percentages() {
    let receiver = Receiver::start();
    let backend = Backend::echo();
    let gw = Gateway::start(&format!(
        r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata: {{name: sampled}}
spec:
  server:
    admin: {{address: "127.0.0.1:{{admin}}"}}
    tracing:
      endpoint: "http://127.0.0.1:{rport}/v1/traces"
      sampling: {{random: 10, client: 100}}
      scheduledDelay: 100ms
  listeners:
    - {{name: http, port: {{port}}}}
  routes:
    - id: sampled
      path: /sampled
      upstream: {{url: "{live}"}}
    - id: forced
      path: /forced
      upstream: {{url: "{live}"}}
"#,
        rport = receiver.0.port,
        live = backend.url(),
    ));
    gw.wait_ready();
    let mut c = gw.connect();
    for _ in 0..2000 {
        assert_eq!(c.get("/sampled").status, 200);
    }
    for i in 0..50 {
        let id = format!("client-{i}");
        assert_eq!(
            c.request("GET", "/forced", &[("x-client-trace-id", &id)], b"")
                .status,
            200
        );
    }
    let count = |name: &str| {
        receiver
            .spans()
            .iter()
            .filter(|s| s["name"] == name && s["kind"] == "SPAN_KIND_SERVER")
            .count()
    };
    // every span handed over has been exported (or counted as dropped)
    wait_until(
        Duration::from_secs(15),
        "the sampled spans exported",
        || {
            let exported = gw.metric("flexgw_tracing_spans_total{result=\"exported\"}");
            exported > 0.0
                && exported as usize == 2 * (count("GET sampled") + count("GET forced"))
                && count("GET forced") == 50
        },
    );
    assert_eq!(
        gw.metric("flexgw_tracing_spans_total{result=\"dropped_queue_full\"}"),
        0.0
    );
    let sampled = count("GET sampled");
    assert!(
        (148..=252).contains(&sampled),
        "{sampled} of 2000 sampled at 10 %"
    );
}

/// Flex's own tracing files run unchanged: a `Configuration` with an
/// OpenTelemetry provider at `h2://` (OTLP/gRPC, to a receiver running
/// grpcio's server), `sampling` and `labels` beside `tracing` as Flex's
/// example writes them, and a `tracing-flex` policy on one API with its
/// own sampling, span name and a label that replaces the global one.
/// With `random: 0`, only `x-client-trace-id` requests of the other API
/// are traced. With the receiver gone, requests still succeed and the
/// failed exports are counted.
#[test]
fn flex_tracing_exports_over_grpc_with_labels_and_per_api_sampling() {
    let mut receiver = Receiver::start_mode("grpc");
    let backend = Backend::echo();
    let config = format!(
        r#"apiVersion: gateway.mulesoft.com/v1beta1
kind: Configuration
metadata:
  name: tracing
  namespace: test-ns
spec:
  tracing:
    provider:
      type: opentelemetry
      properties:
        address: h2://127.0.0.1:{rport}
        serviceType: grpc
        serviceName: my-flex-name
        timeout: 2s
        httpHeaders: {{x-collector-token: a-token}}
        resourceAttributes:
          any-key: any-value
  sampling:
    client: 100
    random: 0
    overall: 100
  labels:
    - name: c-env-tag
      type: environment
      keyName: FLEX_NAME
      defaultValue: DEFAULT_VAL
    - name: c-header-tag
      type: requestHeader
      keyName: :method
      defaultValue: DEFAULT_METHOD
    - name: c-tenant
      type: requestHeader
      keyName: x-tenant
      defaultValue: no-tenant
    - name: c-literal-tag
      type: literal
      defaultValue: the-tag
---
apiVersion: gateway.mulesoft.com/v1beta1
kind: Configuration
metadata:
  name: probe
spec:
  probe: {{enabled: true, port: {{admin}}}}
"#,
        rport = receiver.0.port
    );
    let tracing_flex = r#"    - policyRef: {name: tracing-flex}
      config:
        sampling: {client: 100, random: 100, overall: 100}
        spanName: orders-api
        labels:
          - {name: c-literal-tag, type: literal, defaultValue: overridden}
"#;
    let apis = flex_api("quiet", "{port}", &backend.url(), "")
        + "---\n"
        + &flex_api("orders", "{port2}", &backend.url(), tracing_flex);
    let gw = Gateway::start_files(
        &[("tracing.yaml", config), ("apis.yaml", apis)],
        &[("FLEX_NAME", "edge-7")],
    );
    gw.wait_ready();
    let shown = gw.admin("/config").text();
    assert!(shown.contains(r#""protocol":"grpc""#), "{shown}");
    assert!(
        !shown.contains("a-token"),
        "a collector header is shown: {shown}"
    );
    let flags_seen = |backend: &Backend| {
        let seen = backend.seen.lock().unwrap().last().cloned().unwrap();
        traceparent_parts(seen.header("traceparent").expect("traceparent upstream"))
    };
    // random 0: not traced, but propagated
    let mut quiet = gw.connect();
    let mut unsampled = Vec::new();
    for _ in 0..10 {
        assert_eq!(quiet.get("/api/x").status, 200);
        let (trace, _, flags) = flags_seen(&backend);
        assert_eq!(flags, "00");
        unsampled.push(trace);
    }
    // x-client-trace-id: traced at client 100
    let r = quiet.request(
        "GET",
        "/api/forced",
        &[("x-client-trace-id", "abc-1"), ("x-tenant", "acme")],
        b"",
    );
    assert_eq!(r.status, 200);
    let (forced, _, flags) = flags_seen(&backend);
    assert_eq!(flags, "01");
    // the API with tracing-flex: random 100
    let mut orders = Client::connect(gw.port2);
    let mut traced = Vec::new();
    for _ in 0..3 {
        assert_eq!(orders.get("/api/o").status, 200);
        let (trace, _, flags) = flags_seen(&backend);
        assert_eq!(flags, "01");
        traced.push(trace);
    }

    let server_spans = |spans: &[serde_json::Value]| -> Vec<serde_json::Value> {
        spans
            .iter()
            .filter(|s| s["kind"] == "SPAN_KIND_SERVER")
            .cloned()
            .collect()
    };
    let mut spans = Vec::new();
    wait_until(Duration::from_secs(15), "the spans at the receiver", || {
        spans = receiver.spans();
        server_spans(&spans).len() >= 4
    });
    assert!(spans.iter().all(|s| s.get("error").is_none()), "{spans:?}");
    let servers = server_spans(&spans);
    // the unsampled requests came first: a FIFO queue would have sent them before
    for s in &servers {
        let id = s["traceId"].as_str().unwrap();
        assert!(
            !unsampled.iter().any(|u| u == id),
            "exported unsampled: {s}"
        );
    }
    assert_eq!(servers.len(), 4, "{servers:?}");
    let by_trace = |id: &str| {
        servers
            .iter()
            .find(|s| s["traceId"] == id)
            .unwrap_or_else(|| panic!("no server span for {id}: {servers:?}"))
            .clone()
    };
    let f = by_trace(&forced);
    assert!(f["name"].as_str().unwrap().starts_with("GET "), "{f}");
    let a = &f["attributes"];
    assert_eq!(a["c-env-tag"], "edge-7", "{f}");
    assert_eq!(a["c-header-tag"], "GET", "{f}");
    assert_eq!(a["c-tenant"], "acme", "{f}");
    assert_eq!(a["c-literal-tag"], "the-tag", "{f}");
    assert_eq!(f["resource"]["service.name"], "my-flex-name");
    assert_eq!(f["resource"]["any-key"], "any-value");
    assert_eq!(f["headers"]["x-collector-token"], "a-token", "{f}");
    // gRPC metadata (the receiver is grpcio's server: nothing else reaches it)
    assert!(
        f["headers"]["user-agent"]
            .as_str()
            .is_some_and(|c| c.starts_with("flex-gateway/")),
        "{f}"
    );
    for t in &traced {
        let o = by_trace(t);
        assert_eq!(o["name"], "orders-api", "{o}");
        let a = &o["attributes"];
        assert_eq!(a["c-literal-tag"], "overridden", "{o}");
        assert_eq!(a["c-tenant"], "no-tenant", "{o}");
        assert_eq!(a["c-env-tag"], "edge-7", "{o}");
        assert_eq!(a["http.response.status_code"], 200, "{o}");
    }
    // every traced request's CLIENT span is there too, the server span its parent
    for t in traced.iter().chain([&forced]) {
        let server = by_trace(t);
        assert!(
            spans.iter().any(|s| s["kind"] == "SPAN_KIND_CLIENT"
                && s["traceId"] == *t
                && s["parentSpanId"] == server["spanId"]),
            "no CLIENT span under {server}"
        );
    }

    // the collector goes away: requests are unaffected, failures counted
    receiver.stop();
    let failed = r#"flexgw_tracing_spans_total{result="dropped_export_failed"}"#;
    for _ in 0..5 {
        assert_eq!(orders.get("/api/o").status, 200);
    }
    wait_until(Duration::from_secs(15), "failed exports counted", || {
        gw.metric(failed) >= 10.0
    });
}
