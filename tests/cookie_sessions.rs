//! `cookie = "sid"` exactly as the contract shows it (design.md: no other
//! key): the config is accepted, and with no `allowed_origins` the session
//! cookie is taken from the gateway's own origin and from clients that are
//! not browsers, never from another site. Each refusal checks the client's
//! answer and that nothing reached the fake Stream.

mod common;

use common::*;
use serde_json::json;

fn cookie_only() -> String {
    format!("type = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret = \"{SESSION_SECRET}\"\nuser_id_claim = \"sub\"\ncookie = \"sid\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_session_without_origins_serves_its_own_origin_and_non_browsers_only() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let text = gateway_config_with_session(&fake.url(), "", &cookie_only(), "");
    // `check` accepts the contract's shape as it is.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let checked = text
        .replace("@LISTEN@", "127.0.0.1:1")
        .replace("@ADMIN@", "127.0.0.1:2");
    std::fs::write(&path, checked).unwrap();
    let out = run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "check refused cookie = \"sid\": {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let gw = Gateway::start(&text);
    let cookie = format!("theme=dark; sid={}", session_for("alice"));
    let app = format!("{}/app?api_key={API_KEY}", gw.url());
    let query = format!(
        "{}/channels/messaging/general/query?api_key={API_KEY}",
        gw.url()
    );
    let forwarded_as = |fake: &FakeStream| {
        let r = fake.requests().pop().expect("a forwarded request");
        assert!(r.header("cookie").is_none(), "the cookie reached Stream");
        r.user_id().expect("a user token upstream").to_string()
    };

    // A server-side or command-line client: no Origin, no Sec-Fetch-Site.
    let resp = client()
        .get(&app)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(forwarded_as(&fake), "alice");
    let resp = client()
        .post(&query)
        .header("cookie", &cookie)
        .json(&json!({"state": true}))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "a JSON POST with the cookie: {}",
        resp.status()
    );
    assert_eq!(forwarded_as(&fake), "alice");
    // A page served by the gateway's own origin.
    let own = gw.url();
    let resp = client()
        .post(&query)
        .header("cookie", &cookie)
        .header("origin", &own)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "own origin: {}", resp.status());
    assert_eq!(forwarded_as(&fake), "alice");

    // Other sites: refused, nothing forwarded.
    fake.clear();
    let refusals = [
        client().get(&app).header("origin", "https://evil.example"),
        client().get(&app).header("sec-fetch-site", "cross-site"),
        client()
            .post(&query)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("state=true"),
        client()
            .post(&query)
            .header("origin", "https://evil.example")
            .json(&json!({})),
    ];
    for req in refusals {
        let resp = req.header("cookie", &cookie).send().await.unwrap();
        assert_gateway_refusal(resp, 403, 17).await;
    }
    assert!(
        fake.requests().is_empty(),
        "a refused cookie request reached Stream"
    );
}
