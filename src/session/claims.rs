//! Claim checks shared by every JWT-based session source (`jwt`, `jwks`):
//! issuer, audience, tenant claim, user id, then the time claims; and the
//! same checks for service-account JWTs, which carry a configured claim
//! instead of a user id ([`ServiceClaim`]).
//!
//! Identity problems are reported before expiry, because only expiry may
//! answer code 40 and make the SDK fetch a new token: a token for the wrong
//! audience must never look like one that merely needs refreshing.

use serde_json::{Map, Value};
use std::collections::HashSet;

use super::{session_id, valid_user_id, Session, SessionError};

/// What makes a verified JWT a service account's credential: `claim`
/// holds `value` (equal to it, an element of it when it is an array, or a
/// word of it when it is a space-separated string such as OAuth's `scope`),
/// and, when `subject` is set, `sub` equals it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceClaim {
    /// The service account's name.
    pub service: String,
    pub claim: String,
    pub value: String,
    pub subject: Option<String>,
}

impl ServiceClaim {
    fn matches(&self, claims: &Map<String, Value>) -> bool {
        let has = match claims.get(&self.claim) {
            Some(Value::String(s)) => s == &self.value || s.split(' ').any(|w| w == self.value),
            Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(&self.value)),
            _ => false,
        };
        has && self
            .subject
            .as_ref()
            .is_none_or(|sub| claims.get("sub").and_then(Value::as_str) == Some(sub.as_str()))
    }
}

/// A verified service-account JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSession {
    /// The service account's name.
    pub service: String,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
}

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
    /// The tenant's service accounts that authenticate with a JWT of this
    /// source, those with a `subject` first (the most specific match wins).
    pub services: Vec<ServiceClaim>,
}

impl ClaimRules {
    /// Checks `claims` of `token` (already signature-verified) at Unix time
    /// `now`, as a user session. A token that carries a service account's
    /// claim is refused here: it is a service credential, not a user.
    pub fn check(
        &self,
        claims: &Map<String, Value>,
        token: &str,
        now: u64,
    ) -> Result<Session, SessionError> {
        self.check_identity(claims)?;
        if self.service_of(claims).is_some() {
            return Err(SessionError::ServiceCredential);
        }
        let user_id = match claims.get(&self.user_id_claim) {
            Some(Value::String(s)) => s,
            _ => return Err(SessionError::MissingUserId),
        };
        if !valid_user_id(user_id) {
            return Err(SessionError::InvalidUserId);
        }
        let (exp, iat) = self.check_times(claims, now)?;
        let jti = claims.get("jti").and_then(Value::as_str);
        Ok(Session {
            user_id: user_id.clone(),
            expires_at: exp,
            issued_at: iat,
            id: session_id(jti, token),
            stream_token: Default::default(),
        })
    }

    /// Checks `claims` as a service account's credential: the same issuer,
    /// audience, tenant and time checks, and a service's claim instead of a
    /// user id (none: [`SessionError::NotAService`]).
    pub fn check_service(
        &self,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<ServiceSession, SessionError> {
        self.check_identity(claims)?;
        let service = self.service_of(claims).ok_or(SessionError::NotAService)?;
        let (exp, _) = self.check_times(claims, now)?;
        Ok(ServiceSession {
            service: service.to_string(),
            expires_at: exp,
        })
    }

    /// The service account whose claim `claims` carry, if any.
    fn service_of(&self, claims: &Map<String, Value>) -> Option<&str> {
        self.services
            .iter()
            .find(|s| s.matches(claims))
            .map(|s| s.service.as_str())
    }

    /// Issuer, audience and tenant claim.
    fn check_identity(&self, claims: &Map<String, Value>) -> Result<(), SessionError> {
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
        Ok(())
    }

    /// `exp` (required), `nbf`, `iat`; returns (exp, iat).
    fn check_times(
        &self,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<(u64, Option<u64>), SessionError> {
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
        Ok((exp, iat))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(services: Vec<ServiceClaim>) -> ClaimRules {
        ClaimRules {
            user_id_claim: "sub".into(),
            issuer: Some("https://idp".into()),
            audience: None,
            tenant: None,
            leeway: 0,
            services,
        }
    }

    fn claim(service: &str, value: &str, subject: Option<&str>) -> ServiceClaim {
        ServiceClaim {
            service: service.into(),
            claim: "scope".into(),
            value: value.into(),
            subject: subject.map(Into::into),
        }
    }

    fn map(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_service_claim_is_a_value_a_scope_word_or_an_array_element() {
        let r = rules(vec![
            claim("exact", "backend-x", Some("client-1")),
            claim("admin", "chat:admin", None),
        ]);
        let check = |c: serde_json::Value| {
            r.check_service(&map(c), 100)
                .map(|s| s.service)
                .map_err(|e| e.to_string())
        };
        let base = |scope: serde_json::Value, sub: &str| json!({"iss": "https://idp", "sub": sub, "exp": 200, "scope": scope});
        assert_eq!(check(base(json!("chat:admin"), "a")), Ok("admin".into()));
        assert_eq!(
            check(base(json!("openid chat:admin email"), "a")),
            Ok("admin".into())
        );
        assert_eq!(
            check(base(json!(["x", "chat:admin"]), "a")),
            Ok("admin".into())
        );
        assert_eq!(
            check(base(json!("backend-x"), "client-1")),
            Ok("exact".into())
        );
        for (c, why) in [
            (base(json!("chat:admins"), "a"), "not a service credential"),
            (
                base(json!("backend-x"), "client-2"),
                "not a service credential",
            ),
            (base(json!(true), "a"), "not a service credential"),
            (
                json!({"iss": "https://other", "scope": "chat:admin", "exp": 200}),
                "wrong issuer",
            ),
            (
                json!({"iss": "https://idp", "scope": "chat:admin"}),
                "missing exp claim",
            ),
            (
                json!({"iss": "https://idp", "scope": "chat:admin", "exp": 99}),
                "session expired",
            ),
        ] {
            assert_eq!(check(c.clone()), Err(why.to_string()), "{c}");
        }
    }

    #[test]
    fn a_token_with_a_service_claim_is_no_user_session() {
        let r = rules(vec![claim("admin", "chat:admin", None)]);
        let c =
            map(json!({"iss": "https://idp", "sub": "alice", "exp": 200, "scope": "chat:admin"}));
        assert_eq!(r.check(&c, "t", 100), Err(SessionError::ServiceCredential));
        let user = map(json!({"iss": "https://idp", "sub": "alice", "exp": 200, "scope": "chat"}));
        assert_eq!(
            r.check(&user, "t", 100).map(|s| s.user_id),
            Ok("alice".into())
        );
    }
}
