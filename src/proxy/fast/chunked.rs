//! Where a chunked response body ends (RFC 9112 7.1), for the fast path's relay.

/// Follows a chunked body through the bytes relayed, to find where it ends
/// (the upstream connection is reused only after a complete message) and
/// how many payload bytes it carried.
#[derive(Debug, Default)]
pub(super) struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
    /// Payload bytes seen (chunk data, not framing).
    pub data: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

impl Chunked {
    /// Feeds the next relayed bytes: `Ok(Some(n))` when the body ended
    /// after the first `n` of them, `Err` on a malformed body.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
        use ChunkState::*;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(());
                        }
                        self.size = self.size * 16 + u64::from(d);
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = Extension,
                    b'\r' if self.digits > 0 => self.state = SizeLf,
                    _ => return Err(()),
                },
                Extension => {
                    if b == b'\r' {
                        self.state = SizeLf;
                    }
                }
                SizeLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.digits = 0;
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                Data => {
                    let take =
                        (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= take as u64;
                    self.data += take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr => {
                    if b != b'\r' {
                        return Err(());
                    }
                    self.state = DataLf;
                }
                DataLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.state = Size;
                }
                TrailerStart => self.state = if b == b'\r' { FinalLf } else { TrailerLine },
                TrailerLine => {
                    if b == b'\r' {
                        self.state = TrailerLf;
                    }
                }
                TrailerLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.state = TrailerStart;
                }
                FinalLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.state = Done;
                    return Ok(Some(i + 1));
                }
                Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok((self.state == Done).then_some(bytes.len()))
    }
}
