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

use super::parallel::valid_columns;
use super::shape::Conv2dShape;
use crate::kernels::gemm::Caches;
use crate::kernels::scratch::with_scratch_parts;
use crate::kernels::vector::{
    TransposeIntoPanel, Vector, VectorKernel, transpose_block_into, with_vector,
};
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

/// How a product's positions lie in the source: `rows` runs of `run` positions, position `q`
/// of run `r` of a column at `r · row_stride + q · step` from the column's offset
/// ([`ColumnSource`]). The output gradient holds the same positions contiguously (`rows · run`
/// of them), so a source laid out otherwise (padded wider than the output, or the input planes
/// themselves, read at the convolution's strides) is read where it lies.
#[derive(Clone, Copy, Debug)]
pub(super) struct SourceRuns {
    pub rows: usize,
    pub run: usize,
    pub row_stride: usize,
    pub step: usize,
}

impl SourceRuns {
    /// `len` contiguous positions: one run.
    pub fn contiguous(len: usize) -> SourceRuns {
        SourceRuns {
            rows: 1,
            run: len,
            row_stride: len,
            step: 1,
        }
    }

    /// The positions of the product.
    fn len(&self) -> usize {
        self.rows * self.run
    }

    /// Floats from position `(0, 0)` to position `(r, q)`.
    fn at(&self, r: usize, q: usize) -> usize {
        r * self.row_stride + q * self.step
    }
}

/// Where one column of the product (a row `(c, kh, kw)` of the column matrix) reads: position
/// `(r, q)` at `offset + runs.at(r, q)` of the source, for the runs `rows` and the positions
/// `positions` of each run; the others are the convolution's padding, zero, and never read.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ColumnSource {
    pub offset: isize,
    pub rows: Range<usize>,
    pub positions: Range<usize>,
}

impl ColumnSource {
    /// A column that reads every position from `offset`.
    pub fn everywhere(offset: usize, runs: SourceRuns) -> ColumnSource {
        ColumnSource {
            offset: offset as isize,
            rows: 0..runs.rows,
            positions: 0..runs.run,
        }
    }

    /// Where the column's reads start and end (inclusive) in the source, unless it reads
    /// nothing.
    fn extent(&self, runs: SourceRuns) -> Option<(isize, isize)> {
        let (rows, positions) = (&self.rows, &self.positions);
        if rows.is_empty() || positions.is_empty() {
            return None;
        }
        let first = self.offset + runs.at(rows.start, positions.start) as isize;
        let last = self.offset + runs.at(rows.end - 1, positions.end - 1) as isize;
        Some((first, last))
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
    // The sums are not zeroed: the first chunk's products write them (`started`).
    with_scratch_parts([chunk * stride, columns * stride], |[panel, sums]| {
        let mut gemm = FilterGradientGemm {
            rows,
            columns,
            stride,
            chunk,
            panel,
            sums,
            started: false,
        };
        let result = f(&mut gemm);
        if gemm.started {
            with_vector(AddTransposed {
                sums: gemm.sums,
                stride,
                grad_weight,
                columns,
            });
        }
        result
    })
}

/// `grad_weight[i·columns + j] += sums[j·stride + i]`, a block of vectors at a time transposed
/// in registers and added into the gradient's rows. A scalar add reading `sums` down its
/// columns was 2.9% of ResNet's stride-2 filter gradient (once per thread); a transposition
/// into a scratch buffer, then the add, 6% of its 256 → 512 channels layer's (4.7 MB of sums).
struct AddTransposed<'a> {
    sums: &'a [f32],
    stride: usize,
    grad_weight: &'a mut [f32],
    columns: usize,
}

impl VectorKernel for AddTransposed<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let AddTransposed {
            sums,
            stride,
            grad_weight,
            columns,
        } = self;
        let rows = grad_weight.len() / columns.max(1);
        assert!(rows <= stride && sums.len() >= columns * stride);
        assert_eq!(grad_weight.len(), rows * columns);
        let (src, dst) = (sums.as_ptr(), grad_weight.as_mut_ptr());
        for i in (0..rows).step_by(V::LANES) {
            let count = (rows - i).min(V::LANES);
            for j in (0..columns).step_by(V::LANES) {
                let width = (columns - j).min(V::LANES);
                // SAFETY: `with_vector` runs this with a type the CPU supports. Row `r <
                // width` of the block reads `count` floats of `sums` from `(j + r)·stride +
                // i`, within column `j + r < columns` as `i + count <= rows <= stride`
                // (asserted); column `m < count` adds `width` floats into gradient row
                // `i + m < rows` from its column `j`, `j + width <= columns`.
                unsafe {
                    transpose_block_into::<V>(
                        width,
                        count,
                        |r| src.add((j + r) * stride + i),
                        |m, column: V| {
                            let at = dst.add((i + m) * columns + j);
                            let mask = V::zero().first_lanes(width);
                            let sum = V::load_masked(at, mask).add(column);
                            sum.store_first(at, width);
                        },
                    );
                }
            }
        }
    }
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
    /// `dWᵀ`: `sums[j·stride + i]` for column `j` and row `i`; unspecified until `started`.
    sums: &'s mut [f32],
    /// Whether a product has written the sums (the first writes, the others add).
    started: bool,
}

impl FilterGradientGemm<'_> {
    /// Adds `Σ_images Σ_(r, q) dY_n[i, r·run + q] · src_n[columns[j].offset + runs.at(r, q)]`
    /// to the sums `(i, j)` for the images `n` that `image(n)` hands out (`(dY_n, src_n)`,
    /// `count` of them), over the positions `(r, q)` of `runs` that column `j` reads
    /// ([`ColumnSource`]): the filter gradient with the column matrix's row `j` read in place
    /// in the image's planes.
    ///
    /// # Panics
    ///
    /// If `columns` has not one entry per column of the gradient or names positions `runs`
    /// lacks, or a read would leave an image's operands.
    pub fn add_images<'a>(
        &mut self,
        columns: &[ColumnSource],
        runs: SourceRuns,
        count: usize,
        image: impl Fn(usize) -> (GradientRows<'a>, &'a [f32]),
    ) {
        let (rows, stride, len) = (self.rows, self.stride, runs.len());
        assert_eq!(
            columns.len(),
            self.columns,
            "filter_gradient_gemm: one source per column"
        );
        assert!(
            columns
                .iter()
                .all(|c| c.rows.end <= runs.rows && c.positions.end <= runs.run),
            "filter_gradient_gemm: a column reads positions {runs:?} lacks"
        );
        if rows == 0 || self.columns == 0 || len == 0 || count == 0 {
            return;
        }
        // The images' positions one after the other, in chunks of part of one image, or of
        // several small images where the sums outgrow L2: a chunk of one small image (ResNet's
        // 7x7 outputs, 49 positions) then read and wrote every sum once per image, out to L3
        // and back (4.7 MB for 256 → 512 channels), for 49 multiply-adds each. Where the sums
        // stay in L2, one small image's panel stays in L1 while the tiles of rows go by, and
        // several images' did not (its 1x1 shortcut, 512 KB of sums, 0.95x). Chunks of a fixed
        // size that split images anywhere cost 4-7% on larger images.
        let sums_in_l2 = size_of_val(self.sums) <= Caches::of_this_cpu().l2 / 2;
        let chunks: Vec<Range<usize>> = if len >= self.chunk || sums_in_l2 {
            (0..count)
                .flat_map(|n| {
                    let chunk = self.chunk;
                    (0..len)
                        .step_by(chunk)
                        .map(move |first| n * len + first..n * len + (first + chunk).min(len))
                })
                .collect()
        } else {
            let images = self.chunk / len;
            (0..count)
                .step_by(images)
                .map(|n| n * len..(n + images).min(count) * len)
                .collect()
        };
        // What the runs of a column outside its rows read instead: one run of zeros.
        let zeros = if columns.iter().any(|c| c.rows != (0..runs.rows)) {
            vec![0.0; runs.at(0, runs.run - 1) + 1]
        } else {
            Vec::new()
        };
        let (gys, srcs): (Vec<GradientRows<'a>>, Vec<&'a [f32]>) = (0..count).map(image).unzip();
        for gy in &gys {
            assert!(
                gy.rows == rows && (rows - 1) * gy.row_stride + len <= gy.data.len(),
                "filter_gradient_gemm: the output gradient holds {rows} rows of {len}"
            );
        }
        for depth in chunks {
            // `panel[(p − depth.start)·stride + i] = dY_n[i, p mod len]` for image
            // `n = p / len`, zero for `rows <= i < stride`: each image's part in turn.
            let mut p = depth.start;
            while p < depth.end {
                let (gy, position) = (&gys[p / len], p % len);
                let part = (len - position).min(depth.end - p);
                with_vector(TransposeIntoPanel {
                    src: &gy.data[position..],
                    stride: gy.row_stride,
                    lines: rows,
                    depth: part,
                    width: stride,
                    out: &mut self.panel[(p - depth.start) * stride..],
                });
                p += part;
            }
            with_vector(PanelProduct {
                panel: self.panel,
                stride,
                depth,
                runs,
                srcs: &srcs,
                columns,
                zeros: &zeros,
                start_from_zero: !self.started,
                sums: self.sums,
            });
            self.started = true;
        }
    }
}

/// Adds `Σ_{n in images} dY_n · cols_nᵀ` into `grad_weight` (`[O/groups, Cg·KH·KW]` per
/// group) with the column matrix read from the input planes as they lie: column `(c, kh, kw)`
/// reads, at output `(oh, ow)`, input `(oh·sh + kh·dh − pt, ow·sw + kw·dw − pl)` of channel
/// `c`, a run of `OW` positions `sw` apart for each output row, and skips the outputs whose
/// tap falls in the padding (a [`ColumnSource`] per column). The output gradient is read where
/// it lies too: no padded or phase-split copy of the input, no widened copy of the gradient.
///
/// # Panics
///
/// If the CPU lacks AVX-512 and AVX2, or a slice does not hold what `s` says.
pub(super) fn accumulate_filter_gradient_in_place(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    images: Range<usize>,
    grad_weight: &mut [f32],
) {
    let (cg, og, k) = (s.group_in(), s.group_out(), s.group_patch());
    let (in_plane, out_plane) = (s.in_plane(), s.out_plane());
    let (image_in, image_out) = (s.in_channels * in_plane, s.out_channels * out_plane);
    let ([sh, sw], [dh, dw]) = (s.spec.stride, s.spec.dilation);
    let p = s.spec.padding;
    let runs = SourceRuns {
        rows: s.out_height,
        run: s.out_width,
        row_stride: sh * s.in_width,
        step: sw,
    };
    let mut columns = Vec::with_capacity(k);
    for c in 0..cg {
        for kh in 0..s.kernel_height {
            let row = (kh * dh) as isize - p.top as isize;
            let (top, bottom) = valid_columns(0, s.out_height, sh, row, s.in_height);
            for kw in 0..s.kernel_width {
                let column = (kw * dw) as isize - p.left as isize;
                let (left, right) = valid_columns(0, s.out_width, sw, column, s.in_width);
                columns.push(ColumnSource {
                    offset: (c * in_plane) as isize + row * s.in_width as isize + column,
                    rows: top..bottom,
                    positions: left..right,
                });
            }
        }
    }
    for g in 0..s.spec.groups {
        filter_gradient_gemm(og, k, &mut grad_weight[g * og * k..][..og * k], |gemm| {
            gemm.add_images(&columns, runs, images.len(), |m| {
                let n = images.start + m;
                let gy = &grad_output[n * image_out + g * og * out_plane..][..og * out_plane];
                let gy = GradientRows {
                    data: gy,
                    rows: og,
                    row_stride: out_plane,
                };
                (
                    gy,
                    &input[n * image_in + g * cg * in_plane..][..cg * in_plane],
                )
            })
        });
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

/// `sums[j·stride + i] += Σ_(p in depth) panel[(p − depth.start)·stride + i] · x_j(p)`, where
/// `x_j(p)` is what column `j` reads at position `p mod len = r·run + q` of `runs` in image
/// `n = p / len` (`srcs[n][columns[j].offset + runs.at(r, q)]`, or zero outside its rows and
/// positions), `len` being `runs.len()`: the images' positions one after the other.
///
/// `zeros` holds a run of zeros (`runs.at(0, run − 1) + 1` floats) if a column skips rows.
struct PanelProduct<'a> {
    panel: &'a [f32],
    stride: usize,
    depth: Range<usize>,
    runs: SourceRuns,
    srcs: &'a [&'a [f32]],
    columns: &'a [ColumnSource],
    zeros: &'a [f32],
    /// Whether the product writes `sums` (`=` rather than `+=`): every one of them.
    start_from_zero: bool,
    sums: &'a mut [f32],
}

impl VectorKernel for PanelProduct<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let (max_vectors, max_rows) = tile_shape(V::LANES);
        let vectors = self.stride / V::LANES;
        let columns = self.columns.len();
        assert!(self.stride.is_multiple_of(V::LANES));
        assert!(self.sums.len() >= columns * self.stride);
        assert!(self.panel.len() >= self.depth.len() * self.stride);
        assert!(self.depth.end <= self.srcs.len() * self.runs.len());
        let src_len = self.srcs.iter().map(|src| src.len()).min().unwrap_or(0);
        for column in self.columns {
            if let Some((first, last)) = column.extent(self.runs) {
                assert!(
                    first >= 0 && last < src_len as isize,
                    "filter_gradient_gemm: {column:?} reads {first}..={last} of a source of \
                     {src_len}"
                );
            }
            assert!(
                column.rows == (0..self.runs.rows)
                    || self.zeros.len() > self.runs.at(0, self.runs.run - 1),
                "filter_gradient_gemm: no run of zeros for the rows {column:?} skips"
            );
        }
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
                // asserts above bound the tile's vectors (`first_vector + v < stride / LANES`),
                // rows (`first_row + r < columns`) and positions (of the images there are
                // sources for), and every column's reads: of each source from its first to its
                // last (the reads grow with the run and the position), of `zeros` a run where
                // it skips rows.
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
    /// `(first_vector + VECS)·LANES <= stride`, `first_row + ROWS <= columns.len()`, and the
    /// fields hold what [`PanelProduct`] describes.
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
            let mut acc = [[V::zero(); VECS]; ROWS];
            if !self.start_from_zero {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (v, acc) in acc.iter_mut().enumerate() {
                        *acc = V::load(sums.add(at(r, v)));
                    }
                }
            }
            let columns = &self.columns[first_row..first_row + ROWS];
            // The positions of a run that every column of the tile reads; the others check
            // column by column.
            let (mut every_start, mut every_end) = (0, self.runs.run);
            for column in columns {
                every_start = every_start.max(column.positions.start);
                every_end = every_end.min(column.positions.end);
            }
            let mut panel = self.panel.as_ptr().add(first_vector * V::LANES);
            let len = self.runs.len();
            // The chunk's positions a run (or the part of one inside the chunk) at a time.
            let mut p = self.depth.start;
            while p < self.depth.end {
                let (src, position) = (self.srcs[p / len], p % len);
                let (r, q) = (position / self.runs.run, position % self.runs.run);
                let end = q + (self.runs.run - q).min(self.depth.end - p);
                // Each column's run `r`, or zeros where its rows skip it (pointers only formed
                // here; read at the positions the column reads).
                let mut rows = [self.zeros.as_ptr(); ROWS];
                for (row, column) in rows.iter_mut().zip(columns) {
                    if column.rows.contains(&r) {
                        let start = column.offset + self.runs.at(r, 0) as isize;
                        *row = src.as_ptr().wrapping_offset(start);
                    }
                }
                let every =
                    every_start.clamp(q, end)..every_end.clamp(every_start.clamp(q, end), end);
                panel = self.positions::<V, VECS, ROWS, true>(
                    &mut acc,
                    &rows,
                    columns,
                    panel,
                    q..every.start,
                );
                panel = self.positions::<V, VECS, ROWS, false>(
                    &mut acc,
                    &rows,
                    columns,
                    panel,
                    every.clone(),
                );
                panel = self.positions::<V, VECS, ROWS, true>(
                    &mut acc,
                    &rows,
                    columns,
                    panel,
                    every.end..end,
                );
                p += end - q;
            }
            for (r, acc) in acc.iter().enumerate() {
                for (v, sum) in acc.iter().enumerate() {
                    sum.store(sums.add(at(r, v)));
                }
            }
        }
    }

    /// Positions `positions` of one run into the tile's sums `acc`: the panel's steps from
    /// `panel` (returned advanced past them) against each column's run at `rows`. With
    /// `CHECKED`, a column outside its positions adds zero; without, every column reads them.
    ///
    /// # Safety
    ///
    /// As [`PanelProduct::tile`]; `rows` are the tile's columns' runs (their starts in the
    /// source, or `zeros`), and the panel holds the positions' steps from `panel`; without
    /// `CHECKED`, every column reads `positions`.
    #[inline(always)]
    unsafe fn positions<V: Vector, const VECS: usize, const ROWS: usize, const CHECKED: bool>(
        &self,
        acc: &mut [[V; VECS]; ROWS],
        rows: &[*const f32; ROWS],
        columns: &[ColumnSource],
        mut panel: *const f32,
        positions: Range<usize>,
    ) -> *const f32 {
        let step = self.runs.step;
        // SAFETY: the caller's contract: each read is a position its column reads (or, in a
        // run it skips, of `zeros`, one run long).
        unsafe {
            for q in positions {
                let mut dy = [V::zero(); VECS];
                for (v, dy) in dy.iter_mut().enumerate() {
                    *dy = V::load(panel.add(v * V::LANES));
                }
                panel = panel.add(self.stride);
                for (r, (acc, row)) in acc.iter_mut().zip(rows).enumerate() {
                    let x = if CHECKED && !columns[r].positions.contains(&q) {
                        0.0
                    } else {
                        *row.add(q * step)
                    };
                    let x = V::splat(x);
                    for v in 0..VECS {
                        acc[v] = x.mul_add(dy[v], acc[v]);
                    }
                }
            }
        }
        panel
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
        // Contiguous positions, and runs of a source wider than the gradient or read at a
        // stride (runs shorter and longer than a chunk, a chunk ending inside a run).
        let runs = |rows: usize, run: usize, row_stride: usize, step: usize| SourceRuns {
            rows,
            run,
            row_stride,
            step,
        };
        let cases = [
            (1, SourceRuns::contiguous(5)),
            (5, SourceRuns::contiguous(17)),
            (16, SourceRuns::contiguous(40)),
            (17, SourceRuns::contiguous(3)),
            (70, SourceRuns::contiguous(1000)),
            (64, SourceRuns::contiguous(4200)),
            (20, runs(7, 5, 8, 1)),
            (33, runs(28, 28, 29, 1)),
            (64, runs(3, 1500, 1503, 1)),
            (128, runs(45, 100, 117, 1)),
            (40, runs(9, 12, 50, 2)),
            (96, runs(30, 40, 240, 3)),
        ];
        for (rows, runs) in cases {
            // Every column everywhere, then columns skipping rows and positions at either end
            // (as a convolution's taps skip its padding), from offsets before the source.
            let everywhere: Vec<ColumnSource> = (0..13)
                .map(|j| ColumnSource::everywhere(j * 5 + j % 3, runs))
                .collect();
            let skipping: Vec<ColumnSource> = (0..13)
                .map(|j| {
                    let (top, bottom) = (j % 3, runs.rows - (j / 3) % 2);
                    let (left, right) = ((j / 2) % 2, runs.run - j % 2);
                    let first = runs.at(top, left) as isize;
                    ColumnSource {
                        offset: (j * 7) as isize - first,
                        rows: top.min(bottom)..bottom,
                        positions: left.min(right)..right,
                    }
                })
                .collect();
            check_against_the_sum(rows, runs, &everywhere);
            check_against_the_sum(rows, runs, &skipping);
        }
        // Sums too large for L2 (a few MB): chunks of several small images.
        let runs = runs(3, 5, 9, 2);
        let columns: Vec<ColumnSource> = (0..150_000)
            .map(|j| ColumnSource::everywhere(j % 101, runs))
            .collect();
        let bytes = columns.len() * 16 * size_of::<f32>();
        assert!(bytes > Caches::of_this_cpu().l2 / 2, "the sums fit in L2");
        check_against_the_sum(9, runs, &columns);
    }

    fn check_against_the_sum(rows: usize, runs: SourceRuns, columns: &[ColumnSource]) {
        let value = |n: usize, i: usize| ((n * 31 + i * 7) % 23) as f32 * 0.25 - 2.5;
        let len = runs.len();
        let src_len = columns
            .iter()
            .filter_map(|c| c.extent(runs))
            .map(|(_, last)| last as usize + 1)
            .max()
            .unwrap_or(0);
        let row_stride = len + 3;
        let images = 3;
        let gy: Vec<Vec<f32>> = (0..images)
            .map(|n| (0..rows * row_stride).map(|i| value(n, i)).collect())
            .collect();
        let src: Vec<Vec<f32>> = (0..images)
            .map(|n| (0..src_len).map(|i| value(n + 5, i)).collect())
            .collect();
        let mut got: Vec<f32> = (0..rows * columns.len()).map(|i| i as f32).collect();
        let image = |n: usize| {
            let rows = GradientRows {
                data: &gy[n],
                rows,
                row_stride,
            };
            (rows, src[n].as_slice())
        };
        // Images in two calls, as a caller preparing them a chunk at a time makes them.
        filter_gradient_gemm(rows, columns.len(), &mut got, |gemm| {
            gemm.add_images(columns, runs, 2, image);
            gemm.add_images(columns, runs, images - 2, |n| image(n + 2));
        });
        for i in 0..rows {
            for (j, column) in columns.iter().enumerate() {
                let mut want = (i * columns.len() + j) as f64;
                for n in 0..images {
                    for p in 0..len {
                        let (r, q) = (p / runs.run, p % runs.run);
                        if column.rows.contains(&r) && column.positions.contains(&q) {
                            let at = (column.offset + runs.at(r, q) as isize) as usize;
                            want += gy[n][i * row_stride + p] as f64 * src[n][at] as f64;
                        }
                    }
                }
                let got = got[i * columns.len() + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "rows {rows}, {runs:?}, {column:?}: ({i}, {j}) is {got}, not {want}"
                );
            }
        }
    }
}
