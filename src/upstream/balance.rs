//! Choosing a target: the algorithms over one service's current targets.
//! Each walks the targets in its own order and takes the first that
//! `admit` accepts (healthy, not ejected, breaker closed, not already
//! tried by this request), so a sick target costs a step, not an error.

use crate::config::model::Balance;
use pingora_ketama::{Bucket, Continuum};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What selection needs to know of a target.
pub trait Weighted {
    fn addr(&self) -> SocketAddr;
    fn weight(&self) -> u32;
    /// Requests in progress to it.
    fn outstanding(&self) -> usize;
}

/// The order of a service's targets for selection, rebuilt when the set of
/// targets changes (config or DNS).
pub struct Order {
    /// Smooth weighted round robin over target indexes: weights 3:1 give
    /// `0 0 1 0`, not `0 0 0 1`. Length = sum of weights (after dividing
    /// by their greatest common divisor).
    sequence: Vec<u32>,
    continuum: Option<(Continuum, HashMap<SocketAddr, usize>)>,
    next: AtomicUsize,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// nginx's smooth weighted round robin, unrolled once.
fn smooth_sequence(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|w| i64::from(w / g)).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

impl Order {
    pub fn new<T: Weighted>(targets: &[T], balance: &Balance) -> Order {
        let weights: Vec<u32> = targets.iter().map(|t| t.weight().max(1)).collect();
        let continuum = matches!(balance, Balance::Hash(_)).then(|| {
            let buckets: Vec<Bucket> = targets
                .iter()
                .map(|t| Bucket::new(t.addr(), t.weight().max(1)))
                .collect();
            let index = targets
                .iter()
                .enumerate()
                .map(|(i, t)| (t.addr(), i))
                .collect();
            (Continuum::new(&buckets), index)
        });
        Order {
            sequence: smooth_sequence(&weights),
            continuum,
            next: AtomicUsize::new(0),
        }
    }

    /// The index of the chosen target. `key`: the hash key (hash
    /// balancing; without one it falls back to round robin).
    pub fn pick<T: Weighted>(
        &self,
        targets: &[T],
        balance: &Balance,
        key: Option<&[u8]>,
        mut admit: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        if targets.is_empty() || self.sequence.is_empty() {
            return None;
        }
        match (balance, key, &self.continuum) {
            (Balance::Hash(_), Some(key), Some((continuum, index))) => continuum
                .node_iter(key)
                .filter_map(|addr| index.get(addr).copied())
                .take(targets.len() * 4)
                .find(|&i| admit(i)),
            (Balance::LeastRequests, _, _) => {
                // fewest in progress per unit of weight; the walk starts
                // at a rotating point so ties are shared
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let n = targets.len();
                let mut best: Option<usize> = None;
                let mut order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
                order.sort_by(|&a, &b| {
                    let (ta, tb) = (&targets[a], &targets[b]);
                    let la = (ta.outstanding() as u64 + 1) * u64::from(tb.weight().max(1));
                    let lb = (tb.outstanding() as u64 + 1) * u64::from(ta.weight().max(1));
                    la.cmp(&lb)
                });
                for i in order {
                    if admit(i) {
                        best = Some(i);
                        break;
                    }
                }
                best
            }
            _ => {
                let len = self.sequence.len();
                let start = match balance {
                    Balance::Random => rand::random::<u32>() as usize,
                    _ => self.next.fetch_add(1, Ordering::Relaxed),
                };
                // targets already asked (a bit each; no allocation for up
                // to 64 targets, the common case)
                let mut small = 0u64;
                let mut large = if targets.len() > 64 {
                    vec![false; targets.len()]
                } else {
                    Vec::new()
                };
                for k in 0..len {
                    let i = self.sequence[(start + k) % len] as usize;
                    let seen = if large.is_empty() {
                        let was = small & (1 << i) != 0;
                        small |= 1 << i;
                        was
                    } else {
                        std::mem::replace(&mut large[i], true)
                    };
                    if !seen && admit(i) {
                        return Some(i);
                    }
                }
                None
            }
        }
    }
}

/// Pick one of `weights` with probability weight / total (a route's split
/// between services); `None` when every weight is 0.
pub fn weighted_choice(weights: impl Iterator<Item = u32> + Clone) -> Option<usize> {
    let total: u64 = weights.clone().map(u64::from).sum();
    if total == 0 {
        return None;
    }
    let mut r = rand::random::<u64>() % total;
    for (i, w) in weights.enumerate() {
        let w = u64::from(w);
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::HashOn;

    struct T(SocketAddr, u32, usize);
    impl Weighted for T {
        fn addr(&self) -> SocketAddr {
            self.0
        }
        fn weight(&self) -> u32 {
            self.1
        }
        fn outstanding(&self) -> usize {
            self.2
        }
    }

    fn targets(weights: &[u32]) -> Vec<T> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| T(SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)), *w, 0))
            .collect()
    }

    #[test]
    fn smooth_round_robin_interleaves_by_weight() {
        assert_eq!(smooth_sequence(&[3, 1]), vec![0, 0, 1, 0]);
        assert_eq!(smooth_sequence(&[1, 1, 1]), vec![0, 1, 2]);
        assert_eq!(smooth_sequence(&[50, 50]), vec![0, 1], "divided by the gcd");
        let s = smooth_sequence(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 5);
    }

    #[test]
    fn round_robin_skips_what_admit_refuses() {
        let t = targets(&[1, 1, 1]);
        let order = Order::new(&t, &Balance::RoundRobin);
        let picks: Vec<usize> = (0..6)
            .filter_map(|_| order.pick(&t, &Balance::RoundRobin, None, |i| i != 1))
            .collect();
        assert!(!picks.contains(&1));
        assert_eq!(picks.len(), 6);
        assert!(order
            .pick(&t, &Balance::RoundRobin, None, |_| false)
            .is_none());
    }

    #[test]
    fn least_requests_prefers_the_idle_target() {
        let mut t = targets(&[1, 1, 1]);
        t[0].2 = 5;
        t[2].2 = 2;
        let order = Order::new(&t, &Balance::LeastRequests);
        for _ in 0..5 {
            assert_eq!(
                order.pick(&t, &Balance::LeastRequests, None, |_| true),
                Some(1)
            );
        }
        // weight counts: 4 in progress at weight 4 beats 2 at weight 1
        let mut t = targets(&[4, 1]);
        t[0].2 = 4;
        t[1].2 = 2;
        let order = Order::new(&t, &Balance::LeastRequests);
        assert_eq!(
            order.pick(&t, &Balance::LeastRequests, None, |_| true),
            Some(0)
        );
    }

    #[test]
    fn hashing_keeps_a_key_on_one_target_and_moves_it_when_refused() {
        let t = targets(&[1, 1, 1, 1]);
        let b = Balance::Hash(HashOn::ClientIp);
        let order = Order::new(&t, &b);
        for key in ["alice", "bob", "carol"] {
            let first = order.pick(&t, &b, Some(key.as_bytes()), |_| true).unwrap();
            for _ in 0..10 {
                assert_eq!(
                    order.pick(&t, &b, Some(key.as_bytes()), |_| true),
                    Some(first)
                );
            }
            let other = order
                .pick(&t, &b, Some(key.as_bytes()), |i| i != first)
                .unwrap();
            assert_ne!(other, first);
        }
        // keys spread over the targets
        let used: std::collections::HashSet<usize> = (0..200)
            .filter_map(|k| order.pick(&t, &b, Some(format!("k{k}").as_bytes()), |_| true))
            .collect();
        assert_eq!(used.len(), 4);
    }

    #[test]
    fn weighted_choice_follows_weights() {
        let mut counts = [0usize; 2];
        for _ in 0..10_000 {
            counts[weighted_choice([90u32, 10].into_iter()).unwrap()] += 1;
        }
        assert!((8_700..=9_300).contains(&counts[0]), "{counts:?}");
        assert_eq!(weighted_choice([0u32, 0].into_iter()), None);
        assert_eq!(weighted_choice([0u32, 3].into_iter()), Some(1));
    }
}
