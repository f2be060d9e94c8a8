//! Cheap clocks for the request path.
//!
//! A precise `clock_gettime` costs ~22 ns here (vDSO, KVM guest, tsc); the
//! fast path read the clock 14 times per request (callgrind, session 8) and
//! `__vdso_clock_gettime` was the costliest user-space symbol under load
//! (perf, 2.3 % of the gateway's CPU). Deadlines, idle times and whole
//! seconds do not need nanoseconds: they come from the kernel's coarse
//! clocks (`CLOCK_MONOTONIC_COARSE`, `CLOCK_REALTIME_COARSE`: the time of
//! the last tick, ~3 ns, at most one tick (1–4 ms) old). Latencies and the
//! audit record's time still read the precise clocks.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[cfg(target_os = "linux")]
mod coarse_source {
    use rustix::time::{clock_gettime, ClockId};
    use std::time::Duration;

    pub fn monotonic() -> Duration {
        let t = clock_gettime(ClockId::MonotonicCoarse);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    pub fn unix() -> u64 {
        let t = clock_gettime(ClockId::RealtimeCoarse);
        u64::try_from(t.tv_sec).unwrap_or(0)
    }
}

/// A precise reading and the coarse clock's reading just after: a coarse
/// reading `c` is the instant `base.0 + (c - base.1)`.
#[cfg(target_os = "linux")]
static BASE: std::sync::LazyLock<(Instant, Duration)> =
    std::sync::LazyLock::new(|| (Instant::now(), coarse_source::monotonic()));

/// Now, to within one kernel tick (either side): for deadlines and idle
/// times, never for latencies.
#[cfg(target_os = "linux")]
pub fn coarse() -> Instant {
    let (at, coarse_at) = *BASE;
    at + coarse_source::monotonic().saturating_sub(coarse_at)
}

/// Now (other systems: the precise clock).
#[cfg(not(target_os = "linux"))]
pub fn coarse() -> Instant {
    Instant::now()
}

/// [`coarse`] as tokio's instant, for its timers.
pub fn coarse_tokio() -> tokio::time::Instant {
    tokio::time::Instant::from_std(coarse())
}

/// Unix time in whole seconds, up to a tick behind: for the `Date` value,
/// never to judge a token (one issued this very second could look as if it
/// were issued in the future: see [`unix_secs_exact`]).
#[cfg(target_os = "linux")]
pub fn unix_secs() -> u64 {
    coarse_source::unix()
}

/// Unix time in whole seconds.
#[cfg(not(target_os = "linux"))]
pub fn unix_secs() -> u64 {
    unix_secs_exact()
}

/// Unix time in whole seconds, never behind the wall clock: what tokens'
/// `iat` and `exp` are checked against.
pub fn unix_secs_exact() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

thread_local! {
    /// This thread's `Date` value and the second it shows.
    static DATE: std::cell::RefCell<(u64, http::HeaderValue)> =
        const { std::cell::RefCell::new((u64::MAX, http::HeaderValue::from_static(""))) };
}

/// The `Date` header value for now (IMF-fixdate, RFC 9110), formatted once
/// per second per thread.
pub fn http_date() -> http::HeaderValue {
    let now = unix_secs();
    DATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != now {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(now));
            if let Ok(v) = http::HeaderValue::from_str(&text) {
                *cell = (now, v);
            }
        }
        cell.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The coarse clocks are the precise ones at a kernel tick's resolution
    /// (at most 10 ms, HZ=100, either way).
    const TICK: Duration = Duration::from_millis(10);

    #[test]
    fn coarse_instant_stays_within_a_tick_of_the_precise_clock() {
        for _ in 0..1000 {
            let before = Instant::now();
            let c = coarse();
            let after = Instant::now();
            assert!(c + TICK >= before, "{c:?} too early for {before:?}");
            assert!(c <= after + TICK, "{c:?} too late for {after:?}");
        }
        let t = coarse_tokio();
        assert!(t.into_std() + TICK >= Instant::now());
    }

    #[test]
    fn coarse_instant_advances_with_time() {
        let a = coarse();
        std::thread::sleep(Duration::from_millis(30));
        let b = coarse();
        let moved = b.duration_since(a);
        assert!(moved >= Duration::from_millis(30) - TICK, "{moved:?}");
        assert!(moved <= Duration::from_millis(30) + 3 * TICK + Duration::from_millis(200));
    }

    #[test]
    fn unix_seconds_match_the_precise_wall_clock() {
        let before = unix_secs_exact();
        let s = unix_secs();
        let after = unix_secs_exact();
        // A coarse second may lag the precise one by a tick across a boundary.
        assert!(s + 1 >= before && s <= after, "{before} <= {s} <= {after}");
        assert!(s > 1_700_000_000);
    }

    #[test]
    fn exact_seconds_are_never_behind_the_wall_clock() {
        // A session token issued "now" must not look issued in the future:
        // over ~1.5 s (at least one second boundary, where the coarse clock
        // lags for up to a tick), never behind.
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert!(unix_secs_exact() >= wall);
        }
    }

    #[test]
    fn http_date_is_imf_fixdate_of_now() {
        let before = unix_secs_exact();
        let v = http_date();
        let after = unix_secs_exact();
        let text = v.to_str().unwrap();
        assert_eq!(text.len(), 29, "{text}");
        assert!(text.ends_with(" GMT"), "{text}");
        let parsed = httpdate::parse_http_date(text).unwrap();
        let secs = parsed.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!(
            secs + 1 >= before && secs <= after,
            "{before} <= {secs} <= {after}"
        );
        // Cached within the second: the same value again.
        let again = http_date();
        if unix_secs() == secs {
            assert_eq!(again, v);
        }
    }

    #[test]
    fn http_date_formats_a_known_instant() {
        // The formatter http_date uses, on RFC 9110's own example.
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(httpdate::fmt_http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
