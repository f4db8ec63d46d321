//! Builds the Pingora `Server` from the config: server settings, and one
//! proxy service per listener.

use crate::config::Config;
use crate::proxy::{Gateway, ListenerRuntime};
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use std::sync::Arc;

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
        ..ServerConf::default()
    }
}

/// A bootstrapped server with every listener added, ready for `run_forever`.
pub fn build(config: &Config, flags: ProcessFlags) -> Server {
    let opt = Opt {
        upgrade: flags.upgrade,
        daemon: flags.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(config, flags));
    server.bootstrap();
    for listener in &config.listeners {
        let runtime = Arc::new(ListenerRuntime::new(listener, config.server.access_log));
        let mut service = http_proxy_service_with_name(
            &server.configuration,
            Gateway::new(runtime),
            &format!("listener {} ({})", listener.name, listener.addr),
        );
        service.add_tcp(&listener.addr.to_string());
        log::info!(
            "listener {} on http://{} with {} route(s)",
            listener.name,
            listener.addr,
            listener.routes.len()
        );
        server.add_service(service);
    }
    server
}
