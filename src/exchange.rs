//! The per-request state policies share: what the gateway knows about the
//! request before any policy runs (request id, client address, normalised
//! path, route), what policies publish for each other (the consumer an
//! authentication policy identified, the claims of a verified token), and a
//! typed map where each policy keeps its own per-request state.
//!
//! This module imports nothing of the gateway: policies, the proxy and tests
//! all build on it, never the other way round.

use std::net::IpAddr;
use std::sync::Arc;

/// One request as the policies see it, beside Pingora's request header.
#[derive(Debug, Default)]
pub struct Exchange {
    pub request_id: String,
    /// The client: the TCP peer, or the address a trusted proxy in front
    /// of the gateway reported in `X-Forwarded-For` (`trustedProxies`).
    pub client_ip: Option<IpAddr>,
    /// The TCP peer and the gateway's own address of the connection.
    pub peer: Option<std::net::SocketAddr>,
    pub local: Option<std::net::SocketAddr>,
    /// The connection is TLS (an HTTPS listener).
    pub tls: bool,
    /// The normalised path: what routing saw and what goes upstream.
    pub path: String,
    /// The path to send upstream instead of `path`, when a policy rewrote
    /// it (the route's base path is still prefixed).
    pub upstream_path: Option<String>,
    /// Id of the route that matched.
    pub route_id: Arc<str>,
    /// Who is calling, as an authentication policy established it
    /// (basic-auth user, API-key consumer, JWT `sub`).
    pub consumer: Option<String>,
    /// The subject of the client certificate verified on an HTTPS
    /// listener with `clientCertificates` (`CN=alice,O=Acme`).
    pub client_cert_subject: Option<Arc<str>>,
    /// That certificate, PEM-encoded (for external authorization).
    pub client_cert_pem: Option<Arc<str>>,
    /// The claims of a verified token, for policies that key on them.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// Per-policy state: each policy stores and fetches its own private
    /// type here, so the exchange grows no field per policy.
    pub ext: http::Extensions,
}

impl Exchange {
    pub fn new() -> Exchange {
        Exchange::default()
    }
}
