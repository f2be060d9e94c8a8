//! Self-test of the integration-test harness: checks that the fake Stream upstream
//! accepts and refuses requests the way Stream does, records them faithfully, and
//! honours its control headers; and that the token helpers build what they claim.
//! Does not launch the gateway binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const KEY: &str = "key123";
const SECRET: &str = "stream-secret-abc";

fn fake() -> FakeStream {
    FakeStream::start(&[(KEY, SECRET), ("otherkey", "other-secret")])
}

fn user_token(user_id: &str) -> String {
    hs_token(
        "HS256",
        SECRET,
        json!({"user_id": user_id, "iat": now() - 5, "exp": now() + 600}),
    )
}

/// A Stream REST request as the JS client sends it, with a JWT.
fn jwt_req(fs: &FakeStream, path_and_query: &str, token: &str) -> reqwest::RequestBuilder {
    client()
        .get(format!("{}{}", fs.url(), path_and_query))
        .header("stream-auth-type", "jwt")
        .header("authorization", token)
}

#[tokio::test]
async fn valid_user_token_is_accepted_and_recorded() {
    let fs = fake();
    let tok = user_token("alice");
    let resp = client()
        .post(format!(
            "{}/channels/messaging/general/query?api_key={KEY}&user_id=alice&connection_id=c1",
            fs.url()
        ))
        .header("Stream-Auth-Type", "jwt")
        .header("Authorization", &tok)
        .header("X-Stream-Client", "stream-chat-js-v9.49.0-browser")
        .header("content-type", "application/json")
        .body(r#"{"state":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-fake-upstream"], "1");
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-ratelimit-limit"], "1000");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "999");
    let reset: i64 = resp.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((reset - (now() + 60)).abs() <= 2);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["duration"], "0.42ms");
    assert_eq!(
        body["fake"],
        json!({"method":"POST","path":"/channels/messaging/general/query","user_id":"alice","auth":"jwt","body_len":14})
    );
    // A chat route: the channel, created by this first query.
    assert_eq!(body["channel"]["cid"], "messaging:general");
    assert_eq!(body["members"][0]["user_id"], "alice");

    let reqs = fs.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/channels/messaging/general/query");
    assert_eq!(r.query_param("api_key"), Some(KEY));
    assert_eq!(r.query_param("connection_id"), Some("c1"));
    assert_eq!(
        r.header("X-Stream-Client"),
        Some("stream-chat-js-v9.49.0-browser")
    );
    assert_eq!(r.header("stream-auth-type"), Some("jwt"));
    assert_eq!(r.body, br#"{"state":true}"#);
    assert_eq!(r.body_json(), json!({"state": true}));
    assert_eq!(r.user_id(), Some("alice"));
    match &r.auth {
        Ok(StreamAuth::User {
            user_id,
            iat,
            exp,
            token,
        }) => {
            assert_eq!(user_id, "alice");
            assert!(iat.is_some() && exp.is_some());
            assert_eq!(token, &tok);
        }
        other => panic!("unexpected auth {other:?}"),
    }
    assert!(r.headers.iter().all(|(k, _)| *k == k.to_ascii_lowercase()));
}

#[tokio::test]
async fn token_without_timestamps_is_accepted() {
    // The Stream server SDKs sign {user_id} with no iat/exp by default.
    let fs = fake();
    let tok = hs_token("HS256", SECRET, json!({"user_id": "bob"}));
    let resp = jwt_req(&fs, &format!("/users?api_key={KEY}"), &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        fs.requests()[0].auth,
        Ok(StreamAuth::User {
            user_id: "bob".into(),
            iat: None,
            exp: None,
            token: tok
        })
    );
}

#[tokio::test]
async fn server_token_is_recorded_as_server() {
    let fs = fake();
    let tok = hs_token("HS256", SECRET, json!({"server": true}));
    let resp = jwt_req(&fs, &format!("/app?api_key={KEY}"), &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["fake"]["auth"], "server");
    assert_eq!(body["fake"]["user_id"], serde_json::Value::Null);
    assert!(matches!(
        fs.requests()[0].auth,
        Ok(StreamAuth::Server { .. })
    ));
}

#[tokio::test]
async fn any_signed_token_without_user_id_is_server_auth() {
    // Stream: "client-side tokens must include the user_id claim, server
    // tokens do not". The {"server": true} claim is what the SDKs send, not
    // what makes it one; a bad signature or expiry still refuses it.
    let fs = fake();
    for claims in [
        json!({"sub": "alice"}),
        json!({"server": false}),
        json!({"server": true, "iat": now() - 5, "exp": now() + 60}),
    ] {
        let tok = hs_token("HS256", SECRET, claims.clone());
        let resp = jwt_req(&fs, &format!("/app?api_key={KEY}&user_id=bob"), &tok)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{claims}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["fake"]["auth"], "server", "{claims}");
    }
    let expired = hs_token("HS256", SECRET, json!({"server": true, "exp": now() - 1}));
    let resp = jwt_req(&fs, &format!("/app?api_key={KEY}"), &expired)
        .send()
        .await
        .unwrap();
    assert_stream_error(resp, 401, 40).await;
    let forged = hs_token("HS256", "not-the-secret", json!({"server": true}));
    let resp = jwt_req(&fs, &format!("/app?api_key={KEY}"), &forged)
        .send()
        .await
        .unwrap();
    assert_stream_error(resp, 401, 43).await;
}

#[tokio::test]
async fn bearer_prefix_is_refused() {
    let fs = fake();
    let resp = jwt_req(
        &fs,
        &format!("/channels?api_key={KEY}"),
        &format!("Bearer {}", user_token("alice")),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.headers()["x-fake-upstream"], "1");
    let body = assert_stream_error(resp, 401, 5).await;
    assert_eq!(
        body["more_info"],
        "https://getstream.io/chat/docs/api_errors_response"
    );
    assert_eq!(body["details"], json!([]));
    let r = &fs.requests()[0];
    assert!(
        r.auth.as_ref().unwrap_err().contains("bearer prefix"),
        "{:?}",
        r.auth
    );
}

#[tokio::test]
async fn wrong_secret_is_code_43() {
    let fs = fake();
    let tok = hs_token("HS256", "not-the-secret", json!({"user_id": "alice"}));
    let resp = jwt_req(&fs, &format!("/channels?api_key={KEY}"), &tok)
        .send()
        .await
        .unwrap();
    assert_stream_error(resp, 401, 43).await;
    // The other app's secret does not work for this app's key either.
    let tok = hs_token("HS256", "other-secret", json!({"user_id": "alice"}));
    let resp = jwt_req(&fs, &format!("/channels?api_key={KEY}"), &tok)
        .send()
        .await
        .unwrap();
    assert_stream_error(resp, 401, 43).await;
    // ...but does for its own key.
    let resp = jwt_req(&fs, "/channels?api_key=otherkey", &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(fs.requests()[0].auth.is_err());
}

#[tokio::test]
async fn expired_token_is_code_40() {
    let fs = fake();
    let tok = hs_token(
        "HS256",
        SECRET,
        json!({"user_id": "alice", "iat": now() - 100, "exp": now() - 1}),
    );
    let resp = jwt_req(&fs, &format!("/channels?api_key={KEY}"), &tok)
        .send()
        .await
        .unwrap();
    assert_stream_error(resp, 401, 40).await;
}

#[tokio::test]
async fn future_iat_is_code_42() {
    let fs = fake();
    let tok = hs_token(
        "HS256",
        SECRET,
        json!({"user_id": "alice", "iat": now() + 300}),
    );
    let resp = jwt_req(&fs, &format!("/channels?api_key={KEY}"), &tok)
        .send()
        .await
        .unwrap();
    assert_stream_error(resp, 401, 42).await;
}

#[tokio::test]
async fn other_token_problems_are_code_5() {
    let fs = fake();
    let url = format!("/channels?api_key={KEY}");
    let cases = [
        (
            "HS384",
            hs_token("HS384", SECRET, json!({"user_id": "alice"})),
        ),
        ("alg none", none_token(json!({"user_id": "alice"}))),
        ("garbage", "not.a.jwt".to_string()),
        (
            "numeric user_id",
            hs_token("HS256", SECRET, json!({"user_id": 7})),
        ),
        (
            "empty user_id",
            hs_token("HS256", SECRET, json!({"user_id": ""})),
        ),
    ];
    for (what, tok) in cases {
        let resp = jwt_req(&fs, &url, &tok).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        assert_stream_error(resp, 401, 5).await;
    }
    // Missing authorization with jwt.
    let resp = client()
        .get(format!("{}{url}", fs.url()))
        .header("stream-auth-type", "jwt")
        .send()
        .await
        .unwrap();
    assert_stream_error(resp, 401, 5).await;
    // Missing / unknown stream-auth-type.
    let resp = client()
        .get(format!("{}{url}", fs.url()))
        .header("authorization", user_token("alice"))
        .send()
        .await
        .unwrap();
    assert_stream_error(resp, 401, 5).await;
    let resp = client()
        .get(format!("{}{url}", fs.url()))
        .header("stream-auth-type", "session")
        .header("authorization", user_token("alice"))
        .send()
        .await
        .unwrap();
    assert_stream_error(resp, 401, 5).await;
    // Two authorization headers (e.g. a gateway that appends instead of replacing).
    let resp = jwt_req(&fs, &url, &user_token("alice"))
        .header("authorization", user_token("alice"))
        .send()
        .await
        .unwrap();
    assert_stream_error(resp, 401, 5).await;
    assert_eq!(fs.requests().len(), 9);
    assert!(fs.requests().iter().all(|r| r.auth.is_err()));
    assert_eq!(fs.requests()[8].header_all("authorization").len(), 2);
}

#[tokio::test]
async fn unknown_or_missing_api_key_is_code_2() {
    let fs = fake();
    let resp = jwt_req(&fs, "/channels?api_key=nope", &user_token("alice"))
        .send()
        .await
        .unwrap();
    assert_stream_error(resp, 401, 2).await;
    let resp = jwt_req(&fs, "/channels", &user_token("alice"))
        .send()
        .await
        .unwrap();
    assert_stream_error(resp, 401, 2).await;
    let reqs = fs.requests();
    assert_eq!(reqs.len(), 2, "refused requests are recorded too");
    assert!(reqs[0]
        .auth
        .as_ref()
        .unwrap_err()
        .contains("api_key not found"));
}

#[tokio::test]
async fn anonymous() {
    let fs = fake();
    let resp = client()
        .get(format!("{}/channels?api_key={KEY}", fs.url()))
        .header("stream-auth-type", "anonymous")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["fake"]["auth"], "anonymous");
    assert_eq!(body["fake"]["user_id"], serde_json::Value::Null);
    assert_eq!(fs.requests()[0].auth, Ok(StreamAuth::Anonymous));

    // Anonymous with an authorization header is refused.
    let resp = client()
        .get(format!("{}/channels?api_key={KEY}", fs.url()))
        .header("stream-auth-type", "anonymous")
        .header("authorization", user_token("alice"))
        .send()
        .await
        .unwrap();
    assert_stream_error(resp, 401, 5).await;
}

#[tokio::test]
async fn user_id_query_must_match_token() {
    let fs = fake();
    let tok = user_token("alice");
    let resp = jwt_req(
        &fs,
        &format!("/channels?api_key={KEY}&user_id=mallory"),
        &tok,
    )
    .send()
    .await
    .unwrap();
    assert_stream_error(resp, 403, 17).await;
    let resp = jwt_req(
        &fs,
        &format!("/channels?api_key={KEY}&user_id=alice&user_id=mallory"),
        &tok,
    )
    .send()
    .await
    .unwrap();
    assert_stream_error(resp, 403, 17).await;
    let resp = jwt_req(&fs, &format!("/channels?api_key={KEY}&user_id=alice"), &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn forced_status_429_has_rate_limit_headers() {
    let fs = fake();
    let resp = jwt_req(
        &fs,
        &format!("/channels?api_key={KEY}"),
        &user_token("alice"),
    )
    .header("x-fake-status", "429")
    .send()
    .await
    .unwrap();
    let h = resp.headers().clone();
    assert_eq!(h["x-ratelimit-limit"], "60");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(h["retry-after"], "60");
    assert_eq!(h["x-fake-upstream"], "1");
    let reset: i64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!((reset - (now() + 60)).abs() <= 2);
    assert_stream_error(resp, 429, 9).await;

    for (status, code) in [(404, 16), (500, 4), (400, 4), (503, 4)] {
        let resp = jwt_req(
            &fs,
            &format!("/channels?api_key={KEY}"),
            &user_token("alice"),
        )
        .header("x-fake-status", status.to_string())
        .send()
        .await
        .unwrap();
        assert_stream_error(resp, status, code).await;
    }
    // Control headers apply only after auth succeeds.
    let resp = jwt_req(
        &fs,
        &format!("/channels?api_key={KEY}"),
        &hs_token("HS256", "bad", json!({"user_id":"a"})),
    )
    .header("x-fake-status", "429")
    .send()
    .await
    .unwrap();
    assert_stream_error(resp, 401, 43).await;
}

#[tokio::test]
async fn gzip_body() {
    let fs = fake();
    let resp = jwt_req(
        &fs,
        &format!("/channels?api_key={KEY}"),
        &user_token("alice"),
    )
    .header("x-fake-gzip", "1")
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["fake"]["user_id"], "alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn delay_is_applied_and_request_recorded_on_arrival() {
    let fs = fake();
    let started = Instant::now();
    let fut = jwt_req(
        &fs,
        &format!("/channels?api_key={KEY}"),
        &user_token("alice"),
    )
    .header("x-fake-delay-ms", "400")
    .send();
    let resp = fut.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(fs.wait_for_requests(1, Duration::from_secs(1)).len(), 1);

    // Recorded before the delay ends.
    let fs2 = fake();
    let url = format!("{}/channels?api_key={KEY}", fs2.url());
    let tok = user_token("alice");
    let pending = tokio::spawn(async move {
        client()
            .get(url)
            .header("stream-auth-type", "jwt")
            .header("authorization", tok)
            .header("x-fake-delay-ms", "3000")
            .send()
            .await
    });
    let reqs = fs2.wait_for_requests(1, Duration::from_secs(2));
    assert_eq!(reqs.len(), 1, "recorded before the delayed answer");
    pending.abort();
}

#[tokio::test]
async fn raw_path_query_and_repeated_headers_are_recorded() {
    let fs = fake();
    let url = format!(
        "{}/channels/messaging/a%2Fb/query?api_key={KEY}&payload=%7B%22q%22%3A%22a+b%20c%22%7D&flag&empty=&x=1&x=2",
        fs.url()
    );
    let resp = client()
        .get(url)
        .header("stream-auth-type", "jwt")
        .header("authorization", user_token("alice"))
        .header("x-multi", "one")
        .header("x-other", "z")
        .header("x-multi", "two")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = &fs.requests()[0];
    assert_eq!(r.path, "/channels/messaging/a%2Fb/query");
    assert_eq!(
        r.raw_query.as_deref(),
        Some(
            format!("api_key={KEY}&payload=%7B%22q%22%3A%22a+b%20c%22%7D&flag&empty=&x=1&x=2")
                .as_str()
        )
    );
    assert_eq!(r.query_param("payload"), Some(r#"{"q":"a b c"}"#));
    assert_eq!(r.query_param("flag"), Some(""));
    assert_eq!(r.query_param("empty"), Some(""));
    assert_eq!(r.query_all("x"), vec!["1", "2"]);
    assert_eq!(r.query_param("missing"), None);
    assert_eq!(r.header_all("x-multi"), vec!["one", "two"]);
    assert_eq!(r.header("X-Other"), Some("z"));
    assert_eq!(r.header("x-nope"), None);
}

#[tokio::test]
async fn clear_and_wait() {
    let fs = fake();
    for _ in 0..3 {
        jwt_req(&fs, &format!("/x?api_key={KEY}"), &user_token("alice"))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(fs.wait_for_requests(3, Duration::from_secs(1)).len(), 3);
    fs.clear();
    assert!(fs.requests().is_empty());
    let t = Instant::now();
    assert!(fs
        .wait_for_requests(1, Duration::from_millis(100))
        .is_empty());
    assert!(t.elapsed() >= Duration::from_millis(100));
}

/// The fake works without any tokio runtime in the test, and dropping it while a
/// delayed request is pending returns promptly and frees the port.
#[test]
fn works_from_sync_test_and_drops_promptly() {
    let fs = fake();
    let addr = fs.addr;
    let tok = user_token("alice");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /channels?api_key={KEY} HTTP/1.1\r\nHost: {addr}\r\nStream-Auth-Type: jwt\r\nAuthorization: {tok}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("x-fake-upstream: 1"),
        "{resp}"
    );

    // A request that would sleep for a minute must not block Drop.
    let mut s2 = TcpStream::connect(addr).unwrap();
    write!(
        s2,
        "GET /channels?api_key={KEY} HTTP/1.1\r\nHost: {addr}\r\nStream-Auth-Type: jwt\r\nAuthorization: {tok}\r\nx-fake-delay-ms: 60000\r\n\r\n"
    )
    .unwrap();
    assert_eq!(fs.wait_for_requests(2, Duration::from_secs(2)).len(), 2);
    let t = Instant::now();
    drop(fs);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "drop took {:?}",
        t.elapsed()
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "listener closed after drop"
    );
}

#[test]
fn stream_error_json_shape() {
    assert_eq!(
        stream_error_json(40, 401, "token expired"),
        json!({"code":40,"message":"token expired","StatusCode":401,"duration":"0.01ms","more_info":"https://getstream.io/chat/docs/api_errors_response","details":[]})
    );
}

#[test]
fn token_helpers() {
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};

    let mut v = Validation::new(Algorithm::HS384);
    v.required_spec_claims.clear();
    v.validate_aud = false;
    let t = hs_token("HS384", "s", json!({"user_id": "u", "exp": now() + 60}));
    assert_eq!(decode_header(&t).unwrap().alg, Algorithm::HS384);
    let d = decode::<serde_json::Value>(&t, &DecodingKey::from_secret(b"s"), &v).unwrap();
    assert_eq!(d.claims["user_id"], "u");
    assert_eq!(jwt_claims(&t)["user_id"], "u");

    let n = none_token(json!({"user_id": "u"}));
    assert!(n.ends_with('.'));
    assert_eq!(n.split('.').count(), 3);
    assert_eq!(jwt_claims(&n), json!({"user_id": "u"}));
    assert_eq!(
        n.split('.').next().unwrap(),
        b64_json(&json!({"alg": "none", "typ": "JWT"}))
    );

    // forged_token with an HS256 header is a valid HS256 token for that key ...
    let f = forged_token(
        json!({"alg": "HS256", "typ": "JWT"}),
        json!({"user_id": "u"}),
        b"pem-bytes",
    );
    let mut v = Validation::new(Algorithm::HS256);
    v.required_spec_claims.clear();
    v.validate_aud = false;
    v.validate_exp = false;
    decode::<serde_json::Value>(&f, &DecodingKey::from_secret(b"pem-bytes"), &v).unwrap();
    // ... and with an RS256 header keeps that header and the same kind of signature.
    let g = forged_token(
        json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}),
        json!({"user_id": "u"}),
        b"pem-bytes",
    );
    let h = decode_header(&g).unwrap();
    assert_eq!(h.alg, Algorithm::RS256);
    assert_eq!(h.kid.as_deref(), Some("k1"));
    assert_eq!(
        g.split('.').nth(2).unwrap().len(),
        f.split('.').nth(2).unwrap().len()
    );
    assert!(now() > 1_700_000_000);
}

// ---------------------------------------------------------------------------
// Websocket `/connect`
// ---------------------------------------------------------------------------

mod ws {
    use super::*;
    use common::fake_stream::{connect_query, connect_query_with, form_encode, STREAM_MORE_INFO};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;

    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    const WAIT: Duration = Duration::from_secs(5);

    async fn connect(fs: &FakeStream, query: &str) -> Ws {
        let url = format!("{}/connect?{query}", fs.ws_url());
        let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("websocket handshake failed");
        assert_eq!(resp.status(), 101);
        assert_eq!(
            resp.headers()
                .get("x-fake-upstream")
                .map(|v| v.to_str().unwrap()),
            Some("1")
        );
        ws
    }

    /// Next frame that is not a ping/pong.
    async fn next_msg(ws: &mut Ws) -> Message {
        loop {
            let msg = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("no frame in time")
                .expect("socket ended")
                .expect("socket error");
            if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
                return msg;
            }
        }
    }

    async fn next_json(ws: &mut Ws) -> serde_json::Value {
        match next_msg(ws).await {
            Message::Text(t) => serde_json::from_str(&t).expect("text frame is JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame is a close frame with code 1000, and the stream then ends.
    async fn expect_close_1000(ws: &mut Ws) {
        match next_msg(ws).await {
            Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal, "{f:?}"),
            other => panic!("expected close 1000, got {other:?}"),
        }
        let end = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("stream did not end after close");
        assert!(
            matches!(end, None | Some(Err(_))),
            "frame after close: {end:?}"
        );
    }

    /// Stream's refusal: one `{"error": ...}` frame, then close 1000.
    async fn assert_refused(fs: &FakeStream, query: &str, status: u16, code: i64) {
        let mut ws = connect(fs, query).await;
        let v = next_json(&mut ws).await;
        assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
        let err = &v["error"];
        assert_eq!(err["code"].as_i64(), Some(code), "{v}");
        assert_eq!(err["StatusCode"].as_i64(), Some(i64::from(status)), "{v}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert_eq!(err["more_info"], STREAM_MORE_INFO, "{v}");
        assert_eq!(err["details"], json!([]), "{v}");
        expect_close_1000(&mut ws).await;
        let last = fs.requests().pop().unwrap();
        assert_eq!(last.path, "/connect");
        assert!(last.auth.is_err(), "{:?}", last.auth);
    }

    #[tokio::test]
    async fn valid_connect_gets_health_check_and_is_recorded() {
        let fs = fake();
        let tok = user_token("alice");
        let q = connect_query(KEY, &tok, "alice");
        let mut ws = connect(&fs, &q).await;
        let hc = next_json(&mut ws).await;
        assert_eq!(hc["type"], "health.check", "{hc}");
        let cid = hc["connection_id"].as_str().unwrap();
        assert!(!cid.is_empty());
        assert_eq!(hc["me"]["id"], "alice");
        assert_eq!(hc["me"]["role"], "user");
        assert_eq!(hc["cid"], "*");
        assert!(hc["created_at"].as_str().unwrap().ends_with('Z'), "{hc}");

        // A second socket gets another connection_id.
        let mut ws2 = connect(&fs, &q).await;
        let hc2 = next_json(&mut ws2).await;
        assert_ne!(hc2["connection_id"], hc["connection_id"]);

        let reqs = fs.requests();
        assert_eq!(reqs.len(), 2);
        let r = &reqs[0];
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/connect");
        assert_eq!(r.raw_query.as_deref(), Some(q.as_str()));
        assert_eq!(r.query_param("api_key"), Some(KEY));
        assert_eq!(r.query_param("authorization"), Some(tok.as_str()));
        assert_eq!(r.query_param("stream-auth-type"), Some("jwt"));
        assert_eq!(
            r.query_param("X-Stream-Client"),
            Some("stream-chat-js-v9.49.0-node")
        );
        let payload = r.connect_json().unwrap();
        assert_eq!(
            payload,
            json!({"user_id":"alice","user_details":{"id":"alice"},"client_request_id":"x"})
        );
        assert_eq!(r.header("upgrade"), Some("websocket"));
        assert!(r.header("sec-websocket-key").is_some());
        assert!(r.body.is_empty());
        assert_eq!(r.user_id(), Some("alice"));
        assert!(matches!(&r.auth, Ok(StreamAuth::User { token, .. }) if *token == tok));
        ws.close(None).await.unwrap();
        ws2.close(None).await.unwrap();
    }

    #[test]
    fn connect_query_is_sdk_shaped() {
        let q = connect_query("k", "a.b.c", "u 1");
        assert_eq!(
            q,
            "json=%7B%22client_request_id%22%3A%22x%22%2C%22user_details%22%3A%7B%22id%22%3A%22u+1%22%7D%2C%22user_id%22%3A%22u+1%22%7D\
             &api_key=k&authorization=a.b.c&stream-auth-type=jwt&X-Stream-Client=stream-chat-js-v9.49.0-node"
        );
        assert_eq!(form_encode("a-b_c.d*e~f/g"), "a-b_c.d*e%7Ef%2Fg");
    }

    #[tokio::test]
    async fn wrong_secret_is_code_43_then_close_1000() {
        let fs = fake();
        let tok = hs_token("HS256", "not-the-secret", json!({"user_id": "alice"}));
        assert_refused(&fs, &connect_query(KEY, &tok, "alice"), 401, 43).await;
        assert_eq!(fs.open_sockets(), 0);
    }

    #[tokio::test]
    async fn expired_is_code_40() {
        let fs = fake();
        let tok = hs_token(
            "HS256",
            SECRET,
            json!({"user_id": "alice", "iat": now() - 100, "exp": now() - 1}),
        );
        assert_refused(&fs, &connect_query(KEY, &tok, "alice"), 401, 40).await;
    }

    #[tokio::test]
    async fn json_user_id_mismatch_is_code_17() {
        let fs = fake();
        let q = connect_query(KEY, &user_token("alice"), "mallory");
        assert_refused(&fs, &q, 403, 17).await;
    }

    #[tokio::test]
    async fn other_refusals() {
        let fs = fake();
        let tok = user_token("alice");
        let payload = json!({"user_id": "alice"});
        // Unknown api_key.
        assert_refused(&fs, &connect_query("nope", &tok, "alice"), 401, 2).await;
        // Bearer prefix, server token, missing token, bad auth type.
        let bearer = format!("Bearer {tok}");
        assert_refused(&fs, &connect_query(KEY, &bearer, "alice"), 401, 5).await;
        let server = hs_token("HS256", SECRET, json!({"server": true}));
        assert_refused(&fs, &connect_query(KEY, &server, "alice"), 401, 5).await;
        assert_refused(&fs, &connect_query(KEY, "", "alice"), 401, 5).await;
        let q = connect_query_with(KEY, &tok, "session", &payload);
        assert_refused(&fs, &q, 401, 5).await;
        // Anonymous with a token.
        let q = connect_query_with(KEY, &tok, "anonymous", &payload);
        assert_refused(&fs, &q, 401, 5).await;
        // json payload: missing, not JSON, no string user_id.
        let q = format!("api_key={KEY}&authorization={tok}&stream-auth-type=jwt");
        assert_refused(&fs, &q, 400, 4).await;
        assert_refused(&fs, &format!("{q}&json=%7Bnope"), 400, 4).await;
        let q = connect_query_with(KEY, &tok, "jwt", &json!({"user_id": 7}));
        assert_refused(&fs, &q, 400, 4).await;
        // Credentials in handshake headers instead of the query are not looked at.
        let url = format!(
            "{}/connect?json=%7B%22user_id%22%3A%22alice%22%7D&api_key={KEY}",
            fs.ws_url()
        );
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
                .unwrap();
        req.headers_mut()
            .insert("stream-auth-type", "jwt".parse().unwrap());
        req.headers_mut()
            .insert("authorization", tok.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(next_json(&mut ws).await["error"]["code"], 5);
        expect_close_1000(&mut ws).await;
        assert_eq!(fs.open_sockets(), 0);
    }

    #[tokio::test]
    async fn user_token_in_json_is_recorded_not_refused() {
        let fs = fake();
        let tok = user_token("alice");
        let payload = json!({
            "user_id": "alice",
            "user_details": {"id": "alice"},
            "user_token": "the-flutter-token",
            "server_determines_connection_id": true,
        });
        let mut ws = connect(&fs, &connect_query_with(KEY, &tok, "jwt", &payload)).await;
        assert_eq!(next_json(&mut ws).await["me"]["id"], "alice");
        let r = &fs.requests()[0];
        assert_eq!(r.connect_json().unwrap()["user_token"], "the-flutter-token");
    }

    #[tokio::test]
    async fn anonymous_works() {
        let fs = fake();
        let payload = json!({"user_id": "8a3c1d2e-anon", "user_details": {"id": "8a3c1d2e-anon"}});
        let q = connect_query_with(KEY, "", "anonymous", &payload);
        assert!(q.contains("&authorization=&"), "{q}");
        let mut ws = connect(&fs, &q).await;
        let hc = next_json(&mut ws).await;
        assert_eq!(hc["type"], "health.check");
        assert_eq!(hc["me"]["id"], "8a3c1d2e-anon");
        assert_eq!(fs.requests()[0].auth, Ok(StreamAuth::Anonymous));
        // Without the authorization param at all, too.
        let q = format!(
            "json={}&api_key={KEY}&stream-auth-type=anonymous",
            form_encode(&payload.to_string())
        );
        let mut ws = connect(&fs, &q).await;
        assert_eq!(next_json(&mut ws).await["me"]["id"], "8a3c1d2e-anon");
    }

    #[tokio::test]
    async fn client_health_check_gets_a_health_check_reply_and_other_frames_echo() {
        let fs = fake();
        let mut ws = connect(&fs, &connect_query(KEY, &user_token("alice"), "alice")).await;
        let first = next_json(&mut ws).await;

        ws.send(Message::text(
            r#"[{"type":"health.check","client_id":"alice--1234"}]"#,
        ))
        .await
        .unwrap();
        let hc = next_json(&mut ws).await;
        assert_eq!(hc["type"], "health.check", "{hc}");
        assert_eq!(hc["connection_id"], first["connection_id"]);
        assert!(hc["created_at"].is_string());
        assert!(hc.get("me").is_none(), "{hc}");

        // Anything else comes back unchanged, byte for byte.
        for text in [
            "hello",
            r#"{"type":"health.check"}"#,
            r#"[{"type":"message.new"}]"#,
            r#"{ "a" : 1 }"#,
        ] {
            ws.send(Message::text(text)).await.unwrap();
            match next_msg(&mut ws).await {
                Message::Text(t) => assert_eq!(t.as_str(), text),
                other => panic!("expected echo of {text:?}, got {other:?}"),
            }
        }
        ws.send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        match next_msg(&mut ws).await {
            Message::Binary(b) => assert_eq!(&b[..], &[0u8, 1, 2, 255]),
            other => panic!("expected binary echo, got {other:?}"),
        }

        // Ping gets a pong with the same payload.
        ws.send(Message::Ping(b"are-you-there".to_vec().into()))
            .await
            .unwrap();
        let pong = tokio::time::timeout(WAIT, async {
            loop {
                match ws.next().await.unwrap().unwrap() {
                    Message::Pong(p) => return p,
                    Message::Ping(_) => continue,
                    other => panic!("expected pong, got {other:?}"),
                }
            }
        })
        .await
        .expect("no pong");
        assert_eq!(&pong[..], b"are-you-there");

        // A client close 1000 gets a close 1000 reply.
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "Manually closed connection by calling client.disconnect()".into(),
        }))
        .await
        .unwrap();
        let reply = tokio::time::timeout(WAIT, async {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Close(f) = m {
                    return Some(f);
                }
            }
            None
        })
        .await
        .expect("no close reply")
        .expect("socket ended without a close reply");
        assert_eq!(reply.map(|f| f.code), Some(CloseCode::Normal));
        assert_eq!(fs.wait_for_open_sockets(0, WAIT), 0);
    }

    #[tokio::test]
    async fn fake_close_after_ms_closes_with_1000() {
        let fs = fake();
        let payload = json!({"user_id": "alice", "fake_close_after_ms": 300});
        let started = Instant::now();
        let mut ws = connect(
            &fs,
            &connect_query_with(KEY, &user_token("alice"), "jwt", &payload),
        )
        .await;
        assert_eq!(next_json(&mut ws).await["type"], "health.check");
        expect_close_1000(&mut ws).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(fs.wait_for_open_sockets(0, WAIT), 0);
    }

    #[tokio::test]
    async fn fake_push_every_ms_sends_ticks() {
        let fs = fake();
        let payload = json!({"user_id": "alice", "fake_push_every_ms": 30});
        let mut ws = connect(
            &fs,
            &connect_query_with(KEY, &user_token("alice"), "jwt", &payload),
        )
        .await;
        assert_eq!(next_json(&mut ws).await["type"], "health.check");
        for k in 1..=3 {
            assert_eq!(
                next_json(&mut ws).await,
                json!({"type": "fake.tick", "n": k})
            );
        }
        // Echo still works between ticks.
        ws.send(Message::text("ping-text")).await.unwrap();
        loop {
            match next_msg(&mut ws).await {
                Message::Text(t) if t.as_str() == "ping-text" => break,
                Message::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["type"], "fake.tick");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn open_sockets_goes_up_and_back_down() {
        let fs = fake();
        assert_eq!(fs.open_sockets(), 0);
        let q = connect_query(KEY, &user_token("alice"), "alice");
        let mut a = connect(&fs, &q).await;
        let mut b = connect(&fs, &q).await;
        next_json(&mut a).await;
        next_json(&mut b).await;
        assert_eq!(fs.wait_for_open_sockets(2, WAIT), 2);

        // Refused sockets are not counted.
        let bad = hs_token("HS256", "nope", json!({"user_id": "alice"}));
        assert_refused(&fs, &connect_query(KEY, &bad, "alice"), 401, 43).await;
        assert_eq!(fs.open_sockets(), 2);

        // A clean client close...
        a.close(None).await.unwrap();
        while let Some(Ok(_)) = a.next().await {}
        assert_eq!(fs.wait_for_open_sockets(1, WAIT), 1);
        // ...and a dropped TCP connection without a close frame.
        drop(b);
        assert_eq!(fs.wait_for_open_sockets(0, WAIT), 0);
    }

    #[tokio::test]
    async fn plain_get_connect_is_served_as_rest() {
        let fs = fake();
        let resp = jwt_req(
            &fs,
            &format!("/connect?api_key={KEY}"),
            &user_token("alice"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        let r = &fs.requests()[0];
        assert_eq!(r.path, "/connect");
        assert_eq!(r.user_id(), Some("alice"));
    }

    /// Dropping the fake with open sockets (one with a long timer) is prompt.
    #[test]
    fn drop_with_open_sockets_is_prompt() {
        let fs = fake();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let payload = json!({"user_id": "alice", "fake_close_after_ms": 60_000});
        let q = connect_query_with(KEY, &user_token("alice"), "jwt", &payload);
        let mut ws = rt.block_on(connect(&fs, &q));
        rt.block_on(next_json(&mut ws));
        assert_eq!(fs.wait_for_open_sockets(1, WAIT), 1);
        let t = Instant::now();
        drop(fs);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    /// A chat POST as the SDK sends it: JSON body, `user_id` and `connection_id` in
    /// the query.
    async fn chat_post(
        fs: &FakeStream,
        path: &str,
        user: &str,
        connection_id: &str,
        body: &str,
    ) -> reqwest::Response {
        client()
            .post(format!(
                "{}{path}?api_key={KEY}&user_id={user}&connection_id={connection_id}",
                fs.url()
            ))
            .header("stream-auth-type", "jwt")
            .header("authorization", user_token(user))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// The next frame that is not a `user.watching.start`.
    async fn next_chat_event(ws: &mut Ws) -> serde_json::Value {
        loop {
            let v = next_json(ws).await;
            if v["type"] != "user.watching.start" {
                return v;
            }
        }
    }

    #[tokio::test]
    async fn chat_watch_message_reaction_read_fan_out_to_watchers() {
        let fs = fake();
        let mut sockets = Vec::new();
        for user in ["alice", "bob"] {
            let mut ws = connect(&fs, &connect_query(KEY, &user_token(user), user)).await;
            let hc = next_json(&mut ws).await;
            assert_eq!(hc["me"]["mutes"], json!([]), "OwnUserResponse fields: {hc}");
            let conn = hc["connection_id"].as_str().unwrap().to_string();
            let resp = chat_post(
                &fs,
                "/channels/messaging/room/query",
                user,
                &conn,
                r#"{"state":true,"watch":true,"presence":false}"#,
            )
            .await;
            assert_eq!(resp.status(), 200);
            let state: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(state["channel"]["cid"], "messaging:room");
            assert_eq!(state["channel"]["config"]["read_events"], true);
            assert_eq!(state["membership"]["user_id"], user);
            sockets.push((user, conn, ws));
        }
        let (_, alice_conn, mut alice_ws) = sockets.remove(0);
        let (_, bob_conn, mut bob_ws) = sockets.remove(0);

        // Someone else's socket cannot watch.
        let resp = chat_post(
            &fs,
            "/channels/messaging/room/query",
            "carol",
            &alice_conn,
            r#"{"watch":true}"#,
        )
        .await;
        assert_eq!(resp.status(), 403);

        // A message: answered with the message, pushed to both watchers.
        let resp = chat_post(
            &fs,
            "/channels/messaging/room/message",
            "alice",
            &alice_conn,
            r#"{"message":{"text":"hi bob","custom_field":7}}"#,
        )
        .await;
        assert_eq!(resp.status(), 200);
        let sent: serde_json::Value = resp.json().await.unwrap();
        let msg = &sent["message"];
        assert_eq!(msg["text"], "hi bob");
        assert_eq!(msg["user"]["id"], "alice");
        assert_eq!(msg["cid"], "messaging:room");
        assert_eq!(msg["custom_field"], 7);
        let id = msg["id"].as_str().unwrap().to_string();
        for ws in [&mut alice_ws, &mut bob_ws] {
            let ev = next_chat_event(ws).await;
            assert_eq!(ev["type"], "message.new", "{ev}");
            assert_eq!(ev["cid"], "messaging:room");
            assert_eq!(ev["message"]["id"], id.as_str());
            assert_eq!(ev["user"]["id"], "alice");
        }
        // The same id twice is refused.
        let dup = format!(r#"{{"message":{{"id":"{id}","text":"again"}}}}"#);
        let resp = chat_post(&fs, "/channels/messaging/room/message", "alice", "", &dup).await;
        assert_eq!(resp.status(), 400);

        // A reaction from bob.
        let resp = chat_post(
            &fs,
            &format!("/messages/{id}/reaction"),
            "bob",
            &bob_conn,
            r#"{"reaction":{"type":"love"}}"#,
        )
        .await;
        assert_eq!(resp.status(), 200);
        let reacted: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(reacted["reaction"]["user_id"], "bob");
        assert_eq!(reacted["message"]["reaction_counts"]["love"], 1);
        assert_eq!(reacted["message"]["own_reactions"][0]["type"], "love");
        let ev = next_chat_event(&mut alice_ws).await;
        assert_eq!(ev["type"], "reaction.new", "{ev}");
        assert_eq!(ev["reaction"]["type"], "love");
        assert_eq!(ev["message"]["own_reactions"], json!([]));
        assert_eq!(next_chat_event(&mut bob_ws).await["type"], "reaction.new");
        let resp = chat_post(
            &fs,
            "/messages/nope/reaction",
            "bob",
            &bob_conn,
            r#"{"reaction":{"type":"love"}}"#,
        )
        .await;
        assert_eq!(resp.status(), 404);

        // Bob reads: answered with the event, pushed to the watchers.
        let resp = chat_post(&fs, "/channels/messaging/room/read", "bob", &bob_conn, "{}").await;
        assert_eq!(resp.status(), 200);
        let read: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(read["event"]["type"], "message.read");
        assert_eq!(read["event"]["last_read_message_id"], id.as_str());
        let ev = next_chat_event(&mut alice_ws).await;
        assert_eq!(ev["type"], "message.read", "{ev}");
        assert_eq!(ev["user"]["id"], "bob");

        // A later query has the message, the reaction and the read state.
        let resp = chat_post(&fs, "/channels/messaging/room/query", "alice", "", "{}").await;
        let state: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(state["messages"][0]["id"], id.as_str());
        assert_eq!(
            state["messages"][0]["latest_reactions"][0]["user_id"],
            "bob"
        );
        assert_eq!(state["watcher_count"], 2);
        let bob_read = state["read"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["user"]["id"] == "bob")
            .unwrap();
        assert_eq!(bob_read["unread_messages"], 0);

        // Bad bodies are Stream input errors.
        let resp = chat_post(
            &fs,
            "/channels/messaging/room/message",
            "alice",
            "",
            "{nope",
        )
        .await;
        assert_eq!(resp.status(), 400);
        let resp = chat_post(&fs, "/channels/messaging/room/message", "alice", "", "{}").await;
        assert_eq!(resp.status(), 400);

        let pushed = fs.pushed();
        assert!(pushed.iter().any(|p| p.user_id == "bob"
            && p.connection_id == bob_conn
            && p.event["type"] == "message.new"));

        // A closed socket stops watching.
        bob_ws.close(None).await.unwrap();
        drop(bob_ws);
        let deadline = Instant::now() + WAIT;
        while fs.open_sockets() > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let resp = chat_post(&fs, "/channels/messaging/room/query", "alice", "", "{}").await;
        let state: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(state["watcher_count"], 1);
    }

    /// QueryChannels (the SDK's state recovery after a reconnect): the caller's
    /// channels matching the filter, watched by the socket with `watch: true`.
    #[tokio::test]
    async fn query_channels_filters_and_watches() {
        let fs = fake();
        for (user, channel) in [("alice", "one"), ("alice", "two"), ("bob", "three")] {
            let path = format!("/channels/messaging/{channel}/query");
            assert_eq!(chat_post(&fs, &path, user, "", "{}").await.status(), 200);
        }
        let mut ws = connect(&fs, &connect_query(KEY, &user_token("alice"), "alice")).await;
        let conn = next_json(&mut ws).await["connection_id"]
            .as_str()
            .unwrap()
            .to_string();
        let body = json!({
            "filter_conditions": {"cid": {"$in": ["messaging:one", "messaging:three"]}},
            "sort": [{"field": "last_message_at", "direction": -1}],
            "state": true, "watch": true, "presence": false, "limit": 30,
        });
        let resp = chat_post(&fs, "/channels", "alice", &conn, &body.to_string()).await;
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = resp.json().await.unwrap();
        let cids: Vec<_> = v["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["channel"]["cid"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(cids, ["messaging:one"], "bob's channel is not alice's");
        assert_eq!(next_json(&mut ws).await["type"], "user.watching.start");
        let resp = chat_post(&fs, "/channels", "alice", "", "{}").await;
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["channels"].as_array().unwrap().len(), 2);
    }
}
