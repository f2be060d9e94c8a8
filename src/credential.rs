//! Finds the client's credential: the `Authorization` header (a leading
//! `Bearer`, any case, any spacing, is stripped) and the `authorization`
//! query parameter (websockets; browsers cannot set handshake headers).
//!
//! Two different tokens in one request are refused rather than picking one:
//! whichever the gateway ignored might be the one a later hop reads.

use http::HeaderMap;

use crate::query::{is_key, Pair};
use crate::refusal::Refusal;

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

pub fn extract(headers: &HeaderMap, query: &[Pair<'_>]) -> Result<Credential, Refusal> {
    let mut token: Option<&str> = None;
    for v in headers.get_all(http::header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| Refusal::BadRequest("Authorization header is not ASCII"))?;
        merge(&mut token, v)?;
    }
    for p in query.iter().filter(|p| is_key(p, "authorization")) {
        merge(&mut token, &p.value)?;
    }
    if let Some(t) = token {
        return Ok(Credential::Token(t.to_string()));
    }
    let anonymous = headers
        .get_all("stream-auth-type")
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"anonymous"))
        || query
            .iter()
            .any(|p| is_key(p, "stream-auth-type") && p.value.eq_ignore_ascii_case("anonymous"));
    Ok(if anonymous {
        Credential::Anonymous
    } else {
        Credential::Missing
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse;
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
}
