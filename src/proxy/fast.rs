//! The fast path: plain HTTP/1.1 REST requests (no body, or a
//! `Content-Length` body of at most 64 KiB, read whole first), served by
//! the gateway's own loop on the client connection instead of pingora's
//! proxy loop, which alone costs about what a whole jwt-minting haproxy
//! costs per request (benches/README.md).
//!
//! The checks are the same functions pingora's path calls
//! ([`Exchange::decide_traced`](crate::exchange::Exchange::decide_traced),
//! `admit`, `check_body_head`), the upstream head is the same rewrite
//! (`wire::upstream_head`), refusals have the same shape, the audit record
//! and metrics are written by the same `write_record`; a body's server-only
//! fields by the same `inspect_body`. What the fast path takes is narrow
//! (`wire::take`): HTTP/1.1, an origin-form target, one `Host`, at most one
//! plain `Content-Length` of at most 64 KiB (no chunked body), no upgrade,
//! no `Expect`/`TE`/`Trailer`, within the head limits. CORS (origin check,
//! preflights, the response headers) is done as on pingora's path. The first
//! request that is anything else, and everything after it on that
//! connection, goes to pingora unchanged (the bytes read are put back), so
//! hostile or unusual input meets pingora's parser and the checks it always
//! met. Only plain-TCP listeners have a fast path.
//!
//! Upstream connections are dialled here (plain TCP, a bare socket) or by
//! the gateway's own pingora connector (TLS, same settings) (`conn.rs`) and
//! kept in the fast path's own pool (`pool.rs`);
//! one that fails before any byte of the answer after being reused is
//! replaced by a new connection, once, as pingora does.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::GetSocketDigest;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch::error::RecvError;
use tokio::time::Sleep;

use super::admit::CorsStep;
use super::record::{request_id, write_record};
use super::respond::rate_limit_headers;
use super::{unix_now, Gateway, RequestCtx};
use crate::cors;
use crate::refusal::Refusal;
use http::HeaderValue;
use wait::{until, within};

mod chunked;
mod conn;
#[cfg(fuzzing)]
mod fuzz;
mod pool;
mod upstream;
mod wait;
mod wire;
#[cfg(fuzzing)]
pub use fuzz::{fuzz_head, FuzzHead};
pub use pool::Pool;
use wire::Parsed;

/// How long an idle keep-alive connection waits for its next request
/// (pingora's own default for HTTP/1.1).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Buffers (and a timer) reused across the requests of a connection.
struct Scratch {
    /// Upstream head, client head, refusal.
    out: Vec<u8>,
    /// Bytes from the upstream.
    resp: BytesMut,
    /// The connection's one timer: the deadline of whatever it waits for
    /// now (a request head, the keep-alive idle time, a read or a write).
    timer: Pin<Box<Sleep>>,
}

/// The connection's one wait for the server to stop: made once, polled by
/// every idle wait (a `changed()` per wait registered and removed a waiter
/// under the watch's lock on every request).
type Stop<'a> = Pin<&'a mut (dyn std::future::Future<Output = Result<(), RecvError>> + Send)>;

/// What a wait for a request head watches besides the socket.
struct Waiting<'a, 'b> {
    head_started: &'a mut Option<tokio::time::Instant>,
    timer: &'a mut Pin<Box<Sleep>>,
    shutdown: &'a ShutdownWatch,
    stop: &'a mut Stop<'b>,
}

enum HeadRead {
    More,
    /// The client closed, went idle too long, or the server is stopping.
    Closed,
    /// The client closed in the middle of a head: pingora answers it.
    ClosedMidHead,
    /// `client_header_timeout` passed before the head was complete.
    Slow,
}

/// Serves the connection's requests while they fit the fast path; returns
/// the connection, with the unserved bytes put back, when one does not
/// (pingora's proxy loop takes it from there), `None` when it is done.
pub(crate) async fn serve(
    gw: &Gateway,
    mut tcp: Box<TcpStream>,
    shutdown: &ShutdownWatch,
    max_head: usize,
) -> Option<Box<TcpStream>> {
    let client_ip = tcp
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
    let mut watch = shutdown.clone();
    let mut stop: Stop<'_> = std::pin::pin!(watch.changed());
    let mut buf = BytesMut::with_capacity(2048);
    let mut scratch = Scratch {
        out: Vec::with_capacity(1024),
        resp: BytesMut::with_capacity(8192),
        timer: Box::pin(tokio::time::sleep(KEEPALIVE_IDLE)),
    };
    // The first head is due `client_header_timeout` after the accept; a
    // later one that long after its first byte.
    let mut head_started = Some(crate::clock::coarse_tokio());
    loop {
        let head = loop {
            match wire::parse(&buf, &gw.client) {
                Parsed::Take(head) => break head,
                Parsed::Partial if buf.len() < max_head => {}
                Parsed::Partial | Parsed::Leave => {
                    tcp.rewind(&buf);
                    return Some(tcp);
                }
            }
            let waiting = Waiting {
                head_started: &mut head_started,
                timer: &mut scratch.timer,
                shutdown,
                stop: &mut stop,
            };
            match read_head(&mut tcp, &mut buf, waiting, gw).await {
                HeadRead::More => {}
                HeadRead::Closed => return None,
                HeadRead::ClosedMidHead => {
                    tcp.rewind(&buf);
                    return Some(tcp);
                }
                HeadRead::Slow => {
                    crate::metrics::get().slow_heads.inc();
                    return None;
                }
            }
        };
        // The body (at most wire::MAX_BODY), whole, each read within
        // `client_body_timeout` as on pingora's path; a client that stops
        // sending it is disconnected and nothing is forwarded.
        let end = head.len + head.body_len;
        while buf.len() < end {
            let read = within(
                &mut scratch.timer,
                gw.client.body_timeout,
                tcp.read_buf(&mut buf),
            );
            match read.await {
                Some(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
        let stopping = *shutdown.borrow();
        let request = &buf[..end];
        let keep = handle(
            gw,
            &mut tcp,
            &head,
            request,
            client_ip,
            &mut scratch,
            stopping,
        )
        .await;
        buf.advance(end);
        if !keep {
            let _ = tcp.shutdown().await;
            return None;
        }
        head_started = (!buf.is_empty()).then(crate::clock::coarse_tokio);
    }
}

/// Reads more of a request head: an idle keep-alive connection waits up to
/// [`KEEPALIVE_IDLE`] (or until the server stops) for a first byte; a head
/// under way must be complete `client_header_timeout` after it began.
async fn read_head(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    w: Waiting<'_, '_>,
    gw: &Gateway,
) -> HeadRead {
    let Waiting {
        head_started,
        timer,
        shutdown,
        stop,
    } = w;
    let read = match *head_started {
        Some(started) => {
            let deadline = started + gw.client.header_timeout;
            match until(timer, deadline, tcp.read_buf(buf)).await {
                Some(r) => r,
                None => return HeadRead::Slow,
            }
        }
        None => {
            if *shutdown.borrow() {
                return HeadRead::Closed;
            }
            tokio::select! {
                r = within(timer, KEEPALIVE_IDLE, tcp.read_buf(buf)) => match r {
                    Some(r) => r,
                    None => return HeadRead::Closed,
                },
                // Ready at most once: the connection ends with it.
                _ = stop.as_mut() => return HeadRead::Closed,
            }
        }
    };
    match read {
        Ok(0) | Err(_) if buf.is_empty() => HeadRead::Closed,
        Ok(0) | Err(_) => HeadRead::ClosedMidHead,
        Ok(_) => {
            head_started.get_or_insert_with(crate::clock::coarse_tokio);
            HeadRead::More
        }
    }
}

/// One request: the checks, then a refusal or the forwarded exchange; its
/// audit record and metrics. Returns whether the connection stays open.
async fn handle(
    gw: &Gateway,
    tcp: &mut TcpStream,
    head: &wire::Head,
    request: &[u8],
    client_ip: Option<std::net::IpAddr>,
    s: &mut Scratch,
    stopping: bool,
) -> bool {
    crate::metrics::get().fast_path_requests.inc();
    let body = request.get(head.len..).unwrap_or_default();
    let headers = head.headers(request);
    let client_ip = gw.trusted_proxies.client_ip(client_ip, &headers);
    let mut ctx = RequestCtx {
        started: Some(Instant::now()),
        request_id: request_id(&headers),
        client_ip,
        bytes_in: body.len() as u64,
        ..RequestCtx::default()
    };
    if let Some(audit) = &gw.audit {
        ctx.audit_permit = audit.reserve().await;
    }
    // A stopping server answers, then closes (as pingora's path does).
    let close = head.close || stopping;
    let method = head.method.as_str();
    let (path, query) = (head.path(request), head.query(request));
    // CORS first, as on pingora's path.
    let cors_step = gw.cors_step(&head.method, query, &headers, &mut ctx);
    if let CorsStep::Preflight = cors_step {
        let keep = preflight(tcp, &mut ctx, close, s, gw).await && !close;
        let looked_up = gw.looked_up(method, path, query, &ctx);
        write_record(gw.audit.as_ref(), method, 204, looked_up, None, &mut ctx).await;
        return keep;
    }
    let decision = match cors_step {
        CorsStep::Refuse => Err(Refusal::OriginNotAllowed.into()),
        _ => {
            gw.exchange
                .decide_traced(method, path, query, &headers, false, unix_now())
                .await
        }
    };
    let admitted = match decision {
        Err(refused) => {
            ctx.service = refused.service;
            ctx.refused_user = refused.user;
            Err(refused.refusal)
        }
        Ok(mut forward) => {
            ctx.service = forward.service().cloned();
            let mut admitted = gw.admit(&forward, method, client_ip, &mut ctx).await;
            if admitted.is_ok() {
                let length = head.has_length.then_some(body.len() as u64);
                admitted = gw
                    .check_body_head(&mut forward, method, length, body.is_empty(), &mut ctx)
                    .and_then(|inspect| match inspect {
                        true => gw.inspect_body(body, method, &forward.template, &mut ctx),
                        false => Ok(()),
                    });
            }
            ctx.forward = Some(forward);
            admitted
        }
    };
    let (status, keep) = match admitted {
        Err(refusal) => {
            let sent = refuse(tcp, &refusal, &mut ctx, close, s, gw).await;
            let status = refusal.status();
            ctx.refusal = Some(refusal);
            (status, sent && !close)
        }
        Ok(()) => upstream::proxy(gw, tcp, head, request, &mut ctx, close, s).await,
    };
    let looked_up = gw.looked_up(method, path, query, &ctx);
    write_record(gw.audit.as_ref(), method, status, looked_up, None, &mut ctx).await;
    keep
}

/// Writes `bytes` to the client within the upstream write timeout; false
/// when the client is gone or too slow.
async fn write_client(
    tcp: &mut TcpStream,
    bytes: &[u8],
    timer: &mut Pin<Box<Sleep>>,
    gw: &Gateway,
) -> bool {
    let write = async {
        tcp.write_all(bytes).await?;
        tcp.flush().await
    };
    matches!(
        within(timer, gw.upstream.settings.write_timeout, write).await,
        Some(Ok(()))
    )
}

/// The request id and CORS fields: inline, no allocation for the list.
type Common = smallvec::SmallVec<[(&'static str, HeaderValue); 4]>;

/// `X-Request-Id` and, for an allowed origin, the CORS headers: on every
/// answer, as `respond.rs` adds them on pingora's path.
fn common_headers(ctx: &RequestCtx) -> Common {
    let mut list = Common::new();
    if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
        list.push(("x-request-id", id));
    }
    if let Some((origin, credentials)) = &ctx.cors {
        list.extend(cors::headers(origin, *credentials, ctx.preflight));
    }
    list
}

/// An allowed CORS preflight: 204, not forwarded.
async fn preflight(
    tcp: &mut TcpStream,
    ctx: &mut RequestCtx,
    close: bool,
    s: &mut Scratch,
    gw: &Gateway,
) -> bool {
    let out = &mut s.out;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 204 No Content\r\n");
    wire::headers(out, &common_headers(ctx));
    out.extend_from_slice(b"content-length: 0\r\n");
    wire::end_head(out, close);
    write_client(tcp, out, &mut s.timer, gw).await
}

/// A refusal in Stream's error shape, with the same headers as pingora's
/// path (`respond.rs`).
async fn refuse(
    tcp: &mut TcpStream,
    refusal: &Refusal,
    ctx: &mut RequestCtx,
    close: bool,
    s: &mut Scratch,
    gw: &Gateway,
) -> bool {
    use std::io::Write;
    let body = refusal.body();
    let status = refusal.status();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let out = &mut s.out;
    out.clear();
    // Writing to a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    wire::headers(out, &common_headers(ctx));
    let _ = write!(
        out,
        "content-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in rate_limit_headers(refusal) {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    wire::end_head(out, close);
    out.extend_from_slice(&body);
    ctx.bytes_out = body.len() as u64;
    write_client(tcp, out, &mut s.timer, gw).await
}
