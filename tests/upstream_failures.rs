//! The built gateway in front of a broken or slow upstream, and its admin
//! listener. A refused upstream connection answers 502 (Stream code -1), an
//! upstream that closes without answering 502, one slower than `read_timeout`
//! 504 (code 23, retryable in Stream's SDKs), as does one whose connection is
//! not accepted within `connect_timeout`, each in Stream's error shape and
//! quickly; the gateway keeps serving afterwards. The admin listener answers
//! `/healthz`, `/readyz`, 404 for other paths and 405 for other methods.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::gateway::free_addr;
use common::*;
use serde_json::json;

const API_KEY: &str = "upstream-test-key";
const STREAM_SECRET: &str = "upstream-test-stream-secret";
const SESSION_SECRET: &str = "upstream-test-session-secret";

/// One tenant with an HS256 session secret, proxying to `upstream` (http://...).
fn config(upstream: &str, connect_timeout: &str, read_timeout: &str) -> String {
    format!(
        r#"
[server]
listen = "@LISTEN@"
admin_listen = "@ADMIN@"

[upstream]
url = "{upstream}"
connect_timeout = "{connect_timeout}"
read_timeout = "{read_timeout}"

[[tenants]]
id = "t"
api_key = "{API_KEY}"
api_secret = "{STREAM_SECRET}"

[tenants.session]
type = "jwt"
algorithms = ["HS256"]
secret = "{SESSION_SECRET}"
"#
    )
}

/// A valid session for alice, as the app would issue it.
fn session() -> String {
    hs_token(
        "HS256",
        SESSION_SECRET,
        json!({"sub": "alice", "exp": now() + 600}),
    )
}

/// `GET /channels/messaging/general` for alice: a client route that passes auth.
fn get_channel(gw: &Gateway) -> reqwest::RequestBuilder {
    client()
        .get(format!(
            "{}/channels/messaging/general?api_key={API_KEY}",
            gw.url()
        ))
        .header("authorization", session())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_gets_502_in_stream_shape() {
    let dead = free_addr();
    let gw = Gateway::start(&config(&format!("http://{dead}"), "1s", "5s"));

    let started = Instant::now();
    let resp = get_channel(&gw).send().await.expect("send");
    let took = started.elapsed();
    let body = assert_gateway_refusal(resp, 502, -1).await;
    assert!(
        took < Duration::from_secs(5),
        "a refused connection took {took:?} to answer"
    );
    assert_eq!(body["more_info"], stream_gateway::refusal::MORE_INFO);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains(&dead.to_string()),
        "the upstream address leaked: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connect_slower_than_connect_timeout_gets_504() {
    // A listener whose accept queue is full: the kernel drops further SYNs,
    // so a connection attempt hangs (no refusal) until the gateway gives up.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let listener = socket.listen(0).expect("listen");
    let full = listener.local_addr().expect("local_addr");
    let _queued = std::net::TcpStream::connect(full).expect("the one queued connection");
    let gw = Gateway::start(&config(&format!("http://{full}"), "1s", "5s"));

    let started = Instant::now();
    let resp = get_channel(&gw).send().await.expect("send");
    let took = started.elapsed();
    let body = assert_gateway_refusal(resp, 504, 23).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "connect_timeout = 1s but the 504 took {took:?}"
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains(&full.to_string()),
        "the upstream address leaked: {body}"
    );
    drop(listener);
}

/// Accepts connections, reads each request head, then closes without a byte.
fn start_hang_up_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            drop(stream);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_hanging_up_without_answer_gets_502() {
    let upstream = start_hang_up_upstream();
    let gw = Gateway::start(&config(&format!("http://{upstream}"), "1s", "5s"));

    let started = Instant::now();
    let resp = get_channel(&gw).send().await.expect("send");
    let took = started.elapsed();
    assert_gateway_refusal(resp, 502, -1).await;
    assert!(
        took < Duration::from_secs(5),
        "a hung-up connection took {took:?} to answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_slower_than_read_timeout_gets_504_and_gateway_keeps_serving() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&config(&fake.url(), "1s", "1s"));

    let started = Instant::now();
    let resp = get_channel(&gw)
        .header("x-fake-delay-ms", "3000")
        .send()
        .await
        .expect("send");
    let took = started.elapsed();
    assert_gateway_refusal(resp, 504, 23).await;
    assert!(
        took < Duration::from_millis(2500),
        "read_timeout = 1s but the 504 took {took:?}"
    );
    // It did reach the upstream (and was accepted there), once: no retry.
    let reqs = fake.wait_for_requests(1, Duration::from_secs(2));
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].user_id(), Some("alice"), "{:?}", reqs[0].auth);

    // The next request is served normally.
    let resp = get_channel(&gw).send().await.expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("x-fake-upstream")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = resp.json().await.expect("json body");
    assert_eq!(body["fake"]["user_id"], "alice");
    assert_eq!(
        fake.requests().len(),
        2,
        "exactly one more upstream request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_answers_health_and_readiness() {
    let gw = Gateway::start(&config(&format!("http://{}", free_addr()), "1s", "1s"));
    for path in ["/healthz", "/readyz"] {
        let resp = client()
            .get(format!("{}{path}", gw.admin_url()))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200, "GET {path}");
        let body: serde_json::Value = resp.json().await.expect("json body");
        assert!(body["status"].is_string(), "GET {path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_unknown_path_is_404_and_other_methods_are_405() {
    let gw = Gateway::start(&config(&format!("http://{}", free_addr()), "1s", "1s"));
    let admin = gw.admin_url();

    for path in ["/nope", "/metrics/extra", "/healthz/extra"] {
        let resp = client()
            .get(format!("{admin}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 404, "GET {path}");
    }
    let resp = client()
        .post(format!("{admin}/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 405, "POST /healthz");
    let resp = client()
        .delete(format!("{admin}/readyz"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 405, "DELETE /readyz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_logs_never_contain_tokens() {
    // pingora logs failed requests with a request summary; its default is the
    // request line with the query, where session tokens travel.
    let dead = free_addr();
    let gw = Gateway::start(&config(&format!("http://{dead}"), "1s", "5s"));
    let token = session();
    let resp = client()
        .post(format!(
            "{}/channels/messaging/general?api_key={API_KEY}&authorization={token}",
            gw.url()
        ))
        // A chunked body: pingora's proxy loop takes it, not the fast path.
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::once(
            async { Ok::<_, std::io::Error>(json!({"data": {"name": "x"}}).to_string()) },
        )))
        .send()
        .await
        .expect("send");
    assert_gateway_refusal(resp, 502, -1).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.stderr().contains("Fail to proxy") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = gw.stderr();
    assert!(
        log.contains("Fail to proxy"),
        "the failure was not logged: {log}"
    );
    assert!(log.contains("POST /channels/messaging/general"), "{log}");
    // The same over the fast path (a GET without a body).
    let resp = client()
        .get(format!(
            "{}/channels/messaging/general?api_key={API_KEY}&authorization={token}",
            gw.url()
        ))
        .send()
        .await
        .expect("send");
    assert_gateway_refusal(resp, 502, -1).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = "upstream request failed: GET /channels/messaging/general";
    while !gw.stderr().contains(line) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = gw.stderr();
    assert!(
        log.contains(line),
        "the fast path's failure was not logged: {log}"
    );
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "a token reached the log: {log}");
    assert!(!log.contains("authorization="), "{log}");
}
