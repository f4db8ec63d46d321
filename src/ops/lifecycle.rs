//! Process lifecycle, run as a Pingora background service (so it lives in
//! the daemon child too): readiness, pid file, systemd notification, SIGHUP
//! reloads and the config file watcher.
//!
//! - When Pingora reports `Running` and every listener accepts connections,
//!   the phase becomes `Ready` (admin `/ready` = 200), the pid file is
//!   written, and systemd is told `READY=1` and `MAINPID=<this pid>` (so
//!   after a binary upgrade systemd follows the new process).
//! - On SIGTERM or on handing sockets to an upgraded process: `Draining`.
//! - SIGHUP, or a change under the config path (polled, debounced): reload.
//! - SIGUSR1: the log outputs' files reopen (after a log rotation).

use crate::runtime::{Phase, Runtime};
use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

pub struct Lifecycle {
    runtime: Arc<Runtime>,
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    pid_file: PathBuf,
    /// Addresses that must accept before the process calls itself ready.
    listeners: Vec<SocketAddr>,
    watch: bool,
}

impl Lifecycle {
    pub fn new(
        runtime: Arc<Runtime>,
        phases: broadcast::Receiver<ExecutionPhase>,
        listeners: Vec<SocketAddr>,
    ) -> Lifecycle {
        let snapshot = runtime.snapshot();
        let server = &snapshot.config.server;
        Lifecycle {
            pid_file: server.pid_file.clone(),
            watch: server.watch_config,
            runtime: runtime.clone(),
            phases: Mutex::new(Some(phases)),
            listeners,
        }
    }
}

/// Send a state string to systemd's notify socket, if there is one.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("sd_notify: {e}");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))
    };
    if let Err(e) = result {
        log::warn!("sd_notify({state:?}): {e}");
    }
}

/// Write the pid file atomically (temp file + rename).
pub fn write_pid_file(path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(&tmp, path)
}

async fn all_accepting(addrs: &[SocketAddr]) -> bool {
    for a in addrs {
        let probe = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(super::probe::reachable(*a)),
        );
        if !matches!(probe.await, Ok(Ok(_))) {
            return false;
        }
    }
    true
}

fn reload(runtime: &Runtime, why: &str) {
    match runtime.reload() {
        Ok(s) => {
            log::info!("config reloaded ({why}): {} route binding(s)", s.routes);
            for a in &s.ports_needing_upgrade {
                log::warn!("listener {a} is new: it is served after a binary upgrade (`systemctl reload flex-gateway`), not by an in-process reload");
            }
            for a in &s.ports_dropped {
                log::warn!("listener {a} is no longer configured: it answers 404 until the next binary upgrade");
            }
            if s.server_settings_changed {
                log::warn!("spec.server changed: process settings apply after a binary upgrade (`systemctl reload flex-gateway`)");
            }
        }
        Err(errors) => {
            log::error!(
                "config reload ({why}) rejected, the previous config keeps serving; {} problem(s):\n{errors}",
                errors.0.len()
            );
        }
    }
}

/// A cheap fingerprint of the files a reload would read (names and
/// contents): the config files, and the files the current config's policies
/// referenced (secrets, key lists).
fn fingerprint(paths: &[PathBuf], referenced: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // a missing or empty directory hashes as nothing: the reload then reports it
    let files = crate::config::load::list_files(paths).unwrap_or_default();
    for f in files.iter().chain(referenced) {
        f.hash(&mut h);
        if let Ok(bytes) = std::fs::read(f) {
            bytes.hash(&mut h);
        }
    }
    h.finish()
}

/// Poll the config path; reload once it changed and then stayed unchanged
/// for one more poll (editors write files in several steps).
async fn watch_files(runtime: Arc<Runtime>, mut shutdown: ShutdownWatch) {
    const POLL: Duration = Duration::from_millis(500);
    let path = runtime.config_paths.clone();
    let referenced = || runtime.snapshot().config.referenced_files.clone();
    let mut applied = fingerprint(&path, &referenced());
    let mut pending: Option<u64> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
        let (p, r) = (path.clone(), referenced());
        let now = tokio::task::spawn_blocking(move || fingerprint(&p, &r))
            .await
            .unwrap_or(applied);
        match pending {
            Some(seen) if seen == now => {
                pending = None;
                applied = now;
                let rt = runtime.clone();
                let _ = tokio::task::spawn_blocking(move || reload(&rt, "file change")).await;
            }
            _ if now != applied => pending = Some(now),
            _ => pending = None,
        }
    }
}

/// The stream of a signal; `None` (said in the log) when it cannot be had.
fn listen(
    kind: tokio::signal::unix::SignalKind,
    name: &str,
) -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind)
        .map_err(|e| log::error!("cannot handle {name}: {e}"))
        .ok()
}

async fn on_sighup(runtime: Arc<Runtime>) {
    let Some(mut hup) = listen(tokio::signal::unix::SignalKind::hangup(), "SIGHUP") else {
        return;
    };
    while hup.recv().await.is_some() {
        let rt = runtime.clone();
        let _ = tokio::task::spawn_blocking(move || reload(&rt, "SIGHUP")).await;
    }
}

/// SIGUSR1 (logrotate's postrotate): file outputs reopen their files.
async fn on_sigusr1() {
    let Some(mut usr1) = listen(tokio::signal::unix::SignalKind::user_defined1(), "SIGUSR1") else {
        return;
    };
    while usr1.recv().await.is_some() {
        crate::ops::logging::reopen();
        log::info!("SIGUSR1: log files reopen");
    }
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, shutdown: ShutdownWatch) {
        tokio::spawn(on_sighup(self.runtime.clone()));
        tokio::spawn(on_sigusr1());
        if self.watch {
            tokio::spawn(watch_files(self.runtime.clone(), shutdown.clone()));
        }
        let Some(mut phases) = self.phases.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        loop {
            let phase = match phases.recv().await {
                Ok(p) => p,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            match phase {
                ExecutionPhase::Running => {
                    while !all_accepting(&self.listeners).await {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    self.runtime.set_phase(Phase::Ready);
                    if let Err(e) = write_pid_file(&self.pid_file) {
                        log::warn!("cannot write pid file {}: {e}", self.pid_file.display());
                    }
                    sd_notify(&format!(
                        "READY=1\nMAINPID={}\nSTATUS=serving",
                        std::process::id()
                    ));
                    log::info!("ready: pid {} serving", std::process::id());
                }
                ExecutionPhase::GracefulUpgradeTransferringFds => {
                    self.runtime.set_phase(Phase::Draining);
                    log::info!("handing listening sockets to the upgraded process, draining");
                }
                ExecutionPhase::GracefulTerminate => {
                    self.runtime.set_phase(Phase::Draining);
                    sd_notify("STOPPING=1");
                    log::info!("SIGTERM: draining");
                }
                ExecutionPhase::ShutdownStarted => self.runtime.set_phase(Phase::Draining),
                _ => {}
            }
        }
    }
}
