//! Faults (issue 9) not covered elsewhere: an upstream that resets in the
//! middle of a response, a Redis that accepts connections but never answers
//! (slow, not down), and a Redis that flaps. For each: the client gets a
//! clear answer or a cut connection within the timeouts, nothing hangs, and
//! the gateway recovers by itself. (Upstream down, hanging up, too slow:
//! tests/upstream_failures.rs; Redis down: tests/quota.rs, sessions.rs,
//! revocation.rs, websocket_fleet.rs; JWKS provider down: sessions.rs;
//! websockets closed abruptly: websocket.rs.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;

/// An upstream that answers every request with a head promising 1000 bytes,
/// sends 10, and resets the connection (SO_LINGER 0 through a half-read
/// socket: the kernel sends RST).
fn start_resetting_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"partial\"",
            );
            let _ = s.flush();
            std::thread::sleep(Duration::from_millis(50));
            // Unread bytes left in the socket make close() send a reset.
            drop(s);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_mid_response_cuts_the_client_and_the_gateway_keeps_serving() {
    let upstream = start_resetting_upstream();
    let cfg = gateway_config(&format!("http://{upstream}"), "", "");
    let gw = Gateway::start(&cfg);
    for _ in 0..3 {
        let started = Instant::now();
        let resp = get_app(&gw, &session_for("alice")).await;
        if resp.status() == 200 {
            // The head was relayed before the reset: the body must end in
            // an error, never look complete (a silently truncated answer
            // would be the bug).
            let body = resp.bytes().await;
            assert!(body.is_err(), "a truncated body ended cleanly: {body:?}");
        } else {
            // Or the reset came before the head was relayed: 502.
            assert_gateway_refusal(resp, 502, -1).await;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // Still alive and answering.
    let resp = client()
        .get(format!("{}/healthz", gw.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Accepts TCP connections and never answers: a Redis that is up but stuck.
fn start_black_hole() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        // Bounded: at most 50 connections, then the thread ends.
        for s in listener.incoming().take(50).flatten() {
            held.push(s);
        }
    });
    (addr, t)
}

fn quota_config(fake: &FakeStream, redis_url: &str, on_error: &str) -> String {
    gateway_config(
        &fake.url(),
        "",
        &format!(
            "[tenants.quota]\nrequests_per_minute = 1000\n\n[redis]\nurl = \"{redis_url}\"\ntimeout = \"200ms\"\non_redis_error = \"{on_error}\""
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_redis_costs_at_most_the_timeout_then_on_redis_error_decides() {
    let (hole, _t) = start_black_hole();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let local = Gateway::start(&quota_config(&fake, &format!("redis://{hole}"), "local"));
    let deny = Gateway::start(&quota_config(&fake, &format!("redis://{hole}"), "deny"));
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(get_app(&local, &session_for("alice")).await.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "local waited {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert_gateway_refusal(get_app(&deny, &session_for("alice")).await, 503, -1).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "deny waited {:?}",
            started.elapsed()
        );
    }
    let m = metrics_text(&local).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("stream_gateway_redis_errors_total{use=\"quota\"}")),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_redis_never_hangs_requests_and_counting_resumes() {
    let mut redis = RedisServer::start();
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let gw = Gateway::start(&quota_config(&fake, &redis.url(), "local"));
    let minute_key = || format!("sg:quota:{{acme}}:m:{}", now() / 60);
    for cycle in 0..3 {
        redis.stop();
        for _ in 0..3 {
            let started = Instant::now();
            assert_eq!(get_app(&gw, &session_for("alice")).await.status(), 200);
            assert!(started.elapsed() < Duration::from_secs(1), "cycle {cycle}");
        }
        redis.restart();
        // Back: requests are counted in Redis again, without a restart.
        eventually(
            Duration::from_secs(10),
            Duration::from_millis(100),
            "counting resumed",
            || async {
                let _ = get_app(&gw, &session_for("alice")).await;
                redis.command(&["GET", &minute_key()]).starts_with('$')
                    && !redis.command(&["GET", &minute_key()]).starts_with("$-1")
            },
        )
        .await;
    }
    assert!(
        gw.stderr().matches("redis unavailable").count() <= 3,
        "one log line per outage:\n{}",
        gw.stderr()
    );
}
