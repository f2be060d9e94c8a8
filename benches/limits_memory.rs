//! Memory of the keyed rate limiters with 1,000,000 distinct users, before
//! and after pruning (`cargo run --release --example limits-memory`).
//! Uses the gateway's allocator (mimalloc) and real clock; reads VmRSS.

use std::time::{Duration, Instant};

use stream_gateway::limits::{LocalLimits, Rate, RequestKind};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let limits = LocalLimits::new(Rate::new(20, 1, 40), None, None);
    let base = rss_kib();
    println!("base: {base} KiB");
    // Three rounds of 1,000,000 new users each, pruned in between: with
    // pruning the memory is reused, so it must not grow round after round.
    for round in 0..3u32 {
        let started = Instant::now();
        for i in 0..1_000_000u32 {
            let _ = limits.check(Some(&format!("user-{round}-{i}")), None, kind);
        }
        let filled = rss_kib();
        std::thread::sleep(Duration::from_secs(3));
        limits.prune();
        std::thread::sleep(Duration::from_secs(1));
        println!(
            "round {round}: 1,000,000 users -> {filled} KiB ({:.1}s); after prune: {} keys, {} KiB",
            started.elapsed().as_secs_f64() - 4.0,
            limits.tracked_keys(),
            rss_kib()
        );
    }
}
