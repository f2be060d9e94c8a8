//! Per-tenant request quotas shared by every gateway instance through Redis
//! (`[tenants.quota]` with `[redis]`).
//!
//! Each request is counted before it is forwarded, by one Lua script that
//! checks and increments the tenant's minute and day counters atomically, so
//! N instances together never let through more than the quota (no extra
//! bound: a refused request is not counted). Keys use a `{tenant}` hash tag,
//! so both counters of a tenant live in one Redis Cluster slot.
//!
//! Known limit: one Redis round trip per request (with a timeout). Leasing
//! blocks of quota to each instance would take Redis off the hot path; not
//! done yet. When Redis fails or is slow, `on_redis_error` decides: `local`
//! (default) lets the request through (the local buckets still apply), `deny`
//! refuses it with 503. The outage is logged once, and its end too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

/// What to do when Redis cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    Local,
    Deny,
}

/// A tenant's shared quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    pub per_minute: Option<u64>,
    pub per_day: Option<u64>,
}

impl Quota {
    pub fn is_empty(&self) -> bool {
        self.per_minute.is_none() && self.per_day.is_none()
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

const SCRIPT: &str = r#"
local m = tonumber(redis.call('GET', KEYS[1]) or '0')
local d = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > 0 and m >= tonumber(ARGV[1]) then return 1 end
if tonumber(ARGV[2]) > 0 and d >= tonumber(ARGV[2]) then return 2 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 0
"#;

pub struct SharedQuotas {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    on_error: OnRedisError,
    /// Set during an outage, so it is logged once (and its end once).
    down: AtomicBool,
}

impl SharedQuotas {
    /// `url` is validated by config; the connection is made on first use.
    pub fn new(
        url: &str,
        timeout: Duration,
        on_error: OnRedisError,
    ) -> Result<SharedQuotas, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis.url: {e}"))?;
        Ok(SharedQuotas {
            client,
            conn: OnceCell::new(),
            script: redis::Script::new(SCRIPT),
            timeout,
            on_error,
            down: AtomicBool::new(false),
        })
    }

    /// Counts one request of `tenant` at Unix time `now`, or refuses it.
    pub async fn check(&self, tenant: &str, quota: Quota, now: u64) -> Result<(), QuotaError> {
        if quota.is_empty() {
            return Ok(());
        }
        let result = tokio::time::timeout(self.timeout, self.count(tenant, quota, now)).await;
        let outcome = match result {
            Ok(Ok(code)) => Ok(code),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        match outcome {
            Ok(code) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis is answering again; shared quotas are counted again");
                }
                match code {
                    1 => Err(QuotaError::Exceeded {
                        limit: quota.per_minute.unwrap_or(0),
                        reset_at: (now / 60 + 1) * 60,
                    }),
                    2 => Err(QuotaError::Exceeded {
                        limit: quota.per_day.unwrap_or(0),
                        reset_at: (now / 86_400 + 1) * 86_400,
                    }),
                    _ => Ok(()),
                }
            }
            Err(why) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %why, on_redis_error = ?self.on_error, "redis unavailable for shared quotas");
                }
                match self.on_error {
                    OnRedisError::Local => Ok(()),
                    OnRedisError::Deny => Err(QuotaError::Unavailable),
                }
            }
        }
    }

    async fn count(&self, tenant: &str, quota: Quota, now: u64) -> redis::RedisResult<i64> {
        let conn = self
            .conn
            .get_or_try_init(|| ConnectionManager::new(self.client.clone()))
            .await?;
        let mut conn = conn.clone();
        let (minute, day) = (now / 60, now / 86_400);
        self.script
            .key(format!("sg:quota:{{{tenant}}}:m:{minute}"))
            .key(format!("sg:quota:{{{tenant}}}:d:{day}"))
            .arg(quota.per_minute.unwrap_or(0))
            .arg(quota.per_day.unwrap_or(0))
            .arg(120)
            .arg(2 * 86_400)
            .invoke_async(&mut conn)
            .await
    }
}
