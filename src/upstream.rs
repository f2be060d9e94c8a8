//! The Stream upstream: where requests go, with which TLS name and timeouts.
//!
//! The host is resolved at start (a failure stops start-up with a clear
//! message) and re-resolved in the background every [`REFRESH`], because
//! Stream's edge addresses change; the last good address is kept when a
//! lookup fails.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::UpstreamSettings;
use crate::revocation::KillSwitch;

pub const REFRESH: Duration = Duration::from_secs(30);

/// Pool group keys for websocket connections (0 is the shared pool's).
static NEXT_GROUP: AtomicU64 = AtomicU64::new(1);

/// Connects a websocket's upstream TCP connection wrapped in a
/// [`KillableStream`].
#[derive(Debug)]
struct KillableConnect {
    kill: Arc<KillSwitch>,
    timeout: Duration,
}

#[async_trait]
impl L4Connect for KillableConnect {
    async fn connect(&self, addr: &PingoraAddr) -> pingora::Result<Stream> {
        use pingora::prelude::*;
        let PingoraAddr::Inet(addr) = addr else {
            return Error::e_explain(ConnectError, "websocket upstream is not a TCP address");
        };
        let tcp =
            match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(*addr)).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => return Error::e_because(ConnectRefused, "connecting to upstream", e),
                Err(_) => return Error::e_explain(ConnectTimedout, "connecting to upstream"),
            };
        tcp.set_nodelay(true)
            .or_err(ConnectError, "setting TCP_NODELAY")?;
        Ok(Stream::from(VirtualSocketStream::new(Box::new(
            KillableStream {
                inner: tcp,
                kill: Arc::clone(&self.kill),
            },
        ))))
    }
}

/// An upstream TCP stream that reads end-of-file once its [`KillSwitch`]
/// fires: pingora then ends the upgraded response, the gateway appends its
/// error and close frames (`proxy.rs`), and the socket is closed, without
/// waiting for Stream to send anything.
#[derive(Debug)]
pub struct KillableStream {
    inner: tokio::net::TcpStream,
    kill: Arc<KillSwitch>,
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.kill.is_fired() {
            return Poll::Ready(Ok(()));
        }
        self.kill.register(cx.waker());
        if self.kill.is_fired() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl VirtualSocket for KillableStream {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> std::io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.inner.set_nodelay(true),
            _ => Ok(()),
        }
    }
}

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
    /// timeout).
    ///
    /// `kill`: a websocket whose connection the gateway may have to close
    /// from outside (revocation, session expiry); it gets its own
    /// connection, never a pooled one, read through [`KillableStream`].
    pub fn peer(&self, websocket: bool, kill: Option<&Arc<KillSwitch>>) -> HttpPeer {
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
        if let Some(kill) = kill {
            o.custom_l4 = Some(Arc::new(KillableConnect {
                kill: Arc::clone(kill),
                timeout: s.connect_timeout,
            }));
            // A group key of its own: the pool never hands this socket's
            // connection to anyone else, nor another connection to it.
            peer.group_key = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
        }
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
