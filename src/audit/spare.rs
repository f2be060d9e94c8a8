//! Line buffers going round between the request side and the writer.

use super::Line;

/// Line buffers the writer has written, for the request side to fill again.
/// A buffer allocated on a proxy thread and freed on the writer's is the
/// system allocator's slowest case (its per-thread cache never gets the
/// size back: ~250 instructions a `malloc` plus a locked `free`, callgrind),
/// so buffers go round instead.
#[derive(Default)]
pub(super) struct Spare(pub(super) std::sync::Mutex<Vec<Line>>);

/// Buffers larger than this are not kept.
pub(super) const SPARE_LARGEST: usize = 4096;

impl Spare {
    pub(super) fn take(&self) -> Line {
        self.0
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default()
    }

    /// Keeps up to `most` of `lines` (emptied), drops the rest; empties
    /// `lines`.
    pub(super) fn give(&self, lines: &mut Vec<Line>, most: usize) {
        if let Ok(mut spare) = self.0.lock() {
            let room = most.saturating_sub(spare.len());
            let keep = lines
                .drain(..)
                .filter(|l| l.capacity() <= SPARE_LARGEST)
                .take(room)
                .map(|mut l| {
                    l.clear();
                    l
                });
            spare.extend(keep);
        }
        lines.clear();
    }
}
