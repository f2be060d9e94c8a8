//! JWT session verification, from token bytes to verdict.
//!
//! Three verifiers: HS256 with a fixed secret (no other checks), HS256 with
//! issuer, audience and tenant claim required and two service accounts
//! (`scope` holding `chat:server`; `roles` holding `ops` with `sub` =
//! `ops-bot`), and RS256 with the public key of tests/fixtures/keys/rsa.pub.
//! The clock is fixed.
//!
//! Input: the first byte picks the mode, the rest is
//! - mode 0: a whole token, verified as is;
//! - mode 1: `header JSON \n claims JSON` (no newline: claims only, with an
//!   HS256 header), signed here with the HS256 secret, so the fuzzer reaches
//!   the claim checks behind a valid signature;
//! - mode 2: the same, "signed" with HMAC keyed by the RSA public key's PEM
//!   text (the classic algorithm-confusion attack on RS256 verifiers).
//!
//! Invariants: never panics; a token is accepted only if its signature is
//! valid for that verifier's key (checked here independently: HMAC-SHA256,
//! or RSASSA-PKCS1-v1_5 SHA-256 with the `rsa` crate) and its header's `alg`
//! is the verifier's; an accepted session has a valid Stream user id taken
//! from `sub`, has not expired, and satisfies the strict verifier's claims;
//! a token carrying a service account's claim is never a user session, and
//! a service session is only given for a token that carries its service's
//! claim (and the strict verifier's issuer, audience and tenant); a token
//! signed with another key (another secret, the public key as an HMAC
//! secret) is never accepted.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde_json::{Map, Value};
use sha2::Sha256;
use stream_gateway::config::Secret;
use stream_gateway::session::{
    valid_user_id, JwtKey, JwtOptions, JwtVerifier, ServiceClaim, Session,
};

const NOW: u64 = 1_800_000_000;
const SECRET: &[u8] = b"fuzz-session-secret";
const OTHER_SECRET: &[u8] = b"fuzz-session-secret2";
const RSA_PUB: &[u8] = include_bytes!("../../tests/fixtures/keys/rsa.pub");
const ISSUER: &str = "https://auth.example.com/";
const AUDIENCE: &str = "chat";
const TENANT: &str = "acme";

struct Verifiers {
    hs: JwtVerifier,
    strict: JwtVerifier,
    rs: JwtVerifier,
    rsa: rsa::pkcs1v15::VerifyingKey<Sha256>,
}

fn options(algorithm: Algorithm, key: JwtKey) -> JwtOptions {
    JwtOptions {
        algorithms: vec![algorithm],
        key,
        user_id_claim: "sub".into(),
        issuer: None,
        audience: None,
        leeway_secs: 0,
        tenant_claim: None,
        services: Vec::new(),
    }
}

/// Does `claims` carry this service's claim? (An independent reading of
/// the rule: equal, an element of an array, or a space-separated word.)
fn carries(claims: &Map<String, Value>, s: &ServiceClaim) -> bool {
    let has = match claims.get(&s.claim) {
        Some(Value::String(v)) => v.split(' ').any(|w| w == s.value),
        Some(Value::Array(list)) => list.iter().any(|v| v == &Value::from(s.value.as_str())),
        _ => false,
    };
    has && s
        .subject
        .as_ref()
        .is_none_or(|sub| claims.get("sub") == Some(&Value::from(sub.as_str())))
}

fn services() -> Vec<ServiceClaim> {
    vec![
        ServiceClaim {
            service: "ops".into(),
            claim: "roles".into(),
            value: "ops".into(),
            subject: Some("ops-bot".into()),
        },
        ServiceClaim {
            service: "backend".into(),
            claim: "scope".into(),
            value: "chat:server".into(),
            subject: None,
        },
    ]
}

fn verifiers() -> &'static Verifiers {
    static V: OnceLock<Verifiers> = OnceLock::new();
    V.get_or_init(|| {
        let hs = JwtVerifier::new(options(
            Algorithm::HS256,
            JwtKey::Secret(Secret::from_bytes(SECRET)),
        ))
        .unwrap();
        let mut strict = options(Algorithm::HS256, JwtKey::Secret(Secret::from_bytes(SECRET)));
        strict.issuer = Some(ISSUER.into());
        strict.audience = Some(vec![AUDIENCE.into(), "web".into()]);
        strict.tenant_claim = Some(("tenant".into(), TENANT.into()));
        strict.leeway_secs = 30;
        strict.services = services();
        let strict = JwtVerifier::new(strict).unwrap();
        let rs = JwtVerifier::new(options(
            Algorithm::RS256,
            JwtKey::PublicPem(RSA_PUB.to_vec()),
        ))
        .unwrap();
        let pem = std::str::from_utf8(RSA_PUB).unwrap();
        let rsa =
            rsa::pkcs1v15::VerifyingKey::new(rsa::RsaPublicKey::from_public_key_pem(pem).unwrap());
        Verifiers {
            hs,
            strict,
            rs,
            rsa,
        }
    })
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The token's parts as JWS compact serialisation defines them.
struct Parts {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

fn parts(token: &str) -> Option<Parts> {
    let (signing_input, signature) = token.rsplit_once('.')?;
    let (header, claims) = signing_input.split_once('.')?;
    let json = |part: &str| -> Option<Map<String, Value>> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
    };
    Some(Parts {
        header: json(header)?,
        claims: json(claims)?,
        signing_input: signing_input.to_string(),
        signature: URL_SAFE_NO_PAD.decode(signature).ok()?,
    })
}

fn numeric(v: Option<&Value>) -> Option<f64> {
    v?.as_f64().filter(|n| n.is_finite())
}

/// What must hold for any accepted session, whatever the verifier.
fn check_session(token: &str, p: &Parts, s: &Session, leeway: u64) {
    assert!(valid_user_id(&s.user_id), "{token}: user {:?}", s.user_id);
    assert_eq!(
        p.claims.get("sub").and_then(Value::as_str),
        Some(s.user_id.as_str()),
        "{token}"
    );
    let exp =
        numeric(p.claims.get("exp")).unwrap_or_else(|| panic!("{token}: accepted without exp"));
    assert!(
        exp.floor() + leeway as f64 >= NOW as f64,
        "{token}: expired at {exp}"
    );
    if let Some(nbf) = numeric(p.claims.get("nbf")) {
        assert!(nbf.floor() <= (NOW + leeway) as f64, "{token}: nbf {nbf}");
    }
    if let Some(iat) = numeric(p.claims.get("iat")) {
        assert!(iat.floor() <= (NOW + leeway) as f64, "{token}: iat {iat}");
    }
    assert!(
        !s.id.contains(token) || token.is_empty(),
        "the session id holds the token"
    );
}

fn verify_all(token: &str) {
    let v = verifiers();
    let parsed = parts(token);
    let hs_ok = |p: &Parts| {
        p.signature == hmac(SECRET, p.signing_input.as_bytes())
            && p.header.get("alg") == Some(&Value::from("HS256"))
    };
    if let Ok(s) = v.hs.verify(token, NOW) {
        let p = parsed
            .as_ref()
            .unwrap_or_else(|| panic!("accepted a token that does not parse: {token:?}"));
        assert!(
            hs_ok(p),
            "HS256 accepted a token not signed with its secret: {token:?}"
        );
        check_session(token, p, &s, 0);
    }
    let strict_identity = |p: &Parts| {
        assert!(
            hs_ok(p),
            "HS256 accepted a token not signed with its secret: {token:?}"
        );
        assert_eq!(p.claims.get("iss"), Some(&Value::from(ISSUER)), "{token}");
        assert_eq!(
            p.claims.get("tenant"),
            Some(&Value::from(TENANT)),
            "{token}"
        );
        let aud_ok = match p.claims.get("aud") {
            Some(Value::String(a)) => a == AUDIENCE || a == "web",
            Some(Value::Array(list)) => list.iter().any(|a| a == AUDIENCE || a == "web"),
            _ => false,
        };
        assert!(aud_ok, "{token}: aud {:?}", p.claims.get("aud"));
    };
    if let Ok(s) = v.strict.verify(token, NOW) {
        let p = parsed
            .as_ref()
            .unwrap_or_else(|| panic!("accepted a token that does not parse: {token:?}"));
        strict_identity(p);
        check_session(token, p, &s, 30);
        for service in services() {
            assert!(
                !carries(&p.claims, &service),
                "a token of service {} accepted as the user session of {}: {token}",
                service.service,
                s.user_id
            );
        }
    }
    if let Ok(s) = v.strict.verify_service(token, NOW) {
        let p = parsed
            .as_ref()
            .unwrap_or_else(|| panic!("accepted a token that does not parse: {token:?}"));
        strict_identity(p);
        let service = services()
            .into_iter()
            .find(|c| c.service == s.service)
            .unwrap_or_else(|| panic!("unknown service {:?}", s.service));
        assert!(
            carries(&p.claims, &service),
            "service {} without its claim: {token}",
            s.service
        );
        let exp = numeric(p.claims.get("exp"))
            .unwrap_or_else(|| panic!("{token}: service accepted without exp"));
        assert!(
            exp.floor() + 30.0 >= NOW as f64,
            "{token}: expired at {exp}"
        );
    }
    for verifier in [&v.hs, &v.rs] {
        assert!(
            verifier.verify_service(token, NOW).is_err(),
            "a verifier without service accounts accepted a service token: {token}"
        );
    }
    if let Ok(s) = v.rs.verify(token, NOW) {
        let p = parsed
            .as_ref()
            .unwrap_or_else(|| panic!("accepted a token that does not parse: {token:?}"));
        let signature = rsa::pkcs1v15::Signature::try_from(p.signature.as_slice())
            .unwrap_or_else(|_| panic!("RS256 accepted a malformed signature: {token:?}"));
        assert!(
            v.rsa.verify(p.signing_input.as_bytes(), &signature).is_ok(),
            "RS256 accepted a token not signed with its key: {token:?}"
        );
        assert_eq!(p.header.get("alg"), Some(&Value::from("RS256")), "{token}");
        check_session(token, p, &s, 0);
    }
}

fn sign(header: &str, claims: &str, key: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = URL_SAFE_NO_PAD.encode(hmac(key, input.as_bytes()));
    format!("{input}.{signature}")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => verify_all(&text),
        m => {
            let (header, claims) = text
                .split_once('\n')
                .unwrap_or((r#"{"alg":"HS256","typ":"JWT"}"#, &text));
            let v = verifiers();
            if m == 1 {
                let token = sign(header, claims, SECRET);
                verify_all(&token);
                let forged = sign(header, claims, OTHER_SECRET);
                verify_all(&forged);
                assert!(
                    v.hs.verify(&forged, NOW).is_err(),
                    "accepted with another secret: {forged}"
                );
            } else {
                let forged = sign(header, claims, RSA_PUB);
                verify_all(&forged);
                assert!(
                    v.rs.verify(&forged, NOW).is_err(),
                    "RS256 verifier accepted an HMAC token keyed by its public key: {forged}"
                );
            }
        }
    }
});
