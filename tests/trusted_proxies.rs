//! `server.trusted_proxies`: behind a load balancer the gateway trusts, the
//! client is the rightmost untrusted `X-Forwarded-For` hop, for the `per_ip`
//! bucket, the audit record and the `X-Forwarded-For` sent to Stream; a peer
//! that is not trusted never has the header believed. Both request paths
//! (the fast path and pingora's, `fast_path = false`).

mod common;

use common::*;

fn config(fake: &FakeStream, server_extra: &str) -> String {
    gateway_config(
        &fake.url(),
        "",
        "[tenants.limits]\nper_ip = { rate = \"1/h\", burst = 1 }\n\n[audit]\nsink = \"file\"\npath = \"audit.log\"",
    )
    .replace("threads = 1\n", &format!("threads = 1\n{server_extra}\n"))
}

async fn get(gw: &Gateway, xff: &str) -> reqwest::Response {
    client()
        .get(format!("{}/app?api_key={API_KEY}", gw.url()))
        .header("authorization", session_for("alice"))
        .header("x-forwarded-for", xff)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_is_its_own_ip() {
    for fast in ["fast_path = true", "fast_path = false"] {
        let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
        let trusted = format!("{fast}\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]");
        let gw = Gateway::start(&config(&fake, &trusted));
        let audit = gw.config_path().parent().unwrap().join("audit.log");
        // Two clients behind the balancer (the first also forged a hop on
        // the left, and went through an inner proxy): one bucket each.
        let resp = get(&gw, "6.6.6.6, 203.0.113.7, 10.1.2.3").await;
        assert_eq!(resp.status(), 200, "{fast}");
        let up = fake.requests().pop().unwrap();
        assert_eq!(up.header("x-forwarded-for"), Some("203.0.113.7"), "{fast}");
        assert_eq!(get(&gw, "198.51.100.8").await.status(), 200, "{fast}");
        assert_eq!(
            fake.requests().pop().unwrap().header("x-forwarded-for"),
            Some("198.51.100.8")
        );
        // The first client again: its own bucket (burst 1) is empty.
        fake.clear();
        let resp = get(&gw, "9.9.9.9, 203.0.113.7").await;
        assert_gateway_refusal(resp, 429, 9).await;
        assert!(
            fake.requests().is_empty(),
            "{fast}: a refused request reached Stream"
        );
        let records = read_audit_records(&audit, 3);
        let ips: Vec<&str> = records
            .iter()
            .map(|r| r["client_ip"].as_str().unwrap())
            .collect();
        assert_eq!(
            ips,
            ["203.0.113.7", "198.51.100.8", "203.0.113.7"],
            "{fast}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_the_header_is_never_believed() {
    for extra in ["", "trusted_proxies = [\"10.0.0.0/8\"]"] {
        let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
        let gw = Gateway::start(&config(&fake, extra));
        assert_eq!(get(&gw, "203.0.113.7").await.status(), 200);
        let up = fake.requests().pop().unwrap();
        assert_eq!(up.header("x-forwarded-for"), Some("127.0.0.1"), "{extra:?}");
        // Another claimed client, same socket peer: the same (now empty) bucket.
        fake.clear();
        let resp = get(&gw, "198.51.100.8").await;
        assert_gateway_refusal(resp, 429, 9).await;
        assert!(fake.requests().is_empty());
    }
}

#[test]
fn bad_trusted_proxies_are_config_errors() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let text = config(
        &fake,
        "trusted_proxies = [\"10.0.0.0/40\", \"lb.internal\"]",
    )
    .replace("@LISTEN@", "127.0.0.1:1")
    .replace("@ADMIN@", "127.0.0.1:2");
    std::fs::write(&path, text).unwrap();
    let out = run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("server.trusted_proxies: \"10.0.0.0/40\": prefix"),
        "{err}"
    );
    assert!(err.contains("\"lb.internal\": not an IP address"), "{err}");
}
