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
    assert_eq!(
        body,
        json!({"duration":"0.42ms","fake":{"method":"POST","path":"/channels/messaging/general/query","user_id":"alice","auth":"jwt","body_len":14}})
    );

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
            "no user_id",
            hs_token("HS256", SECRET, json!({"sub": "alice"})),
        ),
        (
            "numeric user_id",
            hs_token("HS256", SECRET, json!({"user_id": 7})),
        ),
        (
            "server false",
            hs_token("HS256", SECRET, json!({"server": false})),
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
    assert_eq!(fs.requests().len(), 10);
    assert!(fs.requests().iter().all(|r| r.auth.is_err()));
    assert_eq!(fs.requests()[9].header_all("authorization").len(), 2);
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
