//! CORS for browser apps: preflights answered by the gateway (never
//! forwarded), `Access-Control-*` and `Vary: Origin` on every answer to an
//! allowed origin (refusals included), other origins refused for requests,
//! preflights and websocket upgrades.

mod common;

use common::fake_stream::connect_query;
use common::*;
use futures_util::StreamExt;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const APP: &str = "http://127.0.0.1:5173";

fn setup(extra: &str) -> (FakeStream, Gateway) {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(
        &fake.url(),
        &format!("allowed_origins = [\"{APP}\", \"https://chat.example.com\"]\n{extra}"),
        "",
    ));
    (fake, gw)
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_is_answered_by_the_gateway_for_allowed_origins_only() {
    let (fake, gw) = setup("");
    let url = format!(
        "{}/channels/messaging/general/message?api_key={API_KEY}",
        gw.url()
    );
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,stream-auth-type,x-stream-client,x-client-request-id",
            )
            .send()
    };
    let resp = preflight(APP).await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert!(header(&resp, "vary").unwrap().contains("Origin"));
    assert!(header(&resp, "access-control-max-age").is_some());
    let methods = header(&resp, "access-control-allow-methods").unwrap();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let allowed = header(&resp, "access-control-allow-headers")
        .unwrap()
        .to_lowercase();
    for h in [
        "authorization",
        "content-type",
        "stream-auth-type",
        "x-stream-client",
        "x-client-request-id",
    ] {
        assert!(allowed.contains(h), "{allowed}");
    }
    assert!(
        header(&resp, "access-control-allow-credentials").is_none(),
        "no cookies here"
    );

    let resp = preflight("https://evil.example").await.unwrap();
    assert!(header(&resp, "access-control-allow-origin").is_none());
    assert_gateway_refusal(resp, 403, 17).await;
    assert!(fake.requests().is_empty(), "a preflight reached Stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_to_an_allowed_origin_carry_cors_headers_refusals_too() {
    let (fake, gw) = setup("");
    let url = format!("{}/app?api_key={API_KEY}", gw.url());
    let resp = client()
        .get(&url)
        .header("origin", APP)
        .header("authorization", session_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert!(header(&resp, "vary").unwrap().contains("Origin"));
    let expose = header(&resp, "access-control-expose-headers").unwrap();
    assert!(expose.contains("x-ratelimit-remaining") && expose.contains("x-request-id"));

    // An expired session: the SDK must be able to read code 40 to refresh.
    let expired = hs_token(
        "HS256",
        SESSION_SECRET,
        serde_json::json!({"sub": "alice", "exp": now() - 10}),
    );
    let resp = client()
        .get(&url)
        .header("origin", "https://chat.example.com")
        .header("authorization", expired)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some("https://chat.example.com")
    );
    assert_gateway_refusal(resp, 401, 40).await;

    // Another origin: refused, nothing forwarded.
    fake.clear();
    let resp = client()
        .post(format!(
            "{}/channels/messaging/general/message?api_key={API_KEY}",
            gw.url()
        ))
        .header("origin", "https://evil.example")
        .header("authorization", session_for("alice"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(header(&resp, "access-control-allow-origin").is_none());
    assert_gateway_refusal(resp, 403, 17).await;
    assert!(fake.requests().is_empty());

    // No Origin (a server or a native app): no CORS headers, served.
    let resp = client()
        .get(&url)
        .header("authorization", session_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_from_other_origins_are_refused() {
    let (fake, gw) = setup("");
    let q = connect_query(API_KEY, &session_for("alice"), "alice");
    let open = |origin: &'static str| {
        let mut req = format!("ws://{}/connect?{q}", gw.listen)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    let (mut ws, _) = open(APP).await.unwrap();
    assert_eq!(common::ws::next_json(&mut ws).await["type"], "health.check");
    fake.clear();
    let (mut ws, _) = open("https://evil.example").await.unwrap();
    let v = common::ws::next_json(&mut ws).await;
    assert_eq!(v["error"]["code"], 17, "{v}");
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(f))))) => assert_eq!(u16::from(f.code), 1000),
        other => panic!("expected close 1000, got {other:?}"),
    }
    assert!(
        fake.requests().is_empty(),
        "the refused upgrade reached Stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_tenants_allow_credentials_and_tenants_without_origins_do_no_cors() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let session = format!(
        "type = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret = \"{SESSION_SECRET}\"\ncookie = \"sid\"\nallowed_origins = [\"{APP}\"]"
    );
    let gw = Gateway::start(&gateway_config_with_session(
        &fake.url(),
        &format!("allowed_origins = [\"{APP}\"]"),
        &session,
        "",
    ));
    let resp = client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/app?api_key={API_KEY}", gw.url()),
        )
        .header("origin", APP)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        header(&resp, "access-control-allow-credentials").as_deref(),
        Some("true")
    );

    let (_fake2, plain) = {
        let f = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
        let g = Gateway::start(&gateway_config(&f.url(), "", ""));
        (f, g)
    };
    let resp = client()
        .get(format!("{}/app?api_key={API_KEY}", plain.url()))
        .header("origin", "https://anything.example")
        .header("authorization", session_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "access-control-allow-origin").is_none());
}

#[test]
fn config_check_refuses_bad_allowed_origins() {
    for (origins, want) in [
        ("[\"*\"]", "wildcard"),
        ("[\"https://app.example.com/\"]", "no path"),
        ("[\"app.example.com\"]", "must start with"),
    ] {
        let err = common::check_fails_tenant(&format!("allowed_origins = {origins}"));
        assert!(
            err.contains("allowed_origins") && err.contains(want),
            "{origins}: {err}"
        );
    }
}
