//! Audit records and metrics end to end: a run of requests (forwarded and
//! every kind of refusal, plus a websocket session) gives exactly the
//! expected audit records and metric increments, request ids travel both
//! ways, and no token or secret appears in the audit log, the metrics or
//! the gateway's logs. The Redis sink is tested against a real redis-server,
//! with Redis down under `drop` and under `block`.

mod common;

use common::fake_stream::connect_query;
use common::redis::RedisServer;
use common::ws::{connect, next_json};
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

async fn metrics(gw: &Gateway) -> String {
    metrics_text(gw).await
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .find(|l| {
            let rest = &l[name.len()..];
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_gives_one_audit_record_and_its_metrics() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(
        &fake.url(),
        "[[tenants.limits.routes]]\nroute = \"SendMessage\"\nrate = \"1/min\"\nburst = 1",
        "[audit]\nsink = \"file\"\npath = \"audit.log\"\nqueue_size = 100\n\n[log]\nformat = \"json\"\nlevel = \"debug\"",
    ));
    let audit_path = gw.config_path().parent().unwrap().join("audit.log");
    let alice = session_for("alice");
    let expired = hs_token(
        "HS256",
        SESSION_SECRET,
        json!({"sub": "alice", "exp": now() - 60}),
    );
    let url = |p: &str| format!("{}{p}", gw.url());
    let app = format!("/app?api_key={API_KEY}");

    // 1. forwarded, with the client's request id.
    let resp = client()
        .get(url(&app))
        .header("authorization", &alice)
        .header("x-request-id", "req-abc.1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-abc.1");
    let upstream = fake.requests().pop().unwrap();
    assert_eq!(upstream.header("x-request-id"), Some("req-abc.1"));
    // 2. forwarded again (cached Stream token); a bad request id is replaced.
    let resp = client()
        .get(url(&app))
        .header("authorization", &alice)
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 32, "{generated}");
    assert_eq!(
        fake.requests().pop().unwrap().header("x-request-id"),
        Some(generated.as_str())
    );
    // 3. server-side route; 4. unknown route; 5. expired session; 6. bad request.
    let refused = [
        (
            client().patch(url(&app)).header("authorization", &alice),
            403,
            17,
        ),
        (
            client()
                .get(url(&format!("/nope/x?api_key={API_KEY}")))
                .header("authorization", &alice),
            403,
            17,
        ),
        (
            client().get(url(&app)).header("authorization", &expired),
            401,
            40,
        ),
        (
            client()
                .get(url(&format!("{app}&authorization={expired}")))
                .header("authorization", &alice),
            400,
            4,
        ),
    ];
    for (req, status, code) in refused {
        let resp = req.send().await.unwrap();
        assert!(
            resp.headers().get("x-request-id").is_some(),
            "refusals carry the id"
        );
        assert_gateway_refusal(resp, status, code).await;
    }
    // 7. forwarded SendMessage, 8. rate limited SendMessage.
    for want in [200, 429] {
        let resp = client()
            .post(url(&format!(
                "/channels/messaging/general/message?api_key={API_KEY}"
            )))
            .header("authorization", &alice)
            .body(r#"{"message":{"text":"hi"}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want);
    }
    // 9. a websocket session: one frame each way, then closed by the client.
    let mut ws = connect(&gw, &connect_query(API_KEY, &alice, "alice")).await;
    assert_eq!(next_json(&mut ws).await["type"], "health.check");
    ws.send(Message::Text(r#"{"type":"custom"}"#.into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "custom");
    ws.close(None).await.unwrap();
    drop(ws);

    let records = read_audit_records(&audit_path, 9);
    let got: Vec<(String, Value, Value, Value, Value)> = records
        .iter()
        .map(|r| {
            (
                r["decision"].as_str().unwrap().to_string(),
                r["operation"].clone(),
                r["code"].clone(),
                r["status"].clone(),
                r["kind"].clone(),
            )
        })
        .collect();
    let want = [
        (
            "forwarded",
            json!("GetApp"),
            json!(null),
            json!(200),
            "request",
        ),
        (
            "forwarded",
            json!("GetApp"),
            json!(null),
            json!(200),
            "request",
        ),
        (
            "refused_server_route",
            json!("UpdateApp"),
            json!(17),
            json!(403),
            "request",
        ),
        (
            "refused_unknown_route",
            json!(null),
            json!(17),
            json!(403),
            "request",
        ),
        (
            "unauthenticated",
            json!("GetApp"),
            json!(40),
            json!(401),
            "request",
        ),
        (
            "bad_request",
            json!("GetApp"),
            json!(4),
            json!(400),
            "request",
        ),
        (
            "forwarded",
            json!("SendMessage"),
            json!(null),
            json!(201),
            "request",
        ),
        (
            "rate_limited",
            json!("SendMessage"),
            json!(9),
            json!(429),
            "request",
        ),
        (
            "forwarded",
            json!("Connect"),
            json!(null),
            json!(101),
            "websocket",
        ),
    ];
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert_eq!(g.0, w.0, "record {i}: {}", records[i]);
        assert_eq!(g.1, w.1, "record {i}: {}", records[i]);
        assert_eq!(g.2, w.2, "record {i}: {}", records[i]);
        assert_eq!(g.4, w.4, "record {i}: {}", records[i]);
        if w.0 != "forwarded" || w.4 == "websocket" {
            assert_eq!(g.3, w.3, "record {i}: {}", records[i]);
        }
    }
    let first = &records[0];
    assert_eq!(first["request_id"], "req-abc.1");
    assert_eq!(first["tenant"], "acme");
    assert_eq!(first["user_id"], "alice");
    assert_eq!(first["client_ip"], "127.0.0.1");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["route"], "/app");
    assert_eq!(first["upstream_status"], 200);
    assert!(first["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(first["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(records[1]["request_id"], generated.as_str());
    // Refused before a session was verified: no user id is claimed.
    assert_eq!(records[4]["user_id"], Value::Null);
    assert_eq!(records[5]["user_id"], Value::Null);
    // Refused by the route policy after the session verified: its user.
    assert_eq!(records[2]["user_id"], "alice", "{}", records[2]);
    assert_eq!(records[3]["user_id"], "alice", "{}", records[3]);
    assert_eq!(records[2]["tenant"], "acme");
    assert_eq!(records[2]["route"], "/app");
    let socket = &records[8];
    assert!(
        socket["frames_in"].as_u64().unwrap() >= 2,
        "text + close: {socket}"
    );
    assert!(
        socket["frames_out"].as_u64().unwrap() >= 2,
        "health check + echo: {socket}"
    );
    assert!(socket["duration_ms"].is_u64());

    let text = metrics(&gw).await;
    let requests = |decision: &str, op: &str| {
        sample(
            &text,
            "stream_gateway_requests_total",
            &[
                ("tenant", "acme"),
                ("decision", decision),
                ("operation", op),
            ],
        )
    };
    assert_eq!(requests("forwarded", "GetApp"), 2.0);
    assert_eq!(requests("refused_server_route", "UpdateApp"), 1.0);
    assert_eq!(requests("unauthenticated", "GetApp"), 1.0);
    assert_eq!(requests("bad_request", "GetApp"), 1.0);
    assert_eq!(requests("rate_limited", "SendMessage"), 1.0);
    assert_eq!(requests("forwarded", "Connect"), 1.0);
    assert_eq!(
        sample(
            &text,
            "stream_gateway_requests_total",
            &[("decision", "refused_unknown_route")]
        ),
        1.0
    );
    let m = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
    assert_eq!(
        m("stream_gateway_rate_limited_total", &[("limit", "route")]),
        1.0
    );
    assert_eq!(
        m(
            "stream_gateway_session_failures_total",
            &[("reason", "expired")]
        ),
        1.0
    );
    // Stream tokens: minted once for alice, then reused (2nd GET, SendMessage
    // twice (the token is taken before the rate limit refuses), socket.
    // Requests refused earlier never ask for one.
    assert_eq!(
        m("stream_gateway_token_mints_total", &[("tenant", "acme")]),
        1.0
    );
    assert_eq!(
        m(
            "stream_gateway_token_cache_hits_total",
            &[("tenant", "acme")]
        ),
        4.0
    );
    assert_eq!(
        m("stream_gateway_websockets_open", &[("tenant", "acme")]),
        0.0
    );
    assert_eq!(
        m("stream_gateway_audit_records_total", &[("sink", "file")]),
        9.0
    );
    assert_eq!(
        m(
            "stream_gateway_request_duration_seconds_count",
            &[("tenant", "acme"), ("decision", "forwarded")]
        ),
        3.0
    );
    assert_eq!(
        m(
            "stream_gateway_upstream_duration_seconds_count",
            &[("tenant", "acme")]
        ),
        4.0
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("alice"),
            "a user id in a metric label: {line}"
        );
    }

    // No token or secret anywhere we write.
    let minted = upstream.header("authorization").unwrap().to_string();
    let audit_text = std::fs::read_to_string(&audit_path).unwrap();
    let logs = gw.stderr();
    // [log] format = "json": every line the gateway logged is a JSON object.
    assert!(logs.lines().count() > 0, "no log lines");
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    for (what, haystack) in [("audit", &audit_text), ("metrics", &text), ("logs", &logs)] {
        for secret in [
            alice.as_str(),
            expired.as_str(),
            minted.as_str(),
            STREAM_SECRET,
            SESSION_SECRET,
        ] {
            if let Some(line) = haystack.lines().find(|l| l.contains(secret)) {
                panic!(
                    "a token or secret in the {what}: {}",
                    line.replace(secret, "<SECRET>")
                );
            }
        }
    }
}

fn redis_audit(redis: &RedisServer, on_full: &str, queue: usize) -> String {
    format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"200ms\"\n\n[audit]\nsink = \"redis\"\nstream = \"audit\"\nstream_maxlen = 1000\nqueue_size = {queue}\nbatch = 1\non_full = \"{on_full}\"",
        redis.url()
    )
}

fn xlen(redis: &RedisServer) -> usize {
    // A RESP integer reply: ":<n>\r\n".
    let reply = redis.command(&["XLEN", "audit"]);
    reply
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("XLEN reply {reply:?}"))
}

fn wait_xlen(redis: &RedisServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while xlen(redis) < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} records in the stream",
            xlen(redis)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(xlen(redis), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sink_with_drop_keeps_serving_when_redis_is_down() {
    let mut redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(
        &fake.url(),
        "",
        &redis_audit(&redis, "drop", 100),
    ));
    let alice = session_for("alice");
    for _ in 0..3 {
        assert_eq!(get_app(&gw, &alice).await.status(), 200);
    }
    wait_xlen(&redis, 3);
    let entry = redis.command(&["XRANGE", "audit", "-", "+", "COUNT", "1"]);
    assert!(entry.contains("\"decision\":\"forwarded\""), "{entry}");
    assert!(!entry.contains(&alice));

    redis.stop();
    let start = Instant::now();
    for _ in 0..3 {
        assert_eq!(get_app(&gw, &alice).await.status(), 200);
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "requests waited on the audit sink"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(&gw).await;
        let dropped = sample(
            &text,
            "stream_gateway_audit_dropped_total",
            &[("sink", "redis")],
        );
        if dropped >= 3.0 {
            assert_eq!(dropped, 3.0);
            assert!(
                sample(
                    &text,
                    "stream_gateway_redis_errors_total",
                    &[("use", "audit")]
                ) >= 3.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dropped records not counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sink_with_block_holds_requests_until_redis_is_back() {
    let mut redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(
        &fake.url(),
        "",
        &redis_audit(&redis, "block", 1),
    ));
    let alice = session_for("alice");
    assert_eq!(get_app(&gw, &alice).await.status(), 200);
    wait_xlen(&redis, 1);
    redis.stop();
    // The writer holds one record (retrying), the queue holds one more; the
    // next request's record has nowhere to go and the request waits.
    assert_eq!(get_app(&gw, &alice).await.status(), 200);
    assert_eq!(get_app(&gw, &alice).await.status(), 200);
    let blocked = tokio::spawn({
        let url = format!("{}/app?api_key={API_KEY}", gw.url());
        let alice = alice.clone();
        async move {
            client()
                .get(url)
                .header("authorization", alice)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !blocked.is_finished(),
        "with block, a full queue holds the request"
    );
    redis.restart();
    let status = tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .expect("request still blocked after Redis came back")
        .unwrap();
    assert_eq!(status, 200);
    // Nothing lost: every request has its record (Redis restarted empty or
    // with the first record, depending on persistence: count what is new).
    let deadline = Instant::now() + Duration::from_secs(10);
    while xlen(&redis) < 3 {
        assert!(Instant::now() < deadline, "records lost: {}", xlen(&redis));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        sample(
            &metrics(&gw).await,
            "stream_gateway_audit_dropped_total",
            &[("sink", "redis")]
        ),
        0.0
    );
}
