//! Duties of PID 1, when the gateway is a container's first process: a
//! process that outlives its parent in the container (something run with
//! `podman exec` that forks, say) is re-parented to PID 1, and only PID 1
//! can reap it. The gateway itself starts no child while it serves, so a
//! thread reaps every child that ends; elsewhere this does nothing.

use std::time::Duration;

/// Start the reaper if this process is PID 1.
pub fn reap_orphans_if_pid1() {
    if std::process::id() != 1 {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("reaper".into())
        .spawn(|| loop {
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`, a local it owns.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid <= 0 {
                // no child at all (ECHILD): look again later
                std::thread::sleep(Duration::from_secs(1));
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the PID 1 reaper: {e}");
    }
}
