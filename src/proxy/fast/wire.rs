//! The HTTP/1.1 wire of the fast path: which client requests it takes
//! (everything unusual is left to pingora) and the upstream request head;
//! the response side is in `response.rs`, where a chunked body ends in
//! `chunked.rs`.

use http::{HeaderName, Method};
use smallvec::SmallVec;

pub(super) use super::super::upstream_headers::Added;
use super::super::upstream_headers::STRIPPED_HEADERS;
pub(super) use super::chunked::Chunked;
use crate::config::ClientLimits;
use crate::exchange::ForwardAuth;
use crate::headers::{FieldSpan, RawHeaders};

mod response;
pub(super) use response::{end_head, headers, response, Framing, ParsedResponse, Response};

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
/// one `Host`. The target and the fields are kept as ranges of the read
/// buffer ([`Head::target`], [`Head::headers`] with the request's bytes).
#[derive(Debug)]
pub(super) struct Head {
    pub method: Method,
    /// The request target's range, and where its `?` is, if anywhere.
    target: (u32, u32),
    query_at: Option<u32>,
    fields: SmallVec<[FieldSpan; 16]>,
    /// The client asked to close after this request.
    pub close: bool,
    /// Length of the head in the read buffer.
    pub len: usize,
    /// `Content-Length` (0 without one).
    pub body_len: usize,
    /// The request has a `Content-Length` field.
    pub has_length: bool,
}

impl Head {
    /// The request target (path and query), from the bytes it was parsed
    /// from (checked to be visible ASCII by [`parse`]).
    #[cfg(test)]
    pub fn target<'b>(&self, bytes: &'b [u8]) -> &'b str {
        text(bytes, self.target.0, self.target.1)
    }

    pub fn path<'b>(&self, bytes: &'b [u8]) -> &'b str {
        text(bytes, self.target.0, self.query_at.unwrap_or(self.target.1))
    }

    pub fn query<'b>(&self, bytes: &'b [u8]) -> Option<&'b str> {
        self.query_at.map(|at| text(bytes, at + 1, self.target.1))
    }

    pub fn headers<'b>(&'b self, bytes: &'b [u8]) -> RawHeaders<'b> {
        RawHeaders::new(bytes, &self.fields)
    }
}

fn text(bytes: &[u8], start: u32, end: u32) -> &str {
    bytes
        .get(start as usize..end as usize)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or_default()
}

// `Take` holds the head's field ranges inline (no allocation per request);
// the value is moved once, from `parse` to the connection loop.
#[allow(clippy::large_enum_variant)]
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
    match take(&req, buf, limits) {
        Some(t) => Parsed::Take(Head {
            method: t.method,
            target: t.target,
            query_at: t.query_at,
            fields: t.fields,
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
    target: (u32, u32),
    query_at: Option<u32>,
    fields: SmallVec<[FieldSpan; 16]>,
    close: bool,
    body_len: Option<usize>,
}

/// Where `part` (a slice of `buf`) starts and ends in `buf`.
fn span_of(buf: &[u8], part: &[u8]) -> Option<(u32, u32)> {
    let start = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    if end > buf.len() {
        return None;
    }
    Some((u32::try_from(start).ok()?, u32::try_from(end).ok()?))
}

/// Bytes the fast path takes raw in a request target: visible ASCII, no
/// fragment (`#`), and none of the bytes `http`'s URI parser refuses raw
/// (`<`, `>`, `` ` `` in the path; `"`, `<`, `>` in the query), so pingora's
/// path would have read the same target. Anything else is left to pingora.
const TARGET_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b: u8 = 0x21;
    while b < 0x7f {
        let path_ok = !matches!(b, b'#' | b'<' | b'>' | b'`');
        let query_ok = !matches!(b, b'#' | b'"' | b'<' | b'>');
        table[b as usize] = (path_ok as u8) | ((query_ok as u8) << 1);
        b += 1;
    }
    table
};

/// Where the query starts (`?`), when the target is one the fast path
/// takes ([`TARGET_BYTES`]); `None` leaves the request to pingora.
fn target_ok(target: &[u8]) -> Option<Option<usize>> {
    let query_at = target.iter().position(|&b| b == b'?');
    let (path, query) = target.split_at(query_at.unwrap_or(target.len()));
    // Folds without early exit: the loops stay branch-free (vectorised).
    let path_ok = path
        .iter()
        .fold(1, |ok, &b| ok & TARGET_BYTES[usize::from(b)]);
    let query_ok = query
        .iter()
        .skip(1)
        .fold(2, |ok, &b| ok & TARGET_BYTES[usize::from(b)]);
    (path_ok == 1 && query_ok == 2).then_some(query_at)
}

/// A field value `http`'s header map takes: no control character but tab.
fn value_ok(value: &[u8]) -> bool {
    value.iter().fold(true, |ok, &b| {
        ok & ((b >= 0x20 || b == b'\t') & (b != 0x7f))
    })
}

/// The fast path's eligibility rules; `None` leaves the request to pingora.
fn take(req: &httparse::Request<'_, '_>, buf: &[u8], limits: &ClientLimits) -> Option<Taken> {
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
    let query_at = target_ok(path.as_bytes())?;
    let target = span_of(buf, path.as_bytes())?;
    let query_at = match query_at {
        Some(at) => Some(target.0.checked_add(u32::try_from(at).ok()?)?),
        None => None,
    };
    let (mut hosts, mut close) = (0, false);
    let mut body_len: Option<usize> = None;
    let mut fields = SmallVec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        // Chunked bodies, upgrades, 100-continue and hop-by-hop oddities.
        if [
            "transfer-encoding",
            "upgrade",
            "expect",
            "te",
            "trailer",
            "http2-settings",
        ]
        .iter()
        .any(|n| is(n))
        {
            return None;
        }
        if is("content-length") {
            // One Content-Length, plain digits, at most MAX_BODY.
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
        } else if is("host") {
            hosts += 1;
        } else if is("connection") {
            for token in h.value.split(|b| *b == b',') {
                match token.trim_ascii() {
                    t if t.eq_ignore_ascii_case(b"close") => close = true,
                    t if t.eq_ignore_ascii_case(b"keep-alive") || t.is_empty() => {}
                    _ => return None,
                }
            }
        }
        // The same rules as the header map pingora's path builds: a name
        // `http` takes, a value with no control character.
        HeaderName::from_bytes(name).ok()?;
        if !value_ok(h.value) {
            return None;
        }
        let (ns, ne) = span_of(buf, name)?;
        let (vs, ve) = span_of(buf, h.value)?;
        fields.push([ns, ne, vs, ve]);
    }
    (hosts == 1).then_some(Taken {
        method,
        target,
        query_at,
        fields,
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
    headers: &RawHeaders<'_>,
    auth: &ForwardAuth,
    added: &Added<'_>,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers.iter() {
        // Names in lowercase, as pingora's path (an `http` header map)
        // writes them; written first, then taken back if not copied.
        let mark = out.len();
        out.extend_from_slice(name);
        out[mark..].make_ascii_lowercase();
        let lower = &out[mark..];
        let is = |n: &&str| n.as_bytes() == lower;
        if STRIPPED_HEADERS.iter().any(is)
            || NOT_COPIED.iter().any(is)
            || (lower == b"content-length" && added.content_length.is_some())
        {
            out.truncate(mark);
            continue;
        }
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
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
        header(
            out,
            b"content-length",
            itoa::Buffer::new().format(len).as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
