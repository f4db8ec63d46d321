//! Client connections before, between and around requests: what Pingora
//! leaves to the application.
//!
//! - Admission: a listener takes at most `maxConnections` client connections
//!   at once, and one client IP (the TCP peer; trusted proxies are exempt)
//!   at most `maxConnectionsPerClient`. A connection over a limit is closed
//!   at accept, before a byte is read or a buffer allocated.
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
use crate::ipset::IpSet;
use crate::ops::metrics::Metrics;
use crate::runtime::Runtime;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

// ---------------------------------------------------------------------------
// request phases of one connection

/// Reading a request head (deadlines apply).
const HEAD: u8 = 0;
/// A request is being handled (the route's timeouts and `bodyTimeout` apply).
const BUSY: u8 = 1;
/// Between requests on a keep-alive connection.
const IDLE: u8 = 2;

/// Why a connection is to be closed (`ConnState::cut`).
const CUT_NONE: u8 = 0;
const CUT_HEADER_TIMEOUT: u8 = 1;
const CUT_IDLE: u8 = 2;
const CUT_HEADER_TOO_LARGE: u8 = 3;

/// Shared by the connection's [`Watched`] stream, the proxy's phases (which
/// reach it through the session's stream) and [`Guarded`]'s loop.
#[derive(Debug)]
struct ConnState {
    phase: AtomicU8,
    cut: AtomicU8,
}

/// The answer to a request head that outgrew the limit, written straight to
/// the socket (Pingora has not parsed a request to answer).
fn too_large() -> Vec<u8> {
    let id = crate::ops::request_id::generate();
    let body = crate::response::error_body(431, "request header section too large", &id);
    let mut out = format!(
        "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nx-request-id: {id}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// The client stream, with the head deadlines and the head size cap.
///
/// While the connection is reading a head (or idle), a pending read also
/// polls a timer; when it fires, the stream marks the connection to be cut
/// and wakes its task, and [`Guarded`] drops the request future (closing the
/// socket) instead of letting Pingora wait on. The timer is only ever moved
/// earlier, or re-armed when it fires before the deadline of the moment: a
/// keep-alive request costs two clock reads and no timer operation (a timer
/// reset takes the runtime's timer lock); costs nothing while a request is
/// being handled.
#[derive(Debug)]
pub struct Watched {
    inner: Stream,
    state: Arc<ConnState>,
    limits: Deadlines,
    timer: Pin<Box<Sleep>>,
    /// The phase this stream last saw, and when it began.
    seen: u8,
    since: Instant,
    /// Bytes read since the current head began.
    head_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
struct Deadlines {
    header: Duration,
    keepalive: Duration,
    /// Bytes a head may take from the socket before it is refused (431):
    /// twice `maxHeaderSize` and a margin, since a read that completes a
    /// head may carry the start of the body too. Heads between
    /// `maxHeaderSize` and this are refused by the proxy (also 431).
    head_cap: usize,
}

impl Watched {
    fn new(inner: Stream, state: Arc<ConnState>, limits: &ClientLimits) -> Watched {
        let limits = Deadlines {
            header: limits.header_timeout,
            keepalive: limits.keepalive_timeout,
            head_cap: limits.max_header_bytes.saturating_mul(2) + 8 * 1024,
        };
        let now = Instant::now();
        Watched {
            inner,
            state,
            // the first request's head is due `header` after the accept
            timer: Box::pin(tokio::time::sleep_until(now + limits.header)),
            limits,
            seen: HEAD,
            since: now,
            head_bytes: 0,
        }
    }

    /// Enter `phase` (HEAD or IDLE) now.
    fn enter(&mut self, phase: u8) {
        self.seen = phase;
        self.since = Instant::now();
        self.head_bytes = 0;
    }

    /// Whether the deadline of `phase` has passed; otherwise the timer is
    /// set to fire no later than it (and registered with `cx`).
    fn expired(&mut self, phase: u8, cx: &mut Context<'_>) -> bool {
        let deadline = self.since
            + match phase {
                HEAD => self.limits.header,
                _ => self.limits.keepalive,
            };
        if deadline < self.timer.deadline() {
            self.timer.as_mut().reset(deadline);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return true;
            }
            // it was set for an earlier deadline, since moved on
            self.timer.as_mut().reset(deadline);
        }
        false
    }

    /// Best effort: the 431 fits any socket buffer of a connection that has
    /// only been sending; if it cannot be written at once it is skipped.
    fn refuse_head(&mut self, cx: &mut Context<'_>) {
        let answer = too_large();
        let inner = Pin::new(&mut self.inner);
        if let Poll::Ready(Ok(_)) = inner.poll_write(cx, &answer) {
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let phase = this.state.phase.load(Ordering::Relaxed);
        if phase == BUSY {
            this.seen = BUSY;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if phase != this.seen {
            // a request was answered: the keep-alive wait begins
            this.enter(phase);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    if phase == IDLE {
                        // the first bytes of the next request: its head is due
                        this.state.phase.store(HEAD, Ordering::Relaxed);
                        this.enter(HEAD);
                    }
                    this.head_bytes += n;
                    if this.head_bytes > this.limits.head_cap {
                        this.refuse_head(cx);
                        this.state.cut(CUT_HEADER_TOO_LARGE);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.expired(phase, cx) {
                    let why = if phase == HEAD {
                        CUT_HEADER_TIMEOUT
                    } else {
                        CUT_IDLE
                    };
                    this.state.cut(why);
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// Pingora's stream traits: all the inner stream's.
#[async_trait]
impl Shutdown for Watched {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for Watched {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Watched {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Watched {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Watched {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Watched {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Watched {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

impl ConnState {
    fn cut(&self, why: u8) {
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
// admission

/// Open connections of one listener, in all and by client IP.
#[derive(Debug, Default)]
struct Gate {
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; counted until dropped.
struct Admitted {
    gate: Arc<Gate>,
    ip: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut by_ip = self.gate.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    ListenerLimit,
    ClientLimit,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::ListenerLimit => "listener_limit",
            Refused::ClientLimit => "client_limit",
        }
    }
}

impl Gate {
    fn admit(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        limits: &ClientLimits,
        trusted: &IpSet,
    ) -> Result<Admitted, Refused> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= limits.max_connections {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::ListenerLimit);
        }
        let mut admitted = Admitted {
            gate: self.clone(),
            ip: None,
        };
        if let (Some(max), Some(ip)) = (limits.max_connections_per_client, peer) {
            if !trusted.contains(ip) {
                let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
                let n = by_ip.entry(ip).or_insert(0);
                if *n >= max {
                    return Err(Refused::ClientLimit); // `admitted` gives the count back
                }
                *n += 1;
                admitted.ip = Some(ip);
            }
        }
        Ok(admitted)
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
}

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

    pub fn new(app: A, runtime: Arc<Runtime>, addr: SocketAddr) -> Guarded<A> {
        Guarded {
            app: Arc::new(app),
            runtime,
            addr,
            gate: Arc::default(),
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
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            // HTTP/2 (over TLS) multiplexes: Pingora's own session handling
            return self.app.process_new(stream, shutdown).await;
        }

        let state = Arc::new(ConnState {
            phase: AtomicU8::new(HEAD),
            cut: AtomicU8::new(CUT_NONE),
        });
        let mut stream: Stream = Box::new(Watched::new(stream, state.clone(), &limits));
        let mut settings: Option<HttpPersistentSettings> = None;
        // made once per connection: registering it anew for every request
        // costs more than the rest of this loop
        let stop = stopping(shutdown);
        tokio::pin!(stop);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_client: Option<usize>) -> ClientLimits {
        ClientLimits {
            max_connections: max,
            max_connections_per_client: per_client,
            ..ClientLimits::default()
        }
    }

    #[test]
    fn listener_limit_counts_open_connections() {
        let gate = Arc::new(Gate::default());
        let l = limits(2, None);
        let none = IpSet::default();
        let a = gate.admit(None, &l, &none).unwrap();
        let _b = gate.admit(None, &l, &none).unwrap();
        assert_eq!(
            gate.admit(None, &l, &none).err(),
            Some(Refused::ListenerLimit)
        );
        drop(a);
        assert!(gate.admit(None, &l, &none).is_ok());
    }

    #[test]
    fn client_limit_is_per_ip_and_spares_trusted_proxies() {
        let gate = Arc::new(Gate::default());
        let l = limits(100, Some(1));
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = IpSet::new(vec![crate::ipset::parse_net("10.0.0.0/8").unwrap()]);
        let first = gate.admit(Some(one), &l, &trusted).unwrap();
        assert_eq!(
            gate.admit(Some(one), &l, &trusted).err(),
            Some(Refused::ClientLimit)
        );
        let _other = gate.admit(Some(two), &l, &trusted).unwrap();
        let _p1 = gate.admit(Some(proxy), &l, &trusted).unwrap();
        let _p2 = gate.admit(Some(proxy), &l, &trusted).unwrap();
        // a refusal gives its listener count back
        assert_eq!(gate.open.load(Ordering::Relaxed), 4);
        drop(first);
        assert!(gate.by_ip.lock().unwrap().get(&one).is_none());
        assert!(gate.admit(Some(one), &l, &trusted).is_ok());
    }
}
