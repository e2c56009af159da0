//! Fresh output buffers filled chunk by chunk, without a serial zero-fill first.
//!
//! `vec![0.0; len]` zeroes the whole buffer on the calling thread before a parallel kernel
//! overwrites it: for the MNIST CNN's first activations that was 2% of a training step, with the
//! other threads idle meanwhile. Here each task zeroes only its own chunk, just before filling
//! it, so the zeroing runs in parallel and the kernel's writes then hit cache.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::util::threads::split;

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
    let (values, _) =
        filled_by_chunk_pairs::<f32, ()>(chunk_len, 0, chunks, parallel, |i, a, _| f(i, a));
    values
}

/// A vector of `chunks · chunk_len` floats whose chunk `i` is written by `f(i, chunk)`, followed
/// by `zeros` zeros, in one allocation, on all threads when `parallel`: for outputs that a
/// kernel overwrites whole, which [`filled_by_chunks`] would zero first for nothing. The
/// pointwise convolution's forward on channel blocks spent 6.7% of its time in that memset;
/// without it, alternated in one process (Intel Xeon model 167, 2 threads): S5 on channel
/// blocks +4.1% and +7.3%, ResNet-18 on one image +3.3%, S4 on channel blocks level.
///
/// In builds with debug assertions every chunk is first filled with a NaN of a payload no
/// arithmetic produces, and any element still holding it after `f` panics, naming it: the
/// test suite checks the contract below on every shape it runs.
///
/// # Safety
///
/// `f` writes every element of its chunk and reads none before writing it: the chunk starts
/// uninitialised.
pub(crate) unsafe fn written_by_chunks_then_zeros(
    chunk_len: usize,
    chunks: usize,
    zeros: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let len = chunk_len * chunks;
    // Huge pages where the system allows: convolutions read these rows a block apart.
    let mut values = crate::util::memory::vec_for(len + zeros);
    let spare = &mut values.spare_capacity_mut()[..len + zeros];
    let (body, tail) = spare.split_at_mut(len);
    zeroed(tail);
    if chunk_len > 0 {
        let fill = |(i, chunk): (usize, &mut [MaybeUninit<f32>])| {
            if cfg!(debug_assertions) {
                chunk.fill(MaybeUninit::new(UNWRITTEN));
            }
            f(i, &mut *chunk);
            if cfg!(debug_assertions) {
                // SAFETY: the chunk was initialised with `UNWRITTEN` above, and `f` writes
                // floats only.
                let chunk = unsafe { &*(chunk as *const [MaybeUninit<f32>] as *const [f32]) };
                let left = chunk
                    .iter()
                    .position(|v| v.to_bits() == UNWRITTEN.to_bits());
                if let Some(at) = left {
                    panic!("written_by_chunks_then_zeros: element {at} of chunk {i} not written");
                }
            }
        };
        if parallel {
            split(|| body.par_chunks_mut(chunk_len).enumerate().for_each(fill));
        } else {
            body.chunks_mut(chunk_len).enumerate().for_each(fill);
        }
    }
    // SAFETY: `zeroed` initialised the tail and `f` every element of every chunk of the body
    // (the caller's contract), which together cover `0..len + zeros`; had `f` panicked we
    // would not be here.
    unsafe { values.set_len(len + zeros) };
    values
}

/// What [`written_by_chunks_then_zeros`] puts in its chunks first in builds with debug
/// assertions: a quiet NaN whose payload no operation on ordinary NaNs produces.
const UNWRITTEN: f32 = f32::from_bits(0x7fd5_a5a5);

/// Two vectors filled chunk by chunk together, as [`filled_by_chunks`]: chunk `i` of each
/// (`a_len` and `b_len` elements, starting at their default value) is filled by
/// `f(i, a_chunk, b_chunk)`. For kernels with two outputs, such as max pooling's values and
/// argmax indices.
///
/// # Examples
///
/// ```
/// use striate::kernels::fill::filled_by_chunk_pairs;
///
/// let (a, b) = filled_by_chunk_pairs(2, 1, 2, true, |i, a: &mut [f32], b: &mut [u32]| {
///     a[1] = 1.0;
///     b[0] = i as u32 + 7;
/// });
/// assert_eq!((a, b), (vec![0.0, 1.0, 0.0, 1.0], vec![7, 8]));
/// ```
pub fn filled_by_chunk_pairs<A, B>(
    a_len: usize,
    b_len: usize,
    chunks: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync + Send,
) -> (Vec<A>, Vec<B>)
where
    A: Copy + Default + Send,
    B: Copy + Default + Send,
{
    let (mut a, mut b) = (
        Vec::<A>::with_capacity(a_len * chunks),
        Vec::<B>::with_capacity(b_len * chunks),
    );
    if chunks == 0 || a_len + b_len == 0 {
        return (a, b);
    }
    type Chunk<'a, T> = &'a mut [MaybeUninit<T>];
    let fill = |(i, (a, b)): (usize, (Chunk<A>, Chunk<B>))| f(i, zeroed(a), zeroed(b));
    // Chunks of at least one element each, so that both sides yield `chunks` of them (the
    // side of length 0 hands out empty slices).
    let a_spare = &mut a.spare_capacity_mut()[..a_len * chunks];
    let b_spare = &mut b.spare_capacity_mut()[..b_len * chunks];
    if parallel {
        split(|| {
            chunks_of(a_spare, a_len, chunks)
                .into_par_iter()
                .zip(chunks_of(b_spare, b_len, chunks))
                .enumerate()
                .for_each(fill)
        });
    } else {
        chunks_of(a_spare, a_len, chunks)
            .into_iter()
            .zip(chunks_of(b_spare, b_len, chunks))
            .enumerate()
            .for_each(fill);
    }
    // SAFETY: the chunks cover `0..len` of each vector and each was initialised by `zeroed`
    // in `fill`; had `f` panicked we would not be here.
    unsafe {
        a.set_len(a_len * chunks);
        b.set_len(b_len * chunks);
    }
    (a, b)
}

/// `spare` cut into `chunks` slices of `len` (all empty when `len` is 0).
fn chunks_of<T>(spare: &mut [T], len: usize, chunks: usize) -> Vec<&mut [T]> {
    if len == 0 {
        return (0..chunks).map(|_| <&mut [T]>::default()).collect();
    }
    spare.chunks_mut(len).collect()
}

/// `chunk` set to the default value (zero for numbers), as an initialised slice.
fn zeroed<T: Copy + Default>(chunk: &mut [MaybeUninit<T>]) -> &mut [T] {
    for value in chunk.iter_mut() {
        value.write(T::default());
    }
    // SAFETY: every element of `chunk` was initialised just above, and `MaybeUninit<T>` has
    // the layout of `T`.
    unsafe { &mut *(chunk as *mut [MaybeUninit<T>] as *mut [T]) }
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

    #[test]
    fn written_chunks_land_in_place_before_the_zeros() {
        for parallel in [false, true] {
            let write = |i: usize, chunk: &mut [MaybeUninit<f32>]| {
                for (j, x) in chunk.iter_mut().enumerate() {
                    x.write((10 * i + j) as f32);
                }
            };
            // SAFETY: `write` writes every element of its chunk and reads none.
            let v = unsafe { written_by_chunks_then_zeros(3, 20, 5, parallel, write) };
            let expected: Vec<f32> = (0..20)
                .flat_map(|i| (0..3).map(move |j| (10 * i + j) as f32))
                .chain([0.0; 5])
                .collect();
            assert_eq!(v, expected);
        }
    }

    /// The contract's check in builds with debug assertions (as `cargo test` builds).
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "element 2 of chunk 7 not written")]
    fn a_chunk_left_partly_unwritten_panics_under_debug_assertions() {
        let write = |i: usize, chunk: &mut [MaybeUninit<f32>]| {
            for (j, x) in chunk.iter_mut().enumerate() {
                if (i, j) != (7, 2) {
                    x.write(1.0);
                }
            }
        };
        // SAFETY: not the contract (element 2 of chunk 7 is skipped), but under debug
        // assertions, which this test requires, the chunks are initialised first: nothing
        // reads uninitialised memory, and the check reports the element.
        let _ = unsafe { written_by_chunks_then_zeros(4, 10, 0, false, write) };
    }

    #[test]
    fn pairs_fill_both_vectors_chunk_by_chunk() {
        for parallel in [false, true] {
            let (a, b) =
                filled_by_chunk_pairs(3, 2, 40, parallel, |i, a: &mut [f32], b: &mut [u32]| {
                    assert!(a.iter().all(|&x| x == 0.0) && b.iter().all(|&x| x == 0));
                    a[i % 3] = i as f32;
                    b[1] = i as u32;
                });
            assert_eq!((a.len(), b.len()), (120, 80));
            for i in 0..40 {
                assert_eq!(a[3 * i + i % 3], i as f32);
                assert_eq!(b[2 * i..2 * i + 2], [0, i as u32]);
            }
        }
    }
}
