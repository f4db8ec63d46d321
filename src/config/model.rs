//! The validated, typed runtime model. Everything a request needs from the
//! configuration is already parsed here (addresses, durations, methods,
//! path patterns); nothing is re-parsed per request.

pub use crate::policy::PolicySpec;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const API_VERSION: &str = "gateway.mulesoft.com/v1alpha1";

/// The whole effective configuration: every listener with the routes it serves.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub listeners: Vec<Listener>,
    /// Names of the Gateway documents that contributed, for logs.
    pub gateways: Vec<String>,
    /// Every upstream service: those declared in `spec.services` and one
    /// per route that gives its upstream as a `url`.
    pub services: Vec<Arc<ServiceConfig>>,
    /// Values read from `${ENV}` and `file:` references: never shown
    /// (`/config` and error messages replace them with `<redacted>`).
    pub secrets: Vec<String>,
    /// Files the policies read besides the config files (secret references,
    /// key lists), watched for changes like the config itself.
    pub referenced_files: Vec<PathBuf>,
    /// What was accepted but is not applied (Flex `Configuration` keys we
    /// do not implement): logged at start and shown by `validate`.
    pub notices: Vec<String>,
    /// Flex `logging.runtimeLogs.logLevel`.
    pub log_level: Option<log::LevelFilter>,
    /// Flex `logging`: where runtime and access logs go besides stderr.
    pub logging: Option<super::logging::LoggingSettings>,
}

/// A listening socket and the routes served on it (from every Gateway
/// document that declares this port).
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    pub routes: Vec<Arc<Route>>,
    /// The server's `limits` with this listener's own `limits` over them.
    pub limits: ClientLimits,
    /// `protocol: HTTPS`: its certificates and TLS settings.
    pub tls: Option<crate::config::tls::ListenerTls>,
    /// Cleartext HTTP/2 with prior knowledge (`h2c: true`) beside HTTP/1.1.
    pub h2c: bool,
}

/// What a client may send and hold on one listener (docs/security.md, "Security
/// defaults"): the request head, the time it may take, its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Request head (request line and headers) over this: 431.
    pub max_header_bytes: usize,
    /// More header fields than this: 431.
    pub max_headers: usize,
    /// A request target longer than this: 414.
    pub max_uri_bytes: usize,
    /// An upstream response header section over this: 502.
    pub max_response_header_bytes: usize,
    /// The whole request head must arrive within this, counted from the
    /// connection's accept (first request) or the head's first byte.
    pub header_timeout: Duration,
    /// An HTTPS listener's TLS handshake must finish within this, counted
    /// from the accept (the connection is admitted first).
    pub handshake_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub keepalive_timeout: Duration,
    /// The longest pause while the client sends a request body (408) or
    /// reads a response (the connection is closed).
    pub body_timeout: Duration,
    /// An upgraded connection (WebSocket) quiet in both directions this
    /// long is closed; request timeouts do not apply to it.
    pub upgrade_idle_timeout: Duration,
    /// HTTP/2 requests at once on one connection (Pingora's default is 1).
    pub max_concurrent_streams: u32,
    /// Open client connections on the listener; more are closed at accept.
    pub max_connections: usize,
    /// Open connections from one client IP (the TCP peer; trusted proxies
    /// are exempt); `None`: no limit.
    pub max_connections_per_client: Option<usize>,
    /// Request header names with `_` (`underscoresInHeaders`).
    pub underscores: Underscores,
}

/// What a listener does with a request header whose name has an
/// underscore: many backends (CGI, WSGI, PHP, Rack) read `X_User` and
/// `X-User` as one name, so a client could smuggle one past a policy that
/// set or removed the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Underscores {
    /// Pass them (removals still match both spellings).
    Allow,
    /// Remove them before routing (nginx's default); counted.
    #[default]
    Drop,
    /// Refuse the request with 400.
    Reject,
}

impl Underscores {
    pub fn as_str(self) -> &'static str {
        match self {
            Underscores::Allow => "allow",
            Underscores::Drop => "drop",
            Underscores::Reject => "reject",
        }
    }
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_header_bytes: 60 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_response_header_bytes: 60 * 1024,
            header_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            upgrade_idle_timeout: Duration::from_secs(15 * 60),
            max_concurrent_streams: 100,
            max_connections: 10_000,
            max_connections_per_client: None,
            underscores: Underscores::Drop,
        }
    }
}

/// `limits:` as written in `spec.server` or on a listener: only the fields
/// given; a listener's are laid over the server's, the server's over the
/// defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSettings {
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_uri_bytes: Option<usize>,
    pub max_response_header_bytes: Option<usize>,
    pub header_timeout: Option<Duration>,
    pub handshake_timeout: Option<Duration>,
    pub keepalive_timeout: Option<Duration>,
    pub body_timeout: Option<Duration>,
    pub upgrade_idle_timeout: Option<Duration>,
    pub max_concurrent_streams: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_client: Option<usize>,
    pub underscores: Option<Underscores>,
}

impl LimitSettings {
    /// `self` over `base`: each field of `self` that is set wins.
    pub fn over(self, base: ClientLimits) -> ClientLimits {
        ClientLimits {
            max_header_bytes: self.max_header_bytes.unwrap_or(base.max_header_bytes),
            max_headers: self.max_headers.unwrap_or(base.max_headers),
            max_uri_bytes: self.max_uri_bytes.unwrap_or(base.max_uri_bytes),
            max_response_header_bytes: self
                .max_response_header_bytes
                .unwrap_or(base.max_response_header_bytes),
            header_timeout: self.header_timeout.unwrap_or(base.header_timeout),
            handshake_timeout: self.handshake_timeout.unwrap_or(base.handshake_timeout),
            keepalive_timeout: self.keepalive_timeout.unwrap_or(base.keepalive_timeout),
            body_timeout: self.body_timeout.unwrap_or(base.body_timeout),
            upgrade_idle_timeout: self
                .upgrade_idle_timeout
                .unwrap_or(base.upgrade_idle_timeout),
            max_concurrent_streams: self
                .max_concurrent_streams
                .map_or(base.max_concurrent_streams, |v| v as u32),
            max_connections: self.max_connections.unwrap_or(base.max_connections),
            max_connections_per_client: self
                .max_connections_per_client
                .or(base.max_connections_per_client),
            underscores: self.underscores.unwrap_or(base.underscores),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathPattern {
    /// `/api/products`: this path only.
    Exact(String),
    /// `/api/products/*`: stored as `/api/products`; matches `/api/products/...`.
    /// `/*` is stored as the empty prefix and matches every path.
    Prefix(String),
}

impl std::fmt::Display for PathPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathPattern::Exact(p) => write!(f, "{p}"),
            PathPattern::Prefix(p) => write!(f, "{p}/*"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub id: String,
    /// Name of the Gateway document that declared it.
    pub gateway: String,
    pub paths: Vec<PathPattern>,
    /// `None`: every method.
    pub methods: Option<Vec<http::Method>>,
    /// Lower-case host name to match (`*.example.com` allowed); `None`: any host.
    pub host: Option<String>,
    pub upstream: RouteUpstream,
    /// Request bodies larger than this get 413 (`None`: the server's
    /// `maxBodySize`, if any).
    pub max_body_size: Option<u64>,
    /// Pass `%2F` / `%5C` in paths through unchanged instead of refusing them.
    pub allow_encoded_slashes: bool,
    /// Pass `;` parameters in path segments (`/a;v=1/b`) instead of
    /// refusing them; routes and policies see the path without them.
    pub allow_path_parameters: bool,
    /// The route's policy chain in run order: the document's `spec.policies`
    /// and the route's own, sorted by `order` (stable: list order breaks ties,
    /// document-level first).
    pub policies: Vec<PolicySpec>,
    /// Flex routing (an ApiInstance's route): regex rules under the
    /// instance's base path, rewriting the upstream path; `paths`, `methods`
    /// and `host` are then empty.
    pub flex: Option<Arc<crate::config::rules::FlexRoute>>,
}

/// One upstream address as written in a URL: scheme, host, port, base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub tls: bool,
    /// Host name or IP literal; names are resolved in the background
    /// (`dnsRefresh`), never per request.
    pub host: String,
    pub port: u16,
    /// `host[:port]` as sent in the Host header.
    pub authority: String,
    /// The same, made once as the header value every request sends.
    pub host_header: http::HeaderValue,
    /// Path prefix from the URL (`http://h/v1` gives `/v1`), empty for none.
    pub base_path: String,
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.base_path)
    }
}

/// Where a route sends its requests and how long it waits for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteUpstream {
    /// The services and their weights; one request goes to one of them,
    /// chosen with probability weight / total (a canary split).
    pub services: Vec<WeightedService>,
    pub timeouts: Timeouts,
    pub retries: Retries,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedService {
    pub name: String,
    pub weight: u32,
}

/// Upstream timeouts of a route (504 when one runs out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP (and TLS) connection set-up.
    pub connect: Duration,
    /// The longest wait for a read: the response's first byte, and every
    /// pause between bytes after it.
    pub read: Duration,
    /// The longest wait for a write of the request to the upstream.
    pub write: Duration,
    /// The whole exchange with the upstream, retries included, from the
    /// first attempt: 504 before the response starts; a response still
    /// streaming past it is cut (checked as its body arrives, so a stalled
    /// body is cut within `read`).
    pub request: Option<Duration>,
}

impl Timeouts {
    pub fn all(t: Duration) -> Timeouts {
        Timeouts {
            connect: t,
            read: t,
            write: t,
            request: None,
        }
    }

    /// These timeouts for an attempt starting with `left` of the request
    /// timeout to go.
    pub fn within(&self, left: Option<Duration>) -> Timeouts {
        match left {
            None => *self,
            Some(left) => Timeouts {
                connect: self.connect.min(left),
                read: self.read.min(left),
                write: self.write.min(left),
                request: self.request,
            },
        }
    }
}

/// Upstream timeouts as written (a route's `upstream`, or the server's
/// `upstreamTimeouts`): only the fields given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeoutSettings {
    /// Connect, read and write, unless one of them is given on its own.
    pub timeout: Option<Duration>,
    pub connect: Option<Duration>,
    pub read: Option<Duration>,
    pub request: Option<Duration>,
}

impl TimeoutSettings {
    /// These over the server's `base`: a route's specific timeout, then its
    /// `timeout`, then the server's specific one, then the server's
    /// `timeout`, then 60s.
    pub fn resolve(self, base: TimeoutSettings) -> Timeouts {
        let pick = |mine: Option<Duration>, theirs: Option<Duration>| {
            mine.or(self.timeout)
                .or(theirs)
                .or(base.timeout)
                .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT)
        };
        Timeouts {
            connect: pick(self.connect, base.connect),
            read: pick(self.read, base.read),
            write: pick(None, None),
            request: self.request.or(base.request),
        }
    }
}

/// When a failed upstream attempt is tried again (on another target when
/// the service has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    /// Attempts after the first; 0: never retry.
    pub max: u32,
    /// Connection failures (nothing was sent: any method).
    pub connect_failure: bool,
    /// Response statuses that are retried (idempotent requests without a
    /// body only).
    pub statuses: Vec<u16>,
    /// Upstream read/write timeouts (idempotent requests without a body).
    pub timeout: bool,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            max: 2,
            connect_failure: true,
            statuses: vec![502, 503, 504],
            timeout: true,
        }
    }
}

/// A named upstream service: its targets and how traffic is spread over
/// them and kept away from sick ones. Shared by every route naming it, so
/// its health state, counters and connection pools are per service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// As declared, or `route:<route id>` for a route's inline `url`.
    pub name: String,
    pub targets: Vec<TargetSpec>,
    pub balance: Balance,
    pub health_check: Option<HealthCheck>,
    pub passive: Option<PassiveCheck>,
    /// When no target is available: send to all of them anyway instead of
    /// answering 503.
    pub fail_open: bool,
    /// Host names are resolved again this often (every address is a target).
    pub dns_refresh: Duration,
    pub circuit: CircuitBreaker,
    /// How `https://` targets are verified and what the gateway presents.
    pub tls: UpstreamTls,
    /// Offer HTTP/2 to `https://` targets (ALPN `h2`, then `http/1.1`);
    /// one connection then carries many requests at once.
    pub http2: bool,
}

/// TLS to a service's `https://` targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Verify the target's certificate and host name (default true).
    pub verify: bool,
    /// Trust these CA certificates instead of the system store.
    pub ca: Option<crate::config::tls::Pem>,
    /// A client certificate and key for upstreams that require one.
    pub client: Option<(crate::config::tls::Pem, crate::config::tls::Pem)>,
    /// The name sent as SNI and verified (default: the target's host).
    pub sni: Option<String>,
    /// SHA-256 of the files as read (a renewal rebuilds the service).
    pub fingerprint: [u8; 32],
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            verify: true,
            ca: None,
            client: None,
            sni: None,
            fingerprint: [0; 32],
        }
    }
}

impl ServiceConfig {
    /// The service of a route's inline `url`: one target, defaults.
    pub fn inline(route_id: &str, upstream: Upstream) -> ServiceConfig {
        ServiceConfig {
            name: format!("route:{route_id}"),
            targets: vec![TargetSpec {
                upstream,
                weight: 1,
            }],
            balance: Balance::RoundRobin,
            health_check: None,
            passive: None,
            fail_open: false,
            dns_refresh: DEFAULT_DNS_REFRESH,
            circuit: CircuitBreaker::default(),
            tls: UpstreamTls::default(),
            http2: false,
        }
    }
}

pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub upstream: Upstream,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Weighted round robin (smooth: a 3:1 split interleaves).
    RoundRobin,
    /// Weighted random.
    Random,
    /// The target with the fewest requests in progress per unit of weight.
    LeastRequests,
    /// Consistent hashing (ketama) on a request property: one key keeps
    /// its target while the set of targets is unchanged.
    Hash(HashOn),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(http::HeaderName),
    Cookie(String),
    ClientIp,
}

/// Active health checks: a GET to each target every `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Inclusive status range that counts as healthy.
    pub statuses: (u16, u16),
    /// Consecutive successes that bring an unhealthy target back.
    pub healthy_threshold: u32,
    /// Consecutive failures that take a healthy target out.
    pub unhealthy_threshold: u32,
}

/// Passive checks: a target failing this many requests in a row (connect
/// failures, 5xx) is ejected for `ejection` × the number of times it was
/// ejected in a row, at most `max_ejection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveCheck {
    pub consecutive_failures: u32,
    pub ejection: Duration,
    pub max_ejection: Duration,
}

/// Limits per service (over one: 503 at once) and the error-rate breaker
/// per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Upstream connections in use at once.
    pub max_connections: usize,
    /// Requests waiting for an upstream connection to be set up.
    pub max_pending: usize,
    /// Requests in progress to the service.
    pub max_requests: usize,
    /// Retries in progress to the service.
    pub max_retries: usize,
    pub errors: Option<ErrorBreaker>,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            max_connections: 10_000,
            max_pending: 10_000,
            max_requests: 10_000,
            max_retries: 3,
            errors: None,
        }
    }
}

/// Opens after `failures` failed requests to one target within `window`;
/// after `open_for` one probe request goes through (half-open); its success
/// closes the breaker, its failure opens it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorBreaker {
    pub failures: u32,
    pub window: Duration,
    pub open_for: Duration,
}

pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Process settings: defaults fit a systemd service; `spec.server` overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Worker threads per listener service.
    pub threads: usize,
    pub pid_file: PathBuf,
    pub upgrade_socket: PathBuf,
    /// After SIGTERM (or a handover to an upgraded process) listeners stop
    /// accepting and in-flight requests get this long to finish (Pingora's
    /// `grace_period_seconds`; whole seconds)...
    pub grace_period: Duration,
    /// ...then runtimes get at most this long to wind down
    /// (`graceful_shutdown_timeout_seconds`).
    pub shutdown_timeout: Duration,
    /// Pingora's error log file; `None`: stderr (journald under systemd).
    pub error_log: Option<PathBuf>,
    /// One JSON line per request on the `access` log target.
    pub access_log: bool,
    /// Address of the admin listener (probes, metrics); `None`: off.
    pub admin: Option<SocketAddr>,
    /// Reload when files under the config path change.
    pub watch_config: bool,
    /// `workStealing` as written; unset, [`ServerSettings::work_stealing`]
    /// follows `threads`.
    pub work_stealing: Option<bool>,
    /// Idle upstream connections kept for reuse, per listener service.
    pub upstream_keepalive_pool: usize,
    /// Peers whose `X-Forwarded-For` is believed (load balancers in front
    /// of the gateway); empty: the client is always the TCP peer.
    pub trusted_proxies: crate::ipset::IpSet,
    /// Default limit on request bodies (413 over it); `None`: no limit.
    pub max_body_size: Option<u64>,
    /// Requests handled at once; more get 503 at once (never queued).
    pub max_requests_in_flight: usize,
    /// Default client limits of every listener.
    pub limits: ClientLimits,
    /// `sharedStorage.redis`: where cluster-wide counters live.
    pub shared_storage: Option<crate::store::RedisSettings>,
    /// `upstreamTimeouts`: the defaults of every route's upstream timeouts.
    pub upstream_timeouts: TimeoutSettings,
    /// `tracing`: OpenTelemetry spans exported over OTLP/HTTP.
    pub tracing: Option<TracingSettings>,
}

/// `spec.server.tracing`, or Flex's `Configuration.spec.tracing`
/// (docs/observability.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingSettings {
    /// The collector: an OTLP/HTTP traces URL (`http://collector:4318/v1/traces`)
    /// or, for gRPC, `http(s)://collector:4317`.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub service_name: String,
    pub sampling: Sampling,
    /// Span attributes of every SERVER span (Flex's `labels`).
    pub labels: Vec<TraceLabel>,
    /// Headers sent to the collector (authentication).
    pub headers: Vec<(String, String)>,
    /// Resource attributes beside `service.name`.
    pub resource: Vec<(String, String)>,
    pub timeout: Duration,
    pub max_queue: usize,
    pub batch_size: usize,
    pub delay: Duration,
    /// Answer the server span's `traceparent` in this response header.
    pub response_header: Option<http::HeaderName>,
    /// A child span per policy run on the request (`policySpans`).
    pub policy_spans: bool,
}

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (`POST /v1/traces`).
    Http,
    /// OTLP/gRPC (`TraceService/Export` over HTTP/2).
    Grpc,
}

/// Sampling percentages, in millionths (Flex's, as Envoy has them): a
/// request with `x-client-trace-id` is traced at `client`, else (or when
/// that draw fails) at `random`; what is traced then passes `overall`.
/// A parent's decision (`traceparent`) is followed as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    pub client: u32,
    pub random: u32,
    pub overall: u32,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            client: 1_000_000,
            random: 1_000_000,
            overall: 1_000_000,
        }
    }
}

/// A span attribute (Flex's `labels[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLabel {
    pub name: String,
    pub value: LabelValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelValue {
    /// `literal`, or `environment` (read when the configuration loads).
    Fixed(String),
    /// `requestHeader`: the request's header (lower case; `:method`,
    /// `:path`, `:authority`, `:scheme` as HTTP/2 names them), else the
    /// default; no attribute when neither is there.
    Header {
        name: String,
        default: Option<String>,
    },
}

/// The `tracing` policy of a route (Flex's `tracing-flex`): what it
/// overrides of the server's tracing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceOverride {
    pub sampling: Option<Sampling>,
    pub span_name: Option<String>,
    /// Added to the server's labels; one of the same name replaces it.
    pub labels: Vec<TraceLabel>,
}

pub const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);

impl ServerSettings {
    /// A Tokio work-stealing runtime per listener (Pingora's default), or
    /// (`false`) a single-threaded runtime per worker thread. Unless set:
    /// work stealing with more than one thread; one thread has no peer to
    /// steal from, and its own single-threaded runtime serves many
    /// connections more evenly (benches/README.md, tuning log).
    pub fn work_stealing(&self) -> bool {
        self.work_stealing.unwrap_or(self.threads > 1)
    }
}

impl Default for ServerSettings {
    /// The built-in defaults, under the `FLEXGW_*` variables that are set
    /// ([`super::environment`]).
    fn default() -> Self {
        let mut s = ServerSettings::built_in();
        super::environment::apply(&mut s);
        s
    }
}

impl ServerSettings {
    fn built_in() -> Self {
        ServerSettings {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pid_file: PathBuf::from("/run/flex-gateway/flex-gateway.pid"),
            upgrade_socket: PathBuf::from("/run/flex-gateway/upgrade.sock"),
            grace_period: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            error_log: None,
            access_log: true,
            admin: Some(DEFAULT_ADMIN),
            watch_config: true,
            work_stealing: None,
            upstream_keepalive_pool: 1024,
            trusted_proxies: crate::ipset::IpSet::default(),
            max_body_size: None,
            max_requests_in_flight: 10_000,
            limits: ClientLimits::default(),
            shared_storage: None,
            upstream_timeouts: TimeoutSettings::default(),
            tracing: None,
        }
    }
}
