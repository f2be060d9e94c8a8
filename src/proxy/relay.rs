//! `/connect` after its checks: the gateway dials Stream itself, relays the
//! upgrade answer, and hands the two connections to a small task of its own
//! that copies bytes both ways until the socket ends.
//!
//! Why not pingora's proxy loop: for an upgraded connection it keeps two
//! 64 KiB body buffers, a 64 KiB upstream read buffer and the whole
//! per-request state alive for the socket's life, ~200 KiB a socket
//! (benches/README.md). The task here holds the two streams, two small copy
//! buffers and the socket's context (its places under the caps, its registry
//! entry, counters for the audit record), which is written when it ends.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::respond::{add_headers, respond};
use super::upstream_headers::{self, Added};
use super::{unix_now, Gateway, RequestCtx};
use crate::refusal::Refusal;
use crate::revocation::{CloseReason, KillSwitch};
use crate::websocket;

mod answer;
mod closed;
use answer::{read_body, Answer};
use closed::closed_stream;

/// Copy buffers: Stream's events are mostly well under 4 KiB, the client's
/// frames (health checks, typing events) smaller still.
const TO_CLIENT_BUF: usize = 4096;
const TO_STREAM_BUF: usize = 2048;
/// After Stream's side ended, how long the client has to close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

impl Gateway {
    /// Forwards an admitted `/connect` upgrade. Always answers the client
    /// (`Ok(true)`): Stream's 101 and then the relay task, Stream's other
    /// answer as it came, or a 502/504 in Stream's shape when Stream could
    /// not be reached (as for any request: the SDK retries those).
    pub(super) async fn relay_socket(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let Some(forward) = ctx.forward.as_ref() else {
            return Error::e_explain(InternalError, "no forwarding decision");
        };
        let uri: Uri = forward
            .path_and_query
            .parse()
            .or_err(InternalError, "rebuilt path is not a valid URI")?;
        let mut head = session.req_header().clone();
        upstream_headers::rewrite(
            &mut head,
            uri,
            &forward.auth,
            Added {
                host: &self.upstream.host_header,
                client_ip: ctx.client_ip,
                proto: &self.forwarded_proto,
                request_id: &ctx.request_id,
                content_length: None,
            },
        );
        let started = Instant::now();
        ctx.upstream_started = Some(started);
        let answer = match self.dial(&head).await {
            Ok(a) => a,
            Err(e) => return self.socket_failed(session, ctx, &e).await,
        };
        ctx.upstream_latency = Some(started.elapsed());
        ctx.upstream_status = Some(answer.resp.status.as_u16());
        if answer.resp.status.as_u16() != 101 {
            return self.relay_answer(session, ctx, answer).await;
        }
        let Answer {
            mut resp,
            upstream,
            rest,
            ..
        } = answer;
        add_headers(&mut resp, ctx, false)?;
        session.write_response_header(Box::new(resp), false).await?;
        // Take the client's connection out of pingora's session; pingora
        // finishes this request on a closed placeholder.
        let placeholder = ServerSession::new_http1(closed_stream());
        let client = match std::mem::replace(&mut *session.downstream_session, placeholder) {
            ServerSession::H1(h1) => h1.into_inner(),
            other => {
                *session.downstream_session = other;
                return Error::e_explain(InternalError, "websocket on a non-HTTP/1 session");
            }
        };
        session.set_keepalive(None);
        let mut socket = std::mem::take(ctx);
        ctx.handed_over = true;
        ctx.request_id.clone_from(&socket.request_id);
        // The rewritten query (with the connect json, ~1 KiB) is not needed
        // again; the task lives as long as the socket.
        if let Some(f) = socket.forward.as_mut() {
            f.path_and_query = String::new();
        }
        let s = &self.upstream.settings;
        let relay = Relay {
            client,
            upstream,
            early: rest.freeze(),
            idle: s.websocket_idle_timeout,
            write_timeout: s.write_timeout,
        };
        let audit = self.audit.clone();
        tokio::spawn(async move {
            if let Err(e) = relay.run(&mut socket).await {
                tracing::debug!(request_id = %socket.request_id, error = %e, "websocket ended with an error");
            }
            super::record::finish_socket(audit.as_ref(), &mut socket).await;
        });
        Ok(true)
    }

    /// Stream answered the upgrade with something other than 101: relay it
    /// (status, headers, body) as it came, and close the connection.
    async fn relay_answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut answer: Answer,
    ) -> Result<bool> {
        let body = match read_body(&mut answer, self.upstream.settings.read_timeout).await {
            Ok(b) => b,
            Err(e) => return self.socket_failed(session, ctx, &e).await,
        };
        let mut resp = answer.resp;
        resp.remove_header("transfer-encoding");
        resp.insert_header("content-length", body.len().to_string())?;
        add_headers(&mut resp, ctx, false)?;
        session.set_keepalive(None);
        ctx.bytes_out = body.len() as u64;
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(true)
    }

    /// Stream could not be reached or did not answer properly.
    async fn socket_failed(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        e: &Error,
    ) -> Result<bool> {
        let refusal = match e.etype() {
            ConnectTimedout | ReadTimedout | WriteTimedout => Refusal::UpstreamTimeout,
            _ => Refusal::UpstreamUnavailable,
        };
        tracing::warn!(request_id = %ctx.request_id, error = %e, status = refusal.status(), "websocket upstream failed");
        session.set_keepalive(None);
        respond(session, &refusal, ctx).await?;
        ctx.bytes_out = refusal.body().len() as u64;
        ctx.refusal = Some(refusal);
        Ok(true)
    }
}

/// Both connections of an open socket, and its timeouts.
struct Relay {
    client: Stream,
    upstream: Stream,
    /// Stream's bytes that came with the 101 (often its first event).
    early: Bytes,
    /// No bytes from Stream for this long ends the socket (Stream sends a
    /// health check about every 30 s: silence means it is gone).
    idle: Duration,
    write_timeout: Duration,
}

impl Relay {
    /// Copies both ways until the socket ends, with the gateway's own closes
    /// (expiry, revocation, shutdown: `closing_frames`) at frame boundaries
    /// of Stream's traffic.
    async fn run(self, ctx: &mut RequestCtx) -> io::Result<()> {
        let Relay {
            mut client,
            upstream,
            early,
            idle,
            write_timeout: wt,
        } = self;
        // pingora wrote the 101 through the connection's write buffer.
        timed(wt, client.flush()).await?;
        let kill = ctx.socket.as_ref().map(|s| Arc::clone(&s.kill));
        let expires_at = ctx.forward.as_ref().and_then(|f| {
            f.session
                .as_ref()
                .filter(|_| f.tenant.close_on_session_expiry)
                .map(|s| s.expires_at)
        });
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut stream_read, mut stream_write) = tokio::io::split(upstream);
        let base = tokio::time::Instant::now();
        let last = AtomicU64::new(0);
        let touch = || last.store(base.elapsed().as_millis() as u64, Ordering::Relaxed);
        let (frames_in, bytes_in) = (&mut ctx.frames_in, &mut ctx.bytes_in);
        let (frames_out, bytes_out) = (&mut ctx.frames, &mut ctx.bytes_out);

        let to_stream = async {
            let mut buf = vec![0u8; TO_STREAM_BUF];
            loop {
                let n = client_read.read(&mut buf).await?;
                if n == 0 {
                    let _ = stream_write.shutdown().await;
                    return Ok::<(), io::Error>(());
                }
                *bytes_in += n as u64;
                frames_in.advance(&buf[..n]);
                timed(wt, stream_write.write_all(&buf[..n])).await?;
                timed(wt, stream_write.flush()).await?;
            }
        };
        let to_client = async {
            // Stream's bytes that came with the 101 first.
            if deliver(
                &mut client_write,
                &early,
                frames_out,
                bytes_out,
                expires_at,
                wt,
            )
            .await?
            {
                return Ok::<(), io::Error>(());
            }
            let mut buf = vec![0u8; TO_CLIENT_BUF];
            loop {
                let read = tokio::select! {
                    biased;
                    reason = killed(kill.as_deref()) => Err(reason),
                    r = stream_read.read(&mut buf) => Ok(r?),
                };
                match read {
                    Ok(0) => {
                        let _ = client_write.shutdown().await;
                        return Ok(());
                    }
                    Ok(n) => {
                        touch();
                        let data = &buf[..n];
                        if deliver(
                            &mut client_write,
                            data,
                            frames_out,
                            bytes_out,
                            expires_at,
                            wt,
                        )
                        .await?
                        {
                            return Ok(());
                        }
                    }
                    Err(reason) => {
                        if frames_out.at_boundary() {
                            let tail = closing_frames(reason);
                            timed(wt, client_write.write_all(&tail)).await?;
                        }
                        let _ = client_write.shutdown().await;
                        return Ok(());
                    }
                }
            }
        };
        let idle_watch = async {
            loop {
                let due = base + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
                if tokio::time::Instant::now() >= due {
                    return;
                }
                tokio::time::sleep_until(due).await;
            }
        };
        tokio::pin!(to_stream, to_client, idle_watch);
        tokio::select! {
            r = &mut to_client => {
                r?;
                // Stream's side ended: the client has a moment to close its side.
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut to_stream).await;
                Ok(())
            }
            r = &mut to_stream => {
                r?;
                // The client is gone: wait for Stream to close (or idle out).
                tokio::select! {
                    r = &mut to_client => r,
                    () = &mut idle_watch => Ok(()),
                }
            }
            () = &mut idle_watch => Err(io::Error::new(io::ErrorKind::TimedOut, "websocket idle")),
        }
    }
}

/// Writes Stream's `data` to the client; closes the socket with code 40
/// instead of carrying on when the session has expired and `data` ended at a
/// frame boundary. True when the socket was closed.
async fn deliver<W: tokio::io::AsyncWrite + Unpin>(
    client: &mut W,
    data: &[u8],
    frames: &mut websocket::FrameTracker,
    bytes: &mut u64,
    expires_at: Option<u64>,
    wt: Duration,
) -> io::Result<bool> {
    if data.is_empty() {
        return Ok(false);
    }
    *bytes += data.len() as u64;
    let at_boundary = frames.advance(data);
    timed(wt, client.write_all(data)).await?;
    if at_boundary && expires_at.is_some_and(|exp| unix_now() > exp) {
        let tail = websocket::error_then_close(&Refusal::SessionExpired, 1001);
        timed(wt, client.write_all(&tail)).await?;
        let _ = client.shutdown().await;
        return Ok(true);
    }
    timed(wt, client.flush()).await?;
    Ok(false)
}

/// The frames the gateway sends when it closes a socket itself.
pub(super) fn closing_frames(reason: CloseReason) -> Bytes {
    match reason {
        // Going away: a close frame only, so the SDK reconnects.
        CloseReason::Shutdown => websocket::close_frame(1001),
        // Revoked: 1000, final: the SDK must not come back with it.
        CloseReason::Revoked => {
            websocket::error_then_close(&Refusal::InvalidSession("session revoked"), 1000)
        }
        // Expired: 1001 so the SDK reconnects, meets code 40 and refreshes.
        CloseReason::Expired => websocket::error_then_close(&Refusal::SessionExpired, 1001),
    }
}

/// Resolves when the socket's kill switch fires (never without one).
async fn killed(kill: Option<&KillSwitch>) -> CloseReason {
    let Some(kill) = kill else {
        return std::future::pending().await;
    };
    std::future::poll_fn(|cx| {
        if !kill.is_fired() {
            kill.register(cx.waker());
        }
        if kill.is_fired() {
            std::task::Poll::Ready(kill.reason().unwrap_or(CloseReason::Shutdown))
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

async fn timed<T>(
    limit: Duration,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))?
}
