//! Upgrade requests (WebSocket) as tunnels of the gateway's own.
//!
//! Pingora 0.9's proxy loop races an upgrade. Its downstream half hands the
//! (empty) request body's end to the upstream half at once; when the
//! upstream half reads the backend's 101 before it takes that end from its
//! channel, it reads the end as "the client closed the upgraded
//! connection" and ends the tunnel (`proxy_handle_upstream` in
//! pingora-proxy's `proxy_h1.rs`: `request_done && was_upgraded()` sets
//! `response_done`). The client sees EOF right after the 101, typically on
//! a loaded machine, where the 101 is already buffered when that loop first
//! looks. The upstream change that would remove this module: once
//! upgraded, ignore a `HttpTask::Body` end that was sent before the upgrade
//! (only an `UpgradedBody` end closes the tunnel).
//!
//! So an upgrade request leaves Pingora's loop after `proxy_upstream_filter`
//! and goes through the same hooks in order: `upstream_peer` (and
//! `fail_to_connect` with its retries), `upstream_request_filter`, the
//! response checks of `upstream_response_filter`, `response_filter`; then,
//! on a 101, bytes are pumped both ways until either side closes or both
//! stay quiet for the listener's `upgradeIdleTimeout`. An answer other than
//! 101 is passed on as a response and the connection closed.

use super::{check_upstream_response, Ctx, Gateway};
use bytes::Bytes;
use pingora::prelude::Session;
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::proxy::ProxyHttp;
use pingora::{Error, ErrorSource, ErrorType, Result};

impl Gateway {
    /// Serve an upgrade request (its first target is chosen). An error
    /// before the answer started is answered by `fail_to_proxy`.
    pub(super) async fn tunnel(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let result = self.tunnel_through(session, ctx).await;
        if let Err(e) = &result {
            if *e.esource() == ErrorSource::Upstream {
                if let Some(a) = ctx.up.attempt.as_mut() {
                    a.finish(false);
                }
            }
        }
        result
    }

    async fn tunnel_through(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let mut up = self.tunnel_connect(session, ctx).await?;
        let mut req = Box::new(session.req_header().clone());
        self.upstream_request_filter(session, &mut req, ctx).await?;
        up.write_request_header(req).await.map_err(Error::into_up)?;
        if !session.is_body_empty() {
            // a framed body before the upgrade (rare): the backend reads it
            // whether or not it then switches protocols
            while let Some(chunk) = session.read_request_body().await? {
                let mut body = Some(chunk);
                // the route's body limit, as for any request
                self.request_body_filter(session, &mut body, false, ctx)
                    .await?;
                if let Some(chunk) = body {
                    up.write_body(&chunk).await.map_err(Error::into_up)?;
                }
            }
            up.finish_body().await.map_err(Error::into_up)?;
        }
        let mut resp = loop {
            up.read_response().await.map_err(Error::into_up)?;
            match up.resp_header() {
                // an interim answer (100, 103) is not passed on
                Some(r) if r.status.is_informational() && r.status.as_u16() != 101 => continue,
                Some(r) => break Box::new(r.clone()),
                None => return Error::e_explain(ErrorType::InvalidHTTPHeader, "no response"),
            }
        };
        check_upstream_response(&resp, ctx)?;
        self.response_filter(session, &mut resp, ctx).await?;
        let upgraded = up.was_upgraded();
        if !upgraded {
            // the backend refused the upgrade: its answer, then close
            session.set_keepalive(None);
        }
        session.write_response_header(resp, false).await?;
        if upgraded {
            up.maybe_upgrade_body_writer();
            pump(session, &mut up).await
        } else {
            while let Some(chunk) = up.read_body_bytes().await.map_err(Error::into_up)? {
                session.write_response_body(Some(chunk), false).await?;
            }
            session.write_response_body(None, true).await
        }
    }

    /// A new connection (upgraded connections are never pooled) to the
    /// request's target, trying others as the route's retries allow.
    async fn tunnel_connect(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<UpstreamSession> {
        loop {
            let mut peer = self.upstream_peer(session, ctx).await?;
            // HTTP/1.1 to every target: an upgrade has no HTTP/2 form here
            peer.options.alpn = pingora::protocols::ALPN::H1;
            match self.connector.new_stream(&*peer).await {
                Ok(stream) => return Ok(UpstreamSession::new_with_options(stream, &*peer)),
                Err(e) => {
                    let e = self.fail_to_connect(session, &peer, ctx, e);
                    if !e.retry() {
                        return Err(e.into_up());
                    }
                }
            }
        }
    }
}

/// Bytes both ways until either side closes, or both stay quiet for the
/// idle timeout (each side's read timeout; a read not chosen starts again).
async fn pump(session: &mut Session, up: &mut UpstreamSession) -> Result<()> {
    match pump_until_closed(session, up).await {
        Err(e) if matches!(e.etype(), ErrorType::ReadTimedout) => Ok(()), // idle
        other => other,
    }
}

async fn pump_until_closed(session: &mut Session, up: &mut UpstreamSession) -> Result<()> {
    enum Next {
        FromClient(Option<Bytes>),
        FromBackend(Option<Bytes>),
    }
    loop {
        // both reads are cancel-safe: a read not chosen has taken nothing
        let next = tokio::select! {
            d = session.read_request_body() => Next::FromClient(d?),
            u = up.read_body_bytes() => Next::FromBackend(u.map_err(Error::into_up)?),
        };
        match next {
            Next::FromClient(Some(data)) => {
                up.write_body(&data).await.map_err(Error::into_up)?;
            }
            Next::FromBackend(Some(data)) => {
                session.write_response_body(Some(data), false).await?;
            }
            Next::FromClient(None) | Next::FromBackend(None) => return Ok(()),
        }
    }
}
