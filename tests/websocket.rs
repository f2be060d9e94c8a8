//! Websocket `/connect` through the built gateway to the fake Stream: the
//! exchange, identity binding, Stream-style refusals (error frame + close
//! 1000), connection caps and their release, session expiry.

mod common;

use common::fake_stream::connect_query;
use common::ws::{assert_refused, connect, next_json, urlencode};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn setup(tenant_extra: &str) -> (FakeStream, Gateway) {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(&fake.url(), tenant_extra, ""));
    (fake, gw)
}

fn connect_records(fake: &FakeStream) -> Vec<Recorded> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path == "/connect")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_gets_health_check_and_stream_gets_the_minted_token() {
    let (fake, gw) = setup("");
    let session = session_for("alice");
    let mut ws = connect(&gw, &connect_query(API_KEY, &session, "alice")).await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["type"], "health.check");
    assert!(first["connection_id"].is_string());
    assert_eq!(first["me"]["id"], "alice");
    let reqs = connect_records(&fake);
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert!(
        matches!(r.auth, Ok(StreamAuth::User { ref user_id, .. }) if user_id == "alice"),
        "{:?}",
        r.auth
    );
    assert_eq!(r.query_all("api_key"), [API_KEY]);
    assert_eq!(r.query_all("stream-auth-type"), ["jwt"]);
    let minted = r.query_param("authorization").unwrap();
    assert_ne!(minted, session);
    assert_eq!(jwt_claims(minted)["user_id"], "alice");
    assert!(
        !r.raw_query.clone().unwrap_or_default().contains(&session),
        "session token forwarded"
    );
    for (k, v) in &r.headers {
        assert!(!v.contains(&session), "session token in header {k}");
    }
    // frames flow both ways: echo, and the SDK's health check
    ws.send(Message::Text(r#"{"type":"custom","n":1}"#.into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await, json!({"type": "custom", "n": 1}));
    ws.send(Message::Text(
        r#"[{"type":"health.check","client_id":"alice--1"}]"#.into(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "health.check");
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_user_token_never_reaches_stream() {
    let (fake, gw) = setup("");
    let session = session_for("alice");
    let json = json!({"user_id": "alice", "user_details": {"id": "alice"}, "user_token": session})
        .to_string();
    let q = format!(
        "json={}&api_key={API_KEY}&authorization={session}&stream-auth-type=jwt",
        urlencode(&json)
    );
    let mut ws = connect(&gw, &q).await;
    assert_eq!(next_json(&mut ws).await["type"], "health.check");
    let r = &connect_records(&fake)[0];
    let forwarded: serde_json::Value =
        serde_json::from_str(r.query_param("json").unwrap()).unwrap();
    assert!(forwarded.get("user_token").is_none(), "{forwarded}");
    assert!(!r.raw_query.clone().unwrap().contains(&session));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_an_error_frame_then_close_1000() {
    let (fake, gw) = setup("");
    let expired = hs_token(
        "HS256",
        SESSION_SECRET,
        json!({"sub": "alice", "exp": now() - 5}),
    );
    let bad_sig = hs_token("HS256", "wrong", json!({"sub": "alice", "exp": now() + 60}));
    let good = session_for("alice");
    let cases: Vec<(String, i64, i64)> = vec![
        (connect_query(API_KEY, &expired, "alice"), 40, 401),
        (connect_query(API_KEY, &bad_sig, "alice"), 43, 401),
        (connect_query(API_KEY, "garbage", "alice"), 5, 401),
        (connect_query("unknown-key", &good, "alice"), 2, 401),
        (connect_query(API_KEY, &good, "mallory"), 17, 403),
        (
            format!("json=not-json&api_key={API_KEY}&authorization={good}&stream-auth-type=jwt"),
            4,
            400,
        ),
        (
            format!("api_key={API_KEY}&authorization={good}&stream-auth-type=jwt"),
            4,
            400,
        ),
        (
            format!(
                "json={}&api_key={API_KEY}&authorization={good}",
                urlencode(&json!({"user_id": "alice", "pad": "x".repeat(20_000)}).to_string())
            ),
            4,
            400,
        ),
    ];
    for (q, code, status) in cases {
        let ws = connect(&gw, &q).await;
        assert_refused(ws, code, status).await;
    }
    assert!(
        connect_records(&fake).is_empty(),
        "refused sockets reached Stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_cap_refuses_with_71_and_is_released_when_the_client_closes() {
    let (fake, gw) = setup("[tenants.limits]\nmax_connections_per_user = 1");
    let q = connect_query(API_KEY, &session_for("alice"), "alice");
    let mut first = connect(&gw, &q).await;
    assert_eq!(next_json(&mut first).await["type"], "health.check");
    assert_refused(connect(&gw, &q).await, 71, 429).await;
    // another user is not affected
    let mut bob = connect(&gw, &connect_query(API_KEY, &session_for("bob"), "bob")).await;
    assert_eq!(next_json(&mut bob).await["type"], "health.check");
    first.close(None).await.unwrap();
    drop(first);
    assert_eq!(
        fake.wait_for_open_sockets(1, Duration::from_secs(10)),
        1,
        "alice's upstream socket closed"
    );
    let mut again = connect_until_open(&gw, &q).await;
    assert_eq!(again["type"], "health.check");
    let _ = &mut again;
}

/// Connects until the first frame is not a refusal (the release of a cap
/// slot races with the client seeing its own close), with a deadline.
async fn connect_until_open(gw: &Gateway, q: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut ws = connect(gw, q).await;
        let v = next_json(&mut ws).await;
        if v.get("error").is_none() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cap never released: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_cap_is_released_when_stream_closes_the_socket() {
    let (_fake, gw) = setup("[tenants.limits]\nmax_connections_per_user = 1");
    let s = session_for("alice");
    let closing = json!({"user_id": "alice", "fake_close_after_ms": 300}).to_string();
    let q = format!(
        "json={}&api_key={API_KEY}&authorization={s}&stream-auth-type=jwt",
        urlencode(&closing)
    );
    let mut ws = connect(&gw, &q).await;
    assert_eq!(next_json(&mut ws).await["type"], "health.check");
    // Stream closes after 300 ms; the client sees the close
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no close")
        {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        }
    }
    let v = connect_until_open(&gw, &connect_query(API_KEY, &s, "alice")).await;
    assert_eq!(v["type"], "health.check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_cap_counts_every_user() {
    let (_fake, gw) = setup("[tenants.limits]\nmax_connections = 2");
    let mut held = Vec::new();
    for u in ["a", "b"] {
        let mut ws = connect(&gw, &connect_query(API_KEY, &session_for(u), u)).await;
        assert_eq!(next_json(&mut ws).await["type"], "health.check");
        held.push(ws);
    }
    assert_refused(
        connect(&gw, &connect_query(API_KEY, &session_for("c"), "c")).await,
        71,
        429,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_socket_is_closed_with_code_40_when_its_session_expires() {
    let (_fake, gw) = setup("");
    let exp = now() + 2;
    let s = hs_token("HS256", SESSION_SECRET, json!({"sub": "alice", "exp": exp}));
    let ticking = json!({"user_id": "alice", "fake_push_every_ms": 200}).to_string();
    let q = format!(
        "json={}&api_key={API_KEY}&authorization={s}&stream-auth-type=jwt",
        urlencode(&ticking)
    );
    let mut ws = connect(&gw, &q).await;
    assert_eq!(next_json(&mut ws).await["type"], "health.check");
    let v = loop {
        let v = next_json(&mut ws).await;
        if v.get("error").is_some() {
            break v;
        }
        assert_eq!(v["type"], "fake.tick");
        assert!(now() <= exp + 3, "still receiving events well after expiry");
    };
    assert_eq!(v["error"]["code"], 40);
    assert!(now() > exp);
    match tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no close")
    {
        // 1001, not 1000: the SDK reconnects (and refreshes) on anything
        // but 1000, and treats 1000 as final.
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
}

#[test]
fn upgrade_on_a_rest_route_is_refused_and_not_forwarded() {
    let (fake, gw) = setup("");
    let s = session_for("alice");
    let (status, headers, body) = raw_request(
        gw.listen,
        &format!(
            "GET /app?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\nAuthorization: {s}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
        ),
    );
    assert_eq!(status, 101);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "sec-websocket-accept" && v == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(r#""code":4"#), "{text}");
    assert!(
        body.ends_with(&[0x88, 2, 0x03, 0xE8]),
        "close 1000 at the end"
    );
    assert!(fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sockets_work_only_where_the_tenant_allows_them() {
    let anon_json = json!({"user_id": "5b1c1f2e-anon", "user_details": {"id": "5b1c1f2e-anon"}});
    let q = common::fake_stream::connect_query_with(API_KEY, "", "anonymous", &anon_json);
    let (fake, gw) = setup("allow_anonymous = true");
    let mut ws = connect(&gw, &q).await;
    assert_eq!(next_json(&mut ws).await["type"], "health.check");
    let r = &connect_records(&fake)[0];
    assert_eq!(r.auth, Ok(StreamAuth::Anonymous));
    assert_eq!(r.query_all("stream-auth-type"), ["anonymous"]);

    let (closed_fake, closed) = setup("");
    assert_refused(connect(&closed, &q).await, 5, 401).await;
    assert!(connect_records(&closed_fake).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_cap_is_released_when_the_client_vanishes_without_a_close() {
    let (fake, gw) = setup("[tenants.limits]\nmax_connections_per_user = 1");
    let q = connect_query(API_KEY, &session_for("alice"), "alice");
    let mut ws = connect(&gw, &q).await;
    assert_eq!(next_json(&mut ws).await["type"], "health.check");
    assert_eq!(fake.wait_for_open_sockets(1, Duration::from_secs(10)), 1);
    // Drop the TCP connection without a websocket close handshake.
    drop(ws);
    assert_eq!(
        fake.wait_for_open_sockets(0, Duration::from_secs(10)),
        0,
        "upstream socket not closed"
    );
    let v = connect_until_open(&gw, &q).await;
    assert_eq!(v["type"], "health.check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_socket_is_closed_with_code_40_soon_after_its_session_expires() {
    // No traffic from Stream at all after the health check: the socket sweep
    // (every second) closes it, not the next health check 30 s later.
    let (_fake, gw) = setup("");
    let exp = now() + 2;
    let s = hs_token("HS256", SESSION_SECRET, json!({"sub": "alice", "exp": exp}));
    let mut ws = connect(&gw, &connect_query(API_KEY, &s, "alice")).await;
    assert_eq!(next_json(&mut ws).await["type"], "health.check");
    let v = next_json(&mut ws).await;
    assert_eq!(v["error"]["code"], 40, "{v}");
    let late = now() - exp;
    assert!((0..=3).contains(&late), "closed {late} s after expiry");
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(f))))) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
}
