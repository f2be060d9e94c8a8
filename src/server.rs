//! Builds the pingora server from validated [`Settings`]: the proxy service
//! on `server.listen`, the admin service on `server.admin_listen`, and the
//! upstream resolver. pingora's own YAML config is not used; its `-u`
//! (graceful upgrade) and `-d` (daemon) flags keep their meaning.

use std::sync::Arc;

use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::audit::{self, AuditLog, AuditWriter};
use crate::config::Settings;
use crate::exchange::Exchange;
use crate::proxy::GatewayProxy;
use crate::quota::SharedQuotas;
use crate::redis_conn::Redis;
use crate::revocation::{Revocations, SocketRegistry};
use crate::session::{JwksVerifier, SessionSource};
use crate::tenant::Tenants;
use crate::upstream::{Resolver, Upstream};

/// Read buffer of each client connection (pingora's default is 64 KiB).
pub const CLIENT_READ_BUFFER: usize = 16 * 1024;

/// Process-level flags shared with pingora.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunFlags {
    pub upgrade: bool,
    pub daemon: bool,
}

/// Builds the server; fails before anything binds.
pub fn build(settings: Settings, flags: RunFlags) -> Result<Server, String> {
    let mut conf = ServerConf {
        threads: settings.server.threads,
        daemon: flags.daemon,
        // Off by default: one single-threaded runtime per thread, connections
        // spread at random (pingora's NoStealRuntime). Measured faster here
        // than tokio's work-stealing runtime (benches/README.md).
        work_stealing: settings.server.work_stealing,
        ..ServerConf::default()
    };
    if let Some(p) = &settings.server.pid_file {
        conf.pid_file = p.clone();
    }
    if let Some(p) = &settings.server.upgrade_sock {
        conf.upgrade_sock = p.clone();
    }
    conf.grace_period_seconds = settings.server.grace_period.map(|d| d.as_secs());
    conf.graceful_shutdown_timeout_seconds = settings
        .server
        .graceful_shutdown_timeout
        .map(|d| d.as_secs());

    let opt = Opt {
        upgrade: flags.upgrade,
        daemon: flags.daemon,
        ..Opt::default()
    };
    let upstream = Arc::new(Upstream::resolve(settings.upstream)?);

    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let redis = match &settings.redis {
        Some(r) => Some(Arc::new(Redis::new(&r.url, r.timeout)?)),
        None => None,
    };
    let tenants = Arc::new(Tenants::new(settings.tenants, redis.as_ref())?);
    let quotas = match (&settings.redis, &redis) {
        (Some(r), Some(conn)) => Some(Arc::new(SharedQuotas::new(Arc::clone(conn), r.on_error))),
        _ => None,
    };
    for t in tenants.iter() {
        if let Some(SessionSource::Jwks(j)) = &t.session {
            server.add_service(background_service(
                &format!("jwks refresh ({})", t.id),
                JwksRefresh(Arc::clone(&j.verifier)),
            ));
        }
    }
    server.add_service(background_service(
        "rate limit pruner",
        LimitPruner(Arc::clone(&tenants)),
    ));
    let revocations = Arc::new(Revocations::new());
    let sockets = SocketRegistry::new();
    server.add_service(background_service(
        "socket sweep",
        SocketSweep {
            sockets: Arc::clone(&sockets),
            revocations: Arc::clone(&revocations),
        },
    ));
    if let (Some(redis), Some(every)) = (
        &redis,
        settings.redis.as_ref().and_then(|r| r.revocation_poll),
    ) {
        server.add_service(background_service(
            "revocation poller",
            RevocationPoller {
                redis: Arc::clone(redis),
                revocations: Arc::clone(&revocations),
                tenants: tenants.iter().map(|t| t.id.clone()).collect(),
                every,
            },
        ));
    }
    let admin_tenants = Arc::clone(&tenants);
    let audit = match settings.audit.clone() {
        Some(a) => {
            let (log, writer) = audit::channel(a, redis.clone());
            server.add_service(background_service(
                "audit writer",
                AuditWriterService(std::sync::Mutex::new(Some(writer))),
            ));
            Some(Arc::new(log))
        }
        None => None,
    };
    server.add_service(background_service(
        "signals",
        Signals {
            audit: audit.clone(),
        },
    ));
    let gateway = GatewayProxy {
        exchange: Exchange {
            tenants,
            policy: settings.policy,
            revocations,
        },
        upstream: Arc::clone(&upstream),
        quotas,
        sockets,
        audit,
    };
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway,
        "stream-gateway",
    );
    // pingora reads each client connection through a 64 KiB buffer by default;
    // with tens of thousands of mostly idle websockets that buffer dominates
    // memory, and request heads and websocket frames are far smaller.
    proxy.add_listener(
        ListenerConfig::tcp(settings.server.listen.to_string())
            .l4_buffer(L4BufferSettings::default().read(CLIENT_READ_BUFFER)),
    );
    server.add_service(proxy);

    if let Some(admin_addr) = settings.server.admin_listen {
        let mut admin = Service::new(
            "admin".to_string(),
            Admin {
                listen: settings.server.listen,
                tenants: Arc::clone(&admin_tenants),
            },
        );
        admin.threads = Some(1);
        admin.add_tcp(&admin_addr.to_string());
        server.add_service(admin);
    }
    server.add_service(background_service("upstream resolver", Resolver(upstream)));
    Ok(server)
}

/// Drops idle keys from the keyed rate limiters, so memory follows the set
/// of recently active users and IPs rather than every one ever seen.
struct LimitPruner(Arc<Tenants>);

/// How often idle limiter keys are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for LimitPruner {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(PRUNE_EVERY) => {
                    for t in self.0.iter() {
                        t.limits.prune();
                    }
                }
            }
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Closes open websockets whose session was revoked or has expired, once a
/// second (the bound on how long such a socket stays open).
struct SocketSweep {
    sockets: Arc<SocketRegistry>,
    revocations: Arc<Revocations>,
}

/// How often open sockets are checked.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for SocketSweep {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(SWEEP_EVERY) => {
                    let n = self.sockets.sweep(&self.revocations, unix_now());
                    if n > 0 {
                        tracing::info!(sockets = n, "closing websockets: session revoked or expired");
                    }
                }
            }
        }
    }
}

/// Reloads revocations from Redis when their version counter changes.
struct RevocationPoller {
    redis: Arc<Redis>,
    revocations: Arc<Revocations>,
    tenants: Vec<String>,
    every: std::time::Duration,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for RevocationPoller {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut seen: Option<Option<String>> = None;
        let mut failing = false;
        loop {
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
                Ok(v) if seen.as_ref() == Some(&v) => Ok(()),
                Ok(v) => Revocations::load(&self.redis, &self.tenants, unix_now())
                    .await
                    .map(|set| {
                        self.revocations.replace(set);
                        seen = Some(v);
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

/// Loads a tenant's JWKS (retrying until the first success; the tenant
/// answers 503 and `/readyz` says not ready until then) and refreshes it on
/// its schedule.
struct JwksRefresh(Arc<JwksVerifier>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for JwksRefresh {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = self.0.run() => {}
        }
    }
}

/// Runs the audit writer. It does not stop at the shutdown signal: requests
/// finishing during the grace period still write their records; it ends
/// with the process.
struct AuditWriterService(std::sync::Mutex<Option<AuditWriter>>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for AuditWriterService {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {
        let writer = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            writer.run().await;
        }
    }
}

/// SIGHUP: reopen the audit file (after logrotate moved it).
struct Signals {
    audit: Option<Arc<AuditLog>>,
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
                    tracing::info!("SIGHUP: reopening the audit file");
                    if let Some(a) = &self.audit {
                        a.reopen();
                    }
                }
            }
        }
    }
}
