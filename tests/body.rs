//! The request-body policy: server-only fields (refuse, strip, pass) in JSON
//! bodies and `payload` query documents, the inspection cap, and the body
//! size cap on uploads (413, code 22), with a large upload streamed through
//! at flat gateway memory.

mod common;

use common::*;
use serde_json::{json, Value};

fn setup(policy: &str) -> (FakeStream, Gateway) {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&gateway_config(
        &fake.url(),
        "",
        &format!("[policy]\n{policy}"),
    ));
    (fake, gw)
}

async fn send_message(gw: &Gateway, body: &str) -> reqwest::Response {
    client()
        .post(format!(
            "{}/channels/messaging/general/message?api_key={API_KEY}",
            gw.url()
        ))
        .header("authorization", session_for("alice"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn query_users(gw: &Gateway, payload: &Value) -> reqwest::Response {
    client()
        .get(format!("{}/users?api_key={API_KEY}", gw.url()))
        .query(&[("payload", payload.to_string())])
        .header("authorization", session_for("alice"))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_fields_are_refused_by_default() {
    let (fake, gw) = setup("");
    let ok = r#"{"message":{"text":"hi"}}"#;
    assert_eq!(send_message(&gw, ok).await.status().as_u16() / 100, 2);
    let got = fake.requests().pop().unwrap();
    assert_eq!(
        got.body,
        ok.as_bytes(),
        "an allowed body goes through byte for byte"
    );

    fake.clear();
    for (body, field) in [
        (
            r#"{"message":{"text":"hi","html":"<b>x</b>"}}"#,
            "message.html",
        ),
        (
            r#"{"message":{"text":"hi","user_id":"boss"}}"#,
            "message.user_id",
        ),
        (
            r#"{"message":{"text":"hi"},"force_moderation":true}"#,
            "force_moderation",
        ),
        (r#"{"message":{"text":"hi"},"pending":true}"#, "pending"),
    ] {
        let v = assert_gateway_refusal(send_message(&gw, body).await, 400, 4).await;
        assert!(v["message"].as_str().unwrap().contains(field), "{v}");
    }
    let v = assert_gateway_refusal(
        query_users(&gw, &json!({"filter_conditions": {}, "user_id": "boss"})).await,
        400,
        4,
    )
    .await;
    assert!(v["message"].as_str().unwrap().contains("user_id"), "{v}");
    // Not JSON where JSON is expected.
    assert_gateway_refusal(send_message(&gw, "text=hi").await, 400, 4).await;
    assert!(fake.requests().is_empty(), "a refused body reached Stream");

    // Other operations' bodies are not parsed at all.
    let resp = client()
        .post(format!("{}/channels?api_key={API_KEY}", gw.url()))
        .header("authorization", session_for("alice"))
        .body("{\"filter_conditions\":{}}")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_removes_the_fields_and_pass_forwards_them() {
    let (fake, gw) = setup("server_only_fields = \"strip\"");
    let resp = send_message(
        &gw,
        r#"{"message":{"text":"hi","html":"<b>x</b>","user_id":"boss"},"force_moderation":true}"#,
    )
    .await;
    assert_eq!(resp.status().as_u16() / 100, 2);
    let got = fake.requests().pop().unwrap();
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body, json!({"message": {"text": "hi"}}));
    assert_eq!(
        got.header("content-length"),
        Some(got.body.len().to_string().as_str())
    );
    assert_eq!(
        query_users(
            &gw,
            &json!({"filter_conditions": {"id": "a"}, "user_id": "boss"})
        )
        .await
        .status(),
        200
    );
    let got = fake.requests().pop().unwrap();
    let payload: Value =
        serde_json::from_str(&got.query.iter().find(|(k, _)| k == "payload").unwrap().1).unwrap();
    assert_eq!(payload, json!({"filter_conditions": {"id": "a"}}));

    let (fake, gw) = setup("server_only_fields = \"pass\"");
    let body = r#"{"message":{"text":"hi","html":"<b>x</b>"}}"#;
    assert_eq!(send_message(&gw, body).await.status().as_u16() / 100, 2);
    assert_eq!(fake.requests().pop().unwrap().body, body.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_inspection_cap_or_the_size_cap_get_413_code_22() {
    let (fake, gw) = setup("max_inspected_body = 1024\nmax_body_bytes = 1048576");
    let big_message = json!({"message": {"text": "x".repeat(2000)}}).to_string();
    assert_gateway_refusal(send_message(&gw, &big_message).await, 413, 22).await;

    let upload = |len: usize, chunked: bool| {
        let url = format!(
            "{}/channels/messaging/general/file?api_key={API_KEY}",
            gw.url()
        );
        let data = vec![b'a'; len];
        let req = client()
            .post(url)
            .header("authorization", session_for("alice"))
            .header("content-type", "multipart/form-data; boundary=X");
        if chunked {
            let stream = futures_util::stream::iter(
                data.chunks(64 * 1024)
                    .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                    .collect::<Vec<_>>(),
            );
            req.body(reqwest::Body::wrap_stream(stream)).send()
        } else {
            req.body(data).send()
        }
    };
    // Declared too large: refused before anything is forwarded.
    assert_gateway_refusal(upload(2 << 20, false).await.unwrap(), 413, 22).await;
    assert!(fake.requests().is_empty());
    // Under the cap: forwarded whole.
    assert_eq!(
        upload(512 << 10, false).await.unwrap().status().as_u16() / 100,
        2
    );
    assert_eq!(fake.requests().pop().unwrap().body.len(), 512 << 10);
    // Chunked (no Content-Length) and too large: cut off at the cap.
    fake.clear();
    match upload(3 << 20, true).await {
        Ok(resp) => {
            assert_gateway_refusal(resp, 413, 22).await;
        }
        // The gateway may close while the client is still sending.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e:?}"),
    }
    assert!(
        fake.requests().iter().all(|r| r.body.len() < 3 << 20),
        "the whole oversized body reached Stream"
    );
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_streams_through_at_flat_memory() {
    let (fake, gw) = setup("max_body_bytes = 314572800");
    assert_eq!(get_app(&gw, &session_for("alice")).await.status(), 200);
    let before = vm_hwm_kib(gw.pid());
    let total: usize = 200 << 20;
    let chunk = vec![b'z'; 1 << 20];
    let stream = futures_util::stream::iter(
        (0..total / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let resp = client()
        .post(format!("{}/uploads/file?api_key={API_KEY}", gw.url()))
        .header("authorization", session_for("alice"))
        .header("content-type", "application/octet-stream")
        .header("content-length", total.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16() / 100, 2, "{}", resp.status());
    assert_eq!(fake.requests().pop().unwrap().body.len(), total);
    let after = vm_hwm_kib(gw.pid());
    println!("gateway peak RSS: {before} KiB before, {after} KiB after a 200 MiB upload");
    assert!(
        after < before + 32 * 1024,
        "gateway memory grew {} KiB for a 200 MiB upload",
        after - before
    );
}
