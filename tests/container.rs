//! The container image (packaging/container), built from the binary cargo
//! built for these tests and run by a real engine: podman with runc, host
//! networking and cgroupfs (`packaging/container/podman-ci.conf`; the
//! sandbox refuses crun's rlimits and hybrid cgroups), each container with a
//! read-only root filesystem as its non-root user.
//!
//! One test, in steps: the user's walkthrough (`docker run` with the config
//! mounted as one file, on the ports it names: 8081, and the catalog on
//! 3000), Flex's directory mount, a ConfigMap-style symlink swap that
//! reloads, SIGTERM under load, an image started with no config, PID 1
//! reaping an orphan, and the
//! Helm chart (packaging/helm/check-chart: rendered by Helm's own code,
//! validated against the Kubernetes schemas, its Deployment's container run
//! with this image).

use crate::support::*;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .env(
            "CONTAINERS_CONF",
            repo_path("packaging/container/podman-ci.conf"),
        )
        .args(args)
        .output()
        .expect("podman is missing: .ci/deps installs it (apt-get install -y podman runc)")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The image, removed at the end.
struct Image {
    tag: String,
}

impl Image {
    fn build() -> Image {
        let tag = format!("localhost/flexgw-test:{}", std::process::id());
        let out = Command::new(repo_path("packaging/container/build-image"))
            .args(["--binary", GATEWAY, "--tag", &tag])
            .env(
                "CONTAINERS_CONF",
                repo_path("packaging/container/podman-ci.conf"),
            )
            .output()
            .expect("run build-image");
        assert!(out.status.success(), "build-image failed:\n{}", text(&out));
        let image = Image { tag };
        let size = podman(&["image", "inspect", "--format", "{{.Size}}", &image.tag]);
        eprintln!("image {}: {} bytes", image.tag, text(&size).trim());
        image
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "-f", &self.tag]);
    }
}

/// A running container, removed on drop (also when a step fails).
struct Container {
    name: String,
    admin: u16,
}

impl Container {
    /// `podman run -d` with host networking, a read-only root filesystem,
    /// the admin listener on a free loopback port, and `args` (mounts...).
    fn run(image: &Image, step: &str, args: &[&str]) -> Container {
        let name = format!("flexgw-test-{}-{step}", std::process::id());
        let _ = podman(&["rm", "-f", &name]);
        let admin = free_port();
        let admin_env = format!("FLEXGW_ADMIN_ADDRESS=127.0.0.1:{admin}");
        let mut all = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "--read-only",
            "-e",
            &admin_env,
        ];
        all.extend_from_slice(args);
        all.push(&image.tag);
        let out = podman(&all);
        assert!(out.status.success(), "podman run: {}", text(&out));
        Container { name, admin }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if port_open(self.admin) && Client::connect(self.admin).get("/ready").status == 200 {
                return;
            }
            let state = self.inspect("{{.State.Status}}");
            assert!(
                state == "running" && Instant::now() < deadline,
                "container {} not ready ({state}):\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn inspect(&self, format: &str) -> String {
        text(&podman(&["inspect", "--format", format, &self.name]))
            .trim()
            .to_string()
    }

    fn logs(&self) -> String {
        text(&podman(&["logs", &self.name]))
    }

    /// `podman stop` (SIGTERM, SIGKILL after 10 s as docker's default):
    /// the exit code and how long the stop took.
    fn stop(&self) -> (String, Duration) {
        let started = Instant::now();
        let out = podman(&["stop", "-t", "10", &self.name]);
        assert!(out.status.success(), "podman stop: {}", text(&out));
        (self.inspect("{{.State.ExitCode}}"), started.elapsed())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.name]);
    }
}

fn mount(host: &Path, inside: &str) -> String {
    format!("{}:{inside}:ro", host.display())
}

#[test]
fn the_image_serves_the_walkthrough_flex_mounts_reloads_and_drains() {
    for port in [8081, 8083] {
        assert!(
            !port_open(port),
            "port {port} is taken: the walkthrough's gateway needs it"
        );
    }
    let catalog = Catalog::start_on(3000);
    let image = Image::build();
    walkthrough_with_the_config_mounted_as_one_file(&image);
    flex_conf_d_mounted_as_a_directory(&image);
    configmap_symlink_swap_reloads(&image);
    sigterm_under_load_drains_then_exits_0(&image);
    no_config_is_one_line_and_exit_1(&image);
    orphans_are_reaped_by_pid_1(&image);
    helm_chart_renders_validates_and_runs(&image);
    drop(catalog);
}

/// `docker run -p 8081:8081 -v $(pwd)/gateway-config.yaml:/etc/mulesoft/
/// flex-gateway/conf.d/gateway-config.yaml` with the user's file unchanged;
/// `host.docker.internal` is the host (loopback, with host networking).
fn walkthrough_with_the_config_mounted_as_one_file(image: &Image) {
    let seed = repo_path("tests/fixtures/seed-gateway-config.yaml");
    let c = Container::run(
        image,
        "walkthrough",
        &[
            "--add-host",
            "host.docker.internal:127.0.0.1",
            "-v",
            &mount(
                &seed,
                "/etc/mulesoft/flex-gateway/conf.d/gateway-config.yaml",
            ),
        ],
    );
    c.wait_ready();
    walkthrough(8081);
    // the image's HEALTHCHECK (`flex-gateway probe`) passes
    let health = podman(&["healthcheck", "run", &c.name]);
    assert!(health.status.success(), "healthcheck: {}", text(&health));
    // the non-root user, with a read-only root filesystem
    assert_eq!(c.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    let pid = c.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["10001"; 4],
        "{uid}"
    );
    let (code, took) = c.stop();
    assert_eq!(code, "0", "exit code after SIGTERM:\n{}", c.logs());
    assert!(
        took < Duration::from_secs(10),
        "stopped after {took:?}: killed, not drained"
    );
    // the JSON access log on stdout, Pingora's and our logs on stderr
    let logs = c.logs();
    assert!(
        logs.lines()
            .any(|l| l.starts_with('{') && l.contains(r#""path":"/api/products/2""#)),
        "{logs}"
    );
    assert!(logs.contains("ready: pid 1 serving"), "{logs}");
}

/// Flex's docs: `docker run -v "$(pwd)":/usr/local/share/mulesoft/flex-gateway/conf.d`
/// with Flex Local Mode resources (conf/flex: the walkthrough on 8083).
fn flex_conf_d_mounted_as_a_directory(image: &Image) {
    let c = Container::run(
        image,
        "flex",
        &[
            "-v",
            &mount(
                &repo_path("conf/flex"),
                "/usr/local/share/mulesoft/flex-gateway/conf.d",
            ),
        ],
    );
    c.wait_ready();
    let mut client = Client::connect(8083);
    let r = client.get("/api/products");
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_array().map(Vec::len), Some(3));
    let r = client.get("/api/products/999");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "Product not found");
    let r = client.get("/nowhere");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["status"], 404, "the gateway's own 404");
}

/// A kind: Gateway document on `port` routing `prefixes` to `backend`.
fn routes_config(port: u16, backend: &Backend, prefixes: &[&str]) -> String {
    let mut routes = String::new();
    for p in prefixes {
        routes.push_str(&format!(
            "    - id: r{}\n      path: /{p}/*\n      upstream: {{url: \"{}\"}}\n",
            p.trim_start_matches('/'),
            backend.url()
        ));
    }
    format!(
        "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Gateway\nmetadata: {{name: cm}}\nspec:\n  listeners:\n    - {{name: http, port: {port}, protocol: HTTP, host: 127.0.0.1}}\n  routes:\n{routes}"
    )
}

/// Kubernetes updates a mounted ConfigMap by writing a new timestamped
/// directory and swapping the `..data` symlink in one rename; the files the
/// gateway reads are symlinks through `..data`.
fn configmap_symlink_swap_reloads(image: &Image) {
    let dir = temp_dir("configmap");
    let backend = Backend::echo();
    let port = free_port();
    let write_version = |name: &str, config: &str| {
        let v = dir.join(name);
        std::fs::create_dir_all(&v).unwrap();
        std::fs::write(v.join("gateway.yaml"), config).unwrap();
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(name, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap(); // atomic swap
    };
    write_version(
        "..2026_12_02_10_00_00.1",
        &routes_config(port, &backend, &["v1"]),
    );
    std::os::unix::fs::symlink("..data/gateway.yaml", dir.join("gateway.yaml")).unwrap();
    let c = Container::run(
        image,
        "configmap",
        &["-v", &mount(&dir, "/etc/flex-gateway/conf.d")],
    );
    c.wait_ready();
    let pid = c.inspect("{{.State.Pid}}");
    assert_eq!(Client::connect(port).get("/v1/a").status, 200);
    assert_eq!(Client::connect(port).get("/v2/a").status, 404);
    write_version(
        "..2026_12_02_10_05_00.2",
        &routes_config(port, &backend, &["v1", "v2"]),
    );
    std::fs::remove_dir_all(dir.join("..2026_12_02_10_00_00.1")).unwrap();
    wait_until(
        Duration::from_secs(20),
        "the swapped config to apply",
        || Client::connect(port).get("/v2/a").status == 200,
    );
    assert_eq!(Client::connect(port).get("/v1/a").status, 200);
    assert_eq!(
        c.inspect("{{.State.Pid}}"),
        pid,
        "reloaded in place, not restarted"
    );
    assert!(
        c.logs().contains("config reloaded (file change)"),
        "{}",
        c.logs()
    );
    drop(c);
}

/// `podman stop` while clients keep requests in flight: every request the
/// gateway took is answered 200; clients learn of the drain from
/// `Connection: close` (or, on an idle keep-alive connection, its close,
/// which a client retries on a new connection) and stop; the process
/// exits 0 inside the engine's 10 s.
fn sigterm_under_load_drains_then_exits_0(image: &Image) {
    let dir = temp_dir("drain");
    let slow = Backend::start(|_| {
        Reply::Delayed(
            Duration::from_millis(300),
            Box::new(Reply::Json(200, "{}".into())),
        )
    });
    let port = free_port();
    std::fs::write(
        dir.join("gateway.yaml"),
        routes_config(port, &slow, &["slow"]),
    )
    .unwrap();
    let c = Container::run(
        image,
        "drain",
        &["-v", &mount(&dir, "/etc/flex-gateway/conf.d")],
    );
    c.wait_ready();
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let told = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (ok, failed, told, stop) = (ok.clone(), failed.clone(), told.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut client = Client::connect(port);
                let mut fresh = true;
                while !stop.load(Ordering::Relaxed) {
                    match client.try_request("GET", &format!("/slow/{i}"), &[], b"") {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            fresh = false;
                            if r.header("connection") == Some("close") {
                                told.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                        Ok(r) => failed.lock().unwrap().push(format!("status {}", r.status)),
                        Err(e) if !fresh && Client::is_stale_close(&e) => {
                            // an idle keep-alive connection closed by the
                            // drain: retried once on a new connection
                            told.fetch_add(1, Ordering::Relaxed);
                            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                                Ok(_) => {
                                    client = Client::connect(port);
                                    fresh = true;
                                }
                                Err(_) => return, // the listener is gone
                            }
                        }
                        Err(e) => {
                            failed.lock().unwrap().push(format!("client {i}: {e}"));
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    wait_until(Duration::from_secs(10), "load to flow", || {
        ok.load(Ordering::Relaxed) >= 16
    });
    let (code, took) = c.stop();
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().unwrap();
    }
    let failed = failed.lock().unwrap();
    eprintln!(
        "drain: {} answered, {} failed, {} clients told to go, stop took {took:?}",
        ok.load(Ordering::Relaxed),
        failed.len(),
        told.load(Ordering::Relaxed)
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert_eq!(code, "0", "exit code:\n{}", c.logs());
    assert!(
        took < Duration::from_secs(10),
        "stopped after {took:?}: killed, not drained"
    );
    drop(c);
}

/// Started with nothing mounted: one line saying where it looked, exit 1,
/// no restart loop of stack traces.
fn no_config_is_one_line_and_exit_1(image: &Image) {
    let c = Container::run(image, "empty", &[]);
    wait_until(Duration::from_secs(20), "the container to exit", || {
        c.inspect("{{.State.Status}}") == "exited"
    });
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "1");
    let logs = c.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| !l.contains("level=") && !l.trim().is_empty()) // podman's own
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(lines[0].contains("no configuration"), "{logs}");
    assert!(
        lines[0].contains("/etc/mulesoft/flex-gateway/conf.d"),
        "{logs}"
    );
}

/// The Helm chart: `helm lint` and `helm template` by Helm 4's SDK, every
/// manifest against the Kubernetes API schemas, the rendered config files
/// through `flex-gateway validate`, and the rendered Deployment's container
/// run with this image (probes, Service port, metrics, stop).
fn helm_chart_renders_validates_and_runs(image: &Image) {
    let out = Command::new(repo_path("packaging/helm/check-chart"))
        .args(["--binary", GATEWAY, "--image", &image.tag])
        .output()
        .expect("run packaging/helm/check-chart");
    eprintln!("{}", text(&out));
    assert!(out.status.success(), "chart checks failed:\n{}", text(&out));
}

/// A process orphaned inside the container (here a second gateway started
/// with `podman exec ... run -d`: its parent exits at once) is re-parented
/// to PID 1, the gateway; when it dies, PID 1 must reap it, or it stays a
/// zombie in the process table.
fn orphans_are_reaped_by_pid_1(image: &Image) {
    let dir = temp_dir("orphan");
    let backend = Backend::echo();
    std::fs::create_dir_all(dir.join("main")).unwrap();
    std::fs::write(
        dir.join("main/gateway.yaml"),
        routes_config(free_port(), &backend, &["a"]),
    )
    .unwrap();
    let other = routes_config(free_port(), &backend, &["b"]).replace(
        "  routes:\n",
        "  server: {admin: {enabled: false}, pidFile: /tmp/other.pid, upgradeSocket: /tmp/other.sock}\n  routes:\n",
    );
    std::fs::write(dir.join("other.yaml"), other).unwrap();
    let c = Container::run(
        image,
        "orphan",
        &[
            "-v",
            &mount(&dir.join("main"), "/etc/flex-gateway/conf.d"),
            "-v",
            &mount(&dir.join("other.yaml"), "/etc/other/other.yaml"),
        ],
    );
    c.wait_ready();
    let out = podman(&[
        "exec",
        &c.name,
        "/usr/bin/flex-gateway",
        "run",
        "-d",
        "-c",
        "/etc/other/other.yaml",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // its host pid and its parent inside the container
    let mut orphan = None;
    wait_until(Duration::from_secs(10), "the daemon under PID 1", || {
        let top = text(&podman(&["top", &c.name, "hpid", "ppid", "args"]));
        orphan = top
            .lines()
            .find(|l| l.contains("run -d"))
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>());
        orphan.is_some()
    });
    let orphan = orphan.unwrap();
    assert_eq!(orphan[1], "1", "re-parented to PID 1: {orphan:?}");
    let hpid = &orphan[0];
    assert!(Command::new("kill")
        .args(["-KILL", hpid])
        .status()
        .unwrap()
        .success());
    wait_until(
        Duration::from_secs(10),
        "PID 1 to reap the killed orphan",
        || !Path::new(&format!("/proc/{hpid}")).exists(),
    );
}
