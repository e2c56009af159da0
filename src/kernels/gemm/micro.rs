//! The register-blocked micro-kernels: `C[MR x NR] = alpha · Σ_p a_p ⊗ b_p + beta · C` over
//! packed panels (`a`: `MR` values per step `p`, `b`: `NR` values per step), one per instruction
//! set. Each keeps the whole `MR x NR` tile in vector registers: rows of the tile are `NR / lanes`
//! vectors, and every step broadcasts one value of `a` per row against the `b` vectors.
//!
//! The shapes fill the register file without spilling: AVX-512 12 x 32 (24 of 32 `zmm` as
//! accumulators) and 8 x 48 (as many, for products whose rows are a multiple of 8 but not of
//! 12), AVX2 6 x 16 (12 of 16 `ymm`), and a portable 4 x 8 that the compiler vectorises for the
//! baseline target.

#[cfg(target_arch = "x86_64")]
use crate::kernels::vector::Vector;
use crate::util::simd::Level;

/// Where a tile's results go: `rows x cols` (at most `MR x NR`) elements of the destination,
/// `dst[i * row_stride + j * col_stride]`, updated as `alpha · acc + beta · dst` (with
/// `beta == 0` the destination is not read, so NaNs there do not leak).
#[derive(Clone, Copy)]
pub(super) struct TileDst {
    pub ptr: *mut f32,
    pub row_stride: usize,
    pub col_stride: usize,
    pub rows: usize,
    pub cols: usize,
    pub alpha: f32,
    pub beta: f32,
    pub epilogue: TileEpilogue,
}

/// What a tile does to each element after `alpha · acc + beta · dst`, before storing it: add
/// the bias of its row or of its column, then ReLU ([`super::Epilogue`] for one tile).
#[derive(Clone, Copy)]
pub(super) struct TileEpilogue {
    /// The bias of the tile's first row (or column), the others after it; null for none.
    pub bias: *const f32,
    pub bias_per_column: bool,
    pub relu: bool,
}

impl TileEpilogue {
    /// Element `(i, j)` of the tile, finished.
    ///
    /// # Safety
    ///
    /// Unless null, `bias` holds the tile's row (or column) `i` (or `j`).
    #[inline(always)]
    unsafe fn finish(self, value: f32, i: usize, j: usize) -> f32 {
        let value = if self.bias.is_null() {
            value
        } else {
            let at = if self.bias_per_column { j } else { i };
            // SAFETY: the caller's contract.
            value + unsafe { *self.bias.add(at) }
        };
        if self.relu {
            crate::kernels::relu(value)
        } else {
            value
        }
    }
}

/// Where a micro-kernel reads the left operand: row `i` of depth step `p` is
/// `ptr[i · row + p · step]` (a packed panel has `row == 1, step == MR`; an operand read in place
/// its own strides).
#[derive(Clone, Copy)]
pub(super) struct LeftPanel {
    pub ptr: *const f32,
    pub row: usize,
    pub step: usize,
}

/// Where a micro-kernel reads the right operand: depth step `p` is the `NR` floats at
/// `ptr + p · step` (a packed panel has `step == NR`, a row-major operand read in place its row
/// stride); and what it prefetches as it goes.
#[derive(Clone, Copy)]
pub(super) struct RightPanel {
    pub ptr: *const f32,
    pub step: usize,
    pub ahead: Prefetch,
}

/// What a micro-kernel asks the CPU to fetch at each depth step `p`, besides what it reads: a
/// hint, so the addresses need not be readable.
#[derive(Clone, Copy)]
pub(super) enum Prefetch {
    /// The `NR` floats at `ahead + p · step`: a panel's own steps a few ahead, from L2.
    Steps(*const f32),
    /// The one cache line at `ahead + p · step`: a column of lines of a panel further on, from
    /// memory into L2, a line per step so that several tiles share the panel's fetch. Into L2
    /// only: the panel is read two panels later, and in L1 it pushed out the lines of the one
    /// being read (the pointwise convolution's forward, S5, +5.6% against prefetching into L1,
    /// 256 → 64 channels at batch 8; 64 → 256 +2%, alternated with PyTorch in one process on an
    /// Intel Xeon model 207).
    Line(*const f32),
    /// As [`Prefetch::Line`], at every other step only: the line at `ahead + p · step` for even
    /// `p`, so that twice as many tiles share a panel's fetch at half the rate each.
    AlternateLines(*const f32),
}

/// One micro-kernel and its tile.
#[derive(Clone, Copy)]
pub(super) struct MicroKernel {
    pub name: &'static str,
    pub mr: usize,
    pub nr: usize,
    /// # Safety
    ///
    /// The `mr` rows of `a` and the `nr` columns of `b` are readable for `kc` depth steps;
    /// `dst` describes writable elements no other thread touches during the call, and its
    /// epilogue's bias (unless null) the values of its rows or columns; the CPU supports the
    /// kernel's instruction set (guaranteed by [`for_level`]).
    pub run: unsafe fn(kc: usize, a: LeftPanel, b: RightPanel, dst: TileDst),
}

/// Every kernel of an instruction-set level, the one for general shapes first. Each product
/// takes the one whose tiles waste least on its shape (`packed::oriented_product`).
pub(super) fn kernels(level: Level) -> Vec<MicroKernel> {
    let mut kernels = vec![for_level(level)];
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        // A 64-row product (a pointwise convolution to 64 channels) in 12-row tiles computes
        // 72 rows: 11% of the multiply-adds land in padding. 8 x 48 does the same 24
        // multiply-adds per step with 3 loads and 8 broadcasts instead of 2 and 12.
        kernels.push(MicroKernel {
            name: "avx512 8x48",
            mr: x86::AVX512_NARROW_MR,
            nr: x86::AVX512_NARROW_NR,
            run: x86::avx512_narrow,
        });
    }
    kernels
}

/// The kernel for general shapes of an instruction-set level.
pub(super) fn for_level(level: Level) -> MicroKernel {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => MicroKernel {
            name: "avx512 12x32",
            mr: x86::AVX512_MR,
            nr: x86::AVX512_NR,
            run: x86::avx512,
        },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => MicroKernel {
            name: "avx2 6x16",
            mr: x86::AVX2_MR,
            nr: x86::AVX2_NR,
            run: x86::avx2,
        },
        _ => MicroKernel {
            name: "portable 4x8",
            mr: PORTABLE_MR,
            nr: PORTABLE_NR,
            run: portable,
        },
    }
}

/// Writes a finished tile held row-major in `acc` (`nr` values per row) into `dst`, element by
/// element: the path for edge tiles and strided destinations.
///
/// # Safety
///
/// As [`MicroKernel::run`] for `dst`; `acc` holds at least `dst.rows` rows of `nr` values.
#[inline(always)]
unsafe fn store_scalar(acc: &[f32], nr: usize, dst: TileDst) {
    for i in 0..dst.rows {
        for j in 0..dst.cols {
            // SAFETY: (i, j) lies inside the tile `dst` describes (caller's contract).
            let c = unsafe { dst.ptr.add(i * dst.row_stride + j * dst.col_stride) };
            let value = dst.alpha * acc[i * nr + j];
            // SAFETY: as above; the bias holds the tile's rows and columns (caller's contract).
            unsafe {
                let value = if dst.beta == 0.0 {
                    value
                } else {
                    value + dst.beta * *c
                };
                *c = dst.epilogue.finish(value, i, j);
            };
        }
    }
}

/// Applies `dst`'s epilogue to a full tile of `rows x cols` (whole vectors, unit column stride)
/// just stored there, while it is in L1. A second pass rather than in the registers before the
/// store: with the epilogue in the store loop, the loop no longer unrolled and the compiler
/// kept the accumulators in memory through the whole product (S5 forward at 40% speed).
///
/// # Safety
///
/// As [`MicroKernel::run`] for `dst`; the CPU supports `V`'s instruction set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn finish_stored<V: Vector>(dst: TileDst, rows: usize, cols: usize) {
    let epilogue = dst.epilogue;
    if epilogue.bias.is_null() && !epilogue.relu {
        return;
    }
    for i in 0..rows {
        // SAFETY: row `i` of the tile and its bias (caller's contract).
        unsafe {
            let row = dst.ptr.add(i * dst.row_stride);
            // An `if`, not `bool::then`: a closure through `core` loses the target features.
            let row_bias = if !epilogue.bias_per_column && !epilogue.bias.is_null() {
                Some(V::splat(*epilogue.bias.add(i)))
            } else {
                None
            };
            for j in (0..cols).step_by(V::LANES) {
                let mut y = V::load(row.add(j));
                if let Some(bias) = row_bias {
                    y = y.add(bias);
                } else if !epilogue.bias.is_null() {
                    y = y.add(V::load(epilogue.bias.add(j)));
                }
                if epilogue.relu {
                    y = y.relu();
                }
                y.store(row.add(j));
            }
        }
    }
}

const PORTABLE_MR: usize = 4;
const PORTABLE_NR: usize = 8;

/// The baseline kernel: plain arrays the compiler keeps in SSE registers.
///
/// # Safety
///
/// See [`MicroKernel::run`].
unsafe fn portable(kc: usize, a: LeftPanel, b: RightPanel, dst: TileDst) {
    let mut acc = [0.0f32; PORTABLE_MR * PORTABLE_NR];
    for p in 0..kc {
        // SAFETY: `a` holds `kc` steps of `MR` values, `b` `kc` rows of `NR` (caller's contract).
        let (ap, bp) = unsafe {
            (
                std::array::from_fn::<f32, PORTABLE_MR, _>(|i| *a.ptr.add(i * a.row + p * a.step)),
                &*(b.ptr.add(p * b.step) as *const [f32; PORTABLE_NR]),
            )
        };
        for i in 0..PORTABLE_MR {
            for j in 0..PORTABLE_NR {
                acc[i * PORTABLE_NR + j] += ap[i] * bp[j];
            }
        }
    }
    // SAFETY: forwarded contract.
    unsafe { store_scalar(&acc, PORTABLE_NR, dst) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{LeftPanel, Prefetch, RightPanel, TileDst, finish_stored, store_scalar};
    use crate::kernels::scratch::LINE;
    use crate::kernels::vector::{Avx2, Avx512};
    use crate::util::simd::{prefetch_line, prefetch_line_l2};

    pub const AVX512_MR: usize = 12;
    pub const AVX512_NR: usize = 32;
    pub const AVX512_NARROW_MR: usize = 8;
    pub const AVX512_NARROW_NR: usize = 48;
    pub const AVX2_MR: usize = 6;
    pub const AVX2_NR: usize = 16;

    /// Generates one kernel: `$mr` rows of `$vectors` vectors of `$lanes` floats.
    macro_rules! micro_kernel {
        ($name:ident, $features:literal, $mr:expr, $vectors:literal, $lanes:literal,
         $vector:ty, $wrapper:ident, $zero:ident, $set1:ident, $load:ident, $store:ident,
         $fmadd:ident, $mul:ident) => {
            /// # Safety
            ///
            /// See [`super::MicroKernel::run`].
            #[target_feature(enable = $features)]
            pub unsafe fn $name(kc: usize, left: LeftPanel, right: RightPanel, dst: TileDst) {
                const NR: usize = $vectors * $lanes;
                let mut acc: [[$vector; $vectors]; $mr] = [[$zero(); $vectors]; $mr];
                let (a_row, a_step, b_step) = (left.row, left.step, right.step);
                let (mut a, mut b) = (left.ptr, right.ptr);
                // A tile that only writes its destination (`beta == 0`, no epilogue to read it
                // back) leaves its lines to the stores, which wait in the store buffer rather
                // than in the pipeline: the burst of prefetches below held the line-fill
                // buffers the panels' loads need (the pointwise convolution's backward-data,
                // S5, +5% without it on an Intel Xeon model 207, alternated in one process;
                // its forward, whose bias epilogue reads the tile back, and sgemm 2048 level).
                let reads_destination =
                    dst.beta != 0.0 || !dst.epilogue.bias.is_null() || dst.epilogue.relu;
                if dst.col_stride == 1 && reads_destination {
                    // The destination's lines, read after the loop, fetched while it runs:
                    // rows of a large product are far apart and long evicted, and waiting for
                    // them at the end cost a fifth of sgemm 2048's time on a Zen 3.
                    for i in 0..dst.rows {
                        let row = dst.ptr.wrapping_add(i * dst.row_stride);
                        // Every line of the row: a 48-float row left its middle line to
                        // the epilogue's loads (S5 forward +3-5% on a Zen 4).
                        for line in (0..NR).step_by(LINE) {
                            prefetch_line(row.wrapping_add(line));
                        }
                        prefetch_line(row.wrapping_add(NR - 1));
                    }
                }
                // One depth step with the left operand's rows `$row` apart, prefetching
                // `$lines` floats (a multiple of a line) at `ahead`. (A macro, so that a packed
                // panel's literal 1 makes every broadcast a fixed offset from one pointer: with a
                // runtime stride the row addresses were a chain of adds as long as the step's
                // FMA time, loop-carried. Likewise the prefetch is fixed per loop, not tested at
                // every step.)
                macro_rules! step {
                    ($row:expr, $ahead:ident, $lines:expr, $fetch:path) => {{
                        for line in (0..$lines).step_by(LINE) {
                            // A hint that never faults; the pointer is only formed, never
                            // read.
                            $fetch($ahead.wrapping_add(line));
                        }
                        $ahead = $ahead.wrapping_add(b_step);
                        let mut bv: [$vector; $vectors] = [$zero(); $vectors];
                        for (v, slot) in bv.iter_mut().enumerate() {
                            // SAFETY: `b` holds `NR` values for this step (caller's
                            // contract).
                            *slot = unsafe { $load(b.add(v * $lanes)) };
                        }
                        for (i, row) in acc.iter_mut().enumerate() {
                            // SAFETY: `a` holds `MR` values for this step, `$row` apart.
                            let ai = $set1(unsafe { *a.add(i * $row) });
                            for (slot, &bj) in row.iter_mut().zip(&bv) {
                                *slot = $fmadd(ai, bj, *slot);
                            }
                        }
                        // SAFETY: advancing within (or one past) the panels.
                        unsafe {
                            a = a.add(a_step);
                            b = b.add(b_step);
                        }
                    }};
                }
                // Two steps per trip of the loop: the pointwise convolution's forward (whose
                // first left panel also prefetches) measured +5-6% on a Sapphire Rapids against
                // one (call by call, S5 medians 216-219 against 204-206 GFLOP/s); sgemm level.
                macro_rules! steps {
                    ($row:expr, $ahead:expr, $lines:expr, $fetch:path) => {{
                        let mut ahead: *const f32 = $ahead;
                        for _ in 0..kc / 2 {
                            step!($row, ahead, $lines, $fetch);
                            step!($row, ahead, $lines, $fetch);
                        }
                        // The last step's pointer advances are not read again.
                        #[allow(unused_assignments)]
                        if kc % 2 == 1 {
                            step!($row, ahead, $lines, $fetch);
                        }
                    }};
                }
                macro_rules! prefetching {
                    ($row:expr) => {
                        match right.ahead {
                            Prefetch::Steps(ahead) => steps!($row, ahead, NR, prefetch_line),
                            Prefetch::Line(ahead) => steps!($row, ahead, LINE, prefetch_line_l2),
                            Prefetch::AlternateLines(ahead) => {
                                let mut ahead: *const f32 = ahead;
                                // Advanced by the steps that fetch nothing; never read.
                                let mut idle: *const f32 = ahead;
                                for _ in 0..kc / 2 {
                                    step!($row, ahead, LINE, prefetch_line_l2);
                                    step!($row, idle, 0, prefetch_line_l2);
                                    ahead = ahead.wrapping_add(b_step);
                                }
                                #[allow(unused_assignments)]
                                if kc % 2 == 1 {
                                    step!($row, ahead, LINE, prefetch_line_l2);
                                }
                            }
                        }
                    };
                }
                if a_row == 1 {
                    prefetching!(1)
                } else {
                    prefetching!(a_row)
                }
                // Plain stores, not streaming ones: streaming the full tiles of a `beta == 0`
                // product measured +4-5% on the pointwise convolution's forward (S5, Zen 4,
                // call by call) and level on its backward-data, but it sends the whole output
                // past the caches to memory, where the next layer then has to read it from.
                if dst.rows == $mr && dst.cols == NR && dst.col_stride == 1 {
                    let alpha = $set1(dst.alpha);
                    let beta = $set1(dst.beta);
                    for (i, row) in acc.iter().enumerate() {
                        for (v, &value) in row.iter().enumerate() {
                            // SAFETY: a full tile with unit column stride: these `NR`
                            // consecutive elements of row `i` are the caller's.
                            unsafe {
                                let c = dst.ptr.add(i * dst.row_stride + v * $lanes);
                                let scaled = $mul(alpha, value);
                                let out = if dst.beta == 0.0 {
                                    scaled
                                } else {
                                    $fmadd(beta, $load(c), scaled)
                                };
                                $store(c, out);
                            }
                        }
                    }
                    // SAFETY: the same elements, just stored; the kernel runs only at its level
                    // (`for_level`), where the CPU has the wrapper's instruction set.
                    unsafe { finish_stored::<$wrapper>(dst, $mr, NR) };
                } else {
                    let mut spill = [0.0f32; $mr * NR];
                    for (i, row) in acc.iter().enumerate() {
                        for (v, &value) in row.iter().enumerate() {
                            // SAFETY: `spill` has room for `MR x NR` floats.
                            unsafe { $store(spill.as_mut_ptr().add(i * NR + v * $lanes), value) };
                        }
                    }
                    // SAFETY: forwarded contract.
                    unsafe { store_scalar(&spill, NR, dst) }
                }
            }
        };
    }

    micro_kernel!(
        avx512,
        "avx512f,avx512vl,avx2,fma",
        AVX512_MR,
        2,
        16,
        __m512,
        Avx512,
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_fmadd_ps,
        _mm512_mul_ps
    );
    micro_kernel!(
        avx512_narrow,
        "avx512f,avx512vl,avx2,fma",
        AVX512_NARROW_MR,
        3,
        16,
        __m512,
        Avx512,
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_fmadd_ps,
        _mm512_mul_ps
    );
    micro_kernel!(
        avx2,
        "avx2,fma",
        AVX2_MR,
        2,
        8,
        __m256,
        Avx2,
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_fmadd_ps,
        _mm256_mul_ps
    );
}
