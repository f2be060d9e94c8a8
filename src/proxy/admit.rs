//! The request phase after the exchange: local limits, the shared quota,
//! the websocket caps; and answering a refusal.

use pingora::prelude::*;
use pingora::proxy::Session;

use super::record::OpenSocketGauge;
use super::respond::{respond, respond_websocket};
use super::{unix_now, Gateway, RequestCtx};
use crate::cors::{self, Cors};
use crate::exchange::Forward;
use crate::limits::RequestKind;
use crate::quota::{QuotaError, Who};
use crate::refusal::Refusal;

/// What CORS says about a request, before anything else looks at it.
pub(super) enum CorsStep {
    Continue,
    /// An origin the tenant does not list.
    Refuse,
    /// An allowed preflight: the gateway answers it (204).
    Preflight,
}

impl Gateway {
    /// CORS first (pingora's path and the fast path alike): an origin the
    /// tenant does not list is refused before anything else; an allowed
    /// origin's headers go in `ctx` for the answer; an allowed preflight is
    /// answered by the gateway, never forwarded.
    pub(super) fn cors_step(
        &self,
        method: &http::Method,
        query: Option<&str>,
        headers: &impl crate::headers::RequestHeaders,
        ctx: &mut RequestCtx,
    ) -> CorsStep {
        if !headers.contains("origin") {
            return CorsStep::Continue;
        }
        let tenant = self.exchange.tenant_of(query);
        match cors::check(tenant.as_deref(), headers) {
            Cors::Refused => return CorsStep::Refuse,
            Cors::Allowed {
                origin,
                credentials,
            } => ctx.cors = Some((origin, credentials)),
            Cors::Off => {}
        }
        if ctx.cors.is_some() && cors::is_preflight(method, headers) {
            ctx.preflight = true;
            return CorsStep::Preflight;
        }
        CorsStep::Continue
    }

    /// After the exchange: the local rate limits, then the shared quota (a
    /// request refused locally never costs a Redis call), then (sockets
    /// only) a place under the connection caps (this process's first, then,
    /// with `connection_caps = "fleet"`, the fleet's), whose guards live in
    /// the context so they are released however the socket ends.
    pub(super) async fn admit(
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
        // A service has its own bucket (and the tenant's), and its own
        // quota windows; it counts against the tenant's quota like anyone.
        let who = match forward.service() {
            Some(s) => {
                tenant
                    .limits
                    .check_service(&s.name)
                    .map_err(Refusal::RateLimited)?;
                Some(Who::Service {
                    name: &s.name,
                    per_minute: s.quota.per_minute,
                    per_day: s.quota.per_day,
                })
            }
            None => {
                tenant
                    .limits
                    .check(user, client_ip, kind)
                    .map_err(Refusal::RateLimited)?;
                user.map(Who::User)
            }
        };
        if let Some(q) = &self.quotas {
            match q.check(&tenant.id, who, tenant.quota, unix_now()).await {
                Ok(()) => {}
                Err(QuotaError::Exceeded { limit, reset_at }) => {
                    return Err(Refusal::QuotaExceeded { limit, reset_at })
                }
                Err(QuotaError::Unavailable) => return Err(Refusal::QuotaUnavailable),
            }
        }
        if forward.websocket {
            let local = tenant.connections.acquire(user)?;
            if let (true, Some(fleet)) = (tenant.fleet_connection_caps, &self.fleet) {
                let (per_user, per_tenant) = tenant.connections.caps();
                // On refusal `local` drops here and frees its place.
                ctx.fleet_place = fleet
                    .acquire(&tenant.id, user, per_user, per_tenant)
                    .await?;
            }
            ctx.connection = Some(local);
            ctx.open_socket = Some(OpenSocketGauge::new(&tenant.id));
            ctx.socket = Some(self.sockets.register(
                &tenant.id,
                forward.session.clone(),
                tenant.close_on_session_expiry,
            ));
        }
        Ok(())
    }

    /// Answers a refusal (HTTP, or Stream-style on an upgraded socket).
    pub(super) async fn refuse(
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
}
