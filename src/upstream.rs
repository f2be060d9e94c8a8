//! The Stream upstream: where requests go, with which TLS name and timeouts.
//!
//! The host is resolved at start (a failure stops start-up with a clear
//! message) and re-resolved in the background every [`REFRESH`], because
//! Stream's edge addresses change; the last good address is kept when a
//! lookup fails.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;

use crate::config::UpstreamSettings;

pub const REFRESH: Duration = Duration::from_secs(30);

pub struct Upstream {
    pub settings: UpstreamSettings,
    /// `Host` of forwarded requests (the upstream's authority), made once.
    pub host_header: http::HeaderValue,
    addr: ArcSwap<SocketAddr>,
    /// The last background re-resolve succeeded (true until one fails).
    resolve_ok: std::sync::atomic::AtomicBool,
}

impl Upstream {
    /// Resolves the upstream host once (blocking; start-up only).
    pub fn resolve(settings: UpstreamSettings) -> Result<Upstream, String> {
        use std::net::ToSocketAddrs;
        let addr = (settings.host.as_str(), settings.port)
            .to_socket_addrs()
            .map_err(|e| format!("upstream.url: cannot resolve {}: {e}", settings.host))?
            .next()
            .ok_or_else(|| format!("upstream.url: {} has no address", settings.host))?;
        let host_header = http::HeaderValue::from_str(&settings.authority)
            .map_err(|_| "upstream.url: the host is not a valid Host header".to_string())?;
        Ok(Upstream {
            settings,
            host_header,
            addr: ArcSwap::from_pointee(addr),
            resolve_ok: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// A peer for one request: TLS with SNI and certificate verification
    /// for https upstreams, with the configured timeouts (`websocket`: the
    /// idle timeout of upgraded `/connect` sockets instead of the read
    /// timeout; their relay, `proxy/relay.rs`, dials its own connection
    /// with this peer and never pools it).
    pub fn peer(&self, websocket: bool) -> HttpPeer {
        let s = &self.settings;
        let mut peer = HttpPeer::new(**self.addr.load(), s.tls, s.host.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(s.connect_timeout);
        o.total_connection_timeout = Some(s.connect_timeout);
        // A socket is idle between events; Stream sends a health check
        // about every 30 s, so its idle limit is separate and longer.
        o.read_timeout = Some(if websocket {
            s.websocket_idle_timeout
        } else {
            s.read_timeout
        });
        o.write_timeout = Some(s.write_timeout);
        o.idle_timeout = Some(s.idle_timeout);
        o.verify_cert = true;
        o.verify_hostname = true;
        peer
    }

    /// The address requests go to now.
    pub fn address(&self) -> SocketAddr {
        **self.addr.load()
    }

    pub fn last_resolve_ok(&self) -> bool {
        self.resolve_ok.load(Ordering::Relaxed)
    }

    async fn refresh(&self) {
        let result =
            tokio::net::lookup_host((self.settings.host.as_str(), self.settings.port)).await;
        self.resolve_ok.store(result.is_ok(), Ordering::Relaxed);
        match result {
            Ok(mut addrs) => {
                if let Some(a) = addrs.next() {
                    if a != **self.addr.load() {
                        tracing::info!(host = %self.settings.host, addr = %a, "upstream address changed");
                    }
                    self.addr.store(Arc::new(a));
                }
            }
            Err(e) => {
                tracing::warn!(host = %self.settings.host, error = %e, "upstream re-resolve failed; keeping the last address");
            }
        }
    }
}

/// Background service that keeps the upstream address fresh.
pub struct Resolver(pub Arc<Upstream>);

#[async_trait]
impl BackgroundService for Resolver {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Literal IPs never change.
        if self.0.settings.host.parse::<std::net::IpAddr>().is_ok() {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(REFRESH) => self.0.refresh().await,
            }
        }
    }
}
