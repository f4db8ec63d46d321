//! The policy engine: what a policy is, and the one place that registers
//! every policy by name.
//!
//! A policy is built once from its config (shared, immutable apart from its
//! own state: counters, caches, fetched keys) and acts per request through
//! hooks that do nothing unless it overrides them:
//!
//! ```text
//! on_request             the request head, after routing; may answer it   (async: may wait on I/O)
//! on_method_not_allowed  the route matched but not the method; may answer (a CORS preflight)
//! on_request_body        each request body chunk (only if body_hooks says so); may refuse it
//! on_upstream_request    edit the request going upstream (headers, path)
//! on_response            edit the response head, proxied or local (reverse order)
//! on_response_body       each proxied response body chunk (reverse order)
//! on_logging             after the response, with its status
//! ```
//!
//! Only `on_request` is async: it is where policies wait on the network
//! (JWKS, introspection, Redis). The other hooks edit headers in memory, so
//! they stay plain calls and cost no boxed future per request.
//!
//! A policy keeps its per-request state in the [`Exchange`]'s extensions
//! under a private type; it never reads another policy's state, only what
//! the exchange carries for everyone (consumer, client ip, claims).
//!
//! Adding a policy: one file under `src/policy/` with its `Config`, `decode`,
//! `build` and `describe`, and one line in [`policies!`] below.

pub mod api_key;
pub mod basic_auth;
pub mod cache; // responses served again without the upstream (pingora-cache)
pub mod chain;
pub mod common;
pub mod cors;
pub mod expr; // Flex expressions #[...]
pub mod ext_authz; // Envoy's external authorization (gRPC v3 and HTTP)
pub mod headers;
pub mod introspection;
pub mod ip_filter;
pub mod jwt;
pub mod ldap; // Basic credentials checked against an LDAP directory
pub mod message_logging; // log lines from requests and responses
pub mod openapi; // requests checked against an OpenAPI 3.0/3.1 document
pub mod path_rewrite;
pub mod rate_limit;
pub mod spike;
pub mod threat; // JSON and XML threat protection: request bodies checked as they stream
pub mod tracing; // a route's tracing: sampling, span name, labels
#[cfg(feature = "wasm")]
pub mod wasm;
#[cfg(not(feature = "wasm"))]
#[path = "wasm_off.rs"]
pub mod wasm;
pub mod wasm_fields;

use crate::config::decode::Decoder;
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use std::sync::Arc;

pub use chain::{Chain, Rejection};

/// A response the gateway makes itself, instead of proxying: the usual JSON
/// error body with this status and message, plus these headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub message: String,
    pub headers: Vec<(std::borrow::Cow<'static, str>, String)>,
    /// A body of the policy's own (a custom policy's answer) instead of
    /// the JSON error body; its content type among `headers`.
    pub body: Option<bytes::Bytes>,
}

impl LocalResponse {
    pub fn new(status: u16, message: impl Into<String>) -> LocalResponse {
        LocalResponse {
            status,
            message: message.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn with_header(
        mut self,
        name: impl Into<std::borrow::Cow<'static, str>>,
        value: impl Into<String>,
    ) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What a policy decided about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Continue,
    Respond(LocalResponse),
    /// The rest of the chain waits: the response cache may answer the
    /// request (its lookup is in the exchange); on a miss the chain goes
    /// on from the next policy before the request goes upstream.
    Defer,
}

/// A built policy. Every hook does nothing by default.
#[async_trait]
pub trait Policy: Send + Sync {
    /// After routing, in chain order; `Respond` stops the chain and answers.
    /// Changes to the request head are what later policies and the
    /// upstream see (a custom policy rewriting headers).
    async fn on_request(&self, _req: &mut RequestHeader, _x: &mut Exchange) -> Decision {
        Decision::Continue
    }

    /// Which body hooks the policy has (request, response). Bodies pass
    /// untouched through a chain where none does.
    fn body_hooks(&self) -> (bool, bool) {
        (false, false)
    }

    /// A chunk of the request body on its way upstream (`None` after the
    /// hook: nothing is sent now, the policy holds it). `Respond` refuses
    /// the request: the chunk is not sent, the upstream request is cut
    /// short and the client gets the answer (unless a response started).
    fn on_request_body(
        &self,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        _x: &mut Exchange,
    ) -> pingora::Result<Decision> {
        Ok(Decision::Continue)
    }

    /// A chunk of a proxied response body, in reverse chain order.
    fn on_response_body(
        &self,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        _x: &mut Exchange,
    ) -> pingora::Result<()> {
        Ok(())
    }

    /// The path is routed but not for this method: a policy may still
    /// answer (CORS preflight); if none does, the gateway answers 405.
    fn on_method_not_allowed(&self, _req: &RequestHeader, _x: &mut Exchange) -> Decision {
        Decision::Continue
    }

    /// The request going upstream (after the gateway set Host, X-Forwarded-*).
    fn on_upstream_request(
        &self,
        _up: &mut RequestHeader,
        _x: &mut Exchange,
    ) -> pingora::Result<()> {
        Ok(())
    }

    /// The response head to the client, proxied or written by the gateway,
    /// in reverse chain order, for every policy whose request hook ran.
    fn on_response(&self, _resp: &mut ResponseHeader, _x: &mut Exchange) -> pingora::Result<()> {
        Ok(())
    }

    /// After the response was sent.
    fn on_logging(&self, _x: &Exchange, _status: u16) {}

    /// Headers the policy sets on the upstream request from its own state
    /// (an identity, forwarded claims, computed values). The chain removes
    /// the client's copies (either spelling, `-` or `_`) before any policy
    /// runs, so the upstream never reads a client's word for them — also
    /// when the policy ends up setting none.
    fn asserted_headers(&self) -> Vec<http::HeaderName> {
        Vec::new()
    }

    /// Headers a credential is read from: a request with more than one
    /// copy of one is refused (400) before any policy runs.
    fn credential_headers(&self) -> Vec<http::HeaderName> {
        Vec::new()
    }
}

/// A policy as configured on a route: its config, its place in the chain,
/// and who shares its instance (and so its state).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    pub config: PolicyConfig,
    /// Lower runs first on the request (default 50); equal orders keep list
    /// order, with document-level policies before the route's own.
    pub order: i32,
    /// `Some(gateway)`: listed in the document's `spec.policies`, one
    /// instance for every route of that document (e.g. one rate-limit
    /// counter for the whole API). `None`: the route's own.
    pub document: Option<String>,
    /// Flex binding `rules`: the policy applies only to matching requests.
    pub when: Option<Arc<crate::config::rules::PolicyRules>>,
    /// 0: bound through a Flex Selector, run before an API's own policies
    /// (1) whatever their `order`.
    pub tier: u8,
}

pub const DEFAULT_ORDER: i32 = 50;

impl PolicySpec {
    pub fn name(&self) -> &'static str {
        self.config.name()
    }

    /// Where the chain puts it: CORS before everything (a preflight must
    /// not be refused for lacking credentials), then Selector-bound Flex
    /// policies, then by `order`.
    pub fn sort_key(&self) -> (bool, u8, i32) {
        (
            !matches!(self.config, PolicyConfig::Cors(_)),
            self.tier,
            self.order,
        )
    }
}

/// The registration table: policy name, config variant, module. Generates
/// [`NAMES`], [`PolicyConfig`] and its `decode`, `build` and `describe`.
/// Each module provides `Config`, `decode(d, node, path) -> Option<Config>`,
/// `build(&Config) -> Arc<dyn Policy>`, `describe(&Config) -> Value`
/// and `FIELDS` (its config's field table, which `decode` reads with)
/// (for `/config`, secrets redacted).
macro_rules! policies {
    ($($name:literal => $variant:ident($($module:ident)::+)),+ $(,)?) => {
        /// Every policy name, for validation messages and suggestions.
        pub const NAMES: &[&str] = &[$($name),+];

        /// Each policy's config fields (what `decode` accepts), by name:
        /// the JSON Schema's source.
        pub const FIELDS: &[(&str, &[crate::config::fields::Field])] =
            &[$(($name, $($module)::+::FIELDS)),+];

        /// The typed config of one policy.
        #[derive(Debug, Clone, PartialEq)]
        pub enum PolicyConfig {
            $($variant($($module)::+::Config)),+
        }

        impl PolicyConfig {
            pub fn name(&self) -> &'static str {
                match self {
                    $(PolicyConfig::$variant(_) => $name),+
                }
            }

            /// Decode the config of the policy called `name` (a known name).
            pub fn decode(d: &mut Decoder, name: &str, node: &Node, path: &str) -> Option<PolicyConfig> {
                match name {
                    $($name => $($module)::+::decode(d, node, path).map(PolicyConfig::$variant),)+
                    _ => {
                        d.error(node.pos, path, format!("unknown policy {name:?}"));
                        None
                    }
                }
            }

            pub fn build(&self) -> Arc<dyn Policy> {
                match self {
                    $(PolicyConfig::$variant(c) => $($module)::+::build(c)),+
                }
            }

            /// The config as `/config` shows it: secrets redacted.
            pub fn describe(&self) -> serde_json::Value {
                match self {
                    $(PolicyConfig::$variant(c) => $($module)::+::describe(c)),+
                }
            }
        }
    };
}

policies! {
    "rate-limiting" => RateLimit(rate_limit),
    "spike-control" => SpikeControl(spike),
    "http-basic-authentication" => BasicAuth(basic_auth),
    "api-key" => ApiKey(api_key),
    "ldap-authentication" => LdapAuth(ldap),
    "jwt-validation" => Jwt(jwt),
    "oauth2-introspection" => Introspection(introspection),
    "external-authorization" => ExtAuthz(ext_authz),
    "ip-allowlist" => IpAllowlist(ip_filter::allow),
    "ip-blocklist" => IpBlocklist(ip_filter::block),
    "header-injection" => HeaderInjection(headers::inject),
    "header-removal" => HeaderRemoval(headers::remove),
    "path-rewrite" => PathRewrite(path_rewrite),
    "cors" => Cors(cors),
    "proxy-wasm" => ProxyWasm(wasm),
    "tracing" => Tracing(tracing),
    "message-logging" => MessageLogging(message_logging),
    "json-threat-protection" => JsonThreatProtection(threat::json_policy),
    "openapi-validation" => OpenApiValidation(openapi),
    "xml-threat-protection" => XmlThreatProtection(threat::xml_policy),
    "response-cache" => ResponseCache(cache),
}

impl PolicyConfig {
    /// A Flex binding applies the policy to this API (a custom policy's
    /// `plugin_name` is `<policy>.<namespace>.<api>`).
    pub fn for_api(&mut self, api: &str) {
        #[cfg(feature = "wasm")]
        if let PolicyConfig::ProxyWasm(c) = self {
            c.for_api(api);
        }
        let _ = api;
    }

    /// What a policy learns when the configuration is assembled: who owns
    /// its instance (`route:<id>` or `gateway:<name>`: names its shared
    /// state, the same in every process) and the server's shared storage.
    pub fn bind(&mut self, scope: &str, redis: Option<&crate::store::RedisSettings>) {
        match self {
            PolicyConfig::RateLimit(c) => {
                c.scope = scope.to_string();
                c.redis = redis.cloned();
            }
            PolicyConfig::ResponseCache(c) => {
                c.scope = scope.to_string();
                c.redis = redis.cloned();
            }
            _ => {}
        }
    }
}

/// Shown instead of a secret in `/config`.
pub const REDACTED: &str = "<redacted>";
