//! Caps on concurrent websockets in this process: per user and per tenant.
//!
//! A socket holds a [`ConnectionGuard`] for as long as it lives; dropping the
//! guard (the request context is dropped however the socket ends: client
//! close, upstream close, error, shutdown) releases the count, so a count can
//! never leak on an error path.
//!
//! With `connection_caps = "fleet"` the same caps are also counted across
//! every instance sharing the Redis ([`fleet`]); the per-process count here
//! still applies as well.

pub mod fleet;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::refusal::Refusal;

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_user: HashMap<String, u32>,
}

#[derive(Debug)]
pub struct ConnectionLimits {
    max_per_user: Option<u32>,
    max_per_tenant: Option<u32>,
    counts: Mutex<Counts>,
}

/// Holds one socket's place; releases it when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    limits: Arc<ConnectionLimits>,
    user: Option<String>,
}

impl ConnectionLimits {
    pub fn new(max_per_user: Option<u32>, max_per_tenant: Option<u32>) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_per_user,
            max_per_tenant,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Takes a place for a socket of `user` (`None`: anonymous, counted
    /// against the tenant only), or refuses with code 71.
    pub fn acquire(self: &Arc<Self>, user: Option<&str>) -> Result<ConnectionGuard, Refusal> {
        // A poisoned lock only means a panic elsewhere while counting; the
        // counts themselves are still consistent integers.
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if self.max_per_tenant.is_some_and(|max| c.total >= max) {
            return Err(Refusal::TooManyConnections);
        }
        if let Some(u) = user {
            let n = c.per_user.get(u).copied().unwrap_or(0);
            if self.max_per_user.is_some_and(|max| n >= max) {
                return Err(Refusal::TooManyConnections);
            }
            c.per_user.insert(u.to_string(), n + 1);
        }
        c.total += 1;
        Ok(ConnectionGuard {
            limits: Arc::clone(self),
            user: user.map(str::to_string),
        })
    }

    /// The caps: (per user, per tenant).
    pub fn caps(&self) -> (Option<u32>, Option<u32>) {
        (self.max_per_user, self.max_per_tenant)
    }

    /// Open sockets: (tenant total, this user's).
    pub fn open(&self, user: &str) -> (u32, u32) {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        (c.total, c.per_user.get(user).copied().unwrap_or(0))
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(u) = &self.user {
            if let Some(n) = c.per_user.get_mut(u) {
                *n -= 1;
                if *n == 0 {
                    // Keep the map as small as the set of connected users.
                    c.per_user.remove(u);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_per_tenant_caps_release_on_drop() {
        let l = ConnectionLimits::new(Some(2), Some(3));
        let a1 = l.acquire(Some("a")).unwrap();
        let a2 = l.acquire(Some("a")).unwrap();
        assert_eq!(
            l.acquire(Some("a")).err(),
            Some(Refusal::TooManyConnections)
        );
        let b1 = l.acquire(Some("b")).unwrap();
        assert_eq!(
            l.acquire(None).err(),
            Some(Refusal::TooManyConnections),
            "tenant cap"
        );
        drop(a1);
        assert_eq!(l.open("a"), (2, 1));
        let a3 = l.acquire(Some("a")).unwrap();
        drop((a2, a3, b1));
        assert_eq!(l.open("a"), (0, 0));
        assert!(l.counts.lock().unwrap().per_user.is_empty());
    }

    #[test]
    fn no_caps_means_unlimited() {
        let l = ConnectionLimits::new(None, None);
        let guards: Vec<_> = (0..100).map(|_| l.acquire(Some("a")).unwrap()).collect();
        assert_eq!(l.open("a"), (100, 100));
        drop(guards);
        assert_eq!(l.open("a"), (0, 0));
    }
}
