//! The pingora `ProxyHttp` implementation: the only code that knows pingora's
//! phases. `request_filter` asks [`Exchange::decide`] and either answers a
//! refusal itself (returning `Ok(true)`) or stores the [`Forward`] in the
//! context; `upstream_request_filter` applies it to the upstream request.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Uri};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::audit::{self, AuditLog};
use crate::body::{self, Location, ServerOnlyMode};
use crate::connections::ConnectionGuard;
use crate::cors::{self, Cors};
use crate::exchange::{Exchange, Forward, ForwardAuth};
use crate::limits::RequestKind;
use crate::metrics;
use crate::policy::Decision;
use crate::quota::{QuotaError, SharedQuotas};
use crate::refusal::Refusal;
use crate::revocation::{CloseReason, SocketEntry, SocketRegistry};
use crate::upstream::Upstream;
use crate::websocket::{self, FrameTracker};

mod respond;
use respond::{
    add_common_headers, ip_header, is_websocket_upgrade, respond, respond_preflight,
    respond_websocket,
};

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
    /// The audit log, when `[audit]` is configured.
    pub audit: Option<Arc<AuditLog>>,
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
    /// Counts the open socket in the metrics while it lives.
    open_socket: Option<OpenSocketGauge>,
    /// For the audit record and metrics.
    started: Option<Instant>,
    request_id: String,
    client_ip: Option<std::net::IpAddr>,
    upstream_started: Option<Instant>,
    upstream_latency: Option<std::time::Duration>,
    upstream_status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    /// Frames of the client-to-Stream socket stream.
    frames_in: FrameTracker,
    /// CORS: the allowed origin to echo, and whether credentials are allowed.
    cors: Option<(HeaderValue, bool)>,
    /// A CORS preflight answered by the gateway.
    preflight: bool,
    /// Cap on the request body (`[policy] max_body_bytes`).
    body_limit: u64,
    /// The body to forward instead of the client's (server-only fields
    /// stripped); `body_replaced` once it went.
    replacement_body: Option<Bytes>,
    body_replaced: bool,
    /// The body was read ahead (and counted) by `check_body`.
    read_ahead: bool,
    /// The audit record's place in the queue (`on_full = "block"`).
    audit_permit: Option<tokio::sync::mpsc::OwnedPermit<audit::Record>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl GatewayProxy {
    /// After the exchange: the local rate limits, then the shared quota (a
    /// request refused locally never costs a Redis call), then (sockets
    /// only) a place under the connection caps, whose guard lives in the
    /// context so it is released however the socket ends.
    async fn admit(
        &self,
        forward: &Forward,
        method: &str,
        client_ip: Option<std::net::IpAddr>,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), Refusal> {
        let tenant = &forward.tenant;
        let user = forward.user_id();
        let kind = RequestKind {
            method,
            template: &forward.template,
            operation: &forward.operation,
        };
        tenant
            .limits
            .check(user, client_ip, kind)
            .map_err(Refusal::RateLimited)?;
        if let Some(q) = &self.quotas {
            match q.check(&tenant.id, user, tenant.quota, unix_now()).await {
                Ok(()) => {}
                Err(QuotaError::Exceeded { limit, reset_at }) => {
                    return Err(Refusal::QuotaExceeded { limit, reset_at })
                }
                Err(QuotaError::Unavailable) => return Err(Refusal::QuotaUnavailable),
            }
        }
        if forward.websocket {
            ctx.connection = Some(tenant.connections.acquire(user)?);
            ctx.open_socket = Some(OpenSocketGauge::new(&tenant.id));
            ctx.socket = Some(self.sockets.register(
                &tenant.id,
                forward.session.clone(),
                tenant.close_on_session_expiry,
            ));
        }
        Ok(())
    }

    /// The body policy: the size cap (from `Content-Length` here; chunked
    /// bodies are counted as they stream, in `request_body_filter`), then,
    /// for operations with server-only fields, the `payload` query document
    /// and the JSON body (read ahead, at most `max_inspected_body` bytes,
    /// then forwarded from pingora's read-ahead buffer, or rewritten when
    /// fields are stripped).
    async fn check_body(
        &self,
        session: &mut Session,
        forward: &mut Forward,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), Refusal> {
        let routing = self.exchange.routing.load();
        let bp = &routing.body;
        ctx.body_limit = bp.max_body_bytes;
        let req = session.req_header();
        let content_length = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if content_length.is_some_and(|n| n > bp.max_body_bytes) {
            return Err(Refusal::PayloadTooLarge);
        }
        if bp.server_only == ServerOnlyMode::Pass {
            return Ok(());
        }
        let Some(rules) = bp.fields.rules(req.method.as_str(), &forward.template) else {
            return Ok(());
        };
        if rules.iter().any(|r| r.location == Location::Payload) {
            self.check_payload(forward, rules, bp.server_only)?;
        }
        if !rules.iter().any(|r| r.location == Location::Body) || session.is_body_empty() {
            return Ok(());
        }
        session.enable_retry_buffering();
        let mut buf = bytes::BytesMut::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > bp.max_inspected {
                        return Err(Refusal::PayloadTooLarge);
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => return Err(Refusal::BadRequest("could not read the request body")),
            }
        }
        ctx.bytes_in = buf.len() as u64;
        ctx.read_ahead = true;
        if ctx.bytes_in > bp.max_body_bytes {
            return Err(Refusal::PayloadTooLarge);
        }
        if buf.is_empty() {
            return Ok(());
        }
        let mut doc: serde_json::Value = serde_json::from_slice(&buf)
            .map_err(|_| Refusal::BadRequest("the request body is not valid JSON"))?;
        match bp.server_only {
            ServerOnlyMode::Refuse => match body::find(&doc, rules, Location::Body) {
                Some(field) => Err(Refusal::ServerOnlyField(field)),
                None => Ok(()),
            },
            ServerOnlyMode::Strip => {
                if body::strip(&mut doc, rules, Location::Body) > 0 {
                    let out = serde_json::to_vec(&doc).map_err(|_| Refusal::Internal)?;
                    ctx.replacement_body = Some(Bytes::from(out));
                }
                Ok(())
            }
            ServerOnlyMode::Pass => Ok(()),
        }
    }

    /// Server-only fields in the `payload` query document (GET queries).
    fn check_payload(
        &self,
        forward: &mut Forward,
        rules: &[body::FieldRule],
        mode: ServerOnlyMode,
    ) -> std::result::Result<(), Refusal> {
        let Some((path, q)) = forward.path_and_query.split_once('?') else {
            return Ok(());
        };
        let pairs = crate::query::parse(q).map_err(Refusal::BadRequest)?;
        let Some(payload) = pairs.iter().find(|p| crate::query::is_key(p, "payload")) else {
            return Ok(());
        };
        let mut doc: serde_json::Value = serde_json::from_str(&payload.value)
            .map_err(|_| Refusal::BadRequest("the payload parameter is not valid JSON"))?;
        match mode {
            ServerOnlyMode::Refuse => match body::find(&doc, rules, Location::Payload) {
                Some(field) => Err(Refusal::ServerOnlyField(field)),
                None => Ok(()),
            },
            ServerOnlyMode::Strip => {
                if body::strip(&mut doc, rules, Location::Payload) > 0 {
                    let json = doc.to_string();
                    let rebuilt = crate::query::rebuild(
                        &pairs,
                        |p| crate::query::is_key(p, "payload"),
                        &[("payload", json.as_str())],
                    );
                    forward.path_and_query = format!("{path}?{rebuilt}");
                }
                Ok(())
            }
            ServerOnlyMode::Pass => Ok(()),
        }
    }

    /// Answers a refusal (HTTP, or Stream-style on an upgraded socket).
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        refusal: Refusal,
        websocket: bool,
    ) -> Result<bool> {
        let key = session
            .req_header()
            .headers
            .get("sec-websocket-key")
            .and_then(|k| k.to_str().ok())
            .map(str::to_string);
        let out = match key {
            Some(key) if websocket => respond_websocket(session, &key, &refusal, ctx).await,
            _ => respond(session, &refusal, ctx).await,
        };
        ctx.bytes_out = refusal.body().len() as u64;
        ctx.refusal = Some(refusal);
        out.map(|()| true)
    }

    /// Builds the audit record of a finished request and counts it in the
    /// metrics.
    async fn record(&self, session: &Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let m = metrics::get();
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let latency = ctx.started.map(|t| t.elapsed()).unwrap_or_default();
        // Tenant and route: from the decision, or (for a request refused by
        // the exchange) looked up again, on the refusal path only.
        use std::borrow::Cow;
        let (tenant, route, operation): (_, Option<Cow<'_, str>>, Option<Cow<'_, str>>) =
            match &ctx.forward {
                Some(f) => (
                    Some(Arc::clone(&f.tenant)),
                    Some(Cow::Borrowed(f.template.as_str())),
                    Some(Cow::Borrowed(f.operation.as_str())),
                ),
                None => {
                    let (route, operation) = match self
                        .exchange
                        .routing
                        .load()
                        .policy
                        .decide(req.method.as_str(), req.uri.path())
                    {
                        Decision::Forward {
                            template,
                            operation,
                            ..
                        }
                        | Decision::RefuseServerRoute {
                            template,
                            operation,
                        } => (Some(Cow::Owned(template)), Some(Cow::Owned(operation))),
                        _ => (None, None),
                    };
                    (self.exchange.tenant_of(req.uri.query()), route, operation)
                }
            };
        let tenant_id = tenant.as_ref().map_or("-", |t| t.id.as_str());
        let decision = match (&ctx.refusal, e) {
            (Some(r), _) => r.decision(),
            (None, _) if ctx.preflight => "preflight",
            (None, _) => "forwarded",
        };
        let websocket = ctx.forward.as_ref().is_some_and(|f| f.websocket) && ctx.refusal.is_none();
        let status_label = status.to_string();
        m.requests
            .with_label_values(&[
                tenant_id,
                operation.as_deref().unwrap_or("-"),
                decision,
                &status_label,
            ])
            .inc();
        if !websocket {
            m.request_duration
                .with_label_values(&[tenant_id, decision])
                .observe(latency.as_secs_f64());
        }
        if let Some(d) = ctx.upstream_latency {
            m.upstream_duration
                .with_label_values(&[tenant_id])
                .observe(d.as_secs_f64());
        }
        match &ctx.refusal {
            Some(Refusal::RateLimited(l)) => m
                .rate_limited
                .with_label_values(&[tenant_id, l.which])
                .inc(),
            Some(Refusal::TooManyConnections) => m
                .rate_limited
                .with_label_values(&[tenant_id, "connections"])
                .inc(),
            Some(Refusal::QuotaExceeded { .. } | Refusal::QuotaUnavailable) => {
                m.quota_exceeded.with_label_values(&[tenant_id]).inc()
            }
            Some(r) => {
                if let Some(reason) = r.session_failure() {
                    m.session_failures
                        .with_label_values(&[tenant_id, reason])
                        .inc();
                }
            }
            None => {}
        }
        let Some(audit) = &self.audit else {
            return;
        };
        let user_id = ctx
            .forward
            .as_ref()
            .and_then(|f| f.user_id())
            .map(str::to_string);
        let record = audit::Record {
            time: audit::now_rfc3339(),
            kind: if websocket { "websocket" } else { "request" },
            request_id: std::mem::take(&mut ctx.request_id),
            tenant: tenant.map(|t| t.id.clone()),
            user_id,
            client_ip: ctx.client_ip.map(|ip| ip.to_string()),
            method: req.method.as_str().to_string(),
            route: route.map(Cow::into_owned),
            operation: operation.map(Cow::into_owned),
            decision,
            code: ctx.refusal.as_ref().map(Refusal::code),
            status,
            upstream_status: ctx.upstream_status,
            latency_ms: latency.as_secs_f64() * 1000.0,
            bytes_in: ctx.bytes_in,
            bytes_out: ctx.bytes_out,
            duration_ms: websocket.then_some(latency.as_millis() as u64),
            frames_in: websocket.then(|| ctx.frames_in.frames()),
            frames_out: websocket.then(|| ctx.frames.frames()),
        };
        match ctx.audit_permit.take() {
            Some(permit) => audit.write_reserved(permit, record),
            None => audit.write(record).await,
        }
    }
}

/// The request's id: the client's `X-Request-Id` when it is a sane token
/// (1-128 of `A-Z a-z 0-9 - _ . :`), else a new one (process-random prefix
/// and a counter: unique, not secret).
fn request_id(req: &RequestHeader) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    if let Some(v) = req.headers.get("x-request-id") {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        {
            // Checked ASCII above.
            return String::from_utf8_lossy(b).into_owned();
        }
    }
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| ahash::RandomState::new().hash_one(std::process::id()));
    format!(
        "{prefix:016x}{:016x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Counts one open websocket of a tenant in the metrics while it lives.
struct OpenSocketGauge(prometheus::IntGauge);

impl OpenSocketGauge {
    fn new(tenant: &str) -> OpenSocketGauge {
        let g = metrics::get().websockets_open.with_label_values(&[tenant]);
        g.inc();
        OpenSocketGauge(g)
    }
}

impl Drop for OpenSocketGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
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
        ctx.request_id = request_id(session.req_header());
        let websocket = is_websocket_upgrade(session);
        if let (Some(audit), false) = (&self.audit, websocket) {
            ctx.audit_permit = audit.reserve().await;
        }
        // CORS first: an origin the tenant does not list is refused before
        // anything else (requests, preflights and websocket upgrades alike).
        let req = session.req_header();
        if req.headers.contains_key(http::header::ORIGIN) {
            let tenant = self.exchange.tenant_of(req.uri.query());
            match cors::check(tenant.as_deref(), &req.headers) {
                Cors::Refused => {
                    return self
                        .refuse(session, ctx, Refusal::OriginNotAllowed, websocket)
                        .await
                }
                Cors::Allowed {
                    origin,
                    credentials,
                } => ctx.cors = Some((origin, credentials)),
                Cors::Off => {}
            }
            if ctx.cors.is_some() && cors::is_preflight(&req.method, &req.headers) {
                ctx.preflight = true;
                respond_preflight(session, ctx).await?;
                return Ok(true);
            }
        }
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client_ip = client_ip;
        let req = session.req_header();
        let method = req.method.clone();
        let decision = self
            .exchange
            .decide(
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
            Err(refusal) => return self.refuse(session, ctx, refusal, websocket).await,
        };
        let mut forward = forward;
        let mut admitted = self.admit(&forward, method.as_str(), client_ip, ctx).await;
        if admitted.is_ok() && !forward.websocket {
            admitted = self.check_body(session, &mut forward, ctx).await;
        }
        ctx.forward = Some(forward);
        match admitted {
            Ok(()) => Ok(false),
            Err(refusal) => self.refuse(session, ctx, refusal, websocket).await,
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
        upstream.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(b) = &ctx.replacement_body {
            upstream.remove_header("transfer-encoding");
            upstream.insert_header("content-length", b.len().to_string())?;
        }
        ctx.upstream_started = Some(Instant::now());
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
        add_common_headers(upstream_response, ctx, false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let websocket = ctx.forward.as_ref().is_some_and(|f| f.websocket);
        if let Some(b) = body.as_ref() {
            if websocket {
                ctx.bytes_in += b.len() as u64;
                ctx.frames_in.advance(b);
            } else if !ctx.read_ahead {
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
        if let Some(b) = body.as_ref() {
            ctx.bytes_out += b.len() as u64;
        }
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
        if killed == Some(CloseReason::Shutdown) && end_of_stream {
            // Going away: a close frame only, so the SDK reconnects.
            let mut out = bytes::BytesMut::new();
            if let Some(data) = body.as_ref() {
                out.extend_from_slice(data);
            }
            if at_boundary {
                out.extend_from_slice(&websocket::close_frame(1001));
            }
            *body = Some(out.freeze());
            return Ok(None);
        }
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
        // Expired: close 1001 so the SDK reconnects and refreshes its token.
        // Revoked: 1000, final: the SDK must not come back with it.
        let close_code = match refusal {
            Refusal::SessionExpired => 1001,
            _ => 1000,
        };
        let frames = websocket::error_then_close(&refusal, close_code);
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
        if let Some(e) = e.filter(|_| ctx.refusal.is_none() && !ctx.expiry_closed) {
            tracing::debug!(request_id = %ctx.request_id, error = %e, "request ended with an error");
        }
        self.record(session, e, ctx).await;
    }
}
