//! The admin listener: `GET /healthz` (the process answers), `GET /readyz`
//! (every tenant's session keys are loaded, Redis answers where the config
//! depends on it, the client listener accepts connections; the upstream
//! address is reported) and `GET /metrics` (Prometheus). `/metrics`
//! arrives with the metrics work.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use std::sync::Arc;

use crate::exchange::SharedRouting;
use crate::redis_conn::Redis;
use crate::upstream::Upstream;

pub struct Admin {
    /// The client-facing listener, probed by `/readyz`.
    pub listen: SocketAddr,
    /// Tenants whose session sources must be ready (JWKS loaded).
    pub routing: SharedRouting,
    /// `[redis]`, and whether serving depends on it (opaque sessions,
    /// `on_redis_error = "deny"` quotas, or an audit sink that blocks).
    pub redis: Option<(Arc<Redis>, bool)>,
    pub upstream: Arc<Upstream>,
}

fn json(status: u16, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(body.as_bytes().to_vec())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

impl Admin {
    /// JWKS verifiers count their own fetches; bring the metric up to date.
    fn sync_jwks_counts(&self) {
        let m = &crate::metrics::get().jwks_refreshes;
        for t in self.routing.load().tenants.iter() {
            if let Some(crate::session::SessionSource::Jwks(j)) = &t.session {
                let (ok, err) = j.verifier.refresh_counts();
                for (result, now) in [("ok", ok), ("error", err)] {
                    let c = m.with_label_values(&[t.id.as_str(), result]);
                    c.inc_by(now.saturating_sub(c.get()));
                }
            }
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        // HEAD: the same answer; pingora's HTTP/1 writer sends no body for it.
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return json(405, r#"{"error":"method not allowed"}"#);
        }
        match req.uri.path() {
            "/healthz" => json(200, r#"{"status":"ok"}"#),
            "/metrics" => {
                self.sync_jwks_counts();
                let body = crate::metrics::get().render();
                Response::builder()
                    .status(200)
                    .header("content-type", "text/plain; version=0.0.4")
                    .header("content-length", body.len())
                    .body(body)
                    .unwrap_or_else(|_| Response::new(Vec::new()))
            }
            "/readyz" => {
                let routing = self.routing.load();
                let mut waiting: Vec<&str> = routing
                    .tenants
                    .iter()
                    .filter(|t| t.session.as_ref().is_some_and(|s| !s.is_ready()))
                    .map(|t| t.id.as_str())
                    .collect();
                if !waiting.is_empty() {
                    waiting.sort_unstable();
                    let body = serde_json::json!({
                        "status": "not ready",
                        "reason": "session keys (JWKS) not loaded yet",
                        "tenants": waiting,
                    })
                    .to_string();
                    return json(503, &body);
                }
                drop(routing);
                if let Some((redis, true)) = &self.redis {
                    let ping = redis
                        .call(|mut c| async move {
                            redis::cmd("PING").query_async::<String>(&mut c).await
                        })
                        .await;
                    if ping.is_err() {
                        return json(
                            503,
                            r#"{"status":"not ready","reason":"redis is not answering and this config depends on it"}"#,
                        );
                    }
                }
                let probe = tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::net::TcpStream::connect(self.listen),
                )
                .await;
                if !matches!(probe, Ok(Ok(_))) {
                    return json(
                        503,
                        r#"{"status":"not ready","reason":"client listener is not accepting connections"}"#,
                    );
                }
                // The upstream address was resolved at start (or the gateway
                // would not run); a failing re-resolve keeps the last good
                // address, so it is reported, not made a reason to stop
                // taking traffic.
                let body = serde_json::json!({
                    "status": "ready",
                    "upstream_address": self.upstream.address().to_string(),
                    "upstream_last_resolve_ok": self.upstream.last_resolve_ok(),
                })
                .to_string();
                json(200, &body)
            }
            _ => json(404, r#"{"error":"not found"}"#),
        }
    }
}
