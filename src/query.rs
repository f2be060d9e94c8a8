//! Query-string parsing and rewriting for the credential swap.
//!
//! Keys are compared after percent-decoding and ASCII case folding, so
//! `%61pi_key` or `API_KEY` cannot sneak a second value past the gateway to a
//! server that decodes differently. Pairs the gateway does not touch are
//! forwarded byte for byte.

use std::borrow::Cow;

/// One `key=value` pair of the raw query.
#[derive(Debug, Clone)]
pub struct Pair<'a> {
    /// The pair exactly as received, forwarded unchanged when kept.
    pub raw: &'a str,
    pub key: Cow<'a, str>,
    pub value: Cow<'a, str>,
}

/// Splits a raw query on `&`. A `;` is refused: some servers treat it as a
/// separator and some do not, and that disagreement is a smuggling vector.
pub fn parse(raw: &str) -> Result<Vec<Pair<'_>>, &'static str> {
    if raw.contains(';') {
        return Err("';' is not allowed in the query string");
    }
    Ok(raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Pair {
                raw: p,
                key: decode(k),
                value: decode(v),
            }
        })
        .collect())
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a
/// byte; a malformed escape is kept as text; invalid UTF-8 becomes U+FFFD.
pub fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Percent-encodes a value for the query (everything but unreserved).
pub fn encode(s: &str) -> Cow<'_, str> {
    let keep = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
    if s.bytes().all(keep) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() * 3);
    for c in s.bytes() {
        if keep(c) {
            out.push(c as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(c >> 4)] as char);
            out.push(HEX[usize::from(c & 15)] as char);
        }
    }
    Cow::Owned(out)
}

/// True when `pair`'s decoded key is `name`, ignoring ASCII case.
pub fn is_key(pair: &Pair<'_>, name: &str) -> bool {
    pair.key.eq_ignore_ascii_case(name)
}

/// Rebuilds a query: every pair for which `drop` is false is kept as
/// received, then `append` pairs are added, encoded.
pub fn rebuild(
    pairs: &[Pair<'_>],
    drop: impl Fn(&Pair<'_>) -> bool,
    append: &[(&str, &str)],
) -> String {
    write_query(String::new(), None, pairs, drop, append)
}

/// `path`, then `?` and the rebuilt query ([`rebuild`]) unless that is
/// empty: the forwarded target in one buffer.
pub fn with_query(
    path: String,
    pairs: &[Pair<'_>],
    drop: impl Fn(&Pair<'_>) -> bool,
    append: &[(&str, &str)],
) -> String {
    write_query(path, Some('?'), pairs, drop, append)
}

fn write_query(
    mut out: String,
    lead: Option<char>,
    pairs: &[Pair<'_>],
    drop: impl Fn(&Pair<'_>) -> bool,
    append: &[(&str, &str)],
) -> String {
    let start = out.len();
    // Room for the longest result (every appended value fully escaped), so
    // the buffer grows once.
    let kept: usize = pairs.iter().map(|p| p.raw.len() + 1).sum();
    let added: usize = append
        .iter()
        .map(|(k, v)| 3 * (k.len() + v.len()) + 2)
        .sum();
    out.reserve(kept + added + 1);
    let separate = |out: &mut String| match (out.len() == start, lead) {
        (true, Some(c)) => out.push(c),
        (true, None) => {}
        (false, _) => out.push('&'),
    };
    for p in pairs.iter().filter(|p| !drop(p)) {
        separate(&mut out);
        out.push_str(p.raw);
    }
    for (k, v) in append {
        separate(&mut out);
        out.push_str(&encode(k));
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_keys_so_encoded_duplicates_are_seen() {
        let pairs = parse("%61pi_key=x&API_KEY=y&b=1+2%20").unwrap();
        let keys: Vec<_> = pairs
            .iter()
            .filter(|p| is_key(p, "api_key"))
            .map(|p| p.value.as_ref())
            .collect();
        assert_eq!(keys, ["x", "y"]);
        assert_eq!(pairs[2].value, "1 2 ");
    }

    #[test]
    fn semicolons_are_refused() {
        assert!(parse("a=1;api_key=2").is_err());
    }

    #[test]
    fn rebuild_keeps_other_pairs_verbatim_and_appends_encoded() {
        let pairs = parse("api_key=evil&payload=%7B%22a%22%3A1%7D&user_id=mallory").unwrap();
        let q = rebuild(
            &pairs,
            |p| is_key(p, "api_key") || is_key(p, "user_id"),
            &[("api_key", "k 1"), ("user_id", "alice@x")],
        );
        assert_eq!(
            q,
            "payload=%7B%22a%22%3A1%7D&api_key=k%201&user_id=alice%40x"
        );
    }

    #[test]
    fn with_query_puts_the_rebuilt_query_after_the_path() {
        let pairs = parse("api_key=evil&limit=10").unwrap();
        let drop = |p: &Pair<'_>| is_key(p, "api_key");
        let pq = with_query("/channels".into(), &pairs, drop, &[("api_key", "k")]);
        assert_eq!(pq, "/channels?limit=10&api_key=k");
        assert_eq!(
            with_query("/a".into(), &pairs, |_| true, &[]),
            "/a",
            "an empty query adds no '?'"
        );
        assert_eq!(
            with_query("/a".into(), &[], |_| false, &[("k", "v w")]),
            "/a?k=v%20w"
        );
        for (raw, append) in [
            ("a=1&b=2", &[][..]),
            ("", &[("x", "é")][..]),
            ("c", &[("d", "")][..]),
        ] {
            let pairs = parse(raw).unwrap();
            let q = rebuild(&pairs, |_| false, append);
            let pq = with_query("/p".into(), &pairs, |_| false, append);
            let expected = if q.is_empty() {
                "/p".to_string()
            } else {
                format!("/p?{q}")
            };
            assert_eq!(pq, expected, "{raw:?}");
        }
    }

    #[test]
    fn encode_escapes_every_reserved_byte_in_upper_case_hex() {
        assert_eq!(encode("a-b.c_d~9"), "a-b.c_d~9");
        assert_eq!(encode("é &=?/%\u{7f}\n"), "%C3%A9%20%26%3D%3F%2F%25%7F%0A");
        let all: String = (1..=0x7f_u8).map(char::from).chain(['é', '☃']).collect();
        assert_eq!(decode(&encode(&all)), all);
    }

    #[test]
    fn malformed_escapes_stay_text() {
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%41"), "A");
    }
}
