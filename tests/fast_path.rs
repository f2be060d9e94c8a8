//! The fast path (`src/proxy/fast.rs`): plain HTTP/1.1 requests (no body,
//! or a `Content-Length` body of at most 64 KiB) served by the gateway's
//! own loop. Counted in
//! `stream_gateway_fast_path_requests_total`, so each test checks which
//! path served what. The rest of the suite (refusals, normalisation,
//! audit, limits, faults...) runs its GETs through this path too.
//!
//! Here: a keep-alive connection handed to pingora at its first request
//! with a chunked body; pipelined requests; `fast_path = false`; a slow second head
//! cut at `client_header_timeout`; an idle keep-alive connection closed when
//! the server stops; and, against a raw upstream, chunked and
//! close-delimited answers, upstream keep-alive reuse, a pooled connection
//! that died, and an answer cut short.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

async fn fast_count(gw: &Gateway) -> f64 {
    metric(gw, "stream_gateway_fast_path_requests_total").await
}

async fn metric(gw: &Gateway, line_start: &str) -> f64 {
    let text = metrics_text(gw).await;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A response read off a raw connection: status, lower-case headers, body
/// (by Content-Length, or chunked and decoded).
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response from `s`, keeping what follows it in `buf`.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Resp {
    let mut chunk = [0u8; 8192];
    let mut fill = |s: &mut TcpStream, buf: &mut Vec<u8>| {
        let n = s.read(&mut chunk).expect("read from the gateway");
        assert!(
            n > 0,
            "the gateway closed: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        fill(s, buf);
    };
    let text = String::from_utf8_lossy(&buf[..end]).to_string();
    buf.drain(..end + 4);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body = if let Some(len) = get("content-length") {
        let len: usize = len.parse().unwrap();
        while buf.len() < len {
            fill(s, buf);
        }
        buf.drain(..len).collect()
    } else if get("transfer-encoding").is_some() {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                fill(s, buf);
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&buf[..line_end])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap();
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(s, buf);
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
            if size == 0 {
                break body;
            }
        }
    } else {
        Vec::new()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn connect(gw: &Gateway) -> TcpStream {
    let s = TcpStream::connect(gw.listen).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn get_head(token: &str, id: &str) -> String {
    format!(
        "GET /app?api_key={API_KEY} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nX-Request-Id: {id}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_goes_to_pingora_at_its_first_chunked_request() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(&fake.url(), "", ""));
    let alice = session_for("alice");
    let mut s = connect(&gw);
    let mut buf = Vec::new();
    s.write_all(get_head(&alice, "one").as_bytes()).unwrap();
    let r = read_response(&mut s, &mut buf);
    assert_eq!((r.status, r.header("x-request-id")), (200, Some("one")));
    assert_eq!(fast_count(&gw).await, 1.0);

    // A small JSON body with a Content-Length: still the fast path's.
    let post = |body: &str, framing: &str| {
        format!(
            "POST /channels/messaging/general/message?api_key={API_KEY} HTTP/1.1\r\nHost: gw\r\n\
             Authorization: {alice}\r\nContent-Type: application/json\r\n{framing}\r\n{body}"
        )
    };
    let body = r#"{"message":{"text":"hi"}}"#;
    let length = format!("Content-Length: {}\r\n", body.len());
    s.write_all(post(body, &length).as_bytes()).unwrap();
    let r = read_response(&mut s, &mut buf);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(fast_count(&gw).await, 2.0);
    // A chunked body: pingora's.
    let body = r#"{"message":{"text":"chunked"}}"#;
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    s.write_all(post(&chunked, "Transfer-Encoding: chunked\r\n").as_bytes())
        .unwrap();
    let r = read_response(&mut s, &mut buf);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    // The same connection, now pingora's: a GET is served there too.
    s.write_all(get_head(&alice, "four").as_bytes()).unwrap();
    let r = read_response(&mut s, &mut buf);
    assert_eq!((r.status, r.header("x-request-id")), (200, Some("four")));
    assert_eq!(
        fast_count(&gw).await,
        2.0,
        "the fast path served the first two requests only"
    );

    // Stream got all four, each with the minted token for alice (the fake
    // checks it as Stream does) and never the session.
    let got = fake.wait_for_requests(4, Duration::from_secs(5));
    assert_eq!(got.len(), 4);
    for r in &got {
        assert_eq!(r.user_id(), Some("alice"));
        assert_eq!(r.header("stream-auth-type"), Some("jwt"));
        assert_ne!(r.header("authorization"), Some(alice.as_str()));
    }
    assert_eq!(got[1].body_json()["message"]["text"], "hi");
    assert_eq!(got[2].body_json()["message"]["text"], "chunked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(&fake.url(), "", ""));
    let alice = session_for("alice");
    let mut s = connect(&gw);
    let mut buf = Vec::new();
    // Three requests in one write: a refusal (server-side route) between
    // two forwarded ones.
    let refused = format!(
        "GET /channeltypes?api_key={API_KEY} HTTP/1.1\r\nHost: gw\r\nAuthorization: {alice}\r\nX-Request-Id: two\r\n\r\n"
    );
    let all = format!(
        "{}{refused}{}",
        get_head(&alice, "one"),
        get_head(&alice, "three")
    );
    s.write_all(all.as_bytes()).unwrap();
    let answers: Vec<Resp> = (0..3).map(|_| read_response(&mut s, &mut buf)).collect();
    let got: Vec<(u16, Option<&str>)> = answers
        .iter()
        .map(|r| (r.status, r.header("x-request-id")))
        .collect();
    assert_eq!(
        got,
        [(200, Some("one")), (403, Some("two")), (200, Some("three"))]
    );
    let refusal: serde_json::Value = serde_json::from_slice(&answers[1].body).unwrap();
    assert_eq!(refusal["code"], 17);
    assert_eq!(answers[1].header("content-type"), Some("application/json"));
    assert_eq!(fast_count(&gw).await, 3.0);
    let forwarded = fake.wait_for_requests(2, Duration::from_secs(5));
    assert_eq!(
        forwarded.len(),
        2,
        "the refused request never reached Stream"
    );
    assert!(forwarded.iter().all(|r| r.path.starts_with("/app")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fast_path_off_every_request_goes_through_pingora() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let config = gateway_config(&fake.url(), "", "").replacen(
        "threads = 1\n",
        "threads = 1\nfast_path = false\n",
        1,
    );
    let gw = Gateway::start(&config);
    let resp = get_app(&gw, &session_for("alice")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(fast_count(&gw).await, 0.0);
    assert_eq!(fake.wait_for_requests(1, Duration::from_secs(5)).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_second_head_on_a_keep_alive_connection_is_cut() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let config = gateway_config(&fake.url(), "", "").replacen(
        "threads = 1\n",
        "threads = 1\nclient_header_timeout = \"1s\"\n",
        1,
    );
    let gw = Gateway::start(&config);
    let alice = session_for("alice");
    let mut s = connect(&gw);
    let mut buf = Vec::new();
    s.write_all(get_head(&alice, "one").as_bytes()).unwrap();
    assert_eq!(read_response(&mut s, &mut buf).status, 200);
    // Idle longer than the head timeout: an idle keep-alive connection is
    // not a slow head.
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let mut closed_at = None;
    for b in get_head(&alice, "two").bytes() {
        if s.write_all(&[b]).is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).unwrap_or(0);
    let closed_at = closed_at.unwrap_or(started.elapsed());
    assert_eq!(
        n,
        0,
        "no answer to a slow head: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        closed_at < Duration::from_secs(4),
        "cut at {closed_at:?}, the limit is 1 s"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "the slow request was not forwarded"
    );
    assert_eq!(
        metric(&gw, "stream_gateway_slow_request_heads_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_when_the_server_stops() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let config = gateway_config(&fake.url(), "", "").replacen(
        "threads = 1\n",
        "threads = 1\ngrace_period = \"5s\"\ngraceful_shutdown_timeout = \"1s\"\n",
        1,
    );
    let mut gw = Gateway::start(&config);
    let alice = session_for("alice");
    // Two requests, so the connection has waited for a next head (and seen
    // the server's stop signal not fire) more than once.
    let mut s = connect(&gw);
    let mut buf = Vec::new();
    for id in ["one", "two"] {
        s.write_all(get_head(&alice, id).as_bytes()).unwrap();
        assert_eq!(read_response(&mut s, &mut buf).status, 200);
    }
    assert_eq!(fast_count(&gw).await, 2.0);
    let sent = Instant::now();
    gw.signal("TERM");
    // Idle between requests, it is closed as soon as the server starts to
    // stop, not kept through the grace period (5 s, which lets requests in
    // flight finish) until the runtime is dropped.
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).unwrap_or(0);
    let closed = sent.elapsed();
    assert_eq!(
        n,
        0,
        "nothing more is sent: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        closed < Duration::from_secs(3),
        "closed {closed:?} after SIGTERM"
    );
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("still running 15 s after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

/// A raw upstream that answers each request with `answer`; `close_after`
/// closes each connection after that many answers. Counts connections and requests.
struct RawUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl RawUpstream {
    fn start(answer: &'static [u8], close_after: usize) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw upstream");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (c, h) = (Arc::clone(&connections), Arc::clone(&heads));
        std::thread::spawn(move || {
            // Bounded: the thread ends with the test process.
            for conn in listener.incoming().take(50) {
                let Ok(mut conn) = conn else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let h = Arc::clone(&h);
                std::thread::spawn(move || {
                    conn.set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    for _ in 0..close_after {
                        let end = loop {
                            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break p;
                            }
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        h.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[..end]).to_string());
                        buf.drain(..end + 4);
                        if conn.write_all(answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RawUpstream {
            addr,
            connections,
            heads,
        }
    }
}

fn raw_gateway(up: &RawUpstream) -> Gateway {
    Gateway::start(&gateway_config(&format!("http://{}", up.addr), "", ""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_answers_are_relayed_and_the_upstream_connection_reused() {
    static CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nX-RateLimit-Remaining: 9\r\n\r\n4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n";
    let up = RawUpstream::start(CHUNKED, 100);
    let gw = raw_gateway(&up);
    let alice = session_for("alice");
    let mut s = connect(&gw);
    let mut buf = Vec::new();
    for id in ["one", "two", "three"] {
        s.write_all(get_head(&alice, id).as_bytes()).unwrap();
        let r = read_response(&mut s, &mut buf);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"Wikipedia");
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some("9"),
            "Stream's headers pass"
        );
        assert_eq!(r.header("x-request-id"), Some(id));
    }
    assert_eq!(fast_count(&gw).await, 3.0);
    assert_eq!(up.heads.lock().unwrap().len(), 3);
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "one upstream connection, reused after each complete chunked answer"
    );
    let head = up.heads.lock().unwrap()[0].clone();
    assert!(head.contains("stream-auth-type: jwt"), "{head}");
    assert!(!head.contains(&alice), "the session went upstream: {head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_delimited_answer_closes_the_client_connection_too() {
    static UNTIL_CLOSE: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello until close";
    let up = RawUpstream::start(UNTIL_CLOSE, 1);
    let gw = raw_gateway(&up);
    let mut s = connect(&gw);
    s.write_all(get_head(&session_for("alice"), "one").as_bytes())
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read to the end");
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nhello until close"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_upstream_closed_is_replaced() {
    // Each upstream connection answers one request (keep-alive advertised)
    // and closes: the next request finds a dead pooled connection.
    static ONE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let up = RawUpstream::start(ONE, 1);
    let gw = raw_gateway(&up);
    let alice = session_for("alice");
    let mut s = connect(&gw);
    let mut buf = Vec::new();
    for id in ["one", "two", "three"] {
        s.write_all(get_head(&alice, id).as_bytes()).unwrap();
        let r = read_response(&mut s, &mut buf);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]), "{id}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(up.heads.lock().unwrap().len(), 3);
    assert_eq!(up.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cut_short_closes_the_client_connection() {
    static CUT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this";
    let up = RawUpstream::start(CUT, 1);
    let gw = raw_gateway(&up);
    let mut s = connect(&gw);
    let started = Instant::now();
    s.write_all(get_head(&session_for("alice"), "one").as_bytes())
        .unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("only this"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed promptly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_and_origins_are_handled_on_the_fast_path() {
    const APP: &str = "https://chat.example.com";
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(
        &fake.url(),
        &format!("allowed_origins = [\"{APP}\"]"),
        "",
    ));
    let alice = session_for("alice");
    let mut s = connect(&gw);
    let mut buf = Vec::new();
    // A preflight: answered by the gateway, never forwarded.
    s.write_all(
        format!(
            "OPTIONS /channels/messaging/general/message?api_key={API_KEY} HTTP/1.1\r\nHost: gw\r\n\
             Origin: {APP}\r\nAccess-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: authorization, content-type\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let r = read_response(&mut s, &mut buf);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert!(r.header("access-control-allow-methods").is_some());
    // A request from the allowed origin: forwarded, the answer carries CORS.
    let with_origin = |origin: &str, id: &str| {
        format!(
            "GET /app?api_key={API_KEY} HTTP/1.1\r\nHost: gw\r\nAuthorization: {alice}\r\n\
             Origin: {origin}\r\nX-Request-Id: {id}\r\n\r\n"
        )
    };
    s.write_all(with_origin(APP, "two").as_bytes()).unwrap();
    let r = read_response(&mut s, &mut buf);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("x-request-id"), Some("two"));
    // Another origin: refused (403 code 17 in Stream's shape), not forwarded.
    s.write_all(with_origin("https://evil.example", "three").as_bytes())
        .unwrap();
    let r = read_response(&mut s, &mut buf);
    assert_eq!(r.status, 403);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["StatusCode"], 403);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(fast_count(&gw).await, 3.0, "all three on the fast path");
    let forwarded = fake.wait_for_requests(1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(forwarded.len(), 1);
    assert_eq!(
        fake.requests().len(),
        1,
        "only the allowed GET reached Stream"
    );
}
