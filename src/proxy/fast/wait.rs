//! Waits bounded by the connection's one reusable timer.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::Sleep;

/// `fut`, until `deadline` on the connection's reusable timer (a new tokio
/// timer per wait cost more than the timer work itself, callgrind); `None`
/// when the deadline passed first.
///
/// The timer is only moved when `deadline` is earlier than where it is set:
/// resetting a tokio timer cost ~220 instructions, four times a request.
/// A timer set earlier than `deadline` may fire first; the wait then goes
/// on, with the timer moved to `deadline`. So it is moved about once per
/// shortest timeout on a busy connection instead of on every wait, and a
/// deadline is never missed.
pub(super) async fn until<F: std::future::Future>(
    timer: &mut Pin<Box<Sleep>>,
    deadline: tokio::time::Instant,
    fut: F,
) -> Option<F::Output> {
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return Some(out),
            _ = timer.as_mut() => {
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// `fut`, within `after` from now (see [`until`]).
pub(super) async fn within<F: std::future::Future>(
    timer: &mut Pin<Box<Sleep>>,
    after: Duration,
    fut: F,
) -> Option<F::Output> {
    until(timer, crate::clock::coarse_tokio() + after, fut).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn timer(after: Duration) -> Pin<Box<Sleep>> {
        Box::pin(tokio::time::sleep(after))
    }

    #[tokio::test]
    async fn a_timer_set_earlier_does_not_end_a_wait_before_its_deadline() {
        // Set 20 ms out; the wait may take 300 ms; the work takes 100.
        let mut t = timer(Duration::from_millis(20));
        let started = Instant::now();
        let work = tokio::time::sleep(Duration::from_millis(100));
        let out = until(&mut t, started + Duration::from_millis(300), work).await;
        assert!(out.is_some(), "ended by the timer's earlier setting");
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_wait_ends_at_its_deadline_whatever_the_timer_was_set_to() {
        for set in [Duration::from_millis(10), Duration::from_secs(60)] {
            let mut t = timer(set);
            let started = Instant::now();
            let deadline = started + Duration::from_millis(150);
            let out = until(&mut t, deadline, std::future::pending::<()>()).await;
            assert!(out.is_none());
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(150),
                "{set:?}: ended early, {took:?}"
            );
            assert!(took < Duration::from_secs(5), "{set:?}: {took:?}");
        }
    }

    #[tokio::test]
    async fn a_timer_that_already_fired_is_set_again() {
        let mut t = timer(Duration::from_millis(1));
        (&mut t).await;
        let started = Instant::now();
        let out = within(
            &mut t,
            Duration::from_millis(100),
            std::future::pending::<()>(),
        )
        .await;
        assert!(out.is_none());
        assert!(started.elapsed() >= Duration::from_millis(90));
        // And a wait that finishes in time, on the same timer.
        let out = within(&mut t, Duration::from_secs(5), async { 7 }).await;
        assert_eq!(out, Some(7));
    }
}
