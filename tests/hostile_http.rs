//! Hostile HTTP (issue 9): request smuggling attempts, oversized targets and
//! headers, odd request forms and method-override headers, sent as raw bytes
//! on a real socket. Each case checks what the client got and that nothing
//! (or only the safe rewrite) reached the fake Stream upstream.
//!
//! Two kinds of answers: the gateway's own checks answer in Stream's error
//! JSON (414 code 4, 431 code 24, 400 code 4); what pingora's HTTP parser rejects before
//! the gateway sees the request (obs-fold, duplicate Host, conflicting
//! Content-Lengths, a Transfer-Encoding other than chunked, absolute-form to
//! another host, more than 256 header fields) gets pingora's bare 400 with an
//! empty body and the connection closed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn start() -> (FakeStream, Gateway) {
    let fake = FakeStream::start(&[(API_KEY, STREAM_SECRET)]);
    let cfg = gateway_config(&fake.url(), "", "").replace(
        "threads = 1\n",
        "threads = 1\nmax_uri_bytes = 2048\nmax_header_bytes = 8192\nmax_headers = 40\nclient_body_timeout = \"1s\"\nclient_header_timeout = \"2s\"\n",
    );
    let gw = Gateway::start(&cfg);
    (fake, gw)
}

/// Sends `raw` as is and reads until the gateway closes (or 10 s).
fn send(gw: &Gateway, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(gw.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The value of an unlabelled metric on the admin listener.
fn gateway_metric(gw: &Gateway, name: &str) -> Option<f64> {
    let (status, _, body) = raw_request(gw.admin, "GET /metrics HTTP/1.1\r\nHost: x");
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// (status, body) of the first response in `raw`.
fn parse(raw: &[u8]) -> (u16, Vec<u8>) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head end: {text:?}"));
    (status, raw[split + 4..].to_vec())
}

/// The answer is the gateway's own refusal in Stream's error shape.
fn assert_stream_refusal(raw: &[u8], status: u16, code: i64) {
    let (got, body) = parse(raw);
    let text = String::from_utf8_lossy(raw).to_string();
    assert_eq!(got, status, "{text}");
    assert!(!text.contains("x-fake-upstream"), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&body).unwrap_or_else(|_| panic!("not Stream error JSON: {text}"));
    assert_eq!(json["code"], code, "{text}");
    assert_eq!(json["StatusCode"], status, "{text}");
    assert!(json["message"].is_string() && json["more_info"].is_string());
}

/// pingora's parser refused it: a bare 400, empty body, connection closed.
fn assert_parser_400(raw: &[u8]) {
    let (got, body) = parse(raw);
    assert_eq!(got, 400, "{}", String::from_utf8_lossy(raw));
    assert!(body.is_empty());
}

fn auth() -> String {
    format!("Authorization: {}\r\n", session_for("alice"))
}

#[test]
fn a_request_target_over_max_uri_bytes_is_414_in_stream_shape() {
    let (fake, gw) = start();
    let raw = format!(
        "GET /app?api_key={API_KEY}&x={} HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
        "a".repeat(3000),
        auth()
    );
    assert_stream_refusal(&send(&gw, raw.as_bytes()), 414, 4);
    assert!(fake.requests().is_empty());
}

#[test]
fn too_many_or_too_large_headers_are_431_in_stream_shape() {
    let (fake, gw) = start();
    let many: String = (0..50).map(|i| format!("X-H{i}: v\r\n")).collect();
    let raw = format!(
        "GET /app?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}{many}Connection: close\r\n\r\n",
        auth()
    );
    assert_stream_refusal(&send(&gw, raw.as_bytes()), 431, 24);
    let raw = format!(
        "GET /app?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}X-Big: {}\r\nConnection: close\r\n\r\n",
        auth(),
        "b".repeat(9000)
    );
    assert_stream_refusal(&send(&gw, raw.as_bytes()), 431, 24);
    // Past pingora's own limit (256 fields) its parser answers first.
    let lots: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    let raw = format!(
        "GET /app?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}{lots}Connection: close\r\n\r\n",
        auth()
    );
    assert_parser_400(&send(&gw, raw.as_bytes()));
    assert!(fake.requests().is_empty());
}

#[test]
fn content_length_with_transfer_encoding_is_framed_by_chunked_and_nothing_is_smuggled() {
    let (fake, gw) = start();
    // The classic CL.TE shape: a hop reading Content-Length would take
    // "0\r\n\r\n" as the body and "GET /channeltypes" as a second request.
    // pingora frames by Transfer-Encoding alone (RFC 9112), drops
    // Content-Length and closes the connection after one answer: the
    // trailing request is never read, let alone forwarded.
    let raw = format!(
        "POST /channels/messaging/general/query?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}\
         Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
         GET /channeltypes?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}\r\n",
        auth(),
        auth()
    );
    let got = send(&gw, raw.as_bytes());
    let text = String::from_utf8_lossy(&got);
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "one answer only: {text}"
    );
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    let seen = fake.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/channels/messaging/general/query");
    assert!(seen[0].body.is_empty(), "chunked framing: an empty body");
    assert!(
        seen[0].header("content-length").is_none_or(|v| v == "0"),
        "the client's Content-Length is not forwarded: {seen:?}"
    );
    assert!(!seen.iter().any(|r| r.path.contains("channeltypes")));
}

#[test]
fn repeated_or_conflicting_content_length_and_odd_transfer_encodings_are_refused() {
    let (fake, gw) = start();
    let post = |extra: &str, body: &str| {
        format!(
            "POST /channels/messaging/general/query?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}{extra}Connection: close\r\n\r\n{body}",
            auth()
        )
    };
    // The same value twice: the gateway refuses (Stream shape).
    let same = post("Content-Length: 2\r\nContent-Length: 2\r\n", "{}");
    assert_stream_refusal(&send(&gw, same.as_bytes()), 400, 4);
    // Different values, or "xchunked": pingora's parser refuses.
    let differ = post("Content-Length: 2\r\nContent-Length: 3\r\n", "{}x");
    assert_parser_400(&send(&gw, differ.as_bytes()));
    let te = post("Transfer-Encoding: xchunked\r\n", "2\r\n{}\r\n0\r\n\r\n");
    assert_parser_400(&send(&gw, te.as_bytes()));
    assert!(fake.requests().is_empty());
}

#[test]
fn obs_fold_duplicate_host_and_absolute_form_to_another_host_are_refused() {
    let (fake, gw) = start();
    let get = |target: &str, extra: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\n{}{extra}Connection: close\r\n\r\n",
            auth()
        )
    };
    let app = format!("/app?api_key={API_KEY}");
    let fold = get(&app, "X-Foo: a\r\n  folded\r\n");
    assert_parser_400(&send(&gw, fold.as_bytes()));
    let two_hosts = get(&app, "Host: y\r\n");
    assert_parser_400(&send(&gw, two_hosts.as_bytes()));
    let elsewhere = get(&format!("http://evil.example{app}"), "");
    assert_parser_400(&send(&gw, elsewhere.as_bytes()));
    assert!(fake.requests().is_empty());
}

#[test]
fn absolute_form_for_the_gateway_itself_is_policed_by_its_path() {
    let (fake, gw) = start();
    let raw = format!(
        "GET http://x/channeltypes?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
        auth()
    );
    assert_stream_refusal(&send(&gw, raw.as_bytes()), 403, 17);
    assert!(fake.requests().is_empty());
    let raw = format!(
        "GET http://x/app?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
        auth()
    );
    assert_eq!(parse(&send(&gw, raw.as_bytes())).0, 200);
    let got = fake.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/app", "origin-form upstream");
}

#[test]
fn http_1_0_is_served_with_the_same_checks() {
    let (fake, gw) = start();
    let raw = format!("GET /app?api_key={API_KEY} HTTP/1.0\r\n{}\r\n", auth());
    assert_eq!(parse(&send(&gw, raw.as_bytes())).0, 200);
    let raw = format!(
        "GET /channeltypes?api_key={API_KEY} HTTP/1.0\r\n{}\r\n",
        auth()
    );
    assert_stream_refusal(&send(&gw, raw.as_bytes()), 403, 17);
    let got = fake.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/app");
    assert!(got[0].auth.is_ok(), "{:?}", got[0].auth);
}

#[test]
fn an_upgrade_on_a_route_other_than_connect_is_refused_and_not_forwarded() {
    let (fake, gw) = start();
    let raw = format!(
        "GET /app?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        auth()
    );
    let got = send(&gw, raw.as_bytes());
    let text = String::from_utf8_lossy(&got);
    // Stream's way on a socket: the upgrade completes, one error frame
    // (code 4), then close.
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(
        text.contains("\"code\":4") && text.contains("only allowed on /connect"),
        "{text}"
    );
    assert!(fake.requests().is_empty());
}

#[test]
fn method_override_headers_are_not_honoured_and_not_forwarded() {
    let (fake, gw) = start();
    // A client route called with GET; the override headers ask for DELETE.
    let raw = format!(
        "GET /app?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}X-HTTP-Method-Override: DELETE\r\n\
         X-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\nConnection: close\r\n\r\n",
        auth()
    );
    assert_eq!(parse(&send(&gw, raw.as_bytes())).0, 200);
    let got = fake.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "GET");
    for h in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert!(got[0].header(h).is_none(), "{h} was forwarded");
    }
    // A server-side route stays refused whatever the override says.
    let raw = format!(
        "POST /channeltypes?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}X-HTTP-Method-Override: GET\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        auth()
    );
    assert_stream_refusal(&send(&gw, raw.as_bytes()), 403, 17);
    assert_eq!(fake.requests().len(), 1);
}

#[test]
fn a_client_that_stops_sending_its_body_is_cut_off_after_client_body_timeout() {
    let (fake, gw) = start();
    // A route whose body the gateway reads before forwarding (server-only
    // field check): nothing reaches Stream until the body is complete.
    let mut s = TcpStream::connect(gw.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /channels/messaging/general/message?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"message\":",
        auth()
    );
    s.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

#[test]
fn a_head_dripped_slower_than_client_header_timeout_is_cut_off() {
    let (fake, gw) = start();
    // Slowloris: a valid head, one byte every 100 ms (each read is quick,
    // the whole head is not). client_header_timeout is 2 s here.
    let head = format!(
        "GET /app?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}X-Padding: {}\r\n\r\n",
        auth(),
        "p".repeat(40)
    );
    let mut s = TcpStream::connect(gw.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut cut_after = None;
    for b in head.as_bytes() {
        if s.write_all(&[*b]).is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let closed = cut_after.unwrap_or_else(|| started.elapsed());
    assert!(
        out.is_empty(),
        "no answer expected: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        closed >= Duration::from_millis(1900) && closed < Duration::from_secs(7),
        "closed after {closed:?}"
    );
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    let m = gateway_metric(&gw, "stream_gateway_slow_request_heads_total");
    assert_eq!(m, Some(1.0));
}

#[test]
fn a_silent_connection_is_closed_after_client_header_timeout_and_a_prompt_one_served() {
    let (fake, gw) = start();
    let mut silent = TcpStream::connect(gw.listen).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A prompt request on another connection is answered meanwhile.
    let ok = send(
        &gw,
        format!(
            "GET /app?api_key={API_KEY} HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
            auth()
        )
        .as_bytes(),
    );
    assert_eq!(parse(&ok).0, 200, "{}", String::from_utf8_lossy(&ok));
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = silent.read_to_end(&mut out);
    let waited = started.elapsed();
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    assert!(waited < Duration::from_secs(4), "closed after {waited:?}");
    assert_eq!(fake.requests().len(), 1);
}

#[test]
fn an_oversized_connect_is_refused_the_websocket_way() {
    let (fake, gw) = start();
    // The SDK treats an HTTP error before the upgrade as a network failure
    // and retries forever: on /connect the refusal is an error frame.
    let raw = format!(
        "GET /connect?api_key={API_KEY}&json={} HTTP/1.1\r\nHost: x\r\n{}Upgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "a".repeat(3000),
        auth()
    );
    let got = send(&gw, raw.as_bytes());
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(
        text.contains("\"code\":4") && text.contains("\"StatusCode\":414"),
        "{text}"
    );
    assert!(fake.requests().is_empty());
}
