//! The `file` and `stdout` sinks: lines written in batches, size rotation.

use std::io::Write;
use std::path::PathBuf;

use super::Line;

pub(super) fn open(path: &std::path::Path) -> Option<std::fs::File> {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the audit file");
            None
        }
    }
}

pub(super) fn write_lines(w: &mut impl Write, batch: &[Line]) -> bool {
    let mut buf = Vec::with_capacity(batch.iter().map(|l| l.len() + 1).sum());
    for line in batch {
        buf.extend_from_slice(line);
        buf.push(b'\n');
    }
    w.write_all(&buf).and_then(|()| w.flush()).is_ok()
}

pub(super) fn write_file(
    file: &mut Option<std::fs::File>,
    path: &std::path::Path,
    max_bytes: u64,
    keep: u32,
    batch: &[Line],
) -> bool {
    if file.is_none() {
        *file = open(path);
    }
    let Some(f) = file.as_mut() else {
        return false;
    };
    if max_bytes > 0 && f.metadata().map(|m| m.len()).unwrap_or(0) >= max_bytes {
        rotate(path, keep);
        *file = open(path);
    }
    match file.as_mut() {
        Some(f) => write_lines(f, batch),
        None => false,
    }
}

/// `path` -> `path.1` -> ... -> `path.keep` (the oldest is removed).
fn rotate(path: &std::path::Path, keep: u32) {
    let numbered = |n: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    if keep == 0 {
        let _ = std::fs::remove_file(path);
        return;
    }
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let _ = std::fs::rename(numbered(n), numbered(n + 1));
    }
    if let Err(e) = std::fs::rename(path, numbered(1)) {
        tracing::error!(path = %path.display(), error = %e, "cannot rotate the audit file");
    }
}
