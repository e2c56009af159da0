//! Keeping freed memory for reuse across training steps.
//!
//! Every step allocates the same large buffers (activations, gradients, pooling indices) and
//! frees them when its tape drops. glibc's malloc returns large free blocks to the operating
//! system (trimming the heap, or unmapping blocks above its mmap threshold), so the next step
//! page-faults all of that memory in again: on the MNIST CNN that was a fifth of the step. Once
//! per process, when the first tape is created, striate asks glibc to keep up to 1 GiB of freed
//! memory and to serve blocks below 32 MiB from the heap, so recurring buffers are reused.
//!
//! Set the environment variable `STRIATE_MALLOC_TUNING=0` to leave malloc's settings alone.
//! On other platforms this does nothing.

use std::sync::Once;

/// Applies the malloc settings described in the module docs, once per process.
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
    // glibc's <malloc.h> parameter numbers.
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // SAFETY: mallopt only changes allocator tuning parameters; both values are in the ranges
    // glibc documents (the mmap threshold at most 32 MiB on 64-bit targets).
    unsafe {
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune() {}
