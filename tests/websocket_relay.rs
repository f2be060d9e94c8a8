//! The gateway's own `/connect` relay (`src/proxy/relay.rs`) against a raw
//! upstream that answers exactly what a test tells it to: a non-101 answer
//! (with a length, chunked) relayed as it came, Stream closing before it
//! answers or refusing connections (502 in Stream's shape), Stream's first
//! frame arriving in the same packet as its 101, and a silent Stream cut
//! after `websocket_idle_timeout` with the socket's place released.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake_stream::connect_query;
use common::ws::connect;
use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::Message;

/// What the raw upstream does after reading a request head.
#[derive(Clone, Copy)]
enum Then {
    /// Writes the answer and closes.
    AnswerAndClose(&'static [u8]),
    /// Closes without a byte.
    Close,
    /// Completes the upgrade (101 + a first text frame in the same write),
    /// then says nothing and waits for the gateway to close.
    UpgradeThenSilence,
}

/// A raw upstream on loopback: records every request head, answers per
/// [`Then`], counts the connections the gateway closed.
struct RawStream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    closed_by_gateway: Arc<AtomicUsize>,
}

impl RawStream {
    fn start(then: Then) -> RawStream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw upstream");
        let addr = listener.local_addr().expect("local addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicUsize::new(0));
        let (h, c) = (Arc::clone(&heads), Arc::clone(&closed));
        std::thread::spawn(move || {
            // Bounded: the thread ends with the test process.
            for conn in listener.incoming().take(20) {
                let Ok(conn) = conn else { continue };
                let (h, c) = (Arc::clone(&h), Arc::clone(&c));
                std::thread::spawn(move || serve(conn, then, &h, &c));
            }
        });
        RawStream {
            addr,
            heads,
            closed_by_gateway: closed,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn serve(mut conn: TcpStream, then: Then, heads: &Mutex<Vec<String>>, closed: &AtomicUsize) {
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    heads.lock().unwrap().push(head.clone());
    match then {
        Then::AnswerAndClose(answer) => {
            let _ = conn.write_all(answer);
        }
        Then::Close => {}
        Then::UpgradeThenSilence => {
            let key = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| v.trim().to_string())
                })
                .expect("the upgrade carries Sec-WebSocket-Key");
            let first = br#"{"type":"health.check","connection_id":"c1","me":{"id":"alice"}}"#;
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            )
            .into_bytes();
            out.extend_from_slice(&[0x81, first.len() as u8]);
            out.extend_from_slice(first);
            conn.write_all(&out).unwrap();
            // Silence; the gateway is expected to close this connection.
            loop {
                match conn.read(&mut chunk) {
                    Ok(0) => {
                        closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }
    }
}

/// A websocket upgrade of `/connect` for alice, as raw HTTP.
fn upgrade_head(session: &str) -> String {
    format!(
        "GET /connect?{} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        connect_query(API_KEY, session, "alice")
    )
}

/// The upgrade reached the raw upstream with the minted Stream token, never
/// the session.
fn assert_forwarded_with_minted_token(up: &RawStream, session: &str) {
    let heads = up.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = &heads[0];
    assert!(head.starts_with("GET /connect?"), "{head}");
    assert!(!head.contains(session), "session token forwarded: {head}");
    let query = head.lines().next().unwrap().split(' ').nth(1).unwrap();
    let minted = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("authorization="))
        .expect("authorization in the forwarded query");
    assert_eq!(jwt_claims(minted)["user_id"], "alice", "{head}");
}

#[test]
fn a_non_101_answer_is_relayed_as_it_came() {
    const BODY: &str = r#"{"code":43,"message":"from upstream","StatusCode":401,"duration":"0s","more_info":"","details":[]}"#;
    static ANSWER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let answer = ANSWER.get_or_init(|| {
        format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nX-Fake-Upstream: raw\r\nContent-Length: {}\r\n\r\n{BODY}",
            BODY.len()
        )
        .into_bytes()
    });
    let up = RawStream::start(Then::AnswerAndClose(answer));
    let gw = Gateway::start(&gateway_config(&up.url(), "", ""));
    let session = session_for("alice");
    let (status, headers, body) = raw_request(gw.listen, &upgrade_head(&session));
    assert_eq!(status, 401);
    assert_eq!(String::from_utf8_lossy(&body), BODY);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("x-fake-upstream").as_deref(), Some("raw"));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert!(header("x-request-id").is_some(), "{headers:?}");
    assert_forwarded_with_minted_token(&up, &session);
}

#[test]
fn a_chunked_non_101_answer_is_decoded_and_relayed() {
    let up = RawStream::start(Then::AnswerAndClose(
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    ));
    let gw = Gateway::start(&gateway_config(&up.url(), "", ""));
    let session = session_for("alice");
    let (status, headers, body) = raw_request(gw.listen, &upgrade_head(&session));
    assert_eq!(status, 503);
    assert_eq!(body, b"hello world");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-length" && v == "11"),
        "{headers:?}"
    );
    assert!(
        !headers.iter().any(|(k, _)| k == "transfer-encoding"),
        "{headers:?}"
    );
    assert_forwarded_with_minted_token(&up, &session);
}

fn assert_502_in_stream_shape(status: u16, body: &[u8]) {
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(body));
    let v: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
    assert_eq!(v["StatusCode"], 502, "{v}");
    assert!(v["code"].is_i64() && v["message"].is_string(), "{v}");
    assert!(v["more_info"].is_string() && v["details"].is_array(), "{v}");
}

#[test]
fn stream_closing_before_it_answers_gives_502() {
    let up = RawStream::start(Then::Close);
    let gw = Gateway::start(&gateway_config(&up.url(), "", ""));
    let session = session_for("alice");
    let (status, _, body) = raw_request(gw.listen, &upgrade_head(&session));
    assert_502_in_stream_shape(status, &body);
    assert_forwarded_with_minted_token(&up, &session);
}

#[test]
fn stream_refusing_connections_gives_502_quickly() {
    // A port nobody listens on.
    let dead = gateway::free_addr();
    let gw = Gateway::start(&gateway_config(&format!("http://{dead}"), "", ""));
    let started = Instant::now();
    let (status, _, body) = raw_request(gw.listen, &upgrade_head(&session_for("alice")));
    assert_502_in_stream_shape(status, &body);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Stream's first frame in the same packet as its 101 reaches the client;
/// a Stream that then says nothing for `websocket_idle_timeout` (40 s, the
/// least allowed) has its socket cut, both connections closed, and the
/// user's place under the cap released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_cut_after_the_idle_timeout_and_the_place_released() {
    let up = RawStream::start(Then::UpgradeThenSilence);
    let config = gateway_config(
        &up.url(),
        "[tenants.limits]\nmax_connections_per_user = 1",
        "",
    )
    .replace(
        "read_timeout = \"5s\"",
        "read_timeout = \"5s\"\nwebsocket_idle_timeout = \"40s\"",
    );
    let gw = Gateway::start(&config);
    let session = session_for("alice");
    let query = connect_query(API_KEY, &session, "alice");
    let mut ws = connect(&gw, &query).await;
    let opened = Instant::now();
    let first = common::ws::next_json(&mut ws).await;
    assert_eq!(first["type"], "health.check", "{first}");
    assert_eq!(first["me"]["id"], "alice", "{first}");
    // While it is open the cap (1) is taken: a second socket is refused (71).
    let second = connect(&gw, &query).await;
    common::ws::assert_refused(second, 71, 429).await;
    // Then nothing more comes; the gateway ends the socket after ~40 s.
    let end = tokio::time::timeout(Duration::from_secs(70), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    let took = opened.elapsed();
    assert!(end.is_ok(), "the silent socket was not cut within 70 s");
    assert!(
        took >= Duration::from_secs(38) && took < Duration::from_secs(60),
        "cut after {took:?}, expected about 40 s"
    );
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(100),
        "the gateway closes its connection to Stream",
        || async { up.closed_by_gateway.load(Ordering::SeqCst) == 1 },
    )
    .await;
    // The place is free again: a new socket opens.
    let mut again = connect(&gw, &query).await;
    assert_eq!(
        common::ws::next_json(&mut again).await["type"],
        "health.check"
    );
}
