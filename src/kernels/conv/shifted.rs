//! The "shifted GEMM" of the wide-grid convolutions, for AVX-512 and AVX2 CPUs:
//! `out[i, p] = Σ_k a[i, k] · src[offsets[k] + p]`.
//!
//! On the wide grid (see [`super::wide`]) every row `(c, tap)` of the im2col matrix is the
//! padded plane of channel `c` read from a constant offset. Instead of copying those rows into a
//! column matrix and handing it to a general GEMM, this kernel reads them in place: its register
//! tile holds [`block_rows`] output rows by [`tile_vectors`] vectors of columns (8 x 48 with
//! AVX-512, 6 x 16 with AVX2), loads the vectors of each shifted row once and multiplies them
//! by a broadcast weight per output row. No column matrix, no packing of the right-hand side;
//! the weights are packed once per call. The filter gradient's reduction ([`shifted_gemm_reduce`])
//! keeps a tile of dot products in registers: 4 x 6 with AVX-512's 32 registers, 3 x 3 with
//! AVX2's 16.

use super::epilogue::Epilogue;
use crate::kernels::gemm::Caches;
use crate::kernels::scratch::LINE;
use crate::kernels::vector::{Vector, VectorKernel, transpose_block, with_vector};
use crate::util::simd::{Level, level, prefetch_line};
use std::mem::MaybeUninit;

/// Output rows per register tile and per block of [`PackedRows`], by [`tile_vectors`] vectors
/// of columns: 8 with AVX-512 (by three vectors: 24 accumulators of 32 registers), 6 with AVX2
/// (by two: 12 of 16, leaving the two loaded vectors and the broadcast weight their own; 8 rows
/// by one vector, as before, spent 9 loads on 8 multiply-adds and kept only 8 sums in flight).
pub(super) fn block_rows() -> usize {
    match level() {
        Level::Avx512 => 8,
        _ => 6,
    }
}

/// Whether this CPU runs [`shifted_gemm`] (AVX-512 or AVX2).
pub(super) fn available() -> bool {
    level() != Level::Baseline
}

/// Output channels per group from which the filter gradient reads its column matrix in place
/// with [`shifted_gemm_reduce`] instead of im2col + GEMM: the threshold the path was measured
/// with when it landed. Its own number, since the reduction's tiles (4 x 6 vectors on AVX-512,
/// 3 x 3 on AVX2) do not follow [`block_rows`].
pub(super) const REDUCE_MIN_ROWS: usize = 8;

/// Whether this CPU runs [`shifted_gemm_reduce`] (AVX-512 or AVX2).
pub(super) fn reduce_available() -> bool {
    level() != Level::Baseline
}

/// Whether this CPU has the 48-column tiles of [`shifted_gemm`] (AVX-512), with which the
/// backward-data gather beats im2col. With AVX2's 16-column tiles the gather measured 0.8x of
/// im2col + GEMM on ResNet's stride-2 downsampling (Zen 4 capped at AVX2, 2 threads, call by
/// call: medians 109-128 against 135-139 GFLOP/s).
pub(super) fn wide_tiles() -> bool {
    level() == Level::Avx512
}

/// The vectors of columns in one full register tile of [`shifted_gemm`]: three with AVX-512,
/// two with AVX2. Each step of a tile loads its vectors and broadcasts a weight per row, so a
/// third vector (AVX-512 has the registers for it) spends 11 loads on 24 multiply-adds where
/// two spent 10 on 16. Alternated call by call with two vectors (Zen 4, 2 threads): forward
/// +4-5% on MNIST's second layer (Winograd), +3.5% on VGG's 3x3, +3% on ResNet's stride-2
/// downsampling; backward-data +2-3.5%. With AVX2, 4 rows by three vectors (as many sums,
/// 7 loads per 12 multiply-adds where 6 x 2 spends 8) measured level with 6 x 2 on the
/// stride-2 downsampling.
fn tile_vectors(lanes: usize) -> usize {
    if lanes >= 16 { 3 } else { 2 }
}

/// The lanes of this CPU's vectors for [`shifted_gemm`].
fn vector_lanes() -> usize {
    match level() {
        Level::Avx512 => 16,
        Level::Avx2 => 8,
        Level::Baseline => 1,
    }
}

/// The columns of one full register tile of [`shifted_gemm`] on this CPU: a row of `n` columns
/// costs about `n` rounded up to a multiple of it (a remainder goes through tiles of fewer
/// vectors).
pub(super) fn tile_columns() -> usize {
    let lanes = vector_lanes();
    tile_vectors(lanes) * lanes
}

/// A `[rows, depth]` matrix repacked for the kernel: blocks of [`block_rows`] rows, each stored
/// column by column (`block_rows` consecutive values per `k`), the last block padded with zero
/// rows.
pub(super) struct PackedRows {
    data: Vec<f32>,
    rows: usize,
    depth: usize,
    block_rows: usize,
}

/// Packed values below which packing in parallel costs more than it saves.
pub(super) const PARALLEL_PACK_MIN: usize = 16 * 1024;

/// One block of [`PackedRows::from_row_major`]: `block[k·block_rows + i] = rows[i·depth + k]`
/// for the rows given, zero for the rest of the block's rows (the last block's padding).
struct TransposeRows<'a> {
    rows: &'a [f32],
    depth: usize,
    block_rows: usize,
    block: &'a mut [MaybeUninit<f32>],
}

impl VectorKernel for TransposeRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let (depth, width) = (self.depth, self.block_rows);
        let lines = self.rows.len() / depth.max(1);
        assert!(width <= V::LANES && lines <= width && self.block.len() == depth * width);
        let (src, out) = (self.rows.as_ptr(), self.block.as_mut_ptr().cast::<f32>());
        for p in (0..depth).step_by(V::LANES) {
            let count = (depth - p).min(V::LANES);
            // SAFETY: `with_vector` runs this only with a vector type the CPU supports; row
            // `r < lines` holds depth steps `p .. p + count <= depth`, and each column
            // `p + m < depth` stores its `width` floats at `(p + m)·width`, within the block
            // (asserted above); writing through a pointer into uninitialised memory is sound.
            unsafe {
                transpose_block::<V>(
                    lines,
                    count,
                    width,
                    |r| src.add(r * depth + p),
                    |m| out.add((p + m) * width),
                );
            }
        }
    }
}

/// Where each element of a `[rows, depth]` matrix lies in its [`PackedRows`], for code that
/// writes the packed values directly ([`PackedRows::from_packed`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct PackedLayout {
    pub rows: usize,
    pub depth: usize,
    block_rows: usize,
}

impl PackedLayout {
    /// The layout of a `[rows, depth]` matrix on this CPU.
    pub fn new(rows: usize, depth: usize) -> PackedLayout {
        PackedLayout {
            rows,
            depth,
            block_rows: block_rows(),
        }
    }

    /// Floats of one block: `depth · block_rows`. Block `b` is one run of them, holding rows
    /// `b·block_rows..` column by column: element `(b·block_rows + i, k)` at `k·block_rows + i`.
    pub fn block_len(&self) -> usize {
        self.depth * self.block_rows
    }

    /// A walk over the elements in packed order from position `q`.
    pub fn walk_from(&self, q: usize) -> PackedWalk {
        // A matrix of no depth has no elements (and no blocks to divide by).
        let (row, k) = if self.depth == 0 {
            (0, 0)
        } else {
            self.element(q)
        };
        let i = row % self.block_rows;
        PackedWalk {
            layout: *self,
            block_first: row - i,
            i,
            k,
        }
    }

    /// Floats of the packed matrix, padding rows included.
    pub fn len(&self) -> usize {
        self.rows.div_ceil(self.block_rows) * self.block_len()
    }

    /// The element `(row, k)` at packed position `q`; `row >= rows` is a padding row (zero).
    #[inline(always)]
    pub fn element(&self, q: usize) -> (usize, usize) {
        let (block, within) = (q / self.block_len(), q % self.block_len());
        (
            block * self.block_rows + within % self.block_rows,
            within / self.block_rows,
        )
    }
}

/// The elements of a [`PackedLayout`] one after another in packed order, as
/// [`PackedLayout::element`] gives them, with no division per element.
pub(super) struct PackedWalk {
    layout: PackedLayout,
    /// The first row of the current block.
    block_first: usize,
    /// The row within the block.
    i: usize,
    k: usize,
}

impl PackedWalk {
    /// The current element `(row, k)`; `row >= rows` is a padding row.
    #[inline(always)]
    pub fn element(&self) -> (usize, usize) {
        (self.block_first + self.i, self.k)
    }

    /// On to the next position.
    #[inline(always)]
    pub fn advance(&mut self) {
        self.i += 1;
        if self.i == self.layout.block_rows {
            self.i = 0;
            self.k += 1;
            if self.k == self.layout.depth {
                self.k = 0;
                self.block_first += self.layout.block_rows;
            }
        }
    }
}

impl PackedRows {
    /// The matrix whose packed values (`layout.len()` of them, padding rows zero) are `data`.
    ///
    /// # Panics
    ///
    /// If `data` does not hold `layout.len()` floats.
    pub fn from_packed(data: Vec<f32>, layout: PackedLayout) -> PackedRows {
        assert_eq!(data.len(), layout.len(), "PackedRows: packed values");
        PackedRows {
            data,
            rows: layout.rows,
            depth: layout.depth,
            block_rows: layout.block_rows,
        }
    }

    /// Packs the row-major `[rows, depth]` `matrix`: each block of rows is a transpose of
    /// `block_rows` rows, done by vector blocks in registers (the forward's weights of
    /// ResNet's stride-2 convolution took 1% of the pass packed a value at a time).
    ///
    /// # Panics
    ///
    /// If `matrix` does not hold `rows · depth` floats.
    pub fn from_row_major(matrix: &[f32], rows: usize, depth: usize) -> PackedRows {
        assert_eq!(
            matrix.len(),
            rows * depth,
            "PackedRows: a [rows, depth] matrix"
        );
        let layout = PackedLayout::new(rows, depth);
        let (block_rows, block_len, len) = (layout.block_rows, layout.block_len(), layout.len());
        // Not zeroed first: every value is written (a zero-filled buffer put a memset of 1% of
        // the stride-2 forward back).
        let mut data = Vec::with_capacity(len);
        let pack_block = |b: usize, block: &mut [MaybeUninit<f32>]| {
            let first = b * block_rows;
            with_vector(TransposeRows {
                rows: &matrix[first * depth..(first + block_rows).min(rows) * depth],
                depth,
                block_rows,
                block,
            })
        };
        let spare = &mut data.spare_capacity_mut()[..len];
        if len >= PARALLEL_PACK_MIN && !crate::util::threads::inside_split() {
            use rayon::prelude::*;
            spare
                .par_chunks_mut(block_len.max(1))
                .enumerate()
                .for_each(|(b, block)| pack_block(b, block));
        } else {
            for (b, block) in spare.chunks_mut(block_len.max(1)).enumerate() {
                pack_block(b, block);
            }
        }
        // SAFETY: `TransposeRows` wrote all `block_len` values of every block (zeros in the
        // rows past the matrix's last).
        unsafe { data.set_len(len) };
        PackedRows::from_packed(data, layout)
    }

    /// The rows of one block (see [`block_rows`]).
    pub fn block_rows(&self) -> usize {
        self.block_rows
    }

    /// The number of blocks.
    pub fn blocks(&self) -> usize {
        self.rows.div_ceil(self.block_rows)
    }

    /// The rows of block `b` that hold rows of the matrix.
    fn rows_of_block(&self, b: usize) -> usize {
        (self.rows - b * self.block_rows).min(self.block_rows)
    }

    /// The packed weights of block `b`.
    fn block(&self, b: usize) -> &[f32] {
        let len = self.depth * self.block_rows;
        &self.data[b * len..][..len]
    }
}

/// Where grid column `p` of [`shifted_gemm`] is stored: at `p` itself ([`Gaps::NONE`]), or, for
/// a grid whose rows are `row + gap` columns long of which the first `row` are outputs, at
/// `p − ⌊p / (row + gap)⌋ · gap` (the other `gap` columns of each row not at all): a wide grid
/// computed straight into the narrow output, so its extra columns are never copied out. The
/// extra columns are computed (the tiles read the grid as it lies, with no masked loads in
/// the inner loop); only the stores at the end of each tile skip them.
#[derive(Clone, Copy, Debug)]
pub(super) struct Gaps {
    pub row: usize,
    pub gap: usize,
}

impl Gaps {
    /// Grid column `p` is stored at `p`.
    pub const NONE: Gaps = Gaps {
        row: usize::MAX,
        gap: 0,
    };

    /// The columns of one row of the grid (`usize::MAX` without gaps).
    fn grid_row(self) -> usize {
        self.row.saturating_add(self.gap)
    }

    /// The grid column of output column `p`.
    fn source(self, p: usize) -> usize {
        p + p / self.row * self.gap
    }

    /// Where grid column `p` is stored (if it is an output).
    fn destination(self, p: usize) -> usize {
        p - p / self.grid_row() * self.gap
    }

    /// Whether [`shifted_gemm`] takes these gaps on this CPU: a vector of its tile crosses at
    /// most one boundary between rows, and holds the gap of one row at most.
    pub fn supported(self) -> bool {
        self.gap == 0 || self.row >= vector_lanes()
    }
}

/// `out[i·out_stride + p] = epilogue(Σ_k a[i, k] · src[offsets[k] + gaps.source(p)])` for
/// `i < a.rows`, `p < n` (`gaps` [`Gaps::NONE`]: `src[offsets[k] + p]`): computed over the
/// grid columns `0..=gaps.source(n - 1)`, gaps included.
///
/// # Panics
///
/// If the CPU lacks AVX-512 and AVX2, `offsets` does not have one entry per column of `a`, a
/// read or write would leave `src` or `out`, the epilogue's bias has not one value per row, or
/// the gaps are not [`Gaps::supported`].
#[allow(clippy::too_many_arguments)]
pub(super) fn shifted_gemm(
    a: &PackedRows,
    offsets: &[usize],
    src: &[f32],
    gaps: Gaps,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
    epilogue: Epilogue<'_>,
) {
    if let Some(bias) = epilogue.bias {
        assert_eq!(bias.len(), a.rows, "shifted_gemm: one bias per row");
    }
    assert!(
        gaps.supported(),
        "shifted_gemm: rows of {} are shorter than a vector",
        gaps.row
    );
    check_bounds(
        "shifted_gemm",
        a.rows,
        a.depth,
        offsets,
        src,
        if n == 0 { 0 } else { gaps.source(n - 1) + 1 },
        n,
        out,
        out_stride,
    );
    if a.rows == 0 || n == 0 {
        return;
    }
    // Large grids go a chunk of columns at a time through every block of rows, so the part of
    // the padded planes a chunk reads stays in cache while all the blocks use it.
    let parallel = !crate::util::threads::inside_split() && rayon::current_num_threads() > 1;
    let chunk = column_chunk(a.depth);
    let grid_columns = gaps.source(n - 1) + 1;
    for first in (0..grid_columns).step_by(chunk) {
        let columns = first..(first + chunk).min(grid_columns);
        let blocks: Vec<_> = out
            .chunks_mut(a.block_rows * out_stride)
            .take(a.blocks())
            .enumerate()
            .collect();
        let run = |(b, out_block): (usize, &mut [f32])| {
            let rows = a.rows_of_block(b);
            block_product(
                a.block(b),
                a.block_rows,
                rows,
                offsets,
                src,
                gaps,
                columns.clone(),
                out_block,
                out_stride,
                epilogue.rows(b * a.block_rows, rows),
                Prefetch::StepsAhead,
            )
        };
        // Inside a rayon task (one image per thread) the blocks run in turn; called alone (a
        // batch smaller than the thread count, as single-image inference) they are split over
        // threads.
        if parallel {
            use rayon::prelude::*;
            blocks.into_par_iter().for_each(run);
        } else {
            blocks.into_iter().for_each(run);
        }
    }
}

/// A batch of products that share their offsets, for the rows of block `b` only (rows
/// `b·block_rows..`, written from the start of each output), on the calling thread:
/// `out[p·out_step + i·out_stride + q] = Σ_k a[p][b·block_rows + i, k] · src[p·src_step +
/// offsets[k] + q]` for every matrix `a[p]`. For callers that go through their matrices block
/// by block and use each block's results while they are in cache.
///
/// # Panics
///
/// As [`shifted_gemm`], or if the matrices differ in size or have no block `b`.
#[allow(clippy::too_many_arguments)]
pub(super) fn shifted_gemm_block_batch(
    a: &[PackedRows],
    b: usize,
    offsets: &[usize],
    src: &[f32],
    src_step: usize,
    n: usize,
    out: &mut [f32],
    out_step: usize,
    out_stride: usize,
) {
    let Some(first) = a.first() else {
        return;
    };
    let (rows, depth) = (first.rows, first.depth);
    assert!(
        a.iter()
            .all(|m| m.rows == rows && m.depth == depth && m.block_rows == first.block_rows),
        "shifted_gemm_block_batch: matrices of different sizes"
    );
    assert!(b < first.blocks(), "shifted_gemm_block_batch: no block {b}");
    let block_rows = first.rows_of_block(b);
    let last = a.len() - 1;
    assert!(
        last == 0 || out_step >= (block_rows - 1) * out_stride + n,
        "shifted_gemm_block_batch: outputs overlap"
    );
    // The last product reaches furthest: every earlier one stops a whole step before it.
    check_bounds(
        "shifted_gemm_block_batch",
        block_rows,
        depth,
        offsets,
        src.get(last * src_step..).unwrap_or_default(),
        n,
        n,
        out.get(last * out_step..).unwrap_or_default(),
        out_stride,
    );
    if n == 0 {
        return;
    }
    for (p, matrix) in a.iter().enumerate() {
        block_product(
            matrix.block(b),
            matrix.block_rows,
            block_rows,
            offsets,
            &src[p * src_step..],
            Gaps::NONE,
            0..n,
            &mut out[p * out_step..],
            out_stride,
            Epilogue::default(),
            Prefetch::NextTile,
        );
    }
}

/// Panics unless the CPU runs the kernel, `offsets` has one entry per column (`depth`) and
/// every read `src[offsets[k] + p]` (`p < src_columns`) and write `out[i·out_stride + p]`
/// (`i < rows`, `p < n`) is in bounds, with rows that do not overlap.
#[allow(clippy::too_many_arguments)]
fn check_bounds(
    op: &str,
    rows: usize,
    depth: usize,
    offsets: &[usize],
    src: &[f32],
    src_columns: usize,
    n: usize,
    out: &[f32],
    out_stride: usize,
) {
    assert!(available(), "{op}: needs AVX-512 or AVX2");
    assert_eq!(offsets.len(), depth, "{op}: one offset per column");
    if rows == 0 || n == 0 {
        return;
    }
    let last_read = offsets.iter().max().map_or(0, |&m| m + src_columns);
    assert!(
        last_read <= src.len(),
        "{op}: reads reach {last_read} of a source of {}",
        src.len()
    );
    let last_write = (rows - 1) * out_stride + n;
    assert!(
        last_write <= out.len(),
        "{op}: writes reach {last_write} of an output of {}",
        out.len()
    );
    assert!(
        rows == 1 || n <= out_stride,
        "{op}: rows of {n} overlap at stride {out_stride}"
    );
}

/// Output columns per pass through every block of rows in [`shifted_gemm`]: as many whole
/// tiles as keep the source rows they read (`depth` rows of `columns` floats at most, fewer
/// when taps share a plane) within half of L2, and no more than 1024. With the whole grid of
/// ResNet's stride-2 downsampling at once (depth 576, 812 columns: 1.9 MB of reads for a 1 MiB
/// L2), each block of rows fetched the planes from L3 again and two threads scaled 1.75x;
/// chunks of 128 to 384 columns measured alike, 5-7% faster on two threads (Zen 4).
fn column_chunk(depth: usize) -> usize {
    let tile = tile_columns();
    let fits = Caches::of_this_cpu().l2 / 2 / (4 * depth.max(1));
    (fits / tile * tile).clamp(2 * tile, 1024)
}

/// What a full register tile prefetches at each step of [`block_product`].
#[derive(Clone, Copy)]
enum Prefetch {
    /// The lines this tile reads [`STEPS_AHEAD`] steps on: for deep products whose source rows
    /// come from L2 at scattered offsets (ResNet's stride-2 downsampling, depth 576), which the
    /// hardware prefetchers cannot follow. Alternated call by call against [`Prefetch::NextTile`]
    /// (Zen 4, 2 threads): forward medians +2.5-4%, backward-data +2%. With AVX2's 16-column
    /// tiles its three prefetches a step come on 12 multiply-adds, and the choice made at run
    /// time costs the loop registers: the stride-2 forward measured 3-5% slower, so AVX2's
    /// tiles (known at compile time) always take [`Prefetch::NextTile`].
    StepsAhead,
    /// The first line the next tile reads at this step, a whole tile of work ahead: for the
    /// shallow products of Winograd (depth 32), whose steps' rows are a channel's tiles apart
    /// and whose loads waited on L2 in MNIST inference's profile; reading a few steps ahead
    /// instead measured 0.7% slower there.
    NextTile,
}

/// Steps ahead of [`Prefetch::StepsAhead`] (against the next-tile prefetch on the stride-2
/// forward: 3 measured +1%, 6 and 12 +3-5%, with the new build always first in each pair).
const STEPS_AHEAD: usize = 8;

/// One block of `rows` output rows (at most `stride`, the rows the block was packed with) over
/// grid columns `columns`, tile by tile. The caller checked that every read
/// `src[offsets[k] + p]` (`p` in `columns`) and every write
/// `out_block[i·out_stride + gaps.destination(p)]` (`i < rows`) is in bounds, the gaps are
/// supported, and the epilogue's bias (if any) has `rows` values.
#[allow(clippy::too_many_arguments)]
fn block_product(
    block: &[f32],
    stride: usize,
    rows: usize,
    offsets: &[usize],
    src: &[f32],
    gaps: Gaps,
    columns: std::ops::Range<usize>,
    out_block: &mut [f32],
    out_stride: usize,
    epilogue: Epilogue<'_>,
    prefetch: Prefetch,
) {
    debug_assert!(
        columns.is_empty()
            || (rows - 1) * out_stride + gaps.destination(columns.end - 1) < out_block.len()
    );
    debug_assert!(epilogue.bias.is_none_or(|bias| bias.len() == rows));
    debug_assert!(rows <= stride && block.len() == offsets.len() * stride);
    debug_assert!(gaps.supported());
    with_vector(BlockProduct {
        block,
        stride,
        rows,
        offsets,
        src,
        gaps,
        columns,
        out_block,
        out_stride,
        epilogue,
        prefetch,
    });
}

/// The tiles of [`block_product`], for any vector type: `rows` rows by [`tile_vectors`] vectors
/// of columns, and two or one vector for a remainder that fits in fewer.
struct BlockProduct<'a> {
    block: &'a [f32],
    stride: usize,
    rows: usize,
    offsets: &'a [usize],
    src: &'a [f32],
    gaps: Gaps,
    columns: std::ops::Range<usize>,
    out_block: &'a mut [f32],
    out_stride: usize,
    epilogue: Epilogue<'a>,
    prefetch: Prefetch,
}

/// Where one vector of a tile stores its lanes: lanes `..split` from `start`, lanes
/// `resume..` (those of the next row of the grid) `gap` floats short of their own place, the
/// lanes between them (a row's extra grid columns) nowhere; `count` lanes hold columns. Without
/// gaps, `split` and `resume` are at least `count`: all lanes from `start`.
#[derive(Clone, Copy)]
struct VectorTarget {
    start: usize,
    split: usize,
    resume: usize,
    count: usize,
}

impl VectorTarget {
    /// The target of the `count` lanes from grid column `p`.
    #[inline(always)]
    fn new(gaps: Gaps, p: usize, count: usize) -> VectorTarget {
        if gaps.gap == 0 {
            // No divisions (by `usize::MAX`) once per vector of every tile of the gapless
            // products, some of them short (backward-data phases of depth 128).
            return VectorTarget {
                start: p,
                split: usize::MAX,
                resume: usize::MAX,
                count,
            };
        }
        let column = p % gaps.grid_row();
        VectorTarget {
            start: gaps.destination(p),
            split: gaps.row.saturating_sub(column),
            resume: gaps.grid_row() - column,
            count,
        }
    }
}

impl VectorKernel for BlockProduct<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let span = tile_vectors(V::LANES) * V::LANES;
        for first in self.columns.clone().step_by(span) {
            let columns = (self.columns.end - first).min(span);
            let count = |v: usize| columns.saturating_sub(v * V::LANES).min(V::LANES);
            let target = |v: usize| VectorTarget::new(self.gaps, first + v * V::LANES, count(v));
            // SAFETY: `with_vector` runs this only with a vector type the CPU supports; every
            // read `src[offsets[k] + first + j]` and write
            // `out_block[i·out_stride + gaps.destination(first + j)]` has `j < columns` (a
            // partial tile goes through masks), within the bounds the caller checked.
            unsafe {
                let src = self.src.as_ptr().add(first);
                let out = self.out_block.as_mut_ptr();
                macro_rules! rows {
                    ($vecs:literal, $full:literal, $gaps:literal, $at:expr) => {
                        match self.rows {
                            8 => self.tile::<V, 8, $vecs, $full, $gaps>(src, out, $at),
                            7 => self.tile::<V, 7, $vecs, $full, $gaps>(src, out, $at),
                            6 => self.tile::<V, 6, $vecs, $full, $gaps>(src, out, $at),
                            5 => self.tile::<V, 5, $vecs, $full, $gaps>(src, out, $at),
                            4 => self.tile::<V, 4, $vecs, $full, $gaps>(src, out, $at),
                            3 => self.tile::<V, 3, $vecs, $full, $gaps>(src, out, $at),
                            2 => self.tile::<V, 2, $vecs, $full, $gaps>(src, out, $at),
                            _ => self.tile::<V, 1, $vecs, $full, $gaps>(src, out, $at),
                        }
                    };
                }
                macro_rules! gapped {
                    ($vecs:literal, $full:literal, $at:expr) => {
                        if self.gaps.gap == 0 {
                            rows!($vecs, $full, false, $at)
                        } else {
                            rows!($vecs, $full, true, $at)
                        }
                    };
                }
                let two = [target(0), target(1)];
                let one = [target(0)];
                if span == 3 * V::LANES && columns > 2 * V::LANES {
                    let three = [target(0), target(1), target(2)];
                    if columns == span {
                        gapped!(3, true, three)
                    } else {
                        gapped!(3, false, three)
                    }
                } else if columns == 2 * V::LANES {
                    gapped!(2, true, two)
                } else if columns > V::LANES {
                    gapped!(2, false, two)
                } else if columns == V::LANES {
                    gapped!(1, true, one)
                } else {
                    gapped!(1, false, one)
                }
            }
        }
    }
}

impl BlockProduct<'_> {
    /// One register tile: `ROWS` output rows by `VECS` vectors of grid columns from `src`, all
    /// of their lanes when `FULL`, else the first `at[v].count` of vector `v` (read masked).
    /// Vector `v` stores its lanes where `at[v]` says (all from `at[v].start` unless `GAPS`).
    ///
    /// # Safety
    ///
    /// The CPU supports `V`'s instruction set; `block` holds `offsets.len()` columns of
    /// `stride` weights (`ROWS <= stride`); every (enabled) lane `j` of
    /// `src + offsets[k] + v·LANES + j` is readable, and every place `at[v]` stores to from
    /// `out + i·out_stride` (`i < ROWS`) writable.
    #[inline(always)]
    unsafe fn tile<
        V: Vector,
        const ROWS: usize,
        const VECS: usize,
        const FULL: bool,
        const GAPS: bool,
    >(
        &self,
        src: *const f32,
        out: *mut f32,
        at: [VectorTarget; VECS],
    ) {
        debug_assert!(ROWS <= self.stride && self.block.len() == self.offsets.len() * self.stride);
        // SAFETY: the caller's contract; masked-off lanes are neither read nor written; step
        // `k`'s weights are `stride` floats from the block's start, of which the first `ROWS`
        // are read.
        unsafe {
            let mut acc = [[V::zero(); VECS]; ROWS];
            if let Some(bias) = self.epilogue.bias {
                for (acc, &b) in acc.iter_mut().zip(bias) {
                    *acc = [V::splat(b); VECS];
                }
            }
            // A plain loop, not `array::from_fn`: its closure is called through a generic of
            // `core` compiled without this kernel's target features, where AVX2's mask
            // intrinsics became calls (a third of Winograd's AVX2 forward on MNIST's conv2).
            let mut valid = [V::zero().first_lanes(0); VECS];
            for v in 0..VECS {
                valid[v] = V::zero().first_lanes(at[v].count);
            }
            let mut weights = self.block.as_ptr();
            // One depth step at `$offset`, prefetching with `$row` the step's first source.
            macro_rules! step {
                ($offset:expr, $row:ident => $prefetch:block) => {{
                    // The first `ROWS` of this step's `stride` weights (`ROWS <= stride`), as
                    // an array: a slice of runtime length would cost a bounds test per row.
                    let w_step = &*(weights as *const [f32; ROWS]);
                    weights = weights.add(self.stride);
                    let $row = src.add($offset);
                    $prefetch
                    let x: [V; VECS] = std::array::from_fn(|v| {
                        let lanes = $row.add(v * V::LANES);
                        if FULL {
                            V::load(lanes)
                        } else {
                            V::load_masked(lanes, valid[v])
                        }
                    });
                    for (acc, &w) in acc.iter_mut().zip(w_step) {
                        let w = V::splat(w);
                        for v in 0..VECS {
                            acc[v] = w.mul_add(x[v], acc[v]);
                        }
                    }
                }};
            }
            // The prefetch is fixed per loop, not chosen at every step: a test in the loop
            // kept its operands (the choice, the offsets' length) on the stack. Partial tiles
            // prefetch nothing; narrower tiles (AVX2) always the next tile: see `StepsAhead`.
            let offsets = self.offsets;
            let prefetch = match (FULL, V::LANES >= 16) {
                (false, _) => None,
                (true, true) => Some(self.prefetch),
                (true, false) => Some(Prefetch::NextTile),
            };
            match prefetch {
                Some(Prefetch::StepsAhead) => {
                    let near = offsets.len().saturating_sub(STEPS_AHEAD);
                    let later = offsets.get(STEPS_AHEAD..).unwrap_or_default();
                    for (&offset, &ahead) in offsets[..near].iter().zip(later) {
                        step!(offset, _row => {
                            // The tile's span within `VECS + 1` lines.
                            let first = src.wrapping_add(ahead);
                            for line in 0..=VECS {
                                prefetch_line(first.wrapping_add(line * LINE));
                            }
                        });
                    }
                    for &offset in &offsets[near..] {
                        step!(offset, _row => {});
                    }
                }
                Some(Prefetch::NextTile) => {
                    for &offset in offsets {
                        step!(offset, row => {
                            prefetch_line(row.wrapping_add(VECS * V::LANES));
                        });
                    }
                }
                None => {
                    for &offset in offsets {
                        step!(offset, _row => {});
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                let row = out.add(i * self.out_stride);
                for v in 0..VECS {
                    let y = self.epilogue.activate(acc[v]);
                    let VectorTarget {
                        start,
                        split,
                        resume,
                        count,
                    } = at[v];
                    if GAPS {
                        // The lanes of each row of the grid to their own places, its extra
                        // columns nowhere: the next row's lanes are `gap` floats short of
                        // where a plain store would put them (`wrapping_sub`: the lanes
                        // before `resume` are not written). Two masked stores whether or not
                        // the vector crosses a row's end: no branch keeps the tile's sums in
                        // registers (with one, they went through the stack).
                        y.store_first(row.add(start), split.min(count));
                        y.store_masked(
                            row.add(start).wrapping_sub(self.gaps.gap),
                            V::zero().lanes_between(resume, count),
                        );
                    } else if FULL {
                        y.store(row.add(start));
                    } else {
                        y.store_first(row.add(start), count);
                    }
                }
            }
        }
    }
}

/// The left operand of [`shifted_gemm_reduce`]: `rows` rows of `n` values, `row_stride` apart,
/// repeated for each image `image_stride` further on.
pub(super) struct Rows<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub row_stride: usize,
    pub image_stride: usize,
}

/// `out[i, j] += Σ_image Σ_(p < n) lhs[image, i, p] · rhs[image·rhs_image + offsets[j] + p]`,
/// `out` row-major `[lhs.rows, offsets.len()]`: the filter gradient `dW += dY_wide · colsᵀ`
/// summed over a chunk of images, with the column matrix read in place. Lanes are summed
/// across the whole chunk before the one horizontal reduction per output.
///
/// # Panics
///
/// If the CPU lacks AVX-512 and AVX2, `out` has the wrong length, or a read would leave `lhs`
/// or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(super) fn shifted_gemm_reduce(
    lhs: Rows<'_>,
    rhs: &[f32],
    offsets: &[usize],
    rhs_image: usize,
    images: usize,
    n: usize,
    out: &mut [f32],
) {
    assert!(
        reduce_available(),
        "shifted_gemm_reduce: needs AVX-512 or AVX2"
    );
    let columns = offsets.len();
    assert_eq!(
        out.len(),
        lhs.rows * columns,
        "shifted_gemm_reduce: output length"
    );
    if lhs.rows == 0 || columns == 0 || images == 0 || n == 0 {
        return;
    }
    let last_lhs = (images - 1) * lhs.image_stride + (lhs.rows - 1) * lhs.row_stride + n;
    assert!(
        last_lhs <= lhs.data.len(),
        "shifted_gemm_reduce: reads reach {last_lhs} of a left operand of {}",
        lhs.data.len()
    );
    let last_rhs = (images - 1) * rhs_image + offsets.iter().max().map_or(0, |&m| m) + n;
    assert!(
        last_rhs <= rhs.len(),
        "shifted_gemm_reduce: reads reach {last_rhs} of a right operand of {}",
        rhs.len()
    );
    with_vector(Reduce {
        lhs,
        rhs,
        offsets,
        rhs_image,
        images,
        n,
        out,
    });
}

/// The tiles of [`shifted_gemm_reduce`], for any vector type: 4 left rows by 6 right rows with
/// AVX-512 (24 accumulators, 6 right vectors and a left one: all 32 registers), 3 by 3 with
/// AVX2's 16 (9 accumulators, 3 right vectors and a left one: 6 loads per 9 multiply-adds;
/// 2 by 4 spent 6 on 8 and measured 8% slower on the pointwise and stride-2 filter gradients,
/// 2 by 5, all 16 registers, 4% slower; alternated call by call, Zen 4 capped at AVX2).
struct Reduce<'a> {
    lhs: Rows<'a>,
    rhs: &'a [f32],
    offsets: &'a [usize],
    rhs_image: usize,
    images: usize,
    n: usize,
    out: &'a mut [f32],
}

impl VectorKernel for Reduce<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        if V::LANES >= 16 {
            self.tiles::<V, 4, 6>()
        } else {
            self.tiles::<V, 3, 3>()
        }
    }
}

impl Reduce<'_> {
    #[inline(always)]
    fn tiles<V: Vector, const R: usize, const C: usize>(self) {
        let Reduce {
            lhs,
            rhs,
            offsets,
            rhs_image,
            images,
            n,
            out,
        } = self;
        let columns = offsets.len();
        for first_row in (0..lhs.rows).step_by(R) {
            // rows and columns past the end repeat the first one and are not stored
            let mut rows = [lhs.data.as_ptr(); R];
            for (i, row) in rows.iter_mut().enumerate() {
                let r = if first_row + i < lhs.rows {
                    first_row + i
                } else {
                    first_row
                };
                *row = row.wrapping_add(r * lhs.row_stride);
            }
            for first_column in (0..columns).step_by(C) {
                let mut shifts = [rhs.as_ptr(); C];
                for (j, shift) in shifts.iter_mut().enumerate() {
                    *shift = shift.wrapping_add(offsets[(first_column + j).min(columns - 1)]);
                }
                // SAFETY: `with_vector` runs this only with a vector type the CPU supports;
                // every row start plus `n` lies within the bounds the caller asserted, for
                // every image.
                let sums = unsafe {
                    reduce_tile::<V, R, C>(rows, shifts, lhs.image_stride, rhs_image, images, n)
                };
                for (i, sums) in sums.iter().enumerate() {
                    if first_row + i >= lhs.rows {
                        break;
                    }
                    let out_row = &mut out[(first_row + i) * columns..][..columns];
                    for (j, &sum) in sums.iter().enumerate() {
                        if let Some(total) = out_row.get_mut(first_column + j) {
                            *total += sum;
                        }
                    }
                }
            }
        }
    }
}

/// One register tile of [`shifted_gemm_reduce`]: the dot products of `R` left rows with `C`
/// right rows over `n` values of each image.
///
/// # Safety
///
/// The CPU supports `V`'s instruction set; for every image `m < images`, `lhs[i] + m·lhs_image`
/// and `rhs[j] + m·rhs_image` start `n` readable values.
#[inline(always)]
unsafe fn reduce_tile<V: Vector, const R: usize, const C: usize>(
    lhs: [*const f32; R],
    rhs: [*const f32; C],
    lhs_image: usize,
    rhs_image: usize,
    images: usize,
    n: usize,
) -> [[f32; C]; R] {
    // SAFETY (the whole body): the caller's contract; full vectors end at `full <= n`, the
    // tail is masked to `n`.
    unsafe {
        let mut acc = [[V::zero(); C]; R];
        let full = n / V::LANES * V::LANES;
        let tail = V::zero().first_lanes(n - full);
        let (mut lhs, mut rhs) = (lhs, rhs);
        // One step: `R x C` multiply-adds of the vector at `p`.
        macro_rules! load {
            (full, $q:expr) => {
                V::load($q)
            };
            (tail, $q:expr) => {
                V::load_masked($q, tail)
            };
        }
        macro_rules! step {
            ($p:expr, $kind:ident) => {{
                let p: usize = $p;
                let mut x = [V::zero(); C];
                for j in 0..C {
                    x[j] = load!($kind, rhs[j].add(p));
                }
                for i in 0..R {
                    let g = load!($kind, lhs[i].add(p));
                    for j in 0..C {
                        acc[i][j] = g.mul_add(x[j], acc[i][j]);
                    }
                }
            }};
        }
        for _ in 0..images {
            // Full vectors in a loop of their own, the tail after it: one mask chosen inside
            // the loop made LLVM rotate the accumulators through registers every step.
            let mut p = 0;
            while p < full {
                step!(p, full);
                p += V::LANES;
            }
            if full < n {
                step!(full, tail);
            }
            for row in &mut lhs {
                *row = row.wrapping_add(lhs_image);
            }
            for row in &mut rhs {
                *row = row.wrapping_add(rhs_image);
            }
        }
        let mut sums = [[0.0; C]; R];
        for i in 0..R {
            for j in 0..C {
                sums[i][j] = acc[i][j].sum();
            }
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_visits_the_elements_in_packed_order() {
        // A partial last block, walks started inside a block and at a block's start, and a
        // matrix of no depth.
        for (rows, depth) in [(11, 7), (17, 3), (8, 1), (3, 0)] {
            let layout = PackedLayout::new(rows, depth);
            for first in [0, 1, layout.block_len(), layout.len().saturating_sub(1)] {
                if first >= layout.len() {
                    continue;
                }
                let mut walk = layout.walk_from(first);
                for q in first..layout.len() {
                    assert_eq!(walk.element(), layout.element(q), "{rows}x{depth} at {q}");
                    walk.advance();
                }
            }
        }
    }

    #[test]
    fn packs_every_row_and_column_with_zero_padding_rows() {
        if !available() {
            eprintln!("skipped: no AVX-512 or AVX2 on this CPU");
            return;
        }
        // Depths shorter than a vector, not a multiple of one, and several; a lone row, a
        // partial last block; and a matrix large enough to be packed in parallel.
        for (rows, depth) in [(1, 3), (11, 7), (17, 37), (9, 16), (40, 600)] {
            let matrix: Vec<f32> = (0..rows * depth).map(|q| q as f32 + 1.0).collect();
            let packed = PackedRows::from_row_major(&matrix, rows, depth);
            let layout = PackedLayout::new(rows, depth);
            assert_eq!(packed.data.len(), layout.len());
            for (q, &got) in packed.data.iter().enumerate() {
                let (row, k) = layout.element(q);
                let want = if row < rows {
                    matrix[row * depth + k]
                } else {
                    0.0
                };
                assert_eq!(got, want, "[{rows}, {depth}] at ({row}, {k})");
            }
        }
    }

    #[test]
    fn matches_the_naive_sum() {
        if !available() {
            eprintln!("skipped: no AVX-512 or AVX2 on this CPU");
            return;
        }
        // 11 rows (a full block and a partial one), 7 shifted rows; columns in tiles of
        // every kind: with AVX-512's 48 columns a partial tile of three vectors (40, 45), a
        // full tile and a remainder of one (61), two (77) or three vectors (93), with AVX2's
        // 16 full tiles and remainders of one vector (40) or masked (the others). Read
        // contiguously, and from rows with gaps between them (rows one lane longer than a
        // vector, and exactly a vector: boundaries inside vectors, partial tiles and vector
        // starts).
        let (rows, depth) = (11, 7);
        let a = |i: usize, k: usize| ((i * 7 + k * 3) % 11) as f32 - 5.0;
        let matrix: Vec<f32> = (0..rows * depth).map(|q| a(q / depth, q % depth)).collect();
        let offsets: Vec<usize> = (0..depth).map(|k| k * 13 + k % 3).collect();
        let lanes = vector_lanes();
        for (n, gaps) in [40, 45, 61, 77, 93].into_iter().flat_map(|n| {
            [
                Gaps::NONE,
                Gaps {
                    row: lanes + 1,
                    gap: 2,
                },
                Gaps { row: lanes, gap: 1 },
            ]
            .map(|gaps| (n, gaps))
        }) {
            let src: Vec<f32> = (0..offsets[depth - 1] + gaps.source(n - 1) + 1)
                .map(|j| ((j * 5) % 17) as f32 * 0.25 - 2.0)
                .collect();
            let out_stride = n + 3;
            // Without an epilogue, and with a bias and ReLU (a NaN bias stays NaN through it).
            let bias: Vec<f32> = (0..rows)
                .map(|i| if i == 3 { f32::NAN } else { i as f32 - 5.5 })
                .collect();
            for epilogue in [
                Epilogue::default(),
                Epilogue {
                    bias: Some(&bias),
                    activation: crate::kernels::conv::ConvActivation::Relu,
                },
            ] {
                let mut out = vec![f32::NAN; (rows - 1) * out_stride + n];
                shifted_gemm(
                    &PackedRows::from_row_major(&matrix, rows, depth),
                    &offsets,
                    &src,
                    gaps,
                    n,
                    &mut out,
                    out_stride,
                    epilogue,
                );
                for i in 0..rows {
                    for p in 0..n {
                        let sum: f32 = (0..depth)
                            .map(|k| a(i, k) * src[offsets[k] + gaps.source(p)])
                            .sum();
                        let expected = match epilogue.bias {
                            Some(bias) => crate::kernels::relu(bias[i] + sum),
                            None => sum,
                        };
                        let got = out[i * out_stride + p];
                        assert!(
                            got == expected || got.is_nan() && expected.is_nan(),
                            "{n} columns, {gaps:?} ({i}, {p}): {got} against {expected}"
                        );
                    }
                    if i + 1 < rows {
                        assert!(
                            out[i * out_stride + n..(i + 1) * out_stride]
                                .iter()
                                .all(|v| v.is_nan())
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn reduce_matches_the_naive_sum() {
        if !reduce_available() {
            eprintln!("skipped: no AVX-512 or AVX2 on this CPU");
            return;
        }
        // 6 and 7 left rows (AVX-512: a full tile of 4 and a partial one; AVX2: two full
        // tiles of 3, then a partial one), 8 shifted right rows (full tiles and a partial
        // one on both), 37 values (two full vectors and a masked tail), 3 images
        for rows in [6, 7] {
            check_reduce(rows);
        }
    }

    /// [`shifted_gemm_reduce`] of `rows` left rows against the naive sum (small integers and
    /// quarters: exact in any order), added to an output of ones.
    fn check_reduce(rows: usize) {
        let (row_stride, n, images) = (40, 37, 3);
        let offsets: Vec<usize> = (0..8).map(|j| j * 9 + j % 2).collect();
        let lhs_image = rows * row_stride;
        let rhs_image = offsets[7] + n + 5;
        let lhs: Vec<f32> = (0..images * lhs_image)
            .map(|i| ((i * 7) % 13) as f32 - 6.0)
            .collect();
        let rhs: Vec<f32> = (0..images * rhs_image)
            .map(|i| ((i * 5) % 17) as f32 * 0.25 - 2.0)
            .collect();
        let mut out = vec![1.0; rows * offsets.len()];
        let lhs_rows = Rows {
            data: &lhs,
            rows,
            row_stride,
            image_stride: lhs_image,
        };
        shifted_gemm_reduce(lhs_rows, &rhs, &offsets, rhs_image, images, n, &mut out);
        for i in 0..rows {
            for (j, &offset) in offsets.iter().enumerate() {
                let expected: f32 = 1.0
                    + (0..images)
                        .flat_map(|m| (0..n).map(move |p| (m, p)))
                        .map(|(m, p)| {
                            lhs[m * lhs_image + i * row_stride + p]
                                * rhs[m * rhs_image + offset + p]
                        })
                        .sum::<f32>();
                assert_eq!(
                    out[i * offsets.len() + j],
                    expected,
                    "{rows} rows: ({i}, {j})"
                );
            }
        }
    }
}
