//! Upgrade requests (WebSocket) through the gateway: the 101, then bytes
//! both ways, over raw sockets on both sides.

use crate::support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A request head, up to its blank line (`None`: closed before it ended).
fn read_head(r: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Some(head);
        }
    }
}

/// A backend that answers an upgrade with 101 and then echoes every byte;
/// it records the request head it got.
fn upgrade_backend() -> (u16, std::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let Some(head) = read_head(&mut r) else {
                    return;
                };
                let _ = tx.send(head);
                let mut w = s;
                w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n").unwrap();
                let mut buf = [0u8; 4096];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if w.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (port, rx)
}

const UPGRADE: &[u8] = b"GET /ws/chat HTTP/1.1\r\nHost: chat.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn open_websocket(port: u16) -> (TcpStream, String) {
    open_websocket_sending(port, b"")
}

/// Open a WebSocket; `early` (the client's first frame) goes in the same
/// write as the upgrade request, before the 101 (allowed for upgrades).
fn open_websocket_sending(port: u16, early: &[u8]) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(&[UPGRADE, early].concat()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed before the 101");
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

fn echo(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap();
    got
}

#[test]
fn websocket_upgrades_pass_and_outlive_the_request_timeouts() {
    let (port, heads) = upgrade_backend();
    let gw = Gateway::start(&with_server_settings(
        &config_with_routes(&format!(
            "    - id: ws\n      path: /ws/*\n      upstream: {{url: \"http://127.0.0.1:{port}\", readTimeout: 1s}}"
        )),
        &["limits: {bodyTimeout: 1s, upgradeIdleTimeout: 3s}"],
    ));
    let (mut s, head) = open_websocket(gw.port);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    let seen = heads
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .to_ascii_lowercase();
    assert!(seen.contains("upgrade: websocket"), "{seen}");
    assert!(
        seen.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="),
        "{seen}"
    );
    assert_eq!(echo(&mut s, b"hello"), b"hello");
    // quiet for longer than the route's readTimeout and the bodyTimeout
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(echo(&mut s, b"still here"), b"still here");
    let big = vec![b'x'; 256 * 1024];
    assert_eq!(echo(&mut s, &big), big);
    assert_eq!(gw.metric("flexgw_upgrades_total"), 1.0);
    // quiet for longer than its own idle timeout: closed
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed by the gateway");
    let quiet = started.elapsed();
    assert!(
        quiet >= Duration::from_millis(2500) && quiet < Duration::from_secs(8),
        "closed after {quiet:?} (upgradeIdleTimeout 3s)"
    );
}

fn ws_gateway(port: u16) -> Gateway {
    Gateway::start(&config_with_routes(&format!(
        "    - id: ws\n      path: /ws/*\n      upstream: {{url: \"http://127.0.0.1:{port}\"}}"
    )))
}

/// Every WebSocket client sends its first frame the instant the 101
/// arrives. Pingora's upstream loop used to end the tunnel when it read the
/// backend's 101 before the (empty) request body's end (the race behind a
/// flaky EOF right after the 101): each of many tunnels must carry the
/// first bytes both ways.
#[test]
fn the_first_frame_sent_the_instant_the_101_arrives_goes_through() {
    let (port, heads) = upgrade_backend();
    let gw = ws_gateway(port);
    let mut failed = Vec::new();
    for i in 0..200 {
        let (mut s, head) = open_websocket(gw.port);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let msg = format!("frame {i}");
        s.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        if let Err(e) = s.read_exact(&mut got) {
            failed.push(format!("{i}: {e}"));
        } else {
            assert_eq!(got, msg.as_bytes());
        }
        heads.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    assert!(
        failed.is_empty(),
        "{} of 200 tunnels cut: {failed:?}",
        failed.len()
    );
    assert_eq!(gw.metric("flexgw_upgrades_total"), 200.0);
}

/// A client may send its first frame right behind the upgrade request,
/// before the 101: the backend gets it after the head, and the echo comes
/// back after the 101.
#[test]
fn a_first_frame_sent_before_the_101_reaches_the_backend() {
    let (port, heads) = upgrade_backend();
    let gw = ws_gateway(port);
    for i in 0..50 {
        let msg = format!("early frame {i}");
        let (mut s, head) = open_websocket_sending(gw.port, msg.as_bytes());
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("tunnel {i}: {e}"));
        assert_eq!(got, msg.as_bytes());
        // and the tunnel goes on
        assert_eq!(echo(&mut s, b"next"), b"next");
        let seen = heads.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(seen.starts_with("GET /ws/chat HTTP/1.1"), "{seen}");
    }
}

/// An upgrade request with a body, answered without switching protocols:
/// the backend gets the whole body and the client its answer.
#[test]
fn an_upgrade_request_with_a_body_the_backend_declines() {
    let backend = Backend::echo();
    let gw = Gateway::start(&config_with_routes(&format!(
        "    - id: ws\n      path: /ws/*\n      upstream: {{url: \"{}\"}}",
        backend.url()
    )));
    let mut c = gw.connect();
    c.send_raw(b"POST /ws/x HTTP/1.1\r\nHost: chat.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.read_response(false, false);
    assert_eq!(r.status, 200);
    let seen = backend.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, b"hello");
}

/// A backend on `/ws/chat` that answers a plain GET with a page and an
/// upgrade with 101, then echoes.
fn page_or_upgrade_backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let Some(head) = read_head(&mut r) else {
                    return;
                };
                let mut w = s;
                if !head.to_ascii_lowercase().contains("upgrade: websocket") {
                    let _ = w.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npage",
                    );
                    return;
                }
                let _ = w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 || w.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn an_upgrade_is_never_answered_from_a_response_cache() {
    let port = page_or_upgrade_backend();
    let gw = Gateway::start(&config_with_routes(&format!(
        "    - id: ws\n      path: /ws/*\n      upstream: {{url: \"http://127.0.0.1:{port}\"}}\n      policies: [{{response-cache: {{}}}}]"
    )));
    let mut c = gw.connect();
    // the page is stored under the path the WebSocket uses
    assert_eq!(c.get("/ws/chat").text(), "page");
    assert!(
        c.get("/ws/chat").header("age").is_some(),
        "served from the cache"
    );
    let (mut s, head) = open_websocket(gw.port);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(echo(&mut s, b"hello"), b"hello");
}
