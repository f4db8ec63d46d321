//! OpenTelemetry tracing: W3C trace context in and out, one SERVER span per
//! request and one CLIENT span per upstream attempt, exported over
//! OTLP/HTTP (protobuf) in batches, off the request path.
//!
//! The request path only fills a [`SpanData`] and hands it to a bounded
//! queue (`try_send`: never waits); an exporter thread of its own batches
//! and posts them. A full queue or a failed export drops spans, counted in
//! `flexgw_tracing_spans_total{result}` — requests are never slowed or
//! failed by tracing.
//!
//! Sampling follows the parent: a `traceparent` that says sampled is
//! traced, one that says not sampled is not; without one, a request with
//! `x-client-trace-id` is traced at `sampling.client` percent, others (and
//! those that draw missed) at `sampling.random` percent, and what is chosen
//! then passes `sampling.overall` (Envoy's rules, which Flex's
//! percentages are). A route's `tracing` policy draws again with its own
//! percentages. Unsampled requests still carry a `traceparent` upstream
//! (with the not-sampled flag), as W3C asks.
//!
//! Spans go over OTLP/HTTP (protobuf) or OTLP/gRPC ([`crate::grpc`]).

mod otlp;

use crate::config::model::{LabelValue, OtlpProtocol, Sampling, TraceOverride, TracingSettings};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

/// A span's attributes under the names of the semantic conventions.
pub type Attributes = Vec<(&'static str, Value)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    Client,
    /// A policy's work on the request (`policySpans`).
    Internal,
}

/// A finished span, as exported.
#[derive(Debug, Clone)]
pub struct SpanData {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub trace_state: Option<String>,
    pub sampled: bool,
    pub name: String,
    pub kind: Kind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// Attributes named in the configuration (`labels`).
    pub labels: Vec<(String, String)>,
    pub error: bool,
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    (out != [0u8; N]).then_some(out)
}

/// A W3C `traceparent` (version 00, or a later one read as 00): trace id,
/// parent span id, sampled flag. `None` when malformed (a new trace starts).
pub fn parse_traceparent(value: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    if version.len() != 2 || version == "ff" || (version == "00" && rest.is_some()) {
        return None;
    }
    u8::from_str_radix(version, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16)
        .ok()
        .filter(|_| flags.len() == 2)?;
    Some((unhex(trace)?, unhex(parent)?, flags & 1 == 1))
}

fn traceparent(trace: &[u8; 16], span: &[u8; 8], sampled: bool) -> String {
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    push_hex(&mut out, trace);
    out.push('-');
    push_hex(&mut out, span);
    out.push_str(if sampled { "-01" } else { "-00" });
    out
}

fn new_id<const N: usize>() -> [u8; N] {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut id = [0u8; N];
    while id == [0u8; N] {
        rng.fill(&mut id[..]);
    }
    id
}

/// Percent (0-100, in millionths) as a yes/no draw.
fn draw(per_million: u32) -> bool {
    per_million >= 1_000_000 || (per_million > 0 && rand::random::<u32>() % 1_000_000 < per_million)
}

/// A request without a parent: traced? (`forced`: it has `x-client-trace-id`).
fn decide(s: &Sampling, forced: bool) -> bool {
    ((forced && draw(s.client)) || draw(s.random)) && draw(s.overall)
}

/// One configuration's tracer: its settings, and the queue to its
/// exporter thread (started with the first span).
pub struct Tracer {
    pub settings: TracingSettings,
    queue: OnceLock<std::sync::mpsc::SyncSender<SpanData>>,
    spans: Family<[(&'static str, &'static str); 1], Counter>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Tracer {
    pub fn new(
        settings: TracingSettings,
        spans: Family<[(&'static str, &'static str); 1], Counter>,
    ) -> Tracer {
        Tracer {
            settings,
            queue: OnceLock::new(),
            spans,
        }
    }

    fn count(&self, result: &'static str, n: u64) {
        self.spans.get_or_create(&[("result", result)]).inc_by(n);
    }

    /// Start a request's trace from its headers.
    pub fn start(self: &Arc<Self>, headers: &http::HeaderMap) -> RequestTrace {
        let parent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let trace_state = parent
            .and(headers.get("tracestate"))
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty() && s.len() <= 512)
            .map(str::to_string);
        let forced = headers.contains_key("x-client-trace-id");
        let (trace_id, parent_id, sampled) = match parent {
            Some((t, p, sampled)) => (t, Some(p), sampled),
            None => (new_id(), None, decide(&self.settings.sampling, forced)),
        };
        RequestTrace {
            tracer: self.clone(),
            trace_id,
            span_id: new_id(),
            parent: parent_id,
            trace_state,
            sampled,
            forced,
            route: None,
            start_ns: now_ns(),
            client: None,
            finished: Vec::new(),
        }
    }

    /// Hand finished spans to the exporter; never waits.
    fn send(&self, spans: Vec<SpanData>) {
        let queue = self.queue.get_or_init(|| exporter(self));
        for s in spans {
            if queue.try_send(s).is_err() {
                self.count("dropped_queue_full", 1);
            }
        }
    }
}

/// A request's trace: the SERVER span's ids, and its CLIENT spans.
pub struct RequestTrace {
    tracer: Arc<Tracer>,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    trace_state: Option<String>,
    pub sampled: bool,
    /// It came with `x-client-trace-id`.
    forced: bool,
    /// The route's `tracing` policy.
    route: Option<Arc<TraceOverride>>,
    start_ns: u64,
    /// The upstream attempt in progress.
    client: Option<SpanData>,
    finished: Vec<SpanData>,
}

impl RequestTrace {
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The route is known: its `tracing` policy, if it has one, decides
    /// again (a parent's decision stands) and names the span.
    pub fn for_route(&mut self, o: Option<&Arc<TraceOverride>>) {
        let Some(o) = o else { return };
        if let (None, Some(s)) = (self.parent, &o.sampling) {
            self.sampled = decide(s, self.forced);
        }
        self.route = Some(o.clone());
    }

    /// The span name the route's policy gives, if any.
    pub fn span_name(&self) -> Option<&str> {
        self.route.as_ref()?.span_name.as_deref()
    }

    /// The labels' values: the server's, then the route's (which replace
    /// one of the same name); `header` reads the request (`:method` too).
    pub fn labels(&self, header: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        let route = self.route.as_ref().map_or(&[][..], |r| &r.labels[..]);
        let server = self
            .tracer
            .settings
            .labels
            .iter()
            .filter(|l| !route.iter().any(|r| r.name == l.name));
        server
            .chain(route)
            .filter_map(|l| {
                let v = match &l.value {
                    LabelValue::Fixed(v) => Some(v.clone()),
                    LabelValue::Header { name, default } => {
                        header(name).or_else(|| default.clone())
                    }
                };
                Some((l.name.clone(), v?))
            })
            .collect()
    }

    /// The `traceparent` of the server span (for a response header).
    pub fn traceparent(&self) -> String {
        traceparent(&self.trace_id, &self.span_id, self.sampled)
    }

    /// An upstream attempt starts (its peer chosen, before connecting):
    /// its CLIENT span.
    pub fn client_start(&mut self, peer: std::net::SocketAddr) {
        self.client_end(None, None);
        // an unsampled span is never exported: its id is all it needs
        let attributes = if self.sampled {
            vec![
                ("server.address", Value::from(peer.ip().to_string())),
                ("server.port", Value::Int(i64::from(peer.port()))),
            ]
        } else {
            Vec::new()
        };
        self.client = Some(SpanData {
            trace_id: self.trace_id,
            span_id: new_id(),
            parent: Some(self.span_id),
            trace_state: self.trace_state.clone(),
            sampled: self.sampled,
            name: String::new(),
            kind: Kind::Client,
            start_ns: if self.sampled { now_ns() } else { 0 },
            end_ns: 0,
            attributes,
            labels: Vec::new(),
            error: false,
        });
    }

    /// Whether this request's policies get spans of their own.
    pub fn wants_policy_spans(&self) -> bool {
        self.sampled && self.tracer.settings.policy_spans
    }

    /// The policies that ran on the request: an INTERNAL span each, under
    /// the SERVER span, named `policy {name}`.
    pub fn policy_spans(&mut self, ran: Vec<crate::policy::chain::PolicyTiming>) {
        if !self.sampled {
            return;
        }
        for t in ran {
            let mut attributes = vec![("flexgw.policy", Value::from(t.name))];
            if t.answered {
                attributes.push(("flexgw.policy.answered", Value::Bool(true)));
            }
            self.finished.push(SpanData {
                trace_id: self.trace_id,
                span_id: new_id(),
                parent: Some(self.span_id),
                trace_state: self.trace_state.clone(),
                sampled: true,
                name: format!("policy {}", t.name),
                kind: Kind::Internal,
                start_ns: t.start_ns,
                end_ns: t.end_ns,
                attributes,
                labels: Vec::new(),
                error: false,
            });
        }
    }

    /// The response header to answer the `traceparent` in, if configured.
    pub fn response_header(&self) -> Option<&http::HeaderName> {
        self.tracer.settings.response_header.as_ref()
    }

    /// The `traceparent` the upstream request carries: the attempt's
    /// CLIENT span as the parent (the server span when none is open).
    pub fn upstream_traceparent(&self) -> String {
        let span = self.client.as_ref().map_or(&self.span_id, |c| &c.span_id);
        traceparent(&self.trace_id, span, self.sampled)
    }

    /// The upstream answered with this status.
    pub fn client_status(&mut self, status: u16) {
        if let Some(c) = self.client.as_mut().filter(|_| self.sampled) {
            c.attributes
                .push(("http.response.status_code", Value::Int(i64::from(status))));
            c.error = status >= 500;
        }
    }

    /// The attempt ended; `error`: why it failed.
    pub fn client_end(&mut self, error: Option<&str>, method: Option<&str>) {
        if let Some(mut c) = self.client.take().filter(|_| self.sampled) {
            c.end_ns = now_ns();
            if let Some(m) = method {
                c.name = m.to_string();
                c.attributes.push(("http.request.method", Value::from(m)));
            }
            if let Some(e) = error {
                c.error = true;
                c.attributes.push(("error.type", Value::from(e)));
            }
            self.finished.push(c);
        }
    }

    /// The request is done: its SERVER span (and any CLIENT span still
    /// open) go to the exporter, when sampled.
    pub fn finish(
        mut self,
        name: String,
        method: &str,
        (mut attributes, labels): (Attributes, Vec<(String, String)>),
        status: u16,
        error: Option<&str>,
    ) {
        self.client_end(None, None);
        if !self.sampled {
            return;
        }
        for c in &mut self.finished {
            if c.name.is_empty() {
                c.name = method.to_string();
                c.attributes
                    .push(("http.request.method", Value::from(method)));
            }
        }
        if let Some(e) = error {
            attributes.push(("error.type", Value::from(e)));
        } else if status >= 500 {
            attributes.push(("error.type", Value::from(status.to_string())));
        }
        let server = SpanData {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            trace_state: self.trace_state.take(),
            sampled: true,
            name,
            kind: Kind::Server,
            start_ns: self.start_ns,
            end_ns: now_ns(),
            attributes,
            labels,
            error: status >= 500 || error.is_some(),
        };
        let mut spans = std::mem::take(&mut self.finished);
        spans.push(server);
        self.tracer.send(spans);
    }
}

/// The exporter thread: batches of up to `maxExportBatchSize`, sent when
/// full or every `scheduledDelay`; ends (after a last batch) when the
/// tracer is dropped (a reload replaced its settings, or shutdown).
fn exporter(t: &Tracer) -> std::sync::mpsc::SyncSender<SpanData> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<SpanData>(t.settings.max_queue);
    let s = t.settings.clone();
    let spans = t.spans.clone();
    let count = move |result: &'static str, n: usize| {
        spans.get_or_create(&[("result", result)]).inc_by(n as u64);
    };
    let mut resource: Vec<(String, Value)> = vec![(
        "service.name".to_string(),
        Value::from(s.service_name.clone()),
    )];
    resource.extend(
        s.resource
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone()))),
    );
    let spawned = std::thread::Builder::new()
        .name("flexgw-otlp".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("tracing: cannot start the exporter: {e}");
                    return;
                }
            };
            // reqwest's timers and connector belong to this runtime
            let _entered = rt.enter();
            let mut sink = match Sink::new(&s) {
                Ok(sink) => sink,
                Err(e) => {
                    log::error!("tracing: cannot make the OTLP client: {e}");
                    return;
                }
            };
            // Under load the thread looks at the queue every `tick`
            // instead of being woken for each span (a futex wake and a
            // context switch per span, paid on the request path: about
            // 10 us of a request's CPU in scenario (t), benches/README.md);
            // idle, it blocks until a span comes.
            let tick = s.delay.min(POLL_TICK);
            let mut open = true;
            while open {
                let mut batch = Vec::with_capacity(s.batch_size.min(1024));
                let deadline = std::time::Instant::now() + s.delay;
                loop {
                    let before = batch.len();
                    while batch.len() < s.batch_size {
                        match rx.try_recv() {
                            Ok(span) => batch.push(span),
                            Err(std::sync::mpsc::TryRecvError::Empty) => break,
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                                open = false;
                                break;
                            }
                        }
                    }
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if !open || batch.len() >= s.batch_size || left.is_zero() {
                        break;
                    }
                    if batch.len() > before {
                        // spans are coming: look again after a tick (at
                        // once when a tick's worth nears the queue's size)
                        if (batch.len() - before) * 2 < s.max_queue {
                            std::thread::sleep(tick.min(left));
                        }
                        continue;
                    }
                    match rx.recv_timeout(left) {
                        Ok(span) => batch.push(span),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                let body = otlp::encode(&resource, &batch);
                match rt.block_on(sink.export(&s, body)) {
                    Ok(()) => count("exported", batch.len()),
                    Err(e) => {
                        log::warn!("tracing: exporting {} span(s) failed: {e}", batch.len());
                        count("dropped_export_failed", batch.len());
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("tracing: cannot start the exporter thread: {e}");
    }
    tx
}

/// OTLP/gRPC's method.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Where batches go: OTLP/HTTP or OTLP/gRPC.
enum Sink {
    Http(reqwest::Client),
    Grpc(crate::grpc::Client),
}

impl Sink {
    fn new(s: &TracingSettings) -> Result<Sink, String> {
        Ok(match s.protocol {
            OtlpProtocol::Http => Sink::Http(
                reqwest::Client::builder()
                    .timeout(s.timeout)
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            OtlpProtocol::Grpc => Sink::Grpc(crate::grpc::Client::new(
                &s.endpoint,
                &s.headers,
                s.timeout,
                "the collector",
            )),
        })
    }

    /// One `ExportTraceServiceRequest`.
    async fn export(&mut self, s: &TracingSettings, body: Vec<u8>) -> Result<(), String> {
        match self {
            Sink::Http(client) => {
                let mut req = client
                    .post(&s.endpoint)
                    .header("content-type", "application/x-protobuf")
                    .body(body);
                for (k, v) in &s.headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("the collector answered {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
            Sink::Grpc(client) => client.call(GRPC_EXPORT, &body).await.map(|_| ()),
        }
    }
}

/// How often a busy exporter looks at its queue: at 40,000 spans/s, 400
/// spans a tick, well inside the default queue of 2,048.
const POLL_TICK: Duration = Duration::from_millis(10);

/// Default delay between batches.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    /// Envoy's (Flex's) rules: client for `x-client-trace-id`, random for
    /// the rest and for what the client draw missed, overall on top.
    #[test]
    fn sampling_rules() {
        let s = |client, random, overall| Sampling {
            client,
            random,
            overall,
        };
        for _ in 0..1000 {
            assert!(decide(&s(1_000_000, 0, 1_000_000), true));
            assert!(!decide(&s(1_000_000, 0, 1_000_000), false));
            assert!(!decide(&s(1_000_000, 1_000_000, 0), true));
            assert!(decide(&s(0, 1_000_000, 1_000_000), true));
        }
        // 50 % of 50 %: a quarter (binomial, n = 100,000: sd 137)
        let n = (0..100_000)
            .filter(|_| decide(&s(0, 500_000, 500_000), false))
            .count();
        assert!((24_000..26_000).contains(&n), "{n}");
    }

    #[test]
    fn traceparents() {
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (trace, span, sampled) = parse_traceparent(t).unwrap();
        assert_eq!(hex(&trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&span), "00f067aa0ba902b7");
        assert!(sampled);
        assert_eq!(traceparent(&trace, &span, true), t);
        // malformed or zero ids: a new trace
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // a later version may carry more fields
        assert!(parse_traceparent(&format!("01-{}-x", &t[3..])).is_some());
        assert!(!parse_traceparent(&t.replace("-01", "-00")).unwrap().2);
    }
}
