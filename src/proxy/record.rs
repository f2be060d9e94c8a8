//! After a request: its metrics and its audit record; and the request id
//! and open-socket gauge the record and metrics rely on.

use std::sync::Arc;

use pingora::prelude::*;
use pingora::proxy::Session;

use super::{Gateway, RequestCtx};
use crate::audit::{self, AuditLog};
use crate::metrics;
use crate::policy::Decision;
use crate::refusal::Refusal;
use crate::tenant::Tenant;

mod series;
use series::Labels;

impl Gateway {
    /// Builds the audit record of a finished request and counts it in the
    /// metrics.
    pub(super) async fn record(&self, session: &Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // A socket handed to the relay task is recorded when it ends.
        if ctx.handed_over {
            return;
        }
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let looked_up = self.looked_up(req.method.as_str(), req.uri.path(), req.uri.query(), ctx);
        write_record(
            self.audit.as_ref(),
            req.method.as_str(),
            status,
            looked_up,
            e,
            ctx,
        )
        .await;
    }

    /// Tenant, route template and operation of a request refused by the
    /// exchange (no decision to take them from): looked up again, on the
    /// refusal path only. `None` when the request has a decision.
    pub(super) fn looked_up(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        ctx: &RequestCtx,
    ) -> Option<LookedUp> {
        if ctx.forward.is_some() {
            return None;
        }
        let (route, operation) = match self.exchange.routing.load().policy.decide(method, path) {
            Decision::Forward {
                template,
                operation,
                ..
            }
            | Decision::RefuseServerRoute {
                template,
                operation,
            } => (Some(template), Some(operation)),
            _ => (None, None),
        };
        Some((self.exchange.tenant_of(query), route, operation))
    }
}

/// The audit record and metrics of a websocket relayed by its own task
/// (`relay.rs`), written when it ends.
pub(super) async fn finish_socket(audit: Option<&Arc<AuditLog>>, ctx: &mut RequestCtx) {
    write_record(audit, "GET", 101, None, None, ctx).await;
}

/// Tenant, route template and operation of a request without a decision.
pub(super) type LookedUp = (Option<Arc<Tenant>>, Option<Arc<str>>, Option<Arc<str>>);

/// Counts a finished request in the metrics and writes its audit record.
pub(super) async fn write_record(
    audit: Option<&Arc<AuditLog>>,
    method: &str,
    status: u16,
    looked_up: Option<LookedUp>,
    e: Option<&Error>,
    ctx: &mut RequestCtx,
) {
    let m = metrics::get();
    let latency = ctx.started.map(|t| t.elapsed()).unwrap_or_default();
    let (tenant, route, operation): (_, Option<Arc<str>>, Option<Arc<str>>) =
        match (&ctx.forward, looked_up) {
            (Some(f), _) => (
                Some(Arc::clone(&f.tenant)),
                Some(Arc::clone(&f.template)),
                Some(Arc::clone(&f.operation)),
            ),
            (None, Some((tenant, route, operation))) => (tenant, route, operation),
            (None, None) => (None, None, None),
        };
    let tenant_id = tenant.as_ref().map_or("-", |t| t.id.as_str());
    let decision = match (&ctx.refusal, e) {
        (Some(r), _) => r.decision(),
        (None, _) if ctx.preflight => "preflight",
        (None, _) => "forwarded",
    };
    let websocket = ctx.forward.as_ref().is_some_and(|f| f.websocket) && ctx.refusal.is_none();
    let mut status_digits = itoa::Buffer::new();
    let status_label = status_digits.format(status);
    let labels = Labels {
        tenant: &tenant,
        operation: &operation,
        decision,
        status,
    };
    labels.with_handles(|h| {
        h.requests.inc();
        if !websocket {
            h.duration.observe(latency.as_secs_f64());
        }
        if let Some(d) = ctx.upstream_latency {
            h.upstream.observe(d.as_secs_f64());
        }
    });
    if let Some(service) = &ctx.service {
        m.service_requests
            .with_label_values(&[
                tenant_id,
                &service.name,
                operation.as_deref().unwrap_or("-"),
                decision,
                status_label,
            ])
            .inc();
        let limit = match &ctx.refusal {
            Some(Refusal::RateLimited(l)) => Some(l.which),
            Some(Refusal::QuotaExceeded { .. } | Refusal::QuotaUnavailable) => Some("quota"),
            _ => None,
        };
        if let Some(limit) = limit {
            m.service_rate_limited
                .with_label_values(&[tenant_id, &service.name, limit])
                .inc();
        }
    }
    match &ctx.refusal {
        Some(Refusal::RateLimited(l)) => m
            .rate_limited
            .with_label_values(&[tenant_id, l.which])
            .inc(),
        Some(Refusal::TooManyConnections | Refusal::ConnectionsUnavailable) => m
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
    let Some(audit) = audit else {
        return;
    };
    let entry = audit::Entry {
        time: audit::Timestamp::now(),
        kind: if websocket { "websocket" } else { "request" },
        request_id: &ctx.request_id,
        tenant: tenant.as_ref().map(|t| t.id.as_str()),
        user_id: ctx
            .forward
            .as_ref()
            .and_then(|f| f.user_id())
            .or(ctx.refused_user.as_deref().map(|s| s.user_id.as_str())),
        service: ctx.service.as_ref().map(|s| s.name.as_str()),
        client_ip: ctx.client_ip,
        method,
        route: route.as_deref(),
        operation: operation.as_deref(),
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
        Some(permit) => audit.write_reserved(permit, &entry),
        None => audit.write(&entry).await,
    }
}

/// The request's id: the client's `X-Request-Id` when it is a sane token
/// (1-128 of `A-Z a-z 0-9 - _ . :`), else a new one (process-random prefix
/// and a counter: unique, not secret).
pub(super) fn request_id(headers: &impl crate::headers::RequestHeaders) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    if let Some(b) = headers.first("x-request-id") {
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
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // 32 hex digits by hand: `format!` cost ~1.5k instructions a request.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (half, word) in id.chunks_exact_mut(16).zip([prefix, count]) {
        for (i, digit) in half.iter_mut().enumerate() {
            *digit = HEX[((word >> ((15 - i) * 4)) & 0xf) as usize];
        }
    }
    // Hex digits only.
    std::str::from_utf8(&id).unwrap_or_default().to_string()
}

/// Counts one open websocket of a tenant in the metrics while it lives.
pub(super) struct OpenSocketGauge(prometheus::IntGauge);

impl OpenSocketGauge {
    pub(super) fn new(tenant: &str) -> OpenSocketGauge {
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

#[cfg(test)]
mod tests {
    use super::request_id;
    use pingora::http::RequestHeader;

    #[test]
    fn generated_ids_are_32_hex_digits_with_a_process_prefix_and_a_counter() {
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let (a, b) = (request_id(&req.headers), request_id(&req.headers));
        for id in [&a, &b] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        assert_eq!(a[..16], b[..16], "same process prefix");
        let (na, nb) = (
            u64::from_str_radix(&a[16..], 16).unwrap(),
            u64::from_str_radix(&b[16..], 16).unwrap(),
        );
        assert!(nb > na, "the counter goes up: {a} {b}");
    }

    #[test]
    fn a_valid_client_id_is_kept_and_an_invalid_one_replaced() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-request-id", "req-abc.1:2_x").unwrap();
        assert_eq!(request_id(&req.headers), "req-abc.1:2_x");
        req.insert_header("x-request-id", "bad id").unwrap();
        assert_eq!(request_id(&req.headers).len(), 32);
    }
}
