//! Admission: open connections of a listener, in all and by client IP.

use crate::config::ClientLimits;
use crate::ipset::IpSet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Open connections of one listener, in all and by client IP.
#[derive(Debug, Default)]
pub(super) struct Gate {
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; counted until dropped.
pub(super) struct Admitted {
    gate: Arc<Gate>,
    ip: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut by_ip = self.gate.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    ListenerLimit,
    ClientLimit,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::ListenerLimit => "listener_limit",
            Refused::ClientLimit => "client_limit",
        }
    }
}

impl Gate {
    pub(super) fn admit(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        limits: &ClientLimits,
        trusted: &IpSet,
    ) -> Result<Admitted, Refused> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= limits.max_connections {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::ListenerLimit);
        }
        let mut admitted = Admitted {
            gate: self.clone(),
            ip: None,
        };
        if let (Some(max), Some(ip)) = (limits.max_connections_per_client, peer) {
            if !trusted.contains(ip) {
                let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
                let n = by_ip.entry(ip).or_insert(0);
                if *n >= max {
                    return Err(Refused::ClientLimit); // `admitted` gives the count back
                }
                *n += 1;
                admitted.ip = Some(ip);
            }
        }
        Ok(admitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_client: Option<usize>) -> ClientLimits {
        ClientLimits {
            max_connections: max,
            max_connections_per_client: per_client,
            ..ClientLimits::default()
        }
    }

    #[test]
    fn listener_limit_counts_open_connections() {
        let gate = Arc::new(Gate::default());
        let l = limits(2, None);
        let none = IpSet::default();
        let a = gate.admit(None, &l, &none).unwrap();
        let _b = gate.admit(None, &l, &none).unwrap();
        assert_eq!(
            gate.admit(None, &l, &none).err(),
            Some(Refused::ListenerLimit)
        );
        drop(a);
        assert!(gate.admit(None, &l, &none).is_ok());
    }

    #[test]
    fn client_limit_is_per_ip_and_spares_trusted_proxies() {
        let gate = Arc::new(Gate::default());
        let l = limits(100, Some(1));
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = IpSet::new(vec![crate::ipset::parse_net("10.0.0.0/8").unwrap()]);
        let first = gate.admit(Some(one), &l, &trusted).unwrap();
        assert_eq!(
            gate.admit(Some(one), &l, &trusted).err(),
            Some(Refused::ClientLimit)
        );
        let _other = gate.admit(Some(two), &l, &trusted).unwrap();
        let _p1 = gate.admit(Some(proxy), &l, &trusted).unwrap();
        let _p2 = gate.admit(Some(proxy), &l, &trusted).unwrap();
        // a refusal gives its listener count back
        assert_eq!(gate.open.load(Ordering::Relaxed), 4);
        drop(first);
        assert!(gate.by_ip.lock().unwrap().get(&one).is_none());
        assert!(gate.admit(Some(one), &l, &trusted).is_ok());
    }
}
