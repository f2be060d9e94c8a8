//! Memory of the keyed rate limiters with 1,000,000 distinct users, before
//! and after pruning (`cargo run --release --example limits-memory`).
//! Uses the gateway's allocator (the system's; mimalloc with `--features
//! mimalloc`) and real clock; reads VmRSS.
//!
//! As in the gateway, the keys are inserted by a long-lived "worker" thread
//! and pruned by another thread (the pruner service), which then (mimalloc
//! build) asks mimalloc to return freed memory (`mi_collect`, what the
//! binary registers with `limits::on_prune`). `NO_COLLECT=1` skips that
//! call, for comparison.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use stream_gateway::limits::{LocalLimits, Rate, RequestKind};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../src/release_memory.rs"]
mod release_memory;
use release_memory::release_free_memory;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let kind = RequestKind {
        method: "GET",
        template: "/app",
        operation: "GetApp",
    };
    // 20/s with a burst of 40: a key is idle (bucket full) 2 s after its request.
    let limits = Arc::new(LocalLimits::new(Rate::new(20, 1, 40), None, None));
    // The worker: fills a round of users when asked, and stays alive.
    let (ask, asked) = mpsc::channel::<u32>();
    let (done, finished) = mpsc::channel::<()>();
    let worker_limits = Arc::clone(&limits);
    std::thread::spawn(move || {
        for round in asked {
            for i in 0..1_000_000u32 {
                let _ = worker_limits.check(Some(&format!("user-{round}-{i}")), None, kind);
            }
            let _ = done.send(());
        }
    });
    let collect = std::env::var_os("NO_COLLECT").is_none();
    let base = rss_kib();
    println!("base: {base} KiB");
    // Three rounds of 1,000,000 new users each, pruned in between: with
    // pruning the memory is reused, so it must not grow round after round.
    for round in 0..3u32 {
        let started = Instant::now();
        ask.send(round).expect("worker thread alive");
        finished.recv().expect("worker thread alive");
        let filled = rss_kib();
        std::thread::sleep(Duration::from_secs(3));
        limits.prune();
        if collect {
            release_free_memory();
        }
        std::thread::sleep(Duration::from_secs(1));
        println!(
            "round {round}: 1,000,000 users -> {filled} KiB ({:.1}s); after prune: {} keys, {} KiB",
            started.elapsed().as_secs_f64() - 4.0,
            limits.tracked_keys(),
            rss_kib()
        );
    }
}
