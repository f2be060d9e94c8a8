//! An IP address as text, formatted on the stack: `Display` for an IPv4
//! address costs more than the rest of the upstream header rewrite
//! (callgrind), and both the `X-Forwarded-For` header and the audit record's
//! `client_ip` need the text on every request.

use std::net::IpAddr;

/// The text of an IP address, exactly what `Display` writes.
pub struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    pub fn new(ip: IpAddr) -> IpText {
        use std::io::Write;
        let mut buf = [0u8; 48];
        let mut len = 0;
        match ip {
            IpAddr::V4(v4) => {
                // Dotted quad, digit by digit: no copy of a variable-length
                // slice (a `memcpy` call per octet with itoa).
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        buf[len] = b'.';
                        len += 1;
                    }
                    if octet >= 100 {
                        buf[len] = b'0' + octet / 100;
                        len += 1;
                    }
                    if octet >= 10 {
                        buf[len] = b'0' + octet / 10 % 10;
                        len += 1;
                    }
                    buf[len] = b'0' + octet % 10;
                    len += 1;
                }
            }
            IpAddr::V6(_) => {
                let mut cursor = std::io::Cursor::new(&mut buf[..]);
                // An IPv6 address is at most 45 bytes: the write cannot run
                // out of room.
                let _ = write!(cursor, "{ip}");
                len = usize::try_from(cursor.position()).unwrap_or(0);
            }
        }
        IpText { buf, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn as_str(&self) -> &str {
        // Digits, hex digits, '.' and ':' only.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::IpText;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn writes_what_display_writes() {
        // Every octet value in every position, and the edges together.
        for v in 0..=255u8 {
            for ip in [
                Ipv4Addr::new(v, 0, 255, 9),
                Ipv4Addr::new(10, v, 100, 99),
                Ipv4Addr::new(255, 1, v, 10),
                Ipv4Addr::new(0, 255, 1, v),
                Ipv4Addr::new(v, v, v, v),
            ] {
                let ip = IpAddr::V4(ip);
                assert_eq!(IpText::new(ip).as_str(), ip.to_string());
            }
        }
        let v6 = IpAddr::V6(Ipv6Addr::new(
            0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
        ));
        assert_eq!(IpText::new(v6).as_str(), v6.to_string());
        let mapped = IpAddr::V6(Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped());
        assert_eq!(IpText::new(mapped).as_str(), "::ffff:1.2.3.4");
        assert_eq!(IpText::new(IpAddr::V6(Ipv6Addr::LOCALHOST)).as_str(), "::1");
    }
}
