//! Sets of IP addresses and CIDR ranges, and who the client is.
//!
//! An [`IpSet`] is built once from config (addresses and CIDR ranges, IPv4
//! and IPv6, parsed with `ipnet`) into sorted, merged intervals, so a lookup
//! is a binary search: ~20 comparisons for 10,000 ranges. IPv4-mapped IPv6
//! addresses (`::ffff:10.0.0.1`) are looked up as the IPv4 address.
//!
//! [`client_ip`] decides the request's client address: the TCP peer, unless
//! the peer is a trusted proxy; then `X-Forwarded-For` is read from the
//! right, skipping addresses that are themselves trusted proxies. A client
//! that is not a trusted proxy cannot change its address by sending the
//! header. Pure: no I/O.

use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    /// The ranges as configured (normalised), for display.
    nets: Vec<IpNet>,
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

/// The address an IPv4-mapped IPv6 address stands for; others unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// An address (`10.0.0.1`, `::1`) or a range (`10.0.0.0/8`, `2001:db8::/32`).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(canonical(ip))),
        Err(_) => Err(format!(
            "{text:?} is not an IP address or CIDR range (examples: 10.0.0.0/8, 192.0.2.7, 2001:db8::/32)"
        )),
    }
}

fn merge<T: Copy + Ord + num_like::Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if last.1 >= lo || last.1.succ() == Some(lo) => {
                if hi > last.1 {
                    last.1 = hi;
                }
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

mod num_like {
    pub trait Successor: Sized {
        fn succ(self) -> Option<Self>;
    }
    impl Successor for u32 {
        fn succ(self) -> Option<u32> {
            self.checked_add(1)
        }
    }
    impl Successor for u128 {
        fn succ(self) -> Option<u128> {
            self.checked_add(1)
        }
    }
}

fn find<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    // the last range starting at or before x
    let i = ranges.partition_point(|(lo, _)| *lo <= x);
    i > 0 && x <= ranges[i - 1].1
}

impl IpSet {
    pub fn new(nets: Vec<IpNet>) -> IpSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in &nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => {
                    v6.push((u128::from(n.network()), u128::from(n.broadcast())));
                    // an IPv4-mapped range also covers the IPv4 addresses
                    if let (Some(lo), Some(hi)) =
                        (n.network().to_ipv4_mapped(), n.broadcast().to_ipv4_mapped())
                    {
                        v4.push((u32::from(lo), u32::from(hi)));
                    }
                }
            }
        }
        IpSet {
            nets,
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(v4) => find(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => find(&self.v6, u128::from(v6)),
        }
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the right-most address of `X-Forwarded-For` (all its header lines, in
/// order) that is not a trusted proxy itself. Unparsable entries stop the
/// walk: what is left of them cannot be trusted, so the last trusted hop's
/// view (the address right of it) is used.
pub fn client_ip<'h>(
    peer: IpAddr,
    trusted: &IpSet,
    forwarded_for: impl DoubleEndedIterator<Item = &'h str>,
) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    for value in forwarded_for.rev() {
        for entry in value.rsplit(',') {
            let Some(ip) = parse_forwarded_entry(entry) else {
                return client;
            };
            client = canonical(ip);
            if !trusted.contains(client) {
                return client;
            }
        }
    }
    client
}

/// `192.0.2.7`, `2001:db8::1`, `[2001:db8::1]:443` or `192.0.2.7:1234`.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = e.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    e.rsplit_once(':').and_then(|(h, _)| h.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> IpSet {
        IpSet::new(items.iter().map(|s| parse_net(s).unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_edges_and_mapped_addresses() {
        let s = set(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "10.1.0.0/16"]);
        assert!(s.contains(ip("10.0.0.0")));
        assert!(s.contains(ip("10.255.255.255")));
        assert!(!s.contains(ip("11.0.0.0")));
        assert!(!s.contains(ip("9.255.255.255")));
        assert!(s.contains(ip("192.0.2.7")));
        assert!(!s.contains(ip("192.0.2.8")));
        assert!(
            s.contains(ip("::ffff:10.0.0.1")),
            "mapped v6 matches v4 rules"
        );
        assert!(s.contains(ip("2001:db8:ffff::1")));
        assert!(!s.contains(ip("2001:db9::1")));
        assert!(!s.contains(ip("::1")));
        let v6 = set(&["::ffff:172.16.0.0/108"]);
        assert!(v6.contains(ip("172.16.0.5")), "a mapped range covers v4");
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("example.com").is_err());
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
    }

    #[test]
    fn adjacent_and_overlapping_ranges_merge() {
        let s = set(&["10.0.0.0/25", "10.0.0.128/25", "10.0.0.5/32"]);
        assert_eq!(s.v4, vec![(0x0a00_0000, 0x0a00_00ff)]);
        let all = set(&["0.0.0.0/0", "::/0"]);
        assert!(all.contains(ip("255.255.255.255")) && all.contains(ip("ffff::1")));
    }

    #[test]
    fn client_behind_trusted_proxies() {
        let trusted = set(&["10.0.0.0/8", "::1"]);
        let untrusted_peer = ip("203.0.113.9");
        let forged = ["1.2.3.4"];
        assert_eq!(
            client_ip(untrusted_peer, &trusted, forged.iter().copied()),
            untrusted_peer,
            "a forged header from an untrusted peer changes nothing"
        );
        let via_lb = ["1.2.3.4, 198.51.100.2", "10.0.0.7"];
        assert_eq!(
            client_ip(ip("10.0.0.1"), &trusted, via_lb.iter().copied()),
            ip("198.51.100.2"),
            "right-most address that is not a trusted proxy"
        );
        let all_trusted = ["10.0.0.9, 10.0.0.8"];
        assert_eq!(
            client_ip(ip("::1"), &trusted, all_trusted.iter().copied()),
            ip("10.0.0.9")
        );
        let garbage = ["198.51.100.2, nonsense"];
        assert_eq!(
            client_ip(ip("10.0.0.1"), &trusted, garbage.iter().copied()),
            ip("10.0.0.1"),
            "an unparsable hop stops the walk"
        );
        assert_eq!(
            client_ip(
                ip("10.0.0.1"),
                &trusted,
                ["[2001:db8::5]:443"].iter().copied()
            ),
            ip("2001:db8::5")
        );
        assert_eq!(
            client_ip(
                ip("::ffff:10.0.0.1"),
                &trusted,
                ["192.0.2.1"].iter().copied()
            ),
            ip("192.0.2.1"),
            "a mapped peer is trusted as its IPv4 address"
        );
    }
}
