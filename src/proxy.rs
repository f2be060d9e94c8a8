//! The pingora `ProxyHttp` implementation: the only code that knows pingora's
//! phases. `request_filter` asks [`Exchange::decide`] and either answers a
//! refusal itself (returning `Ok(true)`) or stores the
//! [`Forward`](crate::exchange::Forward) in the context;
//! `upstream_request_filter` applies it to the upstream request.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Uri};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::audit::AuditLog;
use crate::connections::fleet::FleetCaps;
use crate::exchange::Exchange;
use crate::quota::SharedQuotas;
use crate::refusal::Refusal;
use crate::revocation::SocketRegistry;
use crate::upstream::Upstream;

mod admit;
mod ctx;
pub use ctx::RequestCtx;
mod body_check;
pub(crate) mod fast;
#[cfg(fuzzing)]
pub use fast::{fuzz_head, FuzzHead};
mod head_check;
mod record;
mod relay;
mod respond;
mod upstream_headers;
use admit::CorsStep;
use record::request_id;
use respond::{add_headers, is_websocket_upgrade, respond, respond_preflight};

/// Everything a request needs: the exchange, the upstream, the limits, the
/// audit log. Shared by pingora's proxy loop ([`GatewayProxy`]) and the
/// plain HTTP/1.1 fast path (`fast.rs`).
pub struct Gateway {
    pub exchange: Exchange,
    pub upstream: Arc<Upstream>,
    /// Shared quotas, when `[redis]` is configured.
    pub quotas: Option<Arc<SharedQuotas>>,
    /// Fleet-wide websocket caps, when `[redis]` is configured (used by
    /// tenants with `connection_caps = "fleet"`).
    pub fleet: Option<Arc<FleetCaps>>,
    /// Open websockets, swept for revoked and expired sessions.
    pub sockets: Arc<SocketRegistry>,
    /// The audit log, when `[audit]` is configured.
    pub audit: Option<Arc<AuditLog>>,
    /// Limits on the client's request head and body reads.
    pub client: crate::config::ClientLimits,
    /// Whose `X-Forwarded-For` names the client (`server.trusted_proxies`).
    pub trusted_proxies: crate::client_ip::TrustedProxies,
    /// `X-Forwarded-Proto` sent upstream: `https` on a TLS listener.
    pub forwarded_proto: HeaderValue,
    /// Dials Stream for websockets (`relay.rs`): same TLS settings as
    /// pingora's own upstream connector, never pooled.
    pub connector: pingora::connectors::TransportConnector,
    /// Idle upstream connections of the fast path (`fast/pool.rs`).
    pub fast_pool: fast::Pool,
}

/// The pingora `ProxyHttp` face of a [`Gateway`] (pingora takes its proxy by
/// value; the fast path keeps the other handle).
pub struct GatewayProxy(pub Arc<Gateway>);

impl std::ops::Deref for GatewayProxy {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        &self.0
    }
}

/// Unix seconds for the request's decisions (token `iat`/`exp`): exact,
/// never the coarse clock (see `clock::unix_secs`).
fn unix_now() -> u64 {
    crate::clock::unix_secs_exact()
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
        ctx.started = Some(Instant::now());
        ctx.request_id = request_id(&session.req_header().headers);
        let websocket = is_websocket_upgrade(session);
        if let (Some(audit), false) = (&self.audit, websocket) {
            ctx.audit_permit = audit.reserve().await;
        }
        if let Err(refusal) = head_check::check_head(session.req_header(), &self.client) {
            return self.refuse(session, ctx, refusal, websocket).await;
        }
        // Each read of a request body waits at most this long (pingora's
        // default is 60 s).
        session.set_read_timeout(Some(self.client.body_timeout));
        // CORS first (requests, preflights and websocket upgrades alike).
        let req = session.req_header();
        match self.cors_step(&req.method, req.uri.query(), &req.headers, ctx) {
            CorsStep::Refuse => {
                return self
                    .refuse(session, ctx, Refusal::OriginNotAllowed, websocket)
                    .await
            }
            CorsStep::Preflight => {
                respond_preflight(session, ctx).await?;
                return Ok(true);
            }
            CorsStep::Continue => {}
        }
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let client_ip = self
            .trusted_proxies
            .client_ip(peer, &session.req_header().headers);
        ctx.client_ip = client_ip;
        let req = session.req_header();
        let method = req.method.clone();
        let decision = self
            .exchange
            .decide_traced(
                method.as_str(),
                req.uri.path(),
                req.uri.query(),
                &req.headers,
                websocket,
                unix_now(),
            )
            .await;
        let forward = match decision {
            Ok(f) => f,
            Err(refused) => {
                ctx.service = refused.service;
                ctx.refused_user = refused.user;
                return self.refuse(session, ctx, refused.refusal, websocket).await;
            }
        };
        ctx.service = forward.service().cloned();
        let mut forward = forward;
        let mut admitted = self.admit(&forward, method.as_str(), client_ip, ctx).await;
        if admitted.is_ok() && !forward.websocket {
            admitted = self.check_body(session, &mut forward, ctx).await;
        }
        let relay = forward.websocket;
        ctx.forward = Some(forward);
        match admitted {
            Ok(()) if relay => self.relay_socket(session, ctx).await,
            Ok(()) => Ok(false),
            Err(refusal) => self.refuse(session, ctx, refusal, websocket).await,
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.upstream.peer(false)))
    }
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
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
        let client_ip = ctx.client_ip;
        upstream_headers::rewrite(
            upstream,
            uri,
            &forward.auth,
            upstream_headers::Added {
                host: &self.upstream.host_header,
                client_ip,
                proto: &self.forwarded_proto,
                request_id: &ctx.request_id,
                content_length: ctx.replacement_body.as_ref().map(|b| b.len()),
            },
        );
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    /// Counts upstream connections opened vs taken from the keep-alive pool
    /// (`stream_gateway_upstream_connections_total{reused}`).
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        let m = crate::metrics::get();
        if reused {
            m.upstream_connections_reused.inc();
        } else {
            m.upstream_connections_new.inc();
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        ctx.upstream_latency = ctx.upstream_started.map(|t| t.elapsed());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        add_headers(upstream_response, ctx, false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(b) = body.as_ref() {
            // (Websockets never get here: `relay.rs` copies their bytes.)
            if !ctx.read_ahead {
                // (A body read ahead by check_body was counted and capped there.)
                ctx.bytes_in += b.len() as u64;
                if ctx.bytes_in > ctx.body_limit && ctx.body_limit > 0 {
                    ctx.refusal = Some(Refusal::PayloadTooLarge);
                    return Error::e_explain(InternalError, "request body over max_body_bytes");
                }
            }
        }
        if let Some(replacement) = ctx.replacement_body.take() {
            *body = Some(replacement);
            ctx.body_replaced = true;
        } else if ctx.body_replaced {
            *body = None;
        }
        Ok(())
    }

    /// Counts the bytes to the client.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(b) = body.as_ref() {
            ctx.bytes_out += b.len() as u64;
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let refusal = match e.etype() {
            // A refusal decided while the body streamed (over the size cap).
            _ if ctx.refusal.is_some() => ctx.refusal.clone().unwrap_or(Refusal::Internal),
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
            if let Err(err) = respond(session, &refusal, ctx).await {
                tracing::debug!(request_id = %ctx.request_id, error = %err, "could not send the error response");
            }
        }
        if matches!(refusal, Refusal::Internal) {
            tracing::error!(request_id = %ctx.request_id, error = %e, "request failed inside the gateway");
        } else {
            tracing::warn!(request_id = %ctx.request_id, error = %e, status = refusal.status(), "upstream request failed");
        }
        let status = refusal.status();
        ctx.refusal = Some(refusal);
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// What pingora prints about a request in its own error logs. Its default
    /// is the request line with the query, which carries session tokens
    /// (`authorization=`) and, after the swap, minted Stream tokens: log the
    /// method and path only.
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!(
            "{} {} (request id {})",
            req.method,
            req.uri.path(),
            ctx.request_id
        )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(e) = e.filter(|_| ctx.refusal.is_none()) {
            tracing::debug!(request_id = %ctx.request_id, error = %e, "request ended with an error");
        }
        self.record(session, e, ctx).await;
    }
}
