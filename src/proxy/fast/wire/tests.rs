use super::*;
use crate::config::ClientLimits;
use crate::headers::RequestHeaders;
use http::HeaderValue;

fn parse_str(raw: &str) -> Parsed {
    parse(raw.as_bytes(), &ClientLimits::default())
}

fn taken(raw: &str) -> Head {
    match parse_str(raw) {
        Parsed::Take(h) => h,
        other => panic!("not taken: {other:?} for {raw:?}"),
    }
}

fn left(raw: &str) -> bool {
    matches!(parse_str(raw), Parsed::Leave)
}

#[test]
fn a_plain_get_is_taken_with_its_length_and_headers() {
    let raw = "GET /channels?api_key=k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\nNEXT";
    let h = taken(raw);
    assert_eq!(h.method, Method::GET);
    let bytes = raw.as_bytes();
    assert_eq!(h.path(bytes), "/channels");
    assert_eq!(h.query(bytes), Some("api_key=k"));
    assert_eq!(h.target(bytes), "/channels?api_key=k");
    assert_eq!(
        h.headers(bytes).first("authorization"),
        Some(&b"Bearer t"[..])
    );
    assert_eq!(h.len, raw.len() - "NEXT".len());
    assert!(!h.close);
    assert_eq!((h.body_len, h.has_length), (0, false));
    let h = taken("DELETE /x HTTP/1.1\r\nhost: x\r\nconnection: Keep-Alive, close\r\ncontent-length: 0\r\n\r\n");
    assert!(h.close);
    assert_eq!((h.body_len, h.has_length), (0, true));
    let h = taken("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n{}");
    assert_eq!((h.body_len, h.has_length), (65536, true));
}

#[test]
fn an_incomplete_head_is_partial() {
    assert!(matches!(
        parse_str("GET /x HTTP/1.1\r\nHost: x\r\n"),
        Parsed::Partial
    ));
}

#[test]
fn everything_unusual_is_left_to_pingora() {
    for raw in [
        // HTTP/1.0, absolute form, asterisk, CONNECT
        "GET /x HTTP/1.0\r\nHost: x\r\n\r\n",
        "GET http://evil/x HTTP/1.1\r\nHost: x\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
        // bodies and framing
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n{}",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n{}",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\n{}",
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: +0\r\n\r\n",
        // no Host, two Hosts
        "GET /x HTTP/1.1\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        // upgrades, expectations, hop-by-hop tricks
        "GET /connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: x\r\nConnection: close, x-api-key\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n",
        // obs-fold and malformed heads
        "GET /x HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost x\r\n\r\n",
        "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        // the HTTP/2 preface
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        assert!(left(raw), "taken: {raw:?}");
    }
}

#[test]
fn heads_over_the_limits_are_left_to_pingora_refusals() {
    let limits = ClientLimits {
        max_uri_bytes: 16,
        max_header_bytes: 64,
        max_headers: 3,
        ..ClientLimits::default()
    };
    let p = |raw: &str| matches!(parse(raw.as_bytes(), &limits), Parsed::Leave);
    assert!(p("GET /0123456789abcdef HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(p(
        "GET / HTTP/1.1\r\nHost: x\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n"
    ));
    assert!(p(&format!(
        "GET / HTTP/1.1\r\nHost: x\r\na: {}\r\n\r\n",
        "v".repeat(64)
    )));
    assert!(matches!(
        parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &limits),
        Parsed::Take(_)
    ));
}

fn auth_user() -> ForwardAuth {
    ForwardAuth::Anonymous
}

#[test]
fn the_upstream_head_drops_credentials_and_hop_by_hop_fields_and_adds_ours() {
    let raw =
        "GET /channels?api_key=k HTTP/1.1\r\nHost: client\r\nAuthorization: s\r\nCookie: c=1\r\n\
         X-Forwarded-For: 6.6.6.6\r\nX-HTTP-Method-Override: DELETE\r\nConnection: keep-alive\r\n\
         X-Request-Id: theirs\r\nAccept-Encoding: gzip\r\nX-Stream-Client: js\r\n\r\n";
    let h = taken(raw);
    let mut out = Vec::new();
    let host = HeaderValue::from_static("chat.example");
    let proto = HeaderValue::from_static("http");
    upstream_head(
        &mut out,
        &h.method,
        "/channels?api_key=tenant",
        &h.headers(raw.as_bytes()),
        &auth_user(),
        &Added {
            host: &host,
            client_ip: Some("127.0.0.1".parse().unwrap()),
            proto: &proto,
            request_id: "rid-1",
            content_length: None,
        },
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("GET /channels?api_key=tenant HTTP/1.1\r\n"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\n"));
    for gone in [
        "host: client",
        "authorization: s",
        "cookie",
        "6.6.6.6",
        "method-override",
        "connection",
        "theirs",
    ] {
        assert!(
            !text.to_ascii_lowercase().contains(gone),
            "{gone} in {text}"
        );
    }
    for kept in [
        "accept-encoding: gzip\r\n",
        "x-stream-client: js\r\n",
        "stream-auth-type: anonymous\r\n",
        "host: chat.example\r\n",
        "x-forwarded-for: 127.0.0.1\r\n",
        "x-forwarded-proto: http\r\n",
        "x-request-id: rid-1\r\n",
    ] {
        assert!(text.contains(kept), "{kept:?} not in {text}");
    }
}

#[test]
fn chunked_bodies_end_where_the_last_chunk_and_trailers_end() {
    let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    let mut c = Chunked::default();
    assert_eq!(c.feed(body), Ok(Some(body.len() - 4)));
    assert_eq!(c.data, 9);
    // The same body a byte at a time.
    let mut c = Chunked::default();
    let mut end = None;
    for (i, b) in body.iter().enumerate() {
        if let Some(n) = c.feed(std::slice::from_ref(b)).unwrap() {
            end = Some(i + n);
            break;
        }
    }
    assert_eq!(end, Some(body.len() - 4));
    assert_eq!(Chunked::default().feed(b"0\r\n\r\n"), Ok(Some(5)));
    assert_eq!(Chunked::default().feed(b"4\r\nWi"), Ok(None));
    for bad in [
        &b"zz\r\n"[..],
        b"\r\n",
        b"4\r\nWikiX",
        b"4\nWiki",
        b"ffffffffffffffff1\r\n",
    ] {
        assert_eq!(Chunked::default().feed(bad), Err(()), "{bad:?}");
    }
}

/// A cheap companion of the `fast_head` fuzz target, run in every test run:
/// 20,000 mutations of request heads (bytes flipped, inserted, deleted;
/// pieces spliced) through `parse`. It must never panic, and whatever it
/// takes must keep the rules:
/// a complete head within the buffer, HTTP/1.1, origin form, one Host, no
/// Transfer-Encoding/Upgrade/Expect, a body of at most MAX_BODY.
#[test]
fn mutated_heads_never_break_the_rules_of_what_is_taken() {
    let seeds: [&[u8]; 4] = [
        b"GET /channels?api_key=k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n",
        b"POST /channels/m/g/message?api_key=k HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        b"GET /connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    ];
    let pieces: [&[u8]; 10] = [
        b"\r\n",
        b"Host: y\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Content-Length: 70000\r\n",
        b"Content-Length: 1\r\n",
        b" ",
        b"\t",
        b"Connection: close, upgrade\r\n",
        b"HTTP/1.0",
        b"\x00",
    ];
    let limits = ClientLimits::default();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut taken = 0;
    for _ in 0..20_000 {
        let mut buf = seeds[next(seeds.len())].to_vec();
        for _ in 0..1 + next(4) {
            let at = next(buf.len() + 1);
            match next(4) {
                0 if at < buf.len() => buf[at] = next(256) as u8,
                1 if at < buf.len() => {
                    buf.remove(at);
                }
                2 => buf.insert(at, next(256) as u8),
                _ => {
                    let p = pieces[next(pieces.len())];
                    buf.splice(at..at, p.iter().copied());
                }
            }
        }
        if let Parsed::Take(h) = parse(&buf, &limits) {
            taken += 1;
            let text = String::from_utf8_lossy(&buf[..h.len]).to_ascii_lowercase();
            // (httparse, like pingora's parser, also ends lines at a bare LF.)
            assert!(
                h.len <= buf.len() && (text.ends_with("\n\r\n") || text.ends_with("\n\n")),
                "{text:?}"
            );
            let request_line = text
                .trim_start_matches(['\r', '\n'])
                .split('\n')
                .next()
                .unwrap_or_default()
                .trim_end_matches('\r');
            assert!(request_line.ends_with(" http/1.1"), "{text:?}");
            assert!(h.target(&buf).starts_with('/'), "{text:?}");
            assert!(h.body_len <= MAX_BODY);
            let headers = h.headers(&buf);
            assert_eq!(headers.all("host").count(), 1, "{text:?}");
            for name in ["transfer-encoding", "upgrade", "expect", "te"] {
                assert!(!headers.contains(name), "{name} in {text:?}");
            }
            assert!(headers.all("content-length").count() <= 1);
            // Every field the head keeps is one httparse found, as sent.
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut slots);
            assert!(req.parse(&buf).is_ok_and(|s| s.is_complete()));
            let parsed: Vec<(&[u8], &[u8])> = req
                .headers
                .iter()
                .map(|f| (f.name.as_bytes(), f.value))
                .collect();
            assert_eq!(headers.iter().collect::<Vec<_>>(), parsed, "{text:?}");
        }
    }
    assert!(
        taken > 1_000,
        "the mutations left too few valid heads: {taken}"
    );
}

/// The fast path takes a target only when `http`'s URI parser (pingora's
/// path) reads the same path and query from it; every other byte leaves the
/// request to pingora.
#[test]
fn targets_taken_are_read_as_the_uri_parser_reads_them() {
    let mut taken_count = 0;
    for b in 0..=255u8 {
        for target in [
            [&b"/a"[..], &[b], b"b"].concat(),
            [&b"/a?x="[..], &[b], b"y"].concat(),
        ] {
            let mut raw = b"GET ".to_vec();
            raw.extend_from_slice(&target);
            raw.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
            let Parsed::Take(h) = parse(&raw, &ClientLimits::default()) else {
                continue;
            };
            taken_count += 1;
            let uri = http::uri::PathAndQuery::try_from(&target[..])
                .unwrap_or_else(|e| panic!("taken {target:?} but http refuses it: {e}"));
            assert_eq!(h.path(&raw), uri.path(), "{target:?}");
            assert_eq!(h.query(&raw), uri.query(), "{target:?}");
        }
    }
    // Visible ASCII less the few bytes refused raw, in both positions.
    assert!(taken_count > 170, "{taken_count}");
    for refused in [
        "/a<b",
        "/a`b",
        "/a?x=\"y\"",
        "/a?x=<",
        "/a#frag",
        "/caf\u{e9}",
    ] {
        assert!(
            left(&format!("GET {refused} HTTP/1.1\r\nHost: x\r\n\r\n")),
            "{refused}"
        );
    }
}
