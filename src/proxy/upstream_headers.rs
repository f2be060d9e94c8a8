//! The header rewrite of a forwarded request: client credentials and
//! forwarding headers out, the exchange's Stream token and our own
//! forwarding headers in.

use http::{HeaderName, HeaderValue, Uri};
use pingora::http::RequestHeader;

use super::respond::ip_header;
use crate::exchange::ForwardAuth;

const STREAM_AUTH_TYPE: HeaderName = HeaderName::from_static("stream-auth-type");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Client headers never forwarded: credentials (replaced by the exchange),
/// forwarding headers (set by us from the socket, never trusted from the
/// client) and method overrides (the policy classified the real method).
pub(super) const STRIPPED_HEADERS: [&str; 13] = [
    "authorization",
    "stream-auth-type",
    "cookie",
    "proxy-authorization",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// What the gateway adds to every forwarded request.
pub(super) struct Added<'a> {
    pub host: &'a HeaderValue,
    pub client_ip: Option<std::net::IpAddr>,
    pub proto: &'a HeaderValue,
    pub request_id: &'a str,
    /// The length of a body the gateway replaced (stripped fields).
    pub content_length: Option<usize>,
}

/// Rewrites `upstream` for forwarding to `uri`.
pub(super) fn rewrite(
    upstream: &mut RequestHeader,
    uri: Uri,
    auth: &ForwardAuth,
    added: Added<'_>,
) {
    // The rewrite works on the plain `http` parts: pingora's insert and
    // remove also keep a second, case-preserving name map, which cost
    // ~8k instructions per request (callgrind, benches/README.md).
    // Header names go upstream in lower case (HTTP names are
    // case-insensitive).
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(upstream, placeholder).into();
    parts.uri = uri;
    let headers = &mut parts.headers;
    // One pass over the (few) headers present, then remove only what is
    // there: thirteen blind removals cost more than the rest of the
    // header rewrite (measured with callgrind, benches/README.md).
    let mut present = [false; STRIPPED_HEADERS.len()];
    for name in headers.keys() {
        if let Some(i) = STRIPPED_HEADERS.iter().position(|h| name.as_str() == *h) {
            present[i] = true;
        }
    }
    for (h, _) in STRIPPED_HEADERS.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(*h);
    }
    headers.reserve(7);
    match auth {
        ForwardAuth::User { token, .. } | ForwardAuth::Service { token, .. } => {
            headers.insert(http::header::AUTHORIZATION, token.header.clone());
            headers.insert(STREAM_AUTH_TYPE, HeaderValue::from_static("jwt"));
        }
        ForwardAuth::Anonymous => {
            headers.insert(STREAM_AUTH_TYPE, HeaderValue::from_static("anonymous"));
        }
    }
    headers.insert(http::header::HOST, added.host.clone());
    if let Some(ip) = added.client_ip {
        headers.insert(X_FORWARDED_FOR, ip_header(ip));
    }
    headers.insert(X_FORWARDED_PROTO, added.proto.clone());
    if let Ok(id) = HeaderValue::from_str(added.request_id) {
        headers.insert(X_REQUEST_ID, id);
    }
    if let Some(len) = added.content_length {
        headers.remove(http::header::TRANSFER_ENCODING);
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    *upstream = RequestHeader::from(parts);
}
