//! The crate's one matrix-multiply entry point: a packed product (`packed.rs`) over
//! register-blocked micro-kernels for AVX-512, AVX2 and a portable fallback (`micro.rs`), chosen
//! at run time (capped by `STRIATE_ISA`), with cache blocks sized from the CPU's own caches
//! (`blocking.rs`; `STRIATE_LOG_KERNELS=1` prints the choice).
//!
//! Operands are strided views ([`MatRef`], [`MatMut`]) over slices, so a transpose is a swap of
//! strides, never a copy. Parallelism follows the crate's rule of one level at a time: a call
//! from the main thread uses rayon's pool inside the product; a call from inside a rayon task
//! (an outer loop that is already parallel) runs on that task alone.

mod blocking;
mod micro;
mod packed;

use crate::tensor::check::contract_violation;
use crate::util::simd::{self, dispatch};
use rayon::prelude::*;

pub use crate::kernels::LOG_VARIABLE;
pub(crate) use blocking::Caches;

/// A read-only matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A writable matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// Panics unless every element of a `rows x cols` view with these strides lies in `len`.
#[track_caller]
fn check_extent(
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    let last = (rows - 1) * row_stride + (cols - 1) * col_stride;
    if last >= len {
        contract_violation(
            "gemm",
            format_args!("{what} view reaches element {last} of a slice of length {len}"),
            format_args!("{what} {rows}x{cols}, strides ({row_stride}, {col_stride})"),
        );
    }
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` matrix stored densely in `data`.
    ///
    /// # Panics
    ///
    /// If `data` is shorter than `rows * cols`.
    #[track_caller]
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// A matrix with explicit strides (in elements).
    ///
    /// # Panics
    ///
    /// If the view reaches past the end of `data`.
    #[track_caller]
    pub fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        check_extent("input", data.len(), rows, cols, row_stride, col_stride);
        MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// The transpose, as a view of the same data.
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

impl<'a> MatMut<'a> {
    /// A row-major `rows x cols` matrix stored densely in `data`.
    ///
    /// # Panics
    ///
    /// If `data` is shorter than `rows * cols`.
    #[track_caller]
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// A matrix with explicit strides (in elements). The strides must not make two elements
    /// share memory: one of them must step over a whole row or column of the other.
    ///
    /// # Panics
    ///
    /// If the view reaches past the end of `data`, or elements would overlap.
    #[track_caller]
    pub fn strided(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        check_extent("output", data.len(), rows, cols, row_stride, col_stride);
        let disjoint = rows <= 1 && (cols <= 1 || col_stride > 0)
            || cols <= 1 && row_stride > 0
            || (col_stride > 0 && row_stride >= cols * col_stride)
            || (row_stride > 0 && col_stride >= rows * row_stride);
        if !disjoint {
            contract_violation(
                "gemm",
                "output strides make elements overlap",
                format_args!("output {rows}x{cols}, strides ({row_stride}, {col_stride})"),
            );
        }
        MatMut {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// The transpose, as a view of the same data.
    pub fn t(self) -> Self {
        MatMut {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            data: self.data,
        }
    }

    /// A view of the same elements for a shorter borrow.
    pub(crate) fn reborrow(&mut self) -> MatMut<'_> {
        MatMut {
            data: self.data,
            ..*self
        }
    }
}

/// What [`gemm_with_epilogue`] does to each element of the product after `alpha · lhs · rhs +
/// beta · dst`, as each tile is stored (while the tile is still in L1): add a bias, then (if
/// `relu`) ReLU. The layer's bias and activation without another pass over the output.
///
/// # Examples
///
/// ```
/// use striate::kernels::gemm::{Bias, Epilogue};
///
/// let bias = [0.5, -0.5];
/// let epilogue = Epilogue { bias: Bias::PerRow(&bias), relu: true };
/// assert!(epilogue.relu);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// Added first.
    pub bias: Bias<'a>,
    /// `max(y, 0)` after the bias ([`crate::kernels::relu`]: NaN stays NaN).
    pub relu: bool,
}

/// The bias an [`Epilogue`] adds.
#[derive(Clone, Copy, Debug, Default)]
pub enum Bias<'a> {
    /// No bias.
    #[default]
    None,
    /// `bias[i]` to every element of row `i` (a convolution's output channels as rows).
    PerRow(&'a [f32]),
    /// `bias[j]` to every element of column `j` (a dense layer's outputs as columns).
    PerColumn(&'a [f32]),
}

impl<'a> Epilogue<'a> {
    /// The same epilogue for the transposed product.
    fn t(self) -> Epilogue<'a> {
        let bias = match self.bias {
            Bias::None => Bias::None,
            Bias::PerRow(bias) => Bias::PerColumn(bias),
            Bias::PerColumn(bias) => Bias::PerRow(bias),
        };
        Epilogue { bias, ..self }
    }

    /// The same epilogue for the rows from `first` on.
    fn rows_from(self, first: usize) -> Epilogue<'a> {
        let bias = match self.bias {
            Bias::PerRow(bias) => Bias::PerRow(&bias[first..]),
            other => other,
        };
        Epilogue { bias, ..self }
    }

    /// What the micro-kernels do to the tile whose first element is `(i, j)`.
    fn for_tile(self, i: usize, j: usize) -> micro::TileEpilogue {
        let (bias, bias_per_column) = match self.bias {
            Bias::None => (std::ptr::null(), false),
            // The lengths were checked on entry: `m` values per row, `n` per column.
            Bias::PerRow(bias) => (bias[i..].as_ptr(), false),
            Bias::PerColumn(bias) => (bias[j..].as_ptr(), true),
        };
        micro::TileEpilogue {
            bias,
            bias_per_column,
            relu: self.relu,
        }
    }

    /// Element `(i, j)`, finished: the scalar form of what the micro-kernels do to a tile.
    fn finish(self, value: f32, i: usize, j: usize) -> f32 {
        let value = match self.bias {
            Bias::None => value,
            Bias::PerRow(bias) => value + bias[i],
            Bias::PerColumn(bias) => value + bias[j],
        };
        if self.relu {
            crate::kernels::relu(value)
        } else {
            value
        }
    }

    fn is_none(&self) -> bool {
        matches!(self.bias, Bias::None) && !self.relu
    }
}

/// `dst = alpha · lhs · rhs + beta · dst`.
///
/// With `beta == 0` the previous contents of `dst` are not read (NaNs there do not leak).
///
/// # Panics
///
/// If the shapes do not chain: `lhs` is `m x k`, `rhs` is `k x n`, `dst` is `m x n`.
///
/// # Examples
///
/// ```
/// use striate::kernels::gemm::{gemm, MatMut, MatRef};
///
/// let a = [1.0, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
/// let b = [5.0, 6.0, 7.0, 8.0]; // [[5, 6], [7, 8]]
/// let mut c = [0.0; 4];
/// gemm(1.0, MatRef::row_major(&a, 2, 2), MatRef::row_major(&b, 2, 2), 0.0, MatMut::row_major(&mut c, 2, 2));
/// assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
/// // aᵀ · b, through strides alone:
/// gemm(1.0, MatRef::row_major(&a, 2, 2).t(), MatRef::row_major(&b, 2, 2), 0.0, MatMut::row_major(&mut c, 2, 2));
/// assert_eq!(c, [26.0, 30.0, 38.0, 44.0]);
/// ```
#[track_caller]
pub fn gemm(alpha: f32, lhs: MatRef<'_>, rhs: MatRef<'_>, beta: f32, dst: MatMut<'_>) {
    gemm_with_epilogue(alpha, lhs, rhs, beta, dst, Epilogue::default());
}

/// `dst = epilogue(alpha · lhs · rhs + beta · dst)`: [`gemm`] with a bias and ReLU applied to
/// each element as it is stored. The sums are those of [`gemm`], to the bit.
///
/// # Panics
///
/// As [`gemm`], and if the bias does not have one value per row (per column) of `dst`.
///
/// # Examples
///
/// ```
/// use striate::kernels::gemm::{gemm_with_epilogue, Bias, Epilogue, MatMut, MatRef};
///
/// let w = [1.0, -1.0, 2.0, 0.0]; // [[1, -1], [2, 0]]
/// let x = [1.0, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
/// let bias = [0.5, -3.0];
/// let mut y = [0.0; 4];
/// let epilogue = Epilogue { bias: Bias::PerRow(&bias), relu: true };
/// gemm_with_epilogue(
///     1.0,
///     MatRef::row_major(&w, 2, 2),
///     MatRef::row_major(&x, 2, 2),
///     0.0,
///     MatMut::row_major(&mut y, 2, 2),
///     epilogue,
/// );
/// // w·x = [[-2, -2], [2, 4]]; + bias per row = [[-1.5, -1.5], [-1, 1]]; ReLU:
/// assert_eq!(y, [0.0, 0.0, 0.0, 1.0]);
/// ```
#[track_caller]
pub fn gemm_with_epilogue(
    alpha: f32,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    beta: f32,
    mut dst: MatMut<'_>,
    epilogue: Epilogue<'_>,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k || dst.rows != m || dst.cols != n {
        contract_violation(
            "gemm",
            "shapes do not chain as [m, k] x [k, n] -> [m, n]",
            format_args!(
                "lhs [{}, {}], rhs [{}, {}], dst [{}, {}]",
                lhs.rows, lhs.cols, rhs.rows, rhs.cols, dst.rows, dst.cols
            ),
        );
    }
    let bias_len = match epilogue.bias {
        Bias::None => None,
        Bias::PerRow(bias) => Some((bias.len(), m, "row")),
        Bias::PerColumn(bias) => Some((bias.len(), n, "column")),
    };
    if let Some((len, want, per)) = bias_len
        && len != want
    {
        contract_violation(
            "gemm",
            format_args!("the epilogue's bias has one value per {per} of dst"),
            format_args!("bias [{len}], dst [{m}, {n}]"),
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        scale_in_place(dst.reborrow(), beta);
        return finish_in_place(dst, epilogue);
    }
    // One level of parallelism: inside a split the caller already keeps every thread busy.
    let threads = if crate::util::threads::inside_split() {
        1
    } else {
        rayon::current_num_threads()
    };
    if m <= DOT_MAX_ROWS && lhs.col_stride == 1 && rhs.row_stride == 1 && k >= DOT_MIN_DEPTH {
        return dot_products(alpha, lhs, rhs, beta, dst, epilogue, threads);
    }
    if threads > 1 && m * n <= SPLIT_K_MAX_OUTPUT && k >= SPLIT_K_MIN_DEPTH * threads {
        split_depth(alpha, lhs, rhs, beta, dst.reborrow(), threads);
        return finish_in_place(dst, epilogue);
    }
    packed::gemm(alpha, lhs, rhs, beta, dst, epilogue, threads);
}

/// Products of at most this many rows (a dense layer on one image, or a few) whose `rhs`
/// columns are contiguous (a dense weight `[out, in]`, read transposed) are dot products that
/// read each weight row once, in place: the tiled product packs all of `rhs` first, which for
/// VGG-16's first dense layer on one image wrote and read its 411 MB weight once more (pack_rhs
/// was 11% of VGG-16's single-image inference on a Zen 4).
const DOT_MAX_ROWS: usize = 4;

/// Depth from which [`dot_products`] pays (its vectors of partial sums need a few chunks).
const DOT_MIN_DEPTH: usize = 256;

/// Columns of `dst` per task of [`dot_products`].
const DOT_COLUMNS_PER_TASK: usize = 16;

/// `dst = epilogue(alpha · lhs · rhs + beta · dst)` as one dot product per element: row `i` of
/// `lhs` and column `j` of `rhs`, both contiguous, each column of `rhs` read once from memory
/// for all the rows (it stays in L2 meanwhile), over `threads` threads by columns.
fn dot_products(
    alpha: f32,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    beta: f32,
    dst: MatMut<'_>,
    epilogue: Epilogue<'_>,
    threads: usize,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let row = |i: usize| &lhs.data[i * lhs.row_stride..][..k];
    let column = |j: usize| &rhs.data[j * rhs.col_stride..][..k];
    // Column-major sums (`j·m + i`), each task's columns contiguous.
    let mut sums = vec![0.0f32; m * n];
    let fill = |(task, sums): (usize, &mut [f32])| {
        dispatch(
            #[inline(always)]
            || {
                for (c, column_sums) in sums.chunks_exact_mut(m).enumerate() {
                    let b = column(task * DOT_COLUMNS_PER_TASK + c);
                    for (i, sum) in column_sums.iter_mut().enumerate() {
                        *sum = simd::dot(row(i), b);
                    }
                }
            },
        )
    };
    let tasks = sums.chunks_mut(m * DOT_COLUMNS_PER_TASK);
    if threads > 1 {
        let tasks: Vec<&mut [f32]> = tasks.collect();
        tasks.into_par_iter().enumerate().for_each(fill);
    } else {
        tasks.enumerate().for_each(fill);
    }
    for j in 0..n {
        for i in 0..m {
            let x = &mut dst.data[i * dst.row_stride + j * dst.col_stride];
            let product = alpha * sums[j * m + i];
            let value = if beta == 0.0 {
                product
            } else {
                product + beta * *x
            };
            *x = epilogue.finish(value, i, j);
        }
    }
}

/// Applies `epilogue` to every element of `dst`, in place (where the product was not computed
/// by the micro-kernels, which apply it as they store).
fn finish_in_place(dst: MatMut<'_>, epilogue: Epilogue<'_>) {
    if epilogue.is_none() {
        return;
    }
    for i in 0..dst.rows {
        for j in 0..dst.cols {
            let x = &mut dst.data[i * dst.row_stride + j * dst.col_stride];
            *x = epilogue.finish(*x, i, j);
        }
    }
}

/// Outputs up to this many elements with a deep inner dimension are split along the depth
/// instead: splitting a small output into tiles leaves each thread too few tiles, so a
/// `[64, 3136] x [3136, 128]` product (a dense layer after the convolutions) ran slower on two
/// threads than on one (66 vs 86 GFLOP/s with the `gemm` crate) and at 151 GFLOP/s split in two.
const SPLIT_K_MAX_OUTPUT: usize = 128 * 256;
/// The least depth per thread worth a split.
const SPLIT_K_MIN_DEPTH: usize = 512;

/// `dst = alpha · lhs · rhs + beta · dst` with the depth cut into one slice per thread: the
/// first slice lands in `dst`, the others in private buffers added at the end.
fn split_depth(
    alpha: f32,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    beta: f32,
    dst: MatMut<'_>,
    threads: usize,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let slice = k.div_ceil(threads);
    let lhs_cols = |start: usize| MatRef {
        data: &lhs.data[start * lhs.col_stride..],
        cols: slice.min(k - start),
        ..lhs
    };
    let rhs_rows = |start: usize| MatRef {
        data: &rhs.data[start * rhs.row_stride..],
        rows: slice.min(k - start),
        ..rhs
    };
    let mut partials = vec![vec![0.0f32; m * n]; k.div_ceil(slice) - 1];
    let dst_view = MatMut {
        data: &mut *dst.data,
        ..dst
    };
    rayon::join(
        || {
            let first = (lhs_cols(0), rhs_rows(0));
            packed::gemm(
                alpha,
                first.0,
                first.1,
                beta,
                dst_view,
                Epilogue::default(),
                1,
            )
        },
        || {
            partials
                .par_iter_mut()
                .enumerate()
                .for_each(|(i, partial)| {
                    let start = (i + 1) * slice;
                    let view = MatMut::row_major(partial, m, n);
                    let (lhs, rhs) = (lhs_cols(start), rhs_rows(start));
                    packed::gemm(alpha, lhs, rhs, 0.0, view, Epilogue::default(), 1);
                })
        },
    );
    for partial in &partials {
        for (i, row) in partial.chunks_exact(n).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                dst.data[i * dst.row_stride + j * dst.col_stride] += v;
            }
        }
    }
}

fn scale_in_place(dst: MatMut<'_>, beta: f32) {
    for i in 0..dst.rows {
        for j in 0..dst.cols {
            let x = &mut dst.data[i * dst.row_stride + j * dst.col_stride];
            *x = if beta == 0.0 { 0.0 } else { beta * *x };
        }
    }
}

/// Reference product for tests: a triple loop in f64.
#[cfg(test)]
pub(crate) fn naive_gemm(lhs: MatRef<'_>, rhs: MatRef<'_>) -> Vec<f32> {
    let mut out = vec![0.0; lhs.rows * rhs.cols];
    for i in 0..lhs.rows {
        for j in 0..rhs.cols {
            let mut acc = 0.0f64;
            for p in 0..lhs.cols {
                acc += lhs.data[i * lhs.row_stride + p * lhs.col_stride] as f64
                    * rhs.data[p * rhs.row_stride + j * rhs.col_stride] as f64;
            }
            out[i * rhs.cols + j] = acc as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn random(len: usize, rng: &mut StdRng) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    fn assert_close(got: &[f32], want: &[f32], k: usize) {
        let tol = 1e-5 * (k as f32).sqrt().max(1.0);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "element {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn matches_naive_over_shapes_and_transposes() {
        let mut rng = StdRng::seed_from_u64(7);
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (17, 33, 9),
            (64, 288, 100),
            (130, 7, 257),
            // Deeper than a depth block, with partial panels and partial transposed squares.
            (37, 700, 53),
            // A few rows against a transposed rhs: dot products (`dot_products`).
            (1, 700, 53),
            (4, 300, 37),
        ] {
            for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
                let a = random(m * k, &mut rng);
                let b = random(k * n, &mut rng);
                let lhs = if ta {
                    MatRef::row_major(&a, k, m).t()
                } else {
                    MatRef::row_major(&a, m, k)
                };
                let rhs = if tb {
                    MatRef::row_major(&b, n, k).t()
                } else {
                    MatRef::row_major(&b, k, n)
                };
                let want = naive_gemm(lhs, rhs);
                let mut got = vec![f32::NAN; m * n];
                gemm(1.0, lhs, rhs, 0.0, MatMut::row_major(&mut got, m, n));
                assert_close(&got, &want, k);
            }
        }
    }

    #[test]
    fn dot_products_keep_beta_and_the_epilogue() {
        // A dense layer on one to four images: `x · Wᵀ` with W `[out, in]`, a bias per column,
        // ReLU, and beta accumulating into what dst held.
        let mut rng = StdRng::seed_from_u64(13);
        for &(m, k, n) in &[(1, 256, 40), (3, 1000, 70), (4, 513, 16)] {
            let x = random(m * k, &mut rng);
            let w = random(n * k, &mut rng);
            let bias = random(n, &mut rng);
            let (lhs, rhs) = (MatRef::row_major(&x, m, k), MatRef::row_major(&w, n, k).t());
            let product = naive_gemm(lhs, rhs);
            let before = random(m * n, &mut rng);
            for (beta, relu) in [(0.0, true), (0.5, false)] {
                let epilogue = Epilogue {
                    bias: Bias::PerColumn(&bias),
                    relu,
                };
                let mut got = if beta == 0.0 {
                    vec![f32::NAN; m * n]
                } else {
                    before.clone()
                };
                let dst = MatMut::row_major(&mut got, m, n);
                gemm_with_epilogue(2.0, lhs, rhs, beta, dst, epilogue);
                let want: Vec<f32> = (0..m * n)
                    .map(|at| {
                        let earlier = if beta == 0.0 { 0.0 } else { beta * before[at] };
                        epilogue.finish(2.0 * product[at] + earlier, at / n, at % n)
                    })
                    .collect();
                assert_close(&got, &want, k);
            }
        }
    }

    #[test]
    fn the_epilogue_finishes_every_path_of_the_product() {
        // The packed product (a bias per row), the depth split over threads (a small output
        // with a deep inner dimension, a bias per column) and the empty depth (bias alone).
        let mut rng = StdRng::seed_from_u64(9);
        for &(m, k, n, per_row) in &[(30, 50, 70, true), (8, 1200, 16, false), (3, 0, 5, true)] {
            let a = random(m * k, &mut rng);
            let b = random(k * n, &mut rng);
            let bias = random(if per_row { m } else { n }, &mut rng);
            let (lhs, rhs) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
            let product = naive_gemm(lhs, rhs);
            for relu in [false, true] {
                let bias_kind = if per_row {
                    Bias::PerRow(&bias)
                } else {
                    Bias::PerColumn(&bias)
                };
                let epilogue = Epilogue {
                    bias: bias_kind,
                    relu,
                };
                let mut got = vec![f32::NAN; m * n];
                gemm_with_epilogue(
                    1.0,
                    lhs,
                    rhs,
                    0.0,
                    MatMut::row_major(&mut got, m, n),
                    epilogue,
                );
                let want: Vec<f32> = (0..m * n)
                    .map(|at| epilogue.finish(product[at], at / n, at % n))
                    .collect();
                assert_close(&got, &want, k);
            }
        }
    }

    #[test]
    #[should_panic(expected = "one value per row")]
    fn an_epilogue_bias_of_the_wrong_length_panics() {
        let (a, b, bias) = ([1.0; 6], [1.0; 6], [0.0; 3]);
        let mut c = [0.0; 4];
        let epilogue = Epilogue {
            bias: Bias::PerRow(&bias),
            relu: false,
        };
        gemm_with_epilogue(
            1.0,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
            epilogue,
        );
    }

    #[test]
    fn alpha_beta_accumulate() {
        let mut rng = StdRng::seed_from_u64(8);
        let (m, k, n) = (20, 30, 40);
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let c0 = random(m * n, &mut rng);
        let mut c = c0.clone();
        gemm(
            2.0,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            0.5,
            MatMut::row_major(&mut c, m, n),
        );
        let prod = naive_gemm(MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
        let want: Vec<f32> = prod
            .iter()
            .zip(&c0)
            .map(|(p, c)| 2.0 * p + 0.5 * c)
            .collect();
        assert_close(&c, &want, k);
    }

    #[test]
    fn column_major_destination_and_empty_inner_dimension() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0];
        let mut c = [0.0; 6];
        // c (3x2, column-major) = a (3x2 row-major) · I
        gemm(
            1.0,
            MatRef::row_major(&a, 3, 2),
            MatRef::row_major(&b, 2, 2),
            0.0,
            MatMut::strided(&mut c, 3, 2, 1, 3),
        );
        assert_eq!(c, [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
        let mut d = [5.0; 4];
        gemm(
            1.0,
            MatRef::row_major(&[], 2, 0),
            MatRef::row_major(&[], 0, 2),
            0.0,
            MatMut::row_major(&mut d, 2, 2),
        );
        assert_eq!(d, [0.0; 4]);
    }

    #[test]
    fn deep_products_split_along_the_depth() {
        // a small output with a deep inner dimension takes the split-depth path (on a machine
        // with more than one thread); alpha, beta and a transposed destination all apply
        let mut rng = StdRng::seed_from_u64(11);
        let (m, k, n) = (9, 3001, 20);
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let (lhs, rhs) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
        let start = random(m * n, &mut rng);
        let mut got = start.clone(); // holds dst transposed: [n, m]
        gemm(0.5, lhs, rhs, 2.0, MatMut::row_major(&mut got, n, m).t());
        let product = naive_gemm(lhs, rhs);
        let want: Vec<f32> = (0..n * m)
            .map(|t| {
                let (j, i) = (t / m, t % m);
                0.5 * product[i * n + j] + 2.0 * start[t]
            })
            .collect();
        assert_close(&got, &want, k);
    }

    #[test]
    fn same_result_inside_a_rayon_task() {
        let mut rng = StdRng::seed_from_u64(9);
        let (m, k, n) = (96, 200, 150);
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let mut outer = vec![0.0; m * n];
        gemm(
            1.0,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            0.0,
            MatMut::row_major(&mut outer, m, n),
        );
        let inner: Vec<Vec<f32>> = (0..2)
            .into_par_iter()
            .map(|_| {
                let mut c = vec![0.0; m * n];
                gemm(
                    1.0,
                    MatRef::row_major(&a, m, k),
                    MatRef::row_major(&b, k, n),
                    0.0,
                    MatMut::row_major(&mut c, m, n),
                );
                c
            })
            .collect();
        assert_close(&inner[0], &outer, k);
        assert_close(&inner[1], &outer, k);
    }

    #[test]
    #[should_panic(
        expected = "gemm: shapes do not chain as [m, k] x [k, n] -> [m, n] (lhs [2, 3], rhs [4, 2], dst [2, 2])"
    )]
    fn rejects_mismatched_shapes() {
        let a = [0.0; 6];
        let b = [0.0; 8];
        let mut c = [0.0; 4];
        gemm(
            1.0,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 4, 2),
            0.0,
            MatMut::row_major(&mut c, 2, 2),
        );
    }

    #[test]
    #[should_panic(expected = "gemm: input view reaches element 6 of a slice of length 6")]
    fn rejects_views_past_the_slice() {
        MatRef::row_major(&[0.0; 6], 7, 1);
    }
}
