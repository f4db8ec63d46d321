//! Unary gRPC calls over HTTP/2 — cleartext for `http://` (Flex's
//! `h2://`), TLS with ALPN `h2` and the system's CAs for `https://`: the
//! OTLP/gRPC span export (`TraceService/Export`) and Envoy's external
//! authorization (`Authorization/Check`).
//!
//! One connection is kept and shared by concurrent calls (HTTP/2 streams);
//! it is made again when it breaks, and a call that fails on a kept
//! connection is tried once more on a new one (the server may have closed
//! an idle connection). Each call has a deadline (`grpc-timeout` too).
//!
//! The request is a gRPC frame (no compression, 4-byte length); the answer
//! is one frame, and success is `grpc-status: 0` in the trailers (or in a
//! trailers-only answer, with no message).

use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpStream;

/// The largest answer read (a `CheckResponse` with a denial body).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

pub struct Client {
    scheme: String,
    authority: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
    /// What the server is, for messages ("the collector").
    peer: &'static str,
    conn: Mutex<Option<SendRequest<Bytes>>>,
    /// One connection attempt at a time; the others wait and share it.
    connecting: tokio::sync::Mutex<()>,
}

/// Why a call failed: the connection (worth a new one), or the answer.
enum Failure {
    Connection(String),
    Answer(String),
}

impl Client {
    /// `endpoint`: `http(s)://host:port` (checked when the config loaded).
    pub fn new(
        endpoint: &str,
        headers: &[(String, String)],
        timeout: Duration,
        peer: &'static str,
    ) -> Client {
        let (scheme, authority) = endpoint.split_once("://").unwrap_or(("http", endpoint));
        Client {
            scheme: if scheme == "https" { "https" } else { "http" }.to_string(),
            authority: authority.trim_end_matches('/').to_string(),
            headers: headers.to_vec(),
            timeout,
            peer,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Call `path` (`/package.Service/Method`) with one message; the
    /// answer's message (empty for a trailers-only success), within the
    /// timeout.
    pub async fn call(&self, path: &str, message: &[u8]) -> Result<Bytes, String> {
        match tokio::time::timeout(self.timeout, self.call_once_or_twice(path, message)).await {
            Ok(r) => r,
            Err(_) => {
                // a connection in an unknown state is not kept
                self.forget();
                Err(format!("no answer within {:?}", self.timeout))
            }
        }
    }

    fn forget(&self) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn kept(&self) -> Option<SendRequest<Bytes>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn call_once_or_twice(&self, path: &str, message: &[u8]) -> Result<Bytes, String> {
        let kept = self.kept().is_some();
        match self.call_on(path, message).await {
            Ok(b) => Ok(b),
            Err(Failure::Connection(e)) => {
                self.forget();
                if !kept {
                    return Err(e);
                }
                match self.call_on(path, message).await {
                    Ok(b) => Ok(b),
                    Err(Failure::Connection(e)) => {
                        self.forget();
                        Err(e)
                    }
                    Err(Failure::Answer(e)) => Err(e),
                }
            }
            Err(Failure::Answer(e)) => Err(e),
        }
    }

    /// The kept connection, or a new one (made once for every waiting call).
    async fn sender(&self) -> Result<SendRequest<Bytes>, String> {
        if let Some(c) = self.kept() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.kept() {
            return Ok(c);
        }
        let c = self.connect().await?;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    async fn connect(&self) -> Result<SendRequest<Bytes>, String> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.authority))?;
        let _ = tcp.set_nodelay(true);
        if self.scheme == "https" {
            let host = self
                .authority
                .rsplit_once(':')
                .map_or(self.authority.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let tls = tls(host, tcp, self.peer).await?;
            handshake(tls, self.peer).await
        } else {
            handshake(tcp, self.peer).await
        }
    }

    async fn call_on(&self, path: &str, message: &[u8]) -> Result<Bytes, Failure> {
        let conn = self.sender().await.map_err(Failure::Connection)?;
        let mut send = conn
            .ready()
            .await
            .map_err(|e| Failure::Connection(format!("HTTP/2: {e}")))?;
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("{}://{}{path}", self.scheme, self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header(
                "grpc-timeout",
                format!("{}m", self.timeout.as_millis().max(1)),
            )
            .header(
                "user-agent",
                concat!("flex-gateway/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(())
            .map_err(|e| Failure::Answer(format!("request: {e}")))?;
        let (answer, mut stream) = send
            .send_request(req, false)
            .map_err(|e| Failure::Connection(format!("HTTP/2: {e}")))?;
        let mut frame = Vec::with_capacity(5 + message.len());
        frame.push(0); // not compressed
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(message);
        stream
            .send_data(Bytes::from(frame), true)
            .map_err(|e| Failure::Connection(format!("HTTP/2: {e}")))?;
        let answer = answer.await.map_err(|e| {
            if e.is_io() || e.is_go_away() {
                Failure::Connection(format!("HTTP/2: {e}"))
            } else {
                Failure::Answer(format!("HTTP/2: {e}"))
            }
        })?;
        let peer = self.peer;
        let (parts, mut body) = answer.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(Failure::Answer(format!(
                "{peer} answered HTTP {}",
                parts.status
            )));
        }
        if parts.headers.contains_key("grpc-status") {
            // trailers-only: an error, or an empty success
            return status(&parts.headers, peer)
                .map(|()| Bytes::new())
                .map_err(Failure::Answer);
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| Failure::Answer(format!("HTTP/2: {e}")))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if data.len() + chunk.len() > MAX_ANSWER + 5 {
                return Err(Failure::Answer(format!(
                    "{peer}'s answer is over {MAX_ANSWER} bytes"
                )));
            }
            data.extend_from_slice(&chunk);
        }
        match body.trailers().await {
            Ok(Some(t)) => status(&t, peer).map_err(Failure::Answer)?,
            Ok(None) => return Err(Failure::Answer(format!("{peer} sent no grpc-status"))),
            Err(e) => return Err(Failure::Answer(format!("HTTP/2: {e}"))),
        }
        message_of(data.freeze()).map_err(|e| Failure::Answer(format!("{peer}: {e}")))
    }
}

/// The one message of a unary answer: `[compressed: u8][length: u32][message]`.
fn message_of(mut data: Bytes) -> Result<Bytes, String> {
    if data.is_empty() {
        return Ok(data);
    }
    if data.len() < 5 {
        return Err("a gRPC frame ends early".into());
    }
    if data[0] != 0 {
        return Err("a compressed gRPC message (none was asked for)".into());
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    data.advance(5);
    if data.len() != len {
        return Err(format!(
            "a gRPC frame of {len} bytes holds {} (one message expected)",
            data.len()
        ));
    }
    Ok(data)
}

/// `grpc-status` (0 is success) and `grpc-message`.
fn status(h: &http::HeaderMap, peer: &str) -> Result<(), String> {
    let code = h.get("grpc-status").and_then(|v| v.to_str().ok());
    match code {
        Some("0") => Ok(()),
        Some(c) => {
            let message = h
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .map(|m| {
                    percent_encoding::percent_decode_str(m)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            Err(format!("{peer} answered grpc-status {c} {message}")
                .trim_end()
                .to_string())
        }
        None => Err(format!("{peer} sent no grpc-status")),
    }
}

async fn handshake<T>(io: T, peer: &'static str) -> Result<SendRequest<Bytes>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::handshake(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            log::debug!("gRPC: the connection to {peer} ended: {e}");
        }
    });
    Ok(send)
}

/// TLS to the server, verified against the system's CAs, offering h2.
async fn tls(
    host: &str,
    tcp: TcpStream,
    peer: &str,
) -> Result<tokio_openssl::SslStream<TcpStream>, String> {
    use openssl::ssl::{SslConnector, SslMethod};
    let fail = |e: &dyn std::fmt::Display| format!("TLS to {host}: {e}");
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| fail(&e))?;
    b.set_alpn_protos(b"\x02h2").map_err(|e| fail(&e))?;
    let ssl = b
        .build()
        .configure()
        .and_then(|c| c.into_ssl(host))
        .map_err(|e| fail(&e))?;
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| fail(&e))?;
    std::pin::Pin::new(&mut stream)
        .connect()
        .await
        .map_err(|e| fail(&e))?;
    if stream.ssl().selected_alpn_protocol() != Some(b"h2") {
        return Err(format!(
            "TLS to {host}: {peer} does not speak HTTP/2 (ALPN)"
        ));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_answer() {
        assert_eq!(message_of(Bytes::new()).unwrap(), Bytes::new());
        let ok = Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1]);
        assert_eq!(&message_of(ok).unwrap()[..], &[8, 1]);
        assert!(message_of(Bytes::from_static(&[0, 0, 0])).is_err());
        assert!(message_of(Bytes::from_static(&[1, 0, 0, 0, 1, 8])).is_err());
        assert!(message_of(Bytes::from_static(&[0, 0, 0, 0, 3, 8])).is_err());
    }
}
