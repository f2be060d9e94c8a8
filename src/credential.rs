//! Finds the client's credential: the `Authorization` header (a leading
//! `Bearer`, any case, any spacing, is stripped) and the `authorization`
//! query parameter (websockets; browsers cannot set handshake headers).
//!
//! A session cookie (opt-in per tenant) is read only when neither is there,
//! and only from an allowed origin ([`check_cookie_origin`]).
//!
//! Two different tokens in one request are refused rather than picking one:
//! whichever the gateway ignored might be the one a later hop reads.
//!
//! [`service_marked`] reads the `Stream-Auth-Type: service` marker of
//! service-account requests (see `service.rs`).

use crate::headers::{visible_ascii, RequestHeaders};
use crate::query::{is_key, Pair};
use crate::refusal::Refusal;

mod cookie;
pub use cookie::{check_cookie_origin, from_cookie};

/// What the client presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A session token (not yet verified).
    Token(String),
    /// `Stream-Auth-Type: anonymous` and no token.
    Anonymous,
    /// Nothing.
    Missing,
}

/// Strips an optional `Bearer` scheme (any case) and surrounding spaces.
pub fn strip_bearer(v: &str) -> &str {
    let v = v.trim_matches([' ', '\t']);
    match v.get(..6) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer") => {
            let rest = &v[6..];
            if rest.is_empty() || rest.starts_with([' ', '\t']) {
                rest.trim_start_matches([' ', '\t'])
            } else {
                // "Bearerxyz" is a token that happens to start with "Bearer".
                v
            }
        }
        _ => v,
    }
}

/// Adds one candidate token, refusing a second, different one.
fn merge<'a>(token: &mut Option<&'a str>, candidate: &'a str) -> Result<(), Refusal> {
    let candidate = strip_bearer(candidate);
    if candidate.is_empty() {
        return Ok(());
    }
    match token {
        Some(seen) if *seen != candidate => Err(Refusal::ConflictingCredentials),
        Some(_) => Ok(()),
        None => {
            *token = Some(candidate);
            Ok(())
        }
    }
}

pub fn extract(headers: &impl RequestHeaders, query: &[Pair<'_>]) -> Result<Credential, Refusal> {
    let mut token: Option<&str> = None;
    for v in headers.all("authorization") {
        let v = visible_ascii(v).ok_or(Refusal::BadRequest("Authorization header is not ASCII"))?;
        merge(&mut token, v)?;
    }
    for p in query.iter().filter(|p| is_key(p, "authorization")) {
        merge(&mut token, &p.value)?;
    }
    if let Some(t) = token {
        return Ok(Credential::Token(t.to_string()));
    }
    let anonymous = headers
        .all("stream-auth-type")
        .any(|v| v.eq_ignore_ascii_case(b"anonymous"))
        || query
            .iter()
            .any(|p| is_key(p, "stream-auth-type") && p.value.eq_ignore_ascii_case("anonymous"));
    Ok(if anonymous {
        Credential::Anonymous
    } else {
        Credential::Missing
    })
}

/// True when the request is marked as a service account's:
/// `Stream-Auth-Type: service` (header, or the `stream-auth-type` query
/// parameter; any case). The marker next to another auth type is refused
/// rather than picking one.
pub fn service_marked(headers: &impl RequestHeaders, query: &[Pair<'_>]) -> Result<bool, Refusal> {
    let (mut service, mut other) = (false, false);
    let values = headers.all("stream-auth-type").chain(
        query
            .iter()
            .filter(|p| is_key(p, "stream-auth-type"))
            .map(|p| p.value.as_bytes()),
    );
    for v in values {
        if v.eq_ignore_ascii_case(crate::service::AUTH_TYPE.as_bytes()) {
            service = true;
        } else if !v.is_empty() {
            other = true;
        }
    }
    if service && other {
        return Err(Refusal::BadRequest(
            "conflicting Stream-Auth-Type values (service and another)",
        ));
    }
    Ok(service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse;
    use http::HeaderMap;
    use http::HeaderValue;

    fn headers(auth: &[&str], kind: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in auth {
            h.append(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(a).unwrap(),
            );
        }
        if let Some(k) = kind {
            h.insert("stream-auth-type", HeaderValue::from_str(k).unwrap());
        }
        h
    }

    #[test]
    fn bearer_variants_are_stripped() {
        for v in [
            "tok",
            "Bearer tok",
            "bearer tok",
            "BEARER   tok",
            " Bearer\ttok ",
            "bEaReR tok",
        ] {
            assert_eq!(strip_bearer(v), "tok", "{v:?}");
        }
        assert_eq!(strip_bearer("Bearertok"), "Bearertok");
        assert_eq!(strip_bearer("Bearer"), "");
    }

    #[test]
    fn header_and_query_tokens() {
        let q = parse("authorization=Bearer%20tok").unwrap();
        assert_eq!(
            extract(&headers(&[], None), &q),
            Ok(Credential::Token("tok".into()))
        );
        assert_eq!(
            extract(&headers(&["tok"], None), &q),
            Ok(Credential::Token("tok".into()))
        );
        assert_eq!(
            extract(&headers(&["Bearer tok", "tok"], None), &[]),
            Ok(Credential::Token("tok".into()))
        );
    }

    #[test]
    fn two_different_tokens_conflict() {
        let q = parse("authorization=other").unwrap();
        assert_eq!(
            extract(&headers(&["tok"], None), &q),
            Err(Refusal::ConflictingCredentials)
        );
        assert_eq!(
            extract(&headers(&["a", "b"], None), &[]),
            Err(Refusal::ConflictingCredentials)
        );
        let q2 = parse("authorization=a&AUTHORIZATION=b").unwrap();
        assert_eq!(
            extract(&headers(&[], None), &q2),
            Err(Refusal::ConflictingCredentials)
        );
    }

    #[test]
    fn anonymous_only_without_a_token() {
        assert_eq!(
            extract(&headers(&[], Some("anonymous")), &[]),
            Ok(Credential::Anonymous)
        );
        let q = parse("stream-auth-type=anonymous&authorization=").unwrap();
        assert_eq!(extract(&headers(&[], None), &q), Ok(Credential::Anonymous));
        assert_eq!(
            extract(&headers(&["tok"], Some("anonymous")), &[]),
            Ok(Credential::Token("tok".into()))
        );
        assert_eq!(
            extract(&headers(&[], Some("jwt")), &[]),
            Ok(Credential::Missing)
        );
        assert_eq!(
            extract(&headers(&["Bearer "], None), &[]),
            Ok(Credential::Missing)
        );
    }

    #[test]
    fn the_service_marker_is_explicit_and_alone() {
        let marked =
            |kind: Option<&str>, q: &str| service_marked(&headers(&[], kind), &parse(q).unwrap());
        assert_eq!(marked(Some("service"), ""), Ok(true));
        assert_eq!(marked(Some("SERVICE"), ""), Ok(true));
        assert_eq!(marked(None, "stream-auth-type=service"), Ok(true));
        assert_eq!(
            marked(Some("service"), "stream-auth-type=service"),
            Ok(true)
        );
        assert_eq!(marked(Some("jwt"), ""), Ok(false));
        assert_eq!(marked(None, ""), Ok(false));
        assert_eq!(marked(Some("services"), ""), Ok(false));
        assert!(marked(Some("service"), "stream-auth-type=jwt").is_err());
        assert!(marked(Some("anonymous"), "stream-auth-type=service").is_err());
    }
}
