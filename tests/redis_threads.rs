//! `mode = "single"`: each thread that calls Redis has its own connection (so
//! a proxy thread's commands never wait for another thread's runtime to send
//! them), a thread keeps using its own, and a thread whose connection died
//! with its runtime connects again. Against a real redis-server started by
//! the test; `CLIENT ID` tells the connections apart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use stream_gateway::redis_conn::Redis;

/// `CLIENT ID` of the connection the calling thread's call used.
async fn client_id(redis: &Redis) -> Result<i64, String> {
    redis
        .call(|mut conn| async move { redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await })
        .await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Two `CLIENT ID` calls on a thread of its own (its own runtime).
fn ids_on_a_new_thread(redis: &Arc<Redis>) -> (i64, i64) {
    let redis = Arc::clone(redis);
    std::thread::spawn(move || {
        runtime().block_on(async {
            let a = client_id(&redis).await.expect("first call");
            let b = client_id(&redis).await.expect("second call");
            (a, b)
        })
    })
    .join()
    .expect("thread")
}

#[test]
fn each_thread_has_its_own_connection_and_keeps_it() {
    let server = RedisServer::start();
    let redis = Arc::new(Redis::new(&server.url(), Duration::from_secs(2)).unwrap());
    let (a1, a2) = ids_on_a_new_thread(&redis);
    let (b1, b2) = ids_on_a_new_thread(&redis);
    assert_eq!(a1, a2, "a thread reuses its connection");
    assert_eq!(b1, b2, "a thread reuses its connection");
    assert_ne!(a1, b1, "two threads, two connections");
    // A second `Redis` on the same thread does not share the first's link.
    let other = Redis::new(&server.url(), Duration::from_secs(2)).unwrap();
    let rt = runtime();
    let mine = rt.block_on(client_id(&redis)).unwrap();
    let theirs = rt.block_on(client_id(&other)).unwrap();
    assert_ne!(mine, theirs);
}

#[test]
fn a_connection_that_died_with_its_runtime_is_replaced() {
    let server = RedisServer::start();
    let redis = Redis::new(&server.url(), Duration::from_millis(500)).unwrap();
    let first = runtime().block_on(client_id(&redis)).unwrap();
    // That runtime is gone, and with it the connection's driver task. The
    // same thread, on a new runtime: at most one failed call, then a new
    // connection answers.
    let rt = runtime();
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(rt.block_on(client_id(&redis)));
        if answers.last().is_some_and(|a| a.is_ok()) {
            break;
        }
    }
    let last = answers.last().cloned().unwrap();
    let id =
        last.unwrap_or_else(|e| panic!("no answer after the runtime changed: {answers:?} ({e})"));
    assert_ne!(id, first, "a new connection");
    assert!(answers.len() <= 2, "{answers:?}");
}
