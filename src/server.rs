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
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

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
        work_stealing: s.work_stealing(),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool,
        ..ServerConf::default()
    }
}

/// Before anything else, try to bind every listener (and the admin
/// listener), so that a port held by another process, a port this user may
/// not bind, or an address that is not on this host ends the start with a
/// clear message instead of a process that reports ready while Pingora
/// retries the bind in the background. The probe sockets are closed at
/// once; Pingora binds for real right after. An upgraded process skips the
/// addresses it `inherits` from the old one (see [`listening_addresses`]);
/// a port new to its config is probed like any other.
pub fn check_listeners(config: &Config, inherits: &HashSet<SocketAddr>) -> Result<(), String> {
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
    for (what, addr) in addrs.filter(|(_, a)| !inherits.contains(a)) {
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

/// The TCP addresses process `pid` listens on: the inodes of its socket
/// descriptors (`/proc/PID/fd`) found in the kernel's LISTEN table
/// (`/proc/net/tcp`, `tcp6`). Empty when it cannot be read.
pub fn listening_addresses(pid: u32) -> HashSet<SocketAddr> {
    let mut inodes = HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut addrs = HashSet::new();
    for table in [
        format!("/proc/{pid}/net/tcp"),
        format!("/proc/{pid}/net/tcp6"),
    ] {
        let Ok(text) = std::fs::read_to_string(&table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... uid timeout inode
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                if let Some(addr) = parse_proc_addr(f[1]) {
                    addrs.insert(addr);
                }
            }
        }
    }
    addrs
}

/// `0100007F:1F91` (IPv4) or 32 hex digits and a port (IPv6): the address
/// as 32-bit words in the host's byte order, as the kernel prints them.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let bytes: Vec<u8> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<Vec<u32>>>()?
        .into_iter()
        .flat_map(u32::to_ne_bytes)
        .collect();
    let ip: std::net::IpAddr = match bytes.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).into(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A bootstrapped server with every service added, ready for `run_forever`.
pub fn build(
    config: Config,
    sources: Vec<crate::config::sources::Source>,
    config_paths: &[PathBuf],
    flags: ProcessFlags,
) -> Server {
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
        .map(|l| {
            (
                l.name.clone(),
                l.addr,
                l.routes.len(),
                l.tls.clone(),
                l.limits.max_concurrent_streams,
                l.h2c,
            )
        })
        .collect();
    let admin = config.server.admin;
    let runtime = Runtime::new(config, sources, config_paths);
    let mut must_accept = Vec::new();
    for (name, addr, routes, tls, streams, h2c) in listeners {
        let mut proxy = http_proxy(&server.configuration, Gateway::new(runtime.clone(), addr));
        // HTTP/2 (HTTPS listeners offering h2): Pingora's default allows one
        // request at a time per connection
        let mut h2 = pingora::protocols::http::v2::server::H2Options::new();
        h2.max_concurrent_streams(streams);
        proxy.h2_options = Some(h2);
        if h2c {
            // cleartext HTTP/2 with prior knowledge (the connection layer
            // hands such connections over once it has seen the preface)
            let mut options = pingora::apps::HttpServerOptions::default();
            options.h2c = true;
            proxy.server_options = Some(options);
        }
        let (acceptor, scheme) = match &tls {
            Some(tls) => match crate::tls::acceptor(runtime.clone(), addr, tls) {
                Ok(acceptor) => (Some(acceptor), "https"),
                Err(e) => {
                    // validated at load; a file changed in between
                    eprintln!("flex-gateway: listener {name}: TLS: {e}");
                    std::process::exit(1);
                }
            },
            None => (None, "http"),
        };
        let mut service = Service::new(
            format!("listener {name} ({addr})"),
            Guarded::new(proxy, runtime.clone(), addr, h2c, acceptor),
        );
        // a TCP listener to Pingora also for HTTPS: the connection layer
        // admits the connection, then runs the handshake under its deadline.
        // No L4 read buffer: Pingora reads request heads and bodies into
        // buffers of its own, and the default 64 KB one would stay allocated
        // for every idle keep-alive connection
        let endpoint = ListenerConfig::tcp(addr.to_string())
            .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE));
        service.add_listener(endpoint);
        log::info!("listener {name} on {scheme}://{addr} with {routes} route(s)");
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
    let checker = crate::ops::upstreams::Checker::new(runtime.clone());
    server.add_service(background_service("upstream checker", checker));
    let lifecycle = Lifecycle::new(runtime, server.watch_execution_phase(), must_accept);
    server.add_service(background_service("lifecycle", lifecycle));
    server
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses() {
        assert_eq!(
            parse_proc_addr("0100007F:1F91"),
            Some("127.0.0.1:8081".parse().unwrap())
        );
        assert_eq!(
            parse_proc_addr("00000000:0050"),
            Some("0.0.0.0:80".parse().unwrap())
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:1F91"),
            Some("[::1]:8081".parse().unwrap())
        );
        assert_eq!(parse_proc_addr("zz:1"), None);
    }

    #[test]
    fn this_process_listening_is_seen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(listening_addresses(std::process::id()).contains(&addr));
    }
}
