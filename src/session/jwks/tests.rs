//! JWKS session verification against a real fake IdP on loopback HTTP, with
//! a fixed clock for the claims.

use super::*;
use jsonwebtoken::EncodingKey;
use serde_json::json;
use std::collections::HashSet;

#[path = "../../../tests/common/fake_idp.rs"]
mod fake_idp;
use fake_idp::{jwks, FakeIdp, IdpMode, TestKey};

const NOW: u64 = 1_800_000_000;

fn rsa() -> TestKey {
    TestKey::fixture("rsa-1", Algorithm::RS256, "rsa.key")
}

fn ec() -> TestKey {
    TestKey::fixture("ec-1", Algorithm::ES256, "ec256.key")
}

fn good() -> Value {
    json!({"sub": "alice", "aud": "chat", "exp": NOW + 60, "iat": NOW - 1})
}

fn opts(jwks_url: &str) -> JwksOptions {
    JwksOptions {
        jwks_url: Some(jwks_url.to_string()),
        discovery_issuer: None,
        algorithms: vec![Algorithm::RS256, Algorithm::ES256],
        rules: ClaimRules {
            user_id_claim: "sub".into(),
            issuer: None,
            audience: Some(HashSet::from(["chat".to_string()])),
            tenant: None,
            leeway: 0,
            services: Vec::new(),
        },
        refresh_interval: Duration::from_secs(600),
        refresh_cooldown: Duration::from_secs(30),
        fetch_timeout: Duration::from_secs(5),
    }
}

/// A verifier on `idp`'s JWKS URL, after one successful load.
async fn loaded(idp: &FakeIdp, tweak: impl FnOnce(&mut JwksOptions)) -> JwksVerifier {
    let mut o = opts(&idp.jwks_url());
    tweak(&mut o);
    let v = JwksVerifier::new(o).unwrap();
    v.refresh().await.unwrap();
    v
}

#[test]
fn verifier_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<JwksVerifier>();
}

#[tokio::test]
async fn valid_rs256_and_es256_tokens_verify() {
    let (rsa, ec) = (rsa(), ec());
    let idp = FakeIdp::start(jwks(&[&rsa, &ec])).await;
    let v = JwksVerifier::new(opts(&idp.jwks_url())).unwrap();
    assert_eq!(v.refresh().await, Ok(2));
    assert!(v.is_ready());
    for key in [&rsa, &ec] {
        let s = v.verify(&key.sign(&good()), NOW).await.unwrap();
        assert_eq!(s.user_id, "alice", "{:?}", key.alg);
        assert_eq!(s.expires_at, NOW + 60);
        assert_eq!(s.issued_at, Some(NOW - 1));
    }
    assert_eq!(v.refresh_counts(), (1, 0));
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn discovery_finds_the_key_set() {
    let rsa = rsa();
    let idp = FakeIdp::start(jwks(&[&rsa])).await;
    let mut o = opts("unused");
    o.jwks_url = None;
    // A trailing slash on the issuer is not doubled.
    o.discovery_issuer = Some(format!("{}/", idp.issuer()));
    let v = JwksVerifier::new(o).unwrap();
    assert_eq!(v.refresh().await, Ok(1));
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1));
    assert_eq!(
        v.verify(&rsa.sign(&good()), NOW).await.unwrap().user_id,
        "alice"
    );
}

#[tokio::test]
async fn discovery_of_another_issuer_is_refused() {
    let idp = FakeIdp::start(jwks(&[&rsa()])).await;
    let mut o = opts("unused");
    o.jwks_url = None;
    // The provider's document names its own base URL, not this one.
    o.discovery_issuer = Some(idp.issuer().replace("127.0.0.1", "localhost"));
    let v = JwksVerifier::new(o).unwrap();
    let err = v.refresh().await.unwrap_err();
    assert!(err.contains("issuer"), "{err}");
    assert_eq!(idp.jwks_hits(), 0);
    assert!(!v.is_ready());
}

#[tokio::test]
async fn not_ready_before_the_first_load() {
    let rsa = rsa();
    let idp = FakeIdp::start(jwks(&[&rsa])).await;
    let v = JwksVerifier::new(opts(&idp.jwks_url())).unwrap();
    assert!(!v.is_ready());
    assert_eq!(
        v.verify(&rsa.sign(&good()), NOW).await,
        Err(SessionError::Unavailable)
    );
    // Neither new() nor verify() went to the network.
    assert_eq!(idp.jwks_hits(), 0);
    assert_eq!(v.refresh_counts(), (0, 0));
}

#[tokio::test]
async fn a_rotated_in_key_is_fetched_once_and_accepted() {
    let (old, new) = (rsa(), TestKey::generate_es256("ec-rotated"));
    let idp = FakeIdp::start(jwks(&[&old])).await;
    let v = loaded(&idp, |_| {}).await;
    let token = new.sign(&good());

    idp.set_jwks(jwks(&[&old, &new]));
    assert_eq!(v.verify(&token, NOW).await.unwrap().user_id, "alice");
    assert_eq!(idp.jwks_hits(), 2);
    // Known now: no further fetch.
    assert!(v.verify(&token, NOW).await.is_ok());
    assert!(v.verify(&old.sign(&good()), NOW).await.is_ok());
    assert_eq!(idp.jwks_hits(), 2);
    assert_eq!(v.refresh_counts(), (2, 0));
}

#[tokio::test]
async fn concurrent_requests_for_a_new_kid_share_one_fetch() {
    let (old, new) = (rsa(), TestKey::generate_es256("ec-rotated"));
    let idp = FakeIdp::start(jwks(&[&old])).await;
    let v = Arc::new(loaded(&idp, |_| {}).await);
    idp.set_jwks(jwks(&[&old, &new]));
    // The provider is slow, so the requests overlap the one fetch.
    idp.set_mode(IdpMode::Slow(Duration::from_millis(300)));
    let token = new.sign(&good());
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (v, token) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&token, NOW).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().user_id, "alice");
    }
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn unknown_kids_within_the_cooldown_fetch_once() {
    let rsa = rsa();
    let idp = FakeIdp::start(jwks(&[&rsa])).await;
    let v = Arc::new(loaded(&idp, |_| {}).await);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let v = v.clone();
            let token = rsa.sign_with_kid(Some(&format!("garbage-{i}")), &good());
            tokio::spawn(async move { v.verify(&token, NOW).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Err(SessionError::UnknownKey));
    }
    for i in 0..5 {
        let token = rsa.sign_with_kid(Some(&format!("more-garbage-{i}")), &good());
        assert_eq!(v.verify(&token, NOW).await, Err(SessionError::UnknownKey));
    }
    assert_eq!(idp.jwks_hits(), 2, "initial load plus exactly one refresh");
}

#[tokio::test]
async fn after_the_cooldown_an_unknown_kid_may_refresh_again() {
    let rsa = rsa();
    let idp = FakeIdp::start(jwks(&[&rsa])).await;
    let cooldown = Duration::from_millis(300);
    let v = loaded(&idp, |o| o.refresh_cooldown = cooldown).await;
    let garbage = rsa.sign_with_kid(Some("garbage"), &good());
    assert_eq!(v.verify(&garbage, NOW).await, Err(SessionError::UnknownKey));
    assert_eq!(v.verify(&garbage, NOW).await, Err(SessionError::UnknownKey));
    assert_eq!(idp.jwks_hits(), 2);
    tokio::time::sleep(cooldown + Duration::from_millis(20)).await;
    assert_eq!(v.verify(&garbage, NOW).await, Err(SessionError::UnknownKey));
    assert_eq!(idp.jwks_hits(), 3);
}

#[tokio::test]
async fn failed_refreshes_keep_the_old_keys() {
    let rsa = rsa();
    let idp = FakeIdp::start(jwks(&[&rsa])).await;
    let timeout = Duration::from_millis(200);
    let url = format!("{}?token=hunter2", idp.jwks_url());
    let v = JwksVerifier::new(JwksOptions {
        fetch_timeout: timeout,
        ..opts(&url)
    })
    .unwrap();
    assert_eq!(v.refresh().await, Ok(1));
    let token = rsa.sign(&good());
    let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"});
    let failures: Vec<(&str, IdpMode, Value, &str)> = vec![
        ("500", IdpMode::Fail, jwks(&[&rsa]), "500"),
        ("bad json", IdpMode::BadJson, jwks(&[&rsa]), "not a JWK set"),
        (
            "slow",
            IdpMode::Slow(Duration::from_secs(5)),
            jwks(&[&rsa]),
            "timed out",
        ),
        ("oversized", IdpMode::Oversized, jwks(&[&rsa]), "larger"),
        (
            "empty set",
            IdpMode::Serve,
            json!({"keys": []}),
            "no usable",
        ),
        (
            "only an HMAC key",
            IdpMode::Serve,
            json!({"keys": [oct]}),
            "no usable",
        ),
        (
            "not a set",
            IdpMode::Serve,
            json!({"k": 1}),
            "not a JWK set",
        ),
    ];
    let n = failures.len() as u64;
    for (what, mode, doc, want) in failures {
        idp.set_mode(mode);
        idp.set_jwks(doc);
        let started = Instant::now();
        let err = v.refresh().await.unwrap_err();
        assert!(err.contains(want), "{what}: {err}");
        assert!(!err.contains("hunter2"), "{what}: secret in {err}");
        assert!(started.elapsed() < Duration::from_secs(2), "{what}");
        assert!(v.is_ready(), "{what}");
        assert_eq!(
            v.verify(&token, NOW).await.unwrap().user_id,
            "alice",
            "{what}"
        );
    }
    assert_eq!(v.refresh_counts(), (1, n));

    // Provider gone entirely.
    let url = idp.jwks_url();
    idp.stop().await;
    let v2 = JwksVerifier::new(opts(&url)).unwrap();
    assert!(v2.refresh().await.is_err());
    assert!(!v2.is_ready());
    assert!(v.refresh().await.is_err());
    assert!(v.verify(&token, NOW).await.is_ok());
}

#[tokio::test]
async fn run_retries_the_first_load_then_refreshes_on_schedule() {
    let (old, new) = (rsa(), TestKey::generate_es256("ec-rotated"));
    let idp = FakeIdp::start(jwks(&[&old])).await;
    idp.set_mode(IdpMode::Fail);
    let interval = Duration::from_millis(100);
    let v = Arc::new(
        JwksVerifier::new(JwksOptions {
            refresh_interval: interval,
            refresh_cooldown: Duration::from_secs(3600),
            ..opts(&idp.jwks_url())
        })
        .unwrap(),
    );
    let runner = {
        let v = v.clone();
        tokio::spawn(async move { v.run().await })
    };
    let wait_until = |what: &'static str, cond: Box<dyn Fn() -> bool + Send>| async move {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let failures = {
        let v = v.clone();
        move || v.refresh_counts().1 >= 2
    };
    wait_until("two failed loads", Box::new(failures)).await;
    assert!(!v.is_ready());

    idp.set_mode(IdpMode::Serve);
    let ready = {
        let v = v.clone();
        move || v.is_ready()
    };
    wait_until("the first load", Box::new(ready)).await;

    // Spend the on-demand refresh so only the schedule can bring the new key.
    let unknown = new.sign(&good());
    assert_eq!(v.verify(&unknown, NOW).await, Err(SessionError::UnknownKey));
    idp.set_jwks(jwks(&[&old, &new]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while v.verify(&unknown, NOW).await.is_err() {
        assert!(Instant::now() < deadline, "scheduled refresh never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runner.abort();
}

#[test]
fn configuration_mistakes_are_refused() {
    let ok = opts("https://idp.example/jwks.json");
    assert!(JwksVerifier::new(ok.clone()).is_ok());
    let bad: Vec<(&str, JwksOptions)> = vec![
        (
            "no algorithms",
            JwksOptions {
                algorithms: vec![],
                ..ok.clone()
            },
        ),
        (
            "HS512",
            JwksOptions {
                algorithms: vec![Algorithm::HS512],
                ..ok.clone()
            },
        ),
        (
            "no source",
            JwksOptions {
                jwks_url: None,
                discovery_issuer: None,
                ..ok.clone()
            },
        ),
        ("ftp", opts("ftp://idp.example/jwks.json")),
        ("not a url", opts("jwks.json")),
        (
            "zero interval",
            JwksOptions {
                refresh_interval: Duration::ZERO,
                ..ok.clone()
            },
        ),
        (
            "zero timeout",
            JwksOptions {
                fetch_timeout: Duration::ZERO,
                ..ok.clone()
            },
        ),
    ];
    for (what, o) in bad {
        assert!(JwksVerifier::new(o).is_err(), "{what}");
    }
}

mod keys;
