//! `type = "jwt"` sessions: the app's own JWT, verified with a static key
//! (an HMAC secret, or a PEM public key for RSA, EC or Ed25519).
//!
//! jsonwebtoken checks the header's `alg` against the allowed list, the key's
//! family against the `alg` (so an HMAC "signature" made with a public key is
//! refused), and the signature. Every claim check is done here instead, with
//! an injected `now`, so the order is ours: identity problems (issuer,
//! audience, user id) are reported before expiry, because only expiry may
//! answer code 40 and make the SDK fetch a new token.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::collections::HashSet;

use super::{ClaimRules, ServiceClaim, ServiceSession, Session, SessionError};
use crate::config::Secret;

/// The verification key of a JWT session source.
pub enum JwtKey {
    /// Shared HMAC secret (HS256/384/512 only).
    Secret(Secret),
    /// PEM public key (RSA, EC or Ed25519), for the asymmetric algorithms.
    PublicPem(Vec<u8>),
}

/// What a JWT session source checks, already validated by config.
pub struct JwtOptions {
    pub algorithms: Vec<Algorithm>,
    pub key: JwtKey,
    pub user_id_claim: String,
    pub issuer: Option<String>,
    pub audience: Option<Vec<String>>,
    pub leeway_secs: u64,
    /// `(claim, tenant id)` that every session must carry.
    pub tenant_claim: Option<(String, String)>,
    /// The tenant's service accounts that present JWTs of this source.
    pub services: Vec<ServiceClaim>,
}

pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    rules: ClaimRules,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("user_id_claim", &self.rules.user_id_claim)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Builds a verifier; fails with a config-style message when the key does
    /// not fit the algorithms.
    pub fn new(opts: JwtOptions) -> Result<JwtVerifier, String> {
        use jsonwebtoken::AlgorithmFamily as F;
        let Some(first) = opts.algorithms.first() else {
            return Err("algorithms must list at least one algorithm".into());
        };
        let family = first.family();
        if opts.algorithms.iter().any(|a| a.family() != family) {
            return Err("algorithms must all be of one family (HS*, RS*/PS*, ES*, or EdDSA): one key cannot verify several".into());
        }
        let key = match (&opts.key, family) {
            (JwtKey::Secret(s), F::Hmac) => DecodingKey::from_secret(s.expose()),
            (JwtKey::Secret(_), _) => {
                return Err("asymmetric algorithms need public_key, not secret".into())
            }
            (JwtKey::PublicPem(_), F::Hmac) => {
                return Err(
                    "HMAC algorithms need secret; an HMAC key is never taken from a public key"
                        .into(),
                )
            }
            (JwtKey::PublicPem(pem), F::Rsa) => DecodingKey::from_rsa_pem(pem)
                .map_err(|e| format!("public_key is not an RSA public key in PEM: {e}"))?,
            (JwtKey::PublicPem(pem), F::Ec) => DecodingKey::from_ec_pem(pem)
                .map_err(|e| format!("public_key is not an EC public key in PEM: {e}"))?,
            (JwtKey::PublicPem(pem), F::Ed) => DecodingKey::from_ed_pem(pem)
                .map_err(|e| format!("public_key is not an Ed25519 public key in PEM: {e}"))?,
        };
        let mut validation = Validation::new(*first);
        validation.algorithms = opts.algorithms.clone();
        // Claims are checked in `verify` with an injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        Ok(JwtVerifier {
            key,
            validation,
            rules: ClaimRules {
                user_id_claim: opts.user_id_claim,
                issuer: opts.issuer,
                audience: opts.audience.map(|a| a.into_iter().collect()),
                tenant: opts.tenant_claim,
                leeway: opts.leeway_secs,
                services: opts.services,
            },
        })
    }

    /// Clock skew allowed on `exp`/`nbf`/`iat`, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.rules.leeway
    }

    /// Verifies `token` at Unix time `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Session, SessionError> {
        let claims = self.decode(token)?;
        self.rules.check(&claims, token, now)
    }

    /// Verifies `token` as a service account's credential.
    pub fn verify_service(&self, token: &str, now: u64) -> Result<ServiceSession, SessionError> {
        let claims = self.decode(token)?;
        self.rules.check_service(&claims, now)
    }

    /// The claims of a token whose algorithm and signature verified.
    fn decode(&self, token: &str) -> Result<Map<String, Value>, SessionError> {
        use jsonwebtoken::errors::ErrorKind as K;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
            K::InvalidSignature => SessionError::BadSignature,
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
                SessionError::AlgorithmNotAllowed
            }
            _ => SessionError::Malformed,
        })?;
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests;
