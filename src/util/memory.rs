//! Keeping freed memory for reuse across training steps: the mechanism behind
//! [`crate::keep_freed_memory`], which documents when and why to call it.

use std::sync::Once;

/// Applies the malloc settings [`crate::keep_freed_memory`] describes, once per process.
pub(crate) fn keep_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("STRIATE_MALLOC_TUNING").is_some_and(|v| v == "0") {
            return;
        }
        tune();
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune() {
    use libc::{M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, mallopt};
    // SAFETY: mallopt only changes allocator tuning parameters, and may be called at any time
    // from any thread; both values are in the ranges glibc documents (the mmap threshold at
    // most 32 MiB on 64-bit targets).
    unsafe {
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune() {}
