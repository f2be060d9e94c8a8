//! The fast path's upstream side: sending the request (a pooled connection
//! that died is replaced once) and relaying the answer by its framing.

use std::time::Instant;

use bytes::Buf;
use http::HeaderValue;
use pingora::protocols::l4::stream::Stream as TcpStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::{self, Conn, Failed};
use super::wire::{self, Framing, ParsedResponse};
use super::{common_headers, refuse, within, write_client, Scratch};
use crate::proxy::{Gateway, RequestCtx};
use crate::refusal::Refusal;

/// Forwards the request and relays the answer. Returns the status the
/// client got and whether its connection stays open.
pub(super) async fn proxy(
    gw: &Gateway,
    tcp: &mut TcpStream,
    head: &wire::Head,
    request: &[u8],
    ctx: &mut RequestCtx,
    close: bool,
    s: &mut Scratch,
) -> (u16, bool) {
    let body = request.get(head.len..).unwrap_or_default();
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
        &head.headers(request),
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
    let head_request = head.method == http::Method::HEAD;
    let common = common_headers(ctx);
    let (mut up, resp) = match send(gw, addr, s, head_request, &common, close).await {
        Ok(answer) => answer,
        Err((refusal, why)) => {
            // Method and path, never the query (session tokens travel there).
            tracing::warn!(
                request_id = %ctx.request_id,
                error = %why,
                status = refusal.status(),
                "upstream request failed: {} {}",
                head.method,
                head.path(request)
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
            write_client(tcp, &s.out, &mut s.timer, gw).await
        } else {
            write_client(tcp, &s.resp[..take], &mut s.timer, gw).await
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
        match within(
            &mut s.timer,
            settings.read_timeout,
            up.read_buf(&mut s.resp),
        )
        .await
        {
            Some(Ok(0)) if resp.framing == Framing::UntilClose => break,
            Some(Ok(n)) if n > 0 => {}
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
            .put(up, addr, settings.idle_timeout, crate::clock::coarse());
    }
    (resp.status, keep)
}

/// Sends the head in `s.out` and reads the answer's head into `s.resp`,
/// then writes the client's head into `s.out`; a pooled connection that
/// fails before answering is replaced by a new one, once.
async fn send(
    gw: &Gateway,
    addr: std::net::SocketAddr,
    s: &mut Scratch,
    head_request: bool,
    common: &[(&'static str, HeaderValue)],
    close: bool,
) -> Result<(Conn, wire::Response), Failed> {
    let settings = &gw.upstream.settings;
    let m = crate::metrics::get();
    let mut pooled = true;
    'attempt: loop {
        let idle = pooled
            .then(|| {
                gw.fast_pool
                    .get(addr, settings.idle_timeout, crate::clock::coarse())
            })
            .flatten();
        let (mut up, reused) = match idle {
            Some(up) => (up, true),
            None => (conn::dial(gw, addr).await?, false),
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
        match within(&mut s.timer, settings.write_timeout, write).await {
            Some(Ok(())) => {}
            Some(Err(_)) if retry => continue 'attempt,
            Some(Err(e)) => return Err((Refusal::UpstreamUnavailable, e.to_string())),
            None => return Err((Refusal::UpstreamTimeout, "writing the request".into())),
        }
        s.resp.clear();
        loop {
            match within(
                &mut s.timer,
                settings.read_timeout,
                up.read_buf(&mut s.resp),
            )
            .await
            {
                Some(Ok(0)) | Some(Err(_)) if retry && s.resp.is_empty() => continue 'attempt,
                Some(Ok(0)) => {
                    return Err((
                        Refusal::UpstreamUnavailable,
                        "closed before answering".into(),
                    ))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err((Refusal::UpstreamUnavailable, e.to_string())),
                None => return Err((Refusal::UpstreamTimeout, "reading the answer".into())),
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
