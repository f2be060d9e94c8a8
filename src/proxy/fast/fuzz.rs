//! The fast path's head reader for `fuzz/fuzz_targets/fast_head.rs`; built
//! only under cargo-fuzz's `cfg(fuzzing)`.

/// What the fast path makes of a request head (fuzz target only).
#[derive(Debug)]
pub enum FuzzHead {
    Partial,
    /// Left to pingora.
    Leave,
    Take {
        method: String,
        path: String,
        query: Option<String>,
        /// (name as sent, value) of every field.
        fields: Vec<(Vec<u8>, Vec<u8>)>,
        len: usize,
        body_len: usize,
        close: bool,
    },
}

/// The fast path's head reader with the default client limits, for
/// `fuzz/fuzz_targets/fast_head.rs`.
pub fn fuzz_head(buf: &[u8]) -> FuzzHead {
    match super::wire::parse(buf, &crate::config::ClientLimits::default()) {
        super::Parsed::Partial => FuzzHead::Partial,
        super::Parsed::Leave => FuzzHead::Leave,
        super::Parsed::Take(h) => FuzzHead::Take {
            method: h.method.to_string(),
            path: h.path(buf).to_string(),
            query: h.query(buf).map(str::to_string),
            fields: h
                .headers(buf)
                .iter()
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect(),
            len: h.len,
            body_len: h.body_len,
            close: h.close,
        },
    }
}
