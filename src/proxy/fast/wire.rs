//! The HTTP/1.1 wire of the fast path: which client requests it takes
//! (everything unusual is left to pingora), the upstream request head, the
//! response head the client gets, and where a chunked body ends.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

pub(super) use super::super::upstream_headers::Added;
use super::super::upstream_headers::STRIPPED_HEADERS;
pub(super) use super::chunked::Chunked;
use crate::config::ClientLimits;
use crate::exchange::ForwardAuth;

/// Header slots for parsing; a head with more fields goes to pingora (whose
/// own checks answer `max_headers`).
pub(super) const MAX_HEADERS: usize = 128;
/// Largest response head read from the upstream.
pub(super) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Largest request body the fast path takes (read whole before the request
/// is forwarded); a larger one goes to pingora, which streams it.
pub const MAX_BODY: usize = 64 * 1024;

/// A client request the fast path takes: HTTP/1.1, origin-form target, a
/// body of at most [`MAX_BODY`] bytes framed by `Content-Length`, no upgrade,
/// no CORS, one `Host`.
#[derive(Debug)]
pub(super) struct Head {
    pub method: Method,
    pub target: http::uri::PathAndQuery,
    pub headers: HeaderMap,
    /// The client asked to close after this request.
    pub close: bool,
    /// Length of the head in the read buffer.
    pub len: usize,
    /// `Content-Length` (0 without one).
    pub body_len: usize,
    /// The request has a `Content-Length` field.
    pub has_length: bool,
}

#[derive(Debug)]
pub(super) enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// A request the fast path serves.
    Take(Head),
    /// Anything else: pingora's proxy loop (and its checks) takes the
    /// connection from this request on.
    Leave,
}

/// Reads a request head from the front of `buf`.
pub(super) fn parse(buf: &[u8], limits: &ClientLimits) -> Parsed {
    // Uninitialised slots: filling 128 empty headers first cost more than
    // parsing a short head (callgrind).
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Leave,
    };
    match take(&req, limits) {
        Some(t) => Parsed::Take(Head {
            method: t.method,
            target: t.target,
            headers: t.headers,
            close: t.close,
            len,
            body_len: t.body_len.unwrap_or(0),
            has_length: t.body_len.is_some(),
        }),
        None => Parsed::Leave,
    }
}

struct Taken {
    method: Method,
    target: http::uri::PathAndQuery,
    headers: HeaderMap,
    close: bool,
    body_len: Option<usize>,
}

/// The fast path's eligibility rules; `None` leaves the request to pingora.
fn take(req: &httparse::Request<'_, '_>, limits: &ClientLimits) -> Option<Taken> {
    if req.version != Some(1) {
        return None;
    }
    let path = req.path?;
    // The gateway's own 414/431 answers are pingora's path's (head_check.rs).
    if !path.starts_with('/') || path.len() > limits.max_uri_bytes {
        return None;
    }
    if req.headers.len() > limits.max_headers {
        return None;
    }
    let bytes: usize = req
        .headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + 4)
        .sum();
    if bytes > limits.max_header_bytes {
        return None;
    }
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    if method == Method::CONNECT {
        return None;
    }
    let target = http::uri::PathAndQuery::try_from(path).ok()?;
    let (mut hosts, mut close) = (0, false);
    let mut body_len: Option<usize> = None;
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        match name.as_str() {
            // Chunked bodies, upgrades, 100-continue and hop-by-hop oddities.
            "transfer-encoding" | "upgrade" | "expect" | "te" | "trailer" | "http2-settings" => {
                return None
            }
            // One Content-Length, plain digits, at most MAX_BODY.
            "content-length" => {
                let v = h.value.trim_ascii();
                if body_len.is_some()
                    || v.is_empty()
                    || v.len() > 6
                    || !v.iter().all(u8::is_ascii_digit)
                {
                    return None;
                }
                let n: usize = std::str::from_utf8(v).ok()?.parse().ok()?;
                if n > MAX_BODY {
                    return None;
                }
                body_len = Some(n);
            }
            "host" => hosts += 1,
            "connection" => {
                for token in h.value.split(|b| *b == b',') {
                    match token.trim_ascii() {
                        t if t.eq_ignore_ascii_case(b"close") => close = true,
                        t if t.eq_ignore_ascii_case(b"keep-alive") || t.is_empty() => {}
                        _ => return None,
                    }
                }
            }
            _ => {}
        }
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    (hosts == 1).then_some(Taken {
        method,
        target,
        headers,
        close,
        body_len,
    })
}

/// Request headers never copied upstream besides the stripped credentials:
/// hop-by-hop fields and those the gateway sets itself.
const NOT_COPIED: [&str; 5] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "x-request-id",
];

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The upstream request head: the same rewrite as pingora's path
/// (`upstream_headers::rewrite`): client credentials, forwarding headers and
/// method overrides out; the minted token, `Host`, `X-Forwarded-*` and the
/// request id in.
pub(super) fn upstream_head(
    out: &mut Vec<u8>,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    auth: &ForwardAuth,
    added: &Added<'_>,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        let n = name.as_str();
        if STRIPPED_HEADERS.contains(&n)
            || NOT_COPIED.contains(&n)
            || (n == "content-length" && added.content_length.is_some())
        {
            continue;
        }
        header(out, n.as_bytes(), value.as_bytes());
    }
    match auth {
        ForwardAuth::User { token, .. } | ForwardAuth::Service { token, .. } => {
            header(out, b"authorization", token.header.as_bytes());
            header(out, b"stream-auth-type", b"jwt");
        }
        ForwardAuth::Anonymous => header(out, b"stream-auth-type", b"anonymous"),
    }
    header(out, b"host", added.host.as_bytes());
    if let Some(ip) = added.client_ip {
        header(
            out,
            b"x-forwarded-for",
            crate::ip_text::IpText::new(ip).as_bytes(),
        );
    }
    header(out, b"x-forwarded-proto", added.proto.as_bytes());
    header(out, b"x-request-id", added.request_id.as_bytes());
    if let Some(len) = added.content_length {
        header(out, b"content-length", len.to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes: the client's connection closes too.
    UntilClose,
}

/// An upstream response head, rewritten for the client.
#[derive(Debug)]
pub(super) struct Response {
    pub status: u16,
    pub framing: Framing,
    /// The upstream connection may serve another request afterwards.
    pub reusable: bool,
    /// Length of the upstream head in the read buffer.
    pub len: usize,
}

#[derive(Debug)]
pub(super) enum ParsedResponse {
    Partial,
    /// An interim (1xx) head of this length, to skip.
    Interim(usize),
    Final(Response),
    Invalid,
}

/// The end of a response head the gateway writes, as pingora's HTTP/1.1
/// server ends its own: `Date`, `Connection`.
pub(super) fn end_head(out: &mut Vec<u8>, close: bool) {
    header(
        out,
        b"date",
        pingora::protocols::http::date::get_cached_date().as_bytes(),
    );
    let connection: &[u8] = if close { b"close" } else { b"keep-alive" };
    header(out, b"connection", connection);
    out.extend_from_slice(b"\r\n");
}

/// Writes `name: value` lines.
pub(super) fn headers(out: &mut Vec<u8>, list: &[(&'static str, HeaderValue)]) {
    for (name, value) in list {
        header(out, name.as_bytes(), value.as_bytes());
    }
}

/// Reads the upstream's response head from the front of `buf` and writes
/// the client's into `out`: Stream's status and headers, less hop-by-hop
/// fields, plus the gateway's `common` headers (request id, CORS: they
/// replace Stream's of the same name, but `Vary` adds to Stream's), `Date`
/// and `Connection` (as pingora's path does).
pub(super) fn response(
    buf: &[u8],
    head_request: bool,
    common: &[(&'static str, HeaderValue)],
    close: bool,
    out: &mut Vec<u8>,
) -> ParsedResponse {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut resp, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return ParsedResponse::Partial,
        Err(_) => return ParsedResponse::Invalid,
    };
    let Some(status) = resp.code else {
        return ParsedResponse::Invalid;
    };
    if (100..200).contains(&status) {
        // 101 to a request that asked for no upgrade is a broken upstream.
        return if status == 101 {
            ParsedResponse::Invalid
        } else {
            ParsedResponse::Interim(len)
        };
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut reusable = resp.version == Some(1);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            else {
                return ParsedResponse::Invalid;
            };
            if length.is_some_and(|l| l != n) {
                return ParsedResponse::Invalid;
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides (RFC 9112 6.3): chunked, or read to
            // the end of the connection.
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            if !chunked {
                reusable = false;
            }
        } else if h.name.eq_ignore_ascii_case("connection")
            && h.value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            reusable = false;
        }
    }
    let has_te = resp
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let framing = if head_request || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if has_te {
        Framing::UntilClose
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        reusable = false;
    }
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    let reason = resp.reason.filter(|r| !r.is_empty());
    let reason = reason.or_else(|| {
        http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
    });
    out.extend_from_slice(reason.unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let dropped = ["connection", "keep-alive", "proxy-connection", "date"]
            .iter()
            .any(|n| h.name.eq_ignore_ascii_case(n))
            || common
                .iter()
                .any(|(n, _)| *n != "vary" && h.name.eq_ignore_ascii_case(n));
        // With both (RFC 9112 6.3), Transfer-Encoding frames the body.
        if dropped || (has_te && h.name.eq_ignore_ascii_case("content-length")) {
            continue;
        }
        header(out, h.name.as_bytes(), h.value);
    }
    headers(out, common);
    end_head(out, close || framing == Framing::UntilClose);
    ParsedResponse::Final(Response {
        status,
        framing,
        reusable,
        len,
    })
}

#[cfg(test)]
mod tests;
