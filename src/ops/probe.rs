//! `flex-gateway probe`: ask the admin listener of a running gateway for a
//! probe (`/ready` by default) and exit 0 on a 200. A container's
//! `HEALTHCHECK` runs it; the image has no curl.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// `flex-gateway probe`: `path` on `address` (default: the admin address
/// the process defaults give, `FLEXGW_ADMIN_ADDRESS` included) must
/// answer 200.
pub fn run(address: Option<SocketAddr>, path: &str, timeout: Duration) -> Result<(), String> {
    let addr = match address {
        Some(a) => a,
        None => default_admin()?,
    };
    match probe(addr, path, timeout)? {
        200 => Ok(()),
        status => Err(format!("{path} answered {status}")),
    }
}

/// Where a listener bound to `addr` is reached from this host: a wildcard
/// address is reached on loopback.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Connect to `addr` (a wildcard on loopback) and send `GET path` with
/// `Connection: close`; the address asked and the stream to read.
fn send_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    agent: &str,
) -> Result<(SocketAddr, TcpStream), String> {
    let addr = reachable(addr);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("{addr}: {e}"))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: {agent}\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    Ok((addr, s))
}

/// `GET path` on `addr` (plain HTTP, `Connection: close`): the status and
/// the body (read to the end), or why there is none.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let (addr, mut s) = send_get(addr, path, timeout, "flex-gateway")?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&got);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!(
            "{addr}: a chunked answer (not the admin listener?)"
        ));
    }
    Ok((status, body.to_string()))
}

/// An admin address as written on a command line: `127.0.0.1:9901`,
/// `http://127.0.0.1:9901` or `http://[::1]:9901/`.
pub fn admin_address(text: &str) -> Result<SocketAddr, String> {
    let bare = text.strip_prefix("http://").unwrap_or(text);
    let bare = bare.split('/').next().unwrap_or(bare);
    bare.parse().map_err(|_| {
        format!(
            "{text:?} is not an admin address (host:port or http://host:port, IP addresses only)"
        )
    })
}

/// The admin address to ask when none is given: the process default
/// (`FLEXGW_ADMIN_ADDRESS` included).
pub fn default_admin() -> Result<SocketAddr, String> {
    crate::config::model::ServerSettings::default()
        .admin
        .ok_or_else(|| {
            format!(
                "the admin listener is off ({}=off)",
                crate::config::environment::ADMIN_ADDRESS
            )
        })
}

/// `GET path` on `addr`; the status line's code, or why there is none.
pub fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    let (addr, mut s) = send_get(addr, path, timeout, "flex-gateway-probe")?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:9901".parse().unwrap()),
            "127.0.0.1:9901".parse().unwrap()
        );
        assert_eq!(
            reachable("[::]:9901".parse().unwrap()),
            "[::1]:9901".parse().unwrap()
        );
        assert_eq!(
            reachable("10.1.2.3:9901".parse().unwrap()),
            "10.1.2.3:9901".parse().unwrap()
        );
    }
}
