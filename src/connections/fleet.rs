//! Websocket caps counted across every gateway instance that shares the
//! Redis (`[tenants.limits] connection_caps = "fleet"`).
//!
//! Each open socket is a member `<instance id>:<socket number>` of a sorted
//! set per user (`sg:ws:{<tenant>}:u:<user>`, for `max_connections_per_user`)
//! and one per tenant (`sg:ws:{<tenant>}:all`, for `max_connections`),
//! scored by the Unix time in milliseconds (Redis's clock, `TIME`) at which
//! its lease ends. Every key of a tenant carries the `{tenant}` hash tag, so
//! one script touches one Redis Cluster slot.
//!
//! - **Acquire**: one Lua script drops the expired members, checks every
//!   set's size against its cap, and adds the socket to all of them or to
//!   none. No overshoot while Redis answers.
//! - **Heartbeat**: every `lease / 3` this instance re-adds all its live
//!   sockets with a new lease (also after a Redis restart or an outage, so
//!   the counts come back).
//! - **Release**: dropping a [`FleetPlace`] (the socket ended, however)
//!   queues its removal to the background task ([`FleetCaps::run`]), which
//!   removes it in batches, retries while Redis is down (until the lease
//!   would have ended anyway) and, at shutdown, removes every socket of the
//!   instance at once.
//! - **Crash**: a killed instance's members stop being refreshed and stop
//!   counting when their lease ends, at most `connection_lease` later.
//!
//! When Redis fails or is slower than `redis.timeout`, `on_redis_error`
//! decides: `local` admits the socket under the local caps only (and still
//! registers it, so the next heartbeat that reaches Redis counts it), `deny`
//! refuses it with 503 / code -1. The outage is logged once, and its end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::quota::OnRedisError;
use crate::redis_conn::Redis;
use crate::refusal::Refusal;

mod scripts;
use scripts::{batches, instance_id, Batch, Keys, ACQUIRE, REFRESH, REMOVE};
pub use scripts::{tenant_key, user_key};

/// Most queued releases taken into one flush.
const MAX_FLUSH: usize = 10_000;

/// A socket whose removal from Redis is pending.
struct Released {
    id: u64,
    keys: Arc<Keys>,
    at: Instant,
}

/// The process's view of the fleet-wide caps: its live sockets and the
/// queue of releases. One per process, shared by every tenant (and kept
/// across config reloads).
pub struct FleetCaps {
    redis: Arc<Redis>,
    on_error: OnRedisError,
    lease: Duration,
    /// Random per process: members of a crashed instance never collide
    /// with a new one's.
    instance: String,
    next_id: AtomicU64,
    acquire: redis::Script,
    refresh: redis::Script,
    remove: redis::Script,
    /// Live sockets admitted under fleet caps, by socket number.
    live: Mutex<HashMap<u64, Arc<Keys>>>,
    released: mpsc::UnboundedSender<Released>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Released>>>,
    /// Set during an outage, so it is logged once (and its end once).
    down: AtomicBool,
}

/// One socket's place in the fleet-wide counts; dropping it queues the
/// release.
pub struct FleetPlace {
    caps: Arc<FleetCaps>,
    id: u64,
}

impl Drop for FleetPlace {
    fn drop(&mut self) {
        self.caps.release(self.id);
    }
}

impl std::fmt::Debug for FleetPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FleetPlace({}:{})", self.caps.instance, self.id)
    }
}

impl FleetCaps {
    pub fn new(redis: Arc<Redis>, on_error: OnRedisError, lease: Duration) -> Arc<FleetCaps> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(FleetCaps {
            redis,
            on_error,
            lease,
            instance: instance_id(),
            next_id: AtomicU64::new(1),
            acquire: redis::Script::new(ACQUIRE),
            refresh: redis::Script::new(REFRESH),
            remove: redis::Script::new(REMOVE),
            live: Mutex::new(HashMap::new()),
            released: tx,
            receiver: Mutex::new(Some(rx)),
            down: AtomicBool::new(false),
        })
    }

    /// This process's id in the members (`<instance>:<socket>`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn lease_ms(&self) -> u64 {
        self.lease.as_millis().try_into().unwrap_or(u64::MAX)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Keys>>> {
        // A poisoned lock only means a panic elsewhere while inserting or
        // removing; the map itself is intact.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a fleet-wide place for a socket of `user` (`None`: anonymous,
    /// counted against the tenant cap only) in `tenant`, with the tenant's
    /// caps. `Ok(None)`: no cap applies. Waits on Redis at most
    /// `redis.timeout`.
    pub async fn acquire(
        self: &Arc<Self>,
        tenant: &str,
        user: Option<&str>,
        max_per_user: Option<u32>,
        max_per_tenant: Option<u32>,
    ) -> Result<Option<FleetPlace>, Refusal> {
        let mut sets = Vec::with_capacity(2);
        let mut caps = Vec::with_capacity(2);
        if let (Some(u), Some(max)) = (user, max_per_user) {
            sets.push(user_key(tenant, u));
            caps.push(max);
        }
        if let Some(max) = max_per_tenant {
            sets.push(tenant_key(tenant));
            caps.push(max);
        }
        if sets.is_empty() {
            return Ok(None);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let member = format!("{}:{id}", self.instance);
        let mut inv = self.acquire.prepare_invoke();
        for s in &sets {
            inv.key(s);
        }
        inv.arg(&member).arg(self.lease_ms());
        for c in &caps {
            inv.arg(*c);
        }
        let result = self
            .redis
            .call(|mut conn| async move { inv.invoke_async::<i64>(&mut conn).await })
            .await;
        let keys = Arc::new(Keys {
            tenant: tenant.to_string(),
            sets,
        });
        match result {
            Ok(0) => {
                self.recovered();
                Ok(Some(self.register(id, keys)))
            }
            Ok(_) => {
                self.recovered();
                Err(Refusal::TooManyConnections)
            }
            Err(why) => {
                self.failed(&why);
                match self.on_error {
                    // Counted by the next heartbeat that reaches Redis.
                    OnRedisError::Local => Ok(Some(self.register(id, keys))),
                    OnRedisError::Deny => {
                        // The script may still run late: remove what it adds.
                        let _ = self.released.send(Released {
                            id,
                            keys,
                            at: Instant::now(),
                        });
                        Err(Refusal::ConnectionsUnavailable)
                    }
                }
            }
        }
    }

    fn register(self: &Arc<Self>, id: u64, keys: Arc<Keys>) -> FleetPlace {
        self.live().insert(id, keys);
        FleetPlace {
            caps: Arc::clone(self),
            id,
        }
    }

    /// Called from `Drop`: no await here, the task does the Redis work.
    fn release(&self, id: u64) {
        let keys = self.live().remove(&id);
        if let Some(keys) = keys {
            // The receiver lives as long as the task; after it is gone the
            // process is exiting and the lease ends the count anyway.
            let _ = self.released.send(Released {
                id,
                keys,
                at: Instant::now(),
            });
        }
    }

    fn failed(&self, why: &str) {
        crate::metrics::redis_error("connections");
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %why, on_redis_error = ?self.on_error, "redis unavailable for fleet websocket caps");
        }
    }

    fn recovered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("redis is answering again; websocket caps are counted fleet-wide again");
        }
    }

    /// The background task: heartbeats every `lease / 3`, removes released
    /// sockets as they come, and at `shutdown` removes every socket of this
    /// instance. It keeps going after shutdown (sockets still ending are
    /// released) until the process exits.
    pub async fn run(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let rx = self
            .receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut rx) = rx else { return };
        // (Config keeps the lease at 1 s or more; never a zero period.)
        let every = (self.lease / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: Vec<Released> = Vec::new();
        let mut stopping = false;
        loop {
            tokio::select! {
                r = rx.recv() => {
                    // The sender lives in `self`: the channel never closes.
                    let Some(r) = r else { return };
                    pending.push(r);
                    while pending.len() < MAX_FLUSH {
                        match rx.try_recv() {
                            Ok(r) => pending.push(r),
                            Err(_) => break,
                        }
                    }
                    // During an outage, retried by the next tick instead.
                    if !self.down.load(Ordering::Relaxed) {
                        self.flush(&mut pending).await;
                    }
                }
                _ = tick.tick() => {
                    if !stopping {
                        self.heartbeat().await;
                    }
                    self.flush(&mut pending).await;
                }
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                    let now = Instant::now();
                    let all: Vec<(u64, Arc<Keys>)> = self.live().drain().collect();
                    let n = all.len();
                    pending.extend(all.into_iter().map(|(id, keys)| Released { id, keys, at: now }));
                    self.flush(&mut pending).await;
                    tracing::info!(sockets = n, released = pending.is_empty(), "shutting down: fleet websocket places released");
                }
            }
        }
    }

    /// Renews the lease of every live socket (re-adding any Redis lost).
    async fn heartbeat(&self) {
        let live: Vec<(u64, Arc<Keys>)> = self
            .live()
            .iter()
            .map(|(id, k)| (*id, Arc::clone(k)))
            .collect();
        if live.is_empty() {
            return;
        }
        let all = batches(&self.instance, live.iter().map(|(id, k)| (*id, &**k)));
        for b in &all {
            if let Err(why) = self.run_batch(&self.refresh, b, true).await {
                self.failed(&why);
                return;
            }
        }
        self.recovered();
    }

    /// Removes the pending releases from Redis; keeps them on failure (but
    /// not past their lease: by then they no longer count anyway).
    async fn flush(&self, pending: &mut Vec<Released>) {
        pending.retain(|r| r.at.elapsed() < self.lease);
        if pending.is_empty() {
            return;
        }
        let all = batches(&self.instance, pending.iter().map(|r| (r.id, &*r.keys)));
        for b in &all {
            if let Err(why) = self.run_batch(&self.remove, b, false).await {
                self.failed(&why);
                return;
            }
        }
        self.recovered();
        pending.clear();
    }

    async fn run_batch(
        &self,
        script: &redis::Script,
        batch: &Batch,
        with_lease: bool,
    ) -> Result<(), String> {
        let mut inv = script.prepare_invoke();
        if with_lease {
            inv.arg(self.lease_ms());
        }
        for (key, members) in batch {
            inv.key(key);
            inv.arg(members.len());
            for m in members {
                inv.arg(m);
            }
        }
        self.redis
            .call(|mut conn| async move { inv.invoke_async::<i64>(&mut conn).await })
            .await
            .map(|_| ())
    }
}
