//! Websocket helpers for tests of `/connect` through the gateway.

use futures_util::StreamExt;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::Gateway;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(gw: &Gateway, query: &str) -> Ws {
    let url = format!("ws://{}/connect?{query}", gw.listen);
    let (ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("connect timed out")
    .expect("websocket handshake failed");
    assert_eq!(resp.status(), 101);
    ws
}

/// Next text frame as JSON (skips pings/pongs). Any transport (plain or TLS).
pub async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no frame within 10 s")
            .expect("socket ended")
            .expect("socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("text frame is JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Asserts Stream's refusal: one `{"error": ...}` frame, then close 1000.
pub async fn assert_refused<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    code: i64,
    status: i64,
) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let v = next_json(&mut ws).await;
    let err = &v["error"];
    assert_eq!(err["code"].as_i64(), Some(code), "{v}");
    assert_eq!(err["StatusCode"].as_i64(), Some(status), "{v}");
    assert!(
        err["message"].is_string() && err["more_info"].is_string() && err["details"].is_array(),
        "{v}"
    );
    let close = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no close frame")
        .expect("socket ended without a close frame")
        .expect("socket error");
    match close {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal, "close code must be 1000"),
        other => panic!("expected close 1000, got {other:?}"),
    }
    v
}

/// Percent-encodes everything but unreserved characters.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
