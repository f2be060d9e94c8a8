//! A fake OpenID identity provider for JWKS session tests, on 127.0.0.1.
//!
//! Serves `/jwks.json` and `/.well-known/openid-configuration` (issuer = its
//! base URL, `jwks_uri` = its own `/jwks.json`). A test can swap the served
//! key set (rotation), make the provider fail, stall or misbehave, and count
//! hits. [`TestKey`] signs tokens and gives the matching public JWK.
//!
//! Used by the integration tests (`mod common;`) and by the unit tests in
//! `src/session/jwks/tests.rs` (through `#[path]`), so it depends on nothing
//! but crates: axum, tokio, serde_json, jsonwebtoken, rcgen.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// How the provider answers (both endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpMode {
    /// Serve the documents.
    Serve,
    /// HTTP 500.
    Fail,
    /// Wait this long, then serve (longer than the client's timeout: a hang).
    Slow(Duration),
    /// 200 with a body that is not JSON.
    BadJson,
    /// 200 with a 2 MiB body.
    Oversized,
}

struct Shared {
    base: String,
    jwks: Mutex<Value>,
    mode: Mutex<IdpMode>,
    jwks_hits: AtomicU64,
    discovery_hits: AtomicU64,
}

/// A running fake provider; stops when dropped.
pub struct FakeIdp {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeIdp {
    /// Starts serving `jwks` (a `{"keys": [...]}` document).
    pub async fn start(jwks: Value) -> FakeIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake IdP");
        let addr = listener.local_addr().expect("fake IdP address");
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            jwks: Mutex::new(jwks),
            mode: Mutex::new(IdpMode::Serve),
            jwks_hits: AtomicU64::new(0),
            discovery_hits: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/jwks.json", get(jwks_doc))
            .route("/.well-known/openid-configuration", get(discovery_doc))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeIdp { shared, task }
    }

    /// `http://127.0.0.1:<port>`, also the issuer.
    pub fn issuer(&self) -> String {
        self.shared.base.clone()
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.shared.base)
    }

    /// Serve another key set from now on.
    pub fn set_jwks(&self, jwks: Value) {
        *self.shared.jwks.lock().expect("fake IdP lock") = jwks;
    }

    pub fn set_mode(&self, mode: IdpMode) {
        *self.shared.mode.lock().expect("fake IdP lock") = mode;
    }

    /// Requests to `/jwks.json` so far (whatever was answered).
    pub fn jwks_hits(&self) -> u64 {
        self.shared.jwks_hits.load(Ordering::SeqCst)
    }

    /// Requests to the discovery document so far.
    pub fn discovery_hits(&self) -> u64 {
        self.shared.discovery_hits.load(Ordering::SeqCst)
    }
}

impl FakeIdp {
    /// Stops listening (the port then refuses connections).
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn jwks_doc(State(s): State<Arc<Shared>>) -> Response {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let doc = s.jwks.lock().expect("fake IdP lock").clone();
    answer(&s, doc).await
}

async fn discovery_doc(State(s): State<Arc<Shared>>) -> Response {
    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let doc = json!({
        "issuer": s.base,
        "jwks_uri": format!("{}/jwks.json", s.base),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    });
    answer(&s, doc).await
}

/// Every answer closes its connection, so once the provider is stopped no
/// pooled keep-alive connection can still reach it.
async fn answer(s: &Shared, doc: Value) -> Response {
    let mode = *s.mode.lock().expect("fake IdP lock");
    let json = |body: String| {
        (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CONNECTION, "close"),
            ],
            body,
        )
            .into_response()
    };
    match mode {
        IdpMode::Serve => json(doc.to_string()),
        IdpMode::Fail => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONNECTION, "close")],
            "provider down",
        )
            .into_response(),
        IdpMode::Slow(d) => {
            tokio::time::sleep(d).await;
            json(doc.to_string())
        }
        IdpMode::BadJson => json("{\"keys\": [".into()),
        IdpMode::Oversized => json(" ".repeat(2 << 20)),
    }
}

/// A signing key with its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    /// From a private key PEM (PKCS#1/PKCS#8 RSA, PKCS#8/SEC1 EC, PKCS#8 Ed25519).
    pub fn from_pem(kid: &str, alg: Algorithm, private_pem: &[u8]) -> TestKey {
        use jsonwebtoken::AlgorithmFamily as F;
        let encoding = match alg.family() {
            F::Rsa => EncodingKey::from_rsa_pem(private_pem),
            F::Ec => EncodingKey::from_ec_pem(private_pem),
            F::Ed => EncodingKey::from_ed_pem(private_pem),
            F::Hmac => panic!("TestKey is for asymmetric keys"),
        }
        .expect("private key PEM");
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("public JWK of the key");
        jwk.common.key_id = Some(kid.to_string());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        TestKey {
            kid: kid.to_string(),
            alg,
            encoding,
            jwk: serde_json::to_value(&jwk).expect("JWK as JSON"),
        }
    }

    /// From `tests/fixtures/keys/<file>`, e.g. `rsa.key`, `ec256.key`.
    pub fn fixture(kid: &str, alg: Algorithm, file: &str) -> TestKey {
        let path = format!("{}/tests/fixtures/keys/{file}", env!("CARGO_MANIFEST_DIR"));
        let pem = std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        TestKey::from_pem(kid, alg, &pem)
    }

    /// A fresh P-256 key for ES256, generated now.
    pub fn generate_es256(kid: &str) -> TestKey {
        let pair = rcgen::KeyPair::generate().expect("generate P-256 key");
        TestKey::from_pem(kid, Algorithm::ES256, pair.serialize_pem().as_bytes())
    }

    /// The public JWK: kty and key parameters, `kid`, `alg`, `use: "sig"`.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// A token with header `{"alg", "kid"}`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign token")
    }

    /// A token whose header names `kid` (any string) instead of this key's.
    pub fn sign_with_kid(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign token")
    }
}

/// A `{"keys": [...]}` document of the keys' public JWKs.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}
