//! Operations helpers: logging set-up, the JSON access log, request ids, time.

pub mod access_log;
pub mod admin;
pub mod heap; // the allocator that counts allocations
pub mod init; // PID 1 in a container: reap orphans
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod plan; // `flex-gateway plan`: what a config change does
pub mod probe; // `flex-gateway probe` (container health checks)
pub mod request_id;
pub mod status; // `flex-gateway status`: a running gateway on a terminal
pub mod time;
pub mod upgrade;
pub mod upstreams; // active health checks and DNS refresh

/// An error with its causes, `outer: inner: root` (a refused connection
/// or a timeout under reqwest's "error sending request").
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The host's name (`None` when it cannot be read or is empty).
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}
