//! `external-authorization` (Flex's `native-ext-authz-flex`, the same
//! fields): every request is put to an authorization service speaking
//! Envoy's external authorization protocol before it goes upstream — the
//! gRPC service `envoy.service.auth.v3.Authorization/Check` or plain HTTP.
//!
//! ```yaml
//! - external-authorization:
//!     uri: http://127.0.0.1:9191          # gRPC: http:// (h2c), h2://, https://
//!     serverType: grpc                     # or http (default grpc, as Flex)
//!     serverVersion: v3                    # the only one
//!     requestTimeout: 5000                 # ms (default)
//!     allowedHeaders: [authorization, x-tenant]   # what the service sees
//!     includePeerCertificate: false        # gRPC: the client's certificate (PEM)
//!     # HTTP only:
//!     serviceRequestHeadersToAdd: [{key: x-gateway, value: edge-1}]
//!     serviceResponseUpstreamHeaders: [x-user]            # set on the upstream request
//!     serviceResponseUpstreamHeadersToAppend: [x-groups]  # appended to it
//!     serviceResponseClientHeaders: [www-authenticate]    # on a denial (default: all)
//!     serviceResponseClientHeadersOnSuccess: [x-ratelimit-remaining]
//!     failureModeAllow: false              # default: a failed check refuses
//!     statusOnError: 403                   # default
//! ```
//!
//! - **Allowed**: gRPC `OK` (with `ok_response`'s headers set, appended or
//!   removed on the upstream request and `response_headers_to_add` on the
//!   client's response), or an HTTP 2xx (the listed headers copied).
//! - **Denied**: gRPC's `denied_response` (status, headers and body) or the
//!   HTTP service's answer (status, body, the listed headers) goes to the
//!   client as the service wrote it; nothing goes upstream.
//! - **Failed** (timeout, unreachable, a malformed answer, another gRPC
//!   status without a denial): `statusOnError` (403), never a pass unless
//!   `failureModeAllow: true` is written.
//! - Headers the upstream gets from the HTTP service
//!   (`serviceResponseUpstreamHeaders*`) are asserted by the gateway: the
//!   client's own copies are removed before any policy runs, unless the
//!   service is shown them (`allowedHeaders`).
//!
//! Decisions are counted in `flexgw_ext_authz_checks_total{result}`.

mod check;
mod http_service;

use super::{Decision, LocalResponse, Policy};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, STR};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{json, Value};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

const HEADER_FIELDS: &[Field] = &[f("key", STR).req(), f("value", STR).req()];

pub const FIELDS: &[Field] = &[
    f(
        "uri",
        Ty::Text("http(s):// URL (gRPC: http://, h2:// or https://)"),
    )
    .req()
    .doc("The authorization service. HTTP: the path is prefixed to the request's."),
    f("serverType", Ty::AnyCase(&["grpc", "http"])).default("\"grpc\""),
    f("serverVersion", Ty::AnyCase(&["v3"])).default("\"v3\""),
    f("requestTimeout", Ty::Int(1, 600_000))
        .default("5000")
        .doc("Milliseconds to wait for the service."),
    f("includePeerCertificate", BOOL)
        .default("false")
        .doc("gRPC: send the client's TLS certificate (URL-encoded PEM)."),
    f("allowedHeaders", Ty::List(&Ty::Str, true)).doc(
        "Request headers the service sees (gRPC default: all; HTTP: Authorization and these).",
    ),
    f(
        "serviceRequestHeadersToAdd",
        Ty::List(&Ty::Obj(HEADER_FIELDS), false),
    )
    .doc("Headers added to the check request."),
    f("serviceResponseUpstreamHeaders", Ty::List(&Ty::Str, true))
        .doc("HTTP: the service's headers set on the upstream request."),
    f(
        "serviceResponseUpstreamHeadersToAppend",
        Ty::List(&Ty::Str, true),
    )
    .doc("HTTP: the service's headers appended to the upstream request."),
    f("serviceResponseClientHeaders", Ty::List(&Ty::Str, true))
        .doc("HTTP: the service's headers sent to the client on a denial (default: all)."),
    f(
        "serviceResponseClientHeadersOnSuccess",
        Ty::List(&Ty::Str, true),
    )
    .doc("HTTP: the service's headers added to the client's response when allowed."),
    f("failureModeAllow", BOOL)
        .default("false")
        .doc("Let requests through when the service cannot answer (default: refuse)."),
    f("statusOnError", Ty::Int(200, 599))
        .default("403")
        .doc("The status when the service cannot answer."),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerType {
    Grpc,
    Http,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `http(s)://host:port[/prefix]` (gRPC's `h2://` written as `http://`).
    pub uri: String,
    pub server_type: ServerType,
    pub timeout: Duration,
    pub include_peer_certificate: bool,
    /// Lower-case names; empty: gRPC sends all, HTTP only Authorization.
    pub allowed_headers: Vec<HeaderName>,
    pub request_headers_to_add: Vec<(HeaderName, HeaderValue)>,
    pub upstream_headers: Vec<HeaderName>,
    pub upstream_headers_append: Vec<HeaderName>,
    pub client_headers: Vec<HeaderName>,
    pub client_headers_on_success: Vec<HeaderName>,
    pub failure_mode_allow: bool,
    pub status_on_error: u16,
    /// gRPC: headers as raw bytes in `header_map` (Flex's default), or as
    /// text in `headers` (`FLEX_HEADER_RAW_VALUE_ENABLE=false`).
    pub raw_headers: bool,
}

/// `flexgw_ext_authz_checks_total{result}`: allowed, denied, failed
/// (refused), failed_allowed (`failureModeAllow`).
pub static CHECKS: LazyLock<Family<[(&'static str, &'static str); 1], Counter>> =
    LazyLock::new(|| {
        let f = Family::default();
        for r in ["allowed", "denied", "failed", "failed_allowed"] {
            let _ = f.get_or_create(&[("result", r)]);
        }
        f
    });

fn header_names(d: &mut Decoder, node: Option<&Node>, path: &str, key: &str) -> Vec<HeaderName> {
    let Some(n) = node else {
        return Vec::new();
    };
    let field = join(path, key);
    d.list(n, &field, true)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let at = format!("{field}[{i}]");
            let s = d.string(item, &at)?;
            match HeaderName::from_bytes(s.trim().to_ascii_lowercase().as_bytes()) {
                Ok(h) => Some(h),
                Err(_) => {
                    d.error(item.pos, &at, format!("{s:?} is not a header name"));
                    None
                }
            }
        })
        .collect()
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let errors = d.errors.len();
    let server_type = match f.get("serverType") {
        None => Some(ServerType::Grpc),
        Some(n) => {
            let at = join(path, "serverType");
            match d
                .scalar(n, &at, "grpc or http")
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("grpc") => Some(ServerType::Grpc),
                Some("http") => Some(ServerType::Http),
                Some(other) => {
                    d.error(n.pos, &at, format!("{other:?}: expected grpc or http"));
                    None
                }
                None => None,
            }
        }
    };
    if let Some(n) = f.get("serverVersion") {
        let at = join(path, "serverVersion");
        if let Some(v) = d.scalar(n, &at, "v3") {
            if !v.eq_ignore_ascii_case("v3") {
                d.error(
                    n.pos,
                    &at,
                    format!(
                        "{v:?}: only v3 (Envoy's v2 authorization API was removed in Envoy 1.18)"
                    ),
                );
            }
        }
    }
    let uri = d.required(&f, "uri", path).and_then(|n| {
        let at = join(path, "uri");
        let text = d.string(n, &at)?;
        let (scheme, rest) = text.split_once("://").unwrap_or(("", ""));
        let grpc = server_type == Some(ServerType::Grpc);
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => "http",
            "https" => "https",
            "h2" if grpc => "http",
            _ => {
                d.error(
                    n.pos,
                    &at,
                    format!(
                        "{text:?} is not an {} URL (example: http://127.0.0.1:9191)",
                        if grpc {
                            "http://, h2:// or https://"
                        } else {
                            "http(s)://"
                        }
                    ),
                );
                return None;
            }
        };
        let uri = format!("{scheme}://{rest}");
        match uri.parse::<http::Uri>() {
            Ok(u) if u.authority().is_some() => {
                if grpc && u.path() != "/" && !u.path().is_empty() {
                    d.error(
                        n.pos,
                        &at,
                        format!("{text:?}: a gRPC service's address has no path"),
                    );
                    return None;
                }
                Some(uri.trim_end_matches('/').to_string())
            }
            _ => {
                d.error(n.pos, &at, format!("{text:?} is not a URL with a host"));
                None
            }
        }
    });
    let timeout = match f.get("requestTimeout") {
        Some(n) => d
            .int(n, &join(path, "requestTimeout"), 1, 600_000)
            .map(|ms| Duration::from_millis(ms as u64)),
        None => Some(Duration::from_millis(5000)),
    };
    let flag = |d: &mut Decoder, key: &str| match f.get(key) {
        Some(n) => d.bool(n, &join(path, key)),
        None => Some(false),
    };
    let include_peer_certificate = flag(d, "includePeerCertificate");
    let failure_mode_allow = flag(d, "failureModeAllow");
    let status_on_error = match f.get("statusOnError") {
        Some(n) => d
            .int(n, &join(path, "statusOnError"), 200, 599)
            .map(|s| s as u16),
        None => Some(403),
    };
    let names = |d: &mut Decoder, key: &str| header_names(d, f.get(key), path, key);
    let allowed_headers = names(d, "allowedHeaders");
    let upstream_headers = names(d, "serviceResponseUpstreamHeaders");
    let upstream_headers_append = names(d, "serviceResponseUpstreamHeadersToAppend");
    let client_headers = names(d, "serviceResponseClientHeaders");
    let client_headers_on_success = names(d, "serviceResponseClientHeadersOnSuccess");
    let mut request_headers_to_add = Vec::new();
    if let Some(n) = f.get("serviceRequestHeadersToAdd") {
        let field = join(path, "serviceRequestHeadersToAdd");
        for (item, at) in d.items(n, &field, false) {
            let Some(g) = d.map(item, &at, HEADER_FIELDS) else {
                continue;
            };
            let key = d
                .required(&g, "key", &at)
                .and_then(|k| Some((d.string(k, &join(&at, "key"))?, k)));
            let value = d
                .required(&g, "value", &at)
                .and_then(|v| Some((d.string(v, &join(&at, "value"))?, v)));
            if let (Some((k, kn)), Some((v, vn))) = (key, value) {
                match (
                    HeaderName::from_bytes(k.trim().to_ascii_lowercase().as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    (Ok(k), Ok(v)) => request_headers_to_add.push((k, v)),
                    (Err(_), _) => d.error(
                        kn.pos,
                        &join(&at, "key"),
                        format!("{k:?} is not a header name"),
                    ),
                    (_, Err(_)) => d.error(
                        vn.pos,
                        &join(&at, "value"),
                        "not a header value (control characters)",
                    ),
                }
            }
        }
    }
    if server_type == Some(ServerType::Grpc) {
        // what only the HTTP mode reads: said, not silently ignored
        for key in [
            "serviceResponseUpstreamHeaders",
            "serviceResponseUpstreamHeadersToAppend",
            "serviceResponseClientHeaders",
            "serviceResponseClientHeadersOnSuccess",
        ] {
            if let Some(n) = f.get(key) {
                d.notice(
                    n.pos,
                    &join(path, key),
                    "applies to serverType: http only (a gRPC service names its headers in its answer)",
                );
            }
        }
    }
    if d.errors.len() > errors {
        return None;
    }
    Some(Config {
        uri: uri?,
        server_type: server_type?,
        timeout: timeout?,
        include_peer_certificate: include_peer_certificate?,
        allowed_headers,
        request_headers_to_add,
        upstream_headers,
        upstream_headers_append,
        client_headers,
        client_headers_on_success,
        failure_mode_allow: failure_mode_allow?,
        status_on_error: status_on_error?,
        raw_headers: crate::config::environment::header_raw_value(),
    })
}

pub fn describe(c: &Config) -> Value {
    fn names(v: &[HeaderName]) -> Vec<&str> {
        v.iter().map(HeaderName::as_str).collect()
    }
    json!({
        "uri": c.uri,
        "serverType": match c.server_type { ServerType::Grpc => "grpc", ServerType::Http => "http" },
        "serverVersion": "v3",
        "requestTimeoutMs": c.timeout.as_millis() as u64,
        "includePeerCertificate": c.include_peer_certificate,
        "allowedHeaders": names(&c.allowed_headers),
        // values may carry credentials for the service: names only
        "serviceRequestHeadersToAdd": c.request_headers_to_add.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        "serviceResponseUpstreamHeaders": names(&c.upstream_headers),
        "serviceResponseUpstreamHeadersToAppend": names(&c.upstream_headers_append),
        "serviceResponseClientHeaders": names(&c.client_headers),
        "serviceResponseClientHeadersOnSuccess": names(&c.client_headers_on_success),
        "failureModeAllow": c.failure_mode_allow,
        "statusOnError": c.status_on_error,
        "headersAs": match (c.server_type, c.raw_headers) {
            (ServerType::Grpc, true) => "header_map (raw bytes; FLEX_HEADER_RAW_VALUE_ENABLE)",
            (ServerType::Grpc, false) => "headers (UTF-8 text; FLEX_HEADER_RAW_VALUE_ENABLE=false)",
            (ServerType::Http, _) => "HTTP request headers",
        },
    })
}

/// What the service decided.
#[derive(Debug, Default)]
pub(crate) struct Allowed {
    /// Set on the upstream request (replacing the client's).
    pub upstream_set: Vec<(HeaderName, HeaderValue)>,
    pub upstream_append: Vec<(HeaderName, HeaderValue)>,
    pub upstream_remove: Vec<HeaderName>,
    /// Set only where the request has none (`ADD_IF_ABSENT`).
    pub upstream_if_absent: Vec<(HeaderName, HeaderValue)>,
    /// Added to the client's response.
    pub client_add: Vec<(HeaderName, HeaderValue)>,
}

pub(crate) enum Verdict {
    Allow(Allowed),
    Deny(LocalResponse),
}

/// Headers that describe a message's framing or a connection: never taken
/// from the service for the upstream request or the client's response.
fn framing(h: &HeaderName) -> bool {
    use http::header::*;
    [
        CONNECTION,
        CONTENT_LENGTH,
        TRANSFER_ENCODING,
        TE,
        TRAILER,
        UPGRADE,
        HOST,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
    ]
    .contains(h)
        || h.as_str() == "keep-alive"
        || h.as_str() == "proxy-connection"
}

/// The client's response headers on success, kept until the response.
#[derive(Clone, Default)]
struct OnSuccess(Vec<(HeaderName, HeaderValue)>);

struct ExtAuthz {
    config: Config,
    service: Service,
}

enum Service {
    Grpc(crate::grpc::Client),
    Http(reqwest::Client),
}

impl ExtAuthz {
    async fn ask(&self, req: &RequestHeader, x: &Exchange) -> Result<Verdict, String> {
        match &self.service {
            Service::Grpc(client) => {
                let message = check::request(&self.config, req, x);
                let answer = client.call(check::PATH, &message).await?;
                check::verdict(&answer)
            }
            Service::Http(client) => http_service::ask(&self.config, client, req, x).await,
        }
    }
}

#[async_trait]
impl Policy for ExtAuthz {
    async fn on_request(&self, req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        match self.ask(req, x).await {
            Ok(Verdict::Allow(a)) => {
                CHECKS.get_or_create(&[("result", "allowed")]).inc();
                for h in &a.upstream_remove {
                    if !framing(h) {
                        req.remove_header(h);
                    }
                }
                for (k, v) in a.upstream_set.into_iter().filter(|(k, _)| !framing(k)) {
                    let _ = req.insert_header(k, v);
                }
                for (k, v) in a.upstream_append.into_iter().filter(|(k, _)| !framing(k)) {
                    let _ = req.append_header(k, v);
                }
                for (k, v) in a
                    .upstream_if_absent
                    .into_iter()
                    .filter(|(k, _)| !framing(k))
                {
                    if !req.headers.contains_key(&k) {
                        let _ = req.insert_header(k, v);
                    }
                }
                if !a.client_add.is_empty() {
                    x.ext.insert(OnSuccess(a.client_add));
                }
                Decision::Continue
            }
            Ok(Verdict::Deny(r)) => {
                CHECKS.get_or_create(&[("result", "denied")]).inc();
                Decision::Respond(r)
            }
            Err(e) if self.config.failure_mode_allow => {
                CHECKS.get_or_create(&[("result", "failed_allowed")]).inc();
                log::warn!(
                    "[req: {}] external authorization: {e}; let through (failureModeAllow)",
                    x.request_id
                );
                Decision::Continue
            }
            Err(e) => {
                CHECKS.get_or_create(&[("result", "failed")]).inc();
                log::warn!(
                    "[req: {}] external authorization: {e}; refused ({})",
                    x.request_id,
                    self.config.status_on_error
                );
                Decision::Respond(LocalResponse::new(
                    self.config.status_on_error,
                    "the request could not be authorized",
                ))
            }
        }
    }

    fn on_response(&self, resp: &mut ResponseHeader, x: &mut Exchange) -> pingora::Result<()> {
        if let Some(OnSuccess(headers)) = x.ext.remove::<OnSuccess>() {
            for (k, v) in headers.into_iter().filter(|(k, _)| !framing(k)) {
                resp.append_header(k, v)?;
            }
        }
        Ok(())
    }

    fn asserted_headers(&self) -> Vec<HeaderName> {
        // what the HTTP service sets upstream is the gateway's word, unless
        // the service is shown the client's own copy to judge
        self.config
            .upstream_headers
            .iter()
            .chain(&self.config.upstream_headers_append)
            .filter(|h| !self.config.allowed_headers.contains(h) && !framing(h))
            .cloned()
            .collect()
    }
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    let service = match c.server_type {
        ServerType::Grpc => {
            let metadata: Vec<(String, String)> = c
                .request_headers_to_add
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect();
            Service::Grpc(crate::grpc::Client::new(
                &c.uri,
                &metadata,
                c.timeout,
                "the authorization service",
            ))
        }
        ServerType::Http => Service::Http(
            reqwest::Client::builder()
                .timeout(c.timeout)
                .connect_timeout(c.timeout)
                // a redirect is the service's answer to the client (a login page)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        ),
    };
    Arc::new(ExtAuthz {
        config: c.clone(),
        service,
    })
}
