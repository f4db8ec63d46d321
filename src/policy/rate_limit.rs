//! `rate-limiting: {maxRequests, period}`: at most `maxRequests` requests in
//! each fixed window of `period`, counted per policy instance (a route's own
//! policy counts that route; a document-level one counts every route of the
//! document together); the next request gets 429 with `Retry-After`. Every
//! response that passed the policy carries `X-RateLimit-Limit`, `-Remaining`
//! and `-Reset` (seconds until the window resets).
//!
//! Counting uses pingora-limits' `Rate` with a single key, so its count-min
//! sketch is exact (a 1x1 table). Per-client keys need an exact bounded map
//! instead (the sketch over-counts with many keys): a later step.

use super::{Decision, LocalResponse, Policy};
use crate::config::decode::{join, Decoder};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora_limits::rate::Rate;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const FIELDS: &[&str] = &["maxRequests", "period"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub max_requests: u64,
    pub period: Duration,
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let max = d
        .required(&f, "maxRequests", path)
        .and_then(|n| d.positive_int(n, &join(path, "maxRequests")));
    let period = d.required(&f, "period", path).and_then(|n| {
        let field = join(path, "period");
        let p = d.duration(n, &field, true)?;
        if p < Duration::from_secs(1) || p.subsec_nanos() != 0 {
            d.error(
                n.pos,
                &field,
                "the period must be a whole number of seconds, at least 1s",
            );
            return None;
        }
        Some(p)
    });
    Some(Config {
        max_requests: max?,
        period: period?,
    })
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    Arc::new(RateLimiter::new(c))
}

pub fn describe(c: &Config) -> Value {
    json!({"maxRequests": c.max_requests, "periodSeconds": c.period.as_secs()})
}

pub struct RateLimiter {
    rate: Rate,
    max: u64,
    period_secs: u64,
}

/// What the limiter decided, kept in the exchange for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitState {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
}

const KEY: u8 = 0;

impl RateLimiter {
    pub fn new(c: &Config) -> Self {
        RateLimiter {
            // one hash row, one slot: exact for the single key we use
            rate: Rate::new_with_estimator_config(c.period, 1, 1),
            max: c.max_requests,
            period_secs: c.period.as_secs().max(1),
        }
    }

    /// Count this request and decide.
    pub fn check(&self) -> (bool, RateLimitState) {
        let count = self.rate.observe(&KEY, 1).max(0) as u64;
        let elapsed = self.rate.rate_with(&KEY, |c| c.current_interval_fraction);
        let left = (self.period_secs as f64 * (1.0 - elapsed)).ceil() as u64;
        let state = RateLimitState {
            limit: self.max,
            remaining: self.max.saturating_sub(count),
            reset_secs: left.clamp(1, self.period_secs),
        };
        (count <= self.max, state)
    }
}

#[async_trait]
impl Policy for RateLimiter {
    async fn on_request(&self, _req: &RequestHeader, x: &mut Exchange) -> Decision {
        let (allowed, state) = self.check();
        // several limits on one request (document and route): the headers
        // report the tightest
        let tightest = match x.ext.get::<RateLimitState>() {
            Some(prev) if prev.remaining <= state.remaining => *prev,
            _ => state,
        };
        x.ext.insert(tightest);
        if allowed {
            Decision::Continue
        } else {
            Decision::Respond(
                LocalResponse::new(
                    429,
                    format!(
                        "rate limit exceeded: {} requests per {}s",
                        self.max, self.period_secs
                    ),
                )
                .with_header("retry-after", state.reset_secs.to_string()),
            )
        }
    }

    fn on_response(&self, resp: &mut ResponseHeader, x: &mut Exchange) -> pingora::Result<()> {
        if let Some(s) = x.ext.get::<RateLimitState>() {
            resp.insert_header("x-ratelimit-limit", s.limit)?;
            resp.insert_header("x-ratelimit-remaining", s.remaining)?;
            resp.insert_header("x-ratelimit-reset", s.reset_secs)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_exactly_and_reports_remaining() {
        let l = RateLimiter::new(&Config {
            max_requests: 3,
            period: Duration::from_secs(60),
        });
        let results: Vec<(bool, u64)> = (0..5)
            .map(|_| {
                let (ok, s) = l.check();
                (ok, s.remaining)
            })
            .collect();
        assert_eq!(
            results,
            vec![(true, 2), (true, 1), (true, 0), (false, 0), (false, 0)]
        );
        let (_, s) = l.check();
        assert_eq!(s.limit, 3);
        assert!((1..=60).contains(&s.reset_secs), "{s:?}");
    }
}
