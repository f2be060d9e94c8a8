//! Read access to a request's header fields by name, for the checks both
//! paths run (credentials, CORS, the request id): pingora's path holds an
//! `http::HeaderMap`, the fast path the fields where httparse found them in
//! the read buffer ([`RawHeaders`]: no copy, no allocation per field).

use http::HeaderMap;

/// A request's header fields.
pub trait RequestHeaders {
    /// Every value of the field `name` (given in lowercase; fields match
    /// in any case), in the order they came.
    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's;

    /// The first value of `name`.
    fn first<'s>(&'s self, name: &'s str) -> Option<&'s [u8]> {
        self.all(name).next()
    }

    fn contains(&self, name: &str) -> bool {
        self.first(name).is_some()
    }
}

impl RequestHeaders for HeaderMap {
    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.get_all(name).iter().map(http::HeaderValue::as_bytes)
    }
}

/// Where one field's name and value lie in the request's bytes:
/// `[name start, name end, value start, value end]`.
pub type FieldSpan = [u32; 4];

/// Header fields as byte ranges of the request head they were parsed from.
#[derive(Debug, Clone, Copy)]
pub struct RawHeaders<'a> {
    bytes: &'a [u8],
    fields: &'a [FieldSpan],
}

impl<'a> RawHeaders<'a> {
    /// `fields` must lie within `bytes` (a field that does not reads as
    /// empty).
    pub fn new(bytes: &'a [u8], fields: &'a [FieldSpan]) -> Self {
        RawHeaders { bytes, fields }
    }

    /// (name, value) of every field, in order, names as sent.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let bytes = self.bytes;
        self.fields.iter().map(move |&[ns, ne, vs, ve]| {
            let part =
                |start: u32, end: u32| bytes.get(start as usize..end as usize).unwrap_or_default();
            (part(ns, ne), part(vs, ve))
        })
    }
}

impl RequestHeaders for RawHeaders<'_> {
    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
}

/// The value as text when it is visible ASCII (and tabs), as
/// `HeaderValue::to_str` accepts; `None` otherwise.
pub fn visible_ascii(value: &[u8]) -> Option<&str> {
    // A fold without early exit: branch-free, so it is vectorised.
    let visible = value.iter().fold(true, |ok, &b| {
        ok & ((b == b'\t') | (0x20..0x7f).contains(&b))
    });
    if visible {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_fields_read_like_a_header_map() {
        let head = b"Host: x\r\nAUTHORIZATION: a\r\nauthorization: b\r\nX-Empty: \r\n";
        // Offsets of each part, found in the text.
        let span = |needle: &str, from: usize| {
            let at = from + String::from_utf8_lossy(&head[from..]).find(needle).unwrap();
            [at as u32, (at + needle.len()) as u32]
        };
        let field = |name: &str, value: &str, from: usize| {
            let [ns, ne] = span(name, from);
            let [vs, ve] = if value.is_empty() {
                [ne + 2, ne + 2]
            } else {
                span(value, ne as usize)
            };
            [ns, ne, vs, ve]
        };
        let fields = [
            field("Host", "x", 0),
            field("AUTHORIZATION", "a", 9),
            field("authorization", "b", 27),
            field("X-Empty", "", 45),
        ];
        let raw = RawHeaders::new(head, &fields);
        let mut map = HeaderMap::new();
        map.append("host", "x".parse().unwrap());
        map.append("authorization", "a".parse().unwrap());
        map.append("authorization", "b".parse().unwrap());
        map.append("x-empty", "".parse().unwrap());
        for name in ["host", "authorization", "x-empty", "cookie"] {
            let from_raw: Vec<&[u8]> = raw.all(name).collect();
            let from_map: Vec<&[u8]> = map.all(name).collect();
            assert_eq!(from_raw, from_map, "{name}");
        }
        assert!(raw.contains("x-empty") && !raw.contains("cookie"));
        assert_eq!(raw.first("authorization"), Some(&b"a"[..]));
        // Out-of-range spans read as empty instead of panicking.
        let broken = [[0, 4, 100, 200]];
        let raw = RawHeaders::new(head, &broken);
        assert_eq!(raw.first("host"), Some(&b""[..]));
    }

    #[test]
    fn visible_ascii_is_what_header_value_to_str_accepts() {
        for b in 0..=255u8 {
            let value = [b'a', b, b'z'];
            let header = http::HeaderValue::from_bytes(&value);
            let expected = header.as_ref().ok().and_then(|h| h.to_str().ok());
            assert_eq!(visible_ascii(&value), expected, "byte {b:#x}");
        }
    }
}
