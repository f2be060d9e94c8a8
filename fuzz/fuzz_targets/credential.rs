//! Credential extraction: `Authorization` headers, the websocket query
//! (`authorization`, `stream-auth-type`), the session cookie and its origin
//! check, and the query-string parser they sit on.
//!
//! Input: lines; the first byte of a line says what the rest is:
//! `h` Authorization header, `t` Stream-Auth-Type header, `c` Cookie header,
//! `o` Origin header, `s` Sec-Fetch-Site header, `q` a piece of the query
//! string (pieces are joined with `&`), `m` the method. Header values that
//! `http` refuses are skipped. Invariants:
//! - `query::parse` refuses exactly the queries with `;`, keeps every
//!   non-empty `&`-piece verbatim, and `decode(encode(x)) == x`;
//! - a token is returned only when every candidate (each header value and
//!   each `authorization` parameter, Bearer stripped) is empty or that token;
//!   two different candidates are a conflict, a non-ASCII header a bad request;
//!   anonymous/missing only when there is no candidate at all;
//! - the service-account marker: `Stream-Auth-Type: service` (header or
//!   query, any case) marks the request, and next to any other non-empty
//!   auth type it is refused;
//! - a cookie value is non-empty and the only value of that cookie;
//! - the cookie origin check passes only for the allowed origin, or no
//!   Origin with a same-origin fetch (or none at all on GET/HEAD);
//! - the same fields read in place (`RawHeaders`, as the fast path reads a
//!   request head; names in mixed case) give every function above the same
//!   answer as the `HeaderMap`.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use stream_gateway::credential::{
    check_cookie_origin, extract, from_cookie, service_marked, strip_bearer, Credential,
};
use stream_gateway::headers::{FieldSpan, RawHeaders};
use stream_gateway::query::{decode, encode, is_key, parse, rebuild};
use stream_gateway::refusal::Refusal;

const ALLOWED: &str = "https://app.example.com";

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    // The same fields as a request head's bytes and their ranges.
    let mut head: Vec<u8> = Vec::new();
    let mut spans: Vec<FieldSpan> = Vec::new();
    let mut pieces: Vec<String> = Vec::new();
    let mut method = "GET".to_string();
    for line in data.split(|&b| b == b'\n') {
        let Some((&kind, value)) = line.split_first() else {
            continue;
        };
        let name = match kind {
            b'h' => http::header::AUTHORIZATION,
            b't' => HeaderName::from_static("stream-auth-type"),
            b'c' => http::header::COOKIE,
            b'o' => http::header::ORIGIN,
            b's' => HeaderName::from_static("sec-fetch-site"),
            b'q' => {
                pieces.push(String::from_utf8_lossy(value).into_owned());
                continue;
            }
            b'm' => {
                method = String::from_utf8_lossy(value).into_owned();
                continue;
            }
            _ => continue,
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            let text = if spans.len() % 2 == 0 {
                name.as_str().to_string()
            } else {
                name.as_str().to_ascii_uppercase()
            };
            let at = |n: usize| u32::try_from(n).expect("small input");
            let ns = head.len();
            head.extend_from_slice(text.as_bytes());
            let ne = head.len();
            head.extend_from_slice(b": ");
            let vs = head.len();
            head.extend_from_slice(value);
            let ve = head.len();
            head.extend_from_slice(b"\r\n");
            spans.push([at(ns), at(ne), at(vs), at(ve)]);
            headers.append(name, v);
        }
    }
    let raw_query = pieces.join("&");

    // The query parser.
    let pairs = match parse(&raw_query) {
        Ok(pairs) => {
            assert!(!raw_query.contains(';'));
            pairs
        }
        Err(_) => {
            assert!(raw_query.contains(';'));
            return;
        }
    };
    let kept: Vec<&str> = raw_query.split('&').filter(|p| !p.is_empty()).collect();
    assert_eq!(pairs.len(), kept.len());
    for (pair, raw) in pairs.iter().zip(&kept) {
        assert_eq!(pair.raw, *raw);
        assert_eq!(decode(&encode(&pair.key)), pair.key);
        assert_eq!(decode(&encode(&pair.value)), pair.value);
    }
    assert_eq!(rebuild(&pairs, |_| false, &[]), kept.join("&"));
    let appended = rebuild(
        &pairs,
        |p| is_key(p, "authorization"),
        &[("authorization", "tok en&x=1")],
    );
    let reparsed = parse(&appended).expect("a rebuilt query has no ';'");
    let last = reparsed.last().expect("one pair was appended");
    assert!(
        is_key(last, "authorization") && last.value == "tok en&x=1",
        "{appended:?}"
    );

    // The token.
    let mut non_ascii = false;
    let mut candidates: Vec<String> = Vec::new();
    for v in headers.get_all(http::header::AUTHORIZATION) {
        match v.to_str() {
            Ok(s) => candidates.push(strip_bearer(s).to_string()),
            Err(_) => non_ascii = true,
        }
    }
    for p in pairs.iter().filter(|p| is_key(p, "authorization")) {
        candidates.push(strip_bearer(&p.value).to_string());
    }
    candidates.retain(|c| !c.is_empty());
    let distinct = candidates.iter().any(|c| c != &candidates[0]);
    let result = extract(&headers, &pairs);
    let raw = RawHeaders::new(&head, &spans);
    assert_eq!(extract(&raw, &pairs), result, "raw fields");
    assert_eq!(
        service_marked(&raw, &pairs),
        service_marked(&headers, &pairs),
        "raw fields"
    );
    assert_eq!(
        from_cookie(&raw, "sid"),
        from_cookie(&headers, "sid"),
        "raw fields"
    );
    let allowed_origin = [ALLOWED.to_string()];
    assert_eq!(
        check_cookie_origin(&raw, &method, &allowed_origin),
        check_cookie_origin(&headers, &method, &allowed_origin),
        "raw fields"
    );
    match &result {
        Ok(Credential::Token(t)) => {
            assert!(!non_ascii && !distinct, "{result:?} from {candidates:?}");
            assert_eq!(Some(t), candidates.first());
            assert!(
                !t.is_empty() && !t.starts_with([' ', '\t']) && !t.ends_with([' ', '\t']),
                "{t:?}"
            );
        }
        Ok(Credential::Anonymous) | Ok(Credential::Missing) => {
            assert!(
                !non_ascii && candidates.is_empty(),
                "{result:?} from {candidates:?}"
            );
            let anonymous = headers
                .get_all("stream-auth-type")
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"anonymous"))
                || pairs.iter().any(|p| {
                    is_key(p, "stream-auth-type") && p.value.eq_ignore_ascii_case("anonymous")
                });
            assert_eq!(
                result,
                Ok(if anonymous {
                    Credential::Anonymous
                } else {
                    Credential::Missing
                })
            );
        }
        Err(Refusal::ConflictingCredentials) => {
            assert!(distinct, "conflict without two tokens: {candidates:?}")
        }
        Err(Refusal::BadRequest(_)) => assert!(non_ascii),
        Err(other) => panic!("unexpected refusal {other:?}"),
    }
    // Bearer stripping is stable once the scheme is gone.
    if let Ok(Credential::Token(t)) = &result {
        if !t.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("bearer")) {
            assert_eq!(strip_bearer(t), t);
        }
    }

    // The service-account marker.
    let kinds: Vec<&[u8]> = headers
        .get_all("stream-auth-type")
        .iter()
        .map(|v| v.as_bytes())
        .chain(
            pairs
                .iter()
                .filter(|p| is_key(p, "stream-auth-type"))
                .map(|p| p.value.as_bytes()),
        )
        .collect();
    let service = kinds.iter().any(|k| k.eq_ignore_ascii_case(b"service"));
    let other = kinds
        .iter()
        .any(|k| !k.is_empty() && !k.eq_ignore_ascii_case(b"service"));
    match service_marked(&headers, &pairs) {
        Ok(marked) => assert!(marked == service && !(service && other), "{kinds:?}"),
        Err(Refusal::BadRequest(_)) => assert!(service && other, "{kinds:?}"),
        Err(e) => panic!("unexpected marker refusal {e:?}"),
    }

    // The session cookie.
    match from_cookie(&headers, "sid") {
        Ok(Some(v)) => {
            assert!(!v.is_empty() && !v.contains(';'), "{v:?}");
            let all: Vec<&str> = headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|h| h.to_str().ok())
                .collect();
            assert!(all.iter().any(|h| h.contains(&*v)), "{v:?} not in {all:?}");
        }
        Ok(None) | Err(Refusal::ConflictingCredentials) | Err(Refusal::BadRequest(_)) => {}
        Err(other) => panic!("unexpected cookie refusal {other:?}"),
    }
    let allowed = [ALLOWED.to_string()];
    if check_cookie_origin(&headers, &method, &allowed).is_ok() {
        let origins: Vec<&[u8]> = headers
            .get_all(http::header::ORIGIN)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        match origins.as_slice() {
            [one] => assert_eq!(*one, ALLOWED.as_bytes()),
            [] => {
                let site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
                assert!(
                    matches!(site, Some(b"same-origin") | Some(b"none"))
                        || (site.is_none() && (method == "GET" || method == "HEAD")),
                    "{site:?} {method}"
                );
            }
            more => panic!("accepted with {} origins", more.len()),
        }
    }
});
