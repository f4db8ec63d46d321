//! `spike-control`: smooths bursts instead of refusing them. At most
//! `maxRequests` requests pass in any sliding `period`; a request over
//! that rate waits: up to `queueLimit` requests at a time each try again
//! `delayAttempts` times, `delay` apart, for a free slot, and pass when
//! one frees. A request that finds the queue full, or is still without a
//! slot after its last attempt, gets 429 with `Retry-After`.
//!
//! Not a quota: nothing is counted per client or per window, only the
//! rate of the requests passing now (per policy instance; in this process).
//! With `exposeHeaders: true` responses carry `X-RateLimit-Limit`,
//! `-Remaining` and `-Reset` (seconds until the next slot frees).

use super::{Decision, LocalResponse, Policy};
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, BOOL, DURATION};
use crate::config::yaml::Node;
use crate::exchange::Exchange;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const FIELDS: &[Field] = &[
    f("maxRequests", Ty::Int(1, 1_000_000)).req(),
    f("period", DURATION).default("\"1s\""),
    f("delay", DURATION)
        .default("\"1s\"")
        .doc("How long a request over the limit waits before a retry."),
    f("delayAttempts", Ty::Int(0, 100)).default("1"),
    f("queueLimit", Ty::Int(0, 100_000)).default("0"),
    f("exposeHeaders", BOOL).default("false"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub max_requests: usize,
    pub period: Duration,
    pub delay: Duration,
    pub delay_attempts: u32,
    pub queue_limit: usize,
    pub expose_headers: bool,
}

pub fn decode(d: &mut Decoder, node: &Node, path: &str) -> Option<Config> {
    let f = d.map(node, path, FIELDS)?;
    let max = d
        .required(&f, "maxRequests", path)
        .and_then(|n| d.positive_int(n, &join(path, "maxRequests")));
    let max = max.and_then(|m| {
        if m > 1_000_000 {
            d.error(f.pos, &join(path, "maxRequests"), "must be at most 1000000");
            return None;
        }
        Some(m as usize)
    });
    let duration = |d: &mut Decoder, key: &str, default: Duration| match f.get(key) {
        Some(n) => d.duration(n, &join(path, key), false),
        None => Some(default),
    };
    let period = duration(d, "period", Duration::from_secs(1));
    let delay = duration(d, "delay", Duration::from_secs(1));
    let count = |d: &mut Decoder, key: &str, default: i64, max: i64| match f.get(key) {
        Some(n) => d.int(n, &join(path, key), 0, max),
        None => Some(default),
    };
    let attempts = count(d, "delayAttempts", 1, 100);
    let queue = count(d, "queueLimit", 0, 100_000);
    let expose = match f.get("exposeHeaders") {
        Some(n) => d.bool(n, &join(path, "exposeHeaders")),
        None => Some(false),
    };
    Some(Config {
        max_requests: max?,
        period: period?,
        delay: delay?,
        delay_attempts: attempts? as u32,
        queue_limit: queue? as usize,
        expose_headers: expose?,
    })
}

pub fn build(c: &Config) -> Arc<dyn Policy> {
    Arc::new(SpikeControl::new(c.clone()))
}

pub fn describe(c: &Config) -> Value {
    json!({
        "maxRequests": c.max_requests,
        "periodMs": c.period.as_millis() as u64,
        "delayMs": c.delay.as_millis() as u64,
        "delayAttempts": c.delay_attempts,
        "queueLimit": c.queue_limit,
        "exposeHeaders": c.expose_headers,
    })
}

pub struct SpikeControl {
    config: Config,
    /// When each of the last (at most `max_requests`) passing requests
    /// passed: a sliding-window log, exact and bounded.
    passed: Mutex<VecDeque<Instant>>,
    waiting: AtomicUsize,
}

/// What a request was told, for the headers.
#[derive(Debug, Clone, Copy)]
struct SpikeState {
    remaining: usize,
    reset: Duration,
}

impl SpikeControl {
    pub fn new(config: Config) -> SpikeControl {
        SpikeControl {
            passed: Mutex::new(VecDeque::with_capacity(config.max_requests.min(4096))),
            waiting: AtomicUsize::new(0),
            config,
        }
    }

    /// Take a slot at `now` if one is free; else how long until one frees.
    pub fn try_pass(&self, now: Instant) -> Result<usize, Duration> {
        let mut log = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        while log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.config.period)
        {
            log.pop_front();
        }
        if log.len() < self.config.max_requests {
            log.push_back(now);
            return Ok(self.config.max_requests - log.len());
        }
        let oldest = log.front().copied().unwrap_or(now);
        Err((oldest + self.config.period).saturating_duration_since(now))
    }

    fn state(&self, remaining: usize, now: Instant) -> SpikeState {
        let log = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        let reset = log.front().map_or(Duration::ZERO, |t| {
            (*t + self.config.period).saturating_duration_since(now)
        });
        SpikeState { remaining, reset }
    }
}

/// Holds a place in the queue while a request waits.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl Policy for SpikeControl {
    async fn on_request(&self, _req: &mut RequestHeader, x: &mut Exchange) -> Decision {
        let c = &self.config;
        let mut wait = match self.try_pass(Instant::now()) {
            Ok(remaining) => {
                if c.expose_headers {
                    x.ext.insert(self.state(remaining, Instant::now()));
                }
                return Decision::Continue;
            }
            Err(wait) => wait,
        };
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _place = Queued(&self.waiting);
        if queued < c.queue_limit {
            for _ in 0..c.delay_attempts {
                tokio::time::sleep(c.delay).await;
                match self.try_pass(Instant::now()) {
                    Ok(remaining) => {
                        if c.expose_headers {
                            x.ext.insert(self.state(remaining, Instant::now()));
                        }
                        return Decision::Continue;
                    }
                    Err(w) => wait = w,
                }
            }
        }
        if c.expose_headers {
            x.ext.insert(SpikeState {
                remaining: 0,
                reset: wait,
            });
        }
        let secs = wait.as_millis().div_ceil(1000).max(1);
        Decision::Respond(
            LocalResponse::new(
                429,
                format!(
                    "too many requests at once: {} per {}ms; retry shortly",
                    c.max_requests,
                    c.period.as_millis()
                ),
            )
            .with_header("retry-after", secs.to_string()),
        )
    }

    fn on_response(&self, resp: &mut ResponseHeader, x: &mut Exchange) -> pingora::Result<()> {
        if let Some(s) = x.ext.get::<SpikeState>() {
            resp.insert_header("x-ratelimit-limit", self.config.max_requests)?;
            resp.insert_header("x-ratelimit-remaining", s.remaining)?;
            resp.insert_header(
                "x-ratelimit-reset",
                s.reset.as_millis().div_ceil(1000).to_string(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sliding_window_of_passing_requests() {
        let s = SpikeControl::new(Config {
            max_requests: 2,
            period: Duration::from_secs(1),
            delay: Duration::from_millis(100),
            delay_attempts: 1,
            queue_limit: 0,
            expose_headers: false,
        });
        let t0 = Instant::now();
        assert_eq!(s.try_pass(t0), Ok(1));
        assert_eq!(s.try_pass(t0 + Duration::from_millis(400)), Ok(0));
        assert_eq!(
            s.try_pass(t0 + Duration::from_millis(600)),
            Err(Duration::from_millis(400)),
            "full until the first one is a period old"
        );
        // sliding: the first slot frees at t0+1s, the second at t0+1.4s
        assert_eq!(s.try_pass(t0 + Duration::from_millis(1000)), Ok(0));
        assert_eq!(
            s.try_pass(t0 + Duration::from_millis(1100)),
            Err(Duration::from_millis(300))
        );
    }
}
