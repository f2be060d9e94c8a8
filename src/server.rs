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
use crate::exchange::{Exchange, Routing, SharedRouting};
use crate::proxy::GatewayProxy;
use crate::quota::SharedQuotas;
use crate::redis_conn::Redis;
use crate::revocation::{CloseReason, Revocations, SocketRegistry};
use crate::session::{JwksVerifier, SessionSource};
use crate::tenant::Tenants;
use crate::upstream::{Resolver, Upstream};

/// Default `server.grace_period`.
pub const DEFAULT_GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);
/// Default `server.graceful_shutdown_timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Read buffer of each client connection (pingora's default is 64 KiB).
pub const CLIENT_READ_BUFFER: usize = 16 * 1024;

/// Process-level flags shared with pingora.
#[derive(Debug, Default, Clone)]
pub struct RunFlags {
    pub upgrade: bool,
    pub daemon: bool,
    /// The config file, re-read on SIGHUP.
    pub config: Option<std::path::PathBuf>,
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
    // pingora's defaults (300 s of grace, waited in full) are far longer
    // than a chat gateway's requests: sockets are closed at once, REST
    // requests take milliseconds to seconds.
    conf.grace_period_seconds = Some(
        settings
            .server
            .grace_period
            .unwrap_or(DEFAULT_GRACE_PERIOD)
            .as_secs(),
    );
    conf.graceful_shutdown_timeout_seconds = Some(
        settings
            .server
            .graceful_shutdown_timeout
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT)
            .as_secs(),
    );

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
    // Serving depends on Redis (so /readyz checks it) with opaque sessions,
    // quotas that deny when Redis fails, or an audit sink that blocks on it.
    let redis_required = settings
        .tenants
        .iter()
        .any(|t| matches!(t.session, Some(crate::config::SessionSettings::Opaque(_))))
        || settings.redis.as_ref().is_some_and(|r| {
            r.on_error == crate::quota::OnRedisError::Deny
                && settings.tenants.iter().any(|t| !t.quota.is_empty())
        })
        || settings.audit.as_ref().is_some_and(|a| {
            matches!(a.sink, crate::audit::Sink::Redis { .. })
                && a.on_full == crate::audit::OnFull::Block
        });
    let tenants = Tenants::new(settings.tenants, redis.as_ref())?;
    let quotas = match (&settings.redis, &redis) {
        (Some(r), Some(conn)) => Some(Arc::new(SharedQuotas::new(Arc::clone(conn), r.on_error))),
        _ => None,
    };
    let revocations = Arc::new(Revocations::new());
    let exchange = Exchange {
        routing: Arc::new(arc_swap::ArcSwap::from_pointee(Routing {
            tenants,
            policy: settings.policy,
            body: settings.body,
        })),
        revocations: Arc::clone(&revocations),
    };
    let routing = Arc::clone(&exchange.routing);
    let (generation, _) = tokio::sync::watch::channel(0u64);
    let generation = Arc::new(generation);
    server.add_service(background_service(
        "jwks refresh",
        JwksRefresher {
            routing: Arc::clone(&routing),
            generation: Arc::clone(&generation),
        },
    ));
    server.add_service(background_service(
        "rate limit pruner",
        LimitPruner(Arc::clone(&routing)),
    ));
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
                routing: Arc::clone(&routing),
                every,
            },
        ));
    }
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
            reload: flags.config.clone().map(|path| Reload {
                path,
                routing: Arc::clone(&routing),
                redis: redis.clone(),
                generation: Arc::clone(&generation),
            }),
        },
    ));
    let gateway = GatewayProxy {
        exchange,
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
                routing: Arc::clone(&routing),
                redis: redis.clone().map(|r| (r, redis_required)),
                upstream: Arc::clone(&upstream),
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
struct LimitPruner(SharedRouting);

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
                _ = shutdown.changed() => {
                    let n = self.sockets.close_all(CloseReason::Shutdown);
                    tracing::info!(sockets = n, "shutting down: closing open websockets (1001)");
                    return;
                }
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
    routing: SharedRouting,
    every: std::time::Duration,
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
                Ok(v) => Revocations::load(&self.redis, &tenants, unix_now())
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
struct JwksRefresher {
    routing: SharedRouting,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
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

/// What a SIGHUP reloads: tenants and route policy from the config file.
struct Reload {
    path: std::path::PathBuf,
    routing: SharedRouting,
    redis: Option<Arc<Redis>>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Reload {
    /// Re-reads the file; a config with any problem is refused whole and the
    /// running one stays. Sections other than `[[tenants]]` and `[policy]`
    /// (listeners, upstream, Redis, audit, log) need a restart or an upgrade.
    ///
    /// JWKS tenants get their key sets before the swap, so they never answer
    /// 503 because of a reload (a provider that is down then only delays
    /// their readiness, as at start).
    async fn run(&self) -> Result<usize, String> {
        let settings = crate::config::load(&self.path).map_err(|e| e.to_string())?;
        if settings.redis.is_some() != self.redis.is_some() {
            return Err("[redis] was added or removed: that needs a restart".into());
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
struct Signals {
    audit: Option<Arc<AuditLog>>,
    reload: Option<Reload>,
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
