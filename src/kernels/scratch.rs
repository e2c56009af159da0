//! Per-thread scratch buffers that survive across calls.
//!
//! Large fresh allocations page-fault on first touch; on this machine class that made even
//! PyTorch's timings jump 2x between processes. Kernels that need a recurring work area (im2col
//! columns) borrow it from here instead: each rayon worker keeps its own, grown on demand and
//! reused by every later step.

use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer of at least `len` elements (contents
/// unspecified). Re-entrant calls get a fresh buffer rather than panicking.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
            f(&mut buffer[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_grows() {
        let first = with_scratch(16, |b| b.as_ptr() as usize);
        let again = with_scratch(8, |b| b.as_ptr() as usize);
        assert_eq!(first, again);
        with_scratch(4, |outer| {
            with_scratch(4, |inner| assert_ne!(outer.as_ptr(), inner.as_ptr()));
        });
    }
}
