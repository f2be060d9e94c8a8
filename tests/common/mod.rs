//! Shared integration-test harness: the fake Stream upstream, the gateway launcher,
//! token builders and response assertions. Each test file does `mod common;` and uses
//! only some of it, hence the `dead_code` (and, for the re-exports,
//! `unused_imports`) allowance.
#![allow(dead_code, unused_imports)]

pub mod fake_idp;
pub mod fake_stream;
pub mod gateway;
pub mod redis;
pub mod redis_cluster;
pub mod sdk;
pub mod tls;
pub mod ws;

pub use fake_stream::{stream_error_json, FakeStream, Recorded, StreamAuth};
pub use gateway::{run_cli, Gateway};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// Unix time in seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_secs() as i64
}

/// An HS-signed JWT. `alg` is one of "HS256", "HS384", "HS512"; header is
/// `{"typ":"JWT","alg":alg}`.
pub fn hs_token(alg: &str, secret: &str, claims: serde_json::Value) -> String {
    let alg = match alg {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        other => panic!("hs_token: unsupported alg {other:?} (use HS256/HS384/HS512)"),
    };
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode HS token")
}

/// An unsigned token: header `{"alg":"none","typ":"JWT"}`, the claims, and an empty
/// signature (`xxx.yyy.`).
pub fn none_token(claims: serde_json::Value) -> String {
    format!(
        "{}.{}.",
        b64_json(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64_json(&claims)
    )
}

/// A token with an arbitrary `header` JSON, signed with HMAC-SHA256 over
/// `b64(header).b64(claims)` using `hmac_key` bytes, whatever the header's `alg` says
/// (for alg-confusion tests: header RS256, HMAC keyed with the public key PEM).
pub fn forged_token(
    header: serde_json::Value,
    claims: serde_json::Value,
    hmac_key: &[u8],
) -> String {
    let message = format!("{}.{}", b64_json(&header), b64_json(&claims));
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(hmac_key),
        Algorithm::HS256,
    )
    .expect("HMAC-SHA256 sign");
    format!("{message}.{sig}")
}

/// base64url (no padding) of the JSON serialization of `v`.
pub fn b64_json(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("serialize JSON"))
}

/// Decodes the claims (middle part) of a JWT without verifying it.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    let part = token
        .split('.')
        .nth(1)
        .unwrap_or_else(|| panic!("not a JWT: {token:?}"));
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("JWT claims not base64url ({e}): {token:?}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT claims not JSON ({e})"))
}

/// A reqwest client for talking to the gateway: no proxy, no automatic
/// decompression (reqwest is built without the gzip feature), 10 s timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build reqwest client")
}

/// Asserts `resp` is an error in Stream's shape: the given HTTP `status`, a JSON
/// content type, and a body with `code` == `code`, a non-empty string `message`,
/// `StatusCode` == `status`, string `duration`, string `more_info` and array
/// `details`. Returns the body JSON.
///
/// It does not care who produced it; use [`assert_gateway_refusal`] to also require
/// that the answer did not come from the fake upstream.
pub async fn assert_stream_error(
    resp: reqwest::Response,
    status: u16,
    code: i64,
) -> serde_json::Value {
    let got_status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("<non-ascii>").to_string());
    let bytes = resp.bytes().await.expect("read error response body");
    let text = String::from_utf8_lossy(&bytes);
    let ctx = || {
        format!(
            "status {got_status}, content-type {content_type:?}, headers {headers:?}, body: {text}"
        )
    };

    assert_eq!(got_status, status, "unexpected HTTP status; {}", ctx());
    let ct = content_type
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        ct.split(';').next().map(str::trim) == Some("application/json"),
        "content-type is not application/json; {}",
        ctx()
    );
    let body: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}); {}", ctx()));
    assert!(body.is_object(), "error body is not an object; {}", ctx());
    assert_eq!(body["code"].as_i64(), Some(code), "wrong `code`; {}", ctx());
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "`message` must be a non-empty string; {}",
        ctx()
    );
    assert_eq!(
        body["StatusCode"].as_i64(),
        Some(i64::from(status)),
        "`StatusCode` must equal the HTTP status; {}",
        ctx()
    );
    assert!(
        body["duration"].is_string(),
        "`duration` must be a string; {}",
        ctx()
    );
    assert!(
        body["more_info"].is_string(),
        "`more_info` must be a string; {}",
        ctx()
    );
    assert!(
        body["details"].is_array(),
        "`details` must be an array; {}",
        ctx()
    );
    body
}

/// [`assert_stream_error`] plus: the response must not carry `x-fake-upstream`, i.e.
/// the gateway answered itself instead of relaying an upstream answer.
pub async fn assert_gateway_refusal(
    resp: reqwest::Response,
    status: u16,
    code: i64,
) -> serde_json::Value {
    assert!(
        resp.headers().get("x-fake-upstream").is_none(),
        "expected a gateway refusal but the response came from the fake upstream: status {}, headers {:?}",
        resp.status(),
        resp.headers()
    );
    assert_stream_error(resp, status, code).await
}

/// What a gateway must never print or answer: a JWT (three base64url parts,
/// the first a JSON object, so starting `eyJ`), or a secret the tests use.
/// Returns a description of the first leak found.
pub fn find_leak(text: &str) -> Option<String> {
    for secret in [STREAM_SECRET, SESSION_SECRET] {
        if text.contains(secret) {
            return Some(format!("the secret {secret:?}"));
        }
    }
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut rest = text;
    while let Some(i) = rest.find("eyJ") {
        let tail = &rest[i..];
        let parts: Vec<&str> = tail
            .split(|c: char| !(b64(c) || c == '.'))
            .next()
            .unwrap_or("")
            .split('.')
            .collect();
        if parts.len() >= 3 && parts[..3].iter().all(|p| p.len() >= 4) {
            return Some(format!("a token ({}...)", &tail[..tail.len().min(12)]));
        }
        rest = &tail[3..];
    }
    None
}

/// The standard test tenant: its key, Stream secret and session secret.
pub const API_KEY: &str = "acme-key";
pub const STREAM_SECRET: &str = "acme-stream-secret";
pub const SESSION_SECRET: &str = "acme-session-secret";

/// A gateway config for one tenant (`API_KEY`, HS256 sessions signed with
/// `SESSION_SECRET`) in front of `upstream`. `tenant_extra` is inserted in
/// the `[[tenants]]` table, `top_extra` at the end (e.g. `[policy]`).
pub fn gateway_config(upstream: &str, tenant_extra: &str, top_extra: &str) -> String {
    let session =
        format!("type = \"jwt\"\nalgorithms = [\"HS256\"]\nsecret = \"{SESSION_SECRET}\"");
    gateway_config_with_session(upstream, tenant_extra, &session, top_extra)
}

/// [`gateway_config`] with `session` as the body of `[tenants.session]`.
pub fn gateway_config_with_session(
    upstream: &str,
    tenant_extra: &str,
    session: &str,
    top_extra: &str,
) -> String {
    format!(
        r#"
[server]
listen = "@LISTEN@"
admin_listen = "@ADMIN@"
threads = 1

[upstream]
url = "{upstream}"
connect_timeout = "2s"
read_timeout = "5s"

[[tenants]]
id = "acme"
api_key = "{API_KEY}"
api_secret = "{STREAM_SECRET}"
{tenant_extra}

[tenants.session]
{session}

{top_extra}
"#
    )
}

/// The gateway's `/metrics` text.
pub async fn metrics_text(gw: &Gateway) -> String {
    client()
        .get(format!("http://{}/metrics", gw.admin))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// Polls `check` every `every` until it is true; panics with `what` after
/// `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, every: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} (still not after {timeout:?})"
        );
        tokio::time::sleep(every).await;
    }
}

/// `GET /app?api_key=API_KEY` with `Authorization: <token>`.
pub async fn get_app(gw: &Gateway, token: &str) -> reqwest::Response {
    client()
        .get(format!("{}/app?api_key={API_KEY}", gw.url()))
        .header("authorization", token)
        .send()
        .await
        .expect("request to the gateway")
}

/// A session token for `user` valid for ten minutes.
pub fn session_for(user: &str) -> String {
    hs_token(
        "HS256",
        SESSION_SECRET,
        serde_json::json!({"sub": user, "iat": now(), "exp": now() + 600}),
    )
}

/// A raw HTTP/1.1 exchange over a fresh TCP connection, for requests a
/// normal client would rewrite (dot segments, backslashes, odd bytes).
/// Returns (status, lowercase header pairs, body). `Connection: close` is
/// added, so the body is everything until EOF.
pub fn raw_request(
    addr: std::net::SocketAddr,
    head: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to gateway");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    let head = head.trim_end_matches("\r\n");
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("write request");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&buf)));
    let text = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {text}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, buf[split + 4..].to_vec())
}

/// Runs `stream-gateway check` on the standard config with `top_extra`
/// appended; asserts it fails and returns its stderr.
pub fn check_fails(top_extra: &str) -> String {
    check_fails_with("", top_extra)
}

/// [`check_fails`] with `tenant_extra` in the `[[tenants]]` table.
pub fn check_fails_tenant(tenant_extra: &str) -> String {
    check_fails_with(tenant_extra, "")
}

fn check_fails_with(tenant_extra: &str, top_extra: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.toml");
    let config = gateway_config("http://127.0.0.1:1", tenant_extra, top_extra)
        .replace("@LISTEN@", "127.0.0.1:1")
        .replace("@ADMIN@", "127.0.0.1:2");
    std::fs::write(&path, config).expect("write config");
    let out = run_cli(
        &["check", "--config", path.to_str().expect("utf-8 path")],
        &[],
    );
    assert!(!out.status.success(), "check accepted the config");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The audit file's records once it holds `n` (panics after 10 s, or when
/// it holds more: one record per request).
pub fn read_audit_records(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect();
        if records.len() >= n {
            assert_eq!(
                records.len(),
                n,
                "more audit records than requests:\n{text}"
            );
            return records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} audit records after 10 s:\n{text}",
            records.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
