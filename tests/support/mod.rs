//! Test support: start the real `flex-gateway` binary and real backends on
//! loopback, on free ports; a small blocking HTTP/1.1 client that keeps its
//! connection alive. Readiness is polled; processes are stopped on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const GATEWAY: &str = env!("CARGO_BIN_EXE_flex-gateway");

/// `flex-gateway validate -c path`: whether it passed, its stdout, its stderr.
pub fn validate(path: &Path) -> (bool, String, String) {
    let out = Command::new(GATEWAY)
        .args(["validate", "-c"])
        .arg(path)
        .output()
        .expect("run validate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
pub const CATALOG: &str = env!("CARGO_BIN_EXE_catalog-backend");

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A fresh private directory under the system temp dir, removed (with
/// what it holds: keys, passwords) when the guard is dropped, also when the
/// test fails.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TempDir {
    /// The path, for an owner that removes it itself.
    fn keep(self) -> PathBuf {
        let dir = self.0.clone();
        std::mem::forget(self);
        dir
    }
}

pub fn temp_dir(tag: &str) -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "flexgw-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    TempDir(dir)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A free port none of `taken` is: two calls to [`free_port`] can hand
/// out the same port (each listener is gone before the next bind), and a
/// gateway given one port for two listeners refuses its config.
pub fn free_port_besides(taken: &[u16]) -> u16 {
    loop {
        let p = free_port();
        if !taken.contains(&p) {
            return p;
        }
    }
}

/// Poll until `f` is true, or panic after `timeout` with `what`.
/// The virtualenv's bin directory with the tests' Python tools
/// (`.ci/pytools` makes it when missing).
pub fn pytools() -> PathBuf {
    let out = Command::new(repo_path(".ci/pytools"))
        .output()
        .expect("run .ci/pytools");
    assert!(
        out.status.success(),
        ".ci/pytools failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().into()
}

/// A service of the tests written in Python (`tests/<script> PORT_FILE
/// RECORD_FILE MODE`, in the tools' virtualenv): it binds a free port,
/// writes it to PORT_FILE and appends one JSON line per thing it received
/// to RECORD_FILE. Killed on drop.
pub struct PyService {
    child: Child,
    pub port: u16,
    record: PathBuf,
    _dir: TempDir,
}

impl PyService {
    pub fn start(script: &str, mode: &str) -> PyService {
        let bin = pytools();
        let dir = temp_dir("pysvc");
        let (port_file, record) = (dir.join("port"), dir.join("record.jsonl"));
        let child = Command::new(bin.join("python"))
            .arg(repo_path(&format!("tests/{script}")))
            .args([&port_file, &record])
            .arg(mode)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("service.log")).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("start tests/{script}: {e}"));
        wait_until(Duration::from_secs(20), script, || port_file.exists());
        let port = std::fs::read_to_string(&port_file)
            .unwrap()
            .parse()
            .unwrap();
        PyService {
            child,
            port,
            record,
            _dir: dir,
        }
    }

    /// What it received so far, one JSON value per line.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyService {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` itself listens on TCP `port` (a port open to a
/// connect may belong to another test's process that took the same free
/// port): its socket inodes against /proc/net/tcp{,6}'s listening sockets.
pub fn listens(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: Vec<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|t| {
            t.lines().skip(1).any(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                // local_address, state 0A (LISTEN), inode
                f.len() > 9
                    && f[1].ends_with(&local)
                    && f[3] == "0A"
                    && inodes.iter().any(|i| i == f[9])
            })
        })
    })
}

pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Send SIGINT (Pingora stops at once) and reap.
fn stop(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Rate-limit windows are aligned to the Unix clock (every gateway process
/// agrees on them): a test that needs `needed` of one `period` window
/// waits for the next window when the current one ends sooner.
pub fn fresh_window(period: Duration, needed: Duration) {
    let now = now_ms();
    let period_ms = period.as_millis() as u64;
    let left = period_ms - now % period_ms;
    if left < needed.as_millis() as u64 {
        std::thread::sleep(Duration::from_millis(left + 50));
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// Which window of `period` (counted from the Unix epoch, as the rate
/// limiter counts them) it is now.
pub fn window_of(period: Duration) -> u64 {
    now_ms() / period.as_millis() as u64
}

/// A running gateway process.
pub struct Gateway {
    pub child: Child,
    pub port: u16,
    /// A second listener port (`{port2}` in a template), if it used one.
    pub port2: u16,
    /// The admin listener's port (`{admin}` in the template).
    pub admin_port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Gateway {
    /// Start with a config template: `{port}` and `{admin}` are replaced by
    /// free ports, `{dir}` by the test's temp dir. Retries with another port if the
    /// chosen one was taken in the meantime.
    pub fn start(template: &str) -> Gateway {
        Self::start_with_env(template, &[])
    }

    pub fn start_with_env(template: &str, env: &[(&str, &str)]) -> Gateway {
        Self::launch(template, env, false)
    }

    /// Like [`Gateway::start`], but `-c` names the directory (conf.d mode);
    /// the config is its `gateway.yaml`, beside the (ignored) log files.
    pub fn start_conf_dir(template: &str) -> Gateway {
        Self::launch(template, &[], true)
    }

    fn launch(template: &str, env: &[(&str, &str)], conf_dir: bool) -> Gateway {
        Self::launch_files(&[("gateway.yaml", template.to_string())], env, conf_dir)
    }

    /// A conf.d of several files (relative paths, subdirectories allowed),
    /// each a template as for [`Gateway::start`] (`{port2}`: a second free
    /// port, in [`Gateway::port2`]); `-c` names the directory.
    pub fn start_files(files: &[(&str, String)], env: &[(&str, &str)]) -> Gateway {
        Self::launch_files(files, env, true)
    }

    fn launch_files(files: &[(&str, String)], env: &[(&str, &str)], conf_dir: bool) -> Gateway {
        let template: String = files.iter().map(|(_, t)| t.as_str()).collect();
        let template = template.as_str();
        for _attempt in 0..3 {
            let dir = temp_dir("gw").keep();
            let port = free_port();
            let admin_port = free_port_besides(&[port]);
            let port2 = free_port_besides(&[port, admin_port]);
            let mut file = dir.join("gateway.yaml");
            for (rel, text) in files {
                let config = text
                    .replace("{port}", &port.to_string())
                    .replace("{port2}", &port2.to_string())
                    .replace("{admin}", &admin_port.to_string())
                    .replace("{dir}", &dir.display().to_string());
                file = dir.join(rel);
                std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
                std::fs::write(&file, config).expect("write config");
            }
            let log = dir.join("gateway.log");
            let mut cmd = Command::new(GATEWAY);
            cmd.args(["run", "-c"])
                .arg(if conf_dir { &dir } else { &file })
                .stdin(Stdio::null())
                .stdout(Stdio::from(
                    std::fs::File::create(dir.join("stdout.log")).expect("log"),
                ))
                .stderr(Stdio::from(std::fs::File::create(&log).expect("log")));
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("spawn flex-gateway");
            let deadline = Instant::now() + Duration::from_secs(15);
            // with an admin listener, both accept before the test goes on
            let has_admin = template.contains("{admin}");
            loop {
                // the child's own sockets: a parallel test's process may
                // hold a port that free_port handed to both
                let pid = child.id();
                let second = !template.contains("{port2}") || listens(pid, port2);
                let admin = !has_admin || listens(pid, admin_port);
                if listens(pid, port) && second && admin && port_open(port) {
                    return Gateway {
                        child,
                        port,
                        port2,
                        admin_port,
                        dir,
                        log,
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.to_ascii_lowercase().contains("address already in use") {
                        break; // port race: try another one
                    }
                    panic!("flex-gateway exited with {status} before listening:\n{text}");
                }
                // another process took one of the ports between free_port()
                // and the bind: Pingora retries it forever ("... is in use,
                // will try again"), so try other ports instead of waiting
                if std::fs::read_to_string(&log)
                    .is_ok_and(|t| t.contains(" is in use, will try again"))
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "flex-gateway did not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            stop(&mut child);
            let _ = std::fs::remove_dir_all(&dir);
        }
        panic!("could not start flex-gateway on a free port");
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.port)
    }

    /// The value of the first metrics line starting with `line_start`
    /// (0 when there is none).
    pub fn metric(&self, line_start: &str) -> f64 {
        self.admin("/metrics")
            .text()
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// `GET` on the admin listener, on a fresh connection.
    pub fn admin(&self, path: &str) -> Response {
        Client::connect(self.admin_port).get(path)
    }

    /// Poll the admin `/ready` probe until it answers 200.
    pub fn wait_ready(&self) {
        wait_until(Duration::from_secs(15), "admin /ready", || {
            TcpStream::connect(("127.0.0.1", self.admin_port)).is_ok()
                && self.admin("/ready").status == 200
        });
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory of the gateway process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("VmHWM in /proc status")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The demo catalog backend binary on a free port.
pub struct Catalog {
    child: Child,
    pub port: u16,
}

impl Catalog {
    pub fn start() -> Catalog {
        for _ in 0..3 {
            if let Some(c) = Catalog::try_start_on(free_port()) {
                return c;
            }
        }
        panic!("could not start catalog-backend");
    }

    /// On `port` (the walkthrough's own 3000, say).
    pub fn start_on(port: u16) -> Catalog {
        assert!(
            !port_open(port),
            "port {port} is taken: stop whatever listens there (the walkthrough needs it)"
        );
        Catalog::try_start_on(port)
            .unwrap_or_else(|| panic!("could not start catalog-backend on port {port}"))
    }

    fn try_start_on(port: u16) -> Option<Catalog> {
        {
            let mut child = Command::new(CATALOG)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn catalog-backend");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if listens(child.id(), port) && port_open(port) {
                    return Some(Catalog { child, port });
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                assert!(Instant::now() < deadline, "catalog-backend did not listen");
                std::thread::sleep(Duration::from_millis(20));
            }
            stop(&mut child);
        }
        None
    }
}

/// The user's walkthrough (shared/seed/README.md) against a gateway on
/// `port` serving it in front of the demo catalog: the README's requests
/// and what each must answer, over one client connection.
pub fn walkthrough(port: u16) {
    let mut c = Client::connect(port);

    // 1. the three products
    let r = c.get("/api/products");
    assert_eq!(r.status, 200);
    let products = r.json();
    let names: Vec<&str> = products
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["API Gateway", "Service Mesh", "Event Bus"]);
    assert_eq!(products[2]["status"], "beta");

    // 2. product 2
    let r = c.get("/api/products/2");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "Service Mesh");
    assert_eq!(r.json()["category"], "networking");

    // 3. health, rate limited
    let r = c.get("/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "UP");
    assert!(r.json()["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));

    // 4. headers pass through
    let r = c.request(
        "GET",
        "/api/products",
        &[("X-API-Key", "demo-key"), ("Accept", "application/json")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_array().map(Vec::len), Some(3));

    // 5. the backend's 404 passes through unchanged
    let r = c.get("/api/products/999");
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), serde_json::json!({"error": "Product not found"}));

    // /status goes to the backend too (its own 404)
    let r = c.get("/status");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "Not found");
    assert!(
        r.json().get("requestId").is_none(),
        "the backend's 404, not the gateway's"
    );

    // POST on a GET route: the gateway's 405 with Allow
    let r = c.request(
        "POST",
        "/api/products",
        &[("content-type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["status"], 405);

    // a path no route matches: the gateway's own 404 JSON
    let r = c.get("/no/such/path");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["status"], 404);
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(body["requestId"].as_str(), r.header("x-request-id"));

    // every one of these went over the one client connection
    let r = c.get("/api/products/1");
    assert_eq!(r.status, 200);
}

impl Drop for Catalog {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

// ─── HTTP client ────────────────────────────────────────────────────────

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Body length, also when the body was counted, not kept.
    pub body_len: u64,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        Client::connect_to(([127, 0, 0, 1], port).into())
    }

    /// Connect to `[::1]:port` (the gateway must listen on `::`).
    pub fn connect_v6(port: u16) -> Client {
        Client::connect_to((std::net::Ipv6Addr::LOCALHOST, port).into())
    }

    pub fn connect_to(addr: std::net::SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
        stream.set_nodelay(true).ok();
        Client {
            reader: BufReader::with_capacity(64 * 1024, stream),
        }
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Like [`Client::request`], but I/O errors are returned, not panics.
    pub fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        self.try_send_head(method, path, headers, body.len() as u64)?;
        self.reader.get_mut().write_all(body)?;
        self.try_read_response(method == "HEAD", true)
    }

    pub fn send_head(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body_len: u64) {
        self.try_send_head(method, path, headers, body_len)
            .expect("send head");
    }

    fn try_send_head(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body_len: u64,
    ) -> std::io::Result<()> {
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str("host: localhost\r\n");
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if body_len > 0 || !matches!(method, "GET" | "HEAD") {
            head.push_str(&format!("content-length: {body_len}\r\n"));
        }
        head.push_str("\r\n");
        self.reader.get_mut().write_all(head.as_bytes())
    }

    /// Stream `len` bytes of body in 64 KiB chunks without holding them.
    pub fn send_body_stream(&mut self, len: u64) {
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            self.reader
                .get_mut()
                .write_all(&chunk[..n])
                .expect("send body chunk");
            left -= n as u64;
        }
    }

    /// Read one response; `keep` false counts the body instead of storing it.
    pub fn read_response(&mut self, head_request: bool, keep: bool) -> Response {
        self.try_read_response(head_request, keep)
            .expect("read response")
    }

    pub fn try_read_response(
        &mut self,
        head_request: bool,
        keep: bool,
    ) -> std::io::Result<Response> {
        let (status, headers) = read_head(&mut self.reader)?;
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
            body_len: 0,
        };
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(resp);
        }
        let (body, len) = read_body(&mut self.reader, &resp.headers, keep)?;
        resp.body = body;
        resp.body_len = len;
        Ok(resp)
    }

    /// Did the server close the connection before sending anything? (The
    /// one case where a client retries a request on a reused keep-alive
    /// connection, RFC 9112 section 9.3.1.)
    pub fn is_stale_close(e: &std::io::Error) -> bool {
        use std::io::ErrorKind::*;
        matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted)
            || (e.kind() == UnexpectedEof && e.to_string() == "connection closed")
    }

    pub fn close(self) {
        let _ = self.reader.get_ref().shutdown(Shutdown::Both);
    }

    /// Bytes as they are (a partial body, anything malformed).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send");
    }

    /// The socket, for a test that goes on byte by byte (nothing may be
    /// left unread in the client's buffer).
    pub fn into_stream(self) -> TcpStream {
        assert!(self.reader.buffer().is_empty(), "unread response bytes");
        self.reader.into_inner()
    }
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

type Headers = Vec<(String, String)>;

/// Read a message head: the first line's status or method+target, and headers.
fn read_head_lines<R: BufRead>(r: &mut R) -> std::io::Result<Option<(String, Headers)>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "eof in head",
            ));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some((first.trim_end().to_string(), headers)))
}

fn read_head<R: BufRead>(r: &mut R) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let (first, headers) = read_head_lines(r)?.ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed")
    })?;
    let status = first
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, first.clone()))?;
    Ok((status, headers))
}

/// Read a body framed by content-length, chunked encoding, or close.
fn read_body<R: BufRead>(
    r: &mut R,
    headers: &[(String, String)],
    keep: bool,
) -> std::io::Result<(Vec<u8>, u64)> {
    let mut body = Vec::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut take =
        |r: &mut R, mut n: u64, body: &mut Vec<u8>, total: &mut u64| -> std::io::Result<()> {
            while n > 0 {
                let want = n.min(buf.len() as u64) as usize;
                let got = r.read(&mut buf[..want])?;
                if got == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "eof in body",
                    ));
                }
                // a body of unknown length: its first 64 KiB are kept
                if keep || body.len() + got <= 64 * 1024 {
                    body.extend_from_slice(&buf[..got]);
                }
                *total += got as u64;
                n -= got as u64;
            }
            Ok(())
        };
    if header_value(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("chunk size {line:?}"),
                    )
                })?;
            if size == 0 {
                // trailers until the empty line
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            take(r, size, &mut body, &mut total)?;
            let mut crlf = String::new();
            r.read_line(&mut crlf)?;
        }
    } else if let Some(len) = header_value(headers, "content-length") {
        let len: u64 = len
            .parse()
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "content-length"))?;
        take(r, len, &mut body, &mut total)?;
    } else {
        loop {
            let got = r.read(&mut buf)?;
            if got == 0 {
                break;
            }
            if keep {
                body.extend_from_slice(&buf[..got]);
            }
            total += got as u64;
        }
    }
    Ok((body, total))
}

// ─── Test certificates ─────────────────────────────────────────────────

/// A test certificate authority issuing server certificates (PEM files).
pub struct Ca {
    pub cert: openssl::x509::X509,
    pub key: openssl::pkey::PKey<openssl::pkey::Private>,
}

pub fn key() -> openssl::pkey::PKey<openssl::pkey::Private> {
    let ec = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    openssl::pkey::PKey::from_ec_key(ec).unwrap()
}

pub fn name(cn: &str) -> openssl::x509::X509Name {
    let mut b = openssl::x509::X509NameBuilder::new().unwrap();
    b.append_entry_by_text("CN", cn).unwrap();
    b.build()
}

pub fn serial() -> openssl::asn1::Asn1Integer {
    let mut bn = openssl::bn::BigNum::new().unwrap();
    bn.rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .unwrap();
    bn.to_asn1_integer().unwrap()
}

impl Ca {
    pub fn new() -> Ca {
        let key = key();
        let mut b = openssl::x509::X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial()).unwrap();
        b.set_subject_name(&name("flex-gateway test CA")).unwrap();
        b.set_issuer_name(&name("flex-gateway test CA")).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        b.append_extension(
            openssl::x509::extension::BasicConstraints::new()
                .critical()
                .ca()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        Ca {
            cert: b.build(),
            key,
        }
    }

    /// A server certificate for `names`, valid from `from` to `until`
    /// (Unix seconds); its PEM files under `dir` as `<file>.pem` / `.key`.
    pub fn issue(
        &self,
        dir: &Path,
        file: &str,
        names: &[&str],
        until: Option<i64>,
    ) -> (PathBuf, PathBuf) {
        let key = key();
        let mut b = openssl::x509::X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial()).unwrap();
        b.set_subject_name(&name(names[0])).unwrap();
        b.set_issuer_name(self.cert.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let until = until.unwrap_or(now + 30 * 86400);
        b.set_not_before(&openssl::asn1::Asn1Time::from_unix(until.min(now) - 86400 * 2).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::from_unix(until).unwrap())
            .unwrap();
        let mut san = openssl::x509::extension::SubjectAlternativeName::new();
        for n in names {
            san.dns(n);
        }
        let san = san
            .build(&b.x509v3_context(Some(&self.cert), None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&self.key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        let cert = b.build();
        let (c, k) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        let mut chain = cert.to_pem().unwrap();
        chain.extend(self.cert.to_pem().unwrap());
        std::fs::write(&c, chain).unwrap();
        std::fs::write(&k, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        (c, k)
    }
}

// ─── Raw sockets ─────────────────────────────────────────────────────────

/// Send raw bytes; the status code of the answer and whether the gateway
/// closed the connection after it.
pub fn raw(port: u16, bytes: &[u8]) -> (u16, bool, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(bytes).expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    // read until the peer closes (or the read times out: kept alive)
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                // a complete response that the gateway keeps alive: stop
                let text = String::from_utf8_lossy(&got);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len
                        && !text[..end]
                            .to_ascii_lowercase()
                            .contains("connection: close")
                    {
                        // give the gateway a moment to close if it means to
                        s.set_read_timeout(Some(Duration::from_millis(300))).ok();
                    }
                }
            }
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, closed, text)
}

// ─── In-process backend ─────────────────────────────────────────────────

/// A request as the backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// The body, when it was at most 64 KiB (larger ones are only counted).
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }
}

/// What the backend answers.
pub enum Reply {
    /// Status and JSON body.
    Json(u16, String),
    /// Answer after a delay.
    Delayed(Duration, Box<Reply>),
    /// A body of `n` bytes, streamed in chunks (never held whole).
    Bytes(u64),
    /// Status, extra response headers and a JSON body.
    JsonWith(u16, Vec<(String, String)>, String),
    /// An HTML page (200).
    Html(String),
}

pub type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A real HTTP/1.1 server on loopback, thread per connection, that records
/// what it receives and counts accepted connections. [`Backend::stop`]
/// closes it (connections refused, open ones cut); [`Backend::restart`]
/// brings it back on the same port.
pub struct Backend {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    handler: Handler,
    running: Mutex<Option<Running>>,
}

struct Running {
    stop: Arc<std::sync::atomic::AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Backend {
    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = listener.local_addr().expect("addr").port();
        let b = Backend {
            port,
            connections: Arc::new(AtomicUsize::new(0)),
            seen: Arc::new(Mutex::new(Vec::new())),
            handler: Arc::new(handler),
            running: Mutex::new(None),
        };
        b.serve_on(listener);
        b
    }

    fn serve_on(&self, listener: TcpListener) {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (c, s, h) = (
            self.connections.clone(),
            self.seen.clone(),
            self.handler.clone(),
        );
        let (st, ss) = (stop.clone(), streams.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return; // the listener closes here
                }
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    ss.lock().expect("lock").push(clone);
                }
                let (s, h) = (s.clone(), h.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &s, &h);
                });
            }
        });
        *self.running.lock().expect("lock") = Some(Running {
            stop,
            streams,
            thread,
        });
    }

    /// Stop listening and cut every open connection.
    pub fn stop(&self) {
        let Some(r) = self.running.lock().expect("lock").take() else {
            return;
        };
        r.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake accept
        let _ = r.thread.join();
        for s in r.streams.lock().expect("lock").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Listen again on the same port.
    pub fn restart(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.port),
            }
        };
        self.serve_on(listener);
    }

    /// Answers every request with `{"ok":true,"path":...}`.
    pub fn echo() -> Backend {
        Backend::start(|seen| {
            Reply::Json(
                200,
                serde_json::json!({"ok": true, "path": seen.target}).to_string(),
            )
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("backend saw a request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<Seen>>, handler: &Handler) -> std::io::Result<()> {
    stream.set_nodelay(true).ok();
    let mut reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut writer = stream;
    loop {
        let Some((first, headers)) = read_head_lines(&mut reader)? else {
            return Ok(());
        };
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        // a request without framing headers has no body
        let framed = header_value(&headers, "content-length").is_some()
            || header_value(&headers, "transfer-encoding").is_some();
        let small = header_value(&headers, "content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n <= 64 * 1024);
        let (body, body_len) = if framed {
            read_body(&mut reader, &headers, small)?
        } else {
            (Vec::new(), 0)
        };
        let request = Seen {
            method,
            target,
            headers,
            body_len,
            body,
        };
        seen.lock().expect("lock").push(request.clone());
        let mut reply = handler(&request);
        while let Reply::Delayed(d, inner) = reply {
            std::thread::sleep(d);
            reply = *inner;
        }
        match reply {
            Reply::Json(status, body) => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                writer.write_all(head.as_bytes())?;
                writer.write_all(body.as_bytes())?;
            }
            Reply::Html(body) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                writer.write_all(head.as_bytes())?;
                writer.write_all(body.as_bytes())?;
            }
            Reply::JsonWith(status, headers, body) => {
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                writer.write_all(head.as_bytes())?;
                writer.write_all(body.as_bytes())?;
            }
            Reply::Bytes(n) => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {n}\r\n\r\n");
                writer.write_all(head.as_bytes())?;
                let chunk = vec![b'y'; 64 * 1024];
                let mut left = n;
                while left > 0 {
                    let k = left.min(chunk.len() as u64) as usize;
                    writer.write_all(&chunk[..k])?;
                    left -= k as u64;
                }
            }
            Reply::Delayed(..) => unreachable!("unwrapped above"),
        }
        writer.flush()?;
    }
}

/// A minimal gateway config: one listener on `{port}`, the given routes YAML
/// (indented under `routes:`), test-friendly server settings.
pub fn config_with_routes(routes: &str) -> String {
    config_with("", routes)
}

/// A config with one catch-all route (`/*`) to `url`.
pub fn catch_all_config(url: &str) -> String {
    config_with_routes(&format!(
        "    - id: all\n      path: \"/*\"\n      upstream: {{url: \"{url}\"}}"
    ))
}

/// `config` (from [`config_with`]) with more `spec.server` settings, one
/// YAML line each (e.g. `maxBodySize: 4KB`).
pub fn with_server_settings(config: &str, settings: &[&str]) -> String {
    let lines: String = settings.iter().map(|l| format!("    {l}\n")).collect();
    config.replace("  server:\n", &format!("  server:\n{lines}"))
}

/// Like [`config_with_routes`], with document-level policies (YAML list
/// items indented under `policies:`, or empty for none).
pub fn config_with(policies: &str, routes: &str) -> String {
    let policies = if policies.is_empty() {
        String::new()
    } else {
        format!("  policies:\n{policies}\n")
    };
    format!(
        r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata:
  name: test
spec:
  listeners:
    - name: http
      port: {{port}}
      host: "127.0.0.1"
{policies}  routes:
{routes}
  server:
    threads: 2
    pidFile: "{{dir}}/gw.pid"
    upgradeSocket: "{{dir}}/upgrade.sock"
    gracePeriod: 1s
    shutdownTimeout: 1s
    admin:
      address: "127.0.0.1:{{admin}}"
"#
    )
}

/// A Flex `ApiInstance` called `name` listening on `port` (a template:
/// `{port}`, `{port2}`), proxying `/api(/.*)` to `backend`, with
/// `policies`: the YAML of its `spec.policies` items, indented four
/// spaces (or nothing).
pub fn flex_api(name: &str, port: &str, backend: &str, policies: &str) -> String {
    let policies = if policies.is_empty() {
        String::new()
    } else {
        format!("  policies:\n{policies}")
    };
    format!(
        "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: ApiInstance\nmetadata: {{name: {name}}}\nspec:\n  address: http://127.0.0.1:{port}\n  services:\n    backend:\n      address: {backend}\n      routes:\n        - rules: [{{path: \"/api(/.*)\"}}]\n{policies}"
    )
}

/// A gateway serving one Flex `ApiInstance` ([`flex_api`]) in front of
/// `backend` with `policies`, beside the test server settings; ready.
pub fn serve_flex_api(name: &str, backend: &str, policies: &str) -> Gateway {
    let api = flex_api(name, "{port}", backend, policies);
    let gw = Gateway::start_files(
        &[("api.yaml", api), ("server.yaml", SERVER_ONLY.to_string())],
        &[],
    );
    gw.wait_ready();
    gw
}

/// A Flex `ApiInstance` file for `validate` (nothing is served): these
/// policy bindings (YAML list items under `policies:`) on a fixed address.
pub fn flex_api_file(dir: &Path, policies: &str) -> PathBuf {
    let file = dir.join("api.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: ApiInstance\nmetadata: {{name: shop}}\nspec:\n  address: http://127.0.0.1:18080\n  services:\n    backend: {{address: \"http://127.0.0.1:3000\"}}\n  policies:\n{policies}"
        ),
    )
    .unwrap();
    file
}

/// Server settings for a test gateway as a document of their own: a
/// `kind: Gateway` holding only `spec.server`, beside Flex resources
/// (`{dir}` and `{admin}` filled by [`Gateway::start_files`]).
pub const SERVER_ONLY: &str = r#"apiVersion: gateway.mulesoft.com/v1alpha1
kind: Gateway
metadata:
  name: test-server
spec:
  server:
    threads: 2
    pidFile: "{dir}/gw.pid"
    upgradeSocket: "{dir}/upgrade.sock"
    gracePeriod: 1s
    shutdownTimeout: 1s
    admin:
      address: "127.0.0.1:{admin}"
"#;

// ─── Redis ──────────────────────────────────────────────────────────────

/// A real `redis-server` on a free loopback port (no persistence), killed
/// on drop. `.ci/deps redis-server` installs it.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// `requirepass`, when set.
    password: Option<String>,
    /// More arguments (`--replicaof host port`).
    extra: Vec<String>,
    /// Its working directory (a replica writes the master's data there).
    dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with_password(None)
    }

    pub fn start_with_password(password: Option<&str>) -> RedisServer {
        Self::launch(free_port(), password, Vec::new())
    }

    /// A server that speaks only TLS (`--tls-port`), with this certificate
    /// chain and key; clients are not asked for certificates.
    pub fn start_tls(cert: &Path, key: &Path) -> RedisServer {
        let port = free_port();
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let extra = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-auth-clients",
            "no",
        ];
        Self::launch(port, None, extra.map(str::to_string).to_vec())
    }

    /// A replica of the server on `master_port`.
    pub fn start_replica_of(master_port: u16) -> RedisServer {
        let extra = ["--replicaof", "127.0.0.1", &master_port.to_string()];
        Self::launch(free_port(), None, extra.map(str::to_string).to_vec())
    }

    /// Started on `port` with these more arguments, in a directory of its
    /// own.
    fn launch(port: u16, password: Option<&str>, extra: Vec<String>) -> RedisServer {
        let mut r = RedisServer {
            port,
            child: None,
            password: password.map(str::to_string),
            extra,
            dir: temp_dir("redis"),
        };
        r.restart();
        r
    }

    /// Start it (again) on its port, and wait until it accepts.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut args = vec![
            "--port".to_string(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            self.dir.display().to_string(),
            // a replica is sent the data at once, not after 5 s
            "--repl-diskless-sync-delay".into(),
            "0".into(),
        ];
        if let Some(p) = &self.password {
            args.extend(["--requirepass".into(), p.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (install it with .ci/deps redis-server)");
        let pid = child.id();
        self.child = Some(child);
        wait_until(Duration::from_secs(10), "redis-server accepts", || {
            listens(pid, self.port) && port_open(self.port)
        });
    }

    /// Kill it (SIGKILL: as a crash looks).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis-cli -p PORT ARGS...`'s output.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(&[], self.port, args)
    }

    /// `INFO replication` of this server.
    pub fn replication(&self) -> String {
        self.cli(&["info", "replication"])
    }
}

/// `redis-cli [TLS...] -p PORT ARGS...`'s output.
pub fn redis_cli(tls: &[String], port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(tls)
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// From a master's `INFO replication`: its replication offset (how much it
/// has sent its replicas) and the offset each replica has acknowledged
/// (0 until it is online). After a full sync a master streams writes only
/// once the replica's first acknowledgement comes, up to a second later:
/// a master killed before its replicas acknowledged an offset loses what
/// it wrote up to there.
pub fn offsets(info: &str) -> (u64, Vec<u64>) {
    let master = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let replicas = info
        .lines()
        .filter(|l| l.starts_with("slave") && l.contains(":ip="))
        .map(|l| {
            let online = l.contains("state=online");
            l.split(',')
                .find_map(|kv| kv.strip_prefix("offset="))
                .and_then(|o| o.trim().parse().ok())
                .filter(|_| online)
                .unwrap_or(0)
        })
        .collect();
    (master, replicas)
}

/// Wait until every replica has acknowledged what the master had sent
/// when this was called (`info` reads the master's `INFO replication`).
pub fn wait_replicated(what: &str, info: impl Fn() -> String) {
    let (target, _) = offsets(&info());
    wait_until(Duration::from_secs(10), what, || {
        let (_, replicas) = offsets(&info());
        !replicas.is_empty() && replicas.iter().all(|o| *o >= target)
    });
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real Redis Sentinel (`redis-server --sentinel`) watching the master
/// on `master_port` as `mymaster` (quorum 1, down after 500 ms), killed on
/// drop.
pub struct RedisSentinel {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl RedisSentinel {
    /// (Another process may take the port between `free_port` and the
    /// Sentinel's bind: then it exits, and it is started on another.)
    pub fn start(master_port: u16) -> RedisSentinel {
        for _ in 0..3 {
            if let Some(s) = Self::try_start(master_port) {
                return s;
            }
        }
        panic!("the Sentinel did not start on three ports");
    }

    fn try_start(master_port: u16) -> Option<RedisSentinel> {
        let dir = temp_dir("sentinel");
        let port = free_port();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 500\nsentinel failover-timeout mymaster 2000\n",
                dir.display()
            ),
        )
        .expect("sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let pid = child.id();
        let mut child = child;
        let mut exited = false;
        wait_until(Duration::from_secs(10), "the Sentinel accepts", || {
            exited = matches!(child.try_wait(), Ok(Some(_)));
            exited || (listens(pid, port) && port_open(port))
        });
        (!exited).then_some(RedisSentinel {
            port,
            child,
            _dir: dir,
        })
    }

    /// What the Sentinel says about `mymaster` (`redis-cli`'s lines).
    pub fn ask(&self, args: &[&str]) -> String {
        redis_cli(&[], self.port, &[&["sentinel"], args].concat())
    }

    /// The master's port, as the Sentinel names it.
    pub fn master_port(&self) -> Option<u16> {
        self.ask(&["get-master-addr-by-name", "mymaster"])
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Redis Cluster: `masters` × (1 + `replicas`) `redis-server`s in
/// cluster mode (node timeout 1 s, so a dead master's replica takes over
/// within seconds), joined with `redis-cli --cluster create`; killed on
/// drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// The CA file when the nodes speak TLS.
    ca: Option<PathBuf>,
    _dir: TempDir,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        Self::start_with(masters, replicas, None)
    }

    /// A cluster whose nodes speak only TLS (clients, the cluster bus,
    /// replication) with this CA, certificate and key, and announce
    /// themselves as `localhost` (the name on the certificate).
    pub fn start_tls(masters: usize, replicas: usize, tls: [&Path; 3]) -> RedisCluster {
        Self::start_with(masters, replicas, Some(tls))
    }

    fn start_with(masters: usize, replicas: usize, tls: Option<[&Path; 3]>) -> RedisCluster {
        let dir = temp_dir("redis-cluster");
        let mut taken = Vec::new();
        let tls_args = |port: u16| -> Vec<String> {
            let Some([ca, cert, key]) = tls else {
                return Vec::new();
            };
            let port = port.to_string();
            let files = [ca, cert, key].map(|p| p.display().to_string());
            [
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cluster",
                "yes",
                "--tls-replication",
                "yes",
                "--tls-ca-cert-file",
                &files[0],
                "--tls-cert-file",
                &files[1],
                "--tls-key-file",
                &files[2],
                "--tls-auth-clients",
                "no",
                "--cluster-announce-hostname",
                "localhost",
                "--cluster-preferred-endpoint-type",
                "hostname",
            ]
            .map(str::to_string)
            .to_vec()
        };
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                let port = free_port_besides(&taken);
                let bus = free_port_besides(&[&taken[..], &[port]].concat());
                taken.extend([port, bus]);
                let mut extra: Vec<String> = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-config-file",
                    &dir.join(format!("nodes-{port}.conf")).display().to_string(),
                    "--cluster-node-timeout",
                    "1000",
                ]
                .map(str::to_string)
                .to_vec();
                extra.extend(tls_args(port));
                RedisServer::launch(port, None, extra)
            })
            .collect();
        let ca = tls.map(|[ca, ..]| ca.to_path_buf());
        let out = Command::new("redis-cli")
            .args(Self::tls_cli(&ca))
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(RedisServer::address))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster {
            nodes,
            ca,
            _dir: dir,
        };
        wait_until(
            Duration::from_secs(30),
            "every node sees the cluster ok",
            || {
                cluster.nodes.iter().all(|n| {
                    cluster
                        .cli(n.port, &["cluster", "info"])
                        .contains("cluster_state:ok")
                })
            },
        );
        wait_until(Duration::from_secs(30), "every replica in sync", || {
            cluster.masters().len() == masters
                && cluster.nodes.iter().all(|n| {
                    let role = cluster.cli(n.port, &["role"]);
                    role.starts_with("master") || role.contains("\nconnected\n")
                })
        });
        cluster
    }

    /// `redis-cli -p PORT ARGS...`'s output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli(&Self::tls_cli(&self.ca), port, args)
    }

    /// `redis-cli`'s TLS arguments for a cluster with this CA.
    fn tls_cli(ca: &Option<PathBuf>) -> Vec<String> {
        match ca {
            Some(ca) => vec!["--tls".into(), "--cacert".into(), ca.display().to_string()],
            None => Vec::new(),
        }
    }

    /// The ports of the masters serving slots, as a live node sees them.
    pub fn masters(&self) -> Vec<u16> {
        let Some(live) = self.nodes.iter().find(|n| n.child.is_some()) else {
            return Vec::new();
        };
        self.cli(live.port, &["cluster", "nodes"])
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail") && l.split(' ').count() > 8)
            .filter_map(|l| l.split(' ').nth(1)?.split(['@', ':']).nth(1)?.parse().ok())
            .collect()
    }

    /// Wait until the replicas of the master at `port` have acknowledged
    /// what it had sent ([`wait_replicated`]).
    pub fn wait_replicated(&self, port: u16) {
        wait_replicated("the replicas acknowledge the writes", || {
            self.cli(port, &["info", "replication"])
        });
    }

    /// The keys on the node at `port` that match `pattern`.
    pub fn keys(&self, port: u16, pattern: &str) -> Vec<String> {
        self.cli(port, &["--scan", "--pattern", pattern])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The node at `port`.
    pub fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of the cluster")
    }

    /// `[\"host:port\", ...]` of every node, for a config.
    pub fn addresses(&self) -> String {
        let all: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.address()))
            .collect();
        format!("[{}]", all.join(", "))
    }
}

// ─── LDAP ────────────────────────────────────────────────────────────────

/// A real `slapd` (OpenLDAP) on free loopback ports, with the directory
/// `ldif` loaded before it starts (`dc=example,dc=org`, rootdn
/// `cn=admin,dc=example,dc=org` / `admin-secret`), killed on drop.
/// With `tls` (certificate and key PEM files) it also listens for
/// `ldaps://` and offers StartTLS. `.ci/deps slapd` installs it.
pub struct Slapd {
    pub port: u16,
    pub tls_port: u16,
    dir: TempDir,
    child: Option<Child>,
}

pub const LDAP_ADMIN: &str = "cn=admin,dc=example,dc=org";
pub const LDAP_ADMIN_PASSWORD: &str = "admin-secret";

impl Slapd {
    pub fn start(ldif: &str, tls: Option<&(PathBuf, PathBuf)>) -> Slapd {
        let dir = temp_dir("slapd");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("slapd data dir");
        let tls_lines = tls.map_or(String::new(), |(cert, key)| {
            format!(
                "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                cert.display(),
                key.display()
            )
        });
        let conf = format!(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\ninclude /etc/ldap/schema/nis.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {d}/slapd.pid\n{tls_lines}\
             database mdb\nmaxsize 10485760\nsuffix \"dc=example,dc=org\"\n\
             rootdn \"{LDAP_ADMIN}\"\nrootpw {LDAP_ADMIN_PASSWORD}\ndirectory {data}\n",
            d = dir.display(),
            data = data.display()
        );
        std::fs::write(dir.join("slapd.conf"), conf).expect("slapd.conf");
        let base = "dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n";
        std::fs::write(dir.join("data.ldif"), format!("{base}{ldif}")).expect("ldif");
        let out = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-l")
            .arg(dir.join("data.ldif"))
            .output()
            .expect("slapadd (install slapd with .ci/deps slapd)");
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = Slapd {
            port: free_port(),
            tls_port: if tls.is_some() { free_port() } else { 0 },
            dir,
            child: None,
        };
        s.restart();
        s
    }

    /// Start it (again) on its ports, and wait until it accepts.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if self.tls_port != 0 {
            urls.push_str(&format!(" ldaps://127.0.0.1:{}/", self.tls_port));
        }
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(self.dir.join("slapd.conf"))
            .args(["-h", &urls, "-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd (install it with .ci/deps slapd)");
        let pid = child.id();
        self.child = Some(child);
        wait_until(Duration::from_secs(10), "slapd accepts", || {
            listens(pid, self.port) && port_open(self.port)
        });
    }

    /// Kill it (SIGKILL: as a crash looks).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}

// ─── WebAssembly test filters ───────────────────────────────────────────

/// The test filters (`tests/wasm-filters`, written against the proxy-wasm
/// Rust SDK), built once for `wasm32-wasip1` into `target/wasm-filters`.
/// `None`, with a loud message, when that target is not installed.
pub fn test_filters() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_wasm("tests/wasm-filters", "wasm-filters", "flexgw_test_filters"))
        .clone()
}

/// The example custom policy (`examples/custom-policy`), built as a user
/// would build it.
pub fn example_policy() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| build_wasm("examples/custom-policy", "wasm-example", "tenant_guard"))
        .clone()
}

/// `cargo build --release --target wasm32-wasip1` of the crate in `dir`,
/// into `target/<target>`; the module `<name>.wasm`.
fn build_wasm(dir: &str, target: &str, name: &str) -> Option<PathBuf> {
    let target_dir = repo_path(&format!("target/{target}"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
        ])
        .arg(repo_path(&format!("{dir}/Cargo.toml")))
        .arg("--target-dir")
        .arg(&target_dir)
        // the outer build's flags are for the host, not for wasm; its
        // lints (.ci/test builds through clippy) are for the gateway
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .output()
        .expect("run cargo for a wasm module");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("wasm32-wasip1")
            && (err.contains("target may not be installed")
                || err.contains("can't find crate for `std`"))
        {
            eprintln!("\n*** SKIPPED: the wasm32-wasip1 target is not installed (rustup target add wasm32-wasip1); the WebAssembly filter tests did not run ***\n");
            return None;
        }
        panic!("building {dir} for wasm32-wasip1 failed:\n{err}");
    }
    Some(target_dir.join(format!("wasm32-wasip1/release/{name}.wasm")))
}

/// Whether the peer has closed: a read returns end-of-file or a reset
/// (bytes the gateway may still send, like a 431, are skipped).
pub fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).ok();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => {
                return Some(start.elapsed())
            }
            Err(_) => return None, // timed out: still open
        }
    }
}
