//! Checks on the request head before anything else looks at it: the
//! gateway's own size limits (answered in Stream's error shape, unlike the
//! bare 400 pingora's parser gives beyond its much larger limits), and a
//! repeated Content-Length (framing a later hop could read two ways).

use pingora::http::RequestHeader;

use crate::config::ClientLimits;
use crate::refusal::Refusal;

/// Refuses a head over the limits, or with a repeated Content-Length.
pub(super) fn check_head(req: &RequestHeader, limits: &ClientLimits) -> Result<(), Refusal> {
    if req.raw_path().len() > limits.max_uri_bytes {
        return Err(Refusal::UriTooLong);
    }
    let headers = &req.headers;
    if headers.len() > limits.max_headers {
        return Err(Refusal::HeadersTooLarge("too many header fields"));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(Refusal::HeadersTooLarge("header section too large"));
    }
    // Framing: pingora's parser already refuses two different
    // Content-Lengths and any Transfer-Encoding other than chunked, and with
    // both Content-Length and Transfer-Encoding it frames by the latter
    // alone, drops Content-Length and closes the connection after the
    // answer (RFC 9112 6.1 and 6.3; tests/hostile_http.rs). Two
    // Content-Length fields with the same value pass its parser: legal but
    // pointless in a client request, so refuse them rather than guess how a
    // later hop merges them.
    if headers.get_all(http::header::CONTENT_LENGTH).iter().count() > 1 {
        return Err(Refusal::BadRequest("repeated Content-Length"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn limits() -> ClientLimits {
        ClientLimits {
            max_uri_bytes: 64,
            max_header_bytes: 200,
            max_headers: 5,
            ..ClientLimits::default()
        }
    }

    #[test]
    fn within_the_limits_passes() {
        let r = req("/app?api_key=k", &[("host", "x"), ("content-length", "2")]);
        assert_eq!(check_head(&r, &limits()), Ok(()));
    }

    #[test]
    fn a_long_target_is_414() {
        let r = req(&format!("/app?x={}", "a".repeat(60)), &[]);
        assert_eq!(check_head(&r, &limits()), Err(Refusal::UriTooLong));
    }

    #[test]
    fn many_or_large_headers_are_431() {
        let many: Vec<(String, &str)> = (0..6).map(|i| (format!("x-h{i}"), "v")).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let r = req("/", &many);
        assert_eq!(
            check_head(&r, &limits()),
            Err(Refusal::HeadersTooLarge("too many header fields"))
        );
        let big = "a".repeat(200);
        let r = req("/", &[("x-big", &big)]);
        assert_eq!(
            check_head(&r, &limits()),
            Err(Refusal::HeadersTooLarge("header section too large"))
        );
    }

    #[test]
    fn a_repeated_content_length_is_400() {
        let r = req("/", &[("content-length", "4"), ("content-length", "4")]);
        assert_eq!(
            check_head(&r, &limits()),
            Err(Refusal::BadRequest("repeated Content-Length"))
        );
    }
}
