//! Prometheus metrics, served on `admin_listen` at `/metrics`.
//!
//! One registry owned by the gateway (not the prometheus crate's default
//! one), reached through [`get`]. Label values are bounded: tenant ids (from
//! config), service account names (from config), operation names (from the
//! route table, or `-`), decisions, status codes, limit kinds and failure
//! reasons (fixed sets). Never a raw path, a user id or a token.

use std::sync::OnceLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Latency buckets (seconds): 250 µs to 10 s.
const BUCKETS: [f64; 14] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub service_requests: IntCounterVec,
    pub service_rate_limited: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub websockets_open: IntGaugeVec,
    pub rate_limited: IntCounterVec,
    pub quota_exceeded: IntCounterVec,
    pub token_mints: IntCounterVec,
    pub token_cache_hits: IntCounterVec,
    pub session_failures: IntCounterVec,
    pub jwks_refreshes: IntCounterVec,
    pub redis_errors: IntCounterVec,
    pub audit_records: IntCounterVec,
    pub audit_dropped: IntCounterVec,
    pub config_reloads: IntCounterVec,
    /// `stream_gateway_upstream_connections_total{reused="false"}`: new
    /// upstream connections (TCP, and TLS for https).
    pub upstream_connections_new: IntCounter,
    /// `{reused="true"}`: requests sent on a pooled keep-alive connection.
    pub upstream_connections_reused: IntCounter,
    /// `stream_gateway_slow_request_heads_total`: connections closed because
    /// a request head took longer than `client_header_timeout`.
    pub slow_heads: IntCounter,
    /// `stream_gateway_fast_path_requests_total`: requests served by the
    /// plain HTTP/1.1 fast path (`proxy/fast.rs`), not pingora's proxy loop.
    pub fast_path_requests: IntCounter,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(h.clone()))
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    h
}

impl Metrics {
    // Metric definitions are constants: a failure here is a programming
    // error caught by the first test that touches metrics, never a runtime
    // condition.
    fn new() -> Metrics {
        let r = Registry::new();
        let gauge = IntGaugeVec::new(
            Opts::new(
                "stream_gateway_websockets_open",
                "Open websockets (/connect) through this process.",
            ),
            &["tenant"],
        )
        .unwrap_or_else(|e| panic!("metric websockets_open: {e}"));
        r.register(Box::new(gauge.clone()))
            .unwrap_or_else(|e| panic!("register websockets_open: {e}"));
        let upstream_connections = counter(
            &r,
            "stream_gateway_upstream_connections_total",
            "Upstream connections used by requests: reused=\"false\" newly opened, reused=\"true\" taken from the keep-alive pool.",
            &["reused"],
        );
        let slow_heads = IntCounter::new(
            "stream_gateway_slow_request_heads_total",
            "Client connections closed because their request head took longer than server.client_header_timeout.",
        )
        .unwrap_or_else(|e| panic!("metric slow_request_heads: {e}"));
        r.register(Box::new(slow_heads.clone()))
            .unwrap_or_else(|e| panic!("register slow_request_heads: {e}"));
        let fast_path_requests = IntCounter::new(
            "stream_gateway_fast_path_requests_total",
            "Requests served by the plain HTTP/1.1 fast path (the others go through pingora's proxy loop).",
        )
        .unwrap_or_else(|e| panic!("metric fast_path_requests: {e}"));
        r.register(Box::new(fast_path_requests.clone()))
            .unwrap_or_else(|e| panic!("register fast_path_requests: {e}"));
        Metrics {
            slow_heads,
            fast_path_requests,
            upstream_connections_new: upstream_connections.with_label_values(&["false"]),
            upstream_connections_reused: upstream_connections.with_label_values(&["true"]),
            requests: counter(
                &r,
                "stream_gateway_requests_total",
                "Requests (and websocket sessions) by tenant, operation, decision and status.",
                &["tenant", "operation", "decision", "status"],
            ),
            service_requests: counter(
                &r,
                "stream_gateway_service_requests_total",
                "Requests of service accounts (also in requests_total), by service, operation, decision and status.",
                &["tenant", "service", "operation", "decision", "status"],
            ),
            service_rate_limited: counter(
                &r,
                "stream_gateway_service_rate_limited_total",
                "Service-account requests refused by a local rate limit or quota, by limit.",
                &["tenant", "service", "limit"],
            ),
            request_duration: histogram(
                &r,
                "stream_gateway_request_duration_seconds",
                "Time from the request head to the end of the response (REST).",
                &["tenant", "decision"],
            ),
            upstream_duration: histogram(
                &r,
                "stream_gateway_upstream_duration_seconds",
                "Time from sending the request upstream to the upstream response head.",
                &["tenant"],
            ),
            websockets_open: gauge,
            rate_limited: counter(
                &r,
                "stream_gateway_rate_limited_total",
                "Requests refused by a local rate limit or websocket cap (or a fleet cap's Redis being unavailable with deny), by limit.",
                &["tenant", "limit"],
            ),
            quota_exceeded: counter(
                &r,
                "stream_gateway_quota_exceeded_total",
                "Requests refused by the shared quota (or its Redis being unavailable with deny).",
                &["tenant"],
            ),
            token_mints: counter(
                &r,
                "stream_gateway_token_mints_total",
                "Stream tokens minted.",
                &["tenant"],
            ),
            token_cache_hits: counter(
                &r,
                "stream_gateway_token_cache_hits_total",
                "Requests served with a cached Stream token.",
                &["tenant"],
            ),
            session_failures: counter(
                &r,
                "stream_gateway_session_failures_total",
                "Sessions not accepted, by reason.",
                &["tenant", "reason"],
            ),
            jwks_refreshes: counter(
                &r,
                "stream_gateway_jwks_refreshes_total",
                "JWKS key set fetches, by result.",
                &["tenant", "result"],
            ),
            redis_errors: counter(
                &r,
                "stream_gateway_redis_errors_total",
                "Redis calls that failed or timed out, by use.",
                &["use"],
            ),
            audit_records: counter(
                &r,
                "stream_gateway_audit_records_total",
                "Audit records written.",
                &["sink"],
            ),
            audit_dropped: counter(
                &r,
                "stream_gateway_audit_dropped_total",
                "Audit records dropped (queue full with on_full = drop, or the sink failed).",
                &["sink"],
            ),
            config_reloads: counter(
                &r,
                "stream_gateway_config_reloads_total",
                "Config reloads, by result.",
                &["result"],
            ),
            registry: r,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; an encoding error would be
        // a bad metric name, which the constants above rule out.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Counts one failed Redis call for `use_` (`quota`, `session`,
/// `revocation`, `audit`, `connections`).
pub fn redis_error(use_: &str) {
    get().redis_errors.with_label_values(&[use_]).inc();
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_follow_prometheus_conventions() {
        let m = super::get();
        m.requests
            .with_label_values(&["acme", "GetApp", "forwarded", "200"])
            .inc();
        m.request_duration
            .with_label_values(&["acme", "forwarded"])
            .observe(0.001);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(
            "stream_gateway_requests_total{decision=\"forwarded\",operation=\"GetApp\",status=\"200\",tenant=\"acme\"} 1"
        ), "{text}");
        assert!(text.contains("stream_gateway_request_duration_seconds_bucket"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("stream_gateway_"), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
        }
    }
}
