//! The client's address when the gateway runs behind proxies it trusts
//! (`server.trusted_proxies`): an L7 load balancer connects from its own
//! address, so without this every client behind it would share one
//! `per_ip` bucket and one `client_ip` in the audit log.
//!
//! Only a connection from a trusted proxy has its `X-Forwarded-For` read,
//! from the right (the entry the nearest proxy appended) leftwards, skipping
//! trusted addresses: the first untrusted one is the client. Entries left of
//! it were written by whoever the client is and are never believed. When
//! every entry is trusted, the leftmost is taken; an entry that is not an
//! address stops the walk at the last good one. With no trusted proxies (the
//! default) the header is ignored and the socket's peer is the client.

use std::net::IpAddr;

use crate::headers::RequestHeaders;

/// One `trusted_proxies` entry: an address or a `address/prefix` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `"10.0.0.0/8"`, `"fd00::/8"` or a single address (`"127.0.0.1"`).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("\"{s}\": not an IP address or CIDR block"))?;
        let net = net.to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("\"{s}\": prefix must be 0 to {max}")),
            },
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let keep = |bits: u32| match self.prefix {
            0 => 0u128,
            p => u128::MAX << (bits - u32::from(p)),
        };
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = keep(32);
                (u128::from(u32::from(n)) & m) == (u128::from(u32::from(a)) & m)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = keep(128);
                (u128::from(n) & m) == (u128::from(a) & m)
            }
            _ => false,
        }
    }
}

/// `server.trusted_proxies`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Box<[Cidr]>);

impl TrustedProxies {
    pub fn new(list: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(list.into_boxed_slice())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client of a request that came from `peer` (see the module doc).
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &impl RequestHeaders) -> Option<IpAddr> {
        let peer = peer?;
        if self.0.is_empty() || !self.trusts(peer) {
            return Some(peer);
        }
        let mut hops: smallvec::SmallVec<[&[u8]; 8]> = smallvec::SmallVec::new();
        for value in headers.all("x-forwarded-for") {
            hops.extend(value.split(|&b| b == b','));
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = hop_address(hop) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Some(client)
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`1.2.3.4:80`, `[::1]:80`).
fn hop_address(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    text.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn blocks_and_addresses_parse_and_match() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.200.1.2".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()), "v4-mapped");
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "fd00::/129", "nope", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_of_a_trusted_peer() {
        let t = TrustedProxies::new(vec![
            Cidr::parse("127.0.0.1").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap(),
        ]);
        let lb = ip("127.0.0.1");
        // The client wrote a fake first entry; the balancer appended the real one.
        assert_eq!(
            t.client_ip(lb, &xff(&["6.6.6.6, 203.0.113.7"])),
            ip("203.0.113.7")
        );
        // Trusted hops on the right are skipped, across header lines.
        assert_eq!(
            t.client_ip(lb, &xff(&["198.51.100.2", "10.1.1.1, 10.2.2.2"])),
            ip("198.51.100.2")
        );
        // Ports and brackets.
        assert_eq!(
            t.client_ip(lb, &xff(&["[2001:db8::5]:443"])),
            ip("2001:db8::5")
        );
        assert_eq!(
            t.client_ip(lb, &xff(&["198.51.100.9:1234"])),
            ip("198.51.100.9")
        );
        // All trusted: the leftmost; garbage stops the walk at the last good hop.
        assert_eq!(
            t.client_ip(lb, &xff(&["10.9.9.9, 10.1.1.1"])),
            ip("10.9.9.9")
        );
        assert_eq!(
            t.client_ip(lb, &xff(&["203.0.113.1, junk, 10.1.1.1"])),
            ip("10.1.1.1")
        );
        // No header from a trusted peer: the peer.
        assert_eq!(t.client_ip(lb, &xff(&[])), lb);
        // An untrusted peer's header is never read.
        let direct = ip("198.51.100.50");
        assert_eq!(t.client_ip(direct, &xff(&["1.2.3.4"])), direct);
        // Nothing trusted (the default): the header is ignored.
        assert_eq!(
            TrustedProxies::default().client_ip(lb, &xff(&["1.2.3.4"])),
            lb
        );
        assert_eq!(t.client_ip(None, &xff(&["1.2.3.4"])), None);
    }
}
