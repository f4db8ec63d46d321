//! Prometheus metrics (the `prometheus-client` crate, OpenMetrics text).
//! Label values are bounded: route ids from config, a fixed set of methods,
//! status classes; never raw paths.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    route: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    route: String,
    policy: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Why an upstream request failed, for `flexgw_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    Resolve,
    Connect,
    Timeout,
    Other,
}

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    rejections: Family<RejectionLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    overloaded: Counter,
    upgrades: Counter,
    in_flight: Gauge,
    connections: Gauge,
    refused: Family<ReasonLabels, Counter>,
    client_timeouts: Family<PhaseLabels, Counter>,
    tls_handshake_failures: Counter,
    config_documents: Family<StateLabels, Gauge>,
    config_generation: Gauge,
    config_last_reload: Gauge,
    config_last_reload_success: Gauge,
    headers_dropped: Family<ReasonLabels, Counter>,
    /// `flexgw_tracing_spans_total{result}`: exported, dropped_queue_full,
    /// dropped_export_failed.
    pub tracing_spans: Family<[(&'static str, &'static str); 1], Counter>,
    /// For requests that matched no route.
    no_route: OnceLock<RouteMetrics>,
    upstream: crate::upstream::UpstreamMetrics,
}

/// Counts one open client connection in `flexgw_connections_open` for as
/// long as it lives (held by `connection::Guarded` for the connection).
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn duration_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
];
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

fn method_index(m: &str) -> usize {
    METHODS[..7].iter().position(|k| *k == m).unwrap_or(7)
}

fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        _ => 5,
    }
}

/// One route's series, looked up once (when the route is built) instead of
/// per request: the hot path increments shared atomics, no label strings.
pub struct RouteMetrics {
    route: String,
    family: Family<RequestLabels, Counter>,
    requests: [[OnceLock<Counter>; 6]; 8],
    duration: Histogram,
    rejections: Family<RejectionLabels, Counter>,
}

impl RouteMetrics {
    fn requests(&self, method: usize, class: usize) -> &Counter {
        self.requests[method][class].get_or_init(|| {
            self.family
                .get_or_create(&RequestLabels {
                    route: self.route.clone(),
                    method: METHODS[method],
                    status: CLASSES[class],
                })
                .clone()
        })
    }

    /// A policy of this route answered the request itself (a rejection:
    /// 401, 403, 429, ...; or a CORS preflight).
    pub fn rejected(&self, policy: &'static str) {
        self.rejections
            .get_or_create(&RejectionLabels {
                route: self.route.clone(),
                policy,
            })
            .inc();
    }
}

/// Requests that matched no route are labelled with this route.
pub const NO_ROUTE: &str = "(none)";

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("flexgw");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests handled, by route, method and status class",
            requests.clone(),
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from request start to the end of the response, by route",
            duration.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures by route and kind (resolve, connect, timeout, other)",
            upstream_errors.clone(),
        );
        let rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "policy_rejections",
            "Requests a policy answered itself instead of proxying them, by route and policy",
            rejections.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by result (success, failure)",
            reloads.clone(),
        );
        let overloaded = Counter::default();
        registry.register(
            "overload_rejections",
            "Requests answered 503 at once because maxRequestsInFlight were being handled",
            overloaded.clone(),
        );
        let upgrades = Counter::default();
        registry.register(
            "upgrades",
            "Connections upgraded to another protocol (101 Switching Protocols: WebSocket)",
            upgrades.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests being handled right now",
            in_flight.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open",
            connections.clone(),
        );
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Client connections closed at accept, by limit (listener_limit, client_limit)",
            refused.clone(),
        );
        let headers_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "request_headers_dropped",
            "Client request headers removed (or, with underscoresInHeaders: reject, refused) before routing, by reason (underscore, underscore_rejected, untrusted_forwarding)",
            headers_dropped.clone(),
        );
        let tracing_spans = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "tracing_spans",
            "Spans of sampled requests, by result: exported, dropped_queue_full (the export queue was full), dropped_export_failed (the collector was down, slow or refused them)",
            tracing_spans.clone(),
        );
        for result in ["exported", "dropped_queue_full", "dropped_export_failed"] {
            let _ = tracing_spans.get_or_create(&[("result", result)]);
        }
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because a log writer fell behind (its queue was full) or an output failed (file, http, syslog); requests never wait for the log",
            crate::ops::logging::DROPPED.clone(),
        );
        let client_timeouts = Family::<PhaseLabels, Counter>::default();
        registry.register(
            "client_timeouts",
            "Clients cut off for slowness or size: handshake (handshakeTimeout), header (headerTimeout), header_size (a head far over maxHeaderSize), body (bodyTimeout)",
            client_timeouts.clone(),
        );
        let config_documents = Family::<StateLabels, Gauge>::default();
        registry.register(
            "config_documents",
            "Configuration documents by state after the last load: applied (serving), refused (errors; the previous config serves), pending (valid but not serving: another file was refused)",
            config_documents.clone(),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "How many configurations this process has applied (1 at start, +1 per accepted reload)",
            config_generation.clone(),
        );
        let config_last_reload = Gauge::default();
        registry.register(
            "config_last_reload_timestamp_seconds",
            "When the configuration was last loaded or a reload attempted (Unix time)",
            config_last_reload.clone(),
        );
        let config_last_reload_success = Gauge::default();
        registry.register(
            "config_last_reload_success",
            "1 when the last load or reload attempt was applied, 0 when it was refused",
            config_last_reload_success.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes with clients that failed (protocol or certificate errors, a client that closed; timeouts are client_timeouts{phase=\"handshake\"})",
            tls_handshake_failures.clone(),
        );
        let upstream = crate::upstream::UpstreamMetrics::default();
        registry.register(
            "upstream_ejections",
            "Targets ejected by passive health checks (failed requests in a row), by service and target",
            upstream.ejections.clone(),
        );
        registry.register(
            "upstream_breaker_opened",
            "Times a target's error-rate circuit breaker opened, by service and target",
            upstream.breaker_opened.clone(),
        );
        registry.register(
            "upstream_retries",
            "Upstream attempts that were retries, by service",
            upstream.retries.clone(),
        );
        registry.register(
            "upstream_refused",
            "Requests answered 503 without reaching a target, by service and reason (max-requests, max-pending-requests, max-connections, no-healthy-target)",
            upstream.refused.clone(),
        );
        registry.register(
            "upstream_target_up",
            "1 when a target takes traffic (healthy, not ejected, breaker not open), by service and target",
            upstream.target_up.clone(),
        );
        registry.register(
            "upstream_target_healthy",
            "The active health checks' verdict (1 healthy), by service and target",
            upstream.target_healthy.clone(),
        );
        registry.register(
            "shared_storage_errors",
            "Calls to the shared storage (Redis) that failed or timed out",
            crate::store::ERRORS.clone(),
        );
        registry.register(
            "ext_authz_checks",
            "External authorization checks by result: allowed, denied, failed (refused), failed_allowed (failureModeAllow)",
            crate::policy::ext_authz::CHECKS.clone(),
        );
        let cache = &crate::policy::cache::COUNTS;
        registry.register(
            "cache_lookups",
            "Requests on routes with a response cache, by result: hit (served from the cache), miss, expired (found stale: fetched again), bypass (not looked up: requestExpression said no, or the key's last answer could not be stored)",
            cache.lookups.clone(),
        );
        registry.register(
            "cache_stores",
            "Upstream responses the response cache saw, by result: stored, uncacheable (status, Cache-Control, Set-Cookie, Vary: *, ...), too_big (over 1 MB)",
            cache.stores.clone(),
        );
        registry.register(
            "cache_evictions",
            "Entries the response cache dropped to stay within maxCacheEntries / maxCacheSize",
            cache.evicted.clone(),
        );
        registry.register(
            "cache_invalidations",
            "Invalidations asked through invalidationHeader (one entry or all)",
            cache.invalidations.clone(),
        );
        registry.register_collector(Box::new(super::heap::HeapMetrics));
        #[cfg(feature = "wasm")]
        registry.register_collector(Box::new(WasmMetrics));
        Metrics {
            upstream,
            registry,
            requests,
            duration,
            upstream_errors,
            rejections,
            reloads,
            overloaded,
            upgrades,
            in_flight,
            connections,
            refused,
            client_timeouts,
            tls_handshake_failures,
            config_documents,
            config_generation,
            config_last_reload,
            config_last_reload_success,
            headers_dropped,
            tracing_spans,
            no_route: OnceLock::new(),
        }
    }

    /// The upstream services' series.
    pub fn upstream(&self) -> &crate::upstream::UpstreamMetrics {
        &self.upstream
    }

    /// The series of one route (built with the route, shared by its requests).
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_string(),
            family: self.requests.clone(),
            requests: Default::default(),
            duration: self
                .duration
                .get_or_create(&RouteLabels {
                    route: route.to_string(),
                })
                .clone(),
            rejections: self.rejections.clone(),
        }
    }

    pub fn no_route(&self) -> &RouteMetrics {
        self.no_route.get_or_init(|| self.route(NO_ROUTE))
    }

    pub fn connection_opened(&self) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.connections.clone())
    }

    pub fn connection_refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// `n` client headers removed before routing (or a request refused
    /// for them), for `reason`.
    pub fn headers_dropped(&self, reason: &'static str, n: u64) {
        self.headers_dropped
            .get_or_create(&ReasonLabels { reason })
            .inc_by(n);
    }

    pub fn client_timeout(&self, phase: &'static str) {
        self.client_timeouts
            .get_or_create(&PhaseLabels { phase })
            .inc();
    }

    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    /// A response switched protocols (the connection is now a tunnel).
    pub fn upgraded(&self) {
        self.upgrades.inc();
    }

    pub fn overloaded(&self) {
        self.overloaded.inc();
    }

    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    pub fn request_done(&self, route: &RouteMetrics, method: &str, status: u16, seconds: f64) {
        self.in_flight.dec();
        route
            .requests(method_index(method), class_index(status))
            .inc();
        route.duration.observe(seconds);
    }

    pub fn upstream_error(&self, route: &str, kind: UpstreamError) {
        let kind = match kind {
            UpstreamError::Resolve => "resolve",
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Other => "other",
        };
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                route: route.to_string(),
                kind,
            })
            .inc();
    }

    /// The apply state after a load or reload attempt.
    pub fn config_state(
        &self,
        generation: u64,
        at_unix: i64,
        ok: bool,
        documents: [(&'static str, usize); 3],
    ) {
        self.config_generation.set(generation as i64);
        self.config_last_reload.set(at_unix);
        self.config_last_reload_success.set(ok as i64);
        for (state, n) in documents {
            self.config_documents
                .get_or_create(&StateLabels { state })
                .set(n as i64);
        }
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabels {
                result: if ok { "success" } else { "failure" },
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            log::warn!("metrics encoding failed: {e}");
        }
        out
    }
}

/// The metrics custom policies define (`proxy_define_metric`), one series
/// per name: `flexgw_wasm_counter_total`, `flexgw_wasm_gauge`,
/// `flexgw_wasm_histogram` (sum and count), labelled `name`.
#[cfg(feature = "wasm")]
#[derive(Debug)]
struct WasmMetrics;

#[cfg(feature = "wasm")]
impl prometheus_client::collector::Collector for WasmMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use crate::wasm::shared::{all_metrics, MetricKind};
        use prometheus_client::metrics::MetricType;
        use std::sync::atomic::Ordering;
        let all = all_metrics();
        let kinds = [
            (MetricKind::Counter, "wasm_counter", MetricType::Counter),
            (MetricKind::Gauge, "wasm_gauge", MetricType::Gauge),
            (
                MetricKind::Histogram,
                "wasm_histogram",
                MetricType::Histogram,
            ),
        ];
        for (kind, name, ty) in kinds {
            let of_kind: Vec<_> = all.iter().filter(|m| m.kind == kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            let help = "Defined by custom policies (proxy_define_metric), by name";
            let mut family = encoder.encode_descriptor(name, help, None, ty)?;
            for m in of_kind {
                let labels = [("name", m.name.as_str())];
                let mut e = family.encode_family(&labels)?;
                let v = m.get();
                match kind {
                    MetricKind::Counter => e
                        .encode_counter::<prometheus_client::encoding::NoLabelSet, u64, u64>(
                            &(v.max(0) as u64),
                            None,
                        )?,
                    MetricKind::Gauge => e.encode_gauge(&v)?,
                    MetricKind::Histogram => {
                        let count = m.count.load(Ordering::Relaxed);
                        e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                            v as f64,
                            count,
                            &[(f64::INFINITY, count)],
                            None,
                        )?
                    }
                }
            }
        }
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bounded_labels() {
        let m = Metrics::new();
        m.request_started();
        let route = m.route("health-check");
        route.rejected("rate-limiting");
        m.request_done(&route, "GET", 429, 0.001);
        m.request_started();
        m.request_done(m.no_route(), "BREW", 404, 0.001);
        m.upstream_error("public-products", UpstreamError::Timeout);
        m.reload(false);
        let text = m.render();
        assert!(
            text.contains(
                r#"flexgw_requests_total{route="health-check",method="GET",status="4xx"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"flexgw_policy_rejections_total{route="health-check",policy="rate-limiting"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"flexgw_upstream_errors_total{route="public-products",kind="timeout"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"flexgw_config_reloads_total{result="failure"} 1"#),
            "{text}"
        );
        assert!(text.contains("flexgw_requests_in_flight 0"), "{text}");
        assert!(
            text.contains(r#"flexgw_requests_total{route="(none)",method="OTHER",status="4xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("flexgw_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
