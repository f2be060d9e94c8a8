use super::*;

fn common() -> Vec<(&'static str, HeaderValue)> {
    vec![
        ("x-request-id", HeaderValue::from_static("rid")),
        (
            "access-control-allow-origin",
            HeaderValue::from_static("https://app"),
        ),
        ("vary", HeaderValue::from_static("Origin")),
    ]
}

fn final_response(raw: &str, head_request: bool, close: bool) -> (Response, String) {
    let mut out = Vec::new();
    match response(raw.as_bytes(), head_request, &common(), close, &mut out) {
        ParsedResponse::Final(r) => (r, String::from_utf8(out).unwrap()),
        other => panic!("{other:?} for {raw:?}"),
    }
}

#[test]
fn responses_are_framed_like_rfc_9112_says() {
    let raw = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-RateLimit-Limit: 10\r\nConnection: keep-alive\r\n\
               X-Request-Id: stream\r\nDate: long ago\r\nVary: Accept-Encoding\r\n\
               Access-Control-Allow-Origin: *\r\n\r\nhello";
    let (r, head) = final_response(raw, false, false);
    assert_eq!(
        (r.status, r.framing, r.reusable),
        (200, Framing::Length(5), true)
    );
    assert_eq!(r.len, raw.len() - "hello".len());
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
    for kept in [
        "X-RateLimit-Limit: 10\r\n",
        "Vary: Accept-Encoding\r\n",
        "x-request-id: rid\r\n",
        "access-control-allow-origin: https://app\r\n",
        "vary: Origin\r\n",
        "\r\ndate: ",
    ] {
        assert!(head.contains(kept), "{kept:?} not in {head}");
    }
    for gone in [
        "stream",
        "long ago",
        "Allow-Origin: *",
        "Connection: keep-alive",
    ] {
        assert!(!head.contains(gone), "{gone:?} in {head}");
    }
    assert!(head.ends_with("connection: keep-alive\r\n\r\n"), "{head}");

    let (r, _) = final_response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
        false,
    );
    assert_eq!(r.framing, Framing::Chunked);
    let (r, head) = final_response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        false,
        false,
    );
    assert_eq!(r.framing, Framing::Chunked);
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    let (r, head) = final_response("HTTP/1.1 200 OK\r\n\r\n", false, false);
    assert_eq!((r.framing, r.reusable), (Framing::UntilClose, false));
    assert!(head.contains("connection: close\r\n"));
    let (r, _) = final_response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        false,
        false,
    );
    assert_eq!(r.framing, Framing::UntilClose);
    let (r, _) = final_response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, false);
    assert_eq!(r.framing, Framing::None);
    let (r, _) = final_response(
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        false,
        false,
    );
    assert_eq!(r.framing, Framing::None);
    let (r, _) = final_response(
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
        false,
        false,
    );
    assert!(!r.reusable);
    let (r, _) = final_response("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, false);
    assert!(!r.reusable);
    let (_, head) = final_response("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", false, true);
    assert!(head.contains("connection: close\r\n"));
}

#[test]
fn interim_broken_and_conflicting_answers() {
    let mut out = Vec::new();
    assert!(matches!(
        response(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
            false,
            &common(),
            false,
            &mut out
        ),
        ParsedResponse::Interim(25)
    ));
    for raw in [
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "garbage\r\n\r\n",
    ] {
        assert!(
            matches!(
                response(raw.as_bytes(), false, &common(), false, &mut out),
                ParsedResponse::Invalid
            ),
            "{raw:?}"
        );
    }
}
