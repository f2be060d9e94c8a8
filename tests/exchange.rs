//! The token exchange through the built gateway: what reaches the fake Stream
//! when a client presents a valid app session.

mod common;

use common::*;
use std::io::Read;
use std::time::Duration;

fn setup(tenant_extra: &str, top_extra: &str) -> (FakeStream, Gateway) {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(&fake.url(), tenant_extra, top_extra));
    (fake, gw)
}

fn only_request(fake: &FakeStream) -> Recorded {
    let reqs = fake.wait_for_requests(1, Duration::from_secs(5));
    assert_eq!(reqs.len(), 1, "upstream requests: {reqs:#?}");
    reqs.into_iter().next().unwrap()
}

/// The session token must not appear anywhere in what the upstream got.
fn assert_no_session_token(r: &Recorded, token: &str) {
    assert!(!r.path.contains(token));
    assert!(!r.raw_query.clone().unwrap_or_default().contains(token));
    for (k, v) in &r.headers {
        assert!(!v.contains(token), "session token leaked in header {k}");
    }
    assert!(!String::from_utf8_lossy(&r.body).contains(token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_session_is_forwarded_with_a_minted_stream_token() {
    let (fake, gw) = setup("", "");
    let session = session_for("alice");
    let resp = client()
        .get(format!(
            "{}/channels/messaging/general?api_key={API_KEY}&user_id=mallory&state=true",
            gw.url()
        ))
        .header("authorization", &session)
        .header("x-stream-client", "stream-chat-js-v9.49.0-node")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-fake-upstream"], "1");
    let r = only_request(&fake);
    match &r.auth {
        Ok(StreamAuth::User {
            user_id, iat, exp, ..
        }) => {
            assert_eq!(user_id, "alice");
            let (iat, exp) = (iat.unwrap(), exp.unwrap());
            assert_eq!(exp - iat, 3600, "default stream_token_ttl is 1h");
            assert!((iat - now()).abs() <= 5);
        }
        other => panic!("upstream did not accept the minted token: {other:?}"),
    }
    let stream_token = r.header("authorization").unwrap();
    let claims = jwt_claims(stream_token);
    let mut keys: Vec<_> = claims.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["exp", "iat", "user_id"]);
    assert_eq!(r.header("stream-auth-type"), Some("jwt"));
    assert_eq!(r.query_param("api_key"), Some(API_KEY));
    assert_eq!(
        r.query_all("user_id"),
        ["alice"],
        "client user_id overwritten"
    );
    assert_eq!(r.query_param("state"), Some("true"));
    assert_eq!(
        r.header("x-stream-client"),
        Some("stream-chat-js-v9.49.0-node")
    );
    assert_no_session_token(&r, &session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_prefix_variants_are_stripped() {
    let (fake, gw) = setup("", "");
    let session = session_for("bob");
    for value in [
        format!("Bearer {session}"),
        format!("bearer {session}"),
        format!("BEARER    {session}"),
        format!("  Bearer\t{session} "),
        session.clone(),
    ] {
        fake.clear();
        let resp = client()
            .get(format!("{}/app?api_key={API_KEY}", gw.url()))
            .header("authorization", value.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{value:?}");
        let r = only_request(&fake);
        assert!(
            matches!(r.auth, Ok(StreamAuth::User { ref user_id, .. }) if user_id == "bob"),
            "{value:?}: {:?}",
            r.auth
        );
        assert!(!r
            .header("authorization")
            .unwrap()
            .to_ascii_lowercase()
            .starts_with("bearer"));
        assert_no_session_token(&r, &session);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_credential_and_auth_params_are_replaced() {
    let (fake, gw) = setup("", "");
    let session = session_for("carol");
    let resp = client()
        .get(format!(
            "{}/app?api_key={API_KEY}&authorization=Bearer%20{session}&stream-auth-type=anonymous",
            gw.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = only_request(&fake);
    assert!(r.query_all("authorization").is_empty());
    assert!(r.query_all("stream-auth-type").is_empty());
    assert_eq!(r.header("stream-auth-type"), Some("jwt"));
    assert_no_session_token(&r, &session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_cookies_and_forwarding_headers_are_not_forwarded() {
    let (fake, gw) = setup("", "");
    let session = session_for("dave");
    let resp = client()
        .get(format!("{}/app?api_key={API_KEY}", gw.url()))
        .header("authorization", &session)
        .header("stream-auth-type", "anonymous")
        .header("cookie", "sid=secret-cookie")
        .header("proxy-authorization", "Basic abc")
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("x-http-method-override", "DELETE")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = only_request(&fake);
    for gone in [
        "cookie",
        "proxy-authorization",
        "forwarded",
        "x-real-ip",
        "x-http-method-override",
    ] {
        assert!(r.header(gone).is_none(), "{gone} was forwarded");
    }
    assert_eq!(r.header_all("stream-auth-type"), ["jwt"]);
    assert_eq!(r.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    assert_eq!(r.header("host"), Some(fake.addr.to_string().as_str()));
    assert_eq!(r.header("x-custom"), Some("kept"));
    assert_no_session_token(&r, &session);
}

#[test]
fn the_normalised_path_is_what_is_forwarded() {
    let (fake, gw) = setup("", "");
    let session = session_for("erin");
    for (sent, forwarded) in [
        (
            "//channels/messaging/./general/",
            "/channels/messaging/general",
        ),
        ("/CHANNELS/messaging/General", "/channels/messaging/General"),
        (
            "/channels/x/../messaging/general",
            "/channels/messaging/general",
        ),
        (
            "/%63hannels/messaging/gen%65ral",
            "/channels/messaging/general",
        ),
    ] {
        fake.clear();
        let (status, _, body) = raw_request(
            gw.listen,
            &format!(
                "GET {sent}?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\nAuthorization: {session}"
            ),
        );
        assert_eq!(status, 200, "{sent}: {}", String::from_utf8_lossy(&body));
        assert_eq!(only_request(&fake).path, forwarded, "{sent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_forwarded() {
    let (fake, gw) = setup("", "");
    let body = r#"{"message":{"text":"hello"}}"#;
    let resp = client()
        .post(format!(
            "{}/channels/messaging/general/message?api_key={API_KEY}",
            gw.url()
        ))
        .header("authorization", session_for("frank"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = only_request(&fake);
    assert_eq!(r.method, "POST");
    assert_eq!(r.body, body.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_and_rate_limit_headers_pass_through() {
    let (fake, gw) = setup("", "");
    let resp = client()
        .get(format!("{}/app?api_key={API_KEY}", gw.url()))
        .header("authorization", session_for("gina"))
        .header("x-fake-status", "429")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["x-fake-upstream"], "1");
    assert_eq!(resp.headers()["x-ratelimit-limit"], "60");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    assert!(resp.headers().contains_key("x-ratelimit-reset"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 9);
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_responses_pass_through_untouched() {
    let (fake, gw) = setup("", "");
    let resp = client()
        .get(format!("{}/app?api_key={API_KEY}", gw.url()))
        .header("authorization", session_for("hank"))
        .header("accept-encoding", "gzip")
        .header("x-fake-gzip", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let raw = resp.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_string(&mut text)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["fake"]["user_id"], "hank");
    assert_eq!(only_request(&fake).header("accept-encoding"), Some("gzip"));
}

async fn stream_token_seen(fake: &FakeStream, gw: &Gateway, session: &str) -> String {
    fake.clear();
    let resp = client()
        .get(format!("{}/app?api_key={API_KEY}", gw.url()))
        .header("authorization", session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    only_request(fake)
        .header("authorization")
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_are_cached_per_user() {
    let (fake, gw) = setup("", "");
    let alice = session_for("alice");
    let first = stream_token_seen(&fake, &gw, &alice).await;
    let again = stream_token_seen(&fake, &gw, &session_for("alice")).await;
    assert_eq!(first, again, "same user, token reused from the cache");
    let bob = stream_token_seen(&fake, &gw, &session_for("bob")).await;
    assert_ne!(first, bob);
    assert_eq!(jwt_claims(&bob)["user_id"], "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_are_refreshed_before_they_expire() {
    // ttl 2s: a cached token is reused only while 3/4 of its life is left,
    // i.e. for the first second after it was minted.
    let (fake, gw) = setup(r#"stream_token_ttl = "2s""#, "");
    let s = session_for("ivy");
    let first = stream_token_seen(&fake, &gw, &s).await;
    assert_eq!(
        jwt_claims(&first)["exp"].as_i64().unwrap() - jwt_claims(&first)["iat"].as_i64().unwrap(),
        2
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = stream_token_seen(&fake, &gw, &s).await;
    assert_ne!(first, second, "re-minted after 3/4 of the ttl");
    assert!(jwt_claims(&second)["iat"].as_i64() > jwt_claims(&first)["iat"].as_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_chosen_by_api_key_and_sign_with_their_own_secret() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET), ("beta-key", "beta-stream-secret")]);
    let extra = r#"
[[tenants]]
id = "beta"
api_key = "beta-key"
api_secret = "beta-stream-secret"

[tenants.session]
type = "jwt"
algorithms = ["HS512"]
secret = "beta-session-secret"
user_id_claim = "uid"
"#;
    let gw = Gateway::start(&gateway_config(&fake.url(), "", extra));
    let beta_session = hs_token(
        "HS512",
        "beta-session-secret",
        serde_json::json!({"uid": "zed", "exp": now() + 60}),
    );
    let resp = client()
        .get(format!("{}/app?api_key=beta-key", gw.url()))
        .header("authorization", &beta_session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = only_request(&fake);
    assert!(
        matches!(r.auth, Ok(StreamAuth::User { ref user_id, .. }) if user_id == "zed"),
        "{:?}",
        r.auth
    );
    // The acme tenant does not accept beta's sessions.
    let resp = client()
        .get(format!("{}/app?api_key={API_KEY}", gw.url()))
        .header("authorization", &beta_session)
        .send()
        .await
        .unwrap();
    assert_gateway_refusal(resp, 401, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_are_forwarded_where_the_tenant_allows_them() {
    let (fake, gw) = setup("allow_anonymous = true", "");
    let resp = client()
        .get(format!(
            "{}/app?api_key={API_KEY}&user_id=someone",
            gw.url()
        ))
        .header("stream-auth-type", "anonymous")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = only_request(&fake);
    assert_eq!(r.auth, Ok(StreamAuth::Anonymous));
    assert!(r.header("authorization").is_none());
    assert!(
        r.query_all("user_id").is_empty(),
        "anonymous has no user to act as"
    );
    fake.clear();
    let resp = client()
        .patch(format!("{}/app?api_key={API_KEY}", gw.url()))
        .header("stream-auth-type", "anonymous")
        .send()
        .await
        .unwrap();
    assert_gateway_refusal(resp, 403, 17).await;
    assert!(fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_allow_rule_opens_an_unknown_route() {
    let (fake, gw) = setup("", "[policy]\nallow = [\"GET /__echo_auth\"]");
    let resp = client()
        .get(format!("{}/__echo_auth?api_key={API_KEY}", gw.url()))
        .header("authorization", session_for("jay"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(only_request(&fake).path, "/__echo_auth");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longpoll_json_is_bound_to_the_session_and_loses_user_token() {
    let (fake, gw) = setup("", "");
    let session = session_for("alice");
    let json = serde_json::json!({"user_id": "alice", "user_token": session}).to_string();
    let resp = client()
        .get(format!("{}/longpoll", gw.url()))
        .query(&[("json", json.as_str()), ("api_key", API_KEY)])
        .header("authorization", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = only_request(&fake);
    let forwarded: serde_json::Value =
        serde_json::from_str(r.query_param("json").unwrap()).unwrap();
    assert_eq!(forwarded, serde_json::json!({"user_id": "alice"}));
    assert_no_session_token(&r, &session);

    fake.clear();
    let other = serde_json::json!({"user_id": "mallory"}).to_string();
    let resp = client()
        .get(format!("{}/longpoll", gw.url()))
        .query(&[("json", other.as_str()), ("api_key", API_KEY)])
        .header("authorization", &session)
        .send()
        .await
        .unwrap();
    assert_gateway_refusal(resp, 403, 17).await;
    assert!(fake.requests().is_empty());
}
