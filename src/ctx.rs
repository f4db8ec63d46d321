//! Per-request state shared by the phases of `proxy.rs` and the policies.

use crate::ops::metrics::ConnectionGuard;
use crate::policy::rate_limit::RateLimitState;
use crate::runtime::CompiledRoute;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

pub struct Ctx {
    pub start: Instant,
    pub request_id: String,
    pub client_ip: Option<IpAddr>,
    /// Set once routing found a route.
    pub route: Option<Arc<CompiledRoute>>,
    /// The normalised path (what routing saw and the upstream receives).
    pub path: String,
    pub rate_limit: Option<RateLimitState>,
    /// The peer address the request went to, once chosen.
    pub upstream_addr: Option<SocketAddr>,
    /// Status of a response the gateway wrote itself (routing, policy, error).
    pub local_status: Option<u16>,
    /// Counted in the in-flight gauge, not yet in the totals.
    pub in_flight: bool,
    /// Write the access-log line (from the snapshot the request began with).
    pub access_log: bool,
    /// The client connection's entry in the open-connections gauge, carried
    /// across the requests of a keep-alive connection.
    pub connection: Option<Arc<ConnectionGuard>>,
}

impl Ctx {
    pub fn new() -> Ctx {
        Ctx {
            start: Instant::now(),
            request_id: String::new(),
            client_ip: None,
            route: None,
            path: String::new(),
            rate_limit: None,
            upstream_addr: None,
            local_status: None,
            in_flight: false,
            access_log: true,
            connection: None,
        }
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new()
    }
}
