//! Revoking users and single sessions, on every gateway instance, for REST
//! and for open websockets.
//!
//! Layout in Redis (one `{tenant}` hash tag per tenant, like the quotas):
//! - `sg:revoked:{<tenant>}:users`: hash, user id -> Unix time of the
//!   revocation. Sessions of that user issued at or before it (by `iat`) are
//!   refused; sessions without `iat` (opaque ids) are refused until the
//!   entry is lifted.
//! - `sg:revoked:{<tenant>}:sessions`: hash, session id (`jti:<jti>` or
//!   `sha256:<hex of the token>`) -> Unix time after which the entry may be
//!   dropped (the token's own expiry).
//! - `sg:revoked:version`: a counter, incremented after every change (its
//!   own slot in Redis Cluster: not in a transaction with the hashes).
//!
//! Each instance reads the counter every `redis.revocation_poll` (1 s by
//! default) and, when it changed, reloads the hashes of its tenants into an
//! in-memory set that every request checks (no Redis call per request). So a
//! revocation takes effect everywhere within one poll interval plus a Redis
//! round trip. When Redis fails the last loaded set stays in force.
//!
//! Open websockets are registered in a [`SocketRegistry`]; a sweep each
//! second closes the ones whose session has been revoked or has expired, and
//! all of them are closed (1001) when the gateway shuts down.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;

use arc_swap::ArcSwap;

use crate::redis_conn::Redis;
use crate::session::{Session, SessionError};

/// The version counter's key.
pub const VERSION_KEY: &str = "sg:revoked:version";

/// The users hash of a tenant.
pub fn users_key(tenant: &str) -> String {
    format!("sg:revoked:{{{tenant}}}:users")
}

/// The sessions hash of a tenant.
pub fn sessions_key(tenant: &str) -> String {
    format!("sg:revoked:{{{tenant}}}:sessions")
}

/// Revocations of one tenant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TenantRevocations {
    /// User id -> revoked at (Unix seconds).
    pub users: HashMap<String, u64>,
    pub sessions: HashSet<String>,
}

impl TenantRevocations {
    fn revokes(&self, s: &Session) -> bool {
        if self.sessions.contains(&s.id) {
            return true;
        }
        match (self.users.get(&s.user_id), s.issued_at) {
            (Some(at), Some(iat)) => iat <= *at,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The revocations in force in this process.
#[derive(Default)]
pub struct Revocations {
    by_tenant: ArcSwap<HashMap<String, TenantRevocations>>,
}

impl Revocations {
    pub fn new() -> Revocations {
        Revocations::default()
    }

    /// Refuses a revoked session (cached sessions included: this runs on
    /// every request, after verification).
    pub fn check(&self, tenant: &str, session: &Session) -> Result<(), SessionError> {
        let all = self.by_tenant.load();
        if all.is_empty() {
            return Ok(());
        }
        match all.get(tenant) {
            Some(t) if t.revokes(session) => Err(SessionError::Revoked),
            _ => Ok(()),
        }
    }

    /// Replaces the whole set (after a load from Redis).
    pub fn replace(&self, set: HashMap<String, TenantRevocations>) {
        self.by_tenant.store(Arc::new(set));
    }

    /// Reads the revocations of `tenants` from Redis, dropping session
    /// entries that ended before `now`.
    pub async fn load(
        redis: &Redis,
        tenants: &[String],
        now: u64,
    ) -> Result<HashMap<String, TenantRevocations>, String> {
        // One pipeline per tenant (its two hashes share the `{tenant}` hash
        // tag, so one Cluster slot), all sent at once.
        type Pair = (HashMap<String, u64>, HashMap<String, u64>);
        let replies: Vec<Pair> = redis
            .call(|conn| {
                futures_util::future::try_join_all(tenants.iter().map(|t| {
                    let mut conn = conn.clone();
                    let mut pipe = redis::pipe();
                    pipe.hgetall(users_key(t)).hgetall(sessions_key(t));
                    async move { pipe.query_async::<Pair>(&mut conn).await }
                }))
            })
            .await?;
        let mut out = HashMap::new();
        for (t, (users, sessions)) in tenants.iter().zip(replies) {
            let r = TenantRevocations {
                users,
                sessions: sessions
                    .into_iter()
                    .filter(|(_, until)| *until >= now)
                    .map(|(id, _)| id)
                    .collect(),
            };
            if !r.users.is_empty() || !r.sessions.is_empty() {
                out.insert(t.clone(), r);
            }
        }
        Ok(out)
    }
}

/// What a revocation names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every session of the user issued up to now.
    User(String),
    /// One session, by id (`jti:...` / `sha256:...`), kept until `until`.
    Session { id: String, until: u64 },
}

/// Writes one revocation (or lifts it), then bumps the version counter. Used
/// by `stream-gateway revoke`.
///
/// Two commands, not one transaction: the hash (`{tenant}` slot) and the
/// counter live in different Redis Cluster slots, and a MULTI across slots
/// is refused (CROSSSLOT). The order keeps it safe: an instance that sees
/// the new version reads the hashes after the change. If the second command
/// fails, the error is reported and running `revoke` again (idempotent)
/// bumps the counter.
pub async fn write(
    redis: &Redis,
    tenant: &str,
    target: &Target,
    lift: bool,
    now: u64,
) -> Result<(), String> {
    let mut change = redis::cmd(if lift { "HDEL" } else { "HSET" });
    match target {
        Target::User(u) => change.arg(users_key(tenant)).arg(u),
        Target::Session { id, .. } => change.arg(sessions_key(tenant)).arg(id),
    };
    match (target, lift) {
        (Target::User(_), false) => change.arg(now),
        (Target::Session { until, .. }, false) => change.arg(*until),
        (_, true) => &mut change,
    };
    redis
        .call(|mut conn| async move { change.query_async::<()>(&mut conn).await })
        .await?;
    redis
        .call(|mut conn| async move {
            redis::cmd("INCR")
                .arg(VERSION_KEY)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
}

/// Why an open socket was closed by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Expired = 1,
    Revoked = 2,
    /// The gateway is shutting down.
    Shutdown = 3,
}

/// Closes one open websocket from outside its relay task (`proxy/relay.rs`),
/// which wakes and sends the closing frames for the reason given.
#[derive(Debug, Default)]
pub struct KillSwitch {
    fired: AtomicBool,
    reason: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl KillSwitch {
    pub fn fire(&self, reason: CloseReason) {
        self.reason.store(reason as u8, Ordering::Relaxed);
        self.fired.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    pub fn reason(&self) -> Option<CloseReason> {
        match self.reason.load(Ordering::Relaxed) {
            1 => Some(CloseReason::Expired),
            2 => Some(CloseReason::Revoked),
            3 => Some(CloseReason::Shutdown),
            _ => None,
        }
    }

    /// Remembers who to wake when fired (the relay task, while it waits).
    pub fn register(&self, waker: &Waker) {
        let mut w = self.waker.lock().unwrap_or_else(|p| p.into_inner());
        match w.as_ref() {
            Some(old) if old.will_wake(waker) => {}
            _ => *w = Some(waker.clone()),
        }
    }
}

/// One open websocket, as the sweep sees it.
struct OpenSocket {
    tenant: String,
    /// `None` for anonymous sockets (closed only at shutdown).
    session: Option<Arc<Session>>,
    close_on_expiry: bool,
    kill: Arc<KillSwitch>,
}

/// Every open websocket of the process.
#[derive(Default)]
pub struct SocketRegistry {
    next: std::sync::atomic::AtomicU64,
    open: Mutex<HashMap<u64, OpenSocket>>,
}

/// Keeps a socket registered; unregisters it when dropped.
pub struct SocketEntry {
    id: u64,
    registry: Weak<SocketRegistry>,
    pub kill: Arc<KillSwitch>,
}

impl Drop for SocketEntry {
    fn drop(&mut self) {
        if let Some(r) = self.registry.upgrade() {
            r.open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.id);
        }
    }
}

impl SocketRegistry {
    pub fn new() -> Arc<SocketRegistry> {
        Arc::new(SocketRegistry::default())
    }

    pub fn register(
        self: &Arc<Self>,
        tenant: &str,
        session: Option<Arc<Session>>,
        close_on_expiry: bool,
    ) -> SocketEntry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let kill = Arc::new(KillSwitch::default());
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id,
            OpenSocket {
                tenant: tenant.to_string(),
                session,
                close_on_expiry,
                kill: Arc::clone(&kill),
            },
        );
        SocketEntry {
            id,
            registry: Arc::downgrade(self),
            kill,
        }
    }

    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fires the kill switch of every socket whose session is revoked, or
    /// expired (where the tenant closes on expiry). Returns how many.
    pub fn sweep(&self, revocations: &Revocations, now: u64) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut fired = 0;
        for s in open.values().filter(|s| !s.kill.is_fired()) {
            let Some(session) = &s.session else {
                continue;
            };
            let reason = if revocations.check(&s.tenant, session).is_err() {
                Some(CloseReason::Revoked)
            } else if s.close_on_expiry && now > session.expires_at {
                Some(CloseReason::Expired)
            } else {
                None
            };
            if let Some(r) = reason {
                s.kill.fire(r);
                fired += 1;
            }
        }
        fired
    }

    /// Closes every open socket (shutdown). Returns how many.
    pub fn close_all(&self, reason: CloseReason) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut fired = 0;
        for s in open.values().filter(|s| !s.kill.is_fired()) {
            s.kill.fire(reason);
            fired += 1;
        }
        fired
    }
}

#[cfg(test)]
mod tests;
