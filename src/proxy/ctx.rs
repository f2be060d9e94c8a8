//! The per-request state both request paths keep (pingora's proxy loop and
//! the fast path): the decision, the refusal, the websocket's guards, and
//! what the audit record and metrics report.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;

use crate::audit;
use crate::connections::fleet::FleetPlace;
use crate::connections::ConnectionGuard;
use crate::exchange::Forward;
use crate::refusal::Refusal;
use crate::revocation::SocketEntry;
use crate::websocket::FrameTracker;

use super::record::OpenSocketGauge;

#[derive(Default)]
pub struct RequestCtx {
    pub(super) forward: Option<Forward>,
    pub(super) refusal: Option<Refusal>,
    /// The service account of a service request (also when refused after
    /// its credential verified), for the audit record and metrics.
    pub(super) service: Option<Arc<crate::service::ServiceAccount>>,
    /// The verified session of a user request refused after it (route or
    /// request shape), for the audit record.
    pub(super) refused_user: Option<Arc<crate::session::Session>>,
    /// Held by an open websocket; dropping it releases the socket's place.
    pub(super) connection: Option<ConnectionGuard>,
    /// Held by an open websocket under fleet-wide caps; dropping it queues
    /// the release of its place in Redis.
    pub(super) fleet_place: Option<FleetPlace>,
    /// Frame boundaries of the Stream-to-client socket stream.
    pub(super) frames: FrameTracker,
    /// An open websocket's entry in the registry (revocation, expiry).
    pub(super) socket: Option<SocketEntry>,
    /// Counts the open socket in the metrics while it lives.
    pub(super) open_socket: Option<OpenSocketGauge>,
    /// For the audit record and metrics.
    pub(super) started: Option<Instant>,
    pub(super) request_id: String,
    pub(super) client_ip: Option<std::net::IpAddr>,
    pub(super) upstream_started: Option<Instant>,
    pub(super) upstream_latency: Option<std::time::Duration>,
    pub(super) upstream_status: Option<u16>,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    /// Frames of the client-to-Stream socket stream.
    pub(super) frames_in: FrameTracker,
    /// CORS: the allowed origin to echo, and whether credentials are allowed.
    pub(super) cors: Option<(HeaderValue, bool)>,
    /// A CORS preflight answered by the gateway.
    pub(super) preflight: bool,
    /// Cap on the request body (`[policy] max_body_bytes`).
    pub(super) body_limit: u64,
    /// The body to forward instead of the client's (server-only fields
    /// stripped); `body_replaced` once it went.
    pub(super) replacement_body: Option<Bytes>,
    pub(super) body_replaced: bool,
    /// The body was read ahead (and counted) by `check_body`.
    pub(super) read_ahead: bool,
    /// The audit record's place in the queue (`on_full = "block"`).
    pub(super) audit_permit: Option<audit::Permit>,
    /// The socket went to its relay task, which records it when it ends.
    pub(super) handed_over: bool,
}
