//! Table-driven tests of JWT session verification, with a fixed clock.

use super::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

const NOW: u64 = 1_800_000_000;
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys/");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}{name}")).unwrap()
}

fn hs_verifier(algs: &[Algorithm]) -> JwtVerifier {
    JwtVerifier::new(JwtOptions {
        algorithms: algs.to_vec(),
        key: JwtKey::Secret(Secret::from_bytes("session-secret")),
        user_id_claim: "sub".into(),
        issuer: None,
        audience: None,
        leeway_secs: 0,
        tenant_claim: None,
        services: Vec::new(),
    })
    .unwrap()
}

fn hs(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn good() -> serde_json::Value {
    json!({"sub": "alice", "exp": NOW + 60, "iat": NOW - 1})
}

#[test]
fn valid_hs256_session_gives_user() {
    let v = hs_verifier(&[Algorithm::HS256]);
    let s = v
        .verify(&hs(Algorithm::HS256, "session-secret", good()), NOW)
        .unwrap();
    assert_eq!(s.user_id, "alice");
    assert_eq!(s.expires_at, NOW + 60);
}

#[test]
fn claim_failures_map_to_the_right_error() {
    let v = hs_verifier(&[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]);
    let cases: Vec<(serde_json::Value, SessionError)> = vec![
        (
            json!({"sub": "alice", "exp": NOW - 1}),
            SessionError::Expired,
        ),
        (
            json!({"sub": "alice", "exp": NOW + 60, "nbf": NOW + 10}),
            SessionError::NotYetValid,
        ),
        (
            json!({"sub": "alice", "exp": NOW + 60, "iat": NOW + 10}),
            SessionError::IssuedInFuture,
        ),
        (json!({"sub": "alice"}), SessionError::MissingExpiry),
        (json!({"exp": NOW + 60}), SessionError::MissingUserId),
        (
            json!({"sub": 42, "exp": NOW + 60}),
            SessionError::MissingUserId,
        ),
        (
            json!({"sub": "a/b", "exp": NOW + 60}),
            SessionError::InvalidUserId,
        ),
        (
            json!({"sub": "x".repeat(300), "exp": NOW + 60}),
            SessionError::InvalidUserId,
        ),
        // identity problems win over expiry: a refresh cannot fix them
        (
            json!({"sub": "a b", "exp": NOW - 100}),
            SessionError::InvalidUserId,
        ),
    ];
    for (claims, want) in cases {
        let got = v.verify(&hs(Algorithm::HS384, "session-secret", claims.clone()), NOW);
        assert_eq!(got, Err(want), "{claims}");
    }
}

#[test]
fn bad_signature_is_43_even_when_expired() {
    let v = hs_verifier(&[Algorithm::HS256]);
    let t = hs(
        Algorithm::HS256,
        "other-secret",
        json!({"sub": "a", "exp": NOW - 100}),
    );
    assert_eq!(v.verify(&t, NOW), Err(SessionError::BadSignature));
    assert_eq!(SessionError::BadSignature.refusal().code(), 43);
}

#[test]
fn leeway_extends_exp_and_nbf() {
    let mut v = hs_verifier(&[Algorithm::HS256]);
    v.rules.leeway = 30;
    let t = hs(
        Algorithm::HS256,
        "session-secret",
        json!({"sub": "a", "exp": NOW - 20, "nbf": NOW + 20}),
    );
    assert!(v.verify(&t, NOW).is_ok());
    assert_eq!(v.verify(&t, NOW + 60), Err(SessionError::Expired));
}

#[test]
fn unlisted_algorithm_and_none_are_refused() {
    let v = hs_verifier(&[Algorithm::HS256]);
    let t = hs(Algorithm::HS512, "session-secret", good());
    assert_eq!(v.verify(&t, NOW), Err(SessionError::AlgorithmNotAllowed));
    // alg none: header {"alg":"none"}, empty signature
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(good().to_string())
    );
    assert!(v.verify(&none, NOW).is_err());
    for junk in ["", "a.b", "a.b.c", "....", "e30.e30.e30"] {
        assert!(v.verify(junk, NOW).is_err(), "{junk}");
    }
}

#[test]
fn issuer_and_audience_are_enforced_when_set() {
    let v = JwtVerifier::new(JwtOptions {
        algorithms: vec![Algorithm::HS256],
        key: JwtKey::Secret(Secret::from_bytes("session-secret")),
        user_id_claim: "uid".into(),
        issuer: Some("https://idp/".into()),
        audience: Some(vec!["chat".into()]),
        leeway_secs: 0,
        tenant_claim: None,
        services: Vec::new(),
    })
    .unwrap();
    let mk = |c| hs(Algorithm::HS256, "session-secret", c);
    let ok = json!({"uid": "u1", "exp": NOW + 5, "iss": "https://idp/", "aud": ["x", "chat"]});
    assert_eq!(v.verify(&mk(ok), NOW).unwrap().user_id, "u1");
    let wrong_iss = json!({"uid": "u1", "exp": NOW + 5, "iss": "https://evil/", "aud": "chat"});
    assert_eq!(
        v.verify(&mk(wrong_iss), NOW),
        Err(SessionError::WrongIssuer)
    );
    let wrong_aud = json!({"uid": "u1", "exp": NOW + 5, "iss": "https://idp/", "aud": "web"});
    assert_eq!(
        v.verify(&mk(wrong_aud), NOW),
        Err(SessionError::WrongAudience)
    );
    let no_aud = json!({"uid": "u1", "exp": NOW + 5, "iss": "https://idp/"});
    assert_eq!(v.verify(&mk(no_aud), NOW), Err(SessionError::WrongAudience));
}

fn asym(alg: Algorithm, private: &str, public: &str) -> (JwtVerifier, String) {
    let priv_pem = read(private);
    let enc = match alg.family() {
        jsonwebtoken::AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&priv_pem).unwrap(),
        jsonwebtoken::AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&priv_pem).unwrap(),
        _ => EncodingKey::from_ed_pem(&priv_pem).unwrap(),
    };
    let token = encode(&Header::new(alg), &good(), &enc).unwrap();
    let v = JwtVerifier::new(JwtOptions {
        algorithms: vec![alg],
        key: JwtKey::PublicPem(read(public)),
        user_id_claim: "sub".into(),
        issuer: None,
        audience: None,
        leeway_secs: 0,
        tenant_claim: None,
        services: Vec::new(),
    })
    .unwrap();
    (v, token)
}

#[test]
fn asymmetric_algorithms_verify_with_public_keys() {
    for (alg, k, p) in [
        (Algorithm::RS256, "rsa.key", "rsa.pub"),
        (Algorithm::RS384, "rsa.key", "rsa.pub"),
        (Algorithm::RS512, "rsa.key", "rsa.pub"),
        (Algorithm::PS256, "rsa.key", "rsa.pub"),
        (Algorithm::ES256, "ec256.key", "ec256.pub"),
        (Algorithm::ES384, "ec384.key", "ec384.pub"),
        (Algorithm::EdDSA, "ed25519.key", "ed25519.pub"),
    ] {
        let (v, t) = asym(alg, k, p);
        assert_eq!(v.verify(&t, NOW).unwrap().user_id, "alice", "{alg:?}");
    }
}

#[test]
fn hmac_signed_with_the_public_key_is_refused() {
    let (v, _) = asym(Algorithm::RS256, "rsa.key", "rsa.pub");
    let pem = read("rsa.pub");
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &good(),
        &EncodingKey::from_secret(&pem),
    )
    .unwrap();
    assert_eq!(
        v.verify(&forged, NOW),
        Err(SessionError::AlgorithmNotAllowed)
    );
}

#[test]
fn key_and_algorithm_mismatches_are_config_errors() {
    let mk = |algs: Vec<Algorithm>, key| {
        JwtVerifier::new(JwtOptions {
            algorithms: algs,
            key,
            user_id_claim: "sub".into(),
            issuer: None,
            audience: None,
            leeway_secs: 0,
            tenant_claim: None,
            services: Vec::new(),
        })
    };
    assert!(mk(
        vec![Algorithm::RS256],
        JwtKey::Secret(Secret::from_bytes("s"))
    )
    .is_err());
    assert!(mk(vec![Algorithm::HS256], JwtKey::PublicPem(read("rsa.pub"))).is_err());
    assert!(mk(
        vec![Algorithm::HS256, Algorithm::RS256],
        JwtKey::Secret(Secret::from_bytes("s"))
    )
    .is_err());
    assert!(mk(vec![], JwtKey::Secret(Secret::from_bytes("s"))).is_err());
    assert!(mk(
        vec![Algorithm::ES256],
        JwtKey::PublicPem(b"not a pem".to_vec())
    )
    .is_err());
}
