//! Fresh output buffers filled chunk by chunk, without a serial zero-fill first.
//!
//! `vec![0.0; len]` zeroes the whole buffer on the calling thread before a parallel kernel
//! overwrites it: for the MNIST CNN's first activations that was 2% of a training step, with the
//! other threads idle meanwhile. Here each task zeroes only its own chunk, just before filling
//! it, so the zeroing runs in parallel and the kernel's writes then hit cache.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// A vector of `chunks · chunk_len` floats whose chunk `i` is `f(i, chunk)` applied to a zeroed
/// chunk, on all threads when `parallel` (in order on this thread otherwise).
///
/// # Examples
///
/// ```
/// use striate::kernels::fill::filled_by_chunks;
///
/// let v = filled_by_chunks(3, 2, true, |i, chunk| chunk[0] = i as f32 + 1.0);
/// assert_eq!(v, [1.0, 0.0, 0.0, 2.0, 0.0, 0.0]);
/// ```
pub fn filled_by_chunks(
    chunk_len: usize,
    chunks: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    let len = chunk_len * chunks;
    let mut out = Vec::<f32>::with_capacity(len);
    if len == 0 {
        return out;
    }
    let fill = |(i, chunk): (usize, &mut [MaybeUninit<f32>])| {
        for value in chunk.iter_mut() {
            value.write(0.0);
        }
        // SAFETY: every element of `chunk` was initialised just above, and `MaybeUninit<f32>`
        // has the layout of `f32`.
        let chunk = unsafe { &mut *(chunk as *mut [MaybeUninit<f32>] as *mut [f32]) };
        f(i, chunk);
    };
    let spare = &mut out.spare_capacity_mut()[..len];
    if parallel {
        spare.par_chunks_mut(chunk_len).enumerate().for_each(fill);
    } else {
        spare.chunks_mut(chunk_len).enumerate().for_each(fill);
    }
    // SAFETY: the chunks cover `0..len` (`len` is a multiple of `chunk_len`) and each was
    // initialised by `fill`; had `f` panicked we would not be here.
    unsafe { out.set_len(len) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_starts_zeroed_and_lands_in_place() {
        for parallel in [false, true] {
            let v = filled_by_chunks(4, 50, parallel, |i, chunk| {
                assert!(chunk.iter().all(|&x| x == 0.0));
                chunk[i % 4] = i as f32;
            });
            assert_eq!(v.len(), 200);
            for (i, chunk) in v.chunks(4).enumerate() {
                for (j, &x) in chunk.iter().enumerate() {
                    assert_eq!(x, if j == i % 4 { i as f32 } else { 0.0 });
                }
            }
        }
        assert!(filled_by_chunks(0, 5, true, |_, _| unreachable!()).is_empty());
        assert!(filled_by_chunks(5, 0, true, |_, _| unreachable!()).is_empty());
    }
}
