//! A bounded cache of verified session tokens, so a client that sends the same
//! token on every request (the SDKs do) pays for signature verification and
//! claim parsing once, not per request.
//!
//! Only tokens that verified are cached, keyed by a SHA-256 of the token, and
//! the expiry is re-checked on every hit with the caller's `now`, so a cached
//! session still expires (code 40) on time. Entries also leave the cache after
//! [`CACHE_TTL`] so the cache never outlives a key rotation by much.

use std::sync::Arc;
use std::time::Duration;

use super::{JwksVerifier, JwtVerifier, ServiceSession, Session, SessionError};

/// A verified credential with an expiry, as cached.
pub trait Expiring {
    /// `exp`, Unix seconds.
    fn expires_at(&self) -> u64;
}

impl Expiring for Session {
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

impl Expiring for ServiceSession {
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

/// Service JWTs verified at once per source: service accounts are few, and
/// their tokens are renewed rarely.
const SERVICE_CACHE_SIZE: u64 = 1024;

/// How long a verified token is trusted without re-verifying its signature.
pub const CACHE_TTL: Duration = Duration::from_secs(300);

/// Verified sessions by token text, for any JWT source. User sessions and
/// service credentials live in two caches of their own, so a token verified
/// as one kind is never served as the other.
pub struct VerifiedCache<T: Expiring = Session> {
    leeway: u64,
    /// Keyed by the SHA-256 of the token: 32 bytes an entry whatever the
    /// token's size, no token text kept in memory, and no collision anyone
    /// can construct (a collision would hand one token another's session).
    /// Each entry keeps when it was verified (Unix seconds), for
    /// [`CACHE_TTL`]. quick_cache (S3-FIFO, sharded, no background work): a
    /// hit cost a quarter of moka's (callgrind). `None` with capacity 0.
    cache: Option<Entries<T>>,
}

/// Token digest → (session, verified at).
type Entries<T> = quick_cache::sync::Cache<[u8; 32], (Arc<T>, u64)>;

impl<T: Expiring + Send + Sync + 'static> VerifiedCache<T> {
    pub fn new(capacity: u64, leeway_secs: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        VerifiedCache {
            leeway: leeway_secs,
            cache: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
        }
    }

    /// A cached session (re-checked for expiry at `now`), or `None`.
    pub fn get(&self, token: &str, now: u64) -> Option<Result<Arc<T>, SessionError>> {
        let cache = self.cache.as_ref()?;
        let key = digest(token);
        let (s, verified_at) = cache.get(&key)?;
        if now >= verified_at.saturating_add(CACHE_TTL.as_secs()) || now < verified_at {
            // Verified too long ago (or the clock went back): verify again.
            cache.remove(&key);
            return None;
        }
        if now > s.expires_at().saturating_add(self.leeway) {
            cache.remove(&key);
            return Some(Err(SessionError::Expired));
        }
        Some(Ok(s))
    }

    /// Caches a session verified at `now`.
    pub fn insert(&self, token: &str, session: T, now: u64) -> Arc<T> {
        let session = Arc::new(session);
        if let Some(cache) = &self.cache {
            cache.insert(digest(token), (Arc::clone(&session), now));
        }
        session
    }
}

/// The cache key of a token.
pub(super) fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A static-key JWT verifier behind a [`VerifiedCache`].
pub struct CachedVerifier {
    verifier: JwtVerifier,
    cache: VerifiedCache,
    services: VerifiedCache<ServiceSession>,
}

impl CachedVerifier {
    pub fn new(verifier: JwtVerifier, capacity: u64) -> CachedVerifier {
        let cache = VerifiedCache::new(capacity, verifier.leeway_secs());
        let services = VerifiedCache::new(SERVICE_CACHE_SIZE, verifier.leeway_secs());
        CachedVerifier {
            verifier,
            cache,
            services,
        }
    }

    pub fn verify_service(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Arc<ServiceSession>, SessionError> {
        if let Some(hit) = self.services.get(token, now) {
            return hit;
        }
        let session = self.verifier.verify_service(token, now)?;
        Ok(self.services.insert(token, session, now))
    }

    pub fn verify(&self, token: &str, now: u64) -> Result<Arc<Session>, SessionError> {
        if let Some(hit) = self.cache.get(token, now) {
            return hit;
        }
        let session = self.verifier.verify(token, now)?;
        Ok(self.cache.insert(token, session, now))
    }
}

/// A JWKS verifier behind a [`VerifiedCache`]; the verifier itself is shared
/// with its background refresh task.
pub struct CachedJwks {
    pub verifier: Arc<JwksVerifier>,
    cache: VerifiedCache,
    services: VerifiedCache<ServiceSession>,
}

impl CachedJwks {
    pub fn new(verifier: Arc<JwksVerifier>, capacity: u64) -> CachedJwks {
        let cache = VerifiedCache::new(capacity, verifier.leeway_secs());
        let services = VerifiedCache::new(SERVICE_CACHE_SIZE, verifier.leeway_secs());
        CachedJwks {
            verifier,
            cache,
            services,
        }
    }

    pub async fn verify_service(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Arc<ServiceSession>, SessionError> {
        if let Some(hit) = self.services.get(token, now) {
            return hit;
        }
        let session = self.verifier.verify_service(token, now).await?;
        Ok(self.services.insert(token, session, now))
    }

    pub async fn verify(&self, token: &str, now: u64) -> Result<Arc<Session>, SessionError> {
        if let Some(hit) = self.cache.get(token, now) {
            return hit;
        }
        let session = self.verifier.verify(token, now).await?;
        Ok(self.cache.insert(token, session, now))
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
            services: Vec::new(),
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
    fn a_hit_is_verified_again_after_the_cache_ttl() {
        let c = cached();
        let t = token("k", 100_000);
        let first = c.verify(&t, 1_000).unwrap();
        let ttl = CACHE_TTL.as_secs();
        let hit = c.verify(&t, 1_000 + ttl - 1).unwrap();
        assert!(
            Arc::ptr_eq(&first, &hit),
            "served from the cache within the TTL"
        );
        let again = c.verify(&t, 1_000 + ttl).unwrap();
        assert!(!Arc::ptr_eq(&first, &again), "verified again at the TTL");
        // A clock that went back does not keep serving the entry either.
        let back = c.verify(&t, 999).unwrap();
        assert!(!Arc::ptr_eq(&again, &back));
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let cache: VerifiedCache = VerifiedCache::new(0, 5);
        let session = Session {
            user_id: "u".into(),
            expires_at: 2_000,
            issued_at: None,
            id: "jti:1".into(),
            stream_token: Default::default(),
        };
        let stored = cache.insert("t", session, 1_000);
        assert_eq!(stored.user_id, "u");
        assert!(cache.get("t", 1_000).is_none());
    }

    #[test]
    fn failures_are_not_cached() {
        let c = cached();
        let bad = token("other", 1_000);
        assert_eq!(c.verify(&bad, 900), Err(SessionError::BadSignature));
        assert_eq!(c.verify(&bad, 900), Err(SessionError::BadSignature));
    }
}
