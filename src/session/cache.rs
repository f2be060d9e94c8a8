//! A bounded cache of verified session tokens, so a client that sends the same
//! token on every request (the SDKs do) pays for signature verification and
//! claim parsing once, not per request.
//!
//! Only tokens that verified are cached, keyed by the exact token text, and
//! the expiry is re-checked on every hit with the caller's `now`, so a cached
//! session still expires (code 40) on time. Entries also leave the cache after
//! [`CACHE_TTL`] so the cache never outlives a key rotation by much.

use std::sync::Arc;
use std::time::Duration;

use super::{JwtVerifier, Session, SessionError};

/// How long a verified token is trusted without re-verifying its signature.
pub const CACHE_TTL: Duration = Duration::from_secs(300);

pub struct CachedVerifier {
    verifier: JwtVerifier,
    cache: moka::sync::Cache<String, Arc<Session>, ahash::RandomState>,
}

impl CachedVerifier {
    pub fn new(verifier: JwtVerifier, capacity: u64) -> CachedVerifier {
        CachedVerifier {
            verifier,
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(CACHE_TTL)
                // ahash, randomly keyed: SipHash over a ~200-byte token was
                // the cache's main cost per request.
                .build_with_hasher(ahash::RandomState::new()),
        }
    }

    pub fn verify(&self, token: &str, now: u64) -> Result<Arc<Session>, SessionError> {
        if let Some(s) = self.cache.get(token) {
            if now > s.expires_at.saturating_add(self.verifier.leeway_secs()) {
                self.cache.invalidate(token);
                return Err(SessionError::Expired);
            }
            return Ok(s);
        }
        let session = Arc::new(self.verifier.verify(token, now)?);
        self.cache.insert(token.to_string(), Arc::clone(&session));
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::session::{JwtKey, JwtOptions};
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

    fn cached() -> CachedVerifier {
        let v = JwtVerifier::new(JwtOptions {
            algorithms: vec![Algorithm::HS256],
            key: JwtKey::Secret(Secret::from_bytes("k")),
            user_id_claim: "sub".into(),
            issuer: None,
            audience: None,
            leeway_secs: 5,
            tenant_claim: None,
        })
        .unwrap();
        CachedVerifier::new(v, 10)
    }

    fn token(secret: &str, exp: u64) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u", "exp": exp}),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn cached_session_still_expires_on_time() {
        let c = cached();
        let t = token("k", 1_000);
        let a = c.verify(&t, 900).unwrap();
        let b = c.verify(&t, 1_005).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "second call served from the cache");
        assert_eq!(c.verify(&t, 1_006), Err(SessionError::Expired));
        assert_eq!(c.verify(&t, 1_006), Err(SessionError::Expired));
    }

    #[test]
    fn failures_are_not_cached() {
        let c = cached();
        let bad = token("other", 1_000);
        assert_eq!(c.verify(&bad, 900), Err(SessionError::BadSignature));
        assert_eq!(c.verify(&bad, 900), Err(SessionError::BadSignature));
    }
}
