//! Builds the Pingora `Server` from the config: server settings, one proxy
//! service per listener, the admin listener, and the lifecycle task.

use crate::config::Config;
use crate::connection::Guarded;
use crate::ops::admin::AdminApp;
use crate::ops::lifecycle::Lifecycle;
use crate::proxy::Gateway;
use crate::runtime::Runtime;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::proxy::http_proxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::path::Path;

/// Pingora's own process flags, passed through our CLI.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessFlags {
    /// Take the listening sockets over from a running instance (`-u`).
    pub upgrade: bool,
    /// Run in the background (`-d`).
    pub daemon: bool,
}

pub fn server_conf(config: &Config, flags: ProcessFlags) -> ServerConf {
    let s = &config.server;
    ServerConf {
        threads: s.threads,
        pid_file: s.pid_file.display().to_string(),
        upgrade_sock: s.upgrade_socket.display().to_string(),
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_timeout.as_secs()),
        error_log: s.error_log.as_ref().map(|p| p.display().to_string()),
        daemon: flags.daemon,
        work_stealing: s.work_stealing,
        upstream_keepalive_pool_size: s.upstream_keepalive_pool,
        ..ServerConf::default()
    }
}

/// On a fresh start, try to bind every listener (and the admin listener)
/// before anything else, so that a port held by another process, a port
/// this user may not bind, or an address that is not on this host ends the
/// start with a clear message instead of a process that reports ready while
/// Pingora retries the bind in the background. The probe sockets are closed
/// at once; Pingora binds for real right after. (An upgraded process
/// inherits its sockets from the old one and skips this.)
pub fn check_listeners(config: &Config) -> Result<(), String> {
    let addrs = config
        .listeners
        .iter()
        .map(|l| (format!("listener {}", l.name), l.addr))
        .chain(
            config
                .server
                .admin
                .map(|a| ("admin listener".to_string(), a)),
        );
    for (what, addr) in addrs {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            let why = match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "address already in use (another process listens there)".to_string()
                }
                std::io::ErrorKind::PermissionDenied => {
                    "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)".to_string()
                }
                std::io::ErrorKind::AddrNotAvailable => {
                    "address not available (not an address of this host)".to_string()
                }
                _ => e.to_string(),
            };
            return Err(format!("cannot listen on {addr} ({what}): {why}"));
        }
    }
    Ok(())
}

/// A bootstrapped server with every service added, ready for `run_forever`.
pub fn build(config: Config, config_path: &Path, flags: ProcessFlags) -> Server {
    let opt = Opt {
        upgrade: flags.upgrade,
        daemon: flags.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config, flags));
    server.bootstrap();

    let listeners: Vec<_> = config
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.addr, l.routes.len()))
        .collect();
    let admin = config.server.admin;
    let runtime = Runtime::new(config, config_path);
    let mut must_accept = Vec::new();
    for (name, addr, routes) in listeners {
        let proxy = http_proxy(&server.configuration, Gateway::new(runtime.clone(), addr));
        let mut service = Service::new(
            format!("listener {name} ({addr})"),
            Guarded::new(proxy, runtime.clone(), addr),
        );
        // no L4 read buffer: Pingora reads request heads and bodies into
        // buffers of its own, and the default 64 KB one would stay allocated
        // for every idle keep-alive connection
        service.add_listener(
            ListenerConfig::tcp(addr.to_string())
                .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE)),
        );
        log::info!("listener {name} on http://{addr} with {routes} route(s)");
        server.add_service(service);
        must_accept.push(addr);
    }
    if let Some(addr) = admin {
        let mut service = Service::new(format!("admin ({addr})"), AdminApp::new(runtime.clone()));
        service.add_tcp(&addr.to_string());
        log::info!("admin on http://{addr} (/ready /live /metrics /config)");
        server.add_service(service);
        must_accept.push(addr);
    }
    let lifecycle = Lifecycle::new(runtime, server.watch_execution_phase(), must_accept);
    server.add_service(background_service("lifecycle", lifecycle));
    server
}
