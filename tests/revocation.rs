//! Revocation through Redis with `stream-gateway revoke`: a user or a single
//! session is cut off on every instance within the poll interval, for REST
//! and for open websockets (error frame, then close 1000), and lifting it
//! restores access. A real redis-server is started by the test.

mod common;

use common::fake_stream::connect_query;
use common::gateway::run_cli_with_stdin;
use common::redis::RedisServer;
use common::ws::{connect, next_json};
use common::*;
use futures_util::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// The documented bound is one poll (`revocation_poll`, 1 s here) plus a
/// Redis round trip; allow scheduling slack on a busy CI machine.
const BOUND: Duration = Duration::from_millis(2500);

fn config(fake: &FakeStream, redis: &RedisServer) -> String {
    gateway_config(
        &fake.url(),
        "",
        &format!(
            "[redis]\nurl = \"{}\"\nrevocation_poll = \"1s\"",
            redis.url()
        ),
    )
}

fn token(user: &str, iat: i64, jti: &str) -> String {
    hs_token(
        "HS256",
        SESSION_SECRET,
        json!({"sub": user, "iat": iat, "exp": now() + 600, "jti": jti}),
    )
}

async fn status(gw: &Gateway, token: &str) -> u16 {
    get_app(gw, token).await.status().as_u16()
}

fn revoke(gw: &Gateway, args: &[&str], stdin: Option<&str>) -> String {
    let path = gw.config_path();
    let mut all = vec![
        "revoke",
        "--config",
        path.to_str().unwrap(),
        "--tenant",
        "acme",
    ];
    all.extend_from_slice(args);
    let out = run_cli_with_stdin(&all, &[], stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "revoke {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Waits until `gw` answers `want` for `token`; returns how long it took.
async fn until_status(gw: &Gateway, token: &str, want: u16) -> Duration {
    let start = Instant::now();
    loop {
        if status(gw, token).await == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < BOUND, "still not {want} after {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_user_cuts_rest_and_sockets_on_every_instance() {
    let redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let a = Gateway::start(&config(&fake, &redis));
    let b = Gateway::start(&config(&fake, &redis));
    let old = token("alice", now() - 5, "a-1");
    assert_eq!(status(&a, &old).await, 200);
    assert_eq!(status(&b, &old).await, 200);
    let mut ws = connect(&a, &connect_query(API_KEY, &old, "alice")).await;
    assert_eq!(next_json(&mut ws).await["type"], "health.check");
    // Bob is not affected by alice's revocation.
    let bob = token("bob", now() - 5, "b-1");

    let out = revoke(&a, &["--user", "alice"], None);
    assert!(out.contains("revoked user alice"), "{out}");
    let revoked_at = Instant::now();
    let took_a = until_status(&a, &old, 401).await;
    let took_b = until_status(&b, &old, 401).await;
    println!("revocation took {took_a:?} (instance a), {took_b:?} (instance b)");
    assert_gateway_refusal(get_app(&a, &old).await, 401, 5).await;
    assert_eq!(status(&a, &bob).await, 200);

    // The open socket gets Stream's error frame and close 1000, without
    // waiting for traffic from Stream.
    let v = next_json(&mut ws).await;
    assert_eq!(v["error"]["code"], 5, "{v}");
    assert!(
        revoked_at.elapsed() < BOUND,
        "socket closed after {:?}",
        revoked_at.elapsed()
    );
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(f))))) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected close 1000, got {other:?}"),
    }
    // Reconnecting with the revoked session is refused at the handshake.
    fake.clear();
    let mut again = connect(&a, &connect_query(API_KEY, &old, "alice")).await;
    assert_eq!(next_json(&mut again).await["error"]["code"], 5);
    assert!(fake.requests().iter().all(|r| r.user_id() != Some("alice")));

    // A session issued after the revocation works (the user logged in again).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status(&a, &token("alice", now(), "a-2")).await, 200);

    // Lifting it restores the old session everywhere.
    revoke(&a, &["--user", "alice", "--lift"], None);
    until_status(&a, &old, 200).await;
    until_status(&b, &old, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_one_session_by_jti_or_token_leaves_the_others() {
    let redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&config(&fake, &redis));
    let stolen = token("carol", now() - 5, "c-stolen");
    let phone = token("carol", now() - 5, "c-phone");
    // A token without jti is named by its SHA-256.
    let laptop = hs_token(
        "HS256",
        SESSION_SECRET,
        json!({"sub": "carol", "iat": now() - 5, "exp": now() + 600}),
    );
    for t in [&stolen, &phone, &laptop] {
        assert_eq!(status(&gw, t).await, 200);
    }
    revoke(&gw, &["--jti", "c-stolen"], None);
    until_status(&gw, &stolen, 401).await;
    assert_eq!(status(&gw, &phone).await, 200);

    // --token - reads the token from stdin; only its hash is stored.
    revoke(&gw, &["--token", "-"], Some(&laptop));
    until_status(&gw, &laptop, 401).await;
    assert_eq!(status(&gw, &phone).await, 200);
    let stored = redis.command(&["HKEYS", "sg:revoked:{acme}:sessions"]);
    assert!(!stored.contains(&laptop), "the token itself was stored");
    assert!(stored.contains("sha256:"), "{stored}");
    assert!(stored.contains("jti:c-stolen"), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_keeps_the_last_revocations_in_force() {
    let mut redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&config(&fake, &redis));
    let t = token("dave", now() - 5, "d-1");
    revoke(&gw, &["--user", "dave"], None);
    until_status(&gw, &t, 401).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        status(&gw, &t).await,
        401,
        "revocation forgotten while Redis is down"
    );
    assert_eq!(status(&gw, &token("erin", now(), "e-1")).await, 200);
}

#[test]
fn revoke_needs_redis_and_a_known_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        gateway_config("http://127.0.0.1:1", "", "")
            .replace("@LISTEN@", "127.0.0.1:1")
            .replace("@ADMIN@", "127.0.0.1:2"),
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let out = run_cli(
        &["revoke", "--config", p, "--tenant", "acme", "--user", "x"],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [redis] section"));
    let out = run_cli(&["revoke", "--config", p, "--tenant", "acme"], &[]);
    assert!(
        !out.status.success(),
        "revoke without a target was accepted"
    );
}
