//! Builds the pingora server from validated [`Settings`]: the proxy service
//! on `server.listen`, the admin service on `server.admin_listen`, and the
//! upstream resolver. pingora's own YAML config is not used; its `-u`
//! (graceful upgrade) and `-d` (daemon) flags keep their meaning.

use std::sync::Arc;

use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig, ALPN};
use pingora::prelude::*;
use pingora::protocols::http::v2::server::H2Options;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::connections::fleet::FleetCaps;

mod drain;
mod services;
use crate::audit;
use crate::config::Settings;
use crate::exchange::{Exchange, Routing};
use crate::proxy::{Gateway, GatewayProxy};
use crate::quota::SharedQuotas;
use crate::redis_conn::Redis;
use crate::revocation::{Revocations, SocketRegistry};
use crate::tenant::Tenants;
use crate::upstream::{Resolver, Upstream};
use services::{
    AuditWriterService, FleetHeartbeat, JwksRefresher, LimitPruner, Reload, RevocationPoller,
    Signals, SocketSweep,
};

/// Default `server.grace_period`.
pub const DEFAULT_GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);
/// Default `server.graceful_shutdown_timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Read buffer of each client connection under pingora's own buffers
/// (pingora's default is 64 KiB). None: pingora reads a request head into
/// its own buffer and a body into its body buffer anyway, so a second
/// buffer underneath only copies bytes once more, and an open websocket
/// (which keeps its client connection for hours) would carry it for its
/// whole life.
pub const CLIENT_READ_BUFFER: usize = 0;

/// An HTTP/2 client connection with no stream open is closed after this
/// (the HTTP/1.1 keep-alive timeout is pingora's 60 s too).
pub const H2_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// TLS on the client listener: rustls with TLS 1.2 and 1.3 only (pingora's
/// choice), certificates from `certs` by SNI, ALPN `h2` + `http/1.1` (or
/// `http/1.1` alone). A client that offers no ALPN, or only `http/1.1`
/// (websocket clients), speaks HTTP/1.1.
fn listener_tls_settings(
    certs: Arc<crate::tls::CertStore>,
    h2: bool,
) -> Result<TlsSettings, String> {
    // The paths are unused: the resolver provides every certificate.
    let mut tls = TlsSettings::intermediate("", "")
        .map_err(|e| format!("server.tls: cannot set up the listener: {e}"))?;
    tls.set_cert_resolver(certs);
    if h2 {
        tls.enable_h2();
    } else {
        tls.set_alpn(ALPN::H1);
    }
    Ok(tls)
}

/// HTTP/2 settings of client connections: pingora's bounded defaults (100
/// concurrent streams), with room in the header list for the gateway's own
/// limits (`max_uri_bytes`, `max_header_bytes`, plus the pseudo-headers),
/// so that over them HTTP/2 clients get the same 414/431 in Stream's shape
/// as HTTP/1.1 clients.
fn h2_options(client: &crate::config::ClientLimits) -> H2Options {
    let mut o = pingora::protocols::http::v2::server::default_h2_options();
    let room = client
        .max_uri_bytes
        .saturating_add(client.max_header_bytes)
        .saturating_add(4096);
    o.max_header_list_size(u32::try_from(room).unwrap_or(u32::MAX));
    o
}

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
    // The upstream connector reads its roots from here: this bundle instead
    // of the system's (checked at load: pingora panics on a bad one).
    conf.ca_file = settings.upstream.ca_file.clone();
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
    let listener_tls = settings
        .server
        .tls
        .map(|t| (Arc::new(crate::tls::CertStore::new(t.certs)), t.h2));

    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let redis = match &settings.redis {
        Some(r) => Some(Arc::new(Redis::connect(&r.target, r.timeout)?)),
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
                && settings.tenants.iter().any(|t| {
                    !t.quota.is_empty()
                        || t.fleet_connection_caps
                        || t.services.iter().any(|s| s.quota != Default::default())
                })
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
    // Made whenever [redis] exists: a SIGHUP reload may turn fleet caps on.
    let fleet = match (&settings.redis, &redis) {
        (Some(r), Some(conn)) => {
            let caps = FleetCaps::new(Arc::clone(conn), r.on_error, r.connection_lease);
            server.add_service(background_service(
                "fleet websocket caps",
                FleetHeartbeat(Arc::clone(&caps)),
            ));
            Some(caps)
        }
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
                certs: listener_tls.as_ref().map(|(c, h2)| (Arc::clone(c), *h2)),
            }),
        },
    ));
    let gateway = Arc::new(Gateway {
        exchange,
        upstream: Arc::clone(&upstream),
        quotas,
        fleet,
        sockets,
        audit,
        client: settings.server.client,
        trusted_proxies: settings.server.trusted_proxies,
        connector: pingora::connectors::TransportConnector::new(Some(
            pingora::connectors::ConnectorOptions::from_server_conf(&server.configuration),
        )),
        fast_pool: Default::default(),
        forwarded_proto: http::HeaderValue::from_static(if listener_tls.is_some() {
            "https"
        } else {
            "http"
        }),
    });
    let mut app =
        pingora::proxy::http_proxy(&server.configuration, GatewayProxy(Arc::clone(&gateway)));
    let mut options = HttpServerOptions::default();
    options.h2c = settings.server.h2c;
    // pingora keeps an idle HTTP/1.1 connection 60 s; an idle HTTP/2
    // connection would stay open for ever without this.
    options.h2_idle_timeout = Some(H2_IDLE_TIMEOUT);
    app.server_options = Some(options);
    app.h2_options = Some(h2_options(&settings.server.client));
    let mut proxy = Service::new(
        "stream-gateway".to_string(),
        drain::DrainingApp::new(
            app,
            &settings.server.client,
            settings.server.fast_path.then_some(gateway),
        ),
    );
    // pingora reads each client connection through a 64 KiB buffer by default;
    // with tens of thousands of mostly idle websockets that buffer dominates
    // memory (see CLIENT_READ_BUFFER).
    let mut listener = ListenerConfig::tcp(settings.server.listen.to_string())
        .l4_buffer(L4BufferSettings::default().read(CLIENT_READ_BUFFER));
    if let Some((certs, h2)) = &listener_tls {
        listener = listener.tls(listener_tls_settings(Arc::clone(certs), *h2)?);
    }
    proxy.add_listener(listener);
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
