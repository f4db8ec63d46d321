//! The client stream of a connection, with the head deadlines and the head
//! size cap (see the module above).

use super::{ConnState, BUSY, CUT_HEADER_TIMEOUT, CUT_HEADER_TOO_LARGE, CUT_IDLE, HEAD, IDLE};
use crate::config::ClientLimits;
use async_trait::async_trait;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

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
/// and wakes its task, and [`Guarded`](super::Guarded) drops the request future (closing the
/// socket) instead of letting Pingora wait on. The timer is only ever moved
/// earlier, or re-armed when it fires before the deadline of the moment: a
/// keep-alive request costs two clock reads and no timer operation (a timer
/// reset takes the runtime's timer lock); costs nothing while a request is
/// being handled.
#[derive(Debug)]
pub struct Watched {
    inner: Stream,
    pub(super) state: Arc<ConnState>,
    limits: Deadlines,
    timer: Pin<Box<Sleep>>,
    /// The phase this stream last saw, and when it began.
    seen: u8,
    since: Instant,
    /// Bytes read since the current head began.
    head_bytes: usize,
    /// Bytes already read, to be read again first (the first bytes of an
    /// h2c listener's connection, looked at before choosing the protocol).
    replay: Option<bytes::Bytes>,
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
    pub(super) fn new(inner: Stream, state: Arc<ConnState>, limits: &ClientLimits) -> Watched {
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
            replay: None,
        }
    }

    /// Give `bytes` (already read) back: the next reads and peeks see them
    /// first.
    pub(super) fn replay(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.replay = Some(bytes::Bytes::copy_from_slice(bytes));
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
        if let Some(r) = this.replay.as_mut() {
            let n = r.len().min(buf.remaining());
            buf.put_slice(&r.split_to(n));
            if r.is_empty() {
                this.replay = None;
            }
            return Poll::Ready(Ok(()));
        }
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
        match &self.replay {
            Some(r) if r.len() >= buf.len() => {
                buf.copy_from_slice(&r[..buf.len()]);
                Ok(true)
            }
            _ => self.inner.try_peek(buf).await,
        }
    }
}
