//! Local rate limits through the built gateway: the 429 in Stream's shape
//! with its headers, and what reached the upstream.

mod common;

use common::*;

fn setup(limits: &str) -> (FakeStream, Gateway) {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    // Appended after [tenants.session]: a sub-table of the same tenant.
    let gw = Gateway::start(&gateway_config(
        &fake.url(),
        "",
        &format!("[tenants.limits]\n{limits}"),
    ));
    (fake, gw)
}

async fn get(gw: &Gateway, session: &str) -> reqwest::Response {
    get_app(gw, session).await
}

async fn assert_rate_limited(resp: reqwest::Response, limit: &str, min_retry: u64, max_retry: u64) {
    let h = resp.headers().clone();
    assert_gateway_refusal(resp, 429, 9).await;
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (min_retry..=max_retry).contains(&retry),
        "Retry-After {retry}"
    );
    assert_eq!(h["x-ratelimit-limit"], limit);
    assert_eq!(h["x-ratelimit-remaining"], "0");
    let reset: i64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!(
        (reset - now() - retry as i64).abs() <= 2,
        "X-RateLimit-Reset {reset} is Unix seconds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limit_answers_429_code_9_with_rate_limit_headers() {
    let (fake, gw) = setup(r#"per_user = { rate = "6/min", burst = 2 }"#);
    let alice = session_for("alice");
    assert_eq!(get(&gw, &alice).await.status(), 200);
    assert_eq!(get(&gw, &alice).await.status(), 200);
    assert_rate_limited(get(&gw, &alice).await, "2", 9, 10).await;
    assert_eq!(
        fake.requests().len(),
        2,
        "the refused request was not forwarded"
    );
    assert_eq!(
        get(&gw, &session_for("bob")).await.status(),
        200,
        "bob has his own bucket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_and_per_tenant_limits_count_every_user() {
    let (fake, gw) = setup(r#"per_ip = { rate = "1/h", burst = 3 }"#);
    for u in ["a", "b", "c"] {
        assert_eq!(get(&gw, &session_for(u)).await.status(), 200);
    }
    assert_rate_limited(get(&gw, &session_for("d")).await, "3", 3590, 3600).await;
    assert_eq!(fake.requests().len(), 3);

    let (fake, gw) = setup(r#"per_tenant = { rate = "1/s", burst = 1 }"#);
    assert_eq!(get(&gw, &session_for("a")).await.status(), 200);
    assert_rate_limited(get(&gw, &session_for("b")).await, "1", 1, 1).await;
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_over_the_limit_gets_a_code_9_frame() {
    use futures_util::StreamExt;
    let (fake, gw) = setup(r#"per_user = { rate = "1/min", burst = 1 }"#);
    let alice = session_for("alice");
    assert_eq!(get(&gw, &alice).await.status(), 200);
    let url = format!(
        "ws://{}/connect?{}",
        gw.listen,
        common::fake_stream::connect_query(API_KEY, &alice, "alice")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let frame = ws.next().await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(v["error"]["code"], 9);
    assert_eq!(v["error"]["StatusCode"], 429);
    assert!(matches!(
        ws.next().await,
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(_))))
    ));
    assert!(fake.requests().iter().all(|r| r.path != "/connect"));
}

#[test]
fn bad_rates_are_config_errors() {
    let err = check_fails(
        "[tenants.limits]\nper_user = { rate = \"20/fortnight\", burst = 1 }\nper_ip = { rate = \"5/s\", burst = 0 }",
    );
    assert!(err.contains("limits.per_user.rate"), "{err}");
    assert!(err.contains("limits.per_ip.burst"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_limits_are_tighter_for_their_route_only() {
    let (fake, gw) =
        setup("[[tenants.limits.routes]]\nroute = \"SendMessage\"\nrate = \"1/min\"\nburst = 1");
    let alice = session_for("alice");
    let send = || {
        client()
            .post(format!(
                "{}/channels/messaging/general/message?api_key={API_KEY}",
                gw.url()
            ))
            .header("authorization", &alice)
            .body(r#"{"message":{"text":"hi"}}"#)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    assert_rate_limited(send().await.unwrap(), "1", 59, 60).await;
    assert_eq!(
        get(&gw, &alice).await.status(),
        200,
        "other routes are not limited"
    );
    assert_eq!(fake.requests().len(), 2);
}

#[test]
fn a_route_limit_naming_no_operation_is_a_config_error() {
    let err =
        check_fails("[[tenants.limits.routes]]\nroute = \"SendMesage\"\nrate = \"1/s\"\nburst = 1");
    assert!(
        err.contains("limits.routes[0].route") && err.contains("SendMesage"),
        "{err}"
    );
}
