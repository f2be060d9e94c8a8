//! Generated hostile paths against the policy: whatever is forwarded must be
//! a fixed point of normalisation and classification, and disguised server
//! routes must never be forwarded. Table-driven tests are in `tests.rs`.

use super::tests::{allow_all_unknown, deny_all_unknown};
use super::*;

/// A tiny deterministic generator (no external crates).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Whatever is forwarded must re-decide to the identical Forward, so the path
/// Stream sees is exactly the one that was classified.
#[test]
fn forwarded_paths_are_fixed_points_for_hostile_inputs() {
    let pieces = r"/ // . .. %2e %2E %2e%2E %2F %252e ; \ %5c ChannelTypes channeltypes API api V2 v2
        Chat chat Channels messages History history app App x1 Imports users %41pp Query %7e é {id} %20";
    let pieces: Vec<&str> = pieces.split_whitespace().collect();
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "get"];
    let policies = [deny_all_unknown(), allow_all_unknown()];
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut forwards = 0;
    for _ in 0..20_000 {
        let method = rng.pick(&methods);
        let mut raw = String::new();
        for _ in 0..=rng.below(9) {
            raw.push('/');
            raw.push_str(rng.pick(&pieces));
        }
        for policy in &policies {
            let decision = policy.decide(method, &raw);
            if let Decision::Forward { path, .. } = &decision {
                forwards += 1;
                assert_eq!(&policy.decide(method, path), &decision, "{method} {raw:?}");
            }
        }
    }
    assert!(forwards > 1_000, "only {forwards} forwards generated");
}

/// Meaning-preserving disguises of every server route (case, escapes, dot
/// segments, extra slashes) must still be refused as that server route.
#[test]
fn disguised_server_routes_are_never_forwarded() {
    let policies = [deny_all_unknown(), allow_all_unknown()];
    let table = RouteTable::embedded();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut checked = 0;
    for route in table.routes().iter().filter(|r| r.side == Side::Server) {
        for _ in 0..20 {
            let mut raw = String::new();
            for segment in route.template.split('/').skip(1) {
                let value = if segment.starts_with('{') {
                    format!("x{}", rng.below(100))
                } else {
                    segment.to_string()
                };
                match rng.below(6) {
                    0 => raw.push_str("/./"),
                    1 => raw.push_str("/junk/%2E%2e/"),
                    2 => raw.push_str("//%2e/"),
                    _ => raw.push('/'),
                }
                for byte in value.bytes() {
                    match rng.below(4) {
                        0 => raw.push_str(&format!("%{byte:02x}")),
                        1 => raw.push_str(&format!("%{byte:02X}")),
                        2 => raw.push(char::from(byte.to_ascii_uppercase())),
                        _ => raw.push(char::from(byte)),
                    }
                }
            }
            if rng.below(2) == 0 {
                raw.push('/');
            }
            for policy in &policies {
                let expected = Decision::RefuseServerRoute {
                    operation: route.operation.clone(),
                    template: route.template.clone(),
                };
                assert_eq!(policy.decide(&route.method, &raw), expected, "{raw:?}");
                checked += 1;
            }
        }
    }
    assert!(checked > 9_000);
}
