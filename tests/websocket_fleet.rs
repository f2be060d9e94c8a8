//! Websocket caps counted fleet-wide (`connection_caps = "fleet"`): two
//! gateway instances share one real redis-server (started by the test on a
//! free port). The cap holds across instances, a closed socket frees its
//! place everywhere, a SIGKILLed instance's places expire after the lease, a
//! SIGTERMed one releases them at once, and Redis failing follows
//! `on_redis_error` (`local`: the per-process cap only; `deny`: refused).
//! The same through a 3-node Redis Cluster (every script stays in the
//! tenant's hash slot).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::fake_stream::connect_query;
use common::redis::RedisServer;
use common::redis_cluster::RedisCluster;
use common::ws::{assert_refused, connect, next_json, Ws};
use common::*;

const USER_KEY: &str = "sg:ws:{acme}:u:alice";

/// One tenant with fleet caps (`limits` in `[tenants.limits]`), `[redis]`
/// with a 200 ms timeout and the given lease.
fn config(fake: &FakeStream, redis_url: &str, limits: &str, on_error: &str, lease: &str) -> String {
    gateway_config(
        &fake.url(),
        &format!("[tenants.limits]\n{limits}\nconnection_caps = \"fleet\""),
        &format!(
            "[redis]\nurl = \"{redis_url}\"\ntimeout = \"200ms\"\non_redis_error = \"{on_error}\"\nconnection_lease = \"{lease}\"\nrevocation_poll = \"0s\""
        ),
    )
}

fn alice() -> String {
    connect_query(API_KEY, &session_for("alice"), "alice")
}

/// Opens a socket that must be admitted (first frame: the health check).
async fn open(gw: &Gateway, q: &str) -> Ws {
    let mut ws = connect(gw, q).await;
    let v = next_json(&mut ws).await;
    assert_eq!(v["type"], "health.check", "{v}");
    ws
}

/// Connects once: `Some(socket)` when admitted, `None` when refused over a
/// cap (code 71).
async fn try_open(gw: &Gateway, q: &str) -> Option<Ws> {
    let mut ws = connect(gw, q).await;
    let v = next_json(&mut ws).await;
    if v.get("error").is_some() {
        assert_eq!(v["error"]["code"], 71, "{v}");
        return None;
    }
    assert_eq!(v["type"], "health.check", "{v}");
    Some(ws)
}

/// Connects until admitted (a freed place reaches Redis asynchronously).
async fn open_eventually(gw: &Gateway, q: &str, within: Duration, what: &str) -> Ws {
    let slot: Mutex<Option<Ws>> = Mutex::new(None);
    eventually(within, Duration::from_millis(50), what, || async {
        match try_open(gw, q).await {
            Some(ws) => {
                *slot.lock().unwrap() = Some(ws);
                true
            }
            None => false,
        }
    })
    .await;
    slot.into_inner().unwrap().unwrap()
}

fn zcard(redis: &RedisServer, key: &str) -> i64 {
    let r = redis.command(&["ZCARD", key]);
    r.trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ZCARD {key}: {r:?}"))
}

fn connects(fake: &FakeStream) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.path == "/connect")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_cap_holds_across_instances_and_a_close_frees_a_place_everywhere() {
    let redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    // The default 30 s lease: a place freed within seconds was released,
    // not expired.
    let cfg = config(
        &fake,
        &redis.url(),
        "max_connections_per_user = 2",
        "local",
        "30s",
    );
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let mut a1 = open(&a, &alice()).await;
    let _a2 = open(&a, &alice()).await;
    assert_refused(connect(&b, &alice()).await, 71, 429).await;
    assert_eq!(connects(&fake), 2, "the refused upgrade reached Stream");
    assert_eq!(zcard(&redis, USER_KEY), 2);
    // Another user has places of his own.
    let _bob = open(&b, &connect_query(API_KEY, &session_for("bob"), "bob")).await;

    a1.close(None).await.unwrap();
    drop(a1);
    let started = Instant::now();
    let _b1 = open_eventually(
        &b,
        &alice(),
        Duration::from_secs(5),
        "the closed socket's place was not freed fleet-wide",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(connects(&fake), 4);
    assert_eq!(zcard(&redis, USER_KEY), 2);
    // Both instances hold one of alice's places now.
    let members = redis.command(&["ZRANGE", USER_KEY, "0", "-1"]);
    let instances: std::collections::HashSet<&str> = members
        .lines()
        .filter(|l| !l.starts_with(['*', '$']))
        .filter_map(|m| m.split(':').next())
        .collect();
    assert_eq!(instances.len(), 2, "{members}");
    assert_refused(connect(&a, &alice()).await, 71, 429).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_cap_counts_every_user_across_instances() {
    let redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let cfg = config(&fake, &redis.url(), "max_connections = 2", "local", "30s");
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let q = |u: &str| connect_query(API_KEY, &session_for(u), u);
    let _x = open(&a, &q("x")).await;
    let _y = open(&b, &q("y")).await;
    assert_refused(connect(&a, &q("z")).await, 71, 429).await;
    assert_refused(connect(&b, &q("z")).await, 71, 429).await;
    assert_eq!(zcard(&redis, "sg:ws:{acme}:all"), 2);
    assert_eq!(connects(&fake), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_s_places_expire_after_the_lease() {
    let redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let cfg = config(
        &fake,
        &redis.url(),
        "max_connections_per_user = 2",
        "local",
        "2s",
    );
    let (mut a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let _a1 = open(&a, &alice()).await;
    let _a2 = open(&a, &alice()).await;
    // Heartbeats keep live sockets counted well past one lease.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_refused(connect(&b, &alice()).await, 71, 429).await;

    a.signal("KILL");
    assert!(a.wait_exit(Duration::from_secs(5)).is_some(), "not killed");
    let killed = Instant::now();
    // Nobody released them: the places still count until their lease ends.
    assert_eq!(zcard(&redis, USER_KEY), 2);
    assert_refused(connect(&b, &alice()).await, 71, 429).await;
    let _b1 = open_eventually(
        &b,
        &alice(),
        Duration::from_secs(5),
        "the killed instance's places never expired",
    )
    .await;
    let after = killed.elapsed();
    assert!(
        after <= Duration::from_millis(2000 + 1000),
        "took {after:?} with a 2 s lease"
    );
    let _b2 = open(&b, &alice()).await;
    assert_refused(connect(&b, &alice()).await, 71, 429).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_instance_releases_its_places_at_shutdown() {
    let redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let cfg = config(
        &fake,
        &redis.url(),
        "max_connections_per_user = 2",
        "local",
        "30s",
    );
    // A short grace period so the test does not wait pingora's 10 s.
    let short = cfg.replace(
        "threads = 1",
        "threads = 1\ngrace_period = \"1s\"\ngraceful_shutdown_timeout = \"1s\"",
    );
    let (mut a, b) = (Gateway::start(&short), Gateway::start(&cfg));
    let _a1 = open(&a, &alice()).await;
    let _a2 = open(&a, &alice()).await;
    assert_refused(connect(&b, &alice()).await, 71, 429).await;
    a.signal("TERM");
    // Well before the 30 s lease.
    let _b1 = open_eventually(
        &b,
        &alice(),
        Duration::from_secs(5),
        "shutdown did not release the places",
    )
    .await;
    let _b2 = open(&b, &alice()).await;
    assert!(a.wait_exit(Duration::from_secs(20)).is_some(), "no exit");
    assert!(
        a.stderr().contains("fleet websocket places released"),
        "{}",
        a.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_local_falls_back_to_the_local_cap_and_recounts_when_back() {
    let mut redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let cfg = config(
        &fake,
        &redis.url(),
        "max_connections_per_user = 2",
        "local",
        "2s",
    );
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let _warm = open(&a, &connect_query(API_KEY, &session_for("bob"), "bob")).await;
    redis.stop();
    let mut held = Vec::new();
    for gw in [&a, &b] {
        for _ in 0..2 {
            let started = Instant::now();
            held.push(open(gw, &alice()).await);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "a socket waited on Redis"
            );
        }
        // Each instance still enforces its own cap.
        assert_refused(connect(gw, &alice()).await, 71, 429).await;
    }
    let metrics = metrics_text(&a).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("stream_gateway_redis_errors_total{use=\"connections\"}")),
        "{metrics}"
    );
    // Back: the heartbeats count the live sockets again (4 of alice's).
    redis.restart();
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(100),
        "live sockets not re-registered after Redis came back",
        || async { zcard(&redis, USER_KEY) == 4 },
    )
    .await;
    for gw in [&a, &b] {
        let log = gw.stderr();
        assert_eq!(
            log.matches("redis unavailable for fleet websocket caps")
                .count(),
            1,
            "the outage is logged once: {log}"
        );
        assert!(log.contains("counted fleet-wide again"), "{log}");
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_deny_refuses_the_socket_with_503() {
    let mut redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let cfg = config(
        &fake,
        &redis.url(),
        "max_connections_per_user = 2",
        "deny",
        "2s",
    );
    let gw = Gateway::start(&cfg);
    drop(open(&gw, &alice()).await);
    redis.stop();
    fake.clear();
    let started = Instant::now();
    let v = assert_refused(connect(&gw, &alice()).await, -1, 503).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited on Redis"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("try again"),
        "{v}"
    );
    assert_eq!(connects(&fake), 0, "a refused socket reached Stream");
    // Serving sockets depends on Redis now: not ready.
    let ready = client()
        .get(format!("{}/readyz", gw.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}

/// Both caps through a 3-node Redis Cluster, with `deny` so that any Redis
/// error (a CROSSSLOT script, say) would show as a code -1 refusal: the
/// admission script (user set and tenant set), heartbeats and releases all
/// stay in the `{acme}` slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_redis_cluster_both_caps_hold_and_places_are_renewed_and_released() {
    let cluster = RedisCluster::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let cfg = gateway_config(
        &fake.url(),
        "[tenants.limits]\nmax_connections_per_user = 2\nmax_connections = 3\nconnection_caps = \"fleet\"",
        &format!(
            "[redis]\nmode = \"cluster\"\nnodes = {}\ntimeout = \"500ms\"\non_redis_error = \"deny\"\nconnection_lease = \"2s\"\nrevocation_poll = \"0s\"",
            cluster.nodes_toml()
        ),
    );
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let q = |u: &str| connect_query(API_KEY, &session_for(u), u);
    let mut a1 = open(&a, &alice()).await;
    let _b1 = open(&b, &alice()).await;
    assert_refused(connect(&a, &alice()).await, 71, 429).await;
    let _bob = open(&b, &q("bob")).await;
    assert_refused(connect(&a, &q("carol")).await, 71, 429).await;
    assert_eq!(
        cluster.slot(USER_KEY),
        cluster.slot("sg:ws:{acme}:all"),
        "one slot per tenant"
    );
    let zcard = |key: &str| cluster.command(&["ZCARD", key]);
    assert_eq!(zcard(USER_KEY), ":2\r\n");
    assert_eq!(zcard("sg:ws:{acme}:all"), ":3\r\n");
    // Past the 2 s lease: the heartbeats kept every place.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(zcard("sg:ws:{acme}:all"), ":3\r\n");
    assert_refused(connect(&b, &q("carol")).await, 71, 429).await;

    a1.close(None).await.unwrap();
    drop(a1);
    let _carol = open_eventually(
        &b,
        &q("carol"),
        Duration::from_secs(5),
        "the closed socket's place was not freed through the cluster",
    )
    .await;
    assert_eq!(zcard(USER_KEY), ":1\r\n");
    assert_eq!(connects(&fake), 4, "refused upgrades reached Stream");
}
