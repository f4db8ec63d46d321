//! Prometheus metrics (the `prometheus-client` crate, OpenMetrics text).
//! Label values are bounded: route ids from config, a fixed set of methods,
//! status classes; never raw paths.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
struct ResultLabels {
    result: &'static str,
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
    rate_limited: Family<RouteLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    in_flight: Gauge,
    connections: Gauge,
}

/// Counts one open client connection in `flexgw_connections_open` for as
/// long as it lives. The proxy keeps it in the request context and carries it
/// from request to request on a keep-alive connection; when the connection
/// ends, Pingora drops it.
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

fn method_label(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
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
        let rate_limited = Family::<RouteLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429 by the rate-limiting policy, by route",
            rate_limited.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by result (success, failure)",
            reloads.clone(),
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
            "Client connections open (that have sent at least one request)",
            connections.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            upstream_errors,
            rate_limited,
            reloads,
            in_flight,
            connections,
        }
    }

    pub fn connection_opened(&self) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.connections.clone())
    }

    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    pub fn request_done(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.in_flight.dec();
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method_label(method),
                status: status_class(status),
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
        if status == 429 {
            self.rate_limited
                .get_or_create(&RouteLabels {
                    route: route.to_string(),
                })
                .inc();
        }
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
        m.request_done("health-check", "GET", 429, 0.001);
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
            text.contains(r#"flexgw_rate_limited_total{route="health-check"} 1"#),
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
            text.contains("flexgw_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
