//! The gateway's background services: limiter pruning, the socket sweep,
//! the revocation poller, JWKS refresh, the audit writer, the fleet-wide
//! websocket caps' heartbeat, and signals (SIGHUP: config reload and audit
//! file reopen).

use std::sync::Arc;

use crate::audit::{AuditLog, AuditWriter};
use crate::exchange::{Routing, SharedRouting};
use crate::redis_conn::Redis;
use crate::revocation::{CloseReason, Revocations, SocketRegistry};
use crate::session::{JwksVerifier, SessionSource};
use crate::tenant::Tenants;

/// Drops idle keys from the keyed rate limiters, so memory follows the set
/// of recently active users and IPs rather than every one ever seen.
pub(super) struct LimitPruner(pub(super) SharedRouting);

/// How often idle limiter keys are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for LimitPruner {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(PRUNE_EVERY) => {
                    for t in self.0.load().tenants.iter() {
                        t.limits.prune();
                    }
                    crate::limits::after_prune();
                }
            }
        }
    }
}

/// Closes open websockets whose session was revoked or has expired, once a
/// second (the bound on how long such a socket stays open).
pub(super) struct SocketSweep {
    pub(super) sockets: Arc<SocketRegistry>,
    pub(super) revocations: Arc<Revocations>,
}

/// How often open sockets are checked.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for SocketSweep {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    let n = self.sockets.close_all(CloseReason::Shutdown);
                    tracing::info!(sockets = n, "shutting down: closing open websockets (1001)");
                    return;
                }
                _ = tokio::time::sleep(SWEEP_EVERY) => {
                    let n = self.sockets.sweep(&self.revocations, crate::clock::unix_secs_exact());
                    if n > 0 {
                        tracing::info!(sockets = n, "closing websockets: session revoked or expired");
                    }
                }
            }
        }
    }
}

/// Runs the fleet-wide websocket caps' task: lease heartbeats, releases,
/// and at shutdown the release of every socket of this instance. Like the
/// audit writer it keeps running after the shutdown signal (sockets ending
/// during the grace period are released) until the process exits.
pub(super) struct FleetHeartbeat(pub(super) Arc<crate::connections::fleet::FleetCaps>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for FleetHeartbeat {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        self.0.run(shutdown).await;
    }
}

/// Reloads revocations from Redis when their version counter changes.
pub(super) struct RevocationPoller {
    pub(super) redis: Arc<Redis>,
    pub(super) revocations: Arc<Revocations>,
    pub(super) routing: SharedRouting,
    pub(super) every: std::time::Duration,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for RevocationPoller {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut seen: Option<(Option<String>, usize)> = None;
        let mut failing = false;
        loop {
            // A reload can add tenants: their ids are part of what was seen.
            let tenants: Vec<String> = self
                .routing
                .load()
                .tenants
                .iter()
                .map(|t| t.id.clone())
                .collect();
            let key = Arc::as_ptr(&self.routing.load_full()) as usize;
            let version = self
                .redis
                .call(|mut conn| async move {
                    redis::cmd("GET")
                        .arg(crate::revocation::VERSION_KEY)
                        .query_async::<Option<String>>(&mut conn)
                        .await
                })
                .await;
            let result = match version {
                Ok(v) if seen.as_ref() == Some(&(v.clone(), key)) => Ok(()),
                Ok(v) => Revocations::load(&self.redis, &tenants, crate::clock::unix_secs_exact())
                    .await
                    .map(|set| {
                        self.revocations.replace(set);
                        seen = Some((v, key));
                    }),
                Err(e) => Err(e),
            };
            if result.is_err() {
                crate::metrics::redis_error("revocation");
            }
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("revocations are read from redis again");
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot read revocations from redis; the last loaded set stays in force");
                }
                _ => {}
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
        }
    }
}

/// Loads each JWKS tenant's key set (retrying until the first success; the
/// tenant answers 503 and `/readyz` says not ready until then) and refreshes
/// it on its schedule. After a config reload the tasks of the old tenants
/// stop and the new tenants' tasks start.
pub(super) struct JwksRefresher {
    pub(super) routing: SharedRouting,
    pub(super) generation: Arc<tokio::sync::watch::Sender<u64>>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for JwksRefresher {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut changed = self.generation.subscribe();
        loop {
            let mut tasks = tokio::task::JoinSet::new();
            for t in self.routing.load().tenants.iter() {
                if let Some(SessionSource::Jwks(j)) = &t.session {
                    let v: Arc<JwksVerifier> = Arc::clone(&j.verifier);
                    tasks.spawn(async move { v.run().await });
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                r = changed.changed() => {
                    if r.is_err() {
                        return;
                    }
                }
            }
            tasks.abort_all();
        }
    }
}

/// Runs the audit writer. It does not stop at the shutdown signal: requests
/// finishing during the grace period still write their records; it ends
/// with the process.
pub(super) struct AuditWriterService(pub(super) std::sync::Mutex<Option<AuditWriter>>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for AuditWriterService {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {
        let writer = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            writer.run().await;
        }
    }
}

/// What a SIGHUP reloads: tenants and route policy from the config file,
/// and the TLS listener's certificates.
pub(super) struct Reload {
    pub(super) path: std::path::PathBuf,
    pub(super) routing: SharedRouting,
    pub(super) redis: Option<Arc<Redis>>,
    pub(super) generation: Arc<tokio::sync::watch::Sender<u64>>,
    /// The listener's certificates and whether it offers h2 (fixed at
    /// start), when `[server.tls]` is set.
    pub(super) certs: Option<(Arc<crate::tls::CertStore>, bool)>,
}

impl Reload {
    /// Re-reads the file; a config with any problem is refused whole and the
    /// running one stays. Sections other than `[[tenants]]`, `[policy]` and
    /// the certificates of `[server.tls]` (listeners, upstream, Redis,
    /// audit, log) need a restart or an upgrade.
    ///
    /// Certificate files are read again (certificate renewal needs only a
    /// SIGHUP); a file that does not load refuses the reload like any other
    /// problem, and the running certificates keep serving.
    ///
    /// JWKS tenants get their key sets before the swap, so they never answer
    /// 503 because of a reload (a provider that is down then only delays
    /// their readiness, as at start).
    async fn run(&self) -> Result<usize, String> {
        let settings = crate::config::load(&self.path).map_err(|e| e.to_string())?;
        if settings.redis.is_some() != self.redis.is_some() {
            return Err("[redis] was added or removed: that needs a restart".into());
        }
        if settings.server.tls.is_some() != self.certs.is_some() {
            return Err("[server.tls] was added or removed: that needs a restart".into());
        }
        let tenants = Tenants::new(settings.tenants, self.redis.as_ref())?;
        for t in tenants.iter() {
            if let Some(SessionSource::Jwks(j)) = &t.session {
                if let Err(e) = j.verifier.refresh().await {
                    tracing::warn!(tenant = %t.id, error = %e, "reload: JWKS not loaded yet; the tenant is not ready until it is");
                }
            }
        }
        let n = tenants.iter().count();
        if let (Some((store, h2)), Some(tls)) = (&self.certs, settings.server.tls) {
            if tls.h2 != *h2 {
                tracing::warn!(
                    "SIGHUP: server.tls.h2 changed; ALPN is fixed at start, that needs a restart"
                );
            }
            let count = tls.certs.count();
            store.replace(tls.certs);
            tracing::info!(
                certificates = count,
                "SIGHUP: TLS certificates reloaded; new handshakes use them"
            );
        }
        self.routing.store(Arc::new(Routing {
            tenants,
            policy: settings.policy,
            body: settings.body,
        }));
        self.generation.send_modify(|g| *g += 1);
        Ok(n)
    }
}

/// SIGHUP: reload tenants and route policy (keeping the running config when
/// the new one has a problem), and reopen the audit file (after logrotate
/// moved it).
pub(super) struct Signals {
    pub(super) audit: Option<Arc<AuditLog>>,
    pub(super) reload: Option<Reload>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Signals {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup.recv() => {
                    if let Some(a) = &self.audit {
                        a.reopen();
                    }
                    let Some(reload) = &self.reload else { continue };
                    let reloads = &crate::metrics::get().config_reloads;
                    match reload.run().await {
                        Ok(n) => {
                            reloads.with_label_values(&["ok"]).inc();
                            tracing::info!(tenants = n, "SIGHUP: config reloaded (tenants and route policy)");
                        }
                        Err(e) => {
                            reloads.with_label_values(&["error"]).inc();
                            for line in e.lines() {
                                tracing::error!("SIGHUP: config reload refused, the running config stays: {line}");
                            }
                        }
                    }
                }
            }
        }
    }
}
