//! Request-path normalisation: turns the raw path of a request target into one
//! canonical list of segments, or refuses the path outright.
//!
//! Only syntax lives here. Route lookup is in `table.rs`, and the forward/refuse
//! decision is in `mod.rs`. The goal is that the gateway classifies exactly the
//! path it forwards: every spelling that Stream could read as a different path
//! (encoded slashes, backslashes, matrix parameters, dot segments) is either
//! resolved here or refused, and the output re-normalises to itself.

/// Longest raw (and normalised) path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 2048;

use smallvec::SmallVec;
use std::borrow::Cow;

/// Why a path was refused. Messages are safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path contains an encoded slash")]
    EncodedSlash,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path contains a control character")]
    ControlChar,
    #[error("path contains a semicolon")]
    Semicolon,
    #[error("path climbs above the root")]
    AboveRoot,
    #[error("path contains an encoded '%' (double encoding)")]
    EncodedPercent,
    #[error("path contains a malformed percent-escape")]
    BadPercentEncoding,
    #[error("path is longer than {} bytes", MAX_PATH_BYTES)]
    TooLong,
}

/// Segments of a normalised path; each segment is non-empty.
///
/// The forwarded form (`/a/b/c`, or `/` for the root) is kept as one string,
/// borrowed from the request when it is already canonical (the usual case:
/// no allocation), and each segment is a byte range into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath<'a> {
    text: Cow<'a, str>,
    bounds: SmallVec<[(u16, u16); 16]>,
}

impl<'a> NormalizedPath<'a> {
    /// The segments, in order; none is empty, `.` or `..`.
    pub fn segments(&self) -> Segments<'_> {
        Segments {
            text: &self.text,
            bounds: self.bounds.iter(),
        }
    }

    pub fn segment_count(&self) -> usize {
        self.bounds.len()
    }

    /// The path as it should be forwarded: `/` plus the segments joined by `/`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn to_path_string(&self) -> String {
        self.text.to_string()
    }
}

/// Iterator over the segments of a [`NormalizedPath`].
#[derive(Debug, Clone)]
pub struct Segments<'p> {
    text: &'p str,
    bounds: std::slice::Iter<'p, (u16, u16)>,
}

impl<'p> Iterator for Segments<'p> {
    type Item = &'p str;

    fn next(&mut self) -> Option<&'p str> {
        let &(start, end) = self.bounds.next()?;
        self.text.get(usize::from(start)..usize::from(end))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.bounds.size_hint()
    }
}

impl ExactSizeIterator for Segments<'_> {}

/// Normalises the path part of a request target (no query string).
pub fn normalize(raw_path: &str) -> Result<NormalizedPath<'_>, PathError> {
    if !raw_path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if raw_path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if let Some(bounds) = canonical_bounds(raw_path) {
        return Ok(NormalizedPath {
            text: Cow::Borrowed(raw_path),
            bounds,
        });
    }
    let mut text = String::with_capacity(raw_path.len());
    let mut bounds: SmallVec<[(u16, u16); 16]> = SmallVec::new();
    for raw_segment in raw_path[1..].split('/') {
        if raw_segment.is_empty() {
            continue;
        }
        // Decode first so that `%2e%2E` is recognised as `..`: Stream (or any
        // proxy in between) may decode it and climb, so we must climb too.
        let slash = text.len();
        text.push('/');
        decode_segment(raw_segment, &mut text)?;
        match &text[slash + 1..] {
            "." => text.truncate(slash),
            ".." => {
                text.truncate(slash);
                let Some((parent, _)) = bounds.pop() else {
                    return Err(PathError::AboveRoot);
                };
                text.truncate(usize::from(parent) - 1);
            }
            _ => bounds.push((to_u16(slash + 1), to_u16(text.len()))),
        }
    }
    // Encoding non-ASCII bytes can grow the path (to at most three times
    // MAX_PATH_BYTES, so the bounds fit in u16); refusing here keeps the
    // output re-normalisable (normalize(as_str) is the identity).
    if text.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if text.is_empty() {
        text.push('/');
    }
    Ok(NormalizedPath {
        text: Cow::Owned(text),
        bounds,
    })
}

/// The segment ranges of a path that normalisation would return unchanged:
/// only unreserved and raw-safe bytes, no empty, `.` or `..` segment, no
/// trailing slash. `None` sends the path through the full normaliser.
fn canonical_bounds(path: &str) -> Option<SmallVec<[(u16, u16); 16]>> {
    let bytes = path.as_bytes();
    let mut bounds = SmallVec::new();
    if bytes.len() == 1 {
        return Some(bounds);
    }
    let mut start = 1;
    for (i, &byte) in bytes.iter().enumerate().skip(1) {
        if byte == b'/' {
            push_canonical(&mut bounds, bytes, start, i)?;
            start = i + 1;
        } else if !(is_unreserved(byte) || is_raw_path_safe(byte)) {
            return None;
        }
    }
    push_canonical(&mut bounds, bytes, start, bytes.len())?;
    Some(bounds)
}

fn push_canonical(
    bounds: &mut SmallVec<[(u16, u16); 16]>,
    bytes: &[u8],
    start: usize,
    end: usize,
) -> Option<()> {
    match &bytes[start..end] {
        b"" | b"." | b".." => None,
        _ => {
            bounds.push((to_u16(start), to_u16(end)));
            Some(())
        }
    }
}

/// Offsets are below `3 * MAX_PATH_BYTES` (each raw byte escapes to at most
/// three), so they fit.
fn to_u16(offset: usize) -> u16 {
    u16::try_from(offset).unwrap_or(u16::MAX)
}

/// One round of percent-decoding, limited to unreserved characters, so that a
/// byte has exactly one spelling in the output. An encoded `%` (`%25`) is
/// refused: `%252e` would be data to us but a dot segment to any hop that
/// decodes twice, and no Stream id (user, channel, message) contains `%`.
fn decode_segment(raw: &str, out: &mut String) -> Result<(), PathError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let high = bytes.get(i + 1).copied().and_then(hex_value);
            let low = bytes.get(i + 2).copied().and_then(hex_value);
            let (Some(high), Some(low)) = (high, low) else {
                return Err(PathError::BadPercentEncoding);
            };
            let value = (high << 4) | low;
            if value == b'/' {
                return Err(PathError::EncodedSlash);
            }
            if value == b'%' {
                return Err(PathError::EncodedPercent);
            }
            refuse_byte(value)?;
            if is_unreserved(value) {
                out.push(char::from(value));
            } else {
                push_escaped(out, value);
            }
            i += 3;
        } else {
            refuse_byte(byte)?;
            if is_unreserved(byte) || is_raw_path_safe(byte) {
                out.push(char::from(byte));
            } else {
                // Non-ASCII bytes and characters that RFC 3986 does not allow
                // raw in a path (space, `?`, `#`, `{`, ...) are escaped so that
                // the forwarded path is plain ASCII and cannot be re-split.
                push_escaped(out, byte);
            }
            i += 1;
        }
    }
    Ok(())
}

/// Bytes refused whether raw or escaped: each can make a server or an
/// intermediary see a different path than the one we classified.
fn refuse_byte(byte: u8) -> Result<(), PathError> {
    match byte {
        b'\\' => Err(PathError::Backslash),
        0 => Err(PathError::Nul),
        0x01..=0x1F | 0x7F => Err(PathError::ControlChar),
        b';' => Err(PathError::Semicolon),
        _ => Ok(()),
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 sub-delims plus `:` and `@` (`;` is refused before this is asked).
fn is_raw_path_safe(byte: u8) -> bool {
    b"!$&'()*+,=:@".contains(&byte)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn push_escaped(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0x0F)]));
}

#[cfg(test)]
mod tests;
