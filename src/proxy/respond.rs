//! Writing the gateway's own answers: refusals in Stream's error shape (with
//! the rate-limit headers), Stream-style websocket refusals, and small
//! helpers of the request phase.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{unix_now, RequestCtx};
use crate::cors;
use crate::refusal::Refusal;
use crate::websocket;

/// How long a refused HTTP/1.1 request's unread body is drained before the
/// connection closes.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// `X-Request-Id`, and the CORS headers for an allowed origin, on any answer
/// the gateway writes or relays.
fn add_common_headers(
    headers: &mut http::HeaderMap,
    ctx: &RequestCtx,
    preflight: bool,
) -> Result<()> {
    if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert(http::HeaderName::from_static("x-request-id"), id);
    }
    if let Some((origin, credentials)) = &ctx.cors {
        for (name, value) in cors::headers(origin, *credentials, preflight) {
            let name = http::HeaderName::from_static(name);
            if name == http::header::VARY {
                headers.append(name, value);
            } else {
                headers.insert(name, value);
            }
        }
    }
    Ok(())
}

/// Adds the common headers to a response (relayed or the gateway's own), on the
/// plain `http` parts: pingora's insert also keeps a case-preserving name
/// map, which costs more than the rest of the response path (callgrind,
/// benches/README.md). Header names then reach the client in their
/// canonical case (`Content-Type`; other names lower case).
pub(super) fn add_headers(
    resp: &mut ResponseHeader,
    ctx: &RequestCtx,
    preflight: bool,
) -> Result<()> {
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, placeholder).into();
    let out = add_common_headers(&mut parts.headers, ctx, preflight);
    *resp = ResponseHeader::from(parts);
    out
}

/// Answers a CORS preflight for an allowed origin: 204, not forwarded.
pub(super) async fn respond_preflight(session: &mut Session, ctx: &RequestCtx) -> Result<()> {
    let mut resp = ResponseHeader::build_no_case(204, Some(8))?;
    add_headers(&mut resp, ctx, true)?;
    resp.insert_header("content-length", "0")?;
    if !session.is_body_empty() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), true).await?;
    Ok(())
}

/// The IP as a header value, formatted on the stack (no String per request).
pub(super) fn ip_header(ip: std::net::IpAddr) -> HeaderValue {
    HeaderValue::from_bytes(crate::ip_text::IpText::new(ip).as_bytes())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// `Upgrade: websocket` on an HTTP/1.1 upgrade request.
pub(super) fn is_websocket_upgrade(session: &Session) -> bool {
    session.is_upgrade_req()
        && session
            .req_header()
            .headers
            .get_all(http::header::UPGRADE)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Refuses a websocket the way Stream does: complete the upgrade, send the
/// error as a text frame, close with 1000 (see `websocket.rs` for why).
pub(super) async fn respond_websocket(
    session: &mut Session,
    key: &str,
    refusal: &Refusal,
    ctx: &RequestCtx,
) -> Result<()> {
    let mut resp = ResponseHeader::build_no_case(101, Some(8))?;
    add_headers(&mut resp, ctx, false)?;
    resp.insert_header("upgrade", "websocket")?;
    resp.insert_header("connection", "Upgrade")?;
    resp.insert_header("sec-websocket-accept", websocket::accept_key(key))?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(websocket::refusal_frames(refusal)), true)
        .await?;
    Ok(())
}

/// The rate-limit headers of a refusal, as Stream sends them: the limit,
/// none left, and when (Unix seconds) a request will pass again.
pub(super) fn rate_limit_headers(refusal: &Refusal) -> Vec<(&'static str, String)> {
    let (limit, reset_at) = match refusal {
        Refusal::QuotaExceeded { limit, reset_at } => (*limit, *reset_at),
        Refusal::RateLimited(l) => (u64::from(l.limit), unix_now() + l.retry_after_secs),
        _ => return Vec::new(),
    };
    let retry_after = reset_at.saturating_sub(unix_now()).max(1);
    vec![
        ("retry-after", retry_after.to_string()),
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", "0".to_string()),
        ("x-ratelimit-reset", reset_at.to_string()),
    ]
}

/// Writes a refusal in Stream's error shape.
pub(super) async fn respond(
    session: &mut Session,
    refusal: &Refusal,
    ctx: &RequestCtx,
) -> Result<()> {
    let body: Bytes = refusal.body();
    let mut resp = ResponseHeader::build_no_case(refusal.status(), Some(10))?;
    add_headers(&mut resp, ctx, false)?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    for (name, value) in rate_limit_headers(refusal) {
        resp.insert_header(name, value)?;
    }
    // A refused request's body was never read: do not reuse the connection
    // unless there was none, or the next request would start mid-body.
    let unread = !session.is_body_empty();
    if unread {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    if unread && !session.as_downstream().is_http2() {
        // Lingering close: read and drop what the client is still sending,
        // for a moment, before the connection closes. Closed with unread
        // bytes, the socket answers them with a reset, and a client still
        // uploading gets "broken pipe" instead of this refusal (an SDK
        // uploading with an expired token would never see its code 40).
        let _ = tokio::time::timeout(LINGER, session.drain_request_body()).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ip_header;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn ip_header_writes_what_display_writes() {
        for ip in [
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped()),
        ] {
            assert_eq!(ip_header(ip).to_str().unwrap(), ip.to_string());
        }
    }
}
