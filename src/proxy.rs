//! The `ProxyHttp` implementation: wires router, policies and upstreams
//! together, phase by phase. It implements no policy itself.
//!
//! ```text
//! request_filter          request id, client ip, normalise path (400),
//!                         route (404 / 405: chain.on_method_not_allowed first),
//!                         chain.on_request (a policy may answer: 401, 429, ...;
//!                         the response cache defers the policies after it)
//! request_cache_filter,   the response cache (policy/cache): lookup, cache
//! cache_key_callback,...  lock, Vary, admission; a hit is served from here
//! proxy_upstream_filter   the deferred policies (a miss), then
//!                         the service and first target (503 refusals);
//!                         an upgrade request becomes a tunnel of our own
//!                         here (proxy/tunnel.rs: the same hooks, in order)
//! upstream_peer           resolve the route's upstream (502 when it cannot)
//! upstream_request_filter base path + normalised path, Host, X-Forwarded-*,
//!                         X-Request-Id, chain.on_upstream_request
//! request_body_filter     body limit (413), chain.on_request_body (custom
//!                         policies that read or rewrite bodies)
//! upstream_response_filter retries by status; the deferred policies'
//!                         on_response (before the response is stored)
//! response_filter         X-Request-Id, chain.on_response (reverse order)
//! response_body_filter    chain.on_response_body (reverse order)
//! fail_to_proxy           JSON 502 / 504 / 400 / 500
//! logging                 chain.on_logging, metrics, one JSON access-log line
//! ```
//!
//! Every response the gateway writes itself (routing, policy, failure)
//! passes the response hooks of the policies that ran, so their headers
//! (rate limits, CORS) are on local responses too.

use crate::authority;
use crate::config::{ClientLimits, Underscores};
use crate::exchange::Exchange;
use crate::forwarding::{self, Hop};
use crate::framing;
use crate::ipset;
use crate::ops::metrics::UpstreamError;
use crate::ops::{access_log, request_id};
use crate::path::{normalize_with, without_params, Options, PathError};
use crate::policy::cache::{self, Outcome};
use crate::policy::chain::{Ran, Side};
use crate::policy::common::request_host;
use crate::policy::{LocalResponse, Rejection};
use crate::response::{error_body, message_for};
use crate::router::Match;
use crate::runtime::{CompiledRoute, Phase, Runtime};
use crate::upstream::balance::weighted_choice;
use crate::upstream::{hash_key, Attempt, Refusal, RequestSlot, RetrySlot, RESOLVE_ERROR};
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, Session};
use pingora::proxy::{FailToProxy, ProxyHttp};
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Per-request wiring state around the policies' [`Exchange`].
pub struct Ctx {
    pub x: Exchange,
    start: Instant,
    /// Set once routing found a route (also for a 405 its policies saw).
    route: Option<Arc<CompiledRoute>>,
    /// The TCP peer (the client, or a proxy in front of the gateway).
    peer_ip: Option<std::net::IpAddr>,
    /// How many of the route's policies saw the request (their response
    /// hooks run, in reverse).
    ran: Ran,
    /// The peer address the request went to, once chosen.
    upstream_addr: Option<SocketAddr>,
    /// Status of a response the gateway wrote itself (routing, policy, error).
    local_status: Option<u16>,
    /// Counted in the in-flight gauge, not yet in the totals.
    in_flight: bool,
    /// The request's framing is not to be trusted: answer without reading
    /// its body, then close the connection.
    close: bool,
    /// The route's body limit, and the body bytes seen so far.
    body_limit: Option<u64>,
    body_seen: u64,
    /// Write the access-log line (from the snapshot the request began with).
    access_log: bool,
    /// The listener's `maxResponseHeaderSize`.
    response_header_limit: usize,
    /// The upstream side: the service chosen, its attempts and retries.
    up: Upstreaming,
    /// The listener forwards the verified client-certificate subject in
    /// this header (`tls.clientCertificates.forwardHeader`).
    cert_header: Option<http::HeaderName>,
    /// `x.request_id` as a header value, made once and shared by the
    /// request upstream and the response.
    request_id_header: Option<http::HeaderValue>,
    /// An upgrade request: the listener's `upgradeIdleTimeout`.
    upgrade: Option<std::time::Duration>,
    /// The request's trace, when tracing is configured.
    trace: Option<crate::trace::RequestTrace>,
    /// The policy that answered the request itself, if one did.
    answered_by: &'static str,
    /// A policy refused the request from its body: the answer, written
    /// when the proxying fails with it.
    body_refusal: Option<LocalResponse>,
    /// The response cache may answer this request: its lookup.
    cache: Option<Box<cache::Lookup>>,
    /// What the response cache did (access log, metrics).
    cache_outcome: Option<Outcome>,
}

/// A request's dealings with its upstream service.
#[derive(Default)]
struct Upstreaming {
    /// Counted against the service's `maxRequests` (also picks the service:
    /// a weighted split is decided once per request).
    slot: Option<RequestSlot>,
    /// The current attempt (dropped when a retry replaces it).
    attempt: Option<Attempt>,
    /// The retry in progress, counted against `maxRetries`.
    retry: Option<RetrySlot>,
    retries: u32,
    /// Addresses of failed attempts (a retry avoids them).
    tried: Vec<SocketAddr>,
    /// Addresses an attempt timed out on (never tried again).
    timed_out: Vec<SocketAddr>,
    hash_key: Option<Vec<u8>>,
    /// Why the request got 503 without reaching a target.
    refusal: Option<Refusal>,
    /// The route's `requestTimeout` runs out then.
    deadline: Option<Instant>,
}

impl Upstreaming {
    /// What is left of the request timeout (zero when it ran out).
    fn left(&self) -> Option<std::time::Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// The route's `requestTimeout` ran out.
fn request_timeout() -> Box<Error> {
    Error::explain(
        ErrorType::ReadTimedout,
        "the route's requestTimeout ran out",
    )
    .into_up()
}

impl Ctx {
    fn new() -> Ctx {
        Ctx {
            x: Exchange::new(),
            start: Instant::now(),
            route: None,
            peer_ip: None,
            ran: Ran::default(),
            upstream_addr: None,
            local_status: None,
            in_flight: false,
            close: false,
            body_limit: None,
            body_seen: 0,
            access_log: true,
            response_header_limit: ClientLimits::default().max_response_header_bytes,
            up: Upstreaming::default(),
            cert_header: None,
            request_id_header: None,
            upgrade: None,
            trace: None,
            answered_by: "",
            body_refusal: None,
            cache: None,
            cache_outcome: None,
        }
    }

    /// The request id as a header value (made on first use).
    fn request_id_value(&mut self) -> &http::HeaderValue {
        let id = &self.x.request_id;
        self.request_id_header.get_or_insert_with(|| {
            http::HeaderValue::from_str(id).unwrap_or(http::HeaderValue::from_static(""))
        })
    }

    /// A new request id (for an answer to a request that had none yet).
    fn set_request_id(&mut self, id: String) {
        self.x.request_id = id;
        self.request_id_header = None;
    }
}

mod tunnel;

pub struct Gateway {
    runtime: Arc<Runtime>,
    /// The listener this service serves (its routes in each snapshot).
    addr: SocketAddr,
    /// Connections of upgrade tunnels ([`tunnel`]; Pingora's own connector
    /// serves every other request).
    connector: pingora::connectors::TransportConnector,
}

impl Gateway {
    pub fn new(runtime: Arc<Runtime>, addr: SocketAddr) -> Gateway {
        Gateway {
            runtime,
            addr,
            connector: pingora::connectors::TransportConnector::new(None),
        }
    }

    /// While this process drains (it handed its sockets to an upgraded
    /// process, or got SIGTERM; the phase never goes back), every response
    /// says `Connection: close`: busy keep-alive clients move to a new
    /// connection at a point they expect, rather than having their idle
    /// connection closed under them when the drain ends.
    /// Before routing: the authority normalised (or refused), header
    /// names with `_` handled as the listener says, and the forwarding
    /// headers only a trusted proxy may send removed from anyone else's
    /// request. `Err`: a 400 with this message.
    fn clean_request(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        limits: &ClientLimits,
        snapshot: &crate::runtime::Snapshot,
    ) -> std::result::Result<(), &'static str> {
        let req = session.req_header();
        let raw = req
            .headers
            .get(http::header::HOST)
            .map(http::HeaderValue::as_bytes)
            .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()))
            .unwrap_or_default();
        let normal = authority::normalize(raw, ctx.x.tls)?;
        let underscored = framing::has_underscored(&req.headers);
        let trusted = ctx
            .peer_ip
            .is_some_and(|ip| snapshot.config.server.trusted_proxies.contains(ip));
        let forwarding = !trusted
            && (req.headers.contains_key(http::header::FORWARDED)
                || req.headers.contains_key("x-real-ip"));
        if normal.is_none() && !underscored && !forwarding {
            return Ok(());
        }
        let req = session.req_header_mut();
        if let Some(host) = normal {
            let value = http::HeaderValue::from_str(&host).map_err(|_| "invalid Host")?;
            let _ = req.insert_header(http::header::HOST, value);
        }
        if underscored {
            match limits.underscores {
                Underscores::Allow => {}
                Underscores::Reject => {
                    self.runtime
                        .metrics
                        .headers_dropped("underscore_rejected", 1);
                    return Err("a request header name has an underscore (`_`)");
                }
                Underscores::Drop => {
                    let doomed: Vec<http::HeaderName> = req
                        .headers
                        .keys()
                        .filter(|k| k.as_str().contains('_'))
                        .cloned()
                        .collect();
                    let mut n = 0;
                    for name in &doomed {
                        n += req.headers.get_all(name).iter().count() as u64;
                        req.remove_header(name);
                    }
                    self.runtime.metrics.headers_dropped("underscore", n);
                }
            }
        }
        if forwarding {
            let mut n = 0;
            n += u64::from(req.remove_header(&http::header::FORWARDED).is_some());
            n += u64::from(req.remove_header("x-real-ip").is_some());
            self.runtime
                .metrics
                .headers_dropped("untrusted_forwarding", n);
        }
        Ok(())
    }

    /// Answer a request the chain refused: counted against the policy
    /// that refused it (none for the gateway's own checks).
    async fn answer(&self, session: &mut Session, ctx: &mut Ctx, r: Rejection) -> Result<bool> {
        if let (false, Some(route)) = (r.policy.is_empty(), &ctx.route) {
            route.metrics.rejected(r.policy);
            ctx.answered_by = r.policy;
        }
        respond(session, ctx, r.response, self.draining()).await
    }

    fn draining(&self) -> bool {
        self.runtime.phase() == Phase::Draining
    }
}

/// The request's host name without port, from `Host` or the URI authority.
/// The body length the request declares in `Content-Length`, if any.
fn declared_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Request bodies up to this size are read and dropped before a local
/// response, so the client connection stays usable; a larger (or unframed)
/// body makes Pingora close the connection after the response instead.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// Write a JSON response of the gateway's own, keeping the connection alive
/// (unless `draining`, see [`Gateway::draining`]).
async fn respond(
    session: &mut Session,
    ctx: &mut Ctx,
    local: LocalResponse,
    draining: bool,
) -> Result<bool> {
    if draining || ctx.close {
        session.set_keepalive(None);
    }
    if !session.is_body_done() && !ctx.close {
        let small = declared_length(session.req_header()).is_some_and(|n| n <= DRAIN_LIMIT);
        if small {
            session.drain_request_body().await?;
        }
    }
    // 204 (a CORS preflight answer) has no body and no Content-Length
    let own = local.body.is_some();
    let body = (local.status != 204).then(|| match local.body {
        Some(b) => b,
        None => error_body(local.status, &local.message, &ctx.x.request_id),
    });
    let mut resp = ResponseHeader::build(local.status, Some(4 + local.headers.len()))?;
    if let Some(body) = &body {
        if !own {
            resp.insert_header("content-type", "application/json")?;
        }
        resp.insert_header("content-length", body.len().to_string())?;
    }
    resp.insert_header("x-request-id", ctx.request_id_value().clone())?;
    answer_trace(&mut resp, ctx)?;
    for (name, value) in local.headers {
        // the gateway frames the body itself
        if framing::is_framing_header(&name) {
            continue;
        }
        match name {
            std::borrow::Cow::Borrowed(n) => resp.append_header(n, value)?,
            std::borrow::Cow::Owned(n) => resp.append_header(n, value)?,
        };
    }
    if let Some(route) = &ctx.route {
        route
            .chain
            .on_response(&mut resp, &mut ctx.x, ctx.ran, Side::All)?;
    }
    ctx.local_status = Some(local.status);
    let head_only = session.req_header().method == http::Method::HEAD || body.is_none();
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if let (false, Some(body)) = (head_only, body) {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

fn local(status: u16, message: impl Into<String>) -> LocalResponse {
    LocalResponse::new(status, message)
}

/// A route `timeout` (connect, read, write or TLS handshake) ran out.
fn is_timeout(e: &Error) -> bool {
    use ErrorType::*;
    matches!(
        e.etype(),
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout
    )
}

/// The status for a failure to proxy: timeouts are 504, other upstream
/// failures 502; 0 means the client is gone and nothing can be written.
fn failure_status(e: &Error) -> u16 {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => *code,
        ReadTimedout if *e.esource() == ErrorSource::Downstream => 408,
        _ if is_timeout(e) => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// The kind of an upstream failure, for the metrics; `None` when the
/// upstream is not to blame.
fn upstream_error_kind(e: &Error) -> Option<UpstreamError> {
    use ErrorType::*;
    if *e.esource() != ErrorSource::Upstream {
        return None;
    }
    Some(match e.etype() {
        t if *t == RESOLVE_ERROR => UpstreamError::Resolve,
        _ if is_timeout(e) => UpstreamError::Timeout,
        ConnectError | ConnectRefused | ConnectNoRoute | ConnectProxyFailure
        | TLSHandshakeFailure => UpstreamError::Connect,
        _ => UpstreamError::Other,
    })
}

/// An ambiguous upstream response is a 502, never passed through; the
/// attempt's outcome is its status.
fn check_upstream_response(resp: &ResponseHeader, ctx: &mut Ctx) -> Result<u16> {
    framing::check_response(resp, ctx.response_header_limit).map_err(|why| {
        Error::explain(
            ErrorType::InvalidHTTPHeader,
            format!("upstream response: {why}"),
        )
        .into_up()
    })?;
    let status = resp.status.as_u16();
    if let Some(a) = ctx.up.attempt.as_mut() {
        a.finish(status < 500);
    }
    Ok(status)
}

/// An upstream response status the route retries: the response is not
/// passed on, the request goes to another target.
const RETRY_STATUS: ErrorType = ErrorType::Custom("UpstreamStatusRetried");

/// Whether the request can be sent again as it was: an idempotent method,
/// no body, and nothing of a response sent to the client yet.
fn replayable(session: &mut Session) -> bool {
    session.req_header().method.is_idempotent()
        && session.is_body_empty()
        && session.response_written().is_none()
}

impl Ctx {
    /// The request's route is chosen (found, or found for another
    /// method): its id for the policies and logs, its tracing rules.
    fn enter_route(&mut self, route: &Arc<CompiledRoute>) {
        self.x.route_id = route.id.clone();
        if let Some(t) = self.trace.as_mut() {
            t.for_route(route.tracing.as_ref());
        }
        self.route = Some(route.clone());
    }

    /// Take a retry if the route allows another and the service's budget
    /// and `maxRetries` do.
    fn take_retry(&mut self) -> bool {
        let Some(route) = &self.route else {
            return false;
        };
        let Some(attempt) = &self.up.attempt else {
            return false;
        };
        if self.up.retries >= route.config.upstream.retries.max
            || self.up.left().is_some_and(|l| l.is_zero())
        {
            return false;
        }
        match attempt.service().try_retry(Instant::now()) {
            Some(slot) => {
                self.up.retries += 1;
                self.up.retry = Some(slot);
                true
            }
            None => false,
        }
    }

    /// The attempt timed out: this request never tries its target again
    /// (a struggling target is not sent the same work twice, and a
    /// one-target route answers 504 after its `timeout`, not a multiple of
    /// it). Whether another target is left to retry on.
    fn note_timeout(&mut self) -> bool {
        let Some(a) = &self.up.attempt else {
            return false;
        };
        self.up.timed_out.push(a.endpoint.addr);
        a.service().has_target_besides(&self.up.timed_out)
    }

    /// Refuse with 503 before reaching a target.
    fn refuse(&mut self, why: Refusal) -> Box<Error> {
        self.up.refusal = Some(why);
        Error::explain(ErrorType::HTTPStatus(503), why.message())
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    /// No downstream modules: Pingora's default adds response compression,
    /// disabled, which still builds its context and runs its filters for
    /// every request (benches/README.md, tuning log).
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        crate::connection::request_started(session);
        self.runtime.metrics.request_started();
        ctx.in_flight = true;
        let busy = self.runtime.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot = self.runtime.snapshot();
        ctx.access_log = snapshot.config.server.access_log;
        // the header value shares its bytes with every copy: the client's
        // (the request's buffer) or one made here
        let client_id = session
            .req_header()
            .headers
            .get("x-request-id")
            .and_then(|v| Some((request_id::accept(v.as_bytes())?, v)));
        (ctx.x.request_id, ctx.request_id_header) = match client_id {
            Some((id, v)) => (id.to_string(), Some(v.clone())),
            None => {
                let (text, header) = request_id::generate_with_header();
                (text, Some(header))
            }
        };
        if let Some(t) = &snapshot.tracer {
            ctx.trace = Some(t.start(&session.req_header().headers));
        }
        if busy > snapshot.config.server.max_requests_in_flight {
            // overload: answer at once instead of queueing
            self.runtime.metrics.overloaded();
            let resp = LocalResponse::new(503, "the gateway is overloaded; retry shortly")
                .with_header("retry-after", "1");
            return respond(session, ctx, resp, self.draining()).await;
        }
        let listener = snapshot.listener(self.addr);
        let limits = listener.map_or_else(ClientLimits::default, |l| l.limits);
        // a client pausing longer than this in its body gets 408; one not
        // reading the response for as long is cut off
        // an upgrade (WebSocket) becomes a tunnel: its own idle timeout
        ctx.upgrade = session
            .is_upgrade_req()
            .then_some(limits.upgrade_idle_timeout);
        let io_timeout = ctx.upgrade.unwrap_or(limits.body_timeout);
        session.set_read_timeout(Some(io_timeout));
        ctx.response_header_limit = limits.max_response_header_bytes;
        session.set_write_timeout(Some(io_timeout));
        if let Some(tls) = listener.and_then(|l| l.tls.as_ref()) {
            ctx.cert_header = tls
                .config
                .clients
                .as_ref()
                .and_then(|c| c.forward_header.clone());
            let cert = session
                .digest()
                .and_then(|d| d.ssl_digest.as_ref())
                .and_then(|d| d.extension.get::<crate::tls::ClientCert>());
            ctx.x.client_cert_subject = cert.map(|c| Arc::from(c.subject.as_str()));
            ctx.x.client_cert_pem = cert.map(|c| c.pem.clone());
        }
        let req = session.req_header();
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.x.client_ip = peer.map(|peer| {
            let forwarded = req
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok());
            ipset::client_ip(peer, &snapshot.config.server.trusted_proxies, forwarded)
        });
        ctx.peer_ip = peer;
        ctx.x.peer = session.client_addr().and_then(|a| a.as_inet()).copied();
        ctx.x.local = session.server_addr().and_then(|a| a.as_inet()).copied();
        ctx.x.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());

        let raw = session
            .as_downstream()
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes());
        let framed = framing::check_request(req, raw.as_deref(), &limits);
        if let Err(r) = framed {
            ctx.close = true;
            let resp = local(r.status, r.message);
            return respond(session, ctx, resp, self.draining()).await;
        }
        if let Err(message) = self.clean_request(session, ctx, &limits, &snapshot) {
            let resp = local(400, message);
            return respond(session, ctx, resp, self.draining()).await;
        }
        let req = session.req_header();
        // normalised with encoded slashes kept (as `%2F` / `%5C`, the only
        // way they survive normalisation); refused below unless the route
        // the path leads to allows them
        let lenient = Options {
            allow_encoded_slashes: true,
        };
        let path = match normalize_with(req.uri.path(), lenient) {
            Ok(path) => path.into_owned(),
            Err(e) => {
                let resp = local(400, e.message());
                return respond(session, ctx, resp, self.draining()).await;
            }
        };
        let slash = path.contains('%') && (path.contains("%2F") || path.contains("%5C"));
        // `;` parameters: routed (and judged) on the path a servlet
        // container resolves, without them; refused unless the route opts in
        let sent = path.contains(';').then(|| path.clone());
        let routed = sent
            .as_deref()
            .map(|p| normalize_with(&without_params(p), lenient).map(std::borrow::Cow::into_owned));
        let path = match routed {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                let resp = local(400, e.message());
                return respond(session, ctx, resp, self.draining()).await;
            }
            None => path,
        };
        let (found, rewritten) = match listener {
            Some(l) => {
                let (m, up) = l
                    .router
                    .route(request_host(req), &req.method, &path, &req.headers);
                (Some(m), up)
            }
            None => (None, None),
        };
        let found = match found {
            Some(Match::Found(route)) if slash && !route.config.allow_encoded_slashes => {
                let resp = local(400, PathError::EncodedSlash.message());
                return respond(session, ctx, resp, self.draining()).await;
            }
            Some(Match::Found(route)) if sent.is_some() && !route.config.allow_path_parameters => {
                let resp = local(400, "request path has ; parameters in a segment");
                return respond(session, ctx, resp, self.draining()).await;
            }
            other => other,
        };
        ctx.x.path = path;
        // a route that takes parameters gets them, unless it rewrites the path
        ctx.x.upstream_path = rewritten.or(sent);
        let rejection = match found {
            Some(Match::Found(route)) => {
                let route = route.clone();
                ctx.enter_route(&route);
                ctx.body_limit = route
                    .config
                    .max_body_size
                    .or(snapshot.config.server.max_body_size);
                match (ctx.body_limit, declared_length(req)) {
                    (Some(limit), Some(len)) if len > limit => {
                        // refused before a byte of it is read
                        ctx.close = true;
                        Some(Rejection {
                            policy: "",
                            response: LocalResponse::new(
                                413,
                                format!("request body too large (limit {limit} bytes)"),
                            ),
                        })
                    }
                    _ => {
                        let req = session.req_header_mut();
                        let mut timings = ctx
                            .trace
                            .as_ref()
                            .filter(|t| t.wants_policy_spans())
                            .map(|_| Vec::new());
                        let r = route
                            .chain
                            .on_request(req, &mut ctx.x, &mut ctx.ran, timings.as_mut())
                            .await;
                        if let (Some(t), Some(trace)) = (timings, ctx.trace.as_mut()) {
                            trace.policy_spans(t);
                        }
                        r
                    }
                }
            }
            Some(Match::MethodNotAllowed { allow, route }) => {
                // the route's policies may answer it (a CORS preflight)
                let route = route.clone();
                ctx.enter_route(&route);
                let answered = route
                    .chain
                    .on_method_not_allowed(req, &mut ctx.x, &mut ctx.ran);
                Some(answered.unwrap_or_else(|| {
                    Rejection {
                        policy: "",
                        response: LocalResponse::new(
                            405,
                            format!("method {} is not allowed on this route", req.method),
                        )
                        .with_header("allow", allow),
                    }
                }))
            }
            Some(Match::NotFound) | None => Some(Rejection {
                policy: "",
                response: local(404, message_for(404)),
            }),
        };
        match rejection {
            None => {
                // the response cache deferred the chain (a lookup), or
                // said the request is not for it
                let bypassed = ctx.x.ext.remove::<cache::Bypassed>().is_some();
                match ctx.x.ext.remove::<cache::Lookup>() {
                    Some(lookup) if ctx.upgrade.is_none() => ctx.cache = Some(Box::new(lookup)),
                    // an upgrade (WebSocket) is never answered from the
                    // cache: it becomes a tunnel (the deferred policies
                    // still run first)
                    Some(_) => ctx.cache_outcome = Some(Outcome::Bypass),
                    None if bypassed => ctx.cache_outcome = Some(Outcome::Bypass),
                    None => {}
                }
                Ok(false)
            }
            Some(r) => self.answer(session, ctx, r).await,
        }
    }

    /// Choose the service (a weighted split is decided once per request)
    /// and the first target; a refusal (limits, no healthy target) is
    /// answered here, keeping the client connection.
    async fn proxy_upstream_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let Some(route) = ctx.route.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        if ctx.cache.is_some() && ctx.cache_outcome.is_none() {
            // not looked up: the key's last answer could not be stored
            ctx.cache_outcome = Some(Outcome::Bypass);
        }
        // not answered from the cache: the policies after it run now
        let req = session.req_header_mut();
        if let Some(r) = route.chain.resume(req, &mut ctx.x, &mut ctx.ran).await {
            self.answer(session, ctx, r).await?;
            return Ok(false);
        }
        let now = Instant::now();
        ctx.up.deadline = match ctx.upgrade {
            Some(_) => None, // a tunnel has no whole-request deadline
            None => route.config.upstream.timeouts.request.map(|t| now + t),
        };
        let services = &route.services;
        let i = match services.len() {
            1 => 0,
            _ => weighted_choice(services.iter().map(|(_, w)| *w)).unwrap_or(0),
        };
        let Some((service, _)) = services.get(i) else {
            return Error::e_explain(ErrorType::InternalError, "route without a service");
        };
        let chosen = service.admit_request(now).map(|slot| {
            ctx.up.slot = Some(slot);
            if let crate::config::model::Balance::Hash(on) = &service.config.balance {
                ctx.up.hash_key = hash_key(on, session.req_header(), ctx.x.client_ip);
            }
        });
        if chosen.is_ok() {
            service.ensure_resolved().await.map_err(Error::into_up)?;
        }
        match chosen.and_then(|()| service.choose(ctx.up.hash_key.as_deref(), &[], &[], now)) {
            Ok(attempt) => {
                ctx.up.attempt = Some(attempt);
                if ctx.upgrade.is_none() {
                    return Ok(true);
                }
                // a tunnel of our own (see proxy/tunnel.rs); Pingora only
                // logs it (and answers 502 if nothing was written)
                if let Err(e) = self.tunnel(session, ctx).await {
                    session.set_keepalive(None);
                    self.fail_to_proxy(session, &e, ctx).await;
                }
                Ok(false)
            }
            Err(why) => {
                ctx.up.refusal = Some(why);
                let resp = local(503, why.message())
                    .with_header("x-flexgw-refused", why.reason())
                    .with_header("retry-after", "1");
                respond(session, ctx, resp, self.draining()).await?;
                Ok(false)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        let Some(service) = ctx.up.slot.as_ref().map(|s| s.service().clone()) else {
            return Error::e_explain(ErrorType::InternalError, "no service chosen");
        };
        if ctx.up.attempt.as_ref().is_some_and(|a| a.finished()) {
            // a retry: the failed attempt (its outcome recorded) makes way
            if let Some(failed) = ctx.up.attempt.take() {
                ctx.up.tried.push(failed.endpoint.addr);
            }
        }
        if ctx.up.attempt.is_none() {
            let now = Instant::now();
            match service.choose(
                ctx.up.hash_key.as_deref(),
                &ctx.up.tried,
                &ctx.up.timed_out,
                now,
            ) {
                Ok(a) => ctx.up.attempt = Some(a),
                Err(why) => return Err(ctx.refuse(why)),
            }
        }
        let Some(attempt) = ctx.up.attempt.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no target chosen");
        };
        let left = ctx.up.left();
        if left.is_some_and(|l| l.is_zero()) {
            return Err(request_timeout());
        }
        let mut timeouts = route.config.upstream.timeouts.within(left);
        if let Some(idle) = ctx.upgrade {
            // the upstream side of a tunnel waits as long as the client's
            timeouts.read = idle;
            timeouts.write = idle;
        }
        let peer = service.peer(attempt, &timeouts);
        ctx.upstream_addr = Some(attempt.endpoint.addr);
        if let Some(t) = ctx.trace.as_mut() {
            t.client_start(attempt.endpoint.addr);
        }
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(a) = ctx.up.attempt.as_mut() {
            a.finish(false);
        }
        if let Some(t) = ctx.trace.as_mut() {
            t.client_end(Some(error_type(&e)), None);
        }
        // nothing was sent: any method may go to another target
        let wanted = ctx
            .route
            .as_ref()
            .is_some_and(|r| r.config.upstream.retries.connect_failure);
        if wanted && (!is_timeout(&e) || ctx.note_timeout()) && ctx.take_retry() {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if *e.etype() == RETRY_STATUS {
            return e; // decided in upstream_response_filter
        }
        // Pingora's rule: a pooled connection the upstream had closed is
        // retried (idempotent requests); that is no fault of the target
        if !session.req_header().method.is_idempotent() || session.retry_buffer_truncated() {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        if e.retry() {
            return e;
        }
        if *e.esource() == ErrorSource::Upstream {
            if let Some(a) = ctx.up.attempt.as_mut() {
                a.finish(false);
            }
            if let Some(t) = ctx.trace.as_mut() {
                t.client_end(Some(error_type(&e)), None);
            }
            let wanted = ctx
                .route
                .as_ref()
                .is_some_and(|r| r.config.upstream.retries.timeout);
            if wanted
                && is_timeout(&e)
                && replayable(session)
                && ctx.note_timeout()
                && ctx.take_retry()
            {
                e.set_retry(true);
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(route) = ctx.route.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        // connected (new or pooled): the attempt holds a connection now
        let Some((service, endpoint)) = ctx.up.attempt.as_mut().map(|a| {
            a.connected();
            (a.service().clone(), a.endpoint.clone())
        }) else {
            return Error::e_explain(ErrorType::InternalError, "no upstream target chosen");
        };
        let up = service.target(&endpoint);
        let original = session.req_header();
        let path = ctx.x.upstream_path.as_deref().unwrap_or(&ctx.x.path);
        if !up.base_path.is_empty() || original.uri.path() != path {
            let uri = match original.uri.query() {
                Some(q) => format!("{}{path}?{q}", up.base_path),
                None => format!("{}{path}", up.base_path),
            };
            let uri = uri
                .parse::<http::Uri>()
                .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "upstream path", e))?;
            upstream.set_uri(uri);
        }
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let hop = Hop {
            host: original.headers.get(http::header::HOST),
            peer: ctx.peer_ip,
            tls,
            authority: &up.host_header,
            request_id: ctx.request_id_value(),
        };
        forwarding::forward(upstream, &hop)?;
        if let Some(t) = ctx.trace.as_mut() {
            // the upstream's parent is this attempt's CLIENT span; the
            // client's tracestate goes on as it came
            upstream.insert_header("traceparent", t.upstream_traceparent())?;
        }
        if let Some(h) = &ctx.cert_header {
            // only the gateway's own word on the client certificate
            upstream.remove_header(h);
            if let Some(subject) = &ctx.x.client_cert_subject {
                upstream.insert_header(h.clone(), subject.as_ref())?;
            }
        }
        route
            .chain
            .on_upstream_request(upstream, &mut ctx.x, ctx.ran)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(route) = ctx.route.as_ref().filter(|r| r.chain.body_hooks().0) {
            let refused = route
                .chain
                .on_request_body(body, end_of_stream, &mut ctx.x, ctx.ran)?;
            if let Some(r) = refused {
                // the chunk goes nowhere; failing here cuts the upstream
                // request short (its connection is not reused)
                route.metrics.rejected(r.policy);
                ctx.answered_by = r.policy;
                ctx.close = true;
                let status = r.response.status;
                ctx.body_refusal = Some(r.response);
                return Error::e_explain(
                    ErrorType::HTTPStatus(status),
                    format!("request body refused by {}", r.policy),
                );
            }
        }
        if let (Some(limit), Some(chunk)) = (ctx.body_limit, body.as_ref()) {
            ctx.body_seen += chunk.len() as u64;
            if ctx.body_seen > limit {
                // a chunked body ran over: abort the upstream request; the
                // client gets 413 unless a response has started
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    format!("request body over {limit} bytes"),
                );
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = check_upstream_response(upstream_response, ctx)?;
        if let Some(t) = ctx.trace.as_mut() {
            t.client_status(status);
        }
        if status == 304 && ctx.cache_outcome == Some(Outcome::Expired) {
            // the backend confirmed the expired entry: it is served
            ctx.cache_outcome = Some(Outcome::Revalidated);
        }
        let retried = ctx
            .route
            .as_ref()
            .is_some_and(|r| r.config.upstream.retries.statuses.contains(&status));
        if retried && replayable(session) && ctx.take_retry() {
            let mut e = Error::explain(RETRY_STATUS, format!("upstream answered {status}"));
            e.set_retry(true);
            return Err(e.into_up());
        }
        match &ctx.route {
            // the policies after the response cache edit the response
            // before it is stored
            Some(route) if ctx.ran.deferred() => {
                route
                    .chain
                    .on_response(upstream_response, &mut ctx.x, ctx.ran, Side::Inner)
            }
            _ => Ok(()),
        }
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(route) = ctx.route.as_ref().filter(|r| r.chain.body_hooks().1) {
            route
                .chain
                .on_response_body(body, end_of_stream, &mut ctx.x, ctx.ran, Side::Outer)?;
        }
        Ok(None)
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if !end_of_stream && ctx.up.left().is_some_and(|l| l.is_zero()) {
            return Err(request_timeout());
        }
        if let Some(route) = ctx
            .route
            .as_ref()
            .filter(|r| ctx.ran.deferred() && r.chain.body_hooks().1)
        {
            route
                .chain
                .on_response_body(body, end_of_stream, &mut ctx.x, ctx.ran, Side::Inner)?;
        }
        Ok(None)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if let Some(l) = &ctx.cache {
            session.cache.enable(
                l.store.storage(),
                None,
                Some(cache::predictor()),
                Some(cache::lock()),
                None,
            );
        }
        Ok(())
    }

    fn cache_key_callback(
        &self,
        _session: &Session,
        ctx: &mut Ctx,
    ) -> Result<pingora_cache::CacheKey> {
        match &ctx.cache {
            Some(l) => Ok(l.cache_key()),
            None => Error::e_explain(ErrorType::InternalError, "no cache lookup"),
        }
    }

    fn cache_miss(&self, session: &mut Session, ctx: &mut Ctx) {
        if ctx.cache_outcome.is_none() {
            ctx.cache_outcome = Some(Outcome::Miss);
        }
        session.cache.cache_miss();
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &pingora_cache::CacheMeta,
        _hit_handler: &mut pingora_cache::storage::HitHandler,
        is_fresh: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<pingora_cache::ForcedFreshness>> {
        if ctx.cache.as_ref().is_some_and(|l| l.no_cache) {
            // the client asked for a fresh answer: fetch it (and store it)
            ctx.cache_outcome = Some(Outcome::Miss);
            return Ok(Some(pingora_cache::ForcedFreshness::ForceMiss));
        }
        ctx.cache_outcome = Some(if is_fresh {
            Outcome::Hit
        } else {
            Outcome::Expired
        });
        Ok(None)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<pingora_cache::RespCacheable> {
        use pingora_cache::{NoCacheReason, RespCacheable};
        Ok(match &ctx.cache {
            Some(l) => match l.admit(session.req_header(), resp, &ctx.x) {
                Ok(meta) => RespCacheable::Cacheable(meta),
                Err(why) => RespCacheable::Uncacheable(NoCacheReason::Custom(why)),
            },
            None => RespCacheable::Uncacheable(NoCacheReason::NeverEnabled),
        })
    }

    fn cache_vary_filter(
        &self,
        meta: &pingora_cache::CacheMeta,
        _ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<pingora_cache::key::HashBinary> {
        cache::variance(meta, req)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if self.draining() {
            session.set_keepalive(None);
        }
        resp.insert_header("x-request-id", ctx.request_id_value().clone())?;
        answer_trace(resp, ctx)?;
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            self.runtime.metrics.upgraded();
        }
        match &ctx.route {
            Some(route) => route
                .chain
                .on_response(resp, &mut ctx.x, ctx.ran, Side::Outer),
            None => Ok(()),
        }
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if let (Some(kind), Some(route)) = (upstream_error_kind(e), ctx.route.as_ref()) {
            self.runtime.metrics.upstream_error(&route.config.id, kind);
        }
        if failure_status(e) == 408 {
            // the body stopped arriving: answer without waiting for the rest
            self.runtime.metrics.client_timeout("body");
            ctx.close = true;
        }
        let status = match session.response_written() {
            // the response already started: nothing more can be said
            Some(resp) => resp.status.as_u16(),
            None => {
                let status = failure_status(e);
                if status > 0 {
                    if ctx.x.request_id.is_empty() {
                        ctx.set_request_id(request_id::generate());
                    }
                    let resp = match (ctx.body_refusal.take(), ctx.up.refusal) {
                        (Some(refusal), _) => refusal,
                        (None, Some(why)) => local(status, why.message())
                            .with_header("x-flexgw-refused", why.reason())
                            .with_header("retry-after", "1"),
                        (None, None) => local(status, message_for(status)),
                    };
                    if let Err(we) = respond(session, ctx, resp, self.draining()).await {
                        log::debug!("could not send the {status} response: {we}");
                    }
                }
                status
            }
        };
        FailToProxy {
            error_code: status,
            // a refusal before any upstream contact leaves the client
            // connection as good as after any local answer
            can_reuse_downstream: ctx.up.refusal.is_some() && !ctx.close,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let req = session.req_header();
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.local_status)
            .unwrap_or(0);
        if let Some(route) = &ctx.route {
            route.chain.on_logging(&ctx.x, status, ctx.ran);
        }
        if let Some(o) = ctx.cache_outcome {
            cache::COUNTS.count(o);
        }
        let route_id = ctx.route.as_ref().map(|r| r.config.id.as_str());
        if ctx.in_flight {
            ctx.in_flight = false;
            self.runtime.in_flight.fetch_sub(1, Ordering::Relaxed);
            let metrics = &self.runtime.metrics;
            let series = ctx
                .route
                .as_ref()
                .map_or_else(|| metrics.no_route(), |r| &r.metrics);
            metrics.request_done(
                series,
                req.method.as_str(),
                status,
                ctx.start.elapsed().as_secs_f64(),
            );
        }
        let trace = ctx.trace.take();
        let trace_id = match &trace {
            Some(t) if ctx.access_log && access_log::enabled() => Some(t.trace_id_hex()),
            _ => None,
        };
        // an unsampled request has nothing to export
        if let Some(t) = trace.filter(|t| t.sampled) {
            finish_trace(t, session, ctx, (route_id, self.addr.port()), status, e);
        }
        if !ctx.access_log || !access_log::enabled() {
            return;
        }
        let path = if ctx.x.path.is_empty() {
            req.uri.path()
        } else {
            ctx.x.path.as_str()
        };
        access_log::write(&access_log::AccessLine {
            time: crate::ops::time::now(),
            request_id: &ctx.x.request_id,
            client_ip: ctx.x.client_ip.map(|ip| ip.to_string()),
            method: req.method.as_str(),
            path,
            route_id,
            consumer: ctx.x.consumer.as_deref(),
            status,
            upstream: ctx.upstream_addr.map(|a| a.to_string()),
            duration_ms: (ctx.start.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            bytes_sent: session.body_bytes_sent(),
            error: e.map(|e| e.to_string()),
            trace_id: trace_id.as_deref(),
            cache: ctx.cache_outcome.map(Outcome::as_str),
        });
    }
}

/// `tracing.responseHeader`: the request's `traceparent` on its response,
/// proxied or the gateway's own.
fn answer_trace(resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    if let Some(t) = &ctx.trace {
        if let Some(h) = t.response_header() {
            resp.insert_header(h.clone(), t.traceparent())?;
        }
    }
    Ok(())
}

/// An error as OpenTelemetry's `error.type` names it.
fn error_type(e: &Error) -> &'static str {
    match upstream_error_kind(e) {
        Some(UpstreamError::Connect) => "connect_error",
        Some(UpstreamError::Timeout) => "timeout",
        Some(UpstreamError::Resolve) => "resolve_error",
        _ => "upstream_error",
    }
}

/// The request's SERVER span: named `{method} {route}`, with the HTTP
/// semantic conventions' attributes and the policy that answered.
fn finish_trace(
    t: crate::trace::RequestTrace,
    session: &Session,
    ctx: &Ctx,
    (route, local_port): (Option<&str>, u16),
    status: u16,
    e: Option<&Error>,
) {
    use crate::trace::Value;
    let req = session.req_header();
    let method = req.method.as_str();
    let path = if ctx.x.path.is_empty() {
        req.uri.path()
    } else {
        ctx.x.path.as_str()
    };
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let mut a: Vec<(&'static str, Value)> = vec![
        ("http.request.method", Value::from(method)),
        ("url.path", Value::from(path)),
        (
            "url.scheme",
            Value::from(if tls { "https" } else { "http" }),
        ),
        ("http.response.status_code", Value::Int(i64::from(status))),
        (
            "network.protocol.version",
            Value::from(match req.version {
                http::Version::HTTP_2 => "2",
                http::Version::HTTP_10 => "1.0",
                _ => "1.1",
            }),
        ),
        ("flexgw.request_id", Value::from(ctx.x.request_id.as_str())),
    ];
    if let Some(r) = route {
        a.push(("http.route", Value::from(r)));
    }
    if let Some(host) = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        let (name, port) = match host.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') || n.ends_with(']') => (n, p.parse::<i64>().ok()),
            _ => (host, None),
        };
        a.push(("server.address", Value::from(name)));
        // the Host header's port, else the port the request came in on
        a.push((
            "server.port",
            Value::Int(port.unwrap_or(i64::from(local_port))),
        ));
    }
    if let Some(ip) = ctx.x.client_ip {
        a.push(("client.address", Value::from(ip.to_string())));
    }
    if let Some(ua) = req
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
    {
        a.push(("user_agent.original", Value::from(ua)));
    }
    if !ctx.answered_by.is_empty() {
        a.push(("flexgw.policy", Value::from(ctx.answered_by)));
    }
    let name = match t.span_name() {
        Some(n) => n.to_string(),
        None => format!("{method} {}", route.unwrap_or("(none)")),
    };
    let labels = t.labels(|h| match h {
        ":method" => Some(method.to_string()),
        ":path" => Some(
            req.uri
                .path_and_query()
                .map_or_else(|| path.to_string(), |p| p.as_str().to_string()),
        ),
        ":scheme" => Some(if tls { "https" } else { "http" }.to_string()),
        ":authority" => req
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
            })
            .map(str::to_string),
        name => req
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let error = e.filter(|_| status >= 500 || status == 0).map(error_type);
    t.finish(name, method, (a, labels), status, error);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_without_port() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("host", "example.com:8081").unwrap();
        assert_eq!(request_host(&req), "example.com");
        req.insert_header("host", "[::1]:8081").unwrap();
        assert_eq!(request_host(&req), "::1");
        req.insert_header("host", "example.com").unwrap();
        assert_eq!(request_host(&req), "example.com");
    }

    #[test]
    fn failure_statuses() {
        assert_eq!(failure_status(&Error::new(ErrorType::ConnectTimedout)), 504);
        assert_eq!(failure_status(&Error::new(ErrorType::ReadTimedout)), 504);
        assert_eq!(
            failure_status(&Error::new_up(ErrorType::ConnectRefused)),
            502
        );
        assert_eq!(failure_status(&Error::new(ErrorType::HTTPStatus(413))), 413);
        // a client that stops sending its body
        assert_eq!(
            failure_status(&Error::new_down(ErrorType::ReadTimedout)),
            408
        );
    }
}
