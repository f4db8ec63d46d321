//! Exact fixed-window counting per key, in bounded memory.
//!
//! Each key holds one `(window, count)` pair per limit; windows are
//! aligned to the Unix epoch (`now_ms / period_ms`), like the Redis keys,
//! so every process agrees on when a window starts. A request is counted
//! only when every limit allows it.
//!
//! At most `max_keys` keys are held (spread over shards). A shard that is
//! full first drops its expired keys (every window over); if it is still
//! full, new keys share one overflow counter per shard: they may be
//! limited early, never late. Expired keys are dropped as new keys need
//! the room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One limit: at most `max` requests per `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub max: u64,
    pub period_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Window {
    index: u64,
    count: u64,
}

/// What a request was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The limit reported in the headers: the one refusing, else the one
    /// with the fewest requests left.
    pub limit: u64,
    pub remaining: u64,
    /// Until that limit's window ends.
    pub reset_ms: u64,
}

/// The verdict from each limit's count in its current window (after this
/// request's increment when `allowed`).
pub fn verdict(limits: &[Limit], counts: &[u64], allowed: bool, now_ms: u64) -> Verdict {
    let reset = |l: &Limit| l.period_ms - now_ms % l.period_ms;
    let pick = limits
        .iter()
        .zip(counts)
        .filter(|(l, c)| allowed || **c >= l.max)
        .min_by_key(|(l, c)| l.max.saturating_sub(**c))
        .or_else(|| limits.iter().zip(counts).next());
    match pick {
        Some((l, c)) => Verdict {
            allowed,
            limit: l.max,
            remaining: l.max.saturating_sub(*c),
            reset_ms: reset(l),
        },
        None => Verdict {
            allowed,
            limit: 0,
            remaining: 0,
            reset_ms: 0,
        },
    }
}

/// Move each window to now; count the request if every limit allows it.
fn hit(windows: &mut [Window], limits: &[Limit], now_ms: u64) -> Verdict {
    for (w, l) in windows.iter_mut().zip(limits) {
        let index = now_ms / l.period_ms;
        if w.index != index {
            *w = Window { index, count: 0 };
        }
    }
    let allowed = windows.iter().zip(limits).all(|(w, l)| w.count < l.max);
    if allowed {
        windows.iter_mut().for_each(|w| w.count += 1);
    }
    let counts: Vec<u64> = windows.iter().map(|w| w.count).collect();
    verdict(limits, &counts, allowed, now_ms)
}

struct Shard {
    keys: HashMap<Box<[u8]>, Box<[Window]>>,
    overflow: Box<[Window]>,
    last_sweep_ms: u64,
}

pub struct Windows {
    limits: Vec<Limit>,
    shards: Box<[Mutex<Shard>]>,
    max_keys: usize,
    /// Keys held, over every shard.
    held: AtomicUsize,
}

const SHARDS: usize = 32;

fn shard_of(key: &[u8]) -> usize {
    // FNV-1a: cheap and spreads short keys well
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % SHARDS as u64) as usize
}

impl Windows {
    pub fn new(limits: Vec<Limit>, max_keys: usize) -> Windows {
        let fresh = || vec![Window::default(); limits.len()].into_boxed_slice();
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    keys: HashMap::new(),
                    overflow: fresh(),
                    last_sweep_ms: 0,
                })
            })
            .collect();
        Windows {
            max_keys: max_keys.max(1),
            held: AtomicUsize::new(0),
            limits,
            shards,
        }
    }

    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// Count one request of `key` at `now_ms` (Unix time).
    pub fn hit(&self, key: &[u8], now_ms: u64) -> Verdict {
        let mut shard = self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let shard = &mut *shard;
        if let Some(w) = shard.keys.get_mut(key) {
            return hit(w, &self.limits, now_ms);
        }
        let full = || self.held.load(Ordering::Relaxed) >= self.max_keys;
        if full() && shard.last_sweep_ms != now_ms / 1000 {
            // at most one sweep per second per shard
            shard.last_sweep_ms = now_ms / 1000;
            let limits = &self.limits;
            let before = shard.keys.len();
            shard.keys.retain(|_, w| {
                w.iter()
                    .zip(limits)
                    .any(|(w, l)| w.index == now_ms / l.period_ms && w.count > 0)
            });
            self.held
                .fetch_sub(before - shard.keys.len(), Ordering::Relaxed);
            if shard.keys.len() < shard.keys.capacity() / 4 {
                shard.keys.shrink_to_fit();
            }
        }
        if full() {
            return hit(&mut shard.overflow, &self.limits, now_ms);
        }
        let mut w = vec![Window::default(); self.limits.len()].into_boxed_slice();
        let v = hit(&mut w, &self.limits, now_ms);
        shard.keys.insert(key.into(), w);
        self.held.fetch_add(1, Ordering::Relaxed);
        v
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).keys.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Limit = Limit {
        max: 2,
        period_ms: 1000,
    };
    const MIN: Limit = Limit {
        max: 3,
        period_ms: 60_000,
    };

    #[test]
    fn every_limit_must_pass_and_refusals_do_not_count() {
        let w = Windows::new(vec![SEC, MIN], 100);
        let t = 120_000; // the start of a minute
        let v: Vec<(bool, u64)> = (0..3)
            .map(|_| w.hit(b"k", t))
            .map(|v| (v.allowed, v.remaining))
            .collect();
        assert_eq!(v, [(true, 1), (true, 0), (false, 0)]);
        assert_eq!(w.hit(b"k", t).limit, 2, "the per-second limit refuses");
        // next second: one more fits the minute
        let v = w.hit(b"k", t + 1000);
        assert!(v.allowed);
        assert_eq!((v.limit, v.remaining), (3, 0), "the minute is now tightest");
        let v = w.hit(b"k", t + 2000);
        assert!(!v.allowed);
        assert_eq!((v.limit, v.reset_ms), (3, 58_000));
        // the minute ends
        assert!(w.hit(b"k", t + 60_000).allowed);
    }

    #[test]
    fn keys_are_exact_and_independent() {
        let w = Windows::new(vec![SEC], 100_000);
        for k in 0..10_000u32 {
            let key = k.to_be_bytes();
            assert!(w.hit(&key, 5_000).allowed);
            assert!(w.hit(&key, 5_000).allowed);
            assert!(!w.hit(&key, 5_000).allowed, "key {k}");
        }
        assert_eq!(w.len(), 10_000);
    }

    #[test]
    fn memory_is_bounded_and_expired_keys_are_dropped() {
        let w = Windows::new(vec![SEC], 64);
        for k in 0..1000u32 {
            w.hit(&k.to_be_bytes(), 1_000);
        }
        assert!(w.len() <= 64, "held {}", w.len());
        // a second later, new keys push the expired ones out
        for k in 1000..1064u32 {
            w.hit(&k.to_be_bytes(), 2_000);
        }
        assert!(w.len() <= 64);
        let kept_new = (1000..1064u32)
            .filter(|k| {
                let s = &w.shards[shard_of(&k.to_be_bytes())];
                s.lock().unwrap().keys.contains_key(&k.to_be_bytes()[..])
            })
            .count();
        assert!(kept_new >= 32, "new keys got room: {kept_new}");
    }

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The memory of 100,000 client keys (two limits each), as docs/policies.md
    /// reports it. Alone in its process for a clean reading:
    /// `cargo test --release --lib memory_of_100k_keys -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn memory_of_100k_keys() {
        let before = rss_kib();
        let w = Windows::new(vec![SEC, MIN], 100_000);
        for i in 0..100_000u32 {
            let key = format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            w.hit(key.as_bytes(), 1_000);
        }
        let per_key = (rss_kib() - before) * 1024 / 100_000;
        println!(
            "100,000 keys: {} KiB, {per_key} bytes per key",
            rss_kib() - before
        );
        assert_eq!(w.len(), 100_000);
        assert!(per_key < 200, "{per_key} bytes per key");
    }

    #[test]
    fn overflow_keys_are_limited_early_never_late() {
        let w = Windows::new(vec![SEC], 32);
        let mut allowed = 0;
        for k in 0..1000u32 {
            if w.hit(&k.to_be_bytes(), 1_000).allowed {
                allowed += 1;
            }
        }
        // 32 held keys at most 2 each, plus the shards' overflow counters
        assert_eq!(w.len(), 32);
        assert!(allowed <= 32 * 2 + SHARDS * 2, "{allowed}");
    }
}
