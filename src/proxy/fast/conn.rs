//! The fast path's upstream connections: a plain-TCP upstream is dialled
//! here and read and written as a bare tokio socket; a TLS upstream goes
//! through pingora's connector (its TLS settings and roots) and stream.
//!
//! pingora's stream adds, per read and write, a buffered layer, a dynamic
//! call and a clock read before and after every read that had to wait (its
//! read-time accounting), none of which the fast path uses (perf,
//! benches/README.md, session 9). The bare socket gets what pingora's
//! connector gives a plain-TCP peer here: `TCP_NODELAY` and the
//! connect timeout (`upstream.connect_timeout`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use pingora::prelude::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::proxy::Gateway;
use crate::refusal::Refusal;

/// One upstream connection of the fast path.
pub enum Conn {
    /// Plain TCP, dialled by [`dial`].
    Tcp(tokio::net::TcpStream),
    /// TLS (or anything pingora's connector made).
    Pingora(pingora::protocols::Stream),
}

/// Why a dial failed: the refusal for the client, and the cause for the log.
pub type Failed = (Refusal, String);

/// A new connection to `addr`.
pub async fn dial(gw: &Gateway, addr: SocketAddr) -> Result<Conn, Failed> {
    let settings = &gw.upstream.settings;
    if settings.tls {
        let failed = |e: Box<Error>| {
            let refusal = match e.etype() {
                ConnectTimedout => Refusal::UpstreamTimeout,
                _ => Refusal::UpstreamUnavailable,
            };
            (refusal, e.to_string())
        };
        let peer = gw.upstream.peer(false);
        let stream = gw.connector.new_stream(&peer).await.map_err(failed)?;
        return Ok(Conn::Pingora(stream));
    }
    let connect = tokio::net::TcpStream::connect(addr);
    let tcp = match tokio::time::timeout(settings.connect_timeout, connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err((Refusal::UpstreamUnavailable, format!("connect {addr}: {e}"))),
        Err(_) => {
            return Err((
                Refusal::UpstreamTimeout,
                format!("connect {addr}: timed out"),
            ))
        }
    };
    tcp.set_nodelay(true)
        .map_err(|e| (Refusal::UpstreamUnavailable, format!("TCP_NODELAY: {e}")))?;
    Ok(Conn::Tcp(tcp))
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Pingora(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Pingora(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Pingora(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Pingora(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
