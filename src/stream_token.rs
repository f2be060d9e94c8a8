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
//!
//! A verified session also keeps the token last handed out for it
//! ([`TokenSlot`], in the cached [`Session`]), so a request whose session
//! came from the verified-session cache finds its token there, without a
//! second cache lookup by user id: with many users both lookups miss the
//! CPU's caches (benches/README.md, session 9).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;

use crate::config::Secret;
use crate::session::Session;

/// Tells minters apart (a session's slot may hold a token of a minter that
/// a config reload replaced).
static MINTERS: AtomicU64 = AtomicU64::new(1);

/// A minted Stream token, ready to put in the `Authorization` header.
#[derive(Debug)]
pub struct Minted {
    pub header: HeaderValue,
    pub iat: u64,
    pub exp: u64,
    refresh_at: u64,
    /// The [`TokenMinter::id`] that signed it.
    minter: u64,
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

/// The Stream token last handed out for a session, kept on the session.
/// Clones share the token; sessions compare equal whatever their slots hold
/// (it is a cache, not part of who the session is).
#[derive(Default)]
pub struct TokenSlot(arc_swap::ArcSwapOption<Minted>);

impl Clone for TokenSlot {
    fn clone(&self) -> Self {
        TokenSlot(arc_swap::ArcSwapOption::new(self.0.load_full()))
    }
}

impl PartialEq for TokenSlot {
    fn eq(&self, _: &TokenSlot) -> bool {
        true
    }
}

impl Eq for TokenSlot {}

impl std::fmt::Debug for TokenSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSlot")
    }
}

pub struct TokenMinter {
    /// From [`MINTERS`]: which slot entries are this minter's.
    id: u64,
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
            id: MINTERS.fetch_add(1, Ordering::Relaxed),
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
        if let Some(t) = self.fresh(self.server.load_full(), now) {
            return Ok(t);
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

    /// A token for `session`'s user with life left at `now`: the one in the
    /// session's slot when this minter put it there, else [`Self::token_for`]
    /// (then kept in the slot). With caching off (capacity 0) every request
    /// mints, as before.
    pub fn token_for_session(&self, session: &Session, now: u64) -> Result<Arc<Minted>, MintError> {
        if self.cache.is_none() {
            return self.token_for(&session.user_id, now);
        }
        let slot = &session.stream_token.0;
        let kept = slot
            .load()
            .as_ref()
            .filter(|t| t.minter == self.id)
            .cloned();
        if let Some(t) = self.fresh(kept, now) {
            return Ok(t);
        }
        let t = self.token_for(&session.user_id, now)?;
        slot.store(Some(Arc::clone(&t)));
        Ok(t)
    }

    /// A token for `user_id` with life left at `now`: cached, or minted now.
    pub fn token_for(&self, user_id: &str, now: u64) -> Result<Arc<Minted>, MintError> {
        if let Some(t) = self.fresh(self.cache.as_ref().and_then(|c| c.get(user_id)), now) {
            return Ok(t);
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

    /// `cached` if it is still before its refresh point at `now` (counted as
    /// a cache hit).
    fn fresh(&self, cached: Option<Arc<Minted>>, now: u64) -> Option<Arc<Minted>> {
        let t = cached.filter(|t| now < t.refresh_at)?;
        if let Some((_, hits)) = &self.counters {
            hits.inc();
        }
        Some(t)
    }

    /// Signs `claims` (issued at `now`, expiring after the TTL).
    fn signed(&self, claims: &impl Serialize, now: u64) -> Result<Minted, MintError> {
        let token = encode(&self.header, claims, &self.key)?;
        Ok(Minted {
            header: HeaderValue::from_str(&token).map_err(|_| MintError::Header)?,
            iat: now,
            exp: now + self.ttl,
            refresh_at: now + self.ttl * 3 / 4,
            minter: self.id,
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

    fn session(user: &str) -> Session {
        Session {
            user_id: user.into(),
            expires_at: u64::MAX,
            issued_at: None,
            id: "jti:1".into(),
            stream_token: TokenSlot::default(),
        }
    }

    #[test]
    fn a_session_keeps_its_token_and_uses_it_first() {
        let m = minter(100);
        let s = session("alice");
        let a = m.token_for_session(&s, 1_000).unwrap();
        let kept = s.stream_token.0.load_full().expect("kept in the slot");
        assert!(Arc::ptr_eq(&a, &kept));
        assert!(Arc::ptr_eq(&a, &m.token_for("alice", 1_000).unwrap()));
        // What the slot holds is served before the cache by user id.
        let planted = Arc::new(m.mint("alice", 1_010).unwrap());
        s.stream_token.0.store(Some(Arc::clone(&planted)));
        assert!(Arc::ptr_eq(
            &m.token_for_session(&s, 1_020).unwrap(),
            &planted
        ));
        // Refreshed at three quarters of its life, like the cache's.
        let b = m.token_for_session(&s, 1_085).unwrap();
        assert!(!Arc::ptr_eq(&b, &planted));
        assert_eq!((b.iat, b.exp), (1_085, 1_185));
        let claims = |t: &Minted| {
            let mut v = Validation::new(jsonwebtoken::Algorithm::HS256);
            v.validate_exp = false;
            v.required_spec_claims.clear();
            decode::<serde_json::Value>(t.token(), &DecodingKey::from_secret(b"stream-secret"), &v)
                .unwrap()
                .claims
        };
        assert_eq!(claims(&b)["user_id"], "alice");
    }

    #[test]
    fn another_minters_token_in_the_slot_is_not_used() {
        // A config reload makes a new minter (maybe a new secret); sessions
        // cached before it keep the old minter's token in their slots.
        let old = minter(100);
        let new = TokenMinter::new(
            &Secret::from_bytes("rotated-secret"),
            Duration::from_secs(100),
            100,
        );
        let s = session("alice");
        let a = old.token_for_session(&s, 1_000).unwrap();
        let b = new.token_for_session(&s, 1_001).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        let mut v = Validation::new(jsonwebtoken::Algorithm::HS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        let rotated = DecodingKey::from_secret(b"rotated-secret");
        assert!(decode::<serde_json::Value>(b.token(), &rotated, &v).is_ok());
        assert!(decode::<serde_json::Value>(a.token(), &rotated, &v).is_err());
    }

    #[test]
    fn with_caching_off_the_slot_is_not_used_either() {
        let m = TokenMinter::new(
            &Secret::from_bytes("stream-secret"),
            Duration::from_secs(100),
            0,
        );
        let s = session("alice");
        let a = m.token_for_session(&s, 1_000).unwrap();
        let b = m.token_for_session(&s, 1_000).unwrap();
        assert!(!Arc::ptr_eq(&a, &b), "minted each time");
        assert!(s.stream_token.0.load_full().is_none());
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
