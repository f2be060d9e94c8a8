//! Secrets never leak (issue 9): one gateway with the most verbose log level
//! and a file audit log takes a mix of traffic (good and refused REST calls,
//! forged and expired tokens, a token signed with the Stream secret,
//! websockets with the token in the query and in the `json` payload), then
//! every log line, audit record, metric, response header and body is searched
//! for every secret and token used, and for the tokens the gateway minted.
//!
//! (Every other test's gateway is checked too, less thoroughly: the test
//! harness greps each gateway's logs and /metrics for tokens and the test
//! secrets when it is dropped; see `tests/common/gateway.rs`.)

mod common;

use common::ws::{connect, next_json};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_appears_in_logs_audit_metrics_or_answers() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let cfg = gateway_config(
        &fake.url(),
        "",
        &format!(
            "[log]\nlevel = \"trace\"\n\n[audit]\nsink = \"file\"\npath = \"{}\"",
            audit.display()
        ),
    );
    let gw = Gateway::start(&cfg);

    let good = session_for("alice");
    let expired = hs_token(
        "HS256",
        SESSION_SECRET,
        serde_json::json!({"sub": "alice", "iat": now() - 700, "exp": now() - 100}),
    );
    let forged = hs_token(
        "HS256",
        "not-the-session-secret",
        serde_json::json!({"sub": "alice", "exp": now() + 600}),
    );
    let stream_signed = hs_token(
        "HS256",
        STREAM_SECRET,
        serde_json::json!({"user_id": "alice", "exp": now() + 600}),
    );
    let tokens = [&good, &expired, &forged, &stream_signed];
    // The detector itself finds what it must (else this test proves nothing).
    for t in tokens {
        assert!(find_leak(&format!("log line authorization={t} end")).is_some());
    }
    assert!(find_leak(&format!("secret: {STREAM_SECRET}")).is_some());
    assert_eq!(
        find_leak("request_id=0123abcd user=alice eyJ-not-a-token"),
        None
    );

    let mut answers = String::new();
    let record = |resp: reqwest::Response| async move {
        let mut text = format!("{}\n", resp.status());
        for (k, v) in resp.headers() {
            text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        text.push_str(&resp.text().await.unwrap_or_default());
        text
    };
    let base = gw.url();
    let http = client();
    let calls = [
        format!("{base}/app?api_key={API_KEY}"),
        format!("{base}/channeltypes?api_key={API_KEY}"),
        format!("{base}/nope?api_key={API_KEY}"),
        format!("{base}/app?api_key=unknown-key"),
    ];
    for url in &calls {
        for t in tokens {
            for value in [t.to_string(), format!("Bearer {t}")] {
                let resp = http
                    .get(url)
                    .header("authorization", value)
                    .send()
                    .await
                    .unwrap();
                answers.push_str(&record(resp).await);
            }
        }
    }
    // Two different credentials (header and query).
    let resp = http
        .get(format!(
            "{base}/app?api_key={API_KEY}&authorization={forged}"
        ))
        .header("authorization", &good)
        .send()
        .await
        .unwrap();
    answers.push_str(&record(resp).await);
    // A body with a server-only field.
    let resp = http
        .post(format!(
            "{base}/channels/messaging/general/message?api_key={API_KEY}"
        ))
        .header("authorization", &good)
        .json(&serde_json::json!({"message": {"text": "hi", "user_id": "bob"}}))
        .send()
        .await
        .unwrap();
    answers.push_str(&record(resp).await);

    // Websockets: the token in the query and (old SDKs) in `json`.
    let json = serde_json::json!({
        "user_id": "alice",
        "user_details": {"id": "alice"},
        "user_token": good,
        "server_determines_connection_id": true
    })
    .to_string();
    let query = |token: &str| {
        format!(
            "json={}&api_key={API_KEY}&authorization={}&stream-auth-type=jwt",
            common::ws::urlencode(&json),
            common::ws::urlencode(token)
        )
    };
    let mut ws = connect(&gw, &query(&good)).await;
    answers.push_str(&next_json(&mut ws).await.to_string());
    drop(ws);
    for t in [&expired, &forged] {
        let mut ws = connect(&gw, &query(t)).await;
        answers.push_str(&next_json(&mut ws).await.to_string());
    }

    // What the gateway minted (it went to the fake Stream and nowhere else).
    let minted: Vec<String> = fake
        .requests()
        .iter()
        .filter_map(|r| {
            r.header("authorization")
                .map(str::to_string)
                .or_else(|| r.query_param("authorization").map(str::to_string))
        })
        .collect();
    assert!(
        !minted.is_empty(),
        "nothing was forwarded: the test proves nothing"
    );
    let metrics = metrics_text(&gw).await;
    // Let the audit writer flush, then read everything the gateway wrote.
    eventually(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(50),
        "audit records written",
        || async {
            std::fs::read_to_string(&audit)
                .unwrap_or_default()
                .lines()
                .count()
                >= 30
        },
    )
    .await;
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let places = [
        ("stderr (logs)", gw.stderr()),
        ("stdout", gw.stdout()),
        ("audit", audit_text),
        ("metrics", metrics),
        ("answers", answers),
    ];
    let secrets = [STREAM_SECRET, SESSION_SECRET, "not-the-session-secret"];
    for (what, text) in &places {
        assert!(!text.is_empty() || *what == "stdout", "{what} is empty");
        for s in secrets {
            assert!(!text.contains(s), "{what} contains the secret {s}");
        }
        for t in tokens
            .iter()
            .map(|t| t.as_str())
            .chain(minted.iter().map(String::as_str))
        {
            // The signature alone is enough to count as a leak.
            let sig = t.rsplit('.').next().unwrap();
            assert!(!text.contains(sig), "{what} contains a token's signature");
        }
        assert_eq!(find_leak(text), None, "{what}");
    }
    // The right log was read (the gateway logs little per request even at
    // trace level: no request line, no headers, no query).
    assert!(gw.stderr().contains("stream-gateway starting"));
}
