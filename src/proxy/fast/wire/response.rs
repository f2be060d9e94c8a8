//! The response side of the fast path's wire: the upstream's response head,
//! how its body is framed, and the head the client gets.

use http::HeaderValue;

use super::{header, MAX_HEADERS};

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::proxy::fast) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes: the client's connection closes too.
    UntilClose,
}

/// An upstream response head, rewritten for the client.
#[derive(Debug)]
pub(in crate::proxy::fast) struct Response {
    pub status: u16,
    pub framing: Framing,
    /// The upstream connection may serve another request afterwards.
    pub reusable: bool,
    /// Length of the upstream head in the read buffer.
    pub len: usize,
}

#[derive(Debug)]
pub(in crate::proxy::fast) enum ParsedResponse {
    Partial,
    /// An interim (1xx) head of this length, to skip.
    Interim(usize),
    Final(Response),
    Invalid,
}

/// The end of a response head the gateway writes, as pingora's HTTP/1.1
/// server ends its own: `Date`, `Connection`.
pub(in crate::proxy::fast) fn end_head(out: &mut Vec<u8>, close: bool) {
    header(out, b"date", crate::clock::http_date().as_bytes());
    let connection: &[u8] = if close { b"close" } else { b"keep-alive" };
    header(out, b"connection", connection);
    out.extend_from_slice(b"\r\n");
}

/// Writes `name: value` lines.
pub(in crate::proxy::fast) fn headers(out: &mut Vec<u8>, list: &[(&'static str, HeaderValue)]) {
    for (name, value) in list {
        header(out, name.as_bytes(), value.as_bytes());
    }
}

/// What a response field is to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Connection,
    /// `Keep-Alive`, `Proxy-Connection`, `Date`: not copied (the gateway
    /// writes its own `Date` and `Connection`).
    HopByHop,
    /// One of the gateway's `common` headers (request id, CORS), which
    /// replace Stream's; `Vary` is not one of them (it adds to Stream's).
    Ours,
    Other,
}

impl Field {
    fn of(name: &str, common: &[(&'static str, HeaderValue)]) -> Field {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        let kind = match name.len() {
            4 if is("date") => Field::HopByHop,
            10 if is("connection") => Field::Connection,
            10 if is("keep-alive") => Field::HopByHop,
            14 if is("content-length") => Field::ContentLength,
            16 if is("proxy-connection") => Field::HopByHop,
            17 if is("transfer-encoding") => Field::TransferEncoding,
            _ => Field::Other,
        };
        if kind == Field::Other && common.iter().any(|(n, _)| *n != "vary" && is(n)) {
            return Field::Ours;
        }
        kind
    }
}

/// Reads the upstream's response head from the front of `buf` and writes
/// the client's into `out`: Stream's status and headers, less hop-by-hop
/// fields, plus the gateway's `common` headers (request id, CORS: they
/// replace Stream's of the same name, but `Vary` adds to Stream's), `Date`
/// and `Connection` (as pingora's path does).
pub(in crate::proxy::fast) fn response(
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
    let mut has_te = false;
    let mut reusable = resp.version == Some(1);
    // One look at each name (by length first), kept for the copy below.
    let mut kinds = [Field::Other; MAX_HEADERS];
    for (h, kind) in resp.headers.iter().zip(kinds.iter_mut()) {
        *kind = Field::of(h.name, common);
        match kind {
            Field::ContentLength => {
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
            }
            Field::TransferEncoding => {
                // The last coding decides (RFC 9112 6.3): chunked, or read
                // to the end of the connection.
                has_te = true;
                let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
                chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
                if !chunked {
                    reusable = false;
                }
            }
            Field::Connection => {
                if h.value
                    .split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                {
                    reusable = false;
                }
            }
            Field::HopByHop | Field::Ours | Field::Other => {}
        }
    }
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
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    let reason = resp.reason.filter(|r| !r.is_empty());
    let reason = reason.or_else(|| {
        http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
    });
    out.extend_from_slice(reason.unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (h, kind) in resp.headers.iter().zip(kinds) {
        let dropped = match kind {
            Field::Connection | Field::HopByHop | Field::Ours => true,
            // With both (RFC 9112 6.3), Transfer-Encoding frames the body.
            Field::ContentLength => has_te,
            Field::TransferEncoding | Field::Other => false,
        };
        if !dropped {
            header(out, h.name.as_bytes(), h.value);
        }
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
