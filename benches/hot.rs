//! Micro-benchmarks of the gateway's hot functions (issue 8), with criterion:
//! `cargo bench --bench hot`. Results and the machine are recorded in
//! benches/README.md. Each bench runs one step of the request path on inputs
//! shaped like the official SDK's requests.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use stream_gateway::audit::Record;
use stream_gateway::config::Secret;
use stream_gateway::limits::{LocalLimits, Rate, RequestKind};
use stream_gateway::policy::normalize::normalize;
use stream_gateway::policy::{Policy, UnknownRoutes};
use stream_gateway::session::{CachedVerifier, JwtKey, JwtOptions, JwtVerifier};
use stream_gateway::stream_token::TokenMinter;
use stream_gateway::{credential, query};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys/");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}{name}")).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// A verifier for `alg` with the fixture keys, and a valid token for it.
fn verifier(alg: Algorithm) -> (JwtVerifier, String) {
    let (key, enc) = match alg {
        Algorithm::HS256 => (
            JwtKey::Secret(Secret::from_bytes("bench-session-secret")),
            EncodingKey::from_secret(b"bench-session-secret"),
        ),
        Algorithm::RS256 => (
            JwtKey::PublicPem(read("rsa.pub")),
            EncodingKey::from_rsa_pem(&read("rsa.key")).expect("rsa key"),
        ),
        _ => (
            JwtKey::PublicPem(read("ec256.pub")),
            EncodingKey::from_ec_pem(&read("ec256.key")).expect("ec key"),
        ),
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
    let claims = serde_json::json!({
        "sub": "alice", "iss": "https://idp.example/", "aud": "chat",
        "iat": now(), "exp": now() + 3600,
    });
    let token = encode(&Header::new(alg), &claims, &enc).expect("token");
    (v, token)
}

fn request_path(c: &mut Criterion) {
    let token = verifier(Algorithm::HS256).1;
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    headers.insert("stream-auth-type", HeaderValue::from_static("jwt"));
    let raw_query = "api_key=acme-key&connection_id=5b1c9e2a-0000-4b6e-9d5e-1f2a3b4c5d6e";
    c.bench_function("credential: query parse + extract (Bearer header)", |b| {
        b.iter(|| {
            let pairs = query::parse(black_box(raw_query)).expect("query");
            black_box(credential::extract(black_box(&headers), &pairs).is_ok())
        })
    });
    c.bench_function("normalise: /channels/messaging/general/message", |b| {
        b.iter(|| black_box(normalize(black_box("/channels/messaging/general/message")).is_ok()))
    });
    let policy = Policy::new(UnknownRoutes::Deny, &[], &[]).expect("policy");
    c.bench_function("policy decide: POST /channels/{type}/{id}/message", |b| {
        b.iter(|| {
            black_box(policy.decide(
                black_box("POST"),
                black_box("/channels/messaging/general/message"),
            ))
        })
    });
}

fn sessions(c: &mut Criterion) {
    let mut g = c.benchmark_group("session verify");
    g.measurement_time(Duration::from_secs(3));
    for (name, alg) in [
        ("HS256", Algorithm::HS256),
        ("RS256", Algorithm::RS256),
        ("ES256", Algorithm::ES256),
    ] {
        let (v, token) = verifier(alg);
        g.bench_function(format!("{name} (every time)"), |b| {
            b.iter(|| black_box(v.verify(black_box(&token), now()).is_ok()))
        });
        let cached = CachedVerifier::new(v, 10_000);
        g.bench_function(format!("{name} (cached hit)"), |b| {
            b.iter(|| black_box(cached.verify(black_box(&token), now()).is_ok()))
        });
    }
    g.finish();
}

fn tokens_limits_audit(c: &mut Criterion) {
    let minter = TokenMinter::new(
        &Secret::from_bytes("bench-stream-secret"),
        Duration::from_secs(3600),
        100_000,
    );
    let t = now();
    c.bench_function("stream token: cache hit", |b| {
        b.iter(|| black_box(minter.token_for(black_box("alice"), t).is_ok()))
    });
    // What a request with a cached session does (session 9): the token kept
    // on the session, no lookup by user id.
    let session = stream_gateway::session::Session {
        user_id: "alice".into(),
        expires_at: u64::MAX,
        issued_at: None,
        id: "jti:1".into(),
        stream_token: Default::default(),
    };
    c.bench_function("stream token: kept on the session", |b| {
        b.iter(|| black_box(minter.token_for_session(black_box(&session), t).is_ok()))
    });
    let mut i = 0u64;
    c.bench_function("stream token: mint (new user each time)", |b| {
        b.iter(|| {
            i += 1;
            let fresh = TokenMinter::new(
                &Secret::from_bytes("bench-stream-secret"),
                Duration::from_secs(3600),
                16,
            );
            black_box(fresh.token_for(&format!("u{i}"), t).is_ok())
        })
    });
    let limits = LocalLimits::new(Rate::new(1_000_000, 1, 1_000_000), None, None);
    let kind = RequestKind {
        method: "POST",
        template: "/channels/{type}/{id}/message",
        operation: "SendMessage",
    };
    let ip = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    c.bench_function("limiter: per-user check", |b| {
        b.iter(|| black_box(limits.check(black_box(Some("alice")), ip, kind).is_ok()))
    });
    let record = Record {
        time: stream_gateway::audit::Timestamp::from_unix_millis(1_795_666_200_123),
        kind: "request",
        request_id: "0123456789abcdef0123456789abcdef".into(),
        tenant: Some("acme".into()),
        user_id: Some("alice".into()),
        service: None,
        client_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))),
        method: "POST".into(),
        route: Some("/channels/{type}/{id}/message".into()),
        operation: Some("SendMessage".into()),
        decision: "forwarded",
        code: None,
        status: 201,
        upstream_status: Some(201),
        latency_ms: 1.234,
        bytes_in: 312,
        bytes_out: 1870,
        duration_ms: None,
        frames_in: None,
        frames_out: None,
    };
    let mut buf = Vec::with_capacity(512);
    c.bench_function("audit: encode one record", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&record).encode_json(&mut buf);
            black_box(buf.len())
        })
    });
    c.bench_function("audit: encode one record (serde_json, before)", |b| {
        b.iter(|| {
            buf.clear();
            serde_json::to_writer(&mut buf, black_box(&record)).expect("json");
            black_box(buf.len())
        })
    });
}

criterion_group!(benches, request_path, sessions, tokens_limits_audit);
criterion_main!(benches);
