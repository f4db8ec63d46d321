//! Upstream services: the targets of a service, which one a request goes
//! to, and what keeps requests away from sick ones.
//!
//! A [`Service`] is shared by every route naming it (and carried into the
//! next snapshot on reload when its config is unchanged), so its health
//! state, counters and Pingora's connection pools are per service.
//!
//! - **Targets** (`dns.rs`): one per address. Host names are resolved in the
//!   background every `dnsRefresh` (every address of a name is a target;
//!   a failed refresh keeps the last addresses), never per request; a
//!   request that finds a name never resolved resolves it once itself
//!   (an unresolvable name is a 502 for it).
//! - **Selection** ([`balance`]): round robin, random, least requests or
//!   consistent hashing, skipping targets that are unhealthy, ejected,
//!   breaker-open or already tried by this request.
//! - **Health** ([`health`]): active checks (`checks.rs`, run by the
//!   checker in `ops::upstreams`), passive ejection and the error-rate
//!   breaker.
//! - **Limits** (circuit breaking): requests, pending requests,
//!   connections and retries in progress per service; over one → 503 at
//!   once. Retries are also held to a budget: 20 % of the service's
//!   requests over the last 10 s (at least 10).

pub mod balance;
mod checks;
mod dns;
pub mod health;

use crate::config::model::{HashOn, ServiceConfig, Timeouts, Upstream};
use arc_swap::ArcSwap;
use balance::{Order, Weighted};
use health::Health;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::{Error, ErrorType, Result};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub const RESOLVE_ERROR: ErrorType = ErrorType::Custom("UpstreamResolveError");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub service: String,
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub service: String,
    pub reason: &'static str,
}

/// The upstream series, registered by `ops::metrics`.
#[derive(Clone, Default)]
pub struct UpstreamMetrics {
    /// Passive ejections.
    pub ejections: Family<TargetLabels, Counter>,
    /// Error-rate breaker openings.
    pub breaker_opened: Family<TargetLabels, Counter>,
    pub retries: Family<ServiceLabels, Counter>,
    /// Requests answered 503 at once, by reason.
    pub refused: Family<RefusedLabels, Counter>,
    /// 1 when the target takes traffic (set when metrics are read).
    pub target_up: Family<TargetLabels, Gauge>,
    /// The active checks' verdict (set when metrics are read).
    pub target_healthy: Family<TargetLabels, Gauge>,
}

/// Why a request got 503 without reaching a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxRequests,
    MaxPending,
    MaxConnections,
    NoHealthyTarget,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::MaxRequests => "max-requests",
            Refusal::MaxPending => "max-pending-requests",
            Refusal::MaxConnections => "max-connections",
            Refusal::NoHealthyTarget => "no-healthy-target",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoHealthyTarget => "no healthy upstream target is available",
            _ => "the upstream service is at its limit (circuit breaker); retry shortly",
        }
    }
}

/// One address of a target.
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Index into the service's `targets`.
    pub target: usize,
    pub weight: u32,
    outstanding: AtomicUsize,
    health: Mutex<Health>,
    /// An active check is in progress.
    checking: AtomicBool,
    /// When the next active check is due.
    next_check: Mutex<Option<Instant>>,
    /// The HTTP client of its active checks (connects to this address).
    checker: OnceLock<reqwest::Client>,
}

impl Weighted for Arc<Endpoint> {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn weight(&self) -> u32 {
        self.weight
    }
    fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }
}

impl Endpoint {
    fn new(addr: SocketAddr, target: usize, weight: u32) -> Endpoint {
        Endpoint {
            addr,
            target,
            weight,
            outstanding: AtomicUsize::new(0),
            health: Mutex::new(Health::default()),
            checking: AtomicBool::new(false),
            next_check: Mutex::new(None),
            checker: OnceLock::new(),
        }
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The targets as last resolved, in selection order.
struct Pool {
    endpoints: Vec<Arc<Endpoint>>,
    order: Order,
    /// Every host name was resolved at least once.
    resolved: bool,
    /// Why there are no endpoints, when there are none.
    error: Option<String>,
}

/// Retries allowed in a 10 s window: 20 % of requests, at least 10.
struct Budget {
    epoch: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    born: Instant,
}

const BUDGET_WINDOW: Duration = Duration::from_secs(10);
const BUDGET_PERCENT: u64 = 20;
const BUDGET_MIN: u64 = 10;

impl Budget {
    fn new() -> Budget {
        Budget {
            epoch: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    fn roll(&self, now: Instant) {
        let epoch = now.duration_since(self.born).as_secs() / BUDGET_WINDOW.as_secs();
        let seen = self.epoch.load(Ordering::Relaxed);
        if epoch != seen
            && self
                .epoch
                .compare_exchange(seen, epoch, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.requests.store(0, Ordering::Relaxed);
            self.retries.store(0, Ordering::Relaxed);
        }
    }

    fn request(&self, now: Instant) {
        self.roll(now);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn try_retry(&self, now: Instant) -> bool {
        self.roll(now);
        let allowed =
            (self.requests.load(Ordering::Relaxed) * BUDGET_PERCENT / 100).max(BUDGET_MIN);
        let used = self.retries.fetch_add(1, Ordering::Relaxed);
        if used >= allowed {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

pub struct Service {
    pub config: Arc<ServiceConfig>,
    pool: ArcSwap<Pool>,
    /// Health is tracked per request (passive checks or the breaker).
    tracked: bool,
    requests: AtomicUsize,
    pending: AtomicUsize,
    connections: AtomicUsize,
    retries: AtomicUsize,
    budget: Budget,
    /// One resolution at a time; when the last one ran.
    resolving: tokio::sync::Mutex<Option<Instant>>,
    metrics: UpstreamMetrics,
    /// `tls.ca` and the client certificate, loaded once.
    tls_ca: Option<Arc<pingora::protocols::tls::CaType>>,
    tls_client: Option<Arc<pingora::utils::tls::CertKey>>,
}

/// Load a service's `tls` files (checked when the config loaded).
#[allow(clippy::type_complexity)]
fn load_tls(
    c: &ServiceConfig,
) -> Result<
    (
        Option<Arc<pingora::protocols::tls::CaType>>,
        Option<Arc<pingora::utils::tls::CertKey>>,
    ),
    String,
> {
    let ca = match &c.tls.ca {
        Some(pem) => Some(Arc::new(pem.certificates()?.into_boxed_slice())),
        None => None,
    };
    let client = match &c.tls.client {
        Some((cert, key)) => Some(Arc::new(pingora::utils::tls::CertKey::new(
            cert.certificates()?,
            key.private_key()?,
        ))),
        None => None,
    };
    Ok((ca, client))
}

impl Service {
    pub fn new(config: Arc<ServiceConfig>, metrics: &UpstreamMetrics) -> Service {
        let mut endpoints = Vec::new();
        let mut resolved = true;
        for (i, t) in config.targets.iter().enumerate() {
            match dns::special(&t.upstream.host, t.upstream.port) {
                Some(Ok(addr)) => endpoints.push(Arc::new(Endpoint::new(addr, i, t.weight))),
                Some(Err(_)) | None => resolved = false,
            }
        }
        let order = Order::new(&endpoints, &config.balance);
        let (tls_ca, tls_client) = load_tls(&config).unwrap_or_else(|e| {
            log::error!("service {}: upstream TLS: {e}", config.name);
            (None, None)
        });
        let https = config.targets.iter().any(|t| t.upstream.tls);
        if https && !config.tls.verify {
            log::warn!(
                "service {}: certificates of its https targets are NOT verified (tls.verify: false)",
                config.name
            );
        }
        Service {
            tls_ca,
            tls_client,
            tracked: config.passive.is_some() || config.circuit.errors.is_some(),
            pool: ArcSwap::from_pointee(Pool {
                endpoints,
                order,
                resolved,
                error: None,
            }),
            config,
            requests: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
            budget: Budget::new(),
            resolving: tokio::sync::Mutex::new(None),
            metrics: metrics.clone(),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn target(&self, endpoint: &Endpoint) -> &Upstream {
        &self.config.targets[endpoint.target].upstream
    }

    fn labels(&self, endpoint: &Endpoint) -> TargetLabels {
        TargetLabels {
            service: self.config.name.clone(),
            target: endpoint.addr.to_string(),
        }
    }

    /// Count a request to this service, or refuse it (`maxRequests`).
    pub fn admit_request(
        self: &Arc<Self>,
        now: Instant,
    ) -> std::result::Result<RequestSlot, Refusal> {
        let n = self.requests.fetch_add(1, Ordering::AcqRel);
        let slot = RequestSlot(self.clone());
        if n >= self.config.circuit.max_requests {
            return Err(self.refuse(Refusal::MaxRequests));
        }
        self.budget.request(now);
        Ok(slot)
    }

    fn refuse(&self, why: Refusal) -> Refusal {
        self.metrics
            .refused
            .get_or_create(&RefusedLabels {
                service: self.config.name.clone(),
                reason: why.reason(),
            })
            .inc();
        why
    }

    /// A retry of a request to this service, if the budget and
    /// `maxRetries` allow one now.
    pub fn try_retry(self: &Arc<Self>, now: Instant) -> Option<RetrySlot> {
        let n = self.retries.fetch_add(1, Ordering::AcqRel);
        let slot = RetrySlot(self.clone());
        if n >= self.config.circuit.max_retries || !self.budget.try_retry(now) {
            return None;
        }
        self.metrics
            .retries
            .get_or_create(&ServiceLabels {
                service: self.config.name.clone(),
            })
            .inc();
        Some(slot)
    }

    /// Choose a target for one attempt. `key`: the hash key, if the service
    /// hashes; `tried`: addresses this request already failed on (avoided
    /// while another target is available).
    /// Whether the service has a target outside `these` (resolved now).
    pub fn has_target_besides(&self, these: &[SocketAddr]) -> bool {
        self.pool
            .load()
            .endpoints
            .iter()
            .any(|e| !these.contains(&e.addr))
    }

    /// A target for an attempt: one this request has not `tried` while
    /// another is admitted, and never one it `timed_out` on (a timeout is
    /// not tried again on the target that timed out).
    pub fn choose(
        self: &Arc<Self>,
        key: Option<&[u8]>,
        tried: &[SocketAddr],
        timed_out: &[SocketAddr],
        now: Instant,
    ) -> std::result::Result<Attempt, Refusal> {
        let c = &self.config.circuit;
        if self.connections.load(Ordering::Acquire) >= c.max_connections {
            return Err(self.refuse(Refusal::MaxConnections));
        }
        if self.pending.load(Ordering::Acquire) >= c.max_pending {
            return Err(self.refuse(Refusal::MaxPending));
        }
        let pool = self.pool.load();
        let eps = &pool.endpoints;
        let mut probe = false;
        let mut admit = |i: usize, avoid: bool| {
            let e = &eps[i];
            if timed_out.contains(&e.addr) || (avoid && tried.contains(&e.addr)) {
                return false;
            }
            let checked = self.config.health_check.is_some();
            if !self.tracked && !checked {
                return true;
            }
            match e.health().admit(now) {
                Some(a) => {
                    probe = a.probe;
                    true
                }
                None => false,
            }
        };
        let balance = &self.config.balance;
        let mut chosen = pool.order.pick(eps, balance, key, |i| admit(i, true));
        if chosen.is_none() && !tried.is_empty() {
            // every other target was tried: the same one again beats none
            chosen = pool.order.pick(eps, balance, key, |i| admit(i, false));
        }
        if chosen.is_none() && self.config.fail_open {
            chosen = pool
                .order
                .pick(eps, balance, key, |i| !timed_out.contains(&eps[i].addr));
        }
        let Some(i) = chosen else {
            return Err(self.refuse(Refusal::NoHealthyTarget));
        };
        let endpoint = eps[i].clone();
        endpoint.outstanding.fetch_add(1, Ordering::AcqRel);
        self.pending.fetch_add(1, Ordering::AcqRel);
        Ok(Attempt {
            service: self.clone(),
            endpoint,
            probe,
            connected: false,
            recorded: false,
        })
    }

    /// The Pingora peer for an attempt, with the route's timeouts.
    pub fn peer(&self, attempt: &Attempt, t: &Timeouts) -> Box<HttpPeer> {
        let up = self.target(&attempt.endpoint);
        let sni = match (up.tls, &self.config.tls.sni) {
            (false, _) => String::new(),
            (true, Some(name)) => name.clone(),
            (true, None) => up.host.clone(),
        };
        let mut peer = HttpPeer::new(attempt.endpoint.addr, up.tls, sni);
        if up.tls {
            let o = &mut peer.options;
            o.verify_cert = self.config.tls.verify;
            o.verify_hostname = self.config.tls.verify;
            o.ca = self.tls_ca.clone();
            if self.config.http2 {
                // h2 preferred, http/1.1 if the target does not offer it;
                // Pingora's default is one request per h2 connection
                o.alpn = pingora::protocols::ALPN::H2H1;
                o.max_h2_streams = 100;
            }
            peer.client_cert_key = self.tls_client.clone();
        } else if self.config.http2 {
            // cleartext: HTTP/2 with prior knowledge (h2c), no fallback
            peer.options.alpn = pingora::protocols::ALPN::H2;
            peer.options.max_h2_streams = 100;
        }
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        Box::new(peer)
    }

    fn record(&self, endpoint: &Endpoint, ok: bool, probe: bool, now: Instant) {
        let changed = endpoint.health().record(
            ok,
            probe,
            now,
            self.config.passive.as_ref(),
            self.config.circuit.errors.as_ref(),
        );
        if let Some(time) = changed.ejected {
            log::warn!(
                "service {}: target {} ejected for {}s after {} failed requests in a row",
                self.config.name,
                endpoint.addr,
                time.as_secs(),
                self.config.passive.map_or(0, |p| p.consecutive_failures)
            );
            self.metrics
                .ejections
                .get_or_create(&self.labels(endpoint))
                .inc();
        }
        if changed.breaker_opened {
            log::warn!(
                "service {}: circuit breaker of target {} opened",
                self.config.name,
                endpoint.addr
            );
            self.metrics
                .breaker_opened
                .get_or_create(&self.labels(endpoint))
                .inc();
        }
    }

    /// Set the target gauges (called when metrics are read).
    pub fn export_gauges(&self, now: Instant) {
        for e in &self.pool.load().endpoints {
            let h = e.health();
            let labels = self.labels(e);
            self.metrics
                .target_up
                .get_or_create(&labels)
                .set(i64::from(h.available(now)));
            if self.config.health_check.is_some() {
                self.metrics
                    .target_healthy
                    .get_or_create(&labels)
                    .set(i64::from(h.healthy));
            }
        }
    }

    /// The service's state for the admin API.
    pub fn report(&self, now: Instant) -> Value {
        let targets: Vec<Value> = self
            .pool
            .load()
            .endpoints
            .iter()
            .map(|e| {
                let h = e.health().clone();
                let breaker = match h.breaker {
                    health::Breaker::Closed => "closed",
                    health::Breaker::Open { until } if now < until => "open",
                    _ => "half-open",
                };
                json!({
                    "url": self.target(e).to_string(),
                    "address": e.addr.to_string(),
                    "weight": e.weight,
                    "available": h.available(now),
                    "healthy": h.healthy,
                    "ejectedForMs": h.ejected_until.filter(|t| *t > now).map(|t| (t - now).as_millis() as u64),
                    "ejections": h.ejections,
                    "breaker": breaker,
                    "outstanding": e.outstanding.load(Ordering::Relaxed),
                })
            })
            .collect();
        json!({
            "name": self.config.name,
            "requests": self.requests.load(Ordering::Relaxed),
            "pending": self.pending.load(Ordering::Relaxed),
            "connections": self.connections.load(Ordering::Relaxed),
            "retries": self.retries.load(Ordering::Relaxed),
            "targets": targets,
        })
    }
}

/// The hash key of a request for `hashOn`; `None` when the request has
/// none (then the service balances round robin).
pub fn hash_key(on: &HashOn, req: &RequestHeader, client_ip: Option<IpAddr>) -> Option<Vec<u8>> {
    match on {
        HashOn::Header(name) => req.headers.get(name).map(|v| v.as_bytes().to_vec()),
        HashOn::Cookie(name) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes().to_vec()),
        HashOn::ClientIp => client_ip.map(|ip| ip.to_string().into_bytes()),
    }
}

/// A request counted against `maxRequests` while it lives.
pub struct RequestSlot(Arc<Service>);

impl RequestSlot {
    pub fn service(&self) -> &Arc<Service> {
        &self.0
    }
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A retry counted against `maxRetries` while it lives.
pub struct RetrySlot(Arc<Service>);

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One attempt at a target: counted as outstanding on it, as pending on
/// the service until connected, then as a connection in use, until it is
/// dropped (the response ended, or a retry replaced it). Its outcome,
/// recorded once, feeds the target's health.
pub struct Attempt {
    service: Arc<Service>,
    pub endpoint: Arc<Endpoint>,
    probe: bool,
    connected: bool,
    recorded: bool,
}

impl Attempt {
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    pub fn target(&self) -> &Upstream {
        self.service.target(&self.endpoint)
    }

    /// Its outcome was recorded.
    pub fn finished(&self) -> bool {
        self.recorded
    }

    /// The connection is set up (new or reused).
    pub fn connected(&mut self) {
        if !self.connected {
            self.connected = true;
            self.service.pending.fetch_sub(1, Ordering::AcqRel);
            self.service.connections.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The outcome: `ok` false for a connect failure, a timeout or a 5xx.
    /// Only the first call counts.
    pub fn finish(&mut self, ok: bool) {
        if !self.recorded {
            self.recorded = true;
            if self.service.tracked {
                self.service
                    .record(&self.endpoint, ok, self.probe, Instant::now());
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let counter = if self.connected {
            &self.service.connections
        } else {
            &self.service.pending
        };
        counter.fetch_sub(1, Ordering::AcqRel);
        self.endpoint.outstanding.fetch_sub(1, Ordering::AcqRel);
        if self.probe && !self.recorded {
            self.endpoint.health().probe_abandoned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Balance, CircuitBreaker, PassiveCheck, TargetSpec};

    fn service(targets: &[&str], circuit: CircuitBreaker) -> Arc<Service> {
        let mut c = ServiceConfig::inline(
            "t",
            crate::config::values::parse_upstream_url(targets[0]).unwrap(),
        );
        c.targets = targets
            .iter()
            .map(|t| TargetSpec {
                upstream: crate::config::values::parse_upstream_url(t).unwrap(),
                weight: 1,
            })
            .collect();
        c.circuit = circuit;
        c.balance = Balance::RoundRobin;
        c.passive = Some(PassiveCheck {
            consecutive_failures: 1,
            ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(10),
        });
        Arc::new(Service::new(Arc::new(c), &UpstreamMetrics::default()))
    }

    #[test]
    fn limits_refuse_and_slots_release() {
        let s = service(
            &["http://10.0.0.1:80"],
            CircuitBreaker {
                max_requests: 1,
                max_pending: 1,
                max_retries: 1,
                ..CircuitBreaker::default()
            },
        );
        let now = Instant::now();
        let slot = s.admit_request(now).expect("first");
        assert_eq!(s.admit_request(now).err(), Some(Refusal::MaxRequests));
        let a = s.choose(None, &[], &[], now).expect("a target");
        assert_eq!(
            s.choose(None, &[], &[], now).err(),
            Some(Refusal::MaxPending),
            "one pending at most"
        );
        drop(a);
        drop(slot);
        assert!(s.admit_request(now).is_ok(), "released on drop");
        let r = s.try_retry(now).expect("one retry");
        assert!(s.try_retry(now).is_none(), "maxRetries 1");
        drop(r);
        assert!(s.try_retry(now).is_some());
    }

    #[test]
    fn retries_avoid_tried_targets_and_ejected_ones() {
        let s = service(
            &["http://10.0.0.1:80", "http://10.0.0.2:80"],
            CircuitBreaker::default(),
        );
        let now = Instant::now();
        let mut a = s.choose(None, &[], &[], now).unwrap();
        let first = a.endpoint.addr;
        let b = s.choose(None, &[first], &[], now).unwrap();
        assert_ne!(b.endpoint.addr, first);
        // one failure ejects (consecutiveFailures 1): the other takes all
        a.finish(false);
        for _ in 0..4 {
            assert_ne!(s.choose(None, &[], &[], now).unwrap().endpoint.addr, first);
        }
        // everything tried: the same target again rather than nothing
        let other = b.endpoint.addr;
        let again = s.choose(None, &[other], &[], now).unwrap();
        assert_eq!(again.endpoint.addr, other);
    }

    #[test]
    fn resolution_keeps_endpoints_and_reports_names_that_never_resolve() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = service(
            &["http://localhost:8080", "http://10.0.0.9:80"],
            CircuitBreaker::default(),
        );
        let before: Vec<Arc<Endpoint>> = s.pool.load().endpoints.clone();
        assert_eq!(before.len(), 2);
        assert!(rt.block_on(s.resolve(Duration::ZERO)).is_ok());
        let after = s.pool.load().endpoints.clone();
        assert!(
            before.iter().zip(&after).all(|(a, b)| Arc::ptr_eq(a, b)),
            "same addresses: same endpoints (their health state stays)"
        );
        let bad = service(&["http://catalog.invalid:80"], CircuitBreaker::default());
        let e = rt.block_on(bad.ensure_resolved()).unwrap_err();
        assert_eq!(*e.etype(), RESOLVE_ERROR);
        assert!(e.to_string().contains("never resolves"), "{e}");
    }

    #[test]
    fn budget_allows_a_fifth_of_requests_with_a_floor() {
        let b = Budget::new();
        let now = Instant::now();
        for _ in 0..10 {
            assert!(b.try_retry(now));
        }
        assert!(!b.try_retry(now), "floor of 10 used up");
        for _ in 0..100 {
            b.request(now);
        }
        for _ in 0..10 {
            assert!(b.try_retry(now));
        }
        assert!(!b.try_retry(now), "20 % of 100");
        assert!(b.try_retry(now + BUDGET_WINDOW), "a new window");
    }

    #[test]
    fn hash_keys() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("cookie", "a=1; session=abc; b=2")
            .unwrap();
        req.insert_header("x-user", "u1").unwrap();
        let on = |s: &str| match s {
            "h" => HashOn::Header(http::HeaderName::from_static("x-user")),
            _ => HashOn::Cookie("session".into()),
        };
        assert_eq!(hash_key(&on("h"), &req, None), Some(b"u1".to_vec()));
        assert_eq!(hash_key(&on("c"), &req, None), Some(b"abc".to_vec()));
        let ip = Some(IpAddr::from([10, 1, 2, 3]));
        assert_eq!(
            hash_key(&HashOn::ClientIp, &req, ip),
            Some(b"10.1.2.3".to_vec())
        );
    }
}
