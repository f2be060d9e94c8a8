//! The websocket `/connect` specifics, free of pingora: the `json` query
//! parameter check (identity binding, no app token inside), and refusing a
//! socket the way Stream does.
//!
//! Stream refuses a websocket by completing the upgrade, sending one text
//! frame `{"error": {...}}` and closing with code 1000; the JS SDK treats
//! 1000 as final (and on code 40 refreshes its token and reconnects). An HTTP
//! error before the upgrade looks like a network failure to a browser and the
//! SDK retries forever, so the gateway never answers a websocket that way.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;
use sha1::{Digest, Sha1};

use crate::refusal::Refusal;

/// Largest accepted `json` parameter (decoded). The SDK's payload (user id,
/// user details, device) is a few hundred bytes; user details can carry
/// custom fields, so leave room, but not unbounded.
pub const MAX_CONNECT_JSON_BYTES: usize = 16 * 1024;

/// RFC 6455 handshake GUID.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// The bytes Stream sends to refuse a socket: a text frame with
/// `{"error": <Stream error>}`, then a close frame with code 1000.
/// Server-to-client frames are not masked.
pub fn refusal_frames(refusal: &Refusal) -> Bytes {
    error_then_close(refusal, 1000)
}

/// The error frame, then a close frame with `code`. An already open socket
/// whose session expired is closed with 1001: the JS SDK treats 1000 as
/// final (no reconnect, and it keeps reporting itself healthy), while any
/// other code makes it reconnect, meet code 40 at the handshake, call its
/// `tokenProvider` and carry on.
pub fn error_then_close(refusal: &Refusal, code: u16) -> Bytes {
    let body = refusal.body();
    let mut text = BytesMut::with_capacity(body.len() + 12);
    text.put_slice(b"{\"error\":");
    text.put_slice(&body);
    text.put_slice(b"}");
    let mut out = BytesMut::with_capacity(text.len() + 16);
    frame(&mut out, 0x1, &text);
    frame(&mut out, 0x8, &code.to_be_bytes());
    out.freeze()
}

/// A close frame with `code` (1001 "going away" when the gateway shuts
/// down: the SDK reconnects, to another instance, on any code but 1000).
pub fn close_frame(code: u16) -> Bytes {
    let mut out = BytesMut::with_capacity(4);
    frame(&mut out, 0x8, &code.to_be_bytes());
    out.freeze()
}

fn frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    out.put_u8(0x80 | opcode); // FIN + opcode
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= u16::MAX as usize => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(payload);
}

/// Checks and rewrites the `/connect` `json` parameter (already
/// percent-decoded). For a user session, `user_id` must be the session's user
/// and `user_details.id`, when present, too. `user_token` (older SDKs put
/// the token there) is removed so the app's session token never reaches
/// Stream. Returns the JSON to forward.
pub fn check_connect_json(decoded: &str, session_user: Option<&str>) -> Result<String, Refusal> {
    if decoded.len() > MAX_CONNECT_JSON_BYTES {
        return Err(Refusal::BadRequest("the json parameter is too large"));
    }
    let mut v: Value = serde_json::from_str(decoded)
        .map_err(|_| Refusal::BadRequest("the json parameter is not valid JSON"))?;
    let obj = v
        .as_object_mut()
        .ok_or(Refusal::BadRequest("the json parameter must be an object"))?;
    obj.remove("user_token");
    if let Some(user) = session_user {
        match obj.get("user_id") {
            Some(Value::String(id)) if id == user => {}
            Some(Value::String(_)) => return Err(Refusal::IdentityMismatch),
            _ => return Err(Refusal::BadRequest("json.user_id is missing")),
        }
        if let Some(details) = obj.get("user_details") {
            match details.get("id") {
                None => {}
                Some(Value::String(id)) if id == user => {}
                Some(_) => return Err(Refusal::IdentityMismatch),
            }
        }
    }
    // Re-serialising can grow the text (`1e15` is written
    // `1000000000000000.0`): the cap holds for what is forwarded too.
    let out = v.to_string();
    if out.len() > MAX_CONNECT_JSON_BYTES {
        return Err(Refusal::BadRequest("the json parameter is too large"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn refusal_is_an_error_text_frame_then_close_1000() {
        let f = refusal_frames(&Refusal::SessionExpired);
        assert_eq!(f[0], 0x81);
        let len = match f[1] {
            126 => u16::from_be_bytes([f[2], f[3]]) as usize,
            n => n as usize,
        };
        let start = if f[1] == 126 { 4 } else { 2 };
        let v: Value = serde_json::from_slice(&f[start..start + len]).unwrap();
        assert_eq!(v["error"]["code"], 40);
        assert_eq!(v["error"]["StatusCode"], 401);
        assert_eq!(&f[start + len..], &[0x88, 2, 0x03, 0xE8]);
    }

    #[test]
    fn json_binding_and_token_removal() {
        let ok =
            r#"{"user_id":"alice","user_details":{"id":"alice","name":"A"},"user_token":"SECRET"}"#;
        let out = check_connect_json(ok, Some("alice")).unwrap();
        assert!(!out.contains("SECRET"));
        assert!(out.contains("\"name\":\"A\""));
        let cases = [
            (r#"{"user_id":"mallory"}"#, Refusal::IdentityMismatch),
            (
                r#"{"user_id":"alice","user_details":{"id":"mallory"}}"#,
                Refusal::IdentityMismatch,
            ),
            (
                r#"{"user_details":{"id":"alice"}}"#,
                Refusal::BadRequest("json.user_id is missing"),
            ),
            (
                r#"not json"#,
                Refusal::BadRequest("the json parameter is not valid JSON"),
            ),
            (
                r#"["alice"]"#,
                Refusal::BadRequest("the json parameter must be an object"),
            ),
        ];
        for (json, want) in cases {
            assert_eq!(check_connect_json(json, Some("alice")), Err(want), "{json}");
        }
        let big = format!(
            r#"{{"user_id":"alice","x":"{}"}}"#,
            "a".repeat(MAX_CONNECT_JSON_BYTES)
        );
        assert_eq!(
            check_connect_json(&big, Some("alice")),
            Err(Refusal::BadRequest("the json parameter is too large"))
        );
        // anonymous: no binding, token still removed
        let anon = check_connect_json(r#"{"user_id":"uuid-1","user_token":""}"#, None).unwrap();
        assert_eq!(anon, r#"{"user_id":"uuid-1"}"#);
    }

    /// Found by fuzz/fuzz_targets/connect_json.rs: serde_json's default
    /// float parsing is not correctly rounded, so a number with more digits
    /// than an f64 holds was forwarded as a neighbouring double (not what
    /// Stream would read from the client's text), and the forwarded payload
    /// was not a fixed point of the check. serde_json's `float_roundtrip`
    /// fixes both.
    #[test]
    fn reserialised_numbers_keep_their_value_and_are_a_fixed_point() {
        let sent = r#"{"user_id":"alice","big":184.6744073799551616,"n":1e5,"z":-0.0}"#;
        let out = check_connect_json(sent, Some("alice")).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        let exact: f64 = "184.6744073799551616".parse().unwrap();
        assert_eq!(v["big"].as_f64(), Some(exact), "{out}");
        assert_eq!(check_connect_json(&out, Some("alice")), Ok(out.clone()));
    }

    /// Found while writing the connect_json fuzz target's fixed-point
    /// invariant: 15 KB of `1e15` (under the cap) re-serialised to 57 KB.
    #[test]
    fn the_size_cap_holds_for_the_forwarded_payload() {
        let many = vec!["1e15"; 3000].join(",");
        let sent = format!(r#"{{"user_id":"alice","a":[{many}]}}"#);
        assert!(sent.len() < MAX_CONNECT_JSON_BYTES);
        assert_eq!(
            check_connect_json(&sent, Some("alice")),
            Err(Refusal::BadRequest("the json parameter is too large"))
        );
        let fits = format!(r#"{{"user_id":"alice","a":[{}]}}"#, ["1e15"; 10].join(","));
        let out = check_connect_json(&fits, Some("alice")).unwrap();
        assert!(out.contains("1000000000000000.0"), "{out}");
    }
}

/// Follows frame boundaries in a websocket byte stream (either direction;
/// client frames are masked), so the gateway can insert its own frames
/// between Stream's without cutting one in half, and count frames for the
/// audit record.
#[derive(Debug, Default)]
pub struct FrameTracker {
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// A frame header split across chunks.
    header: Vec<u8>,
    /// Frames whose header has been seen.
    frames: u64,
}

impl FrameTracker {
    /// True when no frame is partly seen.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.header.is_empty()
    }

    /// Consumes `chunk`; returns true when the stream is at a frame boundary
    /// after it.
    pub fn advance(&mut self, mut chunk: &[u8]) -> bool {
        loop {
            if self.remaining > 0 {
                let take = self.remaining.min(chunk.len() as u64);
                self.remaining -= take;
                chunk = &chunk[take as usize..];
                if self.remaining > 0 {
                    return false;
                }
            }
            if chunk.is_empty() {
                return self.header.is_empty();
            }
            // Collect a full header: 2 bytes, plus 2 or 8 length bytes, plus
            // 4 mask bytes if masked (servers do not mask; handled anyway).
            let need = |h: &[u8]| -> usize {
                if h.len() < 2 {
                    return 2;
                }
                let ext = match h[1] & 0x7F {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                2 + ext + if h[1] & 0x80 != 0 { 4 } else { 0 }
            };
            while self.header.len() < need(&self.header) {
                let Some((&b, rest)) = chunk.split_first() else {
                    return false;
                };
                self.header.push(b);
                chunk = rest;
            }
            let h = &self.header;
            self.remaining = match h[1] & 0x7F {
                126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
                n => u64::from(n),
            };
            self.header.clear();
            self.frames += 1;
        }
    }

    /// Frames seen so far (counted when their header is complete).
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

#[cfg(test)]
mod tracker_tests {
    use super::*;

    fn text(payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        frame(&mut b, 0x1, payload);
        b.to_vec()
    }

    #[test]
    fn boundaries_across_any_split() {
        let mut stream = text(b"hello");
        stream.extend(text(&[b'x'; 300]));
        stream.extend(text(&[b'y'; 70_000]));
        let ends = [7, 7 + 304, stream.len()];
        for split in [1usize, 2, 3, 5, 64, 1000, 100_000] {
            let mut t = FrameTracker::default();
            let mut pos = 0;
            for chunk in stream.chunks(split) {
                let at_boundary = t.advance(chunk);
                pos += chunk.len();
                assert_eq!(at_boundary, ends.contains(&pos), "split {split} pos {pos}");
            }
        }
    }
}
