//! Stream's user-id rules, checked on every verified session so a hostile
//! identity provider claim cannot smuggle path or query syntax into Stream.

/// Stream caps user ids; longer ids are refused rather than truncated.
pub const MAX_USER_ID_LEN: usize = 255;

/// Letters, digits, `@`, `_` and `-`, 1 to [`MAX_USER_ID_LEN`] bytes.
pub fn valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_USER_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'@' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_streams_alphabet_only() {
        for ok in ["alice", "bob-1", "a_b", "x@y", "A9"] {
            assert!(valid_user_id(ok), "{ok}");
        }
        let long = "a".repeat(MAX_USER_ID_LEN + 1);
        for bad in [
            "",
            "a b",
            "a/b",
            "a.b",
            "a?b",
            "ä",
            "a%2F",
            long.as_str(),
            "a\0",
        ] {
            assert!(!valid_user_id(bad), "{bad:?}");
        }
    }
}
