//! `flex-gateway upgrade`: the zero-downtime binary upgrade that
//! `systemctl reload flex-gateway` runs.
//!
//! 1. Validate the config; if invalid, stop: the running process is untouched.
//! 2. Find the running process from the pid file.
//! 3. Start the new binary with `run --upgrade`; it binds the upgrade socket
//!    and waits there for the listening sockets.
//! 4. Only once it waits there (so it started, and its config loaded): send
//!    SIGQUIT to the old process, which hands over its sockets, keeps
//!    accepting for Pingora's 5 s overlap, then drains in-flight requests.
//! 5. Wait until the new process says it is ready (it writes its pid to the
//!    pid file and tells systemd `MAINPID=`).
//!
//! A new binary that cannot start fails at step 3: the old process never got
//! SIGQUIT and keeps serving, and the command exits non-zero.

use crate::config;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Upgrade {
    pub config: Vec<PathBuf>,
    /// The binary to start; default: this executable.
    pub binary: Option<PathBuf>,
    /// How long the new process may take to become ready.
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct Report {
    pub old_pid: i32,
    pub new_pid: u32,
    pub took: Duration,
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

fn exited(child: &mut Child) -> Option<String> {
    match child.try_wait() {
        Ok(Some(status)) => Some(status.to_string()),
        Ok(None) => None,
        Err(e) => Some(e.to_string()),
    }
}

impl Upgrade {
    pub fn run(&self) -> Result<Report, String> {
        let started = Instant::now();
        let cfg = config::load(&self.config).map_err(|errors| {
            format!(
                "upgrade refused, the running gateway is untouched: {} problem(s) in the new config\n{errors}",
                errors.0.len()
            )
        })?;
        let server = &cfg.server;
        let old_pid = read_pid(&server.pid_file)
            .filter(|p| alive(*p))
            .ok_or_else(|| {
                format!(
                    "no running flex-gateway found through the pid file {} (start it instead)",
                    server.pid_file.display()
                )
            })?;
        if old_pid as u32 == std::process::id() {
            return Err("the pid file names this very process".into());
        }
        // a stale socket would look like the new process waiting there
        let sock = &server.upgrade_socket;
        match std::fs::remove_file(sock) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!(
                    "cannot remove the stale upgrade socket {}: {e}",
                    sock.display()
                ))
            }
        }

        let binary = match &self.binary {
            Some(b) => b.clone(),
            None => {
                std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?
            }
        };
        let mut child = Command::new(&binary)
            .arg("run")
            .arg("--upgrade")
            .args(
                self.config
                    .iter()
                    .flat_map(|c| [std::ffi::OsStr::new("-c"), c.as_os_str()]),
            )
            .stdin(Stdio::null())
            // its own process group: it must outlive this command
            .process_group(0)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e}; the old process keeps serving",
                    binary.display()
                )
            })?;
        let new_pid = child.id();

        // step 3: the new process is waiting for the sockets
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sock.exists() {
            if let Some(status) = exited(&mut child) {
                return Err(format!(
                    "the new process (pid {new_pid}) exited ({status}) before taking over; the old process (pid {old_pid}) keeps serving"
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the new process (pid {new_pid}) did not open the upgrade socket {} within 5 s; stopped it, the old process (pid {old_pid}) keeps serving",
                    sock.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }

        // step 4: hand over
        // SAFETY: sending a signal to a pid we just checked; no memory is involved.
        if unsafe { libc::kill(old_pid, libc::SIGQUIT) } != 0 {
            let e = std::io::Error::last_os_error();
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "cannot signal the old process {old_pid}: {e}; it keeps serving"
            ));
        }

        // step 5: ready
        let deadline = Instant::now() + self.timeout;
        loop {
            if read_pid(&server.pid_file) == Some(new_pid as i32) {
                return Ok(Report {
                    old_pid,
                    new_pid,
                    took: started.elapsed(),
                });
            }
            if let Some(status) = exited(&mut child) {
                return Err(format!(
                    "the new process (pid {new_pid}) exited ({status}) after the handover began; the old process (pid {old_pid}) is draining: restart the service"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the new process (pid {new_pid}) took the sockets but did not report ready within {:?}; check its log",
                    self.timeout
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
