//! Policies: built once from config (shared, immutable apart from their own
//! counters), run per request. A policy never reaches into another; what it
//! decides is written to the request's [`Ctx`] and read back in later phases.
//!
//! Registering a policy: add its config in `config::model::PolicyConfig`,
//! its decoder in `config::schema`, and its arm in [`Policy::build`].

pub mod rate_limit;

use crate::config::model::PolicyConfig;
use crate::ctx::Ctx;
use pingora::http::ResponseHeader;
use std::sync::Arc;

/// A response the gateway makes itself, instead of proxying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

/// What a policy decided about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Continue,
    Respond(LocalResponse),
}

/// A built policy. State that must outlive a config reload (counters) sits
/// behind an `Arc`, so an unchanged policy is carried into the new snapshot.
#[derive(Clone)]
pub enum Policy {
    RateLimit(Arc<rate_limit::RateLimiter>),
}

impl Policy {
    /// The one place where policy names meet their implementations.
    pub fn build(config: &PolicyConfig) -> Policy {
        match config {
            PolicyConfig::RateLimit(c) => {
                Policy::RateLimit(Arc::new(rate_limit::RateLimiter::new(c)))
            }
        }
    }

    /// The policy of `previous` with exactly this config, or a new one.
    pub fn reuse_or_build(config: &PolicyConfig, previous: &[Policy]) -> Policy {
        previous
            .iter()
            .find(|p| p.config() == *config)
            .cloned()
            .unwrap_or_else(|| Policy::build(config))
    }

    pub fn config(&self) -> PolicyConfig {
        match self {
            Policy::RateLimit(p) => PolicyConfig::RateLimit(p.config.clone()),
        }
    }

    /// In `request_filter`, after routing.
    pub fn on_request(&self, ctx: &mut Ctx) -> Decision {
        match self {
            Policy::RateLimit(p) => p.on_request(ctx),
        }
    }
}

/// Headers that policies add to every response of the request (proxied or
/// local), from what they left in `ctx`.
pub fn response_headers(ctx: &Ctx) -> impl Iterator<Item = (&'static str, String)> + '_ {
    ctx.rate_limit.iter().flat_map(|s| s.headers())
}

/// Apply [`response_headers`] to a response header.
pub fn apply_response_headers(ctx: &Ctx, resp: &mut ResponseHeader) -> pingora::Result<()> {
    for (name, value) in response_headers(ctx) {
        resp.insert_header(name, value)?;
    }
    Ok(())
}
