//! Cost of verifying a session token, with and without the verified-session
//! cache (`cargo run --release --example session-verify`).
//!
//! For HS256, RS256 and ES256 (fixture keys in tests/fixtures/keys, the
//! jsonwebtoken `rust_crypto` backend the gateway is built with), it times
//! `JwtVerifier::verify` (signature + claims, every time) against
//! `CachedVerifier::verify` on the same token (a cache hit after the first).

use std::time::Instant;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use stream_gateway::config::Secret;
use stream_gateway::session::{CachedVerifier, JwtKey, JwtOptions, JwtVerifier};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys/");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}{name}")).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

fn verifier(alg: Algorithm) -> (JwtVerifier, EncodingKey) {
    let (key, enc) = match alg {
        Algorithm::HS256 => (
            JwtKey::Secret(Secret::from_bytes("bench-session-secret")),
            EncodingKey::from_secret(b"bench-session-secret"),
        ),
        Algorithm::RS256 => (
            JwtKey::PublicPem(read("rsa.pub")),
            EncodingKey::from_rsa_pem(&read("rsa.key")).expect("rsa key"),
        ),
        Algorithm::ES256 => (
            JwtKey::PublicPem(read("ec256.pub")),
            EncodingKey::from_ec_pem(&read("ec256.key")).expect("ec key"),
        ),
        other => panic!("not benchmarked: {other:?}"),
    };
    let v = JwtVerifier::new(JwtOptions {
        algorithms: vec![alg],
        key,
        user_id_claim: "sub".into(),
        issuer: Some("https://idp.example/".into()),
        audience: Some(vec!["chat".into()]),
        leeway_secs: 30,
        tenant_claim: None,
        services: Vec::new(),
    })
    .expect("verifier");
    (v, enc)
}

fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!("| algorithm | verify every time | cached (hit) | speed-up |");
    println!("|---|---:|---:|---:|");
    for (alg, n) in [
        (Algorithm::HS256, 200_000),
        (Algorithm::ES256, 20_000),
        (Algorithm::RS256, 20_000),
    ] {
        let (plain, enc) = verifier(alg);
        let claims = serde_json::json!({
            "sub": "bench-user-1", "iss": "https://idp.example/", "aud": "chat",
            "iat": now, "exp": now + 3600, "jti": "0d9f3c1e-bench"
        });
        let token = encode(&Header::new(alg), &claims, &enc).expect("sign");
        let uncached = per_op(n, || {
            assert!(plain.verify(&token, now).is_ok());
        });
        let (inner, _) = verifier(alg);
        let cached = CachedVerifier::new(inner, 100_000);
        let hit = per_op(n * 5, || {
            assert!(cached.verify(&token, now).is_ok());
        });
        println!(
            "| {alg:?} | {:.2} µs | {:.3} µs | {:.0}× |",
            uncached / 1000.0,
            hit / 1000.0,
            uncached / hit
        );
    }
}
