//! Builds the Pingora `Server` from the config: server settings, one proxy
//! service per listener, the admin listener, and the lifecycle task.

use crate::config::Config;
use crate::ops::admin::AdminApp;
use crate::ops::lifecycle::Lifecycle;
use crate::proxy::Gateway;
use crate::runtime::Runtime;
use pingora::proxy::http_proxy_service_with_name;
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
        let mut service = http_proxy_service_with_name(
            &server.configuration,
            Gateway::new(runtime.clone(), addr),
            &format!("listener {name} ({addr})"),
        );
        service.add_tcp(&addr.to_string());
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
