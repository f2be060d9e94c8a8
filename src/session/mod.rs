//! Session sources: turn the app's credential into a verified user.
//!
//! Static-key JWT sessions (`jwt`) with their claim checks (`claims`), behind
//! a cache of verified tokens (`cache`); opaque session ids in Redis
//! (`opaque`). [`SessionSource`] is what a tenant holds. A verified
//! [`Session`] carries a user id that already satisfies Stream's user-id
//! rules, so nothing downstream has to re-check it.

mod cache;
mod claims;
mod jwks;
mod jwt;
mod opaque;
mod user_id;

pub use cache::{CachedJwks, CachedVerifier, VerifiedCache, CACHE_TTL};
pub use claims::{ClaimRules, ServiceClaim, ServiceSession};
pub use jwks::{JwksOptions, JwksVerifier};
pub use jwt::{JwtKey, JwtOptions, JwtVerifier};
pub use opaque::{KeyTemplate, OpaqueOptions, OpaqueSessions, MAX_SESSION_ID_LEN};
pub use user_id::{valid_user_id, MAX_USER_ID_LEN};

use std::sync::Arc;

use crate::refusal::Refusal;

/// A tenant's session source, ready to verify credentials.
pub enum SessionSource {
    /// `type = "jwt"`: static key, behind the verified-token cache.
    Jwt(Box<CachedVerifier>),
    /// `type = "jwks"`: identity-provider tokens, keys from a JWKS.
    Jwks(Box<CachedJwks>),
    /// `type = "redis"`: opaque session ids looked up in Redis.
    Opaque(Box<OpaqueSessions>),
}

impl SessionSource {
    /// Verifies a credential at Unix time `now`.
    pub async fn verify(&self, token: &str, now: u64) -> Result<Arc<Session>, SessionError> {
        match self {
            SessionSource::Jwt(v) => v.verify(token, now),
            SessionSource::Jwks(j) => j.verify(token, now).await,
            SessionSource::Opaque(o) => o.verify(token, now).await,
        }
    }

    /// Verifies a service account's JWT (`jwt` and `jwks` sources; an
    /// opaque-session tenant has none: [`SessionError::NotAService`]).
    pub async fn verify_service(
        &self,
        token: &str,
        now: u64,
    ) -> Result<Arc<ServiceSession>, SessionError> {
        match self {
            SessionSource::Jwt(v) => v.verify_service(token, now),
            SessionSource::Jwks(j) => j.verify_service(token, now).await,
            SessionSource::Opaque(_) => Err(SessionError::NotAService),
        }
    }

    /// False while the source cannot verify anything yet (JWKS not loaded).
    pub fn is_ready(&self) -> bool {
        match self {
            SessionSource::Jwks(j) => j.verifier.is_ready(),
            _ => true,
        }
    }
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: String,
    /// `exp` of the session token, Unix seconds.
    pub expires_at: u64,
    /// `iat`, when the token has one (user revocations compare against it).
    pub issued_at: Option<u64>,
    /// What a single-session revocation names: `jti:<jti>` when the token
    /// has a `jti`, else `sha256:<hex of the token>`. Never the token itself.
    pub id: String,
    /// The Stream token last minted (or found) for this session
    /// ([`TokenMinter::token_for_session`](crate::stream_token::TokenMinter::token_for_session)).
    pub stream_token: crate::stream_token::TokenSlot,
}

/// The revocation id of a session token: its `jti`, or a SHA-256 of the
/// whole token (so the token itself is never stored or logged).
pub fn session_id(jti: Option<&str>, token: &str) -> String {
    match jti {
        Some(j) if !j.is_empty() => format!("jti:{j}"),
        _ => format!("sha256:{}", token_hash(token)),
    }
}

/// Lower-case hex SHA-256 of a token.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// Why a session credential was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("session expired")]
    Expired,
    #[error("session not valid yet")]
    NotYetValid,
    #[error("session issued in the future")]
    IssuedInFuture,
    #[error("bad signature")]
    BadSignature,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("missing exp claim")]
    MissingExpiry,
    #[error("missing user id claim")]
    MissingUserId,
    #[error("user id not allowed by Stream")]
    InvalidUserId,
    #[error("session is for another tenant")]
    WrongTenant,
    #[error("signing key not known")]
    UnknownKey,
    #[error("session unknown or expired")]
    Unknown,
    #[error("session revoked")]
    Revoked,
    /// The session source cannot answer now (keys not loaded, Redis down).
    #[error("session source unavailable")]
    Unavailable,
    /// A service account's JWT presented as a user session.
    #[error("a service credential used as a user session")]
    ServiceCredential,
    /// Presented as a service, but no service account's claim is in it.
    #[error("not a service credential")]
    NotAService,
}

impl SessionError {
    /// The Stream refusal for this failure. Only [`SessionError::Expired`]
    /// maps to code 40: the SDK answers 40 by fetching a new token and
    /// retrying without limit, so anything a new token cannot fix must not
    /// be 40.
    pub fn refusal(&self) -> Refusal {
        match self {
            SessionError::Expired => Refusal::SessionExpired,
            SessionError::NotYetValid => Refusal::SessionNotYetValid,
            SessionError::IssuedInFuture => Refusal::SessionIssuedInFuture,
            SessionError::BadSignature => Refusal::BadSignature,
            SessionError::Malformed => Refusal::InvalidSession("malformed token"),
            SessionError::AlgorithmNotAllowed => Refusal::InvalidSession("algorithm not allowed"),
            SessionError::WrongIssuer => Refusal::InvalidSession("wrong issuer"),
            SessionError::WrongAudience => Refusal::InvalidSession("wrong audience"),
            SessionError::MissingExpiry => Refusal::InvalidSession("missing exp claim"),
            SessionError::MissingUserId => Refusal::InvalidSession("missing user id claim"),
            SessionError::InvalidUserId => Refusal::InvalidSession("user id not allowed by Stream"),
            SessionError::WrongTenant => Refusal::InvalidSession("session is for another app"),
            // An unknown kid after a key refresh is a token no key here made.
            SessionError::UnknownKey => Refusal::BadSignature,
            // An opaque session Redis does not know has ended (logged out or
            // timed out): 40, so the SDK asks the app for a fresh one.
            SessionError::Unknown => Refusal::SessionExpired,
            // Revoked: a new token from the app may be fine (a user
            // revocation cuts tokens issued before it), but retrying the same
            // one is not, and 40 would loop the SDK: code 5.
            SessionError::Revoked => Refusal::InvalidSession("session revoked"),
            SessionError::Unavailable => Refusal::SessionUnavailable,
            SessionError::ServiceCredential => {
                Refusal::ServiceAuth(crate::service::ServiceAuthError::UsedAsUser)
            }
            SessionError::NotAService => {
                Refusal::ServiceAuth(crate::service::ServiceAuthError::Unknown)
            }
        }
    }
}
