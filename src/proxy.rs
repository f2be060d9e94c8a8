//! The pingora `ProxyHttp` implementation: the only code that knows pingora's
//! phases. `request_filter` asks [`Exchange::decide`] and either answers a
//! refusal itself (returning `Ok(true)`) or stores the [`Forward`] in the
//! context; `upstream_request_filter` applies it to the upstream request.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Uri};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::connections::ConnectionGuard;
use crate::exchange::{Exchange, Forward, ForwardAuth};
use crate::limits::RequestKind;
use crate::quota::{QuotaError, SharedQuotas};
use crate::refusal::Refusal;
use crate::revocation::{CloseReason, SocketEntry, SocketRegistry};
use crate::upstream::Upstream;
use crate::websocket::{self, FrameTracker};

mod respond;
use respond::{ip_header, is_websocket_upgrade, respond, respond_websocket};

/// Client headers never forwarded: credentials (replaced by the exchange),
/// forwarding headers (set by us from the socket, never trusted from the
/// client) and method overrides (the policy classified the real method).
const STRIPPED_HEADERS: [&str; 13] = [
    "authorization",
    "stream-auth-type",
    "cookie",
    "proxy-authorization",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

pub struct GatewayProxy {
    pub exchange: Exchange,
    pub upstream: Arc<Upstream>,
    /// Shared quotas, when `[redis]` is configured.
    pub quotas: Option<Arc<SharedQuotas>>,
    /// Open websockets, swept for revoked and expired sessions.
    pub sockets: Arc<SocketRegistry>,
}

#[derive(Default)]
pub struct RequestCtx {
    forward: Option<Forward>,
    refusal: Option<Refusal>,
    /// Held by an open websocket; dropping it releases the socket's place.
    connection: Option<ConnectionGuard>,
    /// Frame boundaries of the Stream-to-client socket stream.
    frames: FrameTracker,
    /// The session-expired frames were sent; the socket is being closed.
    expiry_closed: bool,
    /// An open websocket's entry in the registry (revocation, expiry).
    socket: Option<SocketEntry>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    /// No downstream modules: pingora's default adds a (disabled) response
    /// compression module that still runs on every response, and the
    /// gateway passes upstream encodings through untouched anyway.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let websocket = is_websocket_upgrade(session);
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header();
        let method = req.method.as_str();
        let decision = self
            .exchange
            .decide(
                method,
                req.uri.path(),
                req.uri.query(),
                &req.headers,
                websocket,
                unix_now(),
            )
            .await;
        // Then the local rate limits, then (sockets only) a place under the
        // connection caps; the cap's guard lives in the context, so it is
        // released however the socket ends.
        let decision = decision.and_then(|forward| {
            let user = forward.user_id();
            let kind = RequestKind {
                method,
                template: &forward.template,
                operation: &forward.operation,
            };
            forward
                .tenant
                .limits
                .check(user, client_ip, kind)
                .map_err(Refusal::RateLimited)?;
            Ok(forward)
        });
        // The shared quota is counted before forwarding, after the local
        // limits (a request refused locally never costs a Redis call).
        let decision = match (decision, &self.quotas) {
            (Ok(forward), Some(q)) => {
                let tenant = &forward.tenant;
                let user = forward.user_id();
                match q.check(&tenant.id, user, tenant.quota, unix_now()).await {
                    Ok(()) => Ok(forward),
                    Err(QuotaError::Exceeded { limit, reset_at }) => {
                        Err(Refusal::QuotaExceeded { limit, reset_at })
                    }
                    Err(QuotaError::Unavailable) => Err(Refusal::QuotaUnavailable),
                }
            }
            (d, _) => d,
        };
        let decision = decision.and_then(|forward| {
            if forward.websocket {
                let user = forward.user_id();
                ctx.connection = Some(forward.tenant.connections.acquire(user)?);
                if let Some(s) = &forward.session {
                    ctx.socket = Some(self.sockets.register(
                        &forward.tenant.id,
                        Arc::clone(s),
                        forward.tenant.close_on_session_expiry,
                    ));
                }
            }
            Ok(forward)
        });
        match decision {
            Ok(forward) => {
                ctx.forward = Some(forward);
                Ok(false)
            }
            Err(refusal) => {
                let key = req
                    .headers
                    .get("sec-websocket-key")
                    .and_then(|k| k.to_str().ok())
                    .map(str::to_string);
                match key {
                    Some(key) if websocket => respond_websocket(session, &key, &refusal).await?,
                    _ => respond(session, &refusal).await?,
                }
                ctx.refusal = Some(refusal);
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let websocket = ctx.forward.as_ref().is_some_and(|f| f.websocket);
        let kill = ctx.socket.as_ref().map(|s| &s.kill);
        Ok(Box::new(self.upstream.peer(websocket, kill)))
    }
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // request_filter refuses everything it did not classify, so reaching
        // here without a Forward is a bug: fail closed.
        let Some(forward) = ctx.forward.as_ref() else {
            return Error::e_explain(InternalError, "no forwarding decision");
        };
        let uri: Uri = forward
            .path_and_query
            .parse()
            .or_err(InternalError, "rebuilt path is not a valid URI")?;
        upstream.set_uri(uri);
        // One pass over the (few) headers present, then remove only what is
        // there: thirteen blind removals cost more than the rest of the
        // header rewrite (measured with callgrind, benches/README.md).
        let mut present = [false; STRIPPED_HEADERS.len()];
        for name in upstream.headers.keys() {
            if let Some(i) = STRIPPED_HEADERS.iter().position(|h| name.as_str() == *h) {
                present[i] = true;
            }
        }
        for (h, _) in STRIPPED_HEADERS.iter().zip(present).filter(|(_, p)| *p) {
            upstream.remove_header(*h);
        }
        match &forward.auth {
            ForwardAuth::User { token, .. } => {
                upstream.insert_header("authorization", token.header.clone())?;
                upstream.insert_header("stream-auth-type", "jwt")?;
            }
            ForwardAuth::Anonymous => {
                upstream.insert_header("stream-auth-type", "anonymous")?;
            }
        }
        upstream.insert_header("host", self.upstream.settings.authority.as_str())?;
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            upstream.insert_header("x-forwarded-for", ip_header(ip))?;
        }
        upstream.insert_header("x-forwarded-proto", HeaderValue::from_static("http"))?;
        Ok(())
    }

    /// Closes an open socket whose session has expired or been revoked,
    /// with Stream's own protocol: an error frame (code 40 when expired, so
    /// the SDK refreshes its token and reconnects) and a close frame.
    ///
    /// Two ways in: at the first frame boundary of Stream's traffic after
    /// `exp` (a health check comes about every 30 s); or, sooner, when the
    /// socket sweep (`server.rs`, every second) fires the socket's kill
    /// switch and its upstream stream reads end-of-file: the frames are then
    /// appended at the end of Stream's traffic.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        let Some(f) = &ctx.forward else {
            return Ok(None);
        };
        if !f.websocket {
            return Ok(None);
        }
        if ctx.expiry_closed {
            *body = None;
            return Error::e_explain(ConnectionClosed, "websocket closed by the gateway");
        }
        let at_boundary = match body.as_ref() {
            Some(data) => ctx.frames.advance(data),
            None => ctx.frames.at_boundary(),
        };
        let killed = ctx.socket.as_ref().and_then(|s| s.kill.reason());
        let refusal = match killed {
            Some(CloseReason::Revoked) if end_of_stream => {
                Some(Refusal::InvalidSession("session revoked"))
            }
            Some(CloseReason::Expired) if end_of_stream => Some(Refusal::SessionExpired),
            _ => f
                .session
                .as_ref()
                .filter(|s| f.tenant.close_on_session_expiry && unix_now() > s.expires_at)
                .map(|_| Refusal::SessionExpired),
        };
        let Some(refusal) = refusal.filter(|_| at_boundary) else {
            return Ok(None);
        };
        let frames = websocket::refusal_frames(&refusal);
        let mut out =
            bytes::BytesMut::with_capacity(frames.len() + body.as_ref().map_or(0, Bytes::len));
        if let Some(data) = body.as_ref() {
            out.extend_from_slice(data);
        }
        out.extend_from_slice(&frames);
        *body = Some(out.freeze());
        ctx.expiry_closed = !end_of_stream;
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if ctx.expiry_closed {
            // We closed the socket on purpose (session expiry).
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let refusal = match e.etype() {
            ConnectTimedout | ReadTimedout | WriteTimedout => Refusal::UpstreamTimeout,
            _ => match e.esource() {
                ErrorSource::Upstream => Refusal::UpstreamUnavailable,
                ErrorSource::Downstream => {
                    // The client went away or sent garbage: nothing useful to say.
                    return FailToProxy {
                        error_code: 0,
                        can_reuse_downstream: false,
                    };
                }
                _ => Refusal::Internal,
            },
        };
        let refusal = match e.etype() {
            HTTPStatus(400) => Refusal::BadRequest("malformed request"),
            _ => refusal,
        };
        if session.response_written().is_none() {
            if let Err(err) = respond(session, &refusal).await {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        if matches!(refusal, Refusal::Internal) {
            tracing::error!(error = %e, "request failed inside the gateway");
        } else {
            tracing::warn!(error = %e, status = refusal.status(), "upstream request failed");
        }
        FailToProxy {
            error_code: refusal.status(),
            can_reuse_downstream: false,
        }
    }

    /// What pingora prints about a request in its own error logs. Its default
    /// is the request line with the query, which carries session tokens
    /// (`authorization=`) and, after the swap, minted Stream tokens: log the
    /// method and path only.
    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!("{} {}", req.method, req.uri.path())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let (tenant, operation) = match &ctx.forward {
            Some(f) => (f.tenant.id.as_str(), f.operation.as_str()),
            None => ("-", "-"),
        };
        tracing::debug!(
            tenant,
            operation,
            status,
            refusal = ctx.refusal.as_ref().map(|r| r.code()),
            "request done"
        );
    }
}
