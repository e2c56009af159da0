//! The vector registers that hand-written kernels are generic over: one AVX-512 register, one
//! AVX2 register, or a single float for CPUs with neither. A kernel written once against
//! [`Vector`] is instantiated per type inside a function compiled for that instruction set
//! ([`with_vector`]), so its register tiles, masks and horizontal sums are explicit rather than
//! left to the auto-vectoriser (which turned the depthwise kernels' tiles into scalar code).
//!
//! Soundness rests on one rule: a value of an instruction set's vector type can only be made by
//! the `unsafe` constructors ([`Vector::zero`], [`Vector::splat`], [`Vector::load`]), whose
//! contract is that the CPU has that instruction set. Holding a value therefore proves it, which
//! is what the safe arithmetic methods rely on.

use crate::util::simd::{Level, level};

/// One vector register of `LANES` floats and the operations the kernels need.
pub(crate) trait Vector: Copy {
    /// Floats per register.
    const LANES: usize;
    /// A choice of lanes, made by [`Vector::first_lanes`].
    type Mask: Copy;

    /// All lanes zero.
    ///
    /// # Safety
    ///
    /// The CPU supports this type's instruction set.
    unsafe fn zero() -> Self;

    /// Every lane `x`.
    ///
    /// # Safety
    ///
    /// As [`Vector::zero`].
    unsafe fn splat(x: f32) -> Self;

    /// The `LANES` floats from `p`.
    ///
    /// # Safety
    ///
    /// As [`Vector::zero`], and `p` starts `LANES` readable floats.
    unsafe fn load(p: *const f32) -> Self;

    /// Writes the lanes to `LANES` floats from `p`.
    ///
    /// # Safety
    ///
    /// `p` starts `LANES` writable floats.
    unsafe fn store(self, p: *mut f32);

    /// The lanes of `mask` from `p`, zero in the others (which are not read).
    ///
    /// # Safety
    ///
    /// As [`Vector::zero`], and the lanes of `mask` from `p` are readable.
    unsafe fn load_masked(p: *const f32, mask: Self::Mask) -> Self;

    /// Writes the first `n` lanes to `p` (all of them from `n >= LANES`; the floats after them
    /// are not written). AVX2 does it with plain stores of 4, 2 and 1 floats: its masked store
    /// (`vmaskmovps`) took ~10 cycles on an AMD Zen 3, where a plain store takes one, and
    /// the short rows of small images end in a partial vector every few vectors.
    ///
    /// # Safety
    ///
    /// The first `n` floats (at most `LANES`) from `p` are writable.
    unsafe fn store_first(self, p: *mut f32, n: usize);

    /// Writes the lanes of `mask` to their places from `p` (the others are not written). For
    /// the few stores at the end of a register tile: AVX2's masked store is slow on AMD CPUs
    /// (see [`Vector::store_first`]).
    ///
    /// # Safety
    ///
    /// The lanes of `mask` from `p` are writable.
    unsafe fn store_masked(self, p: *mut f32, mask: Self::Mask);

    /// `self · b + c`, one rounding.
    fn mul_add(self, b: Self, c: Self) -> Self;

    /// `self · b + c` in the lanes of `mask`, `c` in the others.
    fn mul_add_masked(self, b: Self, c: Self, mask: Self::Mask) -> Self;

    /// `self + b`.
    fn add(self, b: Self) -> Self;

    /// `self − b`.
    fn sub(self, b: Self) -> Self;

    /// The larger of each pair of lanes; which one a NaN lane gives is unspecified (callers
    /// that must propagate NaN check for it separately).
    fn max(self, b: Self) -> Self;

    /// The lanes of `self` and `b` interleaved, `[a0, b0, a1, b1, …]`, as two vectors (the
    /// first holds the pairs of the low half of the lanes).
    fn interleave(self, b: Self) -> (Self, Self);

    /// The inverse of [`Vector::interleave`]: the even lanes of `self` then of `b`, and the odd
    /// lanes likewise (`[x0, x2, …]`, `[x1, x3, …]` of the `2·LANES` floats `self ++ b`).
    fn deinterleave(self, b: Self) -> (Self, Self);

    /// The lanes of `self` moved down by one, the first lane of `next` in the last:
    /// `[x1, x2, …, x(LANES−1), next0]`, the window one float further along `self ++ next`.
    fn slide_one(self, next: Self) -> Self;

    /// Every lane but `first`, `first + period`, `first + 2·period`, … (`period >= 1`).
    fn lanes_skipping(self, first: usize, period: usize) -> Self::Mask;

    /// The lanes of `keep`, in order, moved to the front; the lanes after them unspecified.
    fn compress(self, keep: Self::Mask) -> Self;

    /// [`crate::kernels::relu`] of each lane: zero below zero, NaN and `-0.0` kept.
    fn relu(self) -> Self;

    /// `if_equal` in the lanes where `self == b` (ordered: never at a NaN), `otherwise` in the
    /// others.
    fn select_equal(self, b: Self, if_equal: Self, otherwise: Self) -> Self;

    /// The lanes, whole numbers in `0..2^24`, as `u32` bit patterns: stored with
    /// [`Vector::store`] or [`Vector::store_first`] through a `u32` slice's pointer cast to
    /// `*mut f32`, they write those integers (moves copy bits; nothing reads them as floats).
    fn to_u32_bits(self) -> Self;

    /// The lanes `0..n` (all of them from `n >= LANES`).
    fn first_lanes(self, n: usize) -> Self::Mask;

    /// The lanes `from..to` (none when `from >= to`; `to` at most `LANES` counts).
    fn lanes_between(self, from: usize, to: usize) -> Self::Mask;

    /// The sum of the lanes.
    fn sum(self) -> f32;
}

/// Runs the kernel `f` instantiated for the widest vector type this CPU has (capped by
/// `STRIATE_ISA`), inside a function compiled for its instruction set. Inlined, so that the
/// caller builds `f` where the kernel's frame reads it: a call kept apart copied the kernel's
/// arguments once more (`memcpy`, 1.6% of MNIST inference, most of it from `BlockProduct`).
#[inline(always)]
pub(crate) fn with_vector<R>(f: impl VectorKernel<Output = R>) -> R {
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` reports AVX-512 (with VL, BW, DQ and FMA) only when the CPU has it.
        Level::Avx512 => unsafe { x86::run_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` reports AVX2 (with FMA) only when the CPU has it.
        Level::Avx2 => unsafe { x86::run_avx2(f) },
        _ => f.run::<Scalar>(),
    }
}

/// A kernel generic over the vector type: what [`with_vector`] instantiates. (A closure cannot
/// be generic, hence a trait.)
pub(crate) trait VectorKernel {
    type Output;
    /// The kernel with vectors `V`. Implementations are `#[inline(always)]`, so the body is
    /// compiled inside the instruction set's frame.
    fn run<V: Vector>(self) -> Self::Output;
}

/// One float: the portable fallback.
#[derive(Clone, Copy)]
pub(crate) struct Scalar(f32);

impl Vector for Scalar {
    const LANES: usize = 1;
    type Mask = bool;

    #[inline(always)]
    unsafe fn zero() -> Self {
        Scalar(0.0)
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Scalar(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller's contract.
        Scalar(unsafe { *p })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { *p = self.0 }
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, mask: bool) -> Self {
        // SAFETY: the caller's contract.
        Scalar(if mask { unsafe { *p } } else { 0.0 })
    }
    #[inline(always)]
    unsafe fn store_masked(self, p: *mut f32, mask: bool) {
        if mask {
            // SAFETY: the caller's contract.
            unsafe { *p = self.0 }
        }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        if n >= 1 {
            // SAFETY: the caller's contract.
            unsafe { *p = self.0 }
        }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        // Not `f32::mul_add`: without FMA in the target that is a libm call.
        Scalar(self.0 * b.0 + c.0)
    }
    #[inline(always)]
    fn mul_add_masked(self, b: Self, c: Self, mask: bool) -> Self {
        if mask { self.mul_add(b, c) } else { c }
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Scalar(self.0 + b.0)
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Scalar(self.0 - b.0)
    }
    #[inline(always)]
    fn max(self, b: Self) -> Self {
        Scalar(self.0.max(b.0))
    }
    #[inline(always)]
    fn interleave(self, b: Self) -> (Self, Self) {
        (self, b)
    }
    #[inline(always)]
    fn deinterleave(self, b: Self) -> (Self, Self) {
        (self, b)
    }
    #[inline(always)]
    fn slide_one(self, next: Self) -> Self {
        next
    }
    #[inline(always)]
    fn lanes_skipping(self, first: usize, _period: usize) -> bool {
        first != 0
    }
    #[inline(always)]
    fn compress(self, _keep: bool) -> Self {
        self
    }
    #[inline(always)]
    fn relu(self) -> Self {
        Scalar(crate::kernels::relu(self.0))
    }
    #[inline(always)]
    fn select_equal(self, b: Self, if_equal: Self, otherwise: Self) -> Self {
        if self.0 == b.0 { if_equal } else { otherwise }
    }
    #[inline(always)]
    fn to_u32_bits(self) -> Self {
        Scalar(f32::from_bits(self.0 as u32))
    }
    #[inline(always)]
    fn lanes_between(self, from: usize, to: usize) -> bool {
        from == 0 && to >= 1
    }
    #[inline(always)]
    fn first_lanes(self, n: usize) -> bool {
        n >= 1
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        self.0
    }
}

/// `n` floats from `p` (`n <= LANES`; the others zero and not read).
///
/// # Safety
///
/// As [`Vector::load_masked`].
#[inline(always)]
pub(crate) unsafe fn load<V: Vector>(p: *const f32, n: usize) -> V {
    // SAFETY: the caller's contract; a whole vector when all lanes are asked for.
    unsafe {
        if n >= V::LANES {
            V::load(p)
        } else {
            V::load_masked(p, V::zero().first_lanes(n))
        }
    }
}

/// The even and odd floats of `row[at..at + 2·LANES]`, as two vectors, zero past the row's end
/// (`at` at most the row's length).
///
/// # Safety
///
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn split_pairs<V: Vector>(row: &[f32], at: usize) -> (V, V) {
    let n = row.len() - at;
    // SAFETY: the caller's contract; `n.min(LANES)` floats of `row` from `at`, the rest from
    // `at + LANES`, all within the row.
    unsafe {
        let lo = load::<V>(row.as_ptr().add(at), n.min(V::LANES));
        let hi = if n > V::LANES {
            load::<V>(row.as_ptr().add(at + V::LANES), n - V::LANES)
        } else {
            V::zero()
        };
        lo.deinterleave(hi)
    }
}

/// Splits the `2·m` floats of `row` into its even and odd ones, the first `m` floats of `even`
/// and `odd`.
///
/// # Safety
///
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn deinterleave<V: Vector>(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let m = row.len() / 2;
    assert!(row.len() == 2 * m && even.len() >= m && odd.len() >= m);
    for at in (0..2 * m).step_by(2 * V::LANES) {
        let pairs = ((2 * m - at) / 2).min(V::LANES);
        // SAFETY: the caller's contract; `at < 2m`; `pairs` of `even` and `odd` from `at / 2`,
        // within the slices.
        unsafe {
            let (e, o) = split_pairs::<V>(row, at);
            e.store_first(even.as_mut_ptr().add(at / 2), pairs);
            o.store_first(odd.as_mut_ptr().add(at / 2), pairs);
        }
    }
}

/// [`deinterleave`] into two runs of one buffer: the even floats of `row` (`2·m` of them) to
/// `buffer[even_at..]`, the odd ones to `buffer[odd_at..]` (a row split into its column phases).
///
/// # Safety
///
/// The CPU supports `V`'s instruction set.
///
/// # Panics
///
/// If the two runs of `m` floats overlap or leave `buffer`.
#[inline(always)]
pub(crate) unsafe fn deinterleave_within<V: Vector>(
    row: &[f32],
    buffer: &mut [f32],
    even_at: usize,
    odd_at: usize,
) {
    let m = row.len() / 2;
    let (even, odd) = if even_at < odd_at {
        let (low, high) = buffer.split_at_mut(odd_at);
        (&mut low[even_at..], &mut high[..m])
    } else {
        let (low, high) = buffer.split_at_mut(even_at);
        (&mut high[..m], &mut low[odd_at..odd_at + m])
    };
    // SAFETY: the caller's contract; `deinterleave` checks the runs hold `m` floats each.
    unsafe { deinterleave::<V>(row, even, odd) }
}

/// Transposes the `LANES x LANES` block in the first `LANES` vectors: `log2(LANES)` rounds of
/// interleaving row `i` with row `i + LANES/2` (each round shuffles the index bits once).
#[inline(always)]
fn transpose<V: Vector>(rows: &mut [V; 16]) {
    let half = V::LANES / 2;
    let mut width = 1;
    while width < V::LANES {
        let mut next = *rows;
        for i in 0..half {
            let (low, high) = rows[i].interleave(rows[i + half]);
            next[2 * i] = low;
            next[2 * i + 1] = high;
        }
        *rows = next;
        width *= 2;
    }
}

/// Transposes one square block of a vector's width: row `r < rows` (at most `LANES`) of the
/// block is the first `count` floats at `row(r)`, and the first `stored` values of column
/// `m < count` (position `m` of every row, zero past `rows`) are stored at `column(m)`.
///
/// # Safety
///
/// The CPU supports `V`'s instruction set; `count` floats from each `row(r)` (`r < rows`) are
/// readable and `stored` floats (at most `LANES`) from each `column(m)` (`m < count`) writable.
#[inline(always)]
pub(crate) unsafe fn transpose_block<V: Vector>(
    rows: usize,
    count: usize,
    stored: usize,
    row: impl Fn(usize) -> *const f32,
    column: impl Fn(usize) -> *mut f32,
) {
    // SAFETY: the caller's contract.
    unsafe {
        transpose_block_into::<V>(rows, count, row, |m, vector| {
            if stored >= V::LANES {
                vector.store(column(m));
            } else {
                vector.store_first(column(m), stored);
            }
        })
    }
}

/// [`transpose_block`] handing each column `m < count` (zero past `rows`) to `column(m, ·)`
/// rather than storing it.
///
/// # Safety
///
/// The CPU supports `V`'s instruction set; `count` floats from each `row(r)` (`r < rows`) are
/// readable.
#[inline(always)]
pub(crate) unsafe fn transpose_block_into<V: Vector>(
    rows: usize,
    count: usize,
    row: impl Fn(usize) -> *const f32,
    mut column: impl FnMut(usize, V),
) {
    // SAFETY: the caller's contract; masked-off lanes are not read.
    unsafe {
        let mask = V::zero().first_lanes(count);
        let mut block = [V::zero(); 16];
        for (r, vector) in block.iter_mut().take(rows.min(V::LANES)).enumerate() {
            *vector = V::load_masked(row(r), mask);
        }
        transpose::<V>(&mut block);
        for (m, &vector) in block.iter().take(count).enumerate() {
            column(m, vector);
        }
    }
}

/// A panel from an operand laid out along the depth (the panel's transpose):
/// `out[p·width + j] = src[j·stride + p]` for the `lines` rows `j` the operand has, zero for
/// `lines <= j < width`, at every depth step `p < depth`; a [`transpose_block`] at a time.
/// Lines outside, depth inside: each block of rows streams (for the filter gradient's dY panel
/// the other order, 64 rows at a time, measured 5% slower on the pointwise S5).
///
/// # Safety
///
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn transpose_into_panel<V: Vector>(
    src: &[f32],
    stride: usize,
    lines: usize,
    depth: usize,
    width: usize,
    out: &mut [f32],
) {
    assert!(lines <= width && out.len() >= depth * width);
    assert!(lines == 0 || depth == 0 || src.len() >= (lines - 1) * stride + depth);
    let (src, out) = (src.as_ptr(), out.as_mut_ptr());
    for j in (0..width).step_by(V::LANES) {
        let stored = (width - j).min(V::LANES);
        for p in (0..depth).step_by(V::LANES) {
            let count = (depth - p).min(V::LANES);
            // SAFETY: the caller's contract for `V`; line `j + r < lines` holds depth steps
            // `p .. p + count <= depth` (asserted above); each store writes `stored` floats from
            // `(p + m)·width + j`, within step `p + m < depth` as `j + stored <= width`.
            unsafe {
                transpose_block::<V>(
                    lines.saturating_sub(j),
                    count,
                    stored,
                    |r| src.add((j + r) * stride + p),
                    |m| out.add((p + m) * width + j),
                );
            }
        }
    }
}

/// [`transpose_into_panel`] as a kernel for [`with_vector`]: the one place the GEMM's packing
/// and the filter gradient's panels (of `dY`, and of its transposed sums) call it from.
pub(crate) struct TransposeIntoPanel<'a> {
    pub src: &'a [f32],
    pub stride: usize,
    pub lines: usize,
    pub depth: usize,
    pub width: usize,
    pub out: &'a mut [f32],
}

impl VectorKernel for TransposeIntoPanel<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let TransposeIntoPanel {
            src,
            stride,
            lines,
            depth,
            width,
            out,
        } = self;
        // SAFETY: `with_vector` runs this only with a vector type the CPU supports.
        unsafe { transpose_into_panel::<V>(src, stride, lines, depth, width, out) }
    }
}

/// The inverse of [`deinterleave`]: fills the `2·m` floats of `row` with the first `m` floats
/// of `even` and `odd` in turn, `[e0, o0, e1, o1, …]`.
///
/// # Safety
///
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn interleave<V: Vector>(even: &[f32], odd: &[f32], row: &mut [f32]) {
    let m = row.len() / 2;
    assert!(row.len() == 2 * m && even.len() >= m && odd.len() >= m);
    for at in (0..m).step_by(V::LANES) {
        let pairs = (m - at).min(V::LANES);
        // SAFETY: the caller's contract; `pairs` floats of `even` and `odd` from `at`, `2·pairs`
        // of `row` from `2·at`, all within the slices.
        unsafe {
            let e = load::<V>(even.as_ptr().add(at), pairs);
            let o = load::<V>(odd.as_ptr().add(at), pairs);
            let (lo, hi) = e.interleave(o);
            let out = row.as_mut_ptr().add(2 * at);
            lo.store_first(out, 2 * pairs);
            if 2 * pairs > V::LANES {
                hi.store_first(out.add(V::LANES), 2 * pairs - V::LANES);
            }
        }
    }
}

/// The vector types themselves, for kernels written directly in intrinsics that run a generic
/// step at their own level (the GEMM micro-kernels' epilogue pass).
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Vector, VectorKernel};

    /// For each mask of 8 lanes, the indices of its lanes in order, four bits each (lane `k`
    /// of the result reads bits `4k..4k + 4`): [`Vector::compress`] on AVX2.
    static COMPRESS_INDICES: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut mask = 0;
        while mask < 256 {
            let (mut packed, mut kept, mut lane) = (0u32, 0, 0);
            while lane < 8 {
                if mask >> lane & 1 == 1 {
                    packed |= (lane as u32) << (4 * kept);
                    kept += 1;
                }
                lane += 1;
            }
            table[mask] = packed;
            mask += 1;
        }
        table
    };

    /// Runs `f` with AVX-512 vectors.
    ///
    /// # Safety
    ///
    /// The CPU has every feature enabled here (what `Level::Avx512` guarantees). The set must
    /// include AVX-512VL: without it LLVM may only use registers 0–15 around 128/256-bit
    /// instructions and spills tiles to the stack.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    pub(super) unsafe fn run_avx512<K: VectorKernel>(f: K) -> K::Output {
        f.run::<Avx512>()
    }

    /// Runs `f` with AVX2 vectors.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_avx2<K: VectorKernel>(f: K) -> K::Output {
        f.run::<Avx2>()
    }

    /// One AVX-512 register.
    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    // SAFETY (every `unsafe` block in this impl): a value of `Avx512` exists only if the CPU has
    // AVX-512F, VL, BW and DQ (the constructors' contract), which the intrinsics require; loads
    // and stores are covered by the callers' pointer contracts.
    impl Vector for Avx512 {
        const LANES: usize = 16;
        type Mask = __mmask16;

        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx512(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            Avx512(unsafe { _mm512_set1_ps(x) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, mask: __mmask16) -> Self {
            Avx512(unsafe { _mm512_maskz_loadu_ps(mask, p) })
        }
        #[inline(always)]
        unsafe fn store_masked(self, p: *mut f32, mask: __mmask16) {
            unsafe { _mm512_mask_storeu_ps(p, mask, self.0) }
        }
        #[inline(always)]
        unsafe fn store_first(self, p: *mut f32, n: usize) {
            // AVX-512's masked store is a plain store with a lane mask (one per cycle).
            unsafe { _mm512_mask_storeu_ps(p, self.first_lanes(n), self.0) }
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            Avx512(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
        }
        #[inline(always)]
        fn mul_add_masked(self, b: Self, c: Self, mask: __mmask16) -> Self {
            Avx512(unsafe { _mm512_mask3_fmadd_ps(self.0, b.0, c.0, mask) })
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            Avx512(unsafe { _mm512_add_ps(self.0, b.0) })
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            Avx512(unsafe { _mm512_sub_ps(self.0, b.0) })
        }
        #[inline(always)]
        fn max(self, b: Self) -> Self {
            Avx512(unsafe { _mm512_max_ps(self.0, b.0) })
        }
        #[inline(always)]
        fn interleave(self, b: Self) -> (Self, Self) {
            unsafe {
                // Indices 16.. pick from `b`.
                let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
                let high =
                    _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
                (
                    Avx512(_mm512_permutex2var_ps(self.0, low, b.0)),
                    Avx512(_mm512_permutex2var_ps(self.0, high, b.0)),
                )
            }
        }
        #[inline(always)]
        fn deinterleave(self, b: Self) -> (Self, Self) {
            unsafe {
                let even =
                    _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                let odd =
                    _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
                (
                    Avx512(_mm512_permutex2var_ps(self.0, even, b.0)),
                    Avx512(_mm512_permutex2var_ps(self.0, odd, b.0)),
                )
            }
        }
        #[inline(always)]
        fn lanes_skipping(self, first: usize, period: usize) -> __mmask16 {
            let mut skipped = 0u32;
            let mut lane = first;
            while lane < 16 {
                skipped |= 1 << lane;
                lane += period;
            }
            !(skipped as u16)
        }
        #[inline(always)]
        fn compress(self, keep: __mmask16) -> Self {
            // The register form: the memory form (`vcompressps` to memory) is microcoded and
            // slow on AMD's Zen 4.
            Avx512(unsafe { _mm512_maskz_compress_ps(keep, self.0) })
        }
        #[inline(always)]
        fn slide_one(self, next: Self) -> Self {
            unsafe {
                // `next ++ self` as 32 lanes, shifted down by one and the low 16 kept.
                let (low, high) = (_mm512_castps_si512(self.0), _mm512_castps_si512(next.0));
                Avx512(_mm512_castsi512_ps(_mm512_alignr_epi32::<1>(high, low)))
            }
        }
        #[inline(always)]
        fn relu(self) -> Self {
            unsafe {
                let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, _mm512_setzero_ps());
                Avx512(_mm512_mask_mov_ps(self.0, negative, _mm512_setzero_ps()))
            }
        }
        #[inline(always)]
        fn select_equal(self, b: Self, if_equal: Self, otherwise: Self) -> Self {
            unsafe {
                let equal = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(self.0, b.0);
                Avx512(_mm512_mask_blend_ps(equal, otherwise.0, if_equal.0))
            }
        }
        #[inline(always)]
        fn to_u32_bits(self) -> Self {
            Avx512(unsafe { _mm512_castsi512_ps(_mm512_cvttps_epi32(self.0)) })
        }
        #[inline(always)]
        fn first_lanes(self, n: usize) -> __mmask16 {
            if n >= 16 {
                u16::MAX
            } else {
                ((1u32 << n) - 1) as u16
            }
        }
        #[inline(always)]
        fn lanes_between(self, from: usize, to: usize) -> __mmask16 {
            self.first_lanes(to) & !self.first_lanes(from)
        }
        #[inline(always)]
        fn sum(self) -> f32 {
            unsafe { _mm512_reduce_add_ps(self.0) }
        }
    }

    /// One AVX2 register.
    #[derive(Clone, Copy)]
    pub struct Avx2(__m256);

    // SAFETY (every `unsafe` block in this impl): a value of `Avx2` exists only if the CPU has
    // AVX2 and FMA (the constructors' contract); loads and stores are covered by the callers'
    // pointer contracts.
    impl Vector for Avx2 {
        const LANES: usize = 8;
        type Mask = __m256;

        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx2(unsafe { _mm256_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            Avx2(unsafe { _mm256_set1_ps(x) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx2(unsafe { _mm256_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm256_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, mask: __m256) -> Self {
            Avx2(unsafe { _mm256_maskload_ps(p, _mm256_castps_si256(mask)) })
        }
        #[inline(always)]
        unsafe fn store_masked(self, p: *mut f32, mask: __m256) {
            unsafe { _mm256_maskstore_ps(p, _mm256_castps_si256(mask), self.0) }
        }
        #[inline(always)]
        unsafe fn store_first(self, p: *mut f32, n: usize) {
            unsafe {
                if n >= 8 {
                    return _mm256_storeu_ps(p, self.0);
                }
                // The low half, then what is left of the lanes in the low lanes of `rest`.
                let (mut p, mut rest) = (p, _mm256_castps256_ps128(self.0));
                if n & 4 != 0 {
                    _mm_storeu_ps(p, rest);
                    rest = _mm256_extractf128_ps::<1>(self.0);
                    p = p.add(4);
                }
                if n & 2 != 0 {
                    _mm_storel_epi64(p as *mut __m128i, _mm_castps_si128(rest));
                    rest = _mm_movehl_ps(rest, rest);
                    p = p.add(2);
                }
                if n & 1 != 0 {
                    _mm_store_ss(p, rest);
                }
            }
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            Avx2(unsafe { _mm256_fmadd_ps(self.0, b.0, c.0) })
        }
        #[inline(always)]
        fn mul_add_masked(self, b: Self, c: Self, mask: __m256) -> Self {
            unsafe {
                Avx2(_mm256_blendv_ps(
                    c.0,
                    _mm256_fmadd_ps(self.0, b.0, c.0),
                    mask,
                ))
            }
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            Avx2(unsafe { _mm256_add_ps(self.0, b.0) })
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            Avx2(unsafe { _mm256_sub_ps(self.0, b.0) })
        }
        #[inline(always)]
        fn max(self, b: Self) -> Self {
            Avx2(unsafe { _mm256_max_ps(self.0, b.0) })
        }
        #[inline(always)]
        fn interleave(self, b: Self) -> (Self, Self) {
            unsafe {
                // Within each 128-bit half, then the halves put in order.
                let low = _mm256_unpacklo_ps(self.0, b.0); // a0 b0 a1 b1 | a4 b4 a5 b5
                let high = _mm256_unpackhi_ps(self.0, b.0); // a2 b2 a3 b3 | a6 b6 a7 b7
                (
                    Avx2(_mm256_permute2f128_ps::<0x20>(low, high)),
                    Avx2(_mm256_permute2f128_ps::<0x31>(low, high)),
                )
            }
        }
        #[inline(always)]
        fn deinterleave(self, b: Self) -> (Self, Self) {
            unsafe {
                // a0 a2 b0 b2 | a4 a6 b4 b6, then the 64-bit pairs reordered 0 2 1 3.
                let even = _mm256_shuffle_ps::<0b10_00_10_00>(self.0, b.0);
                let odd = _mm256_shuffle_ps::<0b11_01_11_01>(self.0, b.0);
                let order = |v: __m256| {
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
                };
                (Avx2(order(even)), Avx2(order(odd)))
            }
        }
        #[inline(always)]
        fn lanes_skipping(self, first: usize, period: usize) -> __m256 {
            unsafe {
                let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let mut skipped = _mm256_setzero_si256();
                let mut at = first;
                while at < 8 {
                    let here = _mm256_cmpeq_epi32(lane, _mm256_set1_epi32(at as i32));
                    skipped = _mm256_or_si256(skipped, here);
                    at += period;
                }
                _mm256_castsi256_ps(_mm256_xor_si256(skipped, _mm256_set1_epi32(-1)))
            }
        }
        #[inline(always)]
        fn compress(self, keep: __m256) -> Self {
            unsafe {
                // AVX2 has no compress: a permutation whose indices (four bits each, the
                // kept lanes in order) come from a table by the mask's bits.
                let bits = _mm256_movemask_ps(keep) as usize;
                let packed = _mm256_set1_epi32(COMPRESS_INDICES[bits] as i32);
                let shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
                let indices =
                    _mm256_and_si256(_mm256_srlv_epi32(packed, shifts), _mm256_set1_epi32(0xf));
                Avx2(_mm256_permutevar8x32_ps(self.0, indices))
            }
        }
        #[inline(always)]
        fn slide_one(self, next: Self) -> Self {
            unsafe {
                // `alignr` shifts within 128-bit halves: pair each half of `self` with the half
                // that follows it (`self`'s high half, `next`'s low half), then shift by 4 bytes.
                let following = _mm256_permute2f128_ps::<0x21>(self.0, next.0);
                Avx2(_mm256_castsi256_ps(_mm256_alignr_epi8::<4>(
                    _mm256_castps_si256(following),
                    _mm256_castps_si256(self.0),
                )))
            }
        }
        #[inline(always)]
        fn relu(self) -> Self {
            unsafe {
                let zero = _mm256_setzero_ps();
                let negative = _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, zero);
                Avx2(_mm256_blendv_ps(self.0, zero, negative))
            }
        }
        #[inline(always)]
        fn select_equal(self, b: Self, if_equal: Self, otherwise: Self) -> Self {
            unsafe {
                let equal = _mm256_cmp_ps::<_CMP_EQ_OQ>(self.0, b.0);
                Avx2(_mm256_blendv_ps(otherwise.0, if_equal.0, equal))
            }
        }
        #[inline(always)]
        fn to_u32_bits(self) -> Self {
            Avx2(unsafe { _mm256_castsi256_ps(_mm256_cvttps_epi32(self.0)) })
        }
        #[inline(always)]
        fn first_lanes(self, n: usize) -> __m256 {
            unsafe {
                let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let n = _mm256_set1_epi32(n.min(8) as i32);
                _mm256_castsi256_ps(_mm256_cmpgt_epi32(n, lane))
            }
        }
        #[inline(always)]
        fn lanes_between(self, from: usize, to: usize) -> __m256 {
            unsafe { _mm256_andnot_ps(self.first_lanes(from), self.first_lanes(to)) }
        }
        #[inline(always)]
        fn sum(self) -> f32 {
            unsafe {
                let halves = _mm_add_ps(
                    _mm256_castps256_ps128(self.0),
                    _mm256_extractf128_ps::<1>(self.0),
                );
                let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
                let one = _mm_add_ss(pairs, _mm_movehdup_ps(pairs));
                _mm_cvtss_f32(one)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sums `a·b` over the first `n` lanes of every vector of 16-float rows, and applies ReLU:
    /// the operations the kernels use, against scalar arithmetic.
    struct Probe<'a> {
        a: &'a [f32],
        b: &'a [f32],
        n: usize,
    }

    impl VectorKernel for Probe<'_> {
        type Output = (f32, Vec<f32>);
        #[inline(always)]
        fn run<V: Vector>(self) -> (f32, Vec<f32>) {
            let mut relu = vec![0.0; self.a.len()];
            // SAFETY: `with_vector` runs this only with a type the CPU supports; every pointer is
            // `LANES` floats inside a slice of whole vectors.
            unsafe {
                let mut acc = V::zero();
                for at in (0..self.a.len()).step_by(V::LANES) {
                    let (a, b) = (
                        V::load(self.a.as_ptr().add(at)),
                        V::load(self.b.as_ptr().add(at)),
                    );
                    acc = a.mul_add_masked(b, acc, a.first_lanes(self.n));
                    // A masked load and a partial store of the same lanes leave the others
                    // untouched.
                    let mut copy = [7.0f32; 16];
                    V::load_masked(self.a.as_ptr().add(at), a.first_lanes(self.n))
                        .store_first(copy.as_mut_ptr(), self.n);
                    for (l, &c) in copy.iter().enumerate().take(V::LANES) {
                        let want = if l < self.n { self.a[at + l] } else { 7.0 };
                        assert_eq!(c, want, "lane {l} of a masked copy of {} lanes", self.n);
                    }
                    a.relu()
                        .add(V::splat(-0.0))
                        .store(relu.as_mut_ptr().add(at));
                }
                (acc.sum(), relu)
            }
        }
    }

    /// `a − b`, then `a` and `b` interleaved and split back, `max(a, b)`, and `a` slid by one
    /// lane onto `b`, vector by vector.
    struct Shuffle<'a> {
        a: &'a [f32],
        b: &'a [f32],
    }

    impl VectorKernel for Shuffle<'_> {
        type Output = [Vec<f32>; 7];
        #[inline(always)]
        fn run<V: Vector>(self) -> [Vec<f32>; 7] {
            let mut out: [Vec<f32>; 7] = std::array::from_fn(|_| vec![0.0; self.a.len()]);
            // SAFETY: `with_vector` runs this only with a type the CPU supports; every pointer is
            // `LANES` floats inside a slice of whole vectors.
            unsafe {
                for at in (0..self.a.len()).step_by(V::LANES) {
                    let a = V::load(self.a.as_ptr().add(at));
                    let b = V::load(self.b.as_ptr().add(at));
                    a.sub(b).store(out[0].as_mut_ptr().add(at));
                    let (lo, hi) = a.interleave(b);
                    lo.store(out[1].as_mut_ptr().add(at));
                    hi.store(out[2].as_mut_ptr().add(at));
                    let (even, odd) = lo.deinterleave(hi);
                    even.store(out[3].as_mut_ptr().add(at));
                    odd.store(out[4].as_mut_ptr().add(at));
                    a.max(b).store(out[5].as_mut_ptr().add(at));
                    a.slide_one(b).store(out[6].as_mut_ptr().add(at));
                }
            }
            out
        }
    }

    #[test]
    fn interleaving_pairs_lanes_and_deinterleaving_undoes_it() {
        let a: Vec<f32> = (0..32).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..32).map(|i| 100.0 + i as f32).collect();
        let [difference, lo, hi, even, odd, max, slid] = with_vector(Shuffle { a: &a, b: &b });
        assert!(difference.iter().all(|&d| d == -100.0));
        assert_eq!(max, b);
        assert_eq!(with_vector(Shuffle { a: &b, b: &a })[5], b);
        assert_eq!(even, a);
        assert_eq!(odd, b);
        let lanes = match level() {
            Level::Avx512 => 16,
            Level::Avx2 => 8,
            Level::Baseline => 1,
        };
        // Per vector: lo = a0 b0 a1 b1 …, hi the same from the middle lane.
        for start in (0..32).step_by(lanes) {
            let pairs: Vec<f32> = (start..start + lanes).flat_map(|i| [a[i], b[i]]).collect();
            assert_eq!(&lo[start..start + lanes], &pairs[..lanes]);
            assert_eq!(&hi[start..start + lanes], &pairs[lanes..]);
            // Slid by one: a1 … a(lanes−1) b0.
            let window: Vec<f32> = (start + 1..start + lanes).map(|i| a[i]).collect();
            assert_eq!(&slid[start..start + lanes - 1], &window[..]);
            assert_eq!(slid[start + lanes - 1], b[start]);
        }
    }

    /// One vector of `0, 1, 2, …` without lanes `first, first + period, …`, compressed.
    struct Compress {
        first: usize,
        period: usize,
    }

    impl VectorKernel for Compress {
        type Output = Vec<f32>;
        #[inline(always)]
        fn run<V: Vector>(self) -> Vec<f32> {
            let lanes: Vec<f32> = (0..V::LANES).map(|i| i as f32).collect();
            let mut out = vec![0.0; V::LANES];
            // SAFETY: `with_vector` runs this only with a type the CPU supports; both slices
            // hold one vector.
            unsafe {
                let x = V::load(lanes.as_ptr());
                let keep = x.lanes_skipping(self.first, self.period);
                x.compress(keep).store(out.as_mut_ptr());
            }
            out
        }
    }

    #[test]
    fn compress_moves_the_kept_lanes_to_the_front() {
        for (first, period) in [
            (0, 1),
            (0, 8),
            (7, 8),
            (3, 5),
            (1, 2),
            (15, 16),
            (16, 4),
            (2, 100),
        ] {
            let out = with_vector(Compress { first, period });
            let kept: Vec<f32> = (0..out.len())
                .filter(|&l| l < first || (l - first) % period != 0)
                .map(|l| l as f32)
                .collect();
            assert_eq!(
                &out[..kept.len()],
                &kept[..],
                "skipping {first} + k·{period}"
            );
        }
    }

    /// Splits a row into even and odd floats and merges them back, with [`deinterleave`] and
    /// [`interleave`].
    struct RowSplit<'a> {
        row: &'a [f32],
    }

    impl VectorKernel for RowSplit<'_> {
        type Output = (Vec<f32>, Vec<f32>, Vec<f32>);
        #[inline(always)]
        fn run<V: Vector>(self) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
            let m = self.row.len() / 2;
            // One float of slack past each half: the helpers must leave it alone.
            let (mut even, mut odd) = (vec![-1.0; m + 1], vec![-1.0; m + 1]);
            let mut merged = vec![-1.0; 2 * m + 1];
            // SAFETY: `with_vector` runs this only with a type the CPU supports.
            unsafe {
                deinterleave::<V>(&self.row[..2 * m], &mut even, &mut odd);
                interleave::<V>(&even, &odd, &mut merged[..2 * m]);
            }
            (even, odd, merged)
        }
    }

    #[test]
    fn rows_split_into_even_and_odd_floats_and_merge_back_at_every_length() {
        for len in [0, 2, 6, 16, 30, 32, 34, 56, 66] {
            let row: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let (even, odd, merged) = with_vector(RowSplit { row: &row });
            let m = len / 2;
            let want_even: Vec<f32> = row.iter().step_by(2).copied().collect();
            let want_odd: Vec<f32> = row.iter().skip(1).step_by(2).copied().collect();
            assert_eq!(
                (&even[..m], &odd[..m]),
                (&want_even[..], &want_odd[..]),
                "{len}"
            );
            assert_eq!(
                (even[m], odd[m], merged[2 * m]),
                (-1.0, -1.0, -1.0),
                "{len}"
            );
            assert_eq!(&merged[..2 * m], &row[..], "{len}");
        }
    }

    #[test]
    fn operations_match_scalar_arithmetic() {
        let a: Vec<f32> = (0..32).map(|i| i as f32 - 10.5).collect();
        let b: Vec<f32> = (0..32).map(|i| (i % 5) as f32).collect();
        for n in [0, 1, 3, 8, 16] {
            let (sum, relu) = with_vector(Probe { a: &a, b: &b, n });
            let lanes = match level() {
                Level::Avx512 => 16,
                Level::Avx2 => 8,
                Level::Baseline => 1,
            };
            let want: f32 = (0..32).filter(|i| i % lanes < n).map(|i| a[i] * b[i]).sum();
            assert_eq!(sum, want, "first {n} lanes");
            assert!(
                relu.iter()
                    .zip(&a)
                    .all(|(&r, &x)| r == crate::kernels::relu(x))
            );
        }
        let special = [f32::NAN, -0.0, -1.0, 2.0];
        let mut padded = [0.0; 16];
        padded[..4].copy_from_slice(&special);
        let (_, relu) = with_vector(Probe {
            a: &padded,
            b: &padded,
            n: 0,
        });
        assert!(relu[0].is_nan());
        assert!(relu[1] == 0.0 && relu[1].is_sign_negative());
        assert_eq!(&relu[2..4], &[0.0, 2.0]);
    }
}
