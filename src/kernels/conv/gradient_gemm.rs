//! The filter gradient `dW[i, j] += Σ_p dY[i, p] · X[j, p]` as a register-tiled GEMM over a
//! transposed panel of the output gradient, for AVX-512 and AVX2 CPUs.
//!
//! Both operands run along the depth `p` (the image positions). A GEMM wants one of them laid
//! out across its free index at each step: this kernel transposes the smaller one, `dY` (the
//! output channels), a chunk of positions at a time into a panel `dYᵀ[p, i]` (square blocks
//! transposed in registers), and reads `X` in place, one broadcast per row `j` and step. Its
//! register tile holds `dWᵀ` for up to four vectors of output channels by six input rows (four
//! by six with AVX-512's 32 registers, two by six with AVX2's 16), so every step spends one
//! load per vector and one broadcast per row on `vectors · rows` multiply-adds, and all its
//! sums stay in registers through the chunk. The dot products of both operands read in place
//! ([`super::shifted::shifted_gemm_reduce`]) stream both through L2 for every tile (ten loads
//! per 24 multiply-adds) and end each tile with horizontal sums; they stay the choice for
//! gradients of few columns, where the pack would cost more than it saves ([`pays`]).
//!
//! The sums `dWᵀ` live in a per-call buffer across images and chunks, added into `dW` at the end.

use crate::kernels::gemm::Caches;
use crate::kernels::scratch::{with_scratch, with_scratch_parts};
use crate::kernels::vector::{TransposeIntoPanel, Vector, VectorKernel, with_vector};
use crate::util::simd::{Level, level};
use std::ops::Range;

/// Whether this CPU runs [`filter_gradient_gemm`] (AVX-512 or AVX2).
pub(super) fn available() -> bool {
    level() != Level::Baseline
}

/// Columns of the filter gradient (`Cg·KH·KW`) from which [`filter_gradient_gemm`] replaces
/// the in-place dot products ([`super::shifted::shifted_gemm_reduce`]): each transposed value
/// of `dY` then serves that many multiply-adds. Zen 4, 2 threads, call by call, against the dot
/// products: 9 columns (MNIST's first layer) 0.65x; 72 (8 channels, 3x3, stride 2) 0.9x with
/// AVX-512, level with AVX2; 144 level / 1.17x; 576 (ResNet's stride-2 downsampling) 1.0-1.04x
/// / 1.05-1.11x; 256 (pointwise) 1.1x / 1.3x.
const MIN_COLUMNS: usize = 128;

/// Whether [`filter_gradient_gemm`] runs on this CPU and pays for a gradient of `columns`
/// columns.
pub(super) fn pays(columns: usize) -> bool {
    available() && columns >= MIN_COLUMNS
}

/// How a product's positions lie in the source: `rows` runs of `run` positions, run `r` of
/// column `j` at `offsets[j] + r · row_stride`. The output gradient holds the same positions
/// contiguously (`rows · run` of them), so a source padded wider than the output (the wide
/// grid's extra columns) is read where it lies, without widening the gradient to match or
/// multiplying the padding.
#[derive(Clone, Copy, Debug)]
pub(super) struct SourceRuns {
    pub rows: usize,
    pub run: usize,
    pub row_stride: usize,
}

impl SourceRuns {
    /// `len` contiguous positions: one run.
    pub fn contiguous(len: usize) -> SourceRuns {
        SourceRuns {
            rows: 1,
            run: len,
            row_stride: len,
        }
    }

    /// The positions of the product.
    fn len(&self) -> usize {
        self.rows * self.run
    }

    /// One past the last source float a column at offset 0 reads.
    fn reach(&self) -> usize {
        match self.rows {
            0 => 0,
            rows => (rows - 1) * self.row_stride + self.run,
        }
    }
}

/// The output gradient of one image and group: `rows` rows of `len` positions, `row_stride`
/// apart.
pub(super) struct GradientRows<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub row_stride: usize,
}

/// Runs `f` with a [`FilterGradientGemm`] for a `[rows, columns]` filter gradient, then adds
/// the sums of every [`FilterGradientGemm::add_images`] call `f` made into `grad_weight`.
///
/// The sums live transposed (`dWᵀ`) in a buffer of this thread for the whole of `f`, so a
/// caller that prepares its images a chunk at a time transposes them into `grad_weight` once:
/// done once per chunk of one image, that strided add was 4.5% of ResNet's stride-2 filter
/// gradient (Zen 4, 2 threads).
///
/// # Panics
///
/// If the CPU lacks AVX-512 and AVX2, or `grad_weight` is not `[rows, columns]`.
pub(super) fn filter_gradient_gemm<R>(
    rows: usize,
    columns: usize,
    grad_weight: &mut [f32],
    f: impl FnOnce(&mut FilterGradientGemm<'_>) -> R,
) -> R {
    assert!(available(), "filter_gradient_gemm: needs AVX-512 or AVX2");
    assert_eq!(
        grad_weight.len(),
        rows * columns,
        "filter_gradient_gemm: the gradient is [rows, columns]"
    );
    let lanes = vector_lanes();
    let stride = rows.next_multiple_of(lanes);
    let chunk = chunk_positions(stride, lanes);
    with_scratch_parts([chunk * stride, columns * stride], |[panel, sums]| {
        sums.fill(0.0);
        let mut gemm = FilterGradientGemm {
            rows,
            columns,
            stride,
            chunk,
            panel,
            sums,
        };
        let result = f(&mut gemm);
        add_transposed(gemm.sums, stride, grad_weight, columns);
        result
    })
}

/// `grad_weight[i·columns + j] += sums[j·stride + i]`: the sums transposed into a scratch
/// buffer by vector blocks, then added row by row. A scalar add reading `sums` down its
/// columns, once per thread, was still 2.9% of ResNet's stride-2 filter gradient.
fn add_transposed(sums: &[f32], stride: usize, grad_weight: &mut [f32], columns: usize) {
    let rows = grad_weight.len() / columns.max(1);
    with_scratch(rows * columns, |transposed| {
        // `transposed[i·columns + j] = sums[j·stride + i]`.
        with_vector(TransposeIntoPanel {
            src: sums,
            stride,
            lines: columns,
            depth: rows,
            width: columns,
            out: transposed,
        });
        for (gw, t) in grad_weight.iter_mut().zip(&*transposed) {
            *gw += t;
        }
    })
}

/// The filter gradient's sums during [`filter_gradient_gemm`].
pub(super) struct FilterGradientGemm<'s> {
    rows: usize,
    columns: usize,
    /// `rows` rounded up to whole vectors: the row length of the panel and of `sums`.
    stride: usize,
    /// Positions the panel holds.
    chunk: usize,
    panel: &'s mut [f32],
    /// `dWᵀ`: `sums[j·stride + i]` for column `j` and row `i`.
    sums: &'s mut [f32],
}

impl FilterGradientGemm<'_> {
    /// Adds `Σ_images Σ_(r, c) dY_n[i, r·run + c] · src_n[offsets[j] + r·row_stride + c]` to
    /// the sums `(i, j)` for the images `n` that `image(n)` hands out (`(dY_n, src_n)`, `count`
    /// of them), over the positions `(r, c)` of `runs`: the filter gradient with the column
    /// matrix's row `j` read in place at `offsets[j]` of the image's (padded) planes.
    ///
    /// # Panics
    ///
    /// If `offsets` has not one entry per column, or a read would leave an image's operands.
    pub fn add_images<'a>(
        &mut self,
        offsets: &[usize],
        runs: SourceRuns,
        count: usize,
        image: impl Fn(usize) -> (GradientRows<'a>, &'a [f32]),
    ) {
        let (rows, stride, len) = (self.rows, self.stride, runs.len());
        assert_eq!(
            offsets.len(),
            self.columns,
            "filter_gradient_gemm: one offset per column"
        );
        if rows == 0 || self.columns == 0 || len == 0 {
            return;
        }
        let chunk = self.chunk.min(len.next_multiple_of(vector_lanes()));
        let last_read = offsets.iter().max().map_or(0, |&m| m + runs.reach());
        for n in 0..count {
            let (gy, src) = image(n);
            assert!(
                gy.rows == rows && (rows - 1) * gy.row_stride + len <= gy.data.len(),
                "filter_gradient_gemm: the output gradient holds {rows} rows of {len}"
            );
            assert!(
                last_read <= src.len(),
                "filter_gradient_gemm: reads reach {last_read} of a source of {}",
                src.len()
            );
            for first in (0..len).step_by(chunk) {
                let depth = first..(first + chunk).min(len);
                // `panel[(p − depth.start)·stride + i] = dY[i, p]`, zero for `rows <= i < stride`.
                with_vector(TransposeIntoPanel {
                    src: &gy.data[depth.start..],
                    stride: gy.row_stride,
                    lines: rows,
                    depth: depth.len(),
                    width: stride,
                    out: self.panel,
                });
                with_vector(PanelProduct {
                    panel: self.panel,
                    stride,
                    depth,
                    runs,
                    src,
                    offsets,
                    sums: self.sums,
                });
            }
        }
    }
}

/// The lanes of this CPU's vectors.
fn vector_lanes() -> usize {
    match level() {
        Level::Avx512 => 16,
        _ => 8,
    }
}

/// Positions per chunk: a panel of `stride` floats a position within a quarter of L2 (it is
/// read once per tile of rows `j` while `X`'s rows stream past it), a whole number of vectors.
/// Chunks of 256 to 3136 positions measured alike on the pointwise S5 (Zen 4, 1 MiB L2).
fn chunk_positions(stride: usize, lanes: usize) -> usize {
    let fits = Caches::of_this_cpu().l2 / 4 / (4 * stride);
    (fits / lanes * lanes).clamp(lanes, 4096)
}

/// The register tile: at most this many vectors of output channels by this many input rows.
/// With AVX2's 16 registers, 2 x 6 (12 sums, two loaded vectors, a broadcast) measured 1.55x
/// 3 x 4 on the pointwise S5, which left no register spare.
fn tile_shape(lanes: usize) -> (usize, usize) {
    if lanes >= 16 { (4, 6) } else { (2, 6) }
}

/// `sums[j·stride + i] += Σ_(p in depth) panel[(p − depth.start)·stride + i] · src[offsets[j] + at(p)]`
/// for position `p = r·run + c` of `runs` at `at(p) = r·row_stride + c`.
struct PanelProduct<'a> {
    panel: &'a [f32],
    stride: usize,
    depth: Range<usize>,
    runs: SourceRuns,
    src: &'a [f32],
    offsets: &'a [usize],
    sums: &'a mut [f32],
}

impl VectorKernel for PanelProduct<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let (max_vectors, max_rows) = tile_shape(V::LANES);
        let vectors = self.stride / V::LANES;
        let columns = self.offsets.len();
        assert!(self.stride.is_multiple_of(V::LANES));
        assert!(self.sums.len() >= columns * self.stride);
        assert!(self.panel.len() >= self.depth.len() * self.stride);
        assert!(self.depth.end <= self.runs.len());
        let last_row = SourceRuns {
            rows: self.depth.end.div_ceil(self.runs.run.max(1)),
            ..self.runs
        };
        assert!(
            self.offsets
                .iter()
                .all(|&offset| offset + last_row.reach() <= self.src.len())
        );
        let sums = self.sums.as_mut_ptr();
        for first_vector in (0..vectors).step_by(max_vectors) {
            let count = (vectors - first_vector).min(max_vectors);
            for first_row in (0..columns).step_by(max_rows) {
                let rows = (columns - first_row).min(max_rows);
                macro_rules! rows {
                    ($vecs:literal) => {
                        match rows {
                            6.. => self.tile::<V, $vecs, 6>(sums, first_vector, first_row),
                            5 => self.tile::<V, $vecs, 5>(sums, first_vector, first_row),
                            4 => self.tile::<V, $vecs, 4>(sums, first_vector, first_row),
                            3 => self.tile::<V, $vecs, 3>(sums, first_vector, first_row),
                            2 => self.tile::<V, $vecs, 2>(sums, first_vector, first_row),
                            _ => self.tile::<V, $vecs, 1>(sums, first_vector, first_row),
                        }
                    };
                }
                // SAFETY: `with_vector` runs this only with a vector type the CPU supports; the
                // asserts above bound every read and write of the tile (vectors
                // `first_vector + v < stride / LANES`, rows `first_row + r < columns`).
                unsafe {
                    match count {
                        4.. => rows!(4),
                        3 => rows!(3),
                        2 => rows!(2),
                        _ => rows!(1),
                    }
                }
            }
        }
    }
}

impl PanelProduct<'_> {
    /// One register tile: `VECS` vectors of output channels from `first_vector` by `ROWS` rows
    /// from `first_row`, through every position of the chunk, added into `sums` (the field's
    /// buffer, as a pointer taken from it).
    ///
    /// # Safety
    ///
    /// The CPU supports `V`'s instruction set; `sums` is `self.sums`'s start;
    /// `(first_vector + VECS)·LANES <= stride`,
    /// `first_row + ROWS <= offsets.len()`, and the panel, sums and source hold what
    /// [`PanelProduct`] describes.
    #[inline(always)]
    unsafe fn tile<V: Vector, const VECS: usize, const ROWS: usize>(
        &self,
        sums: *mut f32,
        first_vector: usize,
        first_row: usize,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            let at =
                |r: usize, v: usize| (first_row + r) * self.stride + (first_vector + v) * V::LANES;
            let mut acc: [[V; VECS]; ROWS] =
                std::array::from_fn(|r| std::array::from_fn(|v| V::load(sums.add(at(r, v)))));
            let mut panel = self.panel.as_ptr().add(first_vector * V::LANES);
            // The chunk's positions a run (or the part of one inside the chunk) at a time.
            let SourceRuns {
                run, row_stride, ..
            } = self.runs;
            let mut p = self.depth.start;
            while p < self.depth.end {
                let (r, c) = (p / run, p % run);
                let count = (run - c).min(self.depth.end - p);
                let start = r * row_stride + c;
                let mut rows = [self.src.as_ptr(); ROWS];
                for (j, row) in rows.iter_mut().enumerate() {
                    *row = row.add(self.offsets[first_row + j] + start);
                }
                for q in 0..count {
                    let mut dy = [V::zero(); VECS];
                    for (v, dy) in dy.iter_mut().enumerate() {
                        *dy = V::load(panel.add(v * V::LANES));
                    }
                    panel = panel.add(self.stride);
                    for (acc, row) in acc.iter_mut().zip(&rows) {
                        let x = V::splat(*row.add(q));
                        for v in 0..VECS {
                            acc[v] = x.mul_add(dy[v], acc[v]);
                        }
                    }
                }
                p += count;
            }
            for (r, acc) in acc.iter().enumerate() {
                for (v, sum) in acc.iter().enumerate() {
                    sum.store(sums.add(at(r, v)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_naive_sum_over_images_chunks_and_calls() {
        if !available() {
            eprintln!("skipped: no AVX-512 or AVX2 on this CPU");
            return;
        }
        // Rows of every tile kind (a partial vector, whole and partial groups of vectors),
        // columns in tiles of six and fewer, read from overlapping offsets; depths shorter
        // than a vector, not a whole number of vectors, and of several chunks; three images.
        let value = |n: usize, i: usize| ((n * 31 + i * 7) % 23) as f32 * 0.25 - 2.5;
        // Contiguous positions, and runs of a source wider than the gradient (runs shorter
        // and longer than a chunk, a chunk ending inside a run).
        let runs = |rows: usize, run: usize, row_stride: usize| SourceRuns {
            rows,
            run,
            row_stride,
        };
        let cases = [
            (1, SourceRuns::contiguous(5)),
            (5, SourceRuns::contiguous(17)),
            (16, SourceRuns::contiguous(40)),
            (17, SourceRuns::contiguous(3)),
            (70, SourceRuns::contiguous(1000)),
            (64, SourceRuns::contiguous(4200)),
            (20, runs(7, 5, 8)),
            (33, runs(28, 28, 29)),
            (64, runs(3, 1500, 1503)),
            (128, runs(45, 100, 117)),
        ];
        for (rows, runs) in cases {
            let (columns, len) = (13, runs.len());
            let offsets: Vec<usize> = (0..columns).map(|j| j * 5 + j % 3).collect();
            let src_len = offsets.iter().max().unwrap() + runs.reach();
            let row_stride = len + 3;
            let images = 3;
            let gy: Vec<Vec<f32>> = (0..images)
                .map(|n| (0..rows * row_stride).map(|i| value(n, i)).collect())
                .collect();
            let src: Vec<Vec<f32>> = (0..images)
                .map(|n| (0..src_len).map(|i| value(n + 5, i)).collect())
                .collect();
            let mut got: Vec<f32> = (0..rows * columns).map(|i| i as f32).collect();
            let image = |n: usize| {
                let rows = GradientRows {
                    data: &gy[n],
                    rows,
                    row_stride,
                };
                (rows, src[n].as_slice())
            };
            // Images in two calls, as a caller preparing them a chunk at a time makes them.
            filter_gradient_gemm(rows, columns, &mut got, |gemm| {
                gemm.add_images(&offsets, runs, 2, image);
                gemm.add_images(&offsets, runs, images - 2, |n| image(n + 2));
            });
            for i in 0..rows {
                for (j, &offset) in offsets.iter().enumerate() {
                    let mut want = (i * columns + j) as f64;
                    for n in 0..images {
                        for p in 0..len {
                            let at = offset + p / runs.run * runs.row_stride + p % runs.run;
                            want += gy[n][i * row_stride + p] as f64 * src[n][at] as f64;
                        }
                    }
                    let got = got[i * columns + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "rows {rows}, {runs:?}: ({i}, {j}) is {got}, not {want}"
                    );
                }
            }
        }
    }
}
