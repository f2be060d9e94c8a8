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

use bytes::{Bytes, BytesMut};
use http::Uri;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::respond::{add_headers, respond};
use super::upstream_headers::{self, Added};
use super::{unix_now, GatewayProxy, RequestCtx};
use crate::refusal::Refusal;
use crate::revocation::{CloseReason, KillSwitch};
use crate::websocket;

/// Largest upgrade answer head read from Stream.
const MAX_HEAD: usize = 16 * 1024;
/// Largest body of a non-101 answer relayed to the client.
const MAX_ANSWER_BODY: usize = 64 * 1024;
/// Copy buffers: Stream's events are mostly well under 4 KiB, the client's
/// frames (health checks, typing events) smaller still.
const TO_CLIENT_BUF: usize = 4096;
const TO_STREAM_BUF: usize = 2048;
/// After Stream's side ended, how long the client has to close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Stream's answer to the upgrade: its head, the connection, and whatever
/// came after the head in the same reads.
struct Answer {
    resp: ResponseHeader,
    upstream: Stream,
    rest: BytesMut,
    content_length: Option<usize>,
    chunked: bool,
}

impl GatewayProxy {
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

    /// Connects to Stream, sends the rewritten upgrade, reads the answer's
    /// head.
    async fn dial(&self, head: &RequestHeader) -> Result<Answer> {
        let s = &self.upstream.settings;
        let peer = self.upstream.peer(true);
        let mut upstream = self.connector.new_stream(&peer).await?;
        crate::metrics::get().upstream_connections_new.inc();
        let wire = request_wire(head);
        let write = async {
            upstream.write_all(&wire).await?;
            upstream.flush().await
        };
        match tokio::time::timeout(s.write_timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Error::e_because(WriteError, "sending the upgrade to Stream", e),
            Err(_) => return Error::e_explain(WriteTimedout, "sending the upgrade to Stream"),
        }
        let deadline = tokio::time::Instant::now() + s.read_timeout;
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            match tokio::time::timeout_at(deadline, upstream.read_buf(&mut buf)).await {
                Ok(Ok(0)) => {
                    return Error::e_explain(ConnectionClosed, "Stream closed before answering")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Error::e_because(ReadError, "reading Stream's answer", e),
                Err(_) => return Error::e_explain(ReadTimedout, "reading Stream's answer"),
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let code = parsed.code.unwrap_or(502);
                    let mut resp = ResponseHeader::build_no_case(code, Some(parsed.headers.len()))?;
                    let (mut content_length, mut chunked) = (None, false);
                    for h in parsed.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            content_length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok());
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h.value.eq_ignore_ascii_case(b"chunked");
                        }
                        resp.append_header(h.name.to_string(), h.value)?;
                    }
                    let rest = buf.split_off(len);
                    return Ok(Answer {
                        resp,
                        upstream,
                        rest,
                        content_length,
                        chunked,
                    });
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Error::e_explain(InvalidHTTPHeader, "Stream's answer head is too large")
                }
                Err(_) => {
                    return Error::e_explain(InvalidHTTPHeader, "Stream's answer is not HTTP")
                }
            }
        }
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

/// The upstream request head on the wire.
fn request_wire(head: &RequestHeader) -> Vec<u8> {
    let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in head.headers.iter() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The body of a non-101 answer: by its length, its chunks, or to the end
/// of the connection; at most [`MAX_ANSWER_BODY`].
async fn read_body(answer: &mut Answer, timeout: Duration) -> Result<Bytes> {
    let deadline = tokio::time::Instant::now() + timeout;
    let buf = &mut answer.rest;
    loop {
        let done = match (answer.content_length, answer.chunked) {
            (Some(len), _) => buf.len() >= len,
            (None, true) => decode_chunked(buf).is_some(),
            (None, false) => false,
        };
        if done {
            break;
        }
        if buf.len() > MAX_ANSWER_BODY {
            return Error::e_explain(InvalidHTTPHeader, "Stream's answer body is too large");
        }
        match tokio::time::timeout_at(deadline, answer.upstream.read_buf(buf)).await {
            Ok(Ok(0)) if answer.content_length.is_none() && !answer.chunked => break,
            Ok(Ok(0)) => {
                return Error::e_explain(ConnectionClosed, "Stream's answer was cut short")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Error::e_because(ReadError, "reading Stream's answer", e),
            Err(_) => return Error::e_explain(ReadTimedout, "reading Stream's answer"),
        }
    }
    Ok(match (answer.content_length, answer.chunked) {
        (Some(len), _) => buf.split_to(len).freeze(),
        (None, true) => Bytes::from(decode_chunked(buf).unwrap_or_default()),
        (None, false) => buf.split().freeze(),
    })
}

/// A complete chunked body, decoded; `None` until the last chunk arrived.
fn decode_chunked(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            // Trailers (if any) end with an empty line.
            return raw.windows(2).any(|w| w == b"\r\n").then_some(out);
        }
        if raw.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
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
            client,
            upstream,
            early,
            idle,
            write_timeout: wt,
        } = self;
        // pingora wrote the 101 through the connection's write buffer.
        let mut client = client;
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

/// A connection that is already closed: reads end-of-file, writes vanish.
/// What pingora's session holds after the client's connection was taken.
#[derive(Debug)]
struct Closed;

impl tokio::io::AsyncRead for Closed {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Closed {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl pingora::protocols::l4::virt::VirtualSocket for Closed {
    fn set_socket_option(
        &self,
        _opt: pingora::protocols::l4::virt::VirtualSockOpt,
    ) -> io::Result<()> {
        Ok(())
    }
}

fn closed_stream() -> Stream {
    Box::new(pingora::protocols::l4::stream::Stream::from(
        pingora::protocols::l4::virt::VirtualSocketStream::new(Box::new(Closed)),
    ))
}

#[cfg(test)]
mod tests {
    use super::decode_chunked;

    #[test]
    fn chunked_bodies_decode_only_when_complete() {
        assert_eq!(
            decode_chunked(b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n").as_deref(),
            Some(&b"Wikipedia"[..])
        );
        assert_eq!(decode_chunked(b"4\r\nWiki\r\n5\r\npedia\r\n"), None);
        assert_eq!(decode_chunked(b"4\r\nWi"), None);
        assert_eq!(decode_chunked(b"zz\r\n"), None);
    }
}
