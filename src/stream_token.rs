//! Mints the per-user Stream JWT (`{"user_id", "iat", "exp"}`, HS256 with the
//! tenant's Stream secret) and caches it per user; and the tenant's
//! server-side token (`{"server": true, "iat", "exp"}`: no user id, which is
//! what makes Stream treat it as server-side auth) for service accounts, one
//! per tenant, cached and refreshed the same way.
//!
//! A cached token is handed out only while at least a quarter of its life is
//! left, so a request never reaches Stream with a token about to expire; past
//! that point the next request mints a fresh one. The clock is a parameter so
//! refresh is tested without sleeping. The cache is bounded (quick_cache,
//! S3-FIFO); an entry is used only before its refresh point.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;

use crate::config::Secret;

/// A minted Stream token, ready to put in the `Authorization` header.
#[derive(Debug)]
pub struct Minted {
    pub header: HeaderValue,
    pub iat: u64,
    pub exp: u64,
    refresh_at: u64,
}

impl Minted {
    pub fn token(&self) -> &str {
        // Built from base64url text, so always visible ASCII.
        self.header.to_str().unwrap_or_default()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    user_id: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Serialize)]
struct ServerClaims {
    server: bool,
    iat: u64,
    exp: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error("token is not a valid header value")]
    Header,
}

pub struct TokenMinter {
    key: EncodingKey,
    header: Header,
    ttl: u64,
    /// By user id. No time-to-live of its own: a hit is used only before
    /// its `refresh_at`, and a later mint replaces it. `None` with capacity 0.
    cache: Option<quick_cache::sync::Cache<String, Arc<Minted>>>,
    /// The tenant's server token (service accounts), minted on first use.
    server: arc_swap::ArcSwapOption<Minted>,
    /// (mints, cache hits) of the tenant, when counted in metrics.
    counters: Option<(prometheus::IntCounter, prometheus::IntCounter)>,
}

impl TokenMinter {
    /// Counts mints and cache hits under `tenant` in the metrics.
    pub fn counted(mut self, tenant: &str) -> TokenMinter {
        let m = crate::metrics::get();
        self.counters = Some((
            m.token_mints.with_label_values(&[tenant]),
            m.token_cache_hits.with_label_values(&[tenant]),
        ));
        self
    }

    pub fn new(secret: &Secret, ttl: Duration, capacity: u64) -> TokenMinter {
        TokenMinter {
            key: EncodingKey::from_secret(secret.expose()),
            header: Header::new(jsonwebtoken::Algorithm::HS256),
            ttl: ttl.as_secs().max(1),
            cache: usize::try_from(capacity)
                .ok()
                .filter(|c| *c > 0)
                .map(quick_cache::sync::Cache::new),
            server: arc_swap::ArcSwapOption::empty(),
            counters: None,
        }
    }

    /// The tenant's server-side token with life left at `now`: cached, or
    /// minted now. Shared by every service account of the tenant (the token
    /// names no one; the gateway's audit record says which service it was).
    /// Two requests at the refresh point may both mint; either token is good.
    pub fn server_token(&self, now: u64) -> Result<Arc<Minted>, MintError> {
        if let Some(t) = self.server.load_full() {
            if now < t.refresh_at {
                if let Some((_, hits)) = &self.counters {
                    hits.inc();
                }
                return Ok(t);
            }
        }
        let exp = now + self.ttl;
        let minted = Arc::new(self.signed(
            &ServerClaims {
                server: true,
                iat: now,
                exp,
            },
            now,
        )?);
        if let Some((mints, _)) = &self.counters {
            mints.inc();
        }
        self.server.store(Some(Arc::clone(&minted)));
        Ok(minted)
    }

    /// A token for `user_id` with life left at `now`: cached, or minted now.
    pub fn token_for(&self, user_id: &str, now: u64) -> Result<Arc<Minted>, MintError> {
        if let Some(t) = self.cache.as_ref().and_then(|c| c.get(user_id)) {
            if now < t.refresh_at {
                if let Some((_, hits)) = &self.counters {
                    hits.inc();
                }
                return Ok(t);
            }
        }
        let minted = Arc::new(self.mint(user_id, now)?);
        if let Some((mints, _)) = &self.counters {
            mints.inc();
        }
        if let Some(c) = &self.cache {
            c.insert(user_id.to_string(), Arc::clone(&minted));
        }
        Ok(minted)
    }

    fn mint(&self, user_id: &str, now: u64) -> Result<Minted, MintError> {
        let exp = now + self.ttl;
        self.signed(
            &Claims {
                user_id,
                iat: now,
                exp,
            },
            now,
        )
    }

    /// Signs `claims` (issued at `now`, expiring after the TTL).
    fn signed(&self, claims: &impl Serialize, now: u64) -> Result<Minted, MintError> {
        let token = encode(&self.header, claims, &self.key)?;
        Ok(Minted {
            header: HeaderValue::from_str(&token).map_err(|_| MintError::Header)?,
            iat: now,
            exp: now + self.ttl,
            refresh_at: now + self.ttl * 3 / 4,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    fn minter(ttl: u64) -> TokenMinter {
        TokenMinter::new(
            &Secret::from_bytes("stream-secret"),
            Duration::from_secs(ttl),
            100,
        )
    }

    #[test]
    fn minted_token_is_streams_user_token() {
        let t = minter(3600).token_for("alice", 1_000).unwrap();
        let mut v = Validation::new(jsonwebtoken::Algorithm::HS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        let data =
            decode::<serde_json::Value>(t.token(), &DecodingKey::from_secret(b"stream-secret"), &v)
                .unwrap();
        assert_eq!(
            data.claims,
            serde_json::json!({"user_id": "alice", "iat": 1000, "exp": 4600})
        );
        assert!(!t.token().starts_with("Bearer"));
    }

    #[test]
    fn the_server_token_has_no_user_and_is_cached_then_refreshed() {
        let m = minter(100);
        let a = m.server_token(1_000).unwrap();
        let mut v = Validation::new(jsonwebtoken::Algorithm::HS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        let data =
            decode::<serde_json::Value>(a.token(), &DecodingKey::from_secret(b"stream-secret"), &v)
                .unwrap();
        assert_eq!(
            data.claims,
            serde_json::json!({"server": true, "iat": 1000, "exp": 1100})
        );
        let b = m.server_token(1_074).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "reused while 1/4 of its life is left");
        let c = m.server_token(1_075).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "re-minted before expiry");
        assert_eq!((c.iat, c.exp), (1_075, 1_175));
        let user = m.token_for("server", 1_075).unwrap();
        assert_ne!(user.token(), c.token(), "a user named server is a user");
    }

    #[test]
    fn cached_until_three_quarters_of_ttl_then_reminted() {
        let m = minter(100);
        let a = m.token_for("u", 1_000).unwrap();
        let b = m.token_for("u", 1_074).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "reused while life is left");
        let c = m.token_for("u", 1_075).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "re-minted before expiry");
        assert_eq!(c.iat, 1_075);
        assert_eq!(c.exp, 1_175);
        let other = m.token_for("v", 1_000).unwrap();
        assert_ne!(other.token(), a.token());
    }
}
