//! Websocket round-trip timing for `benches/ws-relay.sh` (issue 8: "message
//! relay adds no more than 100 µs p99 over direct"), in Rust so the client
//! and the echo server add as little of their own noise as possible.
//!
//!   ws-rtt echo PORT                    echoes every text/binary message
//!   ws-rtt client URL TOKEN SECONDS     sequential 200-byte text messages
//!
//! The client opens one socket with an SDK-shaped `/connect` query (api_key,
//! authorization, json, stream-auth-type) the gateway accepts, sends one
//! message at a time for SECONDS, checks each echo, and prints
//! "p50_us p99_us p999_us msgs". Loopback only; both run on one thread.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["echo", port] => rt.block_on(echo(port.parse()?)),
        ["client", url, token, seconds] => rt.block_on(client(url, token, seconds.parse()?)),
        _ => Err("usage: ws-rtt echo PORT | ws-rtt client URL TOKEN SECONDS".into()),
    }
}

async fn echo(port: u16) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn client(url: &str, token: &str, seconds: f64) -> Result<()> {
    let json = r#"{"user_id":"bench-user-1","user_details":{"id":"bench-user-1"}}"#;
    let full = format!(
        "{url}?json={}&api_key=bench-key&authorization={}&stream-auth-type=jwt",
        encode(json),
        encode(token)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(full).await?;
    let payload = format!(
        "{}{}",
        r#"{"type":"health.check","connection_id":"bench"}"#,
        " ".repeat(150)
    );
    let mut rtts = Vec::with_capacity(100_000);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline {
        let t0 = Instant::now();
        ws.send(Message::text(payload.clone())).await?;
        loop {
            let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await?
                .ok_or("socket closed")??;
            match got {
                Message::Text(t) if t.as_str() == payload => break,
                Message::Text(_) | Message::Binary(_) => return Err("echo mismatch".into()),
                // Anything else (a ping from the gateway or upstream) is not
                // the echo: keep waiting for it.
                _ => {}
            }
        }
        rtts.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    rtts.sort_by(f64::total_cmp);
    let at = |q: f64| rtts[((rtts.len() as f64 * q) as usize).min(rtts.len() - 1)];
    println!(
        "{:.0} {:.0} {:.0} {}",
        at(0.5),
        at(0.99),
        at(0.999),
        rtts.len()
    );
    Ok(())
}
