//! Slow and greedy clients, as an attacker plays them over raw sockets:
//! a request head trickled byte by byte is cut off at `headerTimeout`
//! (on a new connection and on a kept-alive one) while other clients are
//! served; an idle keep-alive connection is closed after
//! `keepaliveTimeout`; a body that stops arriving gets 408 after
//! `bodyTimeout`; a head far over `maxHeaderSize` is refused before the
//! gateway buffers it; connections over `maxConnections` or
//! `maxConnectionsPerClient` are closed at accept. Each cut is in the
//! metrics.
//!
//! The timeouts are set to one or two seconds; the trickling client writes
//! a byte every 100 ms (that is the attack, not synchronisation).

use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn gateway(limits: &str, backend: &Backend) -> Gateway {
    let config = with_server_settings(
        &catch_all_config(&backend.url()),
        &[&format!("limits: {limits}")],
    );
    let gw = Gateway::start(&config);
    gw.wait_ready(); // the admin listener answers too (metrics)
    gw
}

/// Trickle `head` one byte per 100 ms until the gateway closes the
/// connection or `give_up` passes; how long the gateway let it go on.
fn trickle(s: &mut TcpStream, head: &[u8], give_up: Duration) -> Duration {
    let start = Instant::now();
    for b in head.iter().cycle() {
        if s.write_all(&[*b]).is_err() || start.elapsed() > give_up {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        // the gateway may have closed: a non-blocking read tells
        s.set_nonblocking(true).ok();
        let mut probe = [0u8; 64];
        let gone = match s.read(&mut probe) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        s.set_nonblocking(false).ok();
        if gone {
            break;
        }
    }
    start.elapsed()
}

/// No client connection open (the start-up probe's is gone).
fn no_connections(gw: &Gateway) {
    wait_until(Duration::from_secs(5), "no open connection", || {
        gw.admin("/metrics")
            .text()
            .lines()
            .any(|l| l == "flexgw_connections_open 0")
    });
}

/// Wait for a metrics line (the count is updated as the connection ends,
/// which the client may see first).
fn metric(gw: &Gateway, line: &str) -> bool {
    wait_until(Duration::from_secs(5), line, || {
        gw.admin("/metrics").text().lines().any(|l| l == line)
    });
    true
}

#[test]
fn slow_heads_are_cut_at_the_deadline_while_others_are_served() {
    let backend = Backend::echo();
    let gw = gateway("{headerTimeout: 1s, keepaliveTimeout: 30s}", &backend);
    let port = gw.port;
    // a slow loris on a new connection: a header line that never ends
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        trickle(
            &mut s,
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            Duration::from_secs(8),
        )
    });
    // meanwhile other clients are served
    for _ in 0..5 {
        assert_eq!(gw.connect().get("/fast").status, 200);
    }
    let lasted = slow.join().expect("thread");
    assert!(
        lasted >= Duration::from_millis(900) && lasted < Duration::from_secs(4),
        "the trickled head lasted {lasted:?} (headerTimeout 1s)"
    );

    // on a kept-alive connection the deadline counts from the next head's
    // first byte, not from the previous response
    let mut c = gw.connect();
    assert_eq!(c.get("/first").status, 200);
    // idle for longer than headerTimeout (the scenario, not synchronisation)
    std::thread::sleep(Duration::from_millis(1500));
    let mut s = c.into_stream();
    let lasted = trickle(
        &mut s,
        b"GET /second HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaa",
        Duration::from_secs(8),
    );
    assert!(
        lasted >= Duration::from_millis(900) && lasted < Duration::from_secs(4),
        "the second trickled head lasted {lasted:?}"
    );
    assert_eq!(
        backend.count(),
        6,
        "no trickled request reached the backend"
    );
    assert!(metric(
        &gw,
        "flexgw_client_timeouts_total{phase=\"header\"} 2"
    ));
}

#[test]
fn idle_keepalive_connections_are_closed_and_active_ones_kept() {
    let backend = Backend::echo();
    let gw = gateway("{keepaliveTimeout: 1s}", &backend);
    let mut c = gw.connect();
    assert_eq!(c.get("/one").status, 200);
    let mut s = c.into_stream();
    let idle = closed_within(&mut s, Duration::from_secs(5)).expect("closed when idle");
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(3),
        "closed after {idle:?} (keepaliveTimeout 1s)"
    );
    // a connection that keeps sending requests inside the timeout stays
    let mut c = gw.connect();
    for i in 0..4 {
        assert_eq!(c.get(&format!("/{i}")).status, 200, "request {i}");
        std::thread::sleep(Duration::from_millis(400));
    }
}

#[test]
fn a_body_that_stops_arriving_gets_408() {
    let backend = Backend::echo();
    let gw = gateway("{bodyTimeout: 1s}", &backend);
    let mut c = gw.connect();
    c.send_head("POST", "/upload", &[], 1000);
    c.send_raw(&[b'x'; 100]);
    let started = Instant::now();
    let r = c.read_response(false, true);
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(r.json()["status"], 408);
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(metric(
        &gw,
        "flexgw_client_timeouts_total{phase=\"body\"} 1"
    ));
    assert_eq!(gw.connect().get("/after").status, 200);
}

#[test]
fn a_huge_head_is_refused_before_the_gateway_buffers_it() {
    let backend = Backend::echo();
    let gw = gateway("{maxHeaderSize: 16KB}", &backend);
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n")
        .expect("send");
    // a megabyte of header lines, as long as the gateway reads them
    let line = format!("X-Pad: {}\r\n", "p".repeat(1000));
    let mut sent = 0;
    while sent < 1024 * 1024 {
        if s.write_all(line.as_bytes()).is_err() {
            break;
        }
        sent += line.len();
    }
    // (the kernel's socket buffers may take the rest of the megabyte)
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    // the 431 may be lost to the reset of a socket closed with unread data
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    assert!(metric(
        &gw,
        "flexgw_client_timeouts_total{phase=\"header_size\"} 1"
    ));
    assert_eq!(backend.count(), 0);
    assert_eq!(gw.connect().get("/after").status, 200);
}

#[test]
fn connections_over_the_listener_limit_are_closed_at_accept() {
    let backend = Backend::echo();
    let gw = gateway("{maxConnections: 3}", &backend);
    no_connections(&gw);
    let mut held: Vec<Client> = (0..3).map(|_| gw.connect()).collect();
    for c in held.iter_mut() {
        assert_eq!(c.get("/held").status, 200);
    }
    let mut extra = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    let _ = extra.write_all(b"GET /extra HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        closed_within(&mut extra, Duration::from_secs(5)).is_some(),
        "a fourth connection is closed"
    );
    assert!(metric(
        &gw,
        "flexgw_connections_refused_total{reason=\"listener_limit\"} 1"
    ));
    assert_eq!(backend.count(), 3);
    // one closes: a new connection is taken again
    held.pop().expect("held").close();
    wait_until(Duration::from_secs(5), "a free connection slot", || {
        let mut c = gw.connect();
        matches!(c.try_request("GET", "/again", &[], b""), Ok(r) if r.status == 200)
    });
}

/// A client connection from a chosen loopback address.
fn connect_from(source: &str, port: u16) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from: SocketAddr = format!("{source}:0").parse().expect("addr");
    socket.bind(&from.into()).expect("bind the source address");
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    socket.connect(&to.into()).expect("connect");
    socket.into()
}

fn served(s: &mut TcpStream) -> bool {
    let _ = s.write_all(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 12 && buf.starts_with(b"HTTP/1.1 200"))
}

#[test]
fn one_client_ip_gets_at_most_its_connections() {
    let backend = Backend::echo();
    let gw = gateway("{maxConnectionsPerClient: 2}", &backend);
    no_connections(&gw);
    let mut a1 = connect_from("127.0.0.1", gw.port);
    let mut a2 = connect_from("127.0.0.1", gw.port);
    assert!(served(&mut a1) && served(&mut a2));
    let mut a3 = connect_from("127.0.0.1", gw.port);
    assert!(
        !served(&mut a3),
        "a third connection from 127.0.0.1 is refused"
    );
    // another client IP is not affected
    let mut b1 = connect_from("127.0.0.2", gw.port);
    assert!(served(&mut b1), "127.0.0.2 is served");
    assert!(metric(
        &gw,
        "flexgw_connections_refused_total{reason=\"client_limit\"} 1"
    ));
    drop(a1);
    wait_until(
        Duration::from_secs(5),
        "127.0.0.1 may connect again",
        || served(&mut connect_from("127.0.0.1", gw.port)),
    );
}
