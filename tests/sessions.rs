//! Session sources end to end through the built gateway: JWKS (fake identity
//! provider with real RSA/EC keys), opaque sessions in a real redis-server,
//! session cookies with the origin check, and the tenant claim. Each refusal
//! checks the client's answer and that nothing reached the fake Stream.

mod common;

use common::fake_idp::{jwks, FakeIdp, IdpMode, TestKey};
use common::redis::RedisServer;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use std::time::{Duration, Instant};

/// A one-tenant config (`API_KEY`) with `session` as its [tenants.session].
fn config(upstream: &str, session: &str, top_extra: &str) -> String {
    gateway_config_with_session(upstream, "", session, top_extra)
}

async fn get(gw: &Gateway, token: &str) -> reqwest::Response {
    get_app(gw, token).await
}

/// The user Stream saw in the last forwarded request (its token verified by
/// the fake Stream with the tenant's secret).
fn last_user(fake: &FakeStream) -> String {
    let r = fake.requests().pop().expect("a forwarded request");
    r.user_id().expect("a user token upstream").to_string()
}

async fn readyz(gw: &Gateway) -> (u16, serde_json::Value) {
    let r = client()
        .get(format!("http://{}/readyz", gw.admin))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(json!(null)))
}

async fn wait_ready(gw: &Gateway, secs: u64, what: &str) {
    eventually(
        Duration::from_secs(secs),
        Duration::from_millis(50),
        what,
        || async { readyz(gw).await.0 == 200 },
    )
    .await;
}

fn idp_claims(idp: &FakeIdp, sub: &str) -> serde_json::Value {
    json!({
        "sub": sub, "iss": idp.issuer(), "aud": "chat", "tenant": "acme",
        "iat": now(), "exp": now() + 600
    })
}

fn jwks_session(idp: &FakeIdp, source: &str) -> String {
    format!(
        "type = \"jwks\"\n{source}\nissuer = \"{}\"\naudience = \"chat\"\nalgorithms = [\"RS256\", \"ES256\"]\nrefresh_cooldown = \"60s\"\nfetch_timeout = \"1s\"\ntenant_claim = \"tenant\"",
        idp.issuer()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_sessions_wait_for_keys_then_verify_rotate_and_refuse() {
    let rsa = TestKey::fixture("rsa-1", Algorithm::RS256, "rsa.key");
    let idp = FakeIdp::start(jwks(&[&rsa])).await;
    idp.set_mode(IdpMode::Fail);
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let source = format!("jwks_url = \"{}\"", idp.jwks_url());
    let gw = Gateway::start(&config(&fake.url(), &jwks_session(&idp, &source), ""));

    // Provider down at start: not ready, and requests get 503, not 401.
    let token = rsa.sign(&idp_claims(&idp, "alice"));
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["tenants"], json!(["acme"]));
    assert_gateway_refusal(get(&gw, &token).await, 503, -1).await;
    assert!(fake.requests().is_empty());

    // Provider back: the gateway becomes ready by itself (retry with backoff).
    idp.set_mode(IdpMode::Serve);
    wait_ready(&gw, 15, "not ready after the provider came back").await;
    let resp = get(&gw, &format!("Bearer {token}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(last_user(&fake), "alice");

    // Rotation: a token signed by a key published after the last fetch
    // makes one refresh, then verifies.
    let ec = TestKey::generate_es256("ec-2");
    idp.set_jwks(jwks(&[&rsa, &ec]));
    let hits = idp.jwks_hits();
    let resp = get(&gw, &ec.sign(&idp_claims(&idp, "bob"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(last_user(&fake), "bob");
    assert_eq!(idp.jwks_hits(), hits + 1);

    // Garbage kids inside the cooldown: refused (43), no fetch at all.
    fake.clear();
    let hits = idp.jwks_hits();
    for i in 0..10 {
        let t = ec.sign_with_kid(Some(&format!("junk-{i}")), &idp_claims(&idp, "bob"));
        assert_gateway_refusal(get(&gw, &t).await, 401, 43).await;
    }
    assert_eq!(
        idp.jwks_hits(),
        hits,
        "unknown kids within the cooldown fetched keys"
    );

    // Claim failures: never 40 except for expiry.
    let mut wrong_aud = idp_claims(&idp, "alice");
    wrong_aud["aud"] = json!("other");
    let mut other_tenant = idp_claims(&idp, "alice");
    other_tenant["tenant"] = json!("globex");
    let mut wrong_iss = idp_claims(&idp, "alice");
    wrong_iss["iss"] = json!("https://evil.example/");
    let mut expired = idp_claims(&idp, "alice");
    expired["exp"] = json!(now() - 60);
    for (t, code) in [
        (rsa.sign(&wrong_aud), 5),
        (rsa.sign(&other_tenant), 5),
        (rsa.sign(&wrong_iss), 5),
        (rsa.sign(&expired), 40),
        // HS256 with a made-up secret: symmetric tokens are never accepted.
        (hs_token("HS256", "x", idp_claims(&idp, "alice")), 5),
    ] {
        assert_gateway_refusal(get(&gw, &t).await, 401, code).await;
    }
    assert!(
        fake.requests().is_empty(),
        "a refused session reached Stream"
    );

    // Provider down again: the keys already loaded keep working.
    idp.set_mode(IdpMode::Fail);
    assert_eq!(get(&gw, &token).await.status(), 200);

    // Fetches are counted in the metrics: the failing ones at start, the
    // first load and the rotation.
    let metrics = metrics_text(&gw).await;
    let count = |result: &str| -> f64 {
        let prefix =
            format!("stream_gateway_jwks_refreshes_total{{result=\"{result}\",tenant=\"acme\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0.0, |v| v.parse().unwrap())
    };
    assert!(count("ok") >= 2.0, "{metrics}");
    assert!(count("error") >= 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_found_by_openid_discovery() {
    let ec = TestKey::fixture("ec-1", Algorithm::ES256, "ec256.key");
    let idp = FakeIdp::start(jwks(&[&ec])).await;
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&config(&fake.url(), &jwks_session(&idp, ""), ""));
    wait_ready(&gw, 10, "keys not loaded by discovery").await;
    assert!(idp.discovery_hits() >= 1);
    let resp = get(&gw, &ec.sign(&idp_claims(&idp, "carol"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(last_user(&fake), "carol");
}

fn redis_session(extra: &str) -> String {
    format!("type = \"redis\"\nkey = \"session:{{token}}\"\nuser_id_field = \"user.id\"\ntenant_claim = \"tenant\"\n{extra}")
}

fn redis_top(redis: &RedisServer) -> String {
    format!("[redis]\nurl = \"{}\"\ntimeout = \"300ms\"", redis.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_redis_sessions_map_to_users_and_end_with_40() {
    let mut redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&config(
        &fake.url(),
        &redis_session("cache_ttl = \"0s\""),
        &redis_top(&redis),
    ));
    let alice = r#"{"user":{"id":"alice"},"tenant":"acme"}"#;
    redis.command(&["SET", "session:s-alice", alice, "EX", "60"]);
    redis.command(&["SET", "session:s-short", alice, "PX", "1200"]);
    redis.command(&[
        "SET",
        "session:s-num",
        r#"{"user":{"id":42},"tenant":"acme"}"#,
    ]);
    redis.command(&[
        "SET",
        "session:s-globex",
        r#"{"user":{"id":"mallory"},"tenant":"globex"}"#,
    ]);
    redis.command(&["SET", "session:s-noid", r#"{"user":{},"tenant":"acme"}"#]);

    for (token, user) in [
        ("s-alice", "alice"),
        ("Bearer s-alice", "alice"),
        ("s-num", "42"),
    ] {
        let resp = get(&gw, token).await;
        assert_eq!(resp.status(), 200, "{token}");
        assert_eq!(last_user(&fake), user);
        let r = fake.requests().pop().unwrap();
        let auth = r.header("authorization").unwrap();
        assert!(!auth.contains("s-alice"), "the session id reached Stream");
    }
    fake.clear();
    // Unknown session: 40 (the SDK asks the app for a new one). A session
    // for another tenant or without a user id: 5, never 40.
    assert_gateway_refusal(get(&gw, "s-unknown").await, 401, 40).await;
    assert_gateway_refusal(get(&gw, "s-globex").await, 401, 5).await;
    assert_gateway_refusal(get(&gw, "s-noid").await, 401, 5).await;
    assert!(fake.requests().is_empty());

    // Logged out (key deleted) and timed out (TTL): 40 from then on.
    assert_eq!(get(&gw, "s-short").await.status(), 200);
    redis.command(&["DEL", "session:s-alice"]);
    fake.clear();
    assert_gateway_refusal(get(&gw, "s-alice").await, 401, 40).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_gateway_refusal(get(&gw, "s-short").await, 401, 40).await;
    assert!(fake.requests().is_empty());

    // Redis down: 503, nobody gets in.
    redis.command(&["SET", "session:s-alice", alice, "EX", "60"]);
    redis.stop();
    assert_gateway_refusal(get(&gw, "s-alice").await, 503, -1).await;
    assert!(fake.requests().is_empty());
    redis.restart();
    redis.command(&["SET", "session:s-alice", alice, "EX", "60"]);
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        "sessions not served after Redis came back",
        || async { get(&gw, "s-alice").await.status() == 200 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_session_cache_bounds_how_long_a_deleted_session_lives() {
    let redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&config(
        &fake.url(),
        &redis_session("cache_ttl = \"1s\""),
        &redis_top(&redis),
    ));
    redis.command(&[
        "SET",
        "session:s1",
        r#"{"user":{"id":"alice"},"tenant":"acme"}"#,
    ]);
    assert_eq!(get(&gw, "s1").await.status(), 200);
    redis.command(&["DEL", "session:s1"]);
    let deleted = Instant::now();
    // Served from the local cache until it lapses, then 40.
    assert_eq!(get(&gw, "s1").await.status(), 200);
    loop {
        let resp = get(&gw, "s1").await;
        if resp.status() == 401 {
            assert_gateway_refusal(resp, 401, 40).await;
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_millis(1500),
            "cache outlived cache_ttl"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cookie_session() -> String {
    format!(
        "type = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret = \"{SESSION_SECRET}\"\ncookie = \"sid\"\nallowed_origins = [\"https://app.example.com\"]"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_sessions_need_an_allowed_origin_and_never_reach_stream() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&config(&fake.url(), &cookie_session(), ""));
    let url = format!("{}/app?api_key={API_KEY}", gw.url());
    let cookie = format!("theme=dark; sid={}", session_for("alice"));

    let resp = client()
        .get(&url)
        .header("cookie", &cookie)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = fake.requests().pop().unwrap();
    assert_eq!(r.user_id(), Some("alice"));
    assert!(r.header("cookie").is_none(), "the cookie reached Stream");

    // Same-origin fetch without Origin, marked by Sec-Fetch-Site.
    let resp = client()
        .post(format!(
            "{}/channels/messaging/general/read?api_key={API_KEY}",
            gw.url()
        ))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(last_user(&fake), "alice");

    // An explicit Authorization header wins over the cookie.
    let resp = client()
        .get(&url)
        .header("cookie", "sid=garbage")
        .header("authorization", session_for("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(last_user(&fake), "bob");

    fake.clear();
    for (origin, site, post) in [
        (Some("https://evil.example"), None, false),
        (Some("null"), None, false),
        (None, Some("cross-site"), false),
        (None, None, true),
    ] {
        // A POST an HTML form on another site could send (no preflight).
        let mut req = if post {
            client()
                .post(&url)
                .header("content-type", "text/plain")
                .body("{}")
        } else {
            client().get(&url)
        };
        req = req.header("cookie", &cookie);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(s) = site {
            req = req.header("sec-fetch-site", s);
        }
        assert_gateway_refusal(req.send().await.unwrap(), 403, 17).await;
    }
    // Two different sid cookies (cookie tossing): refused.
    let resp = client()
        .get(&url)
        .header("cookie", format!("{cookie}; sid=other"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_gateway_refusal(resp, 400, 4).await;
    assert!(
        fake.requests().is_empty(),
        "a refused cookie request reached Stream"
    );
}

#[test]
fn config_check_refuses_unsafe_session_setups() {
    let cases = [
        ("type = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret = \"s\"\ncookie = \"sid\"\nallowed_origins = [\"*\"]", "wildcard"),
        ("type = \"jwks\"\njwks_url = \"https://idp.example/jwks\"\naudience = \"chat\"", "issuer: required"),
        ("type = \"jwks\"\njwks_url = \"https://idp.example/jwks\"\nissuer = \"https://idp.example/\"", "audience: required"),
        ("type = \"jwks\"\njwks_url = \"https://idp.example/jwks\"\nissuer = \"https://idp.example/\"\naudience = \"a\"\nalgorithms = [\"HS256\"]", "symmetric"),
        ("type = \"redis\"\nkey = \"session:{token}\"", "needs a [redis] section"),
        ("type = \"redis\"\nkey = \"session\"", "must contain {token}"),
    ];
    for (session, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        let text = config("http://127.0.0.1:1", session, "")
            .replace("@LISTEN@", "127.0.0.1:1")
            .replace("@ADMIN@", "127.0.0.1:2");
        std::fs::write(&path, text).unwrap();
        let out = run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {session}");
        assert!(err.contains(want), "{session}: {err}");
    }
    // Explicit opt-outs are accepted.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let ok = "type = \"jwks\"\njwks_url = \"http://127.0.0.1:9/jwks\"\nverify_issuer = false\nverify_audience = false";
    let text = config("http://127.0.0.1:1", ok, "")
        .replace("@LISTEN@", "127.0.0.1:1")
        .replace("@ADMIN@", "127.0.0.1:2");
    std::fs::write(&path, text).unwrap();
    let out = run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_claim_binds_jwt_sessions_to_their_tenant() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let session = format!(
        "type = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret = \"{SESSION_SECRET}\"\ntenant_claim = \"tenant\""
    );
    let gw = Gateway::start(&config(&fake.url(), &session, ""));
    let token = |tenant: Option<&str>| {
        let mut c = json!({"sub": "alice", "iat": now(), "exp": now() + 60});
        if let Some(t) = tenant {
            c["tenant"] = json!(t);
        }
        hs_token("HS256", SESSION_SECRET, c)
    };
    assert_eq!(get(&gw, &token(Some("acme"))).await.status(), 200);
    fake.clear();
    assert_gateway_refusal(get(&gw, &token(Some("globex"))).await, 401, 5).await;
    assert_gateway_refusal(get(&gw, &token(None)).await, 401, 5).await;
    assert!(fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_redis_when_sessions_live_there() {
    let mut redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&config(
        &fake.url(),
        &redis_session("cache_ttl = \"0s\""),
        &redis_top(&redis),
    ));
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["upstream_address"].is_string(), "{body}");
    redis.stop();
    let (status, body) = readyz(&gw).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["reason"].as_str().unwrap().contains("redis"), "{body}");
    redis.restart();
    wait_ready(&gw, 10, "not ready again after Redis came back").await;
}
