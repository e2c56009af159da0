//! Runtime selection of the widest vector instructions for striate's own loops, and the small
//! vector helpers built on it.
//!
//! The crate is compiled for the baseline x86-64 target (SSE2), so a plain loop vectorises only
//! 4 lanes wide. [`dispatch`] runs a closure inside a function compiled with AVX-512 (or AVX2 +
//! FMA) enabled when the CPU has it: everything inlined into the closure — which is why the
//! helpers here are `#[inline(always)]` — is compiled for those instructions. The GEMM does its
//! own dispatch.
//!
//! Crate-private: these are the crate's own tools, not an API (a user's code gets the same
//! effect from `#[target_feature]` or `-C target-cpu`).

use std::mem::MaybeUninit;
#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

use rayon::prelude::*;

/// The instruction sets [`dispatch`] can pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// x86-64-v4: AVX-512 F/VL/BW/DQ with FMA.
    Avx512,
    /// x86-64-v3: AVX2 with FMA.
    Avx2,
    /// The compile-time baseline.
    Baseline,
}

impl Level {
    /// The levels from widest to narrowest.
    const ALL: [Level; 3] = [Level::Avx512, Level::Avx2, Level::Baseline];

    /// The name [`ISA_VARIABLE`] accepts for this level.
    pub fn name(self) -> &'static str {
        match self {
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2",
            Level::Baseline => "baseline",
        }
    }

    fn width_rank(self) -> usize {
        Level::ALL.len() - Level::ALL.iter().position(|&l| l == self).expect("listed")
    }
}

/// The environment variable that caps the instruction set striate's kernels use: `avx512`,
/// `avx2` or `baseline`. For reproducing a result from a narrower machine and for testing the
/// narrower paths on a wide one; a level above what the CPU has is reduced to what it has.
pub const ISA_VARIABLE: &str = "STRIATE_ISA";

/// The level the kernels use: the best this CPU supports, capped by [`ISA_VARIABLE`] (read
/// once). An unknown value is reported on stderr, not ignored in silence.
pub fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let requested = std::env::var(ISA_VARIABLE).ok();
            cap_level(detected_level(), requested.as_deref())
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Level::Baseline
    }
}

/// `detected`, lowered to `requested` when that names a narrower level.
fn cap_level(detected: Level, requested: Option<&str>) -> Level {
    let Some(requested) = requested else {
        return detected;
    };
    let wanted = requested.trim().to_ascii_lowercase();
    match Level::ALL.into_iter().find(|level| level.name() == wanted) {
        Some(level) if level.width_rank() <= detected.width_rank() => level,
        Some(level) => {
            eprintln!(
                "striate: {ISA_VARIABLE}={requested} asks for {}, but this CPU supports only {}; using {}",
                level.name(),
                detected.name(),
                detected.name()
            );
            detected
        }
        None => {
            eprintln!(
                "striate: {ISA_VARIABLE}={requested:?} is not one of avx512, avx2, baseline; \
                 using {}",
                detected.name()
            );
            detected
        }
    }
}

/// The best level this CPU supports.
#[cfg(target_arch = "x86_64")]
fn detected_level() -> Level {
    // Everything `run_avx2` enables (the x86-64-v3 set), then AVX-512 on top for
    // `run_avx512`: the SAFETY argument of `dispatch` rests on this list matching the
    // `target_feature` attributes below.
    let v3 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("bmi1")
        && is_x86_feature_detected!("bmi2")
        && is_x86_feature_detected!("lzcnt")
        && is_x86_feature_detected!("popcnt");
    let v4 = v3
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq");
    if v4 {
        Level::Avx512
    } else if v3 {
        Level::Avx2
    } else {
        Level::Baseline
    }
}

/// Runs `f` compiled for the best instruction set of this CPU. Mark the closure
/// `#[inline(always)]` so its body is generated inside the feature-enabled frame:
/// `dispatch(#[inline(always)] || for (y, x) in ys.iter_mut().zip(xs) { *y += 3.0 * x })`.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            // SAFETY: `level` returns Avx512 or Avx2 only when `detected_level` found, on this
            // CPU, every feature that `run_avx512` (respectively `run_avx2`) enables: the
            // environment variable can only lower the level (`cap_level`).
            Level::Avx512 => return unsafe { run_avx512(f) },
            Level::Avx2 => return unsafe { run_avx2(f) },
            Level::Baseline => {}
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,popcnt")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Asks the CPU to bring `data` into the L2 cache ahead of use: for a plane the next step of a
/// kernel will read while the current one computes from cache, which otherwise stalls on the
/// first touch of every line (the hardware prefetchers idle while the kernel reads no memory).
#[inline]
pub fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(16) {
        // SAFETY: a prefetch is a hint that never faults, and SSE is in the x86-64 baseline.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr() as *const i8
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Prefetches into L2 share `index` of `count` equal shares of `data`'s cache lines: a kernel
/// that walks `count` tiles asks for the data of its next call a few lines per tile. All at
/// once, the requests mostly waited on memory together and the first reads of that data
/// stalled anyway.
pub fn prefetch_share(data: &[f32], index: usize, count: usize) {
    prefetch(&data[line_share(data.len(), index, count)]);
}

/// The floats of share `index` of `count` of `len` floats split in whole 16-float lines; the
/// shares tile `0..len` in order (some empty when there are fewer lines than shares).
pub(crate) fn line_share(len: usize, index: usize, count: usize) -> std::ops::Range<usize> {
    let (lines, count) = (len.div_ceil(16), count.max(1));
    let end = ((index + 1) * lines / count * 16).min(len);
    (index * lines / count * 16).min(end)..end
}

/// Asks the CPU to bring the cache line holding `p` into L1: a hint that never faults, so `p`
/// need not point into anything.
#[inline(always)]
pub(crate) fn prefetch_line(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    prefetch_with_hint::<{ std::arch::x86_64::_MM_HINT_T0 }>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the CPU to fetch the cache line holding `p` into L2 but not L1: for data read far
/// enough ahead (tens of thousands of cycles) that in L1 it would only push out what is read
/// meanwhile. A hint that never faults, like [`prefetch_line`].
#[inline(always)]
pub(crate) fn prefetch_line_l2(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    prefetch_with_hint::<{ std::arch::x86_64::_MM_HINT_T1 }>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The prefetch instruction with locality hint `HINT` (`_MM_HINT_T0`, `_T1`, ...).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_with_hint<const HINT: i32>(p: *const f32) {
    // SAFETY: a prefetch is a hint that never faults, and SSE is in the x86-64 baseline.
    unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(p as *const i8) };
}

/// Copies `src` into `dst` (equal lengths). Rows of images are short (14 to 224 floats), where
/// a call to libc's `memcpy` costs more than the copy: those go through blocks of 16, 8 or 4
/// floats the compiler keeps inline, the last block overlapping the one before it instead of a
/// float-by-float tail (MNIST's 28 and 14, or 56, are not multiples of 16); long slices still
/// use `memcpy`.
///
/// # Panics
///
/// If the lengths differ.
#[inline(always)]
pub fn copy_row(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "copy_row: lengths differ");
    match dst.len() {
        512.. => dst.copy_from_slice(src),
        16.. => copy_blocks::<16>(dst, src),
        8.. => copy_blocks::<8>(dst, src),
        4.. => copy_blocks::<4>(dst, src),
        _ => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s;
            }
        }
    }
}

/// `dst = src` (equal lengths of at least `B`) in blocks of `B`, the last one ending at the end.
#[inline(always)]
fn copy_blocks<const B: usize>(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    let block = |dst: &mut [f32], src: &[f32], at: usize| {
        let values: [f32; B] = src[at..at + B].try_into().expect("a whole block");
        dst[at..at + B].copy_from_slice(&values);
    };
    for at in (0..n - B).step_by(B) {
        block(dst, src, at);
    }
    block(dst, src, n - B);
}

/// Runs `f(offset, chunk)` over disjoint chunks of `data` (in parallel for long slices), each
/// inside [`dispatch`], so elementwise loops use the CPU's widest vectors.
pub fn par_chunks_dispatch(data: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    const CHUNK: usize = 16 * 1024;
    if data.len() >= 4 * CHUNK {
        data.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, chunk)| {
                dispatch(
                    #[inline(always)]
                    || f(i * CHUNK, chunk),
                )
            });
    } else {
        dispatch(
            #[inline(always)]
            || f(0, data),
        );
    }
}

/// Runs `f(offset, chunks)` over matching chunks of `K` slices of one length (the same range
/// of each), in parallel for long slices, each inside [`dispatch`]: elementwise updates of
/// several arrays at once, such as an optimizer's parameter and its state.
///
/// # Panics
///
/// If the slices' lengths differ.
pub fn par_chunks_mut_dispatch<const K: usize>(
    slices: [&mut [f32]; K],
    f: impl Fn(usize, [&mut [f32]; K]) + Sync + Send,
) {
    const CHUNK: usize = 16 * 1024;
    let len = slices.first().map_or(0, |s| s.len());
    assert!(
        slices.iter().all(|s| s.len() == len),
        "par_chunks_mut_dispatch: slices of different lengths"
    );
    if len < 4 * CHUNK {
        dispatch(
            #[inline(always)]
            || f(0, slices),
        );
        return;
    }
    let mut parts = slices.map(|s| s.chunks_mut(CHUNK));
    let chunks: Vec<[&mut [f32]; K]> = (0..len.div_ceil(CHUNK))
        .map(|_| std::array::from_fn(|k| parts[k].next().expect("a chunk of each slice")))
        .collect();
    chunks.into_par_iter().enumerate().for_each(|(i, chunk)| {
        dispatch(
            #[inline(always)]
            || f(i * CHUNK, chunk),
        )
    });
}

/// Builds a vector of `len` values by letting `fill` write every slot of disjoint chunks, in
/// parallel for long vectors, without zero-filling first.
///
/// # Safety
///
/// `fill(start, chunk)` must initialise every element of `chunk`: the vector's length is set
/// to `len` afterwards, and a slot left unwritten would be read as uninitialised memory.
pub(crate) unsafe fn par_fill_new(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let mut out = crate::util::memory::vec_for(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    if len >= 2 * chunk {
        spare
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, part)| fill(i * chunk, part));
    } else {
        fill(0, spare);
    }
    // SAFETY: the caller's contract: `fill` wrote every slot of every chunk, and the chunks
    // together cover `0..len`.
    unsafe { out.set_len(len) };
    out
}

/// The sum of `N` partial sums (a power of two), halving pairwise (so the adds vectorise).
#[inline(always)]
fn fold_lanes<T: Copy + std::ops::AddAssign, const N: usize>(mut acc: [T; N]) -> T {
    let mut width = N;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            let upper = acc[l + width];
            acc[l] += upper;
        }
    }
    acc[0]
}

/// `Σ x_i` with 64 independent partial sums, so the loop vectorises without reordering a
/// single f32 accumulator (which the compiler may not do) and hides the add latency.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    const LANES: usize = 64;
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    fold_lanes(acc) + tail
}

/// Partial sums of the f64 reductions below: four AVX-512 vectors of doubles in flight, so the
/// adds' latency is hidden.
const F64_LANES: usize = 32;

/// `Σ term(x_i)` in f64 with [`F64_LANES`] independent partial sums (so the loop vectorises and
/// hides the add latency), folded pairwise, then the tail in order. Call inside [`dispatch`].
#[inline(always)]
fn sum_f64_of(x: &[f32], term: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0.0f64; F64_LANES];
    let mut chunks = x.chunks_exact(F64_LANES);
    for c in &mut chunks {
        for l in 0..F64_LANES {
            acc[l] += term(c[l]);
        }
    }
    chunks
        .remainder()
        .iter()
        .fold(fold_lanes(acc), |s, &v| s + term(v))
}

/// `Σ x_i` in f64 (exact sums of many floats, as batch statistics need). Call inside
/// [`dispatch`].
#[inline(always)]
pub fn sum_f64(x: &[f32]) -> f64 {
    sum_f64_of(x, |v| v as f64)
}

/// `Σ (x_i − mean)²` in f64: a variance's numerator about a known mean (no cancellation).
/// Call inside [`dispatch`].
#[inline(always)]
pub fn squared_deviations_f64(x: &[f32], mean: f64) -> f64 {
    sum_f64_of(x, |v| {
        let d = v as f64 - mean;
        d * d
    })
}

/// `Σ term(a_i, b_i)` with each term in f32 and the sum in f64, as [`sum_f64_of`]. Call inside
/// [`dispatch`].
#[inline(always)]
pub fn sum_f64_of_pairs(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f64 {
    assert_eq!(a.len(), b.len(), "sum_f64_of_pairs: lengths");
    let mut acc = [0.0f64; F64_LANES];
    let (mut ca, mut cb) = (a.chunks_exact(F64_LANES), b.chunks_exact(F64_LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..F64_LANES {
            acc[l] += term(x[l], y[l]) as f64;
        }
    }
    ca.remainder()
        .iter()
        .zip(cb.remainder())
        .fold(fold_lanes(acc), |s, (&x, &y)| s + term(x, y) as f64)
}

/// `Σ a_i·b_i` with 64 independent partial sums (as [`sum`]), folded pairwise. Call inside
/// [`dispatch`].
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 64;
    assert_eq!(a.len(), b.len(), "dot: lengths");
    let mut acc = [0.0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            // (Not `mul_add`: without FMA, as on the portable baseline, it is a library call.)
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    fold_lanes(acc) + tail
}

/// Whether every value is finite, exactly (no sum that could overflow): the largest exponent
/// field, an integer maximum the compiler vectorises, is all ones only for infinities and NaN.
/// Call inside [`dispatch`] for the widest vectors.
#[inline(always)]
pub fn all_finite(x: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    x.iter().fold(0u32, |m, v| m.max(v.to_bits() & EXPONENT)) < EXPONENT
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_shares_tile_the_data_in_whole_lines() {
        for len in [0, 1, 15, 16, 17, 100, 3136] {
            for count in [0, 1, 2, 3, 7, 64, 300] {
                let mut next = 0;
                for index in 0..count.max(1) {
                    let share = super::line_share(len, index, count);
                    assert_eq!(share.start, next, "len {len}, count {count}, share {index}");
                    assert!(
                        share.start.is_multiple_of(16)
                            && (share.end.is_multiple_of(16) || share.end == len)
                    );
                    next = share.end;
                }
                assert_eq!(next, len, "len {len}, count {count}");
            }
        }
    }

    #[test]
    fn copy_row_copies_every_length() {
        for n in 0..600 {
            let src: Vec<f32> = (0..n).map(|i| i as f32 + 0.5).collect();
            let mut dst = vec![f32::NAN; n];
            super::copy_row(&mut dst, &src);
            assert_eq!(dst, src, "length {n}");
        }
    }

    #[test]
    fn the_isa_variable_only_lowers_the_level() {
        assert_eq!(cap_level(Level::Avx512, None), Level::Avx512);
        assert_eq!(cap_level(Level::Avx512, Some("avx2")), Level::Avx2);
        assert_eq!(cap_level(Level::Avx512, Some(" AVX2 ")), Level::Avx2);
        assert_eq!(cap_level(Level::Avx512, Some("baseline")), Level::Baseline);
        assert_eq!(cap_level(Level::Avx2, Some("avx512")), Level::Avx2);
        assert_eq!(cap_level(Level::Avx2, Some("sse9")), Level::Avx2);
    }

    use super::*;

    #[test]
    fn dispatch_runs_the_closure() {
        let mut y = vec![1.0f32; 100];
        let x = vec![2.0f32; 100];
        dispatch(
            #[inline(always)]
            || {
                for (y, x) in y.iter_mut().zip(&x) {
                    *y += 3.0 * x;
                }
            },
        );
        assert!(y.iter().all(|&v| v == 7.0));
    }

    #[test]
    fn all_finite_finds_every_non_finite_value_and_only_those() {
        let mut x = vec![1.0f32; 100];
        x[3] = f32::MAX;
        x[4] = -f32::MAX;
        x[5] = f32::MIN_POSITIVE / 2.0;
        assert!(all_finite(&x) && all_finite(&[]));
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN] {
            for at in [0, 63, 99] {
                let mut y = x.clone();
                y[at] = bad;
                assert!(!all_finite(&y), "{bad} at {at}");
            }
        }
    }

    #[test]
    fn sum_matches_sequential() {
        for len in [0, 1, 63, 64, 65, 200, 1000] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let want: f64 = a.iter().map(|&x| x as f64).sum();
            assert!((sum(&a) as f64 - want).abs() < 1e-4, "len {len}");
        }
    }
}
