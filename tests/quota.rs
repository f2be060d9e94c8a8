//! Shared per-tenant quotas through a real redis-server (started by the test
//! on a free port): two gateway instances together never pass more than the
//! quota; Redis down with `local` keeps serving, with `deny` answers 503; the
//! gateway counts again when Redis is back.

mod common;

use common::redis::RedisServer;
use common::*;

fn config(fake: &FakeStream, redis: &RedisServer, per_minute: u64, on_error: &str) -> String {
    gateway_config(
        &fake.url(),
        "",
        &format!(
            "[tenants.quota]\nrequests_per_minute = {per_minute}\n\n[redis]\nurl = \"{}\"\ntimeout = \"200ms\"\non_redis_error = \"{on_error}\"",
            redis.url()
        ),
    )
}

async fn get(gw: &Gateway) -> reqwest::Response {
    client()
        .get(format!("{}/app?api_key={API_KEY}", gw.url()))
        .header("authorization", session_for("alice"))
        .send()
        .await
        .unwrap()
}

/// Counters are per calendar minute: do not start a run in its last seconds.
async fn away_from_minute_end() {
    let s = now() % 60;
    if s > 50 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - s) as u64)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_quota_exactly() {
    let redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let a = Gateway::start(&config(&fake, &redis, 5, "local"));
    let b = Gateway::start(&config(&fake, &redis, 5, "local"));
    away_from_minute_end().await;
    let mut ok = 0;
    let mut refused = Vec::new();
    for i in 0..8 {
        let resp = get(if i % 2 == 0 { &a } else { &b }).await;
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => refused.push(resp),
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(ok, 5, "the quota is exact across instances");
    assert_eq!(
        fake.requests().len(),
        5,
        "refused requests never reached Stream"
    );
    let last = refused.pop().unwrap();
    let h = last.headers().clone();
    assert_gateway_refusal(last, 429, 9).await;
    assert_eq!(h["x-ratelimit-limit"], "5");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    let reset: i64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert_eq!(reset % 60, 0, "the minute window ends on a minute");
    assert!(reset > now() && reset <= now() + 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_local_keeps_serving_and_counting_resumes_when_it_is_back() {
    let mut redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&config(&fake, &redis, 3, "local"));
    away_from_minute_end().await;
    assert_eq!(get(&gw).await.status(), 200);
    redis.stop();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        assert_eq!(get(&gw).await.status(), 200, "local fallback keeps serving");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "a request waited on Redis"
        );
    }
    redis.restart();
    // Back: the (fresh) counter enforces the quota again, without a restart.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut statuses = Vec::new();
    loop {
        let s = get(&gw).await.status().as_u16();
        statuses.push(s);
        if s == 429 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "quota never enforced again: {statuses:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        gw.stderr().matches("redis unavailable").count() <= 2,
        "the outage is logged once, not per request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_deny_answers_503_in_stream_shape() {
    let mut redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&config(&fake, &redis, 100, "deny"));
    assert_eq!(get(&gw).await.status(), 200);
    redis.stop();
    fake.clear();
    assert_gateway_refusal(get(&gw).await, 503, -1).await;
    assert!(fake.requests().is_empty());
}

#[test]
fn a_quota_without_redis_is_a_config_error() {
    let err = check_fails("[tenants.quota]\nrequests_per_minute = 5");
    assert!(err.contains("quota") && err.contains("[redis]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_quota_counts_each_user_across_instances() {
    let redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let cfg = gateway_config(
        &fake.url(),
        "",
        &format!(
            "[tenants.quota]\nrequests_per_minute = 100\nuser_requests_per_minute = 2\n\n[redis]\nurl = \"{}\"",
            redis.url()
        ),
    );
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    away_from_minute_end().await;
    let as_user = |gw: &Gateway, user: &str| {
        client()
            .get(format!("{}/app?api_key={API_KEY}", gw.url()))
            .header("authorization", session_for(user))
            .send()
    };
    assert_eq!(as_user(&a, "alice").await.unwrap().status(), 200);
    assert_eq!(as_user(&b, "alice").await.unwrap().status(), 200);
    let resp = as_user(&a, "alice").await.unwrap();
    assert_eq!(resp.headers()["x-ratelimit-limit"], "2");
    assert_gateway_refusal(resp, 429, 9).await;
    assert_eq!(
        as_user(&b, "bob").await.unwrap().status(),
        200,
        "bob has his own quota"
    );
    assert_eq!(fake.requests().len(), 3);
}
