//! The fast path's request-head reader (`proxy::fast::wire::parse`, exposed
//! under `cfg(fuzzing)` as `proxy::fuzz_head`), against httparse and `http`.
//!
//! Input: the bytes a client sent. Invariants:
//! - `Partial` only when httparse says the head is incomplete;
//! - a head the fast path takes is one httparse parses completely, to the
//!   same length, as HTTP/1.1, with a method other than CONNECT;
//! - its path and query are what `http`'s URI parser reads from the target
//!   (pingora's path), and the target is visible ASCII without a fragment;
//! - its fields are httparse's, in order, names as sent; exactly one `Host`;
//!   none of `Transfer-Encoding`, `Upgrade`, `Expect`, `TE`, `Trailer`,
//!   `HTTP2-Settings`; no control character but tab in a value; at most one
//!   `Content-Length`, plain digits, at most 64 KiB, equal to `body_len`
//!   (0 without one); `close` exactly when a `Connection` token is `close`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stream_gateway::proxy::{fuzz_head, FuzzHead};

const MAX_BODY: usize = 64 * 1024;

/// The values of the fields called `n` (any case).
fn named<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], n: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    fields
        .iter()
        .filter(move |(name, _)| name.eq_ignore_ascii_case(n.as_bytes()))
        .map(|(_, v)| v.as_slice())
}

fuzz_target!(|data: &[u8]| {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut slots);
    let parsed = req.parse(data);
    match fuzz_head(data) {
        FuzzHead::Partial => {
            assert!(
                matches!(parsed, Ok(httparse::Status::Partial)),
                "{parsed:?}"
            );
        }
        FuzzHead::Leave => {}
        FuzzHead::Take {
            method,
            path,
            query,
            fields,
            len,
            body_len,
            close,
        } => {
            assert_eq!(parsed, Ok(httparse::Status::Complete(len)));
            assert_eq!(req.version, Some(1));
            assert_eq!(req.method, Some(method.as_str()));
            assert_ne!(method, "CONNECT");
            let target = req.path.expect("a complete request has a target");
            assert!(
                target
                    .bytes()
                    .all(|b| (0x21..0x7f).contains(&b) && b != b'#'),
                "{target:?}"
            );
            let uri = http::uri::PathAndQuery::try_from(target)
                .unwrap_or_else(|e| panic!("taken {target:?}, http refuses it: {e}"));
            assert_eq!(path, uri.path(), "{target:?}");
            assert_eq!(query.as_deref(), uri.query(), "{target:?}");
            let seen: Vec<(&[u8], &[u8])> = req
                .headers
                .iter()
                .map(|h| (h.name.as_bytes(), h.value))
                .collect();
            let kept: Vec<(&[u8], &[u8])> = fields
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_slice()))
                .collect();
            assert_eq!(kept, seen);
            assert_eq!(named(&fields, "host").count(), 1);
            for refused in [
                "transfer-encoding",
                "upgrade",
                "expect",
                "te",
                "trailer",
                "http2-settings",
            ] {
                assert_eq!(named(&fields, refused).count(), 0, "{refused}");
            }
            for (_, v) in &fields {
                assert!(
                    v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
                    "{v:?}"
                );
            }
            let lengths: Vec<&[u8]> = named(&fields, "content-length").collect();
            match lengths.as_slice() {
                [] => assert_eq!(body_len, 0),
                [one] => {
                    let digits = one.trim_ascii();
                    assert!(!digits.is_empty() && digits.iter().all(u8::is_ascii_digit));
                    let n: usize = std::str::from_utf8(digits).unwrap().parse().unwrap();
                    assert!(n <= MAX_BODY);
                    assert_eq!(body_len, n);
                }
                more => panic!("{} Content-Length fields taken", more.len()),
            }
            let asked_close = named(&fields, "connection").any(|v| {
                v.split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            });
            assert_eq!(close, asked_close);
        }
    }
});
