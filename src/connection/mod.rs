//! Client connections before, between and around requests: what Pingora
//! leaves to the application.
//!
//! - Admission: a listener takes at most `maxConnections` client connections
//!   at once, and one client IP (the TCP peer; trusted proxies are exempt)
//!   at most `maxConnectionsPerClient`. A connection over a limit is closed
//!   at accept, before a byte is read or a buffer allocated — on HTTPS
//!   listeners before the TLS handshake, which runs here (after admission,
//!   within `handshakeTimeout`) rather than in Pingora's listener.
//! - Deadlines: the whole request head must arrive within `headerTimeout`
//!   (from the accept for the first request, from its first byte for the
//!   next ones on a keep-alive connection), and an idle keep-alive
//!   connection is closed after `keepaliveTimeout`. Pingora has per-read
//!   timeouts only (a client sending a byte a minute holds a connection
//!   forever) and none at all between keep-alive requests.
//! - A head that keeps coming past what `maxHeaderSize` allows is answered
//!   431 and the connection closed, so no connection makes the gateway
//!   buffer up to Pingora's 1 MB head limit.
//!
//! [`Guarded`] wraps the proxy as Pingora's `ServerApp` and runs the HTTP/1
//! keep-alive loop itself (the one in Pingora's `ServerApp for
//! HttpServerApp`, with our settings); [`Watched`] wraps the client stream
//! and keeps the deadlines while the proxy reads a request head. The proxy
//! says when a head is complete with [`request_started`].

use crate::config::ClientLimits;
use crate::ops::metrics::Metrics;
use crate::runtime::Runtime;
use async_trait::async_trait;
use bytes::BytesMut;
use openssl::ssl::SslAcceptor;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncReadExt;

mod admission;
mod watched;

use admission::Gate;
use watched::Watched;

// ---------------------------------------------------------------------------
// request phases of one connection

/// Reading a request head (deadlines apply).
pub(super) const HEAD: u8 = 0;
/// A request is being handled (the route's timeouts and `bodyTimeout` apply).
pub(super) const BUSY: u8 = 1;
/// Between requests on a keep-alive connection.
pub(super) const IDLE: u8 = 2;

/// Why a connection is to be closed (`ConnState::cut`).
pub(super) const CUT_NONE: u8 = 0;
pub(super) const CUT_HEADER_TIMEOUT: u8 = 1;
pub(super) const CUT_IDLE: u8 = 2;
pub(super) const CUT_HEADER_TOO_LARGE: u8 = 3;

/// Shared by the connection's [`Watched`] stream, the proxy's phases (which
/// reach it through the session's stream) and [`Guarded`]'s loop.
#[derive(Debug)]
pub(super) struct ConnState {
    pub(super) phase: AtomicU8,
    cut: AtomicU8,
}

impl ConnState {
    pub(super) fn cut(&self, why: u8) {
        let _ = self
            .cut
            .compare_exchange(CUT_NONE, why, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The connection state behind a session's client stream, when it is ours.
fn state_of(session: &pingora::proxy::Session) -> Option<&ConnState> {
    let stream = session.as_downstream().stream()?;
    let watched = (**stream).as_any().downcast_ref::<Watched>()?;
    Some(&watched.state)
}

/// The proxy has a whole request head: no head deadline until it is done.
pub fn request_started(session: &pingora::proxy::Session) {
    if let Some(s) = state_of(session) {
        s.phase.store(BUSY, Ordering::Relaxed);
    }
}

/// Resolves once the connection is marked to be cut.
struct Cut<'a>(&'a ConnState);

impl Future for Cut<'_> {
    type Output = u8;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<u8> {
        // woken by `Watched`, which marks the cut and wakes the task
        match self.0.cut.load(Ordering::Relaxed) {
            CUT_NONE => Poll::Pending,
            why => Poll::Ready(why),
        }
    }
}

// ---------------------------------------------------------------------------
// the application

/// The proxy of one listener, behind admission and deadlines.
pub struct Guarded<A> {
    app: Arc<A>,
    runtime: Arc<Runtime>,
    addr: SocketAddr,
    gate: Arc<Gate>,
    /// Cleartext HTTP/2 with prior knowledge is accepted beside HTTP/1.1.
    h2c: bool,
    /// An HTTPS listener's acceptor: the handshake runs here, after
    /// admission and within `handshakeTimeout` (Pingora's own TLS listener
    /// would run it before either, with a fixed 60 s limit).
    tls: Option<SslAcceptor>,
}

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The first read of a request: most request heads fit.
const FIRST_READ: usize = 1024;
/// The buffer Pingora parses a head in (its own initial size).
const HEAD_BUFFER: usize = 4096;

/// Resolves when the server begins to shut down (or already has).
async fn stopping(shutdown: &ShutdownWatch) {
    let mut watch = shutdown.clone();
    let _ = watch.wait_for(|stop| *stop).await;
}

impl<A> Guarded<A> {
    /// The connection is cut (closed without an answer, or after the 431).
    fn cut(&self, why: u8) -> Option<Stream> {
        match why {
            CUT_HEADER_TIMEOUT => self.metrics().client_timeout("header"),
            CUT_HEADER_TOO_LARGE => self.metrics().client_timeout("header_size"),
            _ => {}
        }
        None
    }

    pub fn new(
        app: A,
        runtime: Arc<Runtime>,
        addr: SocketAddr,
        h2c: bool,
        tls: Option<SslAcceptor>,
    ) -> Guarded<A> {
        Guarded {
            app: Arc::new(app),
            runtime,
            addr,
            gate: Arc::default(),
            h2c,
            tls,
        }
    }

    /// The TLS handshake of an admitted connection, bounded by
    /// `handshakeTimeout` and the server's shutdown; `None`: it failed
    /// (counted) and the connection is closed.
    async fn handshake(
        &self,
        acceptor: &SslAcceptor,
        stream: Stream,
        limit: Duration,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let handshake = tokio::time::timeout(limit, crate::tls::handshake(acceptor, stream));
        tokio::select! {
            biased;
            _ = stopping(shutdown) => None,
            done = handshake => match done {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(e)) => {
                    log::debug!("listener {}: TLS handshake failed: {e}", self.addr);
                    self.metrics().tls_handshake_failed();
                    None
                }
                Err(_) => {
                    self.metrics().client_timeout("handshake");
                    None
                }
            },
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.runtime.metrics
    }
}

#[async_trait]
impl<A> ServerApp for Guarded<A>
where
    A: HttpServerApp + ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let snapshot = self.runtime.snapshot();
        let limits = snapshot
            .listener(self.addr)
            .map_or_else(ClientLimits::default, |l| l.limits);
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let trusted = &snapshot.config.server.trusted_proxies;
        let _admitted = match self.gate.admit(peer, &limits, trusted) {
            Ok(a) => a,
            Err(why) => {
                self.metrics().connection_refused(why.label());
                return None; // closed at once
            }
        };
        drop(snapshot);
        let _open = self.metrics().connection_opened();
        let stream = match &self.tls {
            Some(acceptor) => {
                self.handshake(acceptor, stream, limits.handshake_timeout, shutdown)
                    .await?
            }
            None => stream,
        };
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            // HTTP/2 (over TLS) multiplexes: Pingora's own session handling
            return self.app.process_new(stream, shutdown).await;
        }

        let state = Arc::new(ConnState {
            phase: AtomicU8::new(HEAD),
            cut: AtomicU8::new(CUT_NONE),
        });
        let mut watched = Watched::new(stream, state.clone(), &limits);
        let mut settings: Option<HttpPersistentSettings> = None;
        // made once per connection: registering it anew for every request
        // costs more than the rest of this loop
        let stop = stopping(shutdown);
        tokio::pin!(stop);
        if self.h2c {
            // the first bytes say which protocol: read up to the preface's
            // length (within the head deadline), then give them back
            let mut got = [0u8; H2_PREFACE.len()];
            let mut n = 0;
            while n < got.len() && got[..n] == H2_PREFACE[..n] {
                let read = tokio::select! {
                    biased;
                    why = Cut(&state) => return self.cut(why),
                    _ = &mut stop => return None,
                    read = watched.read(&mut got[n..]) => read,
                };
                match read {
                    Ok(0) | Err(_) => return None,
                    Ok(k) => n += k,
                }
            }
            watched.replay(&got[..n]);
            if got == *H2_PREFACE {
                // HTTP/2 multiplexes: Pingora's own session handling, with
                // the head deadlines off (its HTTP/2 handling keeps its own)
                state.phase.store(BUSY, Ordering::Relaxed);
                return self.app.process_new(Box::new(watched), shutdown).await;
            }
        }
        let mut stream: Stream = Box::new(watched);
        loop {
            // Wait for the request's first bytes here, holding a small
            // buffer only: Pingora's request future (about 10 KB) is made
            // once there is a request to read, not for every idle connection.
            let mut first = [0u8; FIRST_READ];
            let n = tokio::select! {
                biased;
                why = Cut(&state) => return self.cut(why),
                _ = &mut stop => return None,
                read = stream.read(&mut first) => match read {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => n,
                },
            };
            let mut prefix = BytesMut::with_capacity(HEAD_BUFFER);
            prefix.extend_from_slice(&first[..n]);
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                // keep-alive without Pingora's per-read timeout (ours apply)
                None => session.set_keepalive(Some(0)),
            }
            // parsed as the start of the request, before Pingora reads on
            session.set_pipelined_prefix(prefix);
            let request = self.app.process_new_http(session, shutdown);
            let reused = tokio::select! {
                biased;
                why = Cut(&state) => return self.cut(why),
                reused = request => reused?,
            };
            // answered and kept alive: the keep-alive wait begins
            state.phase.store(IDLE, Ordering::Relaxed);
            (stream, settings) = reused.consume();
        }
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.app).await
    }
}
