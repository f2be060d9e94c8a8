//! Local rate limits (governor token buckets) per user, per client IP and per
//! tenant, checked before a request is forwarded.
//!
//! Keyed limiters keep one small state per key; [`LocalLimits::prune`] (run on
//! a timer by the server) drops the keys whose buckets are full again, so a
//! million one-off users do not stay in memory. Time comes from a governor
//! `Clock`, so tests drive the buckets with a fake clock.
//!
//! Per-route limits ([`RouteSelector`]) are keyed by user, or by client IP for
//! anonymous users. A service account has its own bucket instead of the
//! per-user, per-IP and per-route ones ([`LocalLimits::check_service`]); the
//! tenant bucket counts everyone. The fleet-wide quotas live in `quota`.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};

/// A parsed `{ rate = "20/s", burst = 40 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub quota: Quota,
    pub burst: u32,
}

impl Rate {
    /// `count` requests per `window_secs`, bursts up to `burst`.
    pub fn new(count: u32, window_secs: u64, burst: u32) -> Option<Rate> {
        let count = NonZeroU32::new(count)?;
        let burst_nz = NonZeroU32::new(burst)?;
        let period = Duration::from_secs(window_secs) / count.get();
        let quota = Quota::with_period(period)?.allow_burst(burst_nz);
        Some(Rate { quota, burst })
    }
}

/// A refusal's details, for Stream's 429 headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Bucket size of the limit that refused (`X-RateLimit-Limit`).
    pub limit: u32,
    /// Whole seconds until a request would pass (`Retry-After`, at least 1).
    pub retry_after_secs: u64,
    /// Which limit refused: `route`, `per_user`, `per_ip`, `per_tenant` or
    /// `per_service`.
    pub which: &'static str,
}

/// Keyed buckets hash their keys with ahash, randomly keyed per map
/// (with SipHash, governor's default, the three checks of a request cost
/// 1,077 instructions instead of 675; callgrind).
type Keyed<K, C> = RateLimiter<
    K,
    DefaultKeyedStateStore<K, ahash::RandomState>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;
fn keyed<K: std::hash::Hash + Eq + Clone, C: Clock>(quota: Quota, clock: C) -> Keyed<K, C> {
    RateLimiter::dashmap_with_clock_and_hasher(quota, clock, ahash::RandomState::new())
}

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Which requests a per-route limit counts: an operation name from the route
/// table, or a method and path template (placeholder names ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteSelector {
    Operation(String),
    Route { method: String, template: String },
}

impl RouteSelector {
    /// True for a request of this operation, or this method and template.
    pub fn matches(&self, method: &str, template: &str, operation: &str) -> bool {
        match self {
            RouteSelector::Operation(op) => op == operation,
            RouteSelector::Route {
                method: m,
                template: t,
            } => m == method && same_shape(t, template),
        }
    }
}

/// Templates are equal up to placeholder names (`{id}` = `{message_id}`).
pub fn same_shape(a: &str, b: &str) -> bool {
    use crate::policy::table::is_placeholder as seg;
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(p), Some(q)) if (seg(p) && seg(q)) || p.eq_ignore_ascii_case(q) => {}
            _ => return false,
        }
    }
}

thread_local! {
    /// [`LocalLimits::check`]'s per-user lookup key.
    static USER_KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

pub struct LocalLimits<C: Clock = DefaultClock> {
    clock: C,
    /// Per-route buckets, keyed by user (or client IP for anonymous users).
    routes: Vec<(RouteSelector, u32, Keyed<String, C>)>,
    per_user: Option<(u32, Keyed<String, C>)>,
    per_ip: Option<(u32, Keyed<IpAddr, C>)>,
    per_tenant: Option<(u32, Direct<C>)>,
    /// Each service account's own bucket, by name (few, from config).
    services: std::collections::HashMap<String, (u32, Direct<C>)>,
}

impl LocalLimits<DefaultClock> {
    pub fn new(per_user: Option<Rate>, per_ip: Option<Rate>, per_tenant: Option<Rate>) -> Self {
        Self::with_clock(per_user, per_ip, per_tenant, DefaultClock::default())
    }
}

/// What a request is, for per-route limits.
#[derive(Debug, Clone, Copy)]
pub struct RequestKind<'a> {
    pub method: &'a str,
    pub template: &'a str,
    pub operation: &'a str,
}

impl<C: Clock + Clone> LocalLimits<C> {
    pub fn with_clock(
        per_user: Option<Rate>,
        per_ip: Option<Rate>,
        per_tenant: Option<Rate>,
        clock: C,
    ) -> Self {
        LocalLimits {
            per_user: per_user.map(|r| (r.burst, keyed(r.quota, clock.clone()))),
            per_ip: per_ip.map(|r| (r.burst, keyed(r.quota, clock.clone()))),
            per_tenant: per_tenant.map(|r| {
                (
                    r.burst,
                    RateLimiter::direct_with_clock(r.quota, clock.clone()),
                )
            }),
            routes: Vec::new(),
            services: std::collections::HashMap::new(),
            clock,
        }
    }

    /// Adds a service account's own bucket.
    pub fn with_service(mut self, name: &str, rate: Rate) -> Self {
        let l = RateLimiter::direct_with_clock(rate.quota, self.clock.clone());
        self.services.insert(name.to_string(), (rate.burst, l));
        self
    }

    /// Adds a per-route limit (checked before the general ones).
    pub fn with_route(mut self, selector: RouteSelector, rate: Rate) -> Self {
        let l = keyed(rate.quota, self.clock.clone());
        self.routes.push((selector, rate.burst, l));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.per_user.is_none()
            && self.per_ip.is_none()
            && self.per_tenant.is_none()
            && self.routes.is_empty()
            && self.services.is_empty()
    }

    /// A service request: its own bucket, then the tenant's. The per-user,
    /// per-IP and per-route buckets are for users (a backend calls for many
    /// users, from few addresses); a service's own `limits` replace them.
    pub fn check_service(&self, name: &str) -> Result<(), Limited> {
        if let Some((burst, l)) = self.services.get(name) {
            l.check()
                .map_err(|n| self.limited("per_service", *burst, &n))?;
        }
        if let Some((burst, l)) = &self.per_tenant {
            l.check()
                .map_err(|n| self.limited("per_tenant", *burst, &n))?;
        }
        Ok(())
    }

    /// Takes one request from every bucket that applies, narrowest first.
    /// A request refused by one bucket has still been counted by the
    /// narrower ones before it: a client hammering past the tenant limit
    /// also drains its own bucket, which is the fair outcome.
    pub fn check(
        &self,
        user: Option<&str>,
        ip: Option<IpAddr>,
        kind: RequestKind<'_>,
    ) -> Result<(), Limited> {
        for (sel, burst, l) in &self.routes {
            if sel.matches(kind.method, kind.template, kind.operation) {
                let key = match (user, ip) {
                    (Some(u), _) => format!("u:{u}"),
                    (None, Some(ip)) => format!("ip:{ip}"),
                    (None, None) => "anonymous".to_string(),
                };
                l.check_key(&key)
                    .map_err(|n| self.limited("route", *burst, &n))?;
            }
        }
        if let (Some((burst, l)), Some(u)) = (&self.per_user, user) {
            // Keys are owned Strings: the lookup's key is written into a
            // buffer kept per thread (a new key is cloned only when stored).
            USER_KEY
                .with_borrow_mut(|key| {
                    key.clear();
                    key.push_str(u);
                    l.check_key(key)
                })
                .map_err(|n| self.limited("per_user", *burst, &n))?;
        }
        if let (Some((burst, l)), Some(ip)) = (&self.per_ip, ip) {
            l.check_key(&ip)
                .map_err(|n| self.limited("per_ip", *burst, &n))?;
        }
        if let Some((burst, l)) = &self.per_tenant {
            l.check()
                .map_err(|n| self.limited("per_tenant", *burst, &n))?;
        }
        Ok(())
    }

    fn limited(
        &self,
        which: &'static str,
        limit: u32,
        not_until: &NotUntil<C::Instant>,
    ) -> Limited {
        let wait = not_until.wait_time_from(self.clock.now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Limited {
            limit,
            retry_after_secs: secs.max(1),
            which,
        }
    }

    /// Drops per-key state of buckets that are full again (idle keys).
    pub fn prune(&self) {
        fn prune_one<K: Hash + Eq + Clone, C: Clock>(l: &Keyed<K, C>) {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some((_, l)) = &self.per_user {
            prune_one(l);
        }
        if let Some((_, l)) = &self.per_ip {
            prune_one(l);
        }
        for (_, _, l) in &self.routes {
            prune_one(l);
        }
    }

    /// Keys currently held (users + IPs), for tests and metrics.
    pub fn tracked_keys(&self) -> usize {
        self.per_user.as_ref().map_or(0, |(_, l)| l.len())
            + self.per_ip.as_ref().map_or(0, |(_, l)| l.len())
    }
}

/// Run after each pruning pass (see [`on_prune`]).
static AFTER_PRUNE: OnceLock<fn()> = OnceLock::new();

/// Registers what runs after the limiters are pruned: the binary hands the
/// freed memory back to the OS here (mimalloc keeps freed pages mapped until
/// asked; `benches/limits_memory.rs` measures the difference). Set once.
pub fn on_prune(release: fn()) {
    let _ = AFTER_PRUNE.set(release);
}

/// Calls the function registered with [`on_prune`], if any.
pub fn after_prune() {
    if let Some(release) = AFTER_PRUNE.get() {
        release();
    }
}

#[cfg(test)]
mod tests;
