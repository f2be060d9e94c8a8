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
//! Upstream connections are dialled by the gateway's own pingora connector
//! (same TLS settings) and kept in the fast path's own pool (`pool.rs`);
//! one that fails before any byte of the answer after being reused is
//! replaced by a new connection, once, as pingora does.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use pingora::prelude::*;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::GetSocketDigest;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::HttpPeer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::admit::CorsStep;
use super::record::{request_id, write_record};
use super::respond::rate_limit_headers;
use super::{unix_now, Gateway, RequestCtx};
use crate::cors;
use crate::refusal::Refusal;
use http::HeaderValue;

mod pool;
mod wire;
pub use pool::Pool;
use wire::{Framing, Parsed, ParsedResponse};

/// How long an idle keep-alive connection waits for its next request
/// (pingora's own default for HTTP/1.1).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Buffers reused across the requests of a connection.
struct Scratch {
    /// Upstream head, client head, refusal.
    out: Vec<u8>,
    /// Bytes from the upstream.
    resp: BytesMut,
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
    let mut shutdown = shutdown.clone();
    let mut buf = BytesMut::with_capacity(2048);
    let mut scratch = Scratch {
        out: Vec::with_capacity(1024),
        resp: BytesMut::with_capacity(8192),
    };
    // The first head is due `client_header_timeout` after the accept; a
    // later one that long after its first byte.
    let mut head_started = Some(tokio::time::Instant::now());
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
            match read_head(&mut tcp, &mut buf, &mut head_started, &mut shutdown, gw).await {
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
            let read = tokio::time::timeout(gw.client.body_timeout, tcp.read_buf(&mut buf));
            match read.await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
        let stopping = *shutdown.borrow();
        let body = &buf[head.len..end];
        let keep = handle(gw, &mut tcp, &head, body, client_ip, &mut scratch, stopping).await;
        buf.advance(end);
        if !keep {
            let _ = tcp.shutdown().await;
            return None;
        }
        head_started = (!buf.is_empty()).then(tokio::time::Instant::now);
    }
}

/// Reads more of a request head: an idle keep-alive connection waits up to
/// [`KEEPALIVE_IDLE`] (or until the server stops) for a first byte; a head
/// under way must be complete `client_header_timeout` after it began.
async fn read_head(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    head_started: &mut Option<tokio::time::Instant>,
    shutdown: &mut ShutdownWatch,
    gw: &Gateway,
) -> HeadRead {
    let read = match *head_started {
        Some(started) => {
            let deadline = started + gw.client.header_timeout;
            match tokio::time::timeout_at(deadline, tcp.read_buf(buf)).await {
                Ok(r) => r,
                Err(_) => return HeadRead::Slow,
            }
        }
        None => {
            if *shutdown.borrow() {
                return HeadRead::Closed;
            }
            tokio::select! {
                r = tokio::time::timeout(KEEPALIVE_IDLE, tcp.read_buf(buf)) => match r {
                    Ok(r) => r,
                    Err(_) => return HeadRead::Closed,
                },
                _ = shutdown.changed() => return HeadRead::Closed,
            }
        }
    };
    match read {
        Ok(0) | Err(_) if buf.is_empty() => HeadRead::Closed,
        Ok(0) | Err(_) => HeadRead::ClosedMidHead,
        Ok(_) => {
            head_started.get_or_insert_with(tokio::time::Instant::now);
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
    body: &[u8],
    client_ip: Option<std::net::IpAddr>,
    s: &mut Scratch,
    stopping: bool,
) -> bool {
    crate::metrics::get().fast_path_requests.inc();
    let mut ctx = RequestCtx {
        started: Some(Instant::now()),
        request_id: request_id(&head.headers),
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
    let (path, query) = (head.target.path(), head.target.query());
    // CORS first, as on pingora's path.
    let cors_step = gw.cors_step(&head.method, query, &head.headers, &mut ctx);
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
                .decide_traced(method, path, query, &head.headers, false, unix_now())
                .await
        }
    };
    let admitted = match decision {
        Err(refused) => {
            ctx.service = refused.service;
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
        Ok(()) => proxy(gw, tcp, head, body, &mut ctx, close, s).await,
    };
    let looked_up = gw.looked_up(method, path, query, &ctx);
    write_record(gw.audit.as_ref(), method, status, looked_up, None, &mut ctx).await;
    keep
}

/// Writes `bytes` to the client within the upstream write timeout; false
/// when the client is gone or too slow.
async fn write_client(tcp: &mut TcpStream, bytes: &[u8], gw: &Gateway) -> bool {
    let write = async {
        tcp.write_all(bytes).await?;
        tcp.flush().await
    };
    matches!(
        tokio::time::timeout(gw.upstream.settings.write_timeout, write).await,
        Ok(Ok(()))
    )
}

/// `X-Request-Id` and, for an allowed origin, the CORS headers: on every
/// answer, as `respond.rs` adds them on pingora's path.
fn common_headers(ctx: &RequestCtx) -> Vec<(&'static str, HeaderValue)> {
    let mut list = Vec::with_capacity(1);
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
    write_client(tcp, out, gw).await
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
    write_client(tcp, out, gw).await
}

/// Forwards the request and relays the answer. Returns the status the
/// client got and whether its connection stays open.
async fn proxy(
    gw: &Gateway,
    tcp: &mut TcpStream,
    head: &wire::Head,
    body: &[u8],
    ctx: &mut RequestCtx,
    close: bool,
    s: &mut Scratch,
) -> (u16, bool) {
    let Some(forward) = ctx.forward.as_ref() else {
        // Never: `handle` stores the decision before forwarding.
        let refusal = Refusal::Internal;
        refuse(tcp, &refusal, ctx, true, s, gw).await;
        ctx.refusal = Some(refusal);
        return (500, false);
    };
    wire::upstream_head(
        &mut s.out,
        &head.method,
        &forward.path_and_query,
        &head.headers,
        &forward.auth,
        &wire::Added {
            host: &gw.upstream.host_header,
            client_ip: ctx.client_ip,
            proto: &gw.forwarded_proto,
            request_id: &ctx.request_id,
            content_length: ctx.replacement_body.as_ref().map(|b| b.len()),
        },
    );
    // The body follows the head in the same write (and is sent again if a
    // pooled connection has to be replaced).
    s.out
        .extend_from_slice(ctx.replacement_body.as_deref().unwrap_or(body));
    let started = Instant::now();
    ctx.upstream_started = Some(started);
    let addr = gw.upstream.address();
    let peer = gw.upstream.peer(false);
    let head_request = head.method == http::Method::HEAD;
    let common = common_headers(ctx);
    let (mut up, resp) = match send(gw, &peer, addr, s, head_request, &common, close).await {
        Ok(answer) => answer,
        Err((refusal, why)) => {
            // Method and path, never the query (session tokens travel there).
            tracing::warn!(
                request_id = %ctx.request_id,
                error = %why,
                status = refusal.status(),
                "upstream request failed: {} {}",
                head.method,
                head.target.path()
            );
            let status = refusal.status();
            refuse(tcp, &refusal, ctx, true, s, gw).await;
            ctx.refusal = Some(refusal);
            return (status, false);
        }
    };
    ctx.upstream_status = Some(resp.status);
    ctx.upstream_latency = Some(started.elapsed());
    let keep = !close && resp.framing != Framing::UntilClose;
    let settings = &gw.upstream.settings;
    // `s.out` holds the client's head; the body follows.
    let mut chunked = wire::Chunked::default();
    let mut left = match resp.framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut done = resp.framing == Framing::None;
    let mut body_bytes: u64 = 0;
    let mut first = true;
    loop {
        // What of `s.resp` belongs to this body.
        let take = match resp.framing {
            Framing::None => 0,
            Framing::Length(_) => {
                let n = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(s.resp.len());
                left -= n as u64;
                done = left == 0;
                n
            }
            Framing::Chunked => match chunked.feed(&s.resp) {
                Ok(Some(end)) => {
                    done = true;
                    end
                }
                Ok(None) => s.resp.len(),
                Err(()) if first => {
                    let refusal = Refusal::UpstreamUnavailable;
                    tracing::warn!(request_id = %ctx.request_id, "upstream sent a malformed chunked body");
                    refuse(tcp, &refusal, ctx, true, s, gw).await;
                    ctx.refusal = Some(refusal);
                    return (502, false);
                }
                Err(()) => return (resp.status, false),
            },
            Framing::UntilClose => s.resp.len(),
        };
        if resp.framing != Framing::Chunked {
            body_bytes += take as u64;
        }
        let ok = if first {
            s.out.extend_from_slice(&s.resp[..take]);
            write_client(tcp, &s.out, gw).await
        } else {
            write_client(tcp, &s.resp[..take], gw).await
        };
        first = false;
        s.resp.advance(take);
        ctx.bytes_out = body_bytes.max(chunked.data);
        if !ok {
            return (resp.status, false);
        }
        if done {
            break;
        }
        s.resp.clear();
        match tokio::time::timeout(settings.read_timeout, up.read_buf(&mut s.resp)).await {
            Ok(Ok(0)) if resp.framing == Framing::UntilClose => break,
            Ok(Ok(n)) if n > 0 => {}
            // Cut short, failed or too slow after the head went out: the
            // client's connection closes (it cannot be told otherwise).
            _ => {
                tracing::warn!(request_id = %ctx.request_id, "upstream answer cut short");
                return (resp.status, false);
            }
        }
    }
    if done && resp.reusable && s.resp.is_empty() {
        gw.fast_pool
            .put(up, addr, settings.idle_timeout, Instant::now());
    }
    (resp.status, keep)
}

type Failed = (Refusal, String);

/// Sends the head in `s.out` and reads the answer's head into `s.resp`,
/// then writes the client's head into `s.out`; a pooled connection that
/// fails before answering is replaced by a new one, once.
async fn send(
    gw: &Gateway,
    peer: &HttpPeer,
    addr: std::net::SocketAddr,
    s: &mut Scratch,
    head_request: bool,
    common: &[(&'static str, HeaderValue)],
    close: bool,
) -> Result<(pingora::protocols::Stream, wire::Response), Failed> {
    let settings = &gw.upstream.settings;
    let m = crate::metrics::get();
    let failed = |e: Box<Error>| {
        let refusal = match e.etype() {
            ConnectTimedout => Refusal::UpstreamTimeout,
            _ => Refusal::UpstreamUnavailable,
        };
        (refusal, e.to_string())
    };
    let mut pooled = true;
    'attempt: loop {
        let idle = pooled
            .then(|| {
                gw.fast_pool
                    .get(addr, settings.idle_timeout, Instant::now())
            })
            .flatten();
        let (mut up, reused) = match idle {
            Some(up) => (up, true),
            None => (gw.connector.new_stream(peer).await.map_err(failed)?, false),
        };
        if reused {
            m.upstream_connections_reused.inc();
        } else {
            m.upstream_connections_new.inc();
        }
        let retry = reused;
        pooled = false;
        let write = async {
            up.write_all(&s.out).await?;
            up.flush().await
        };
        match tokio::time::timeout(settings.write_timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) if retry => continue 'attempt,
            Ok(Err(e)) => return Err((Refusal::UpstreamUnavailable, e.to_string())),
            Err(_) => return Err((Refusal::UpstreamTimeout, "writing the request".into())),
        }
        s.resp.clear();
        loop {
            match tokio::time::timeout(settings.read_timeout, up.read_buf(&mut s.resp)).await {
                Ok(Ok(0)) | Ok(Err(_)) if retry && s.resp.is_empty() => continue 'attempt,
                Ok(Ok(0)) => {
                    return Err((
                        Refusal::UpstreamUnavailable,
                        "closed before answering".into(),
                    ))
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err((Refusal::UpstreamUnavailable, e.to_string())),
                Err(_) => return Err((Refusal::UpstreamTimeout, "reading the answer".into())),
            }
            loop {
                match wire::response(&s.resp, head_request, common, close, &mut s.out) {
                    ParsedResponse::Final(resp) => {
                        s.resp.advance(resp.len);
                        return Ok((up, resp));
                    }
                    ParsedResponse::Interim(len) => s.resp.advance(len),
                    ParsedResponse::Partial if s.resp.len() < wire::MAX_RESPONSE_HEAD => break,
                    ParsedResponse::Partial | ParsedResponse::Invalid => {
                        return Err((Refusal::UpstreamUnavailable, "invalid answer head".into()))
                    }
                }
            }
        }
    }
}
