//! Every refusal through the built gateway: what the client got (status,
//! Stream error JSON, no upstream marker) and that the upstream got nothing.

mod common;

use common::*;
use serde_json::json;

fn setup(tenant_extra: &str, top_extra: &str) -> (FakeStream, Gateway) {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(&fake.url(), tenant_extra, top_extra));
    (fake, gw)
}

async fn get(gw: &Gateway, path_and_query: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = client().get(format!("{}{path_and_query}", gw.url()));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

fn assert_upstream_untouched(fake: &FakeStream) {
    let reqs = fake.requests();
    assert!(
        reqs.is_empty(),
        "upstream received {} request(s): {reqs:#?}",
        reqs.len()
    );
}

#[tokio::test]
async fn missing_or_unknown_api_key_is_401_code_2() {
    let (fake, gw) = setup("", "");
    let s = session_for("alice");
    assert_gateway_refusal(get(&gw, "/app", Some(&s)).await, 401, 2).await;
    assert_gateway_refusal(get(&gw, "/app?api_key=nope", Some(&s)).await, 401, 2).await;
    assert_gateway_refusal(get(&gw, "/app?api_key=", Some(&s)).await, 401, 2).await;
    assert_upstream_untouched(&fake);
}

#[tokio::test]
async fn missing_session_is_401_code_5() {
    let (fake, gw) = setup("", "");
    let q = format!("/app?api_key={API_KEY}");
    assert_gateway_refusal(get(&gw, &q, None).await, 401, 5).await;
    assert_gateway_refusal(get(&gw, &q, Some("Bearer ")).await, 401, 5).await;
    assert_upstream_untouched(&fake);
}

#[tokio::test]
async fn expired_session_gets_code_40() {
    let (fake, gw) = setup("", "");
    let t = hs_token(
        "HS256",
        SESSION_SECRET,
        json!({"sub": "alice", "exp": now() - 10}),
    );
    let body = assert_gateway_refusal(
        get(&gw, &format!("/app?api_key={API_KEY}"), Some(&t)).await,
        401,
        40,
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("expired"));
    assert_upstream_untouched(&fake);
}

#[tokio::test]
async fn time_claim_failures_get_41_and_42() {
    let (fake, gw) = setup("", "");
    let q = format!("/app?api_key={API_KEY}");
    let nbf = hs_token(
        "HS256",
        SESSION_SECRET,
        json!({"sub": "a", "exp": now() + 600, "nbf": now() + 300}),
    );
    assert_gateway_refusal(get(&gw, &q, Some(&nbf)).await, 401, 41).await;
    let iat = hs_token(
        "HS256",
        SESSION_SECRET,
        json!({"sub": "a", "exp": now() + 600, "iat": now() + 300}),
    );
    assert_gateway_refusal(get(&gw, &q, Some(&iat)).await, 401, 42).await;
    assert_upstream_untouched(&fake);
}

#[tokio::test]
async fn bad_signatures_get_43_never_40() {
    let (fake, gw) = setup("", "");
    let q = format!("/app?api_key={API_KEY}");
    let wrong = hs_token(
        "HS256",
        "not-the-secret",
        json!({"sub": "a", "exp": now() + 600}),
    );
    assert_gateway_refusal(get(&gw, &q, Some(&wrong)).await, 401, 43).await;
    // expired AND badly signed: 43, or the SDK would refresh forever
    let both = hs_token(
        "HS256",
        "not-the-secret",
        json!({"sub": "a", "exp": now() - 600}),
    );
    assert_gateway_refusal(get(&gw, &q, Some(&both)).await, 401, 43).await;
    assert_upstream_untouched(&fake);
}

#[tokio::test]
async fn a_stream_token_is_not_a_session() {
    // A token signed with the tenant's Stream secret (what a leaked Stream
    // token looks like) must not pass as an app session.
    let (fake, gw) = setup("", "");
    let q = format!("/app?api_key={API_KEY}");
    let stream_token = hs_token(
        "HS256",
        STREAM_SECRET,
        json!({"user_id": "a", "sub": "a", "exp": now() + 600}),
    );
    assert_gateway_refusal(get(&gw, &q, Some(&stream_token)).await, 401, 43).await;
    let server_token = hs_token("HS256", STREAM_SECRET, json!({"server": true}));
    assert_gateway_refusal(get(&gw, &q, Some(&server_token)).await, 401, 43).await;
    assert_upstream_untouched(&fake);
}

#[tokio::test]
async fn malformed_and_unsigned_tokens_get_code_5() {
    let (fake, gw) = setup("", "");
    let q = format!("/app?api_key={API_KEY}");
    let none = none_token(json!({"sub": "a", "exp": now() + 600}));
    let hs512 = hs_token(
        "HS512",
        SESSION_SECRET,
        json!({"sub": "a", "exp": now() + 600}),
    );
    let bad_user = hs_token(
        "HS256",
        SESSION_SECRET,
        json!({"sub": "a/../b", "exp": now() + 600}),
    );
    let no_exp = hs_token("HS256", SESSION_SECRET, json!({"sub": "a"}));
    let no_sub = hs_token(
        "HS256",
        SESSION_SECRET,
        json!({"user_id": "a", "exp": now() + 600}),
    );
    for t in [
        none.as_str(),
        hs512.as_str(),
        bad_user.as_str(),
        no_exp.as_str(),
        no_sub.as_str(),
        "garbage",
        "a.b.c",
    ] {
        let body = assert_gateway_refusal(get(&gw, &q, Some(t)).await, 401, 5).await;
        assert!(
            !body.to_string().contains(t),
            "token echoed in the error body"
        );
    }
    assert_upstream_untouched(&fake);
}

#[tokio::test]
async fn alg_confusion_with_the_public_key_is_refused() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let config = gateway_config(&fake.url(), "", "")
        .replace(r#"algorithms = ["HS256"]"#, r#"algorithms = ["RS256"]"#)
        .replace(
            &format!(r#"secret = "{SESSION_SECRET}""#),
            &format!(r#"public_key = "file:{keys}/rsa.pub""#),
        );
    let gw = Gateway::start(&config);
    let public_pem = std::fs::read(format!("{keys}/rsa.pub")).unwrap();
    let forged = forged_token(
        json!({"alg": "HS256", "typ": "JWT"}),
        json!({"sub": "a", "exp": now() + 600}),
        &public_pem,
    );
    let q = format!("/app?api_key={API_KEY}");
    assert_gateway_refusal(get(&gw, &q, Some(&forged)).await, 401, 5).await;
    // and a real RS256 token from the private key passes
    let rsa = std::fs::read(format!("{keys}/rsa.key")).unwrap();
    let good = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"sub": "a", "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&rsa).unwrap(),
    )
    .unwrap();
    assert_upstream_untouched(&fake);
    assert_eq!(get(&gw, &q, Some(&good)).await.status(), 200);
}

#[tokio::test]
async fn conflicting_credentials_are_400_code_4() {
    let (fake, gw) = setup("", "");
    let (a, b) = (session_for("alice"), session_for("mallory"));
    let resp = get(
        &gw,
        &format!("/app?api_key={API_KEY}&authorization={b}"),
        Some(&a),
    )
    .await;
    assert_gateway_refusal(resp, 400, 4).await;
    let resp = client()
        .get(format!("{}/app?api_key={API_KEY}", gw.url()))
        .header("authorization", &a)
        .header("authorization", &b)
        .send()
        .await
        .unwrap();
    assert_gateway_refusal(resp, 400, 4).await;
    let resp = get(
        &gw,
        &format!("/app?api_key={API_KEY}&api_key=other"),
        Some(&a),
    )
    .await;
    assert_gateway_refusal(resp, 400, 4).await;
    assert_upstream_untouched(&fake);
}

#[tokio::test]
async fn anonymous_is_refused_unless_the_tenant_allows_it() {
    let (fake, gw) = setup("", "");
    let resp = client()
        .get(format!("{}/app?api_key={API_KEY}", gw.url()))
        .header("stream-auth-type", "anonymous")
        .send()
        .await
        .unwrap();
    assert_gateway_refusal(resp, 401, 5).await;
    assert_upstream_untouched(&fake);
}

#[tokio::test]
async fn unknown_routes_are_403_code_17_by_default() {
    let (fake, gw) = setup("", "");
    let s = session_for("alice");
    for p in [
        "/",
        "/nope",
        "/channels/messaging/general/secret-admin",
        "/api/v3/chat/channels",
    ] {
        assert_gateway_refusal(
            get(&gw, &format!("{p}?api_key={API_KEY}"), Some(&s)).await,
            403,
            17,
        )
        .await;
    }
    assert_upstream_untouched(&fake);
}

#[tokio::test]
async fn config_deny_rule_blocks_a_client_operation() {
    let (fake, gw) = setup("", "[policy]\ndeny = [\"GetApp\"]");
    assert_gateway_refusal(
        get(
            &gw,
            &format!("/app?api_key={API_KEY}"),
            Some(&session_for("a")),
        )
        .await,
        403,
        17,
    )
    .await;
    assert_upstream_untouched(&fake);
}

/// Fills each `{placeholder}` with a sample value.
fn fill(template: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') { "x1" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_server_side_route_of_the_table_is_refused() {
    let (fake, gw) = setup("", "");
    let s = session_for("alice");
    let table = include_str!("../src/policy/data/routes.tsv");
    let c = client();
    let mut checked = 0;
    let (mut v1, mut v2) = (0, 0);
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols[2] != "server" {
            continue;
        }
        let path = fill(cols[1]);
        let method = reqwest::Method::from_bytes(cols[0].as_bytes()).unwrap();
        let resp = c
            .request(method, format!("{}{path}?api_key={API_KEY}", gw.url()))
            .header("authorization", &s)
            .send()
            .await
            .unwrap();
        assert!(resp.headers().get("x-fake-upstream").is_none(), "{line}");
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!((status, body["code"].as_i64()), (403, Some(17)), "{line}");
        checked += 1;
        if cols[1].starts_with("/api/v2/") {
            v2 += 1;
        } else {
            v1 += 1;
        }
    }
    assert_eq!(checked, 236, "every server row of routes.tsv");
    assert!(v1 > 100 && v2 > 100, "v1 {v1}, v2 {v2}");
    assert_upstream_untouched(&fake);
}

#[test]
fn normalisation_bypass_attempts_are_refused() {
    let (fake, gw) = setup("", "");
    let s = session_for("alice");
    let cases: &[(&str, u16, i64)] = &[
        ("//channeltypes", 403, 17),
        ("/channeltypes/", 403, 17),
        ("/./channeltypes", 403, 17),
        ("/channels/../channeltypes", 403, 17),
        ("/channels/%2e%2e/channeltypes", 403, 17),
        ("/channels/%2E%2E/channeltypes", 403, 17),
        ("/channels/.%2e/channeltypes", 403, 17),
        ("/ChannelTypes", 403, 17),
        ("/CHANNELTYPES/messaging", 403, 17),
        ("/%63hanneltypes", 403, 17),
        ("/api/v2/../../channeltypes", 403, 17),
        ("/api/../../channeltypes", 400, 4),
        ("/API/V2/CHAT/CHANNELTYPES", 403, 17),
        ("/channels/%252e%252e/channeltypes", 400, 4),
        ("/channels/%252e%252e/%252e%252e/channeltypes", 400, 4),
        ("/channeltypes;x=1", 400, 4),
        ("/channeltypes%3bx=1", 400, 4),
        ("/channels;/../channeltypes", 400, 4),
        ("/channels%2fchanneltypes", 400, 4),
        ("/channels%2Fchanneltypes", 400, 4),
        ("/channels\\..\\channeltypes", 400, 4),
        ("/channels%5c..%5cchanneltypes", 400, 4),
        ("/channels%00/x", 400, 4),
        ("/..", 400, 4),
        ("/users/deactivate", 403, 17),
        ("/Users/Deactivate", 403, 17),
        ("/users/%64eactivate", 403, 17),
        ("/messages/history", 403, 17),
    ];
    for (path, status, code) in cases {
        let method = if path.contains("messages/history")
            || path.to_ascii_lowercase().contains("deactivate")
        {
            "POST"
        } else {
            "GET"
        };
        let (got, headers, body) = raw_request(
            gw.listen,
            &format!("{method} {path}?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\nAuthorization: {s}\r\nContent-Length: 0"),
        );
        let body: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{path}: not JSON: {}", String::from_utf8_lossy(&body)));
        assert_eq!(
            (got, body["code"].as_i64()),
            (*status, Some(*code)),
            "{method} {path}: {body}"
        );
        assert_eq!(body["StatusCode"].as_i64(), Some(i64::from(*status)));
        assert!(
            !headers.iter().any(|(k, _)| k == "x-fake-upstream"),
            "{path}"
        );
    }
    assert_upstream_untouched(&fake);
}

#[tokio::test]
async fn a_session_that_expires_after_being_used_gets_code_40() {
    // The first request verifies and caches the session; the expiry is still
    // checked on every later request.
    let (fake, gw) = setup("", "");
    let exp = now() + 2;
    let t = hs_token("HS256", SESSION_SECRET, json!({"sub": "alice", "exp": exp}));
    let q = format!("/app?api_key={API_KEY}");
    assert_eq!(get(&gw, &q, Some(&t)).await.status(), 200);
    assert_eq!(fake.requests().len(), 1);
    let wait = (exp + 1 - now()).max(0) as u64;
    tokio::time::sleep(std::time::Duration::from_millis(wait * 1000 + 100)).await;
    assert_gateway_refusal(get(&gw, &q, Some(&t)).await, 401, 40).await;
    assert_eq!(
        fake.requests().len(),
        1,
        "the expired request was not forwarded"
    );
}

/// Regression (found in session 5, over TLS in tests/tls.rs): the gateway
/// refused an upload before reading its body and closed the connection with
/// the body unread; the socket then reset, and a client still writing got
/// "broken pipe" instead of the refusal. An expired session uploading a
/// large body must get its 401 code 40 (the SDK refreshes on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_gets_its_refusal_not_a_reset() {
    let (fake, gw) = setup("", "");
    let expired = hs_token(
        "HS256",
        SESSION_SECRET,
        json!({"sub": "alice", "iat": now() - 120, "exp": now() - 60}),
    );
    // 16 MiB: more than the socket buffers hold, and over the fast path's
    // 64 KiB, so pingora's path refuses it from the head alone.
    let body = vec![b' '; 16 << 20];
    for i in 0..10 {
        let resp = client()
            .post(format!(
                "{}/channels/messaging/general/message?api_key={API_KEY}",
                gw.url()
            ))
            .header("authorization", &expired)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload {i}: no answer, {e:?}"));
        assert_gateway_refusal(resp, 401, 40).await;
    }
    assert_upstream_untouched(&fake);
}
