//! The HTTP app behind the client listener: a deadline on each new
//! connection's first request head, and a short pause between the listener
//! closing and pingora's HTTP clean-up.
//!
//! Slow heads: pingora bounds each read of a request head (60 s), not the
//! whole head, so a client dripping a byte a minute (slowloris) or sending
//! nothing keeps its connection. On a plain listener this app reads the
//! first head itself within `[server] client_header_timeout`, puts the bytes
//! back (pingora's `Stream::rewind`) and only then hands the connection to
//! pingora; a connection over the deadline is closed without an answer.
//! (TLS connections cannot be rewound from here: their heads keep pingora's
//! per-read bound, as do later heads on a keep-alive connection.)
//!
//! When the listeners stop (SIGTERM, or SIGQUIT in a `-u` upgrade), pingora's
//! HTTP app is told to clean up and at once drops every connection still
//! waiting for its request head (`process_new_http` selects on that
//! signal). A connection the process accepted an instant before, whose
//! request bytes were still on the way, was dropped unanswered: the one
//! failed request measured in `-u` upgrades under load. This wrapper passes
//! connections through unchanged and delays that clean-up by
//! [`HEAD_GRACE`]: those connections get their request read and answered
//! (with `Connection: close`, the shutdown having begun); idle keep-alive
//! connections are still closed after the pause.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

/// How long a connection accepted before the listener closed has to send
/// its request head. Shorter than any grace period worth configuring.
pub const HEAD_GRACE: Duration = Duration::from_secs(1);

pub struct DrainingApp<A> {
    inner: Arc<A>,
    /// The fast path (`proxy/fast.rs`), when `[server] fast_path` is on.
    fast: Option<Arc<crate::proxy::Gateway>>,
    /// `[server] client_header_timeout`.
    header_timeout: Duration,
    /// Read no further than this looking for the end of the head: past it
    /// pingora (and the gateway's 414/431 checks) refuse the request anyway.
    max_head: usize,
}

impl<A> DrainingApp<A> {
    pub fn new(
        inner: A,
        client: &crate::config::ClientLimits,
        fast: Option<Arc<crate::proxy::Gateway>>,
    ) -> DrainingApp<A> {
        DrainingApp {
            inner: Arc::new(inner),
            fast,
            header_timeout: client.header_timeout,
            max_head: client.max_uri_bytes + client.max_header_bytes + 1024,
        }
    }
}

/// Reads a plain connection's first request head within `limit` and puts it
/// back; `None` (the connection is dropped) when the client closed first or
/// is too slow. Other connections (TLS) pass unchanged.
async fn first_head(stream: Stream, limit: Duration, max_head: usize) -> Option<Stream> {
    if !stream.as_any().is::<TcpStream>() {
        return Some(stream);
    }
    let mut tcp: Box<TcpStream> = stream.into_any().downcast().ok()?;
    let mut buf = BytesMut::with_capacity(2048);
    let mut scanned: usize = 0;
    let read = async {
        loop {
            // Only the new bytes (and 3 before them) are scanned each time:
            // a client dripping a byte per read costs no quadratic work.
            let from = scanned.saturating_sub(3);
            if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= max_head {
                return true;
            }
            scanned = buf.len();
            match tcp.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return !buf.is_empty(),
                Ok(_) => {}
            }
        }
    };
    match tokio::time::timeout(limit, read).await {
        Ok(true) => {
            tcp.rewind(&buf);
            Some(tcp)
        }
        Ok(false) => None,
        Err(_) => {
            crate::metrics::get().slow_heads.inc();
            None
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for DrainingApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream = match (&self.fast, stream.as_any().is::<TcpStream>()) {
            (Some(gateway), true) => {
                let tcp: Box<TcpStream> = stream.into_any().downcast().ok()?;
                // Boxed: the future is deep (one allocation per connection).
                Box::pin(crate::proxy::fast::serve(
                    gateway,
                    tcp,
                    shutdown,
                    self.max_head,
                ))
                .await?
            }
            _ => first_head(stream, self.header_timeout, self.max_head).await?,
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(HEAD_GRACE).await;
        self.inner.cleanup().await;
    }
}
