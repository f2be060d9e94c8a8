//! Leased quota (`lease = N`): each instance takes a block of up to N
//! requests from a tenant's minute and day counters in one Lua call, and
//! spends it locally; Redis is called again when the block is used up or its
//! window ends.
//!
//! Accuracy: a block is carved out of the counters atomically and never larger
//! than what is left, so the fleet never passes more than the quota. Units
//! leased but not spent are refused to others: at most `instances × (N − 1)`
//! per window. A block's unspent units are given back to the day counter when
//! its minute ends (the next refill does it), so minute blocks do not eat the
//! day quota. Once Redis says a counter is full, this instance refuses without
//! calling Redis for up to one second (the counter cannot drop within its
//! window except by those give-backs).
//!
//! Only one request per tenant refills at a time; the others wait for its
//! answer (all within `redis.timeout`) and share it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Quota, QuotaError};
use crate::redis_conn::Redis;

/// KEYS[1]: the tenant's minute counter, KEYS[2]: its day counter. ARGV: 1
/// minute limit (0: none), 2 minute TTL, 3 day limit (0: none), 4 day TTL, 5
/// block wanted, 6 units given back to the day counter first. Returns the
/// block granted (> 0, counted in both counters), or -1 / -2 when the minute /
/// day counter is full (nothing counted). A counter's TTL is set when the
/// increment made it (its key names its window: the TTL need not move).
pub(super) const SCRIPT: &str = r#"
local back = tonumber(ARGV[6])
if back > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DECRBY', KEYS[2], back)
end
local grant = tonumber(ARGV[5])
for i = 1, 2 do
  local limit = tonumber(ARGV[2 * i - 1])
  if limit > 0 then
    local room = limit - tonumber(redis.call('GET', KEYS[i]) or '0')
    if room <= 0 then return -i end
    if room < grant then grant = room end
  end
end
for i = 1, 2 do
  if redis.call('INCRBY', KEYS[i], grant) == grant then
    redis.call('EXPIRE', KEYS[i], ARGV[2 * i])
  end
end
return grant
"#;

/// The tenant's minute counter (the `{tenant}` hash tag keeps a tenant's
/// counters in one Redis Cluster slot).
pub(super) fn minute_key(tenant: &str, minute: u64) -> String {
    format!("sg:quota:{{{tenant}}}:m:{minute}")
}

pub(super) fn day_key(tenant: &str, day: u64) -> String {
    format!("sg:quota:{{{tenant}}}:d:{day}")
}

/// This instance's leases, one per tenant that has used one.
#[derive(Default)]
pub(super) struct Leases {
    by_tenant: Mutex<HashMap<String, Arc<TenantLease>>>,
}

impl Leases {
    pub(super) fn of(&self, tenant: &str) -> Arc<TenantLease> {
        let mut map = lock(&self.by_tenant);
        if let Some(l) = map.get(tenant) {
            return Arc::clone(l);
        }
        let l = Arc::new(TenantLease::default());
        map.insert(tenant.to_string(), Arc::clone(&l));
        l
    }
}

#[derive(Default)]
pub(super) struct TenantLease {
    state: Mutex<State>,
    /// Held by the one request refilling the block.
    refill: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// The block's window: its minute (`u64::MAX` without a minute limit)
    /// and day.
    minute: u64,
    day: u64,
    /// Units of the block not spent yet.
    left: u64,
    /// Redis said a counter is full: refuse without asking until `.1`.
    full: Option<(QuotaError, u64)>,
    /// Bumped by every refill, so requests that waited on one use its outcome.
    generation: u64,
    /// Whether the last refill failed (Redis error or timeout).
    failed: bool,
}

enum Local {
    Taken,
    Full(QuotaError),
    /// Nothing left in this window; the refill generation seen.
    Empty(u64),
}

/// The lease window of `now`: the minute when there is a minute limit.
fn window(quota: Quota, now: u64) -> (u64, u64) {
    let minute = if quota.per_minute.is_some() {
        now / 60
    } else {
        u64::MAX
    };
    (minute, now / 86_400)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the counts stay integers.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn take(&mut self, quota: Quota, now: u64) -> Local {
        if let Some((refusal, until)) = self.full {
            if now < until {
                return Local::Full(refusal);
            }
            self.full = None;
        }
        if (self.minute, self.day) == window(quota, now) && self.left > 0 {
            self.left -= 1;
            return Local::Taken;
        }
        Local::Empty(self.generation)
    }
}

impl TenantLease {
    /// Takes one request from the block, refilling it from Redis when it is
    /// empty. `Err` is a Redis failure (then `on_redis_error` decides).
    pub(super) async fn take(
        &self,
        redis: &Redis,
        script: &redis::Script,
        tenant: &str,
        quota: Quota,
        now: u64,
    ) -> Result<Result<(), QuotaError>, String> {
        let seen = match lock(&self.state).take(quota, now) {
            Local::Taken => return Ok(Ok(())),
            Local::Full(refusal) => return Ok(Err(refusal)),
            Local::Empty(generation) => generation,
        };
        let refill = async {
            let _only_one = self.refill.lock().await;
            {
                let mut st = lock(&self.state);
                if st.generation != seen {
                    // Another request refilled while this one waited.
                    if st.failed {
                        return Err("the refill this request waited for failed".to_string());
                    }
                    match st.take(quota, now) {
                        Local::Taken => return Ok(Ok(())),
                        Local::Full(refusal) => return Ok(Err(refusal)),
                        Local::Empty(_) => {}
                    }
                }
            }
            self.refill_block(redis, script, tenant, quota, now).await
        };
        match tokio::time::timeout(redis.timeout(), refill).await {
            Ok(out) => out,
            Err(_) => Err(format!("no answer within {:?}", redis.timeout())),
        }
    }

    async fn refill_block(
        &self,
        redis: &Redis,
        script: &redis::Script,
        tenant: &str,
        quota: Quota,
        now: u64,
    ) -> Result<Result<(), QuotaError>, String> {
        let (minute, day) = (now / 60, now / 86_400);
        let give_back = {
            let mut st = lock(&self.state);
            // The old block's window is over (or it is spent): its unspent
            // units go back to today's day counter, or are dropped.
            let back = if st.day == day { st.left } else { 0 };
            st.left = 0;
            back
        };
        let mut inv = script.prepare_invoke();
        inv.key(minute_key(tenant, minute))
            .key(day_key(tenant, day))
            .arg(quota.per_minute.unwrap_or(0))
            .arg(120)
            .arg(quota.per_day.unwrap_or(0))
            .arg(2 * 86_400)
            .arg(quota.lease)
            .arg(give_back);
        let answer: Result<i64, String> = redis
            .call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await;
        let mut st = lock(&self.state);
        st.generation = st.generation.wrapping_add(1);
        st.failed = answer.is_err();
        let granted = answer?;
        let (limit, window_len) = match granted {
            g if g > 0 => {
                (st.minute, st.day) = window(quota, now);
                // One unit is this request's.
                st.left = (g as u64).saturating_sub(1);
                return Ok(Ok(()));
            }
            -1 => (quota.per_minute, 60),
            _ => (quota.per_day, 86_400),
        };
        let reset_at = (now / window_len + 1) * window_len;
        let refusal = QuotaError::Exceeded {
            limit: limit.unwrap_or(0),
            reset_at,
        };
        st.full = Some((refusal, reset_at.min(now + 1)));
        Ok(Err(refusal))
    }

    /// Returns one unit taken by [`TenantLease::take`] (the request was then
    /// refused by its user's counters), if its window is still current.
    pub(super) fn give_back(&self, quota: Quota, now: u64) {
        let mut st = lock(&self.state);
        if (st.minute, st.day) == window(quota, now) {
            st.left += 1;
        }
    }
}
