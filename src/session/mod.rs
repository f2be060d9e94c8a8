//! Session sources: turn the app's credential into a verified user.
//!
//! Only static-key JWT sessions live here so far (`jwt`), behind a cache of
//! verified tokens (`cache`). A verified
//! [`Session`] carries a user id that already satisfies Stream's user-id
//! rules, so nothing downstream has to re-check it.

mod cache;
mod jwt;
mod user_id;

pub use cache::{CachedVerifier, CACHE_TTL};
pub use jwt::{JwtKey, JwtOptions, JwtVerifier};
pub use user_id::{valid_user_id, MAX_USER_ID_LEN};

use crate::refusal::Refusal;

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: String,
    /// `exp` of the session token, Unix seconds.
    pub expires_at: u64,
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
        }
    }
}
