//! Leased shared quotas (`[tenants.quota] lease = N`) against a real
//! redis-server started by the test: blocks are carved out of the counters
//! atomically (never more than the quota fleet-wide), Redis is called once per
//! block, unspent units go back to the day counter when a minute ends, and a
//! Redis failure during a refill follows `on_redis_error`.
//!
//! Most tests drive `SharedQuotas` directly with a chosen Unix time, so
//! window changes are deterministic; one runs two real gateways.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::{shared_quotas, RedisServer};
use common::*;
use stream_gateway::quota::{OnRedisError, Quota, QuotaError, Who};

/// A minute start, far from "now" so no other test's keys collide.
const T0: u64 = 1_800_000_000 - 1_800_000_000 % 86_400 + 3_600;

fn quota(per_minute: Option<u64>, per_day: Option<u64>, lease: u64) -> Quota {
    Quota {
        per_minute,
        per_day,
        lease,
        ..Quota::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_pass_more_than_the_quota_and_call_redis_once_per_block() {
    let redis = RedisServer::start();
    let (a, b) = (
        shared_quotas(&redis, OnRedisError::Deny),
        shared_quotas(&redis, OnRedisError::Deny),
    );
    let q = quota(Some(100), None, 10);
    let before = redis.script_calls();
    // 400 concurrent requests, half on each instance, all in one second.
    let mut tasks = Vec::new();
    for i in 0..400 {
        let inst = Arc::clone(if i % 2 == 0 { &a } else { &b });
        tasks.push(tokio::spawn(async move {
            inst.check("t1", Some(Who::User("u")), q, T0).await
        }));
    }
    let mut passed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => passed += 1,
            Err(QuotaError::Exceeded { limit, reset_at }) => {
                assert_eq!((limit, reset_at), (100, T0 + 60));
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    // Blocks are all spent here (demand exceeds the quota on both), so the
    // fleet passes exactly the quota; never more in any case.
    assert_eq!(passed, 100);
    assert_eq!(
        redis.counter(&format!("sg:quota:{{t1}}:m:{}", T0 / 60)),
        100
    );
    let calls = redis.script_calls() - before;
    eprintln!("{calls} Redis script calls for 400 requests");
    // 100 / 10 = 10 blocks, plus at most one "full" answer per instance
    // (then cached for the rest of the second) and the first EVALSHA of each
    // instance, answered NOSCRIPT (the client then loads the script).
    assert!(
        (10..=14).contains(&calls),
        "{calls} Redis calls for 400 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unspent_units_of_one_instance_are_refused_to_the_other_within_the_stated_bound() {
    let redis = RedisServer::start();
    let (a, b) = (
        shared_quotas(&redis, OnRedisError::Deny),
        shared_quotas(&redis, OnRedisError::Deny),
    );
    let q = quota(Some(20), None, 5);
    // A takes a block of 5 and spends 1 of it.
    assert_eq!(a.check("t2", None, q, T0).await, Ok(()));
    // B gets what is left of the counter: 20 - 5 = 15 requests.
    let mut b_passed = 0;
    while b.check("t2", None, q, T0).await.is_ok() {
        b_passed += 1;
        assert!(b_passed <= 20, "B passed more than the quota");
    }
    assert_eq!(b_passed, 15, "B is refused while A holds 4 unspent units");
    // A still spends its 4: the fleet total is exactly the quota.
    for _ in 0..4 {
        assert_eq!(a.check("t2", None, q, T0).await, Ok(()));
    }
    assert!(a.check("t2", None, q, T0).await.is_err());
    assert_eq!(redis.counter(&format!("sg:quota:{{t2}}:m:{}", T0 / 60)), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_minute_gives_unspent_units_back_to_the_day_counter() {
    let redis = RedisServer::start();
    let a = shared_quotas(&redis, OnRedisError::Deny);
    let q = quota(Some(100), Some(12), 5);
    let day_key = format!("sg:quota:{{t3}}:d:{}", T0 / 86_400);
    assert_eq!(a.check("t3", None, q, T0).await, Ok(()));
    assert_eq!(redis.counter(&day_key), 5, "a block of 5 is counted");
    // Next minute: the 4 unspent units go back, a new block of 5 is taken.
    assert_eq!(a.check("t3", None, q, T0 + 60).await, Ok(()));
    assert_eq!(redis.counter(&day_key), 6);
    // 4 more from that block, then a block of 5 (day at 11), then the last
    // block is 1 (12 - 11): in all, 12 requests pass today, the day quota.
    for _ in 0..10 {
        assert_eq!(a.check("t3", None, q, T0 + 60).await, Ok(()));
    }
    assert_eq!(redis.counter(&day_key), 12);
    let refused = a.check("t3", None, q, T0 + 61).await;
    assert_eq!(
        refused,
        Err(QuotaError::Exceeded {
            limit: 12,
            reset_at: (T0 / 86_400 + 1) * 86_400
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refill_follows_on_redis_error_and_leasing_resumes() {
    let mut redis = RedisServer::start();
    let (local, deny) = (
        shared_quotas(&redis, OnRedisError::Local),
        shared_quotas(&redis, OnRedisError::Deny),
    );
    let q = quota(Some(1000), None, 3);
    assert_eq!(deny.check("t4", None, q, T0).await, Ok(()));
    redis.stop();
    // The block's 2 remaining units are spent without Redis...
    for _ in 0..2 {
        assert_eq!(deny.check("t4", None, q, T0).await, Ok(()));
    }
    // ...then the refill fails: deny refuses, local passes; neither waits
    // longer than the timeout (300 ms), even with many requests waiting.
    let started = std::time::Instant::now();
    let waiting: Vec<_> = (0..20)
        .map(|_| {
            let (d, l) = (Arc::clone(&deny), Arc::clone(&local));
            tokio::spawn(async move {
                (
                    d.check("t4", None, q, T0).await,
                    l.check("t4", None, q, T0).await,
                )
            })
        })
        .collect();
    for w in waiting {
        let (d, l) = w.await.unwrap();
        assert_eq!(d, Err(QuotaError::Unavailable));
        assert_eq!(l, Ok(()));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    redis.restart();
    // Back: blocks are leased again (the restarted server counts from 0).
    let mut ok = false;
    for _ in 0..50 {
        if deny.check("t4", None, q, T0 + 1).await == Ok(()) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "leasing never resumed after Redis came back");
    assert_eq!(redis.counter(&format!("sg:quota:{{t4}}:m:{}", T0 / 60)), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_refusal_gives_the_tenant_unit_back() {
    let redis = RedisServer::start();
    let a = shared_quotas(&redis, OnRedisError::Deny);
    let q = Quota {
        per_minute: Some(5),
        user_per_minute: Some(1),
        lease: 5,
        ..Quota::default()
    };
    assert_eq!(a.check("t5", Some(Who::User("alice")), q, T0).await, Ok(()));
    for _ in 0..3 {
        assert_eq!(
            a.check("t5", Some(Who::User("alice")), q, T0).await,
            Err(QuotaError::Exceeded {
                limit: 1,
                reset_at: T0 + 60
            })
        );
    }
    // Alice's refusals did not use the tenant's units: 4 more users pass.
    for u in ["bob", "carol", "dave", "erin"] {
        assert_eq!(
            a.check("t5", Some(Who::User(u)), q, T0).await,
            Ok(()),
            "{u}"
        );
    }
    assert!(a
        .check("t5", Some(Who::User("frank")), q, T0)
        .await
        .is_err());
}

/// Through two real gateways: a leased quota of 6 with blocks of 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_with_leases_pass_exactly_the_quota_and_refuse_in_stream_shape() {
    let redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let cfg = gateway_config(
        &fake.url(),
        "",
        &format!(
            "[tenants.quota]\nrequests_per_minute = 6\nlease = 3\n\n[redis]\nurl = \"{}\"",
            redis.url()
        ),
    );
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let s = now() % 60;
    if s > 50 {
        tokio::time::sleep(Duration::from_secs((61 - s) as u64)).await;
    }
    let before = redis.script_calls();
    let mut ok = 0;
    let mut last = None;
    for i in 0..10 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let resp = client()
            .get(format!("{}/app?api_key={API_KEY}", gw.url()))
            .header("authorization", session_for("alice"))
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => last = Some(resp),
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(ok, 6);
    assert_eq!(
        fake.requests().len(),
        6,
        "refused requests never reached Stream"
    );
    let refused = last.unwrap();
    assert_eq!(refused.headers()["x-ratelimit-limit"], "6");
    assert_gateway_refusal(refused, 429, 9).await;
    // Two blocks per gateway, plus one "full" answer each (cached 1 s).
    assert!(redis.script_calls() - before <= 6);
}

#[test]
fn lease_config_errors_are_reported() {
    let redis = "\n\n[redis]\nurl = \"redis://127.0.0.1:6379\"";
    let err = check_fails(&format!(
        "[tenants.quota]\nrequests_per_minute = 5\nlease = 0{redis}"
    ));
    assert!(err.contains("quota.lease: must be at least 1"), "{err}");
    let err = check_fails(&format!(
        "[tenants.quota]\nuser_requests_per_minute = 5\nlease = 10{redis}"
    ));
    assert!(err.contains("quota.lease: leases apply to"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_counters_expire_with_their_window() {
    let redis = RedisServer::start();
    let a = shared_quotas(&redis, OnRedisError::Deny);
    let q = quota(Some(100), Some(1000), 2);
    let minute = format!("sg:quota:{{t7}}:m:{}", T0 / 60);
    let day = format!("sg:quota:{{t7}}:d:{}", T0 / 86_400);
    assert_eq!(a.check("t7", None, q, T0).await, Ok(()));
    let (tm, td) = (redis.ttl(&minute), redis.ttl(&day));
    assert!((100..=120).contains(&tm), "minute counter TTL {tm}");
    assert!((172_700..=172_800).contains(&td), "day counter TTL {td}");
    // The next block (the first one's 2 units spent) leaves the TTL alone.
    redis.command(&["EXPIRE", &minute, "30"]);
    for _ in 0..3 {
        assert_eq!(a.check("t7", None, q, T0).await, Ok(()));
    }
    assert_eq!(redis.counter(&minute), 4, "two blocks of 2");
    assert!(
        redis.ttl(&minute) <= 30,
        "TTL moved: {}",
        redis.ttl(&minute)
    );
}
