//! Upstreams: where a route's requests go. Host names are resolved at
//! request time (an unresolvable host is a 502 for that request, never a
//! failure at start-up); IP literals skip the resolver. Pingora pools the
//! connections per peer.

use crate::config::model::Upstream;
use pingora::prelude::HttpPeer;
use pingora::{Error, ErrorType, Result};
use std::net::{IpAddr, SocketAddr};

pub const RESOLVE_ERROR: ErrorType = ErrorType::Custom("UpstreamResolveError");

pub struct Target {
    pub config: Upstream,
    literal: Option<SocketAddr>,
}

impl Target {
    pub fn new(config: &Upstream) -> Target {
        let literal = config
            .host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, config.port));
        Target {
            config: config.clone(),
            literal,
        }
    }

    async fn resolve(&self) -> Result<SocketAddr> {
        if let Some(addr) = self.literal {
            return Ok(addr);
        }
        let name = self.config.host.trim_end_matches('.');
        // RFC 6761: `.invalid` never resolves; `localhost` is always loopback
        if name == "invalid" || name.ends_with(".invalid") {
            return Error::e_explain(
                RESOLVE_ERROR,
                format!("{name}: the .invalid domain never resolves (RFC 6761)"),
            );
        }
        if name == "localhost" || name.ends_with(".localhost") {
            return Ok(SocketAddr::new(
                IpAddr::from([127, 0, 0, 1]),
                self.config.port,
            ));
        }
        let host = (self.config.host.as_str(), self.config.port);
        match tokio::net::lookup_host(host).await {
            Ok(mut addrs) => addrs.next().ok_or_else(|| {
                Error::explain(
                    RESOLVE_ERROR,
                    format!("{} resolved to no address", self.config.host),
                )
            }),
            Err(e) => Error::e_explain(
                RESOLVE_ERROR,
                format!("cannot resolve upstream host {}: {e}", self.config.host),
            ),
        }
    }

    /// The peer for one request, with the route's timeouts, and its address.
    pub async fn peer(&self) -> Result<(Box<HttpPeer>, SocketAddr)> {
        let addr = self.resolve().await.map_err(Error::into_up)?;
        let sni = if self.config.tls {
            self.config.host.clone()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, self.config.tls, sni);
        let t = self.config.timeout;
        peer.options.connection_timeout = Some(t);
        peer.options.total_connection_timeout = Some(t);
        peer.options.read_timeout = Some(t);
        peer.options.write_timeout = Some(t);
        Ok((Box::new(peer), addr))
    }
}
