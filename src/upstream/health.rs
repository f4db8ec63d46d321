//! The health of one target, as three verdicts that must all allow it:
//!
//! - **active**: the health checker's results; `unhealthy_threshold`
//!   failures in a row take the target out, `healthy_threshold` successes
//!   in a row bring it back. Targets start healthy.
//! - **passive**: `consecutive_failures` failed requests in a row (connect
//!   failures, 5xx) eject it for `ejection` × (ejections in a row), at most
//!   `max_ejection`; a success after its return resets the count.
//! - **breaker**: `failures` within `window` open it for `open_for`; then
//!   one probe request goes through (half-open): success closes it,
//!   failure opens it again.
//!
//! Everything takes `now` from the caller (a clock injected in tests).

use crate::config::model::{ErrorBreaker, HealthCheck, PassiveCheck};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    Closed,
    Open {
        until: Instant,
    },
    /// `probe`: the one request let through is in progress.
    HalfOpen {
        probe: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Health {
    /// Active verdict.
    pub healthy: bool,
    /// Active results in a row against the current verdict.
    streak: u32,
    /// Failed requests in a row.
    failures: u32,
    pub ejected_until: Option<Instant>,
    /// Ejections in a row (the next one lasts longer).
    pub ejections: u32,
    window_start: Option<Instant>,
    window_failures: u32,
    pub breaker: Breaker,
}

/// What a request outcome changed, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changed {
    pub ejected: Option<Duration>,
    pub breaker_opened: bool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            healthy: true,
            streak: 0,
            failures: 0,
            ejected_until: None,
            ejections: 0,
            window_start: None,
            window_failures: 0,
            breaker: Breaker::Closed,
        }
    }
}

/// A request admitted by [`Health::admit`]: whether it is the breaker's
/// half-open probe (its outcome decides, and dropping it frees the slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub probe: bool,
}

impl Health {
    /// Whether the target takes traffic now, ignoring the breaker's probe
    /// slot (for reports).
    pub fn available(&self, now: Instant) -> bool {
        self.healthy
            && self.ejected_until.is_none_or(|t| now >= t)
            && match self.breaker {
                Breaker::Closed => true,
                Breaker::Open { until } => now >= until,
                Breaker::HalfOpen { probe } => !probe,
            }
    }

    /// Let one request through, or not. An open breaker whose time is up
    /// turns half-open and this request becomes its probe.
    pub fn admit(&mut self, now: Instant) -> Option<Admitted> {
        if !self.healthy || self.ejected_until.is_some_and(|t| now < t) {
            return None;
        }
        match self.breaker {
            Breaker::Closed => Some(Admitted { probe: false }),
            Breaker::Open { until } if now < until => None,
            Breaker::Open { .. } | Breaker::HalfOpen { probe: false } => {
                self.breaker = Breaker::HalfOpen { probe: true };
                Some(Admitted { probe: true })
            }
            Breaker::HalfOpen { probe: true } => None,
        }
    }

    /// A probe ended without an outcome (the client went away): let
    /// another request probe.
    pub fn probe_abandoned(&mut self) {
        if self.breaker == (Breaker::HalfOpen { probe: true }) {
            self.breaker = Breaker::HalfOpen { probe: false };
        }
    }

    /// The outcome of one request to the target.
    pub fn record(
        &mut self,
        ok: bool,
        probe: bool,
        now: Instant,
        passive: Option<&PassiveCheck>,
        breaker: Option<&ErrorBreaker>,
    ) -> Changed {
        let mut changed = Changed::default();
        if ok {
            self.failures = 0;
            if self.ejected_until.is_some_and(|t| now >= t) {
                // back, and it served: the next ejection starts short again
                self.ejected_until = None;
                self.ejections = 0;
            }
            if probe {
                self.breaker = Breaker::Closed;
                self.window_start = None;
                self.window_failures = 0;
            }
            return changed;
        }
        if let Some(p) = passive {
            self.failures += 1;
            let out = self.ejected_until.is_some_and(|t| now < t);
            if self.failures >= p.consecutive_failures && !out {
                self.ejections = self.ejections.saturating_add(1);
                let time = p
                    .ejection
                    .saturating_mul(self.ejections)
                    .min(p.max_ejection);
                self.ejected_until = Some(now + time);
                self.failures = 0;
                changed.ejected = Some(time);
            }
        }
        if let Some(b) = breaker {
            if probe {
                self.breaker = Breaker::Open {
                    until: now + b.open_for,
                };
                changed.breaker_opened = true;
                return changed;
            }
            if self.breaker != Breaker::Closed {
                return changed;
            }
            match self.window_start {
                Some(start) if now.duration_since(start) < b.window => {
                    self.window_failures += 1;
                }
                _ => {
                    self.window_start = Some(now);
                    self.window_failures = 1;
                }
            }
            if self.window_failures >= b.failures {
                self.breaker = Breaker::Open {
                    until: now + b.open_for,
                };
                self.window_start = None;
                self.window_failures = 0;
                changed.breaker_opened = true;
            }
        }
        changed
    }

    /// One active check result; `Some(verdict)` when the verdict changed.
    pub fn checked(&mut self, ok: bool, check: &HealthCheck) -> Option<bool> {
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok {
            check.healthy_threshold
        } else {
            check.unhealthy_threshold
        };
        if self.streak >= needed {
            self.healthy = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSIVE: PassiveCheck = PassiveCheck {
        consecutive_failures: 3,
        ejection: Duration::from_secs(10),
        max_ejection: Duration::from_secs(25),
    };
    const BREAKER: ErrorBreaker = ErrorBreaker {
        failures: 2,
        window: Duration::from_secs(5),
        open_for: Duration::from_secs(30),
    };

    fn check() -> HealthCheck {
        HealthCheck {
            path: "/h".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            statuses: (200, 399),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }

    #[test]
    fn active_verdict_needs_thresholds() {
        let mut h = Health::default();
        let c = check();
        assert_eq!(h.checked(false, &c), None);
        assert_eq!(h.checked(true, &c), None, "a success resets the streak");
        assert_eq!(h.checked(false, &c), None);
        assert_eq!(h.checked(false, &c), None);
        assert_eq!(h.checked(false, &c), Some(false));
        assert!(!h.available(Instant::now()));
        assert_eq!(h.checked(true, &c), None);
        assert_eq!(h.checked(true, &c), Some(true));
        assert!(h.available(Instant::now()));
    }

    #[test]
    fn ejection_grows_and_is_capped() {
        let t0 = Instant::now();
        let mut h = Health::default();
        let fail = |h: &mut Health, at| h.record(false, false, at, Some(&PASSIVE), None);
        assert_eq!(fail(&mut h, t0).ejected, None);
        assert_eq!(fail(&mut h, t0).ejected, None);
        assert_eq!(fail(&mut h, t0).ejected, Some(Duration::from_secs(10)));
        assert!(h.admit(t0 + Duration::from_secs(9)).is_none());
        let t1 = t0 + Duration::from_secs(10);
        assert!(h.admit(t1).is_some(), "back after the ejection time");
        for _ in 0..2 {
            fail(&mut h, t1);
        }
        assert_eq!(fail(&mut h, t1).ejected, Some(Duration::from_secs(20)));
        let t2 = t1 + Duration::from_secs(20);
        for _ in 0..2 {
            fail(&mut h, t2);
        }
        assert_eq!(
            fail(&mut h, t2).ejected,
            Some(Duration::from_secs(25)),
            "capped at max_ejection"
        );
        // served well after its return: the next ejection is short again
        let t3 = t2 + Duration::from_secs(25);
        h.record(true, false, t3, Some(&PASSIVE), None);
        for _ in 0..2 {
            fail(&mut h, t3);
        }
        assert_eq!(fail(&mut h, t3).ejected, Some(Duration::from_secs(10)));
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let t0 = Instant::now();
        let mut h = Health::default();
        let rec = |h: &mut Health, ok, probe, at| h.record(ok, probe, at, None, Some(&BREAKER));
        assert!(!rec(&mut h, false, false, t0).breaker_opened);
        // failures outside the window do not add up
        let t1 = t0 + Duration::from_secs(6);
        assert!(!rec(&mut h, false, false, t1).breaker_opened);
        assert!(rec(&mut h, false, false, t1 + Duration::from_secs(1)).breaker_opened);
        let open_at = t1 + Duration::from_secs(1);
        assert!(h.admit(open_at + Duration::from_secs(29)).is_none());
        let t2 = open_at + Duration::from_secs(30);
        assert_eq!(h.admit(t2), Some(Admitted { probe: true }));
        assert!(h.admit(t2).is_none(), "one probe at a time");
        // the probe fails: open again
        assert!(rec(&mut h, false, true, t2).breaker_opened);
        assert!(h.admit(t2 + Duration::from_secs(1)).is_none());
        let t3 = t2 + Duration::from_secs(30);
        assert_eq!(h.admit(t3), Some(Admitted { probe: true }));
        h.probe_abandoned();
        assert_eq!(h.admit(t3), Some(Admitted { probe: true }));
        rec(&mut h, true, true, t3);
        assert_eq!(h.breaker, Breaker::Closed);
        assert_eq!(h.admit(t3), Some(Admitted { probe: false }));
    }
}
