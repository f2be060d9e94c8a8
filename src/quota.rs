//! Per-tenant request quotas shared by every gateway instance through Redis
//! (`[tenants.quota]` with `[redis]`).
//!
//! Each request is counted before it is forwarded, by one Lua script that
//! checks and increments the tenant's minute and day counters atomically, so
//! N instances together never let through more than the quota (no extra
//! bound: a refused request is not counted). Keys use a `{tenant}` hash tag,
//! so both counters of a tenant live in one Redis Cluster slot.
//!
//! By default every request is counted exactly, but requests that find a
//! call on the same counters in flight wait for it and are then counted
//! together in one call ([`batch`]): one Redis round trip per batch, with
//! the outcome of counting them one by one (with a timeout). With
//! `lease = N` (N > 1) each instance instead takes blocks of up to N requests
//! of the tenant-wide counters at a time (see [`lease`]): one round trip per
//! N requests, still never more than the quota fleet-wide, at the price of
//! refusing early by at most `instances × (N − 1)` requests per window.
//! Per-user counters stay exact (batched only with the same user's
//! requests).
//! A service account's requests count against the tenant's counters like
//! anyone's, never against a user's; a service may also have its own minute
//! and day windows (its share of the tenant quota), counted exactly like a
//! user's under `sg:quota:{tenant}:s:<name>:...` ([`Who::Service`]).
//! When Redis fails or is slow, `on_redis_error` decides: `local` (default)
//! lets the request through (the local buckets still apply), `deny` refuses
//! it with 503. The outage is logged once, and its end too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod batch;
mod lease;

use batch::{Batches, Counters};
use lease::Leases;

use crate::redis_conn::Redis;

/// What to do when Redis cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    Local,
    Deny,
}

/// A tenant's shared quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_minute: Option<u64>,
    pub per_day: Option<u64>,
    /// The same windows, per signed-in user of the tenant.
    pub user_per_minute: Option<u64>,
    pub user_per_day: Option<u64>,
    /// Requests of the tenant-wide counters taken from Redis at a time by
    /// each instance; 1: every request counted in Redis (exact).
    pub lease: u64,
}

impl Default for Quota {
    fn default() -> Quota {
        Quota {
            per_minute: None,
            per_day: None,
            user_per_minute: None,
            user_per_day: None,
            lease: 1,
        }
    }
}

impl Quota {
    fn has_tenant_limit(&self) -> bool {
        self.per_minute.is_some() || self.per_day.is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.per_minute.is_none()
            && self.per_day.is_none()
            && self.user_per_minute.is_none()
            && self.user_per_day.is_none()
    }
}

/// Whose own counters a request also takes from, besides the tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who<'a> {
    /// A signed-in user: the tenant's `user_requests_per_*` windows.
    User(&'a str),
    /// A service account and its own windows.
    Service {
        name: &'a str,
        per_minute: Option<u64>,
        per_day: Option<u64>,
    },
}

impl<'a> Who<'a> {
    /// (key segment, id, minute limit, day limit) of its counters; user ids
    /// and service names are letters, digits, `@ _ -`: no key injection, and
    /// the `u:`/`s:` segment keeps a user and a service of one name apart.
    fn counters(self, quota: &Quota) -> (&'static str, &'a str, Option<u64>, Option<u64>) {
        match self {
            Who::User(u) => ("u", u, quota.user_per_minute, quota.user_per_day),
            Who::Service {
                name,
                per_minute,
                per_day,
            } => ("s", name, per_minute, per_day),
        }
    }

    fn is_limited(self, quota: &Quota) -> bool {
        let (_, _, m, d) = self.counters(quota);
        m.is_some() || d.is_some()
    }
}

/// Why a request did not pass the shared quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaError {
    /// Over the quota: the limit and the end of its window (Unix seconds).
    Exceeded { limit: u64, reset_at: u64 },
    /// Redis failed and `on_redis_error = "deny"`.
    Unavailable,
}

pub struct SharedQuotas {
    redis: Arc<Redis>,
    script: redis::Script,
    lease_script: redis::Script,
    on_error: OnRedisError,
    /// Set during an outage, so it is logged once (and its end once).
    down: AtomicBool,
    /// Blocks of quota leased by this instance, per tenant (`lease > 1`).
    leases: Leases,
    /// Exact counts waiting for a call on the same counters.
    batches: Batches,
    /// The tenants' minute and day counter keys of the current windows.
    tenant_keys: TenantKeys,
}

/// Per tenant, its minute and day counter keys for the windows last asked
/// for: two `format!`s and two allocations a request fewer (callgrind).
#[derive(Default)]
struct TenantKeys(std::sync::Mutex<HashMap<Box<str>, Windows, ahash::RandomState>>);

/// A tenant's keys for one minute and one day.
struct Windows {
    minute: u64,
    day: u64,
    keys: [Arc<str>; 2],
}

impl TenantKeys {
    /// `[minute key, day key]` of `tenant` for these windows.
    fn get(&self, tenant: &str, minute: u64, day: u64) -> [Arc<str>; 2] {
        let make = || Windows {
            minute,
            day,
            keys: [
                lease::minute_key(tenant, minute).into(),
                lease::day_key(tenant, day).into(),
            ],
        };
        let Ok(mut map) = self.0.lock() else {
            return make().keys;
        };
        if let Some(w) = map
            .get(tenant)
            .filter(|w| w.minute == minute && w.day == day)
        {
            return w.keys.clone();
        }
        let w = make();
        let keys = w.keys.clone();
        map.insert(tenant.into(), w);
        keys
    }
}

impl SharedQuotas {
    pub fn new(redis: Arc<Redis>, on_error: OnRedisError) -> SharedQuotas {
        SharedQuotas {
            redis,
            script: redis::Script::new(batch::SCRIPT),
            lease_script: redis::Script::new(lease::SCRIPT),
            on_error,
            down: AtomicBool::new(false),
            leases: Leases::default(),
            batches: Batches::default(),
            tenant_keys: TenantKeys::default(),
        }
    }

    /// Counts one request of `tenant` (and of `who`, a signed-in user or a
    /// service account, when given) at Unix time `now`, or refuses it.
    pub async fn check(
        &self,
        tenant: &str,
        who: Option<Who<'_>>,
        quota: Quota,
        now: u64,
    ) -> Result<(), QuotaError> {
        let own = who.filter(|w| w.is_limited(&quota));
        if !quota.has_tenant_limit() && own.is_none() {
            return Ok(());
        }
        if quota.lease <= 1 || !quota.has_tenant_limit() {
            let counted = self.count(tenant, own, quota, now, true).await;
            return self.outcome(counted, own, quota, now);
        }
        // Leased: the tenant counters from this instance's block, then the
        // user's or service's counters (exact), giving the unit back if those
        // refuse.
        let lease = self.leases.of(tenant);
        match lease
            .take(&self.redis, &self.lease_script, tenant, quota, now)
            .await
        {
            Ok(Ok(())) => self.up(),
            Ok(Err(exceeded)) => {
                self.up();
                return Err(exceeded);
            }
            Err(why) => self.failed(&why)?,
        }
        if own.is_none() {
            return Ok(());
        }
        let counted = self.count(tenant, own, quota, now, false).await;
        let out = self.outcome(counted, own, quota, now);
        if matches!(out, Err(QuotaError::Exceeded { .. })) {
            lease.give_back(quota, now);
        }
        out
    }

    /// Maps the exact script's answer (0, or the 1-based counter that is
    /// full) or a Redis failure to the request's fate.
    fn outcome(
        &self,
        counted: Result<i64, String>,
        own: Option<Who<'_>>,
        quota: Quota,
        now: u64,
    ) -> Result<(), QuotaError> {
        match counted {
            Ok(code) => {
                self.up();
                let (own_minute, own_day) = match own.map(|w| w.counters(&quota)) {
                    Some((_, _, m, d)) => (m, d),
                    None => (None, None),
                };
                // Counter order: tenant minute, tenant day, own minute, own day.
                let (limit, window) = match code {
                    1 => (quota.per_minute, 60),
                    2 => (quota.per_day, 86_400),
                    3 => (own_minute, 60),
                    4 => (own_day, 86_400),
                    _ => return Ok(()),
                };
                Err(QuotaError::Exceeded {
                    limit: limit.unwrap_or(0),
                    reset_at: (now / window + 1) * window,
                })
            }
            Err(why) => self.failed(&why),
        }
    }

    /// Redis answered: the end of an outage is logged once.
    fn up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("redis is answering again; shared quotas are counted again");
        }
    }

    /// Redis failed: counted, logged once per outage, then `on_redis_error`.
    fn failed(&self, why: &str) -> Result<(), QuotaError> {
        crate::metrics::redis_error("quota");
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %why, on_redis_error = ?self.on_error, "redis unavailable for shared quotas");
        }
        match self.on_error {
            OnRedisError::Local => Ok(()),
            OnRedisError::Deny => Err(QuotaError::Unavailable),
        }
    }

    /// Runs the exact script on the tenant's counters (when `tenant_counters`)
    /// and `own` (a user's or service's); the answer numbers counters as
    /// tenant minute, tenant day, own minute, own day whichever are sent.
    async fn count(
        &self,
        tenant: &str,
        own: Option<Who<'_>>,
        quota: Quota,
        now: u64,
        tenant_counters: bool,
    ) -> Result<i64, String> {
        let (minute, day) = (now / 60, now / 86_400);
        // Every key carries the {tenant} hash tag: one Cluster slot per tenant.
        let mut counters = Counters::default();
        if tenant_counters {
            let [m, d] = self.tenant_keys.get(tenant, minute, day);
            counters.keys.push(m);
            counters.keys.push(d);
            counters.args.extend([
                quota.per_minute.unwrap_or(0),
                120,
                quota.per_day.unwrap_or(0),
                2 * 86_400,
            ]);
        }
        if let Some((kind, id, per_minute, per_day)) = own.map(|w| w.counters(&quota)) {
            counters
                .keys
                .push(format!("sg:quota:{{{tenant}}}:{kind}:{id}:m:{minute}").into());
            counters
                .keys
                .push(format!("sg:quota:{{{tenant}}}:{kind}:{id}:d:{day}").into());
            counters.args.extend([
                per_minute.unwrap_or(0),
                120,
                per_day.unwrap_or(0),
                2 * 86_400,
            ]);
        }
        let code = self
            .batches
            .count(&self.redis, &self.script, counters)
            .await?;
        // Without the tenant's two counters, the own ones are numbered 1 and 2.
        Ok(if tenant_counters || code == 0 {
            code
        } else {
            code + 2
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_keys_are_made_once_per_window_and_name_it() {
        let keys = TenantKeys::default();
        let [m, d] = keys.get("acme", 29_000_000, 20_138);
        assert_eq!(&*m, "sg:quota:{acme}:m:29000000");
        assert_eq!(&*d, "sg:quota:{acme}:d:20138");
        assert_eq!(&*m, lease::minute_key("acme", 29_000_000));
        assert_eq!(&*d, lease::day_key("acme", 20_138));
        // The same windows: the same strings, not new ones.
        let [m2, d2] = keys.get("acme", 29_000_000, 20_138);
        assert!(Arc::ptr_eq(&m, &m2) && Arc::ptr_eq(&d, &d2));
        // Another tenant, the next minute, the next day: their own keys.
        let [other, _] = keys.get("beta", 29_000_000, 20_138);
        assert_eq!(&*other, "sg:quota:{beta}:m:29000000");
        let [m3, d3] = keys.get("acme", 29_000_001, 20_138);
        assert_eq!(&*m3, "sg:quota:{acme}:m:29000001");
        assert_eq!(&*d3, "sg:quota:{acme}:d:20138");
        let [_, d4] = keys.get("acme", 29_000_001, 20_139);
        assert_eq!(&*d4, "sg:quota:{acme}:d:20139");
    }
}
