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

/// The value of cookie `name` from the `Cookie` header(s); `None` when it
/// is absent or empty. The same cookie twice with different values (cookie
/// tossing from a sibling subdomain) is refused rather than picking one.
pub fn from_cookie(headers: &impl RequestHeaders, name: &str) -> Result<Option<String>, Refusal> {
    let mut found: Option<&str> = None;
    for h in headers.all("cookie") {
        let h = visible_ascii(h).ok_or(Refusal::BadRequest("Cookie header is not ASCII"))?;
        for pair in h.split(';') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            if k.trim() != name {
                continue;
            }
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(v);
            match found {
                Some(seen) if seen != v => return Err(Refusal::ConflictingCredentials),
                _ => found = Some(v),
            }
        }
    }
    Ok(found.filter(|v| !v.is_empty()).map(str::to_string))
}

/// CSRF defence for cookie sessions: a browser attaches the cookie to
/// requests any site makes, so the request must show it does not come from
/// another site. `Origin` present: it must be listed in `allowed`, or be the
/// gateway's own origin (its `host[:port]` is the request's `Host`).
/// `Origin` absent (browsers omit it on same-origin GETs): `Sec-Fetch-Site`
/// must say `same-origin` or `none`. A client sending neither (not a
/// browser, or one too old for `Sec-Fetch-Site`) is accepted for what no
/// browser sends to another site without a CORS preflight, and a preflight
/// always carries `Origin`: GET and HEAD (on Stream's client routes they only
/// read), methods other than POST, and a POST whose `Content-Type` is not one
/// an HTML form can send (`application/json`, as Stream's SDKs send).
pub fn check_cookie_origin(
    headers: &impl RequestHeaders,
    method: &str,
    allowed: &[String],
) -> Result<(), Refusal> {
    let mut origins = headers.all("origin");
    match (origins.next(), origins.next()) {
        (Some(o), None) => {
            return if allowed.iter().any(|a| a.as_bytes() == o) || same_origin(o, headers) {
                Ok(())
            } else {
                Err(Refusal::OriginNotAllowed)
            };
        }
        (Some(_), Some(_)) => return Err(Refusal::OriginNotAllowed),
        (None, _) => {}
    }
    match headers.first("sec-fetch-site") {
        Some(b"same-origin") | Some(b"none") => Ok(()),
        Some(_) => Err(Refusal::OriginNotAllowed),
        None if method != "POST" || !form_content_type(headers) => Ok(()),
        None => Err(Refusal::OriginNotAllowed),
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was
/// sent to (its one `Host` header), ASCII case aside.
fn same_origin(origin: &[u8], headers: &impl RequestHeaders) -> bool {
    let authority = match origin.iter().position(|&b| b == b':') {
        Some(i) if origin[i..].starts_with(b"://") => &origin[i + 3..],
        _ => return false,
    };
    let mut hosts = headers.all("host");
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => !host.is_empty() && host.eq_ignore_ascii_case(authority),
        _ => false,
    }
}

/// Whether the request's `Content-Type` is one a cross-site HTML form or a
/// simple (unpreflighted) fetch may send: `application/x-www-form-urlencoded`,
/// `multipart/form-data`, `text/plain`; also when it is missing or repeated.
fn form_content_type(headers: &impl RequestHeaders) -> bool {
    let mut types = headers.all("content-type");
    let value = match (types.next(), types.next()) {
        (Some(v), None) => v,
        _ => return true,
    };
    let media = value.split(|&b| b == b';').next().unwrap_or_default();
    let media = media.trim_ascii();
    [
        &b"application/x-www-form-urlencoded"[..],
        b"multipart/form-data",
        b"text/plain",
    ]
    .iter()
    .any(|simple| media.eq_ignore_ascii_case(simple))
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

    fn cookie_headers(cookies: &[&str], origin: Option<&str>, site: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(http::header::COOKIE, HeaderValue::from_str(c).unwrap());
        }
        if let Some(o) = origin {
            h.insert(http::header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        if let Some(s) = site {
            h.insert("sec-fetch-site", HeaderValue::from_str(s).unwrap());
        }
        h
    }

    #[test]
    fn session_cookie_is_found_by_exact_name() {
        let get = |c: &[&str]| from_cookie(&cookie_headers(c, None, None), "sid");
        assert_eq!(get(&["a=1; sid=abc; b=2"]), Ok(Some("abc".into())));
        assert_eq!(get(&["a=1", "sid=\"abc\""]), Ok(Some("abc".into())));
        assert_eq!(get(&["xsid=abc; sidx=abc"]), Ok(None));
        assert_eq!(get(&["sid="]), Ok(None));
        assert_eq!(get(&["sid=abc; sid=abc"]), Ok(Some("abc".into())));
        assert_eq!(
            get(&["sid=abc; sid=evil"]),
            Err(Refusal::ConflictingCredentials)
        );
    }

    #[test]
    fn cookie_origin_rules() {
        let allowed = vec!["https://app.example.com".to_string()];
        let check = |o: Option<&str>, site: Option<&str>, m: &str| {
            check_cookie_origin(&cookie_headers(&[], o, site), m, &allowed)
        };
        assert_eq!(check(Some("https://app.example.com"), None, "POST"), Ok(()));
        assert_eq!(
            check(Some("https://evil.example"), None, "GET"),
            Err(Refusal::OriginNotAllowed)
        );
        assert_eq!(
            check(Some("null"), None, "GET"),
            Err(Refusal::OriginNotAllowed)
        );
        assert_eq!(check(None, Some("same-origin"), "POST"), Ok(()));
        assert_eq!(
            check(None, Some("cross-site"), "GET"),
            Err(Refusal::OriginNotAllowed)
        );
        assert_eq!(check(None, None, "GET"), Ok(()));
        assert_eq!(check(None, None, "POST"), Err(Refusal::OriginNotAllowed));
    }

    #[test]
    fn cookie_requests_from_the_gateways_own_origin_or_no_browser_pass() {
        let with = |extra: &[(&str, &str)], m: &str, allowed: &[&str]| {
            let mut h = cookie_headers(&["sid=abc"], None, None);
            for (name, value) in extra {
                h.append(
                    http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            let allowed: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            check_cookie_origin(&h, m, &allowed)
        };
        let refused = Err(Refusal::OriginNotAllowed);
        let host = ("host", "gw.example.com:8443");
        // The gateway's own origin, with or without a list.
        let own = ("origin", "https://GW.example.com:8443");
        assert_eq!(with(&[host, own], "POST", &[]), Ok(()));
        assert_eq!(with(&[host, own], "POST", &["https://app.example"]), Ok(()));
        // Another port, another host, no Host, two Hosts, a path: not the same.
        for origin in [
            "https://gw.example.com:9000",
            "https://gw.example.com",
            "https://evil.example",
            "gw.example.com:8443",
            "null",
        ] {
            assert_eq!(
                with(&[host, ("origin", origin)], "GET", &[]),
                refused,
                "{origin}"
            );
        }
        assert_eq!(with(&[own], "GET", &[]), refused);
        assert_eq!(with(&[host, host, own], "GET", &[]), refused);
        // Neither Origin nor Sec-Fetch-Site: what a browser would preflight
        // passes (JSON POST, PUT, DELETE), what a form can send does not.
        let json = ("content-type", "application/json; charset=utf-8");
        assert_eq!(with(&[json], "POST", &[]), Ok(()));
        assert_eq!(with(&[], "DELETE", &[]), Ok(()));
        assert_eq!(with(&[], "PUT", &[]), Ok(()));
        for form in [
            "application/x-www-form-urlencoded",
            "Multipart/Form-Data; boundary=x",
            "text/plain;charset=UTF-8",
        ] {
            assert_eq!(
                with(&[("content-type", form)], "POST", &[]),
                refused,
                "{form}"
            );
        }
        assert_eq!(with(&[], "POST", &[]), refused, "no content type");
        assert_eq!(
            with(&[json, json], "POST", &[]),
            refused,
            "two content types"
        );
        // A browser that says where the request comes from is believed.
        assert_eq!(
            with(&[json, ("sec-fetch-site", "cross-site")], "POST", &[]),
            refused
        );
    }
}
