//! The audit record as one line of JSON, written by hand: the same bytes
//! `serde_json` writes for [`Record`] (a test checks it field by field and
//! with strings that need escaping), at a fraction of the cost. Almost every
//! string in a record (ids, method, route, operation) needs no escaping, so
//! it is copied as is after one scan; anything with a quote, a backslash or a
//! control character goes through `serde_json`'s escaper.

use super::{Entry, Record};

impl Record {
    /// The record as an [`Entry`] (borrowed).
    pub fn entry(&self) -> Entry<'_> {
        Entry {
            time: self.time,
            kind: self.kind,
            request_id: &self.request_id,
            tenant: self.tenant.as_deref(),
            user_id: self.user_id.as_deref(),
            service: self.service.as_deref(),
            client_ip: self.client_ip,
            method: &self.method,
            route: self.route.as_deref(),
            operation: self.operation.as_deref(),
            decision: self.decision,
            code: self.code,
            status: self.status,
            upstream_status: self.upstream_status,
            latency_ms: self.latency_ms,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration_ms: self.duration_ms,
            frames_in: self.frames_in,
            frames_out: self.frames_out,
        }
    }

    /// Appends the record as JSON (no newline) to `out`.
    pub fn encode_json(&self, out: &mut Vec<u8>) {
        self.entry().encode_json(out);
    }

    /// The record as a JSON string.
    pub fn to_json(&self) -> String {
        // Built from &str pieces and ASCII only.
        String::from_utf8(self.entry().line()).unwrap_or_default()
    }
}

impl Entry<'_> {
    /// The record as one JSON line (no newline), sized to fit.
    pub fn line(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.line_into(&mut out);
        out
    }

    /// The record as one JSON line (no newline) in `out`, replacing what
    /// it held, with room reserved for the whole line first.
    pub fn line_into(&self, out: &mut Vec<u8>) {
        let strings = [
            Some(self.request_id),
            self.tenant,
            self.user_id,
            self.service,
            Some(self.method),
            self.route,
            self.operation,
        ];
        out.clear();
        // The field names, numbers, time and address take at most 512 bytes
        // (a test writes every one at its longest).
        out.reserve(512 + strings.iter().flatten().map(|s| s.len()).sum::<usize>());
        self.encode_json(out);
    }

    /// Appends the record as JSON (no newline) to `out`.
    pub fn encode_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(&self.time.rfc3339());
        out.push(b'"');
        out.extend_from_slice(b",\"kind\":");
        string(out, self.kind);
        out.extend_from_slice(b",\"request_id\":");
        string(out, self.request_id);
        out.extend_from_slice(b",\"tenant\":");
        opt_string(out, self.tenant);
        out.extend_from_slice(b",\"user_id\":");
        opt_string(out, self.user_id);
        if let Some(service) = self.service {
            out.extend_from_slice(b",\"service\":");
            string(out, service);
        }
        out.extend_from_slice(b",\"client_ip\":");
        match self.client_ip {
            Some(ip) => {
                out.push(b'"');
                out.extend_from_slice(crate::ip_text::IpText::new(ip).as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"method\":");
        string(out, self.method);
        out.extend_from_slice(b",\"route\":");
        opt_string(out, self.route);
        out.extend_from_slice(b",\"operation\":");
        opt_string(out, self.operation);
        out.extend_from_slice(b",\"decision\":");
        string(out, self.decision);
        out.extend_from_slice(b",\"code\":");
        match self.code {
            Some(c) => int(out, c),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"status\":");
        int(out, self.status);
        out.extend_from_slice(b",\"upstream_status\":");
        match self.upstream_status {
            Some(s) => int(out, s),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"latency_ms\":");
        if self.latency_ms.is_finite() {
            out.extend_from_slice(ryu::Buffer::new().format_finite(self.latency_ms).as_bytes());
        } else {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(b",\"bytes_in\":");
        int(out, self.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        int(out, self.bytes_out);
        for (name, value) in [
            (&b",\"duration_ms\":"[..], self.duration_ms),
            (b",\"frames_in\":", self.frames_in),
            (b",\"frames_out\":", self.frames_out),
        ] {
            if let Some(v) = value {
                out.extend_from_slice(name);
                int(out, v);
            }
        }
        out.push(b'}');
    }
}

fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Whether `s` has no byte JSON must escape (a control character, `"`,
/// `\\`), eight bytes at a time: the strings are short (ids, route names)
/// and almost never need escaping; a byte-wise scan cost ~140 instructions
/// a string (callgrind).
fn plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    // Some byte of `w` below `n` (n <= 0x80): exact for "any byte".
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & TOPS;
    let flags = |w: u64| {
        below(w, 0x20)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
    };
    let mut chunks = s.chunks_exact(8);
    let mut found = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        found |= flags(u64::from_le_bytes(word));
    }
    // The tail, over a word of a byte that needs no escaping (shifted in
    // by hand: a slice copy here is a `memcpy` call).
    let mut word = ONES * u64::from(b'a');
    for (i, &b) in chunks.remainder().iter().enumerate() {
        word = (word & !(0xff << (8 * i))) | (u64::from(b) << (8 * i));
    }
    found |= flags(word);
    found == 0
}

fn string(out: &mut Vec<u8>, s: &str) {
    if !plain(s.as_bytes()) {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::super::Record;

    fn record() -> Record {
        Record {
            time: super::super::Timestamp::from_unix_millis(1_795_666_200_123),
            kind: "request",
            request_id: "0123456789abcdef0123456789abcdef".into(),
            tenant: Some("acme".into()),
            user_id: Some("alice@x_y-z".into()),
            service: None,
            client_ip: Some("::1".parse().unwrap()),
            method: "GET".into(),
            route: Some("/channels/{type}/{id}".into()),
            operation: Some("GetOrCreateChannel".into()),
            decision: "forwarded",
            code: None,
            status: 200,
            upstream_status: Some(201),
            latency_ms: 1.234,
            bytes_in: 0,
            bytes_out: 1_234_567,
            duration_ms: None,
            frames_in: None,
            frames_out: None,
        }
    }

    fn same_as_serde(r: &Record) {
        assert_eq!(r.to_json(), serde_json::to_string(r).unwrap());
    }

    #[test]
    fn the_same_bytes_as_serde_json() {
        let mut r = record();
        same_as_serde(&r);
        r.tenant = None;
        r.user_id = None;
        r.client_ip = None;
        r.route = None;
        r.operation = None;
        r.code = Some(-1);
        r.upstream_status = None;
        r.latency_ms = 0.0;
        same_as_serde(&r);
        r.latency_ms = 12_345.678_9;
        r.kind = "websocket";
        r.duration_ms = Some(60_000);
        r.frames_in = Some(3);
        r.frames_out = Some(u64::MAX);
        same_as_serde(&r);
        r.frames_in = None;
        same_as_serde(&r);
        r.latency_ms = f64::NAN;
        same_as_serde(&r);
        r.service = Some("billing".into());
        same_as_serde(&r);
        r.service = Some("odd\"name\n".into());
        same_as_serde(&r);
    }

    #[test]
    fn a_line_fits_the_room_it_reserves() {
        // Every number at its longest, the longest IPv6 text, every optional
        // field present, strings that need no escaping.
        let mut r = record();
        r.client_ip = Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap());
        r.service = Some("billing".into());
        r.code = Some(i32::MIN);
        r.status = u16::MAX;
        r.upstream_status = Some(u16::MAX);
        r.latency_ms = -1.234_567_890_123_456_7e-300;
        r.bytes_in = u64::MAX;
        r.bytes_out = u64::MAX;
        r.duration_ms = Some(u64::MAX);
        r.frames_in = Some(u64::MAX);
        r.frames_out = Some(u64::MAX);
        r.kind = "websocket";
        r.decision = "upstream_unavailable";
        let entry = r.entry();
        let line = entry.line();
        let strings: usize = [
            Some(entry.request_id),
            entry.tenant,
            entry.user_id,
            entry.service,
            Some(entry.method),
            entry.route,
            entry.operation,
        ]
        .iter()
        .flatten()
        .map(|s| s.len())
        .sum();
        assert!(
            line.len() <= 512 + strings,
            "{} > 512 + {strings}",
            line.len()
        );
        assert_eq!(line, serde_json::to_vec(&r).unwrap());
    }

    #[test]
    fn user_records_have_no_service_field_and_service_records_name_it() {
        let mut r = record();
        assert!(!r.to_json().contains("service"));
        r.user_id = None;
        r.service = Some("billing".into());
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["user_id"], serde_json::Value::Null);
        assert_eq!(v["service"], "billing");
    }

    #[test]
    fn plain_is_exactly_no_control_character_quote_or_backslash() {
        let oracle = |s: &[u8]| s.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\');
        // Every byte value at every position of strings of 1 to 20 bytes.
        for len in 1..=20usize {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'x'; len];
                    s[at] = b;
                    assert_eq!(super::plain(&s), oracle(&s), "{s:?}");
                    // Next to bytes with the top bit set (UTF-8).
                    let mut s = vec![0xC3; len];
                    s[at] = b;
                    assert_eq!(super::plain(&s), oracle(&s), "{s:?}");
                }
            }
        }
        assert!(super::plain(b""));
        assert!(super::plain("/channels/{type}/{id}é".as_bytes()));
        assert!(!super::plain(b"0123456789abcdef0123456789abcde\""));
    }

    #[test]
    fn strings_that_need_escaping_are_escaped_like_serde_json() {
        let mut r = record();
        r.method = "GE\"T\\".into();
        r.request_id = "a\nb\tc\u{1}d\u{7f}é".into();
        r.route = Some("/x/\"{id}\"".into());
        same_as_serde(&r);
        let line = r.to_json();
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["request_id"], "a\nb\tc\u{1}d\u{7f}é");
    }
}
