//! `rate-limiting: {maxRequests, period}`: at most `maxRequests` requests per
//! route in each fixed window of `period`; the next one gets 429 with
//! `Retry-After`. Every response of the route carries `X-RateLimit-Limit`,
//! `-Remaining` and `-Reset` (seconds until the window resets).
//!
//! Counting uses pingora-limits' `Rate`, one per route with a single key, so
//! its count-min sketch is exact (a 1x1 table). Per-client keys need an exact
//! bounded map instead (the sketch over-counts with many keys): a later policy.

use crate::config::model::RateLimitConfig;
use crate::ctx::Ctx;
use crate::policy::{Decision, LocalResponse};
use pingora_limits::rate::Rate;

pub struct RateLimiter {
    pub config: RateLimitConfig,
    rate: Rate,
    max: u64,
    period_secs: u64,
}

/// What the limiter decided, kept in `Ctx` for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitState {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
}

impl RateLimitState {
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, String)> {
        [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", self.reset_secs.to_string()),
        ]
        .into_iter()
    }
}

const KEY: u8 = 0;

impl RateLimiter {
    pub fn new(c: &RateLimitConfig) -> Self {
        RateLimiter {
            config: c.clone(),
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

    pub fn on_request(&self, ctx: &mut Ctx) -> Decision {
        let (allowed, state) = self.check();
        ctx.rate_limit = Some(state);
        if allowed {
            Decision::Continue
        } else {
            Decision::Respond(LocalResponse {
                status: 429,
                message: format!(
                    "rate limit exceeded: {} requests per {}s on this route",
                    self.max, self.period_secs
                ),
                headers: vec![("retry-after", state.reset_secs.to_string())],
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_exactly_and_reports_remaining() {
        let l = RateLimiter::new(&RateLimitConfig {
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
