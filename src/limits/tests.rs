//! Unit tests of the local buckets, driven by a fake clock.
use super::*;
use governor::clock::FakeRelativeClock;

const ANY: RequestKind<'static> = RequestKind {
    method: "GET",
    template: "/app",
    operation: "GetApp",
};

fn limits(
    user: Option<Rate>,
    ip: Option<Rate>,
    tenant: Option<Rate>,
) -> (LocalLimits<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    (
        LocalLimits::with_clock(user, ip, tenant, clock.clone()),
        clock,
    )
}

#[test]
fn per_user_bucket_allows_burst_then_refills_at_rate() {
    let (l, clock) = limits(Rate::new(2, 1, 3), None, None);
    for _ in 0..3 {
        assert_eq!(l.check(Some("a"), None, ANY), Ok(()));
    }
    assert_eq!(
        l.check(Some("a"), None, ANY),
        Err(Limited {
            limit: 3,
            retry_after_secs: 1,
            which: "per_user",
        })
    );
    assert_eq!(
        l.check(Some("b"), None, ANY),
        Ok(()),
        "other users have their own bucket"
    );
    clock.advance(Duration::from_millis(500));
    assert_eq!(
        l.check(Some("a"), None, ANY),
        Ok(()),
        "one token back after 1/rate"
    );
    assert!(l.check(Some("a"), None, ANY).is_err());
}

#[test]
fn users_whose_ids_share_a_prefix_have_their_own_buckets() {
    // The lookup key is written into one buffer per thread, each time anew.
    let (l, _clock) = limits(Rate::new(1, 60, 2), None, None);
    for _ in 0..2 {
        assert_eq!(l.check(Some("abc"), None, ANY), Ok(()));
    }
    assert!(l.check(Some("abc"), None, ANY).is_err());
    for _ in 0..2 {
        assert_eq!(l.check(Some("ab"), None, ANY), Ok(()), "not abc's bucket");
    }
    assert!(l.check(Some("ab"), None, ANY).is_err());
    assert!(l.check(Some("abc"), None, ANY).is_err(), "abc still spent");
    assert_eq!(l.check(Some("abcd"), None, ANY), Ok(()));
}

#[test]
fn per_minute_rates_report_long_retry_after() {
    let (l, _clock) = limits(None, Rate::new(6, 60, 1), None);
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(l.check(None, Some(ip), ANY), Ok(()));
    assert_eq!(
        l.check(None, Some(ip), ANY),
        Err(Limited {
            limit: 1,
            retry_after_secs: 10,
            which: "per_ip",
        })
    );
}

#[test]
fn tenant_bucket_is_shared_by_everyone() {
    let (l, _clock) = limits(None, None, Rate::new(1, 1, 2));
    assert!(l.check(Some("a"), None, ANY).is_ok());
    assert!(l.check(Some("b"), None, ANY).is_ok());
    assert!(l.check(Some("c"), None, ANY).is_err());
}

#[test]
fn route_limits_apply_to_their_route_only() {
    let clock = FakeRelativeClock::default();
    let l = LocalLimits::with_clock(None, None, None, clock)
        .with_route(
            RouteSelector::Operation("SendMessage".into()),
            Rate::new(1, 60, 1).unwrap(),
        )
        .with_route(
            RouteSelector::Route {
                method: "POST".into(),
                template: "/channels/{a}/{b}/read".into(),
            },
            Rate::new(1, 60, 1).unwrap(),
        );
    let send = RequestKind {
        method: "POST",
        template: "/channels/{type}/{id}/message",
        operation: "SendMessage",
    };
    let read = RequestKind {
        method: "POST",
        template: "/channels/{type}/{id}/read",
        operation: "MarkRead",
    };
    assert!(l.check(Some("a"), None, send).is_ok());
    assert!(l.check(Some("a"), None, send).is_err());
    assert!(l.check(Some("b"), None, send).is_ok(), "per user");
    assert!(l.check(Some("a"), None, read).is_ok());
    assert!(
        l.check(Some("a"), None, read).is_err(),
        "template match ignores placeholder names"
    );
    assert!(
        l.check(Some("a"), None, ANY).is_ok(),
        "other routes unaffected"
    );
}

#[test]
fn a_service_has_its_own_bucket_and_shares_the_tenants() {
    let clock = FakeRelativeClock::default();
    let l = LocalLimits::with_clock(
        Rate::new(1, 60, 1),
        Rate::new(1, 60, 1),
        Rate::new(10, 1, 3),
        clock.clone(),
    )
    .with_service("billing", Rate::new(1, 1, 2).unwrap());
    assert!(l.check_service("billing").is_ok());
    assert!(
        l.check_service("billing").is_ok(),
        "no per-user/per-IP bucket"
    );
    assert_eq!(
        l.check_service("billing"),
        Err(Limited {
            limit: 2,
            retry_after_secs: 1,
            which: "per_service",
        })
    );
    assert!(l.check_service("other").is_ok(), "no bucket of its own");
    assert_eq!(
        l.check_service("other").map_err(|e| e.which),
        Err("per_tenant"),
        "the tenant bucket counts services too"
    );
    clock.advance(Duration::from_secs(1));
    assert!(l.check_service("billing").is_ok());
}

#[test]
fn a_million_distinct_users_are_pruned_away() {
    // The memory claim of the pruning timer: state for 1,000,000 one-off
    // users is dropped once their buckets are full again.
    let (l, clock) = limits(Rate::new(10, 1, 10), None, None);
    for i in 0..1_000_000u32 {
        assert!(l.check(Some(&i.to_string()), None, ANY).is_ok());
    }
    assert_eq!(l.tracked_keys(), 1_000_000);
    clock.advance(Duration::from_secs(2));
    l.prune();
    assert_eq!(l.tracked_keys(), 0);
}

#[test]
fn prune_drops_idle_keys() {
    let (l, clock) = limits(Rate::new(10, 1, 10), None, None);
    for i in 0..1000 {
        l.check(Some(&format!("u{i}")), None, ANY).unwrap();
    }
    assert_eq!(l.tracked_keys(), 1000);
    clock.advance(Duration::from_secs(2));
    l.prune();
    assert_eq!(l.tracked_keys(), 0);
}
