//! Which keys of a set are used, and for which algorithms.

use super::super::keys::bit_length;
use super::*;

#[tokio::test]
async fn algorithms_outside_the_list_are_refused_without_a_fetch() {
    let (rsa, ec) = (rsa(), ec());
    let idp = FakeIdp::start(jwks(&[&rsa, &ec])).await;
    let v = loaded(&idp, |o| o.algorithms = vec![Algorithm::RS256]).await;
    assert_eq!(
        v.verify(&ec.sign(&good()), NOW).await,
        Err(SessionError::AlgorithmNotAllowed)
    );
    let ps = TestKey::fixture("rsa-1", Algorithm::PS256, "rsa.key");
    assert_eq!(
        v.verify(&ps.sign(&good()), NOW).await,
        Err(SessionError::AlgorithmNotAllowed)
    );
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn a_key_only_verifies_its_own_alg_and_family() {
    let (rsa, ec) = (rsa(), ec());
    let idp = FakeIdp::start(jwks(&[&rsa, &ec])).await;
    let v = loaded(&idp, |o| {
        o.algorithms = vec![Algorithm::RS256, Algorithm::PS256, Algorithm::ES256]
    })
    .await;
    // The JWK says alg RS256; a PS256 token under its kid is refused.
    let ps = TestKey::fixture("rsa-1", Algorithm::PS256, "rsa.key");
    assert_eq!(
        v.verify(&ps.sign(&good()), NOW).await,
        Err(SessionError::AlgorithmNotAllowed)
    );
    // An RS256 token naming the EC key.
    assert_eq!(
        v.verify(&rsa.sign_with_kid(Some("ec-1"), &good()), NOW)
            .await,
        Err(SessionError::AlgorithmNotAllowed)
    );
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn hmac_with_the_public_key_as_secret_is_refused() {
    let rsa = rsa();
    let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256", "use": "sig"});
    let mut doc = jwks(&[&rsa]);
    doc["keys"].as_array_mut().unwrap().push(oct);
    let idp = FakeIdp::start(doc).await;
    let v = JwksVerifier::new(opts(&idp.jwks_url())).unwrap();
    // The oct key is not loaded.
    assert_eq!(v.refresh().await, Ok(1));
    let public_pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keys/rsa.pub"
    ))
    .unwrap();
    for (kid, secret) in [("rsa-1", public_pem.as_slice()), ("hmac", b"secret")] {
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some(kid.into());
        let forged =
            jsonwebtoken::encode(&header, &good(), &EncodingKey::from_secret(secret)).unwrap();
        assert_eq!(
            v.verify(&forged, NOW).await,
            Err(SessionError::AlgorithmNotAllowed),
            "{kid}"
        );
    }
    // And HMAC algorithms cannot be configured at all.
    let mut o = opts(&idp.jwks_url());
    o.algorithms.push(Algorithm::HS256);
    assert!(JwksVerifier::new(o).is_err());
}

#[tokio::test]
async fn a_token_without_kid_needs_exactly_one_fitting_key() {
    let (rsa, ec, ec2) = (rsa(), ec(), TestKey::generate_es256("ec-2"));
    let idp = FakeIdp::start(jwks(&[&rsa, &ec])).await;
    let v = loaded(&idp, |_| {}).await;
    assert!(v
        .verify(&rsa.sign_with_kid(None, &good()), NOW)
        .await
        .is_ok());
    assert!(v
        .verify(&ec.sign_with_kid(None, &good()), NOW)
        .await
        .is_ok());

    // Two P-256 keys: an ES256 token without kid is ambiguous.
    idp.set_jwks(jwks(&[&rsa, &ec, &ec2]));
    assert_eq!(v.refresh().await, Ok(3));
    assert_eq!(
        v.verify(&ec.sign_with_kid(None, &good()), NOW).await,
        Err(SessionError::UnknownKey)
    );
    assert!(v
        .verify(&rsa.sign_with_kid(None, &good()), NOW)
        .await
        .is_ok());
}

#[tokio::test]
async fn signature_claims_and_garbage_map_to_their_errors() {
    let (rsa, ec) = (rsa(), ec());
    let idp = FakeIdp::start(jwks(&[&rsa, &ec])).await;
    let v = loaded(&idp, |_| {}).await;

    // Claims are ClaimRules' business: wrong audience beats expiry.
    let wrong_aud = json!({"sub": "alice", "aud": "web", "exp": NOW - 100});
    assert_eq!(
        v.verify(&rsa.sign(&wrong_aud), NOW).await,
        Err(SessionError::WrongAudience)
    );
    let expired = json!({"sub": "alice", "aud": "chat", "exp": NOW - 1});
    assert_eq!(
        v.verify(&ec.sign(&expired), NOW).await,
        Err(SessionError::Expired)
    );

    // Signed by another key under a known kid.
    let impostor = TestKey::generate_es256("ec-1");
    assert_eq!(
        v.verify(&impostor.sign(&good()), NOW).await,
        Err(SessionError::BadSignature)
    );

    for junk in ["", "garbage", "a.b", "a.b.c", "e30.e30.e30", "...."] {
        assert_eq!(
            v.verify(junk, NOW).await,
            Err(SessionError::Malformed),
            "{junk}"
        );
    }
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn bad_keys_in_the_set_are_skipped_not_fatal() {
    let (rsa, ec) = (rsa(), ec());
    let ed = TestKey::fixture("ed-1", Algorithm::EdDSA, "ed25519.key");
    let mut enc_rsa = rsa.jwk();
    enc_rsa["kid"] = json!("enc");
    enc_rsa["use"] = json!("enc");
    let mut encrypt_ops = ec.jwk();
    encrypt_ops["kid"] = json!("ops");
    encrypt_ops.as_object_mut().unwrap().remove("use");
    encrypt_ops["key_ops"] = json!(["encrypt"]);
    let mut other_alg = rsa.jwk();
    other_alg["kid"] = json!("rs512");
    other_alg["alg"] = json!("RS512");
    let mut lying_alg = ec.jwk();
    lying_alg["kid"] = json!("lying");
    lying_alg["alg"] = json!("RS256");
    let mut p384_as_es256 = TestKey::fixture("p384", Algorithm::ES384, "ec384.key").jwk();
    p384_as_es256["alg"] = json!("ES256");
    let doc = json!({"keys": [
        rsa.jwk(),
        ec.jwk(),
        ed.jwk(),
        {"kty": "RSA", "kid": "no-n", "e": "AQAB"},
        {"kty": "RSA", "kid": "tiny", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "kid": "off-curve", "x": "AAAA", "y": "AAAA"},
        {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AAAA", "y": "AAAA"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "short-ed", "x": "AAAA"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "XYZ", "kid": "unknown"},
        "not even an object",
        enc_rsa,
        encrypt_ops,
        other_alg,
        lying_alg,
        p384_as_es256,
    ]});
    let idp = FakeIdp::start(doc).await;
    let v = JwksVerifier::new(JwksOptions {
        algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        ..opts(&idp.jwks_url())
    })
    .unwrap();
    assert_eq!(v.refresh().await, Ok(3));
    for key in [&rsa, &ec, &ed] {
        assert!(
            v.verify(&key.sign(&good()), NOW).await.is_ok(),
            "{}",
            key.kid
        );
    }
    // Tokens naming the skipped keys find nothing (one refresh, then cooldown).
    for kid in ["enc", "ops", "short-ed", "hmac"] {
        assert_eq!(
            v.verify(&rsa.sign_with_kid(Some(kid), &good()), NOW).await,
            Err(SessionError::UnknownKey),
            "{kid}"
        );
    }
}

#[test]
fn bit_lengths() {
    assert_eq!(bit_length(&[]), 0);
    assert_eq!(bit_length(&[0, 0]), 0);
    assert_eq!(bit_length(&[1]), 1);
    assert_eq!(bit_length(&[0, 0x80, 0]), 16);
    assert_eq!(bit_length(&[1, 0, 1]), 17);
}
