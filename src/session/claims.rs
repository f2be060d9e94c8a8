//! Claim checks shared by every JWT-based session source (`jwt`, `jwks`):
//! issuer, audience, tenant claim, user id, then the time claims.
//!
//! Identity problems are reported before expiry, because only expiry may
//! answer code 40 and make the SDK fetch a new token: a token for the wrong
//! audience must never look like one that merely needs refreshing.

use serde_json::{Map, Value};
use std::collections::HashSet;

use super::{session_id, valid_user_id, Session, SessionError};

/// What the claims of a verified JWT must satisfy.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub user_id_claim: String,
    pub issuer: Option<String>,
    pub audience: Option<HashSet<String>>,
    /// `(claim, value)`: the claim must be a string equal to `value` (the
    /// tenant this api_key selects), so one app's sessions cannot be used
    /// against another tenant.
    pub tenant: Option<(String, String)>,
    /// Clock skew allowed on `exp`/`nbf`/`iat`, in seconds.
    pub leeway: u64,
}

impl ClaimRules {
    /// Checks `claims` of `token` (already signature-verified) at Unix time `now`.
    pub fn check(
        &self,
        claims: &Map<String, Value>,
        token: &str,
        now: u64,
    ) -> Result<Session, SessionError> {
        if let Some(iss) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
                return Err(SessionError::WrongIssuer);
            }
        }
        if let Some(allowed) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => allowed.contains(a),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| allowed.contains(a)),
                _ => false,
            };
            if !ok {
                return Err(SessionError::WrongAudience);
            }
        }
        if let Some((claim, expected)) = &self.tenant {
            if claims.get(claim).and_then(Value::as_str) != Some(expected.as_str()) {
                return Err(SessionError::WrongTenant);
            }
        }
        let user_id = match claims.get(&self.user_id_claim) {
            Some(Value::String(s)) => s,
            _ => return Err(SessionError::MissingUserId),
        };
        if !valid_user_id(user_id) {
            return Err(SessionError::InvalidUserId);
        }

        let exp = numeric_date(claims.get("exp")).ok_or(SessionError::MissingExpiry)?;
        if now > exp.saturating_add(self.leeway) {
            return Err(SessionError::Expired);
        }
        if let Some(nbf) = numeric_date(claims.get("nbf")) {
            if now.saturating_add(self.leeway) < nbf {
                return Err(SessionError::NotYetValid);
            }
        }
        let iat = numeric_date(claims.get("iat"));
        if let Some(iat) = iat {
            if iat > now.saturating_add(self.leeway) {
                return Err(SessionError::IssuedInFuture);
            }
        }
        let jti = claims.get("jti").and_then(Value::as_str);
        Ok(Session {
            user_id: user_id.clone(),
            expires_at: exp,
            issued_at: iat,
            id: session_id(jti, token),
        })
    }
}

/// A JWT NumericDate: seconds, possibly fractional; negative counts as 0.
fn numeric_date(v: Option<&Value>) -> Option<u64> {
    let n = v?.as_f64()?;
    if !n.is_finite() {
        return None;
    }
    Some(if n <= 0.0 { 0 } else { n.floor() as u64 })
}
