//! Closing an open websocket from the gateway's side, with Stream's own
//! protocol: an error frame (code 40 when the session expired, 5 when it was
//! revoked) and a close frame, or at shutdown a close frame alone.
//!
//! Two ways in: at the first frame boundary of Stream's traffic after `exp`
//! (a health check comes about every 30 s); or, sooner, when the socket
//! sweep (`server.rs`, every second, and at shutdown) fires the socket's
//! kill switch and its upstream stream reads end-of-file: the frames are
//! then appended at the end of Stream's traffic.

use bytes::{Bytes, BytesMut};
use pingora::prelude::*;

use super::{unix_now, RequestCtx};
use crate::refusal::Refusal;
use crate::revocation::CloseReason;
use crate::websocket;

/// Appends the closing frames to `body` when the socket is due to close.
/// Once they went out (mid-stream), the next chunk ends the connection.
pub(super) fn close_if_due(
    ctx: &mut RequestCtx,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
) -> Result<()> {
    let Some(f) = ctx.forward.as_ref().filter(|f| f.websocket) else {
        return Ok(());
    };
    if ctx.expiry_closed {
        *body = None;
        return Error::e_explain(ConnectionClosed, "websocket closed by the gateway");
    }
    let at_boundary = match body.as_ref() {
        Some(data) => ctx.frames.advance(data),
        None => ctx.frames.at_boundary(),
    };
    let killed = ctx.socket.as_ref().and_then(|s| s.kill.reason());
    let expired = || {
        f.session
            .as_ref()
            .is_some_and(|s| f.tenant.close_on_session_expiry && unix_now() > s.expires_at)
    };
    let tail = match killed {
        // Going away: a close frame only, so the SDK reconnects.
        Some(CloseReason::Shutdown) if end_of_stream => {
            at_boundary.then(|| websocket::close_frame(1001))
        }
        // Revoked: 1000, final: the SDK must not come back with it.
        Some(CloseReason::Revoked) if end_of_stream => at_boundary.then(|| {
            websocket::error_then_close(&Refusal::InvalidSession("session revoked"), 1000)
        }),
        // Expired: 1001 so the SDK reconnects, meets code 40 and refreshes.
        Some(CloseReason::Expired) if end_of_stream => {
            at_boundary.then(|| websocket::error_then_close(&Refusal::SessionExpired, 1001))
        }
        _ if at_boundary && expired() => {
            Some(websocket::error_then_close(&Refusal::SessionExpired, 1001))
        }
        _ => return Ok(()),
    };
    let mut out = BytesMut::with_capacity(
        body.as_ref().map_or(0, Bytes::len) + tail.as_ref().map_or(0, Bytes::len),
    );
    if let Some(data) = body.as_ref() {
        out.extend_from_slice(data);
    }
    if let Some(t) = &tail {
        out.extend_from_slice(t);
    }
    *body = Some(out.freeze());
    // Mid-stream, the frames went out with Stream's data: end the
    // connection with the next chunk. Shutdown only closes at the end.
    ctx.expiry_closed = tail.is_some() && !end_of_stream && killed != Some(CloseReason::Shutdown);
    Ok(())
}
