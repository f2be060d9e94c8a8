//! The session cookie (opt-in per tenant, `cookie = "..."`): reading it
//! ([`from_cookie`]) and the CSRF check a cookie session must pass
//! ([`check_cookie_origin`]).

use crate::headers::{visible_ascii, RequestHeaders};
use crate::refusal::Refusal;

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
    use http::HeaderMap;
    use http::HeaderValue;

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
