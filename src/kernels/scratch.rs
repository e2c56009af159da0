//! Per-thread scratch buffers that survive across calls.
//!
//! Large fresh allocations page-fault on first touch; on this machine class that made even
//! PyTorch's timings jump 2x between processes. Kernels that need a recurring work area (im2col
//! columns, padded planes, wide output grids) borrow it from here instead: each rayon worker
//! keeps its own, grown on demand and reused by every later step.
//!
//! Every part handed out starts on a cache line (a `Vec<f32>` from the allocator is only 16-byte
//! aligned, so 64-byte vector loads from rows that happen to be misaligned straddle two lines),
//! with a spare line between parts so that streams read side by side do not start at the same
//! offset within a 4 KiB page.

use std::cell::RefCell;

/// Floats per cache line.
pub(crate) const LINE: usize = 16;

thread_local! {
    /// Buffers not in use on this thread; a call takes one and gives it back, so nested calls
    /// (a fused kernel holding one work area while the convolution inside it borrows another)
    /// each keep a buffer of their own across steps.
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a scratch buffer of this thread of at least `len` elements (contents
/// unspecified), starting on a cache line. Nested calls get distinct buffers.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_scratch_parts([len], |[buffer]| f(buffer))
}

/// Runs `f` with `N` disjoint parts of a scratch buffer of this thread, of the lengths asked
/// (contents unspecified), each starting on a cache line, with a spare line between
/// consecutive parts (so parts a multiple of 4 KiB long do not start at the same page offset).
pub fn with_scratch_parts<const N: usize, R>(
    lens: [usize; N],
    f: impl FnOnce([&mut [f32]; N]) -> R,
) -> R {
    let mut starts = [0usize; N];
    let mut end = 0usize;
    for (i, (&len, start)) in lens.iter().zip(&mut starts).enumerate() {
        *start = end.next_multiple_of(LINE) + if i > 0 { LINE } else { 0 };
        end = *start + len;
    }
    // Room to move the whole layout onto a line boundary.
    let total = end + LINE;
    let mut buffer = SCRATCH
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_default();
    if buffer.len() < total {
        // A fresh buffer rather than growing this one: its contents are unspecified, and a new
        // allocation can take huge pages before it is first touched.
        buffer = crate::util::memory::vec_filled(total, 0.0);
    }
    let shift = buffer
        .as_ptr()
        .align_offset(LINE * size_of::<f32>())
        .min(LINE);
    let mut rest = &mut buffer[shift..];
    let mut taken = 0;
    let parts = std::array::from_fn(|i| {
        let skip = starts[i] - taken;
        let (part, tail) = std::mem::take(&mut rest)[skip..].split_at_mut(lens[i]);
        rest = tail;
        taken = starts[i] + lens[i];
        part
    });
    let result = f(parts);
    // A buffer lost to a panic in `f` is simply reallocated next time.
    SCRATCH.with(|pool| pool.borrow_mut().push(buffer));
    result
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

    #[test]
    fn parts_are_disjoint_line_aligned_and_staggered() {
        for lens in [[1, 1, 1], [17, 0, 40], [100, 3, 5]] {
            with_scratch_parts(lens, |parts| {
                let mut previous_end = 0;
                for (i, part) in parts.iter().enumerate() {
                    assert_eq!(part.len(), lens[i]);
                    let start = part.as_ptr() as usize;
                    assert_eq!(start % 64, 0, "part {i} of {lens:?} not on a line");
                    if i > 0 {
                        assert!(start >= previous_end + 64, "part {i} not staggered");
                    }
                    previous_end = start + 4 * part.len();
                }
            });
        }
        with_scratch(5, |outer| {
            outer.fill(1.0);
            with_scratch_parts([3, 3], |[a, b]| {
                assert_eq!(a.as_ptr() as usize % 64, 0);
                assert_eq!(b.as_ptr() as usize % 64, 0);
            });
            assert_eq!(outer, &[1.0; 5]);
        });
    }
}
