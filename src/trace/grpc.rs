//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`
//! over HTTP/2 — cleartext for `http://` (Flex's `h2://`), TLS with ALPN
//! `h2` and the system's CAs for `https://`. One connection is kept
//! between batches and made again when it breaks; an export that fails on
//! a kept connection is tried once more on a new one.
//!
//! The request is a gRPC frame (no compression, 4-byte length) holding
//! the `ExportTraceServiceRequest` that OTLP/HTTP posts; success is
//! `grpc-status: 0`, in the trailers or in a trailers-only answer.

use bytes::Bytes;
use h2::client::SendRequest;
use std::time::Duration;
use tokio::net::TcpStream;

const PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

pub struct Client {
    scheme: String,
    authority: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
    conn: Option<SendRequest<Bytes>>,
}

/// Why a call failed: the connection (worth a new one), or the answer.
enum Failure {
    Connection(String),
    Answer(String),
}

impl Client {
    /// `endpoint`: `http(s)://host:port` (checked when the config loaded).
    pub fn new(endpoint: &str, headers: &[(String, String)], timeout: Duration) -> Client {
        let (scheme, authority) = endpoint.split_once("://").unwrap_or(("http", endpoint));
        Client {
            scheme: scheme.to_string(),
            authority: authority.trim_end_matches('/').to_string(),
            headers: headers.to_vec(),
            timeout,
            conn: None,
        }
    }

    /// Send one `ExportTraceServiceRequest`, within the timeout.
    pub async fn export(&mut self, message: &[u8]) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.export_once_or_twice(message)).await {
            Ok(r) => r,
            Err(_) => {
                // a connection in an unknown state is not kept
                self.conn = None;
                Err(format!("no answer within {:?}", self.timeout))
            }
        }
    }

    async fn export_once_or_twice(&mut self, message: &[u8]) -> Result<(), String> {
        let kept = self.conn.is_some();
        match self.call(message).await {
            Ok(()) => Ok(()),
            Err(Failure::Connection(e)) => {
                self.conn = None;
                if !kept {
                    return Err(e);
                }
                // the collector may have closed an idle connection
                match self.call(message).await {
                    Ok(()) => Ok(()),
                    Err(Failure::Connection(e) | Failure::Answer(e)) => {
                        self.conn = None;
                        Err(e)
                    }
                }
            }
            Err(Failure::Answer(e)) => Err(e),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Bytes>, String> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.authority))?;
        let _ = tcp.set_nodelay(true);
        let send = if self.scheme == "https" {
            let host = self
                .authority
                .rsplit_once(':')
                .map_or(self.authority.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let tls = tls(host, tcp).await?;
            handshake(tls).await?
        } else {
            handshake(tcp).await?
        };
        Ok(send)
    }

    async fn call(&mut self, message: &[u8]) -> Result<(), Failure> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect().await.map_err(Failure::Connection)?,
        };
        let mut send = conn
            .ready()
            .await
            .map_err(|e| Failure::Connection(format!("HTTP/2: {e}")))?;
        self.conn = Some(send.clone());
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("{}://{}{PATH}", self.scheme, self.authority))
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
        let (parts, mut body) = answer.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(Failure::Answer(format!(
                "the collector answered HTTP {}",
                parts.status
            )));
        }
        if parts.headers.contains_key("grpc-status") {
            // trailers-only: an error, or an empty success
            return status(&parts.headers).map_err(Failure::Answer);
        }
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| Failure::Answer(format!("HTTP/2: {e}")))?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        match body.trailers().await {
            Ok(Some(t)) => status(&t).map_err(Failure::Answer),
            Ok(None) => Err(Failure::Answer("the collector sent no grpc-status".into())),
            Err(e) => Err(Failure::Answer(format!("HTTP/2: {e}"))),
        }
    }
}

/// `grpc-status` (0 is success) and `grpc-message`.
fn status(h: &http::HeaderMap) -> Result<(), String> {
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
            Err(format!("the collector answered grpc-status {c} {message}")
                .trim_end()
                .to_string())
        }
        None => Err("the collector sent no grpc-status".into()),
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Bytes>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::handshake(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            log::debug!("tracing: the gRPC connection ended: {e}");
        }
    });
    Ok(send)
}

/// TLS to the collector, verified against the system's CAs, offering h2.
async fn tls(host: &str, tcp: TcpStream) -> Result<tokio_openssl::SslStream<TcpStream>, String> {
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
            "TLS to {host}: the collector does not speak HTTP/2 (ALPN)"
        ));
    }
    Ok(stream)
}
