//! Exact shared quotas (no `lease`), coalesced: concurrent requests on the
//! same counters go to Redis together, one call per batch, against a real
//! redis-server started by the test. The outcome must be that of counting
//! them one by one: exactly the quota passes, the rest is refused on the
//! counter that filled up, and Redis is called fewer times than requests.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::{shared_quotas, RedisServer};
use stream_gateway::quota::{OnRedisError, Quota, QuotaError, SharedQuotas, Who};

/// A minute start, far from "now" so no other test's keys collide.
const T0: u64 = 1_800_000_000 - 1_800_000_000 % 86_400 + 7_200;

/// Runs `n` checks at once (spawned tasks, 2 worker threads).
async fn concurrent(
    q: &Arc<SharedQuotas>,
    n: usize,
    tenant: &'static str,
    quota: Quota,
    user: impl Fn(usize) -> Option<&'static str>,
) -> Vec<Result<(), QuotaError>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let q = Arc::clone(q);
            let who = user(i);
            tokio::spawn(async move { q.check(tenant, who.map(Who::User), quota, T0).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_pass_exactly_the_quota_in_fewer_calls_than_requests() {
    let redis = RedisServer::start();
    let q = shared_quotas(&redis, OnRedisError::Deny);
    let quota = Quota {
        per_minute: Some(100),
        ..Quota::default()
    };
    let before = redis.script_calls();
    let results = concurrent(&q, 400, "b1", quota, |_| None).await;
    let calls = redis.script_calls() - before;
    let passed = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(passed, 100, "exactly the quota passes");
    for r in results.iter().filter(|r| r.is_err()) {
        assert_eq!(
            *r,
            Err(QuotaError::Exceeded {
                limit: 100,
                reset_at: T0 + 60
            })
        );
    }
    assert_eq!(
        redis.counter(&format!("sg:quota:{{b1}}:m:{}", T0 / 60)),
        100
    );
    assert!(
        calls < 400,
        "{calls} script calls for 400 concurrent requests: not batched"
    );
    // One by one afterwards: each is a call of its own, still refused.
    let before = redis.script_calls();
    for _ in 0..3 {
        assert!(q.check("b1", None, quota, T0).await.is_err());
    }
    assert_eq!(redis.script_calls() - before, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_refused_on_the_counter_that_fills_up_first() {
    let redis = RedisServer::start();
    let q = shared_quotas(&redis, OnRedisError::Deny);
    // The day has room for 30 more, the minute for 50: the day fills first.
    let day_key = format!("sg:quota:{{b2}}:d:{}", T0 / 86_400);
    redis.command(&["SET", &day_key, "970"]);
    let quota = Quota {
        per_minute: Some(50),
        per_day: Some(1000),
        ..Quota::default()
    };
    let results = concurrent(&q, 120, "b2", quota, |_| None).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 30);
    let day_end = (T0 / 86_400 + 1) * 86_400;
    for r in results.iter().filter(|r| r.is_err()) {
        assert_eq!(
            *r,
            Err(QuotaError::Exceeded {
                limit: 1000,
                reset_at: day_end
            })
        );
    }
    assert_eq!(redis.counter(&day_key), 1000);
    assert_eq!(redis.counter(&format!("sg:quota:{{b2}}:m:{}", T0 / 60)), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_counters_batch_only_with_the_same_user() {
    let redis = RedisServer::start();
    let q = shared_quotas(&redis, OnRedisError::Deny);
    let quota = Quota {
        per_minute: Some(1000),
        user_per_minute: Some(5),
        ..Quota::default()
    };
    let users = ["ann", "bob", "cy"];
    let results = concurrent(&q, 90, "b3", quota, |i| Some(users[i % 3])).await;
    for (u, user) in users.iter().enumerate() {
        let passed = results
            .iter()
            .enumerate()
            .filter(|(i, r)| i % 3 == u && r.is_ok())
            .count();
        assert_eq!(passed, 5, "{user}: exactly the user's quota passes");
        assert_eq!(
            redis.counter(&format!("sg:quota:{{b3}}:u:{user}:m:{}", T0 / 60)),
            5
        );
    }
    assert_eq!(redis.counter(&format!("sg:quota:{{b3}}:m:{}", T0 / 60)), 15);
    for r in results.iter().filter(|r| r.is_err()) {
        assert_eq!(
            *r,
            Err(QuotaError::Exceeded {
                limit: 5,
                reset_at: T0 + 60
            })
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_hands_the_lead_on_and_nobody_hangs() {
    let redis = RedisServer::start();
    let q = shared_quotas(&redis, OnRedisError::Deny);
    let quota = Quota {
        per_minute: Some(10),
        ..Quota::default()
    };
    // The script is loaded first, so the calls below run when Redis resumes.
    assert_eq!(q.check("b4-warm", None, quota, T0).await, Ok(()));
    // Redis stops answering for a while: the calls in flight hang.
    redis.command(&["CLIENT", "PAUSE", "700", "ALL"]);
    let spawn = || {
        let q = Arc::clone(&q);
        tokio::spawn(async move { q.check("b4", None, quota, T0).await })
    };
    // Two calls may be in flight per set of counters: a and b lead one
    // each; c waits for the next batch.
    let a = spawn();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let b = spawn();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let started = Instant::now();
    let c = spawn();
    tokio::time::sleep(Duration::from_millis(30)).await;
    a.abort();
    // c is handed the lead by a's drop and makes its own call (bounded by
    // the 300 ms timeout): Redis is still paused, so `deny` refuses it; it
    // does not wait forever.
    let got = tokio::time::timeout(Duration::from_secs(3), c)
        .await
        .expect("the waiter hangs after the leader was cancelled")
        .unwrap();
    assert_eq!(got, Err(QuotaError::Unavailable));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(b.await.unwrap(), Err(QuotaError::Unavailable));
    // Once Redis answers again, counting works (the batch entry is gone).
    // The three calls sent during the pause ran when it ended (a timed-out
    // call is not taken back, as before batching): 3 + this one.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(q.check("b4", None, quota, T0).await, Ok(()));
    assert_eq!(redis.counter(&format!("sg:quota:{{b4}}:m:{}", T0 / 60)), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_expire_with_their_window_and_a_refusal_counts_nothing() {
    let redis = RedisServer::start();
    let q = shared_quotas(&redis, OnRedisError::Deny);
    let quota = Quota {
        per_minute: Some(3),
        per_day: Some(1000),
        user_per_minute: Some(10),
        ..Quota::default()
    };
    let minute = format!("sg:quota:{{b5}}:m:{}", T0 / 60);
    let day = format!("sg:quota:{{b5}}:d:{}", T0 / 86_400);
    assert_eq!(q.check("b5", None, quota, T0).await, Ok(()));
    // Made by this count: the minute counter lives 120 s, the day's 2 days.
    let (tm, td) = (redis.ttl(&minute), redis.ttl(&day));
    assert!((100..=120).contains(&tm), "minute counter TTL {tm}");
    assert!((172_700..=172_800).contains(&td), "day counter TTL {td}");
    // A counter's TTL is set when it is made, not pushed back by each count.
    redis.command(&["EXPIRE", &minute, "30"]);
    assert_eq!(q.check("b5", None, quota, T0).await, Ok(()));
    assert_eq!(q.check("b5", None, quota, T0).await, Ok(()));
    assert!(
        redis.ttl(&minute) <= 30,
        "TTL moved: {}",
        redis.ttl(&minute)
    );
    // The minute is full: a refusal leaves every counter as it was, and a
    // user counter it touched for the first time is left empty and expiring
    // (never a key without expiry).
    let got = q.check("b5", Some(Who::User("zed")), quota, T0).await;
    assert_eq!(
        got,
        Err(QuotaError::Exceeded {
            limit: 3,
            reset_at: T0 + 60
        })
    );
    assert_eq!(redis.counter(&minute), 3);
    assert_eq!(redis.counter(&day), 3);
    let user_minute = format!("sg:quota:{{b5}}:u:zed:m:{}", T0 / 60);
    assert_eq!(redis.counter(&user_minute), 0);
    assert_ne!(redis.ttl(&user_minute), -1, "a counter key without expiry");
}
