//! `[redis] mode = "cluster"` and `mode = "sentinel"` against real processes
//! started by the tests (a 3-node Redis Cluster; a master, a replica and a
//! sentinel): shared quotas stay exact across two instances, revocations and
//! opaque sessions work through the cluster (keys of two tenants in different
//! slots), a Sentinel failover is followed without a restart, the gateway
//! starts while they are all down, and `check` never prints a Redis URL.

mod common;

use std::time::{Duration, Instant};

use common::gateway::run_cli_with_stdin;
use common::redis::free_port;
use common::redis_cluster::{RedisCluster, SentinelSetup};
use common::*;
use serde_json::json;

const BETA_KEY: &str = "beta-key";
const BETA_SECRET: &str = "beta-stream-secret";

/// The tenant `acme` with a shared quota (`deny`: a Redis failure is a 503,
/// never a silent pass), and `redis` as the body of `[redis]`.
fn quota_config(fake: &FakeStream, redis: &str, per_minute: u64) -> String {
    gateway_config(
        &fake.url(),
        "",
        // The user quota makes the script take four keys (all in `{acme}`).
        &format!(
            "[tenants.quota]\nrequests_per_minute = {per_minute}\nuser_requests_per_minute = 1000\n\n\
             [redis]\n{redis}\ntimeout = \"1s\"\non_redis_error = \"deny\""
        ),
    )
}

async fn get(gw: &Gateway) -> u16 {
    get_app(gw, &session_for("alice")).await.status().as_u16()
}

/// Counters are per calendar minute: do not start a run in its last seconds.
async fn away_from_minute_end(need: i64) {
    let s = now() % 60;
    if s > 60 - need {
        tokio::time::sleep(Duration::from_secs((61 - s) as u64)).await;
    }
}

/// Alternates `n` requests over `a` and `b`; returns how many passed.
async fn alternate(a: &Gateway, b: &Gateway, n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n {
        match get(if i % 2 == 0 { a } else { b }).await {
            200 => ok += 1,
            429 => {}
            s => panic!("unexpected status {s} (a Redis failure is 503 here)"),
        }
    }
    ok
}

async fn readyz(gw: &Gateway) -> u16 {
    client()
        .get(format!("{}/readyz", gw.admin_url()))
        .send()
        .await
        .expect("GET /readyz")
        .status()
        .as_u16()
}

fn minute_key() -> String {
    format!("sg:quota:{{acme}}:m:{}", now() / 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_two_instances_share_one_quota_exactly() {
    let cluster = RedisCluster::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let redis = format!("mode = \"cluster\"\nnodes = {}", cluster.nodes_toml());
    let a = Gateway::start(&quota_config(&fake, &redis, 5));
    // The second instance knows one seed only (`url` alone is a seed).
    let one_seed = format!("mode = \"cluster\"\nurl = \"{}\"", cluster.nodes[2].url());
    let b = Gateway::start(&quota_config(&fake, &one_seed, 5));
    away_from_minute_end(10).await;
    assert_eq!(alternate(&a, &b, 8).await, 5, "the quota is exact");
    assert_eq!(
        fake.requests().len(),
        5,
        "refused requests never reached Stream"
    );
    assert_eq!(cluster.command(&["GET", &minute_key()]), "$1\r\n5\r\n");
}

/// Leased blocks (`lease = 3`) through the cluster: the lease script's two
/// keys share the `{acme}` slot; the fleet passes exactly the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_leased_quota_passes_exactly_the_quota() {
    let cluster = RedisCluster::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let redis = format!("mode = \"cluster\"\nnodes = {}", cluster.nodes_toml());
    let cfg = quota_config(&fake, &redis, 6).replace(
        "requests_per_minute = 6\n",
        "requests_per_minute = 6\nlease = 3\n",
    );
    assert!(cfg.contains("lease = 3"));
    let (a, b) = (Gateway::start(&cfg), Gateway::start(&cfg));
    away_from_minute_end(10).await;
    assert_eq!(alternate(&a, &b, 10).await, 6, "never more than the quota");
    assert_eq!(fake.requests().len(), 6);
    assert_eq!(cluster.command(&["GET", &minute_key()]), "$1\r\n6\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_revocations_and_opaque_sessions() {
    let cluster = RedisCluster::start();
    // The revocation poll reads both tenants' hashes: different slots.
    assert_ne!(
        cluster.slot("sg:revoked:{acme}:users"),
        cluster.slot("sg:revoked:{beta}:users")
    );
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET), (BETA_KEY, BETA_SECRET)]);
    let cfg = gateway_config(
        &fake.url(),
        "",
        &format!(
            "[[tenants]]\nid = \"beta\"\napi_key = \"{BETA_KEY}\"\napi_secret = \"{BETA_SECRET}\"\n\
             [tenants.session]\ntype = \"redis\"\nkey = \"session:{{token}}\"\nuser_id_field = \"user.id\"\ncache_ttl = \"0s\"\n\n\
             [redis]\nmode = \"cluster\"\nnodes = {}\ntimeout = \"1s\"\nrevocation_poll = \"1s\"",
            cluster.nodes_toml()
        ),
    );
    let gw = Gateway::start(&cfg);
    // Opaque sessions make serving depend on Redis: /readyz PINGs the cluster.
    assert_eq!(readyz(&gw).await, 200);

    // Opaque session of tenant beta, kept in the cluster.
    let beta = |sid: &'static str| {
        client()
            .get(format!("{}/app?api_key={BETA_KEY}", gw.url()))
            .header("authorization", sid)
            .send()
    };
    cluster.command(&[
        "SET",
        "session:s-bob",
        r#"{"user":{"id":"bob"}}"#,
        "EX",
        "60",
    ]);
    assert_eq!(beta("s-bob").await.unwrap().status(), 200);
    let r = fake.requests().pop().expect("forwarded");
    assert_eq!(r.user_id(), Some("bob"));
    assert_eq!(beta("s-nobody").await.unwrap().status(), 401);

    // Revoking alice of acme (the CLI writes through the cluster too).
    let old = hs_token(
        "HS256",
        SESSION_SECRET,
        json!({"sub": "alice", "iat": now() - 5, "exp": now() + 600, "jti": "a-1"}),
    );
    assert_eq!(get_app(&gw, &old).await.status(), 200);
    let revoke = |lift: bool| {
        let path = gw.config_path();
        let mut args = vec![
            "revoke",
            "--config",
            path.to_str().unwrap(),
            "--tenant",
            "acme",
            "--user",
            "alice",
        ];
        if lift {
            args.push("--lift");
        }
        let out = run_cli_with_stdin(&args, &[], None);
        assert!(
            out.status.success(),
            "revoke failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    revoke(false);
    let until = |want: u16| {
        let gw = &gw;
        let old = old.clone();
        async move {
            let start = Instant::now();
            while get_app(gw, &old).await.status().as_u16() != want {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "still not {want} after 5 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    until(401).await;
    assert_eq!(
        beta("s-bob").await.unwrap().status(),
        200,
        "beta is untouched"
    );
    revoke(true);
    until(200).await;
    assert!(
        !gw.stderr().contains("cannot read revocations"),
        "{}",
        gw.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_quota_is_exact_and_a_failover_is_followed() {
    let setup = SentinelSetup::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let a = Gateway::start(&quota_config(&fake, &setup.redis_toml(), 5));
    let b = Gateway::start(&quota_config(&fake, &setup.redis_toml(), 5));
    away_from_minute_end(10).await;
    assert_eq!(alternate(&a, &b, 8).await, 5, "the quota is exact");
    assert_eq!(setup.master.command(&["GET", &minute_key()]), "$1\r\n5\r\n");

    // A new minute's count starts at 0; then the replica is promoted and the
    // old master demoted (the sentinel disconnects its clients).
    setup.master.command(&["DEL", &minute_key()]);
    let started = Instant::now();
    setup.failover();
    println!("failover took {:?}", started.elapsed());
    away_from_minute_end(10).await;
    // Writes can only succeed on the new master: the old one is read-only.
    for gw in [&a, &b] {
        let start = Instant::now();
        let mut statuses = Vec::new();
        loop {
            let s = get(gw).await;
            statuses.push(s);
            if s == 200 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the gateway never followed the failover: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // deny + quota: /readyz PINGs the master the sentinels name.
    assert_eq!(readyz(&a).await, 200);
    let counted = setup.replica.command(&["GET", &minute_key()]);
    assert!(
        counted == "$1\r\n1\r\n" || counted == "$1\r\n2\r\n",
        "counted on the new master: {counted}"
    );
    assert!(
        a.stderr().contains("sentinels are asked again"),
        "{}",
        a.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_starts_while_cluster_and_sentinels_are_down() {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    for redis in [
        format!(
            "mode = \"cluster\"\nnodes = [\"redis://127.0.0.1:{}\"]",
            free_port()
        ),
        format!(
            "mode = \"sentinel\"\nsentinels = [\"redis://127.0.0.1:{}\"]\nmaster_name = \"mymaster\"",
            free_port()
        ),
    ] {
        let cfg = gateway_config(
            &fake.url(),
            "",
            &format!(
                "[tenants.quota]\nrequests_per_minute = 5\n\n[redis]\n{redis}\ntimeout = \"200ms\""
            ),
        );
        let gw = Gateway::start(&cfg);
        // on_redis_error = "local": served, and the outage is logged.
        assert_eq!(get(&gw).await, 200);
        assert!(gw.stderr().contains("redis unavailable"), "{}", gw.stderr());
    }
}

#[test]
fn check_never_prints_redis_urls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let run = |redis: &str| {
        let cfg = gateway_config("http://127.0.0.1:1", "", &format!("[redis]\n{redis}"))
            .replace("@LISTEN@", "127.0.0.1:1")
            .replace("@ADMIN@", "127.0.0.1:2");
        std::fs::write(&path, cfg).unwrap();
        let out = run_cli_with_stdin(&["check", "--config", path.to_str().unwrap()], &[], None);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains("hunter2") && !text.contains("redis://:"),
            "{text}"
        );
        (out.status.success(), text)
    };
    let (ok, text) = run("mode = \"cluster\"\nnodes = [\"redis://:hunter2@127.0.0.1:7000\", \"redis://:hunter2@127.0.0.1:7001\"]");
    assert!(ok, "{text}");
    let (ok, text) = run("mode = \"sentinel\"\nsentinels = [\"redis://:hunter2@127.0.0.1:26379\"]\nmaster_name = \"mymaster\"\nurl = \"redis://:hunter2@mymaster/1\"");
    assert!(ok, "{text}");
    // Every problem on its own line, none quoting a URL.
    let (ok, text) = run("mode = \"cluster\"\nnodes = [\"redis://:hunter2@127.0.0.1:7000/3\", \"rediss://:hunter2@127.0.0.1:7001\", \"redis://:other@127.0.0.1:7002\"]\nmaster_name = \"x\"");
    assert!(!ok);
    for want in [
        "error: redis.nodes[0]: Redis Cluster has only database 0",
        "error: redis.nodes[1]: must start with redis://",
        "error: redis.nodes[2]: every node URL must carry the same username and password",
        "error: redis.master_name: only used with mode = \"sentinel\"",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    let (ok, text) = run("mode = \"sentinel\"\nsentinels = [\"redis://:hunter2@127.0.0.1:26379\"]\nmaster_name = \"mymaster\"\nurl = \"redis://:hunter2@10.1.2.3:6379\"");
    assert!(!ok);
    assert!(
        text.contains("error: redis.url: with mode = \"sentinel\""),
        "{text}"
    );
    assert!(!text.contains("10.1.2.3"), "{text}");
}
