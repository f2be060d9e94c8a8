//! Giving freed heap pages back to the OS, for the binary and the
//! `limits-memory` bench (`#[path]`-included there). Not in the library,
//! which forbids `unsafe`.

/// What the binary registers with `limits::on_prune`: after the limiters
/// drop idle keys, the allocator keeps the freed pages otherwise (after
/// pruning a million users ~95 MiB stayed with mimalloc, 33–66 MiB with
/// glibc; `benches/README.md`).
pub fn release_free_memory() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: mi_collect takes no pointers and may be called from any thread.
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
    #[cfg(all(not(feature = "mimalloc"), target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and is thread-safe (glibc).
    unsafe {
        libc::malloc_trim(0)
    };
}
