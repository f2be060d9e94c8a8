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
use crate::config::Settings;
use crate::exchange::Exchange;
use crate::proxy::GatewayProxy;
use crate::quota::SharedQuotas;
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

    let tenants = Arc::new(Tenants::new(settings.tenants));
    let quotas = match &settings.redis {
        Some(r) => Some(Arc::new(SharedQuotas::new(&r.url, r.timeout, r.on_error)?)),
        None => None,
    };
    server.add_service(background_service(
        "rate limit pruner",
        LimitPruner(Arc::clone(&tenants)),
    ));
    let gateway = GatewayProxy {
        exchange: Exchange {
            tenants,
            policy: settings.policy,
        },
        upstream: Arc::clone(&upstream),
        quotas,
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
