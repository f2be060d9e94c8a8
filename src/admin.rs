//! The admin listener: `GET /healthz` (the process answers) and `GET /readyz`
//! (every tenant's session keys are loaded, and the client listener accepts
//! connections). `/metrics`
//! arrives with the metrics work.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::exchange::SharedRouting;

pub struct Admin {
    /// The client-facing listener, probed by `/readyz`.
    pub listen: SocketAddr,
    /// Tenants whose session sources must be ready (JWKS loaded).
    pub routing: SharedRouting,
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
        if req.method != http::Method::GET {
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
                let probe = tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::net::TcpStream::connect(self.listen),
                )
                .await;
                match probe {
                    Ok(Ok(_)) => json(200, r#"{"status":"ready"}"#),
                    _ => json(
                        503,
                        r#"{"status":"not ready","reason":"client listener is not accepting connections"}"#,
                    ),
                }
            }
            _ => json(404, r#"{"error":"not found"}"#),
        }
    }
}
