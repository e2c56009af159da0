//! The direct path: convolutions whose groups have one input channel each (depthwise
//! convolutions, and single-channel inputs with few filters). A GEMM would have an inner
//! dimension of only `KH·KW`, so instead each output plane is a weighted sum of shifted copies of
//! its input plane.
//!
//! At stride 1 the plane is copied once into a zero-bordered buffer ([`Bordered`]) whose row
//! stride leaves room for every tap, so tap `(kh, kw)` of output `(oh, ow)` is the buffer at
//! `(oh + kh·dh)·width + ow + kw·dw`: the same shift for every output. A register tile of `R`
//! output rows by `C` vectors of 16 columns then sums all taps before it is stored once, with
//! `R·C` independent accumulators (one accumulator per tap chain would wait on the latency of
//! each multiply-add). A row whose width is not a multiple of the tile's is finished by a tile
//! that ends at the row's end and overlaps the one before it (recomputing a few outputs rather
//! than masking them), and the rows likewise. On AVX-512, 3x3 filters with undilated rows skip
//! the copy ([`CorrelateInPlace`]): their tiles read the plane itself, skipping the rows outside
//! it and masking off the lanes of the columns outside it (a masked load costs a plain one
//! there). Backward-data is the same correlation of the output gradient with the taps
//! reversed, bordered by `span − padding` (in place, too, with one filter per channel). The
//! filter gradient
//! keeps all nine tap sums of a 3x3 filter in registers in one pass over the plane, other
//! filters' taps four at a time. 3x3 filters with undilated rows (the common depthwise case)
//! have tiles that load each input vector once for every output row that reads it. The tiles
//! are written once against [`Vector`] (AVX-512, AVX2, portable). At larger strides the
//! forward and the filter gradient read the plane's phase planes (every `sh`-th row and `sw`-th
//! column, see [`Bordered`]) with the same tiles, and backward-data computes each phase of the
//! input gradient as a stride-1 correlation of the output gradient with that phase's taps. On
//! AVX-512, undilated 3x3 filters at stride 2 (MobileNet's downsampling) skip the phase planes:
//! the forward's and the filter gradient's tiles split each vector pair of an input row into
//! its even and odd columns in the registers ([`PlaneAtStrideTwo`]), and with one filter per
//! channel the backward-data sums the even and odd columns of the input gradient from shifted
//! vectors of the output gradient and interleaves them as it stores ([`DataInPlaceStrideTwo`]).

use std::ops::Range;

use rayon::prelude::*;

use super::epilogue::Epilogue;
use super::parallel::sum_over_image_chunks;
use super::shape::{Conv2dShape, ConvActivation};
use crate::kernels::scratch::{LINE, with_scratch_parts};
use crate::kernels::vector::{Vector, VectorKernel, deinterleave_within, interleave, with_vector};
use crate::util::simd::{self, Level, copy_row, line_share, prefetch_share};
use crate::util::threads::{inside_split, split};

/// The widest vector's floats: the zero tail of a bordered buffer, which the tiles of rows
/// narrower than a vector read past the last row.
const MAX_LANES: usize = 16;
/// Output rows of a forward tile (and gradient rows of the 3x3 filter gradient's).
const ROWS: usize = 4;
/// Taps per pass over a plane of the generic filter gradient, and its rows of accumulators.
const TAP_BLOCK: usize = 4;
const GRADIENT_ROWS: usize = 2;

/// A plane of `rows x cols` copied into a zero-bordered buffer of `height x width` (plus a zero
/// tail of one vector, which the tiles of rows narrower than a vector read past the last row),
/// its element `(r, c)` at `(r + top, c + left)`. A negative border crops the plane: the
/// backward-data of a convolution padded wider than its kernel spans never reads those rows.
/// Rows are a whole number of cache lines apart and the grid starts [`Bordered::margin`] floats
/// into the buffer, so every copied row starts on a line.
///
/// At a stride `[sh, sw]` above 1 (the forward and filter gradient of a strided convolution)
/// the buffer holds `sh · sw` such grids, the phase planes: phase `(a, b)` holds the bordered
/// rows `a, a + sh, ...` and columns `b, b + sw, ...`, so tap `(kh, kw)` of output `(oh, ow)`
/// is phase `(kh·dh mod sh, kw·dw mod sw)` at `(oh + ⌊kh·dh / sh⌋, ow + ⌊kw·dw / sw⌋)`: again
/// one shift for every output, and the stride-1 tiles serve (the gather a value at a time they
/// replace ran MobileNet's stride-2 depthwise 3x3 at 3 GFLOP/s).
#[derive(Clone, Copy, Debug)]
struct Bordered {
    rows: usize,
    cols: usize,
    top: isize,
    left: isize,
    width: usize,
    height: usize,
    stride: [usize; 2],
}

impl Bordered {
    /// The buffer from which an `out_rows x out_cols` grid of `kh x kw` taps (dilated by `dh`,
    /// `dw`) reads, for a plane of `rows x cols` placed at `(top, left)`.
    fn for_taps(
        (rows, cols): (usize, usize),
        (top, left): (isize, isize),
        (out_rows, out_cols): (usize, usize),
        s: &Conv2dShape,
    ) -> Bordered {
        let [dh, dw] = s.spec.dilation;
        let [sh, sw] = s.spec.stride;
        let width = out_cols + dw * (s.kernel_width - 1) / sw;
        // Rows a whole number of cache lines apart, and a margin that puts the plane's first
        // column on a line: the copy's stores then write whole lines. With rows of 58 floats
        // stored one float into a line, the copy was 27% of the depthwise S6 forward; aligned,
        // call by call on a Zen 4 (2 threads), its forward +8-13%, backward-data +17%,
        // filter gradient +9%.
        Bordered {
            rows,
            cols,
            top,
            left,
            height: out_rows + dh * (s.kernel_height - 1) / sh,
            width: width.next_multiple_of(LINE),
            stride: [sh, sw],
        }
    }

    /// Unused floats before the grid that put the plane's first column on a cache line (at
    /// stride 1; the phase planes' first columns are where the padding puts them).
    fn margin(&self) -> usize {
        if self.stride != [1, 1] {
            return 0;
        }
        (LINE - self.left.max(0) as usize % LINE) % LINE
    }

    /// Floats of one phase plane (the whole grid at stride 1).
    fn plane_len(&self) -> usize {
        self.height * self.width
    }

    /// The grid inside `buffer` (one of `len()` floats, or several laid `len()` apart), as
    /// the taps read it: from its first row and column, the margin skipped.
    fn grid<'b>(&self, buffer: &'b [f32]) -> &'b [f32] {
        &buffer[self.margin()..]
    }

    /// The forward's buffer: the input plane inside the convolution's padding.
    fn forward(s: &Conv2dShape) -> Bordered {
        let p = s.spec.padding;
        Bordered::for_taps(
            (s.in_height, s.in_width),
            (p.top as isize, p.left as isize),
            (s.out_height, s.out_width),
            s,
        )
    }

    /// The backward-data's buffer: the output gradient inside `span − padding` on each side.
    fn backward_data(s: &Conv2dShape) -> Bordered {
        let p = s.spec.padding;
        let [dh, dw] = s.spec.dilation;
        let span_h = (dh * (s.kernel_height - 1)) as isize;
        let span_w = (dw * (s.kernel_width - 1)) as isize;
        Bordered::for_taps(
            (s.out_height, s.out_width),
            (span_h - p.top as isize, span_w - p.left as isize),
            (s.in_height, s.in_width),
            s,
        )
    }

    fn len(&self) -> usize {
        self.margin() + self.stride[0] * self.stride[1] * self.plane_len() + MAX_LANES
    }

    /// The shift of every tap `(kh, kw)`, row-major, from the first of `planes` buffers laid
    /// `len()` apart.
    fn shifts(&self, s: &Conv2dShape, planes: usize) -> Vec<usize> {
        let [dh, dw] = s.spec.dilation;
        let [sh, sw] = self.stride;
        let mut shifts = Vec::with_capacity(planes * s.kernel_height * s.kernel_width);
        for plane in 0..planes {
            for kh in 0..s.kernel_height {
                for kw in 0..s.kernel_width {
                    let (row, col) = (kh * dh, kw * dw);
                    let phase = (row % sh) * sw + col % sw;
                    shifts.push(
                        plane * self.len()
                            + phase * self.plane_len()
                            + row / sh * self.width
                            + col / sw,
                    );
                }
            }
        }
        shifts
    }

    /// Copies `plane` into the inside of `buffer`; the border is left as it was (zero once
    /// zeroed: every plane lands on the same positions).
    fn copy_in(&self, plane: &[f32], buffer: &mut [f32]) {
        if self.stride != [1, 1] {
            return with_vector(CopyPhases {
                grid: self,
                plane,
                buffer,
            });
        }
        let first_col = (-self.left).max(0) as usize;
        let end_col = (self.width as isize - self.left).clamp(0, self.cols as isize) as usize;
        if first_col >= end_col {
            return;
        }
        let n = end_col - first_col;
        for r in 0..self.rows {
            let row = r as isize + self.top;
            if row < 0 || row >= self.height as isize {
                continue;
            }
            let at = self.margin()
                + row as usize * self.width
                + (first_col as isize + self.left) as usize;
            copy_row(
                &mut buffer[at..at + n],
                &plane[r * self.cols + first_col..][..n],
            );
        }
    }
}

/// [`Bordered::copy_in`] at a stride above 1: each input row's runs of columns `b, b + sw, ...`
/// into their phase planes (split a vector pair at a time at `sw = 2`). Positions past a phase
/// plane's rows or columns are never read, and not written.
struct CopyPhases<'a> {
    grid: &'a Bordered,
    plane: &'a [f32],
    buffer: &'a mut [f32],
}

impl VectorKernel for CopyPhases<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let g = self.grid;
        let [sh, sw] = g.stride;
        // The forward's border is the padding: never negative.
        let (top, left) = (g.top as usize, g.left as usize);
        let plane_len = g.plane_len();
        // Each column phase's first input column, where it lands in a row of the phase's plane
        // (from the plane's start), and how many: no divisions in the row loop (they were a
        // quarter of the copy).
        let mut runs: Vec<(usize, usize, usize)> = (0..sw)
            .filter_map(|b| {
                let first = (b + sw - left % sw) % sw;
                let at = (first + left) / sw;
                let count = g.cols.saturating_sub(first).div_ceil(sw);
                (first < g.cols && at < g.width)
                    .then(|| (first, b * plane_len + at, count.min(g.width - at)))
            })
            .collect();
        runs.sort_unstable();
        let (mut a, mut phase_row) = (top % sh, top / sh);
        for row in self.plane.chunks_exact(g.cols) {
            if phase_row >= g.height {
                break;
            }
            let row_offset = a * sw * plane_len + phase_row * g.width;
            (a, phase_row) = if a + 1 == sh {
                (0, phase_row + 1)
            } else {
                (a + 1, phase_row)
            };
            if let [(0, at0, count0), (1, at1, count1)] = runs[..] {
                // Columns 0, 2, ... and 1, 3, ...: a pair of runs in different phase planes.
                let pairs = count0.min(count1);
                let (start0, start1) = (row_offset + at0, row_offset + at1);
                let pair_row = &row[..2 * pairs];
                // SAFETY: `with_vector` runs this only with a vector type the CPU supports.
                unsafe { deinterleave_within::<V>(pair_row, self.buffer, start0, start1) };
                for i in pairs..count0 {
                    self.buffer[start0 + i] = row[2 * i];
                }
                for i in pairs..count1 {
                    self.buffer[start1 + i] = row[2 * i + 1];
                }
                continue;
            }
            for &(first, at, count) in &runs {
                let start = row_offset + at;
                let run = &mut self.buffer[start..start + count];
                for (v, &x) in run.iter_mut().zip(row[first..].iter().step_by(sw)) {
                    *v = x;
                }
            }
        }
    }
}

/// Where the tiles of one dimension start: every `tile` from 0 while a whole tile fits, then one
/// ending at `extent` (overlapping the one before) when `extent` is not a multiple of `tile`.
/// Only 0 when `extent < tile` (a tile reading past the end).
fn tile_starts(extent: usize, tile: usize) -> impl Iterator<Item = usize> {
    let whole = extent / tile;
    let last = (whole > 0 && !extent.is_multiple_of(tile)).then(|| extent - tile);
    (0..whole.max(1)).map(move |i| i * tile).chain(last)
}

/// The column dilation `dw` when `shifts` are one 3x3 filter's taps with undilated rows
/// (`kh·width + kw·dw`): the shape the forward's and the filter gradient's specialised tiles
/// serve, with every weight (or tap sum) in a register and each input vector loaded once for
/// the up to three rows that read it.
fn three_by_three(shifts: &[usize], width: usize) -> Option<usize> {
    let dw = *shifts.get(1)?;
    let expected = (0..9).map(|t| (t / 3) * width + (t % 3) * dw);
    (shifts.len() == 9 && shifts.iter().copied().eq(expected)).then_some(dw)
}

/// Share `k` of `parts` of `data` in whole cache lines ([`line_share`]): what each of the
/// calls that use one plane prefetches of the next.
fn share_of(data: &[f32], k: usize, parts: usize) -> &[f32] {
    &data[line_share(data.len(), k, parts)]
}

/// `out` `[rows, cols]` = the correlation of the bordered `src` (row stride `grid.width`) with
/// `weights` at `shifts`, through `epilogue`.
struct CorrelatePlane<'a> {
    src: &'a [f32],
    grid: &'a Bordered,
    dims: (usize, usize),
    shifts: &'a [usize],
    weights: &'a [f32],
    epilogue: Epilogue<'a>,
    out: &'a mut [f32],
    /// Data the next call reads first (the next input plane, or a share of it), prefetched
    /// into L2 a few lines per tile ([`prefetch_share`]).
    ahead: &'a [f32],
}

impl VectorKernel for CorrelatePlane<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let (rows, cols) = self.dims;
        let lanes = V::LANES;
        assert!(self.shifts.len() == self.weights.len() && self.out.len() == rows * cols);
        // Every read of a tile at output `(oh, ow)` is `src[oh·width + ow + shift + j]` with
        // `j < C·LANES` for tiles inside the row, `j < LANES` for rows narrower than a vector.
        let max_shift = self.shifts.iter().copied().max().unwrap_or(0);
        let reach = (rows.max(1) - 1) * self.grid.width + cols.max(lanes) + max_shift;
        assert!(
            reach <= self.src.len(),
            "direct conv: bordered buffer too short"
        );
        // SAFETY: `with_vector` runs this kernel only with a vector type the CPU supports; the
        // tiles read `src` within `reach` (checked above: tiles start at `oh <= rows - R` and
        // `ow <= cols - C·LANES`, narrow rows at `ow = 0`) and write `out` only inside the row.
        unsafe {
            if cols >= 2 * lanes {
                self.tiles::<V, 2>(2 * lanes)
            } else if cols >= lanes {
                self.tiles::<V, 1>(lanes)
            } else {
                self.tiles::<V, 1>(cols)
            }
        }
    }
}

impl CorrelatePlane<'_> {
    /// All the plane's tiles of `ROWS x C` vectors (single rows when the plane is shorter),
    /// `span` columns stored per tile: `C·LANES`, or the row's width when it is narrower than
    /// a vector.
    ///
    /// # Safety
    ///
    /// The CPU supports `V`'s instruction set, and `src` holds the reads (see `run`).
    #[inline(always)]
    unsafe fn tiles<V: Vector, const C: usize>(self, span: usize) {
        let (rows, cols) = self.dims;
        let row_block = if rows >= ROWS { ROWS } else { 1 };
        let three_by_three = three_by_three(self.shifts, self.grid.width);
        let tiles = tile_starts(rows, row_block).count() * tile_starts(cols, span).count();
        let mut tile_index = 0;
        for oh in tile_starts(rows, row_block) {
            for ow in tile_starts(cols, span) {
                prefetch_share(self.ahead, tile_index, tiles);
                tile_index += 1;
                // SAFETY: the caller's contract.
                unsafe {
                    if let (ROWS, Some(dw)) = (row_block, three_by_three) {
                        let t = self.tile_3x3::<V, ROWS, C>(oh * self.grid.width + ow, dw);
                        store_tile(self.out, cols, self.epilogue, &t, (oh, ow), span);
                    } else if row_block == ROWS {
                        let t = self.tile::<V, ROWS, C>(oh * self.grid.width + ow);
                        store_tile(self.out, cols, self.epilogue, &t, (oh, ow), span);
                    } else {
                        let t = self.tile::<V, 1, C>(oh * self.grid.width + ow);
                        store_tile(self.out, cols, self.epilogue, &t, (oh, ow), span);
                    }
                }
            }
        }
    }

    /// The `R x C` vectors at `start` of the tap grid: `Σ_t w_t · src[start + shift_t +
    /// r·width + c·LANES + lane]`, `R·C` independent accumulators.
    ///
    /// # Safety
    ///
    /// As [`CorrelatePlane::tiles`].
    #[inline(always)]
    unsafe fn tile<V: Vector, const R: usize, const C: usize>(&self, start: usize) -> [[V; C]; R] {
        // SAFETY: the caller's contract.
        unsafe {
            let mut acc = [[V::zero(); C]; R];
            let base = self.src.as_ptr().add(start);
            for (&shift, &w) in self.shifts.iter().zip(self.weights) {
                let w = V::splat(w);
                let p = base.add(shift);
                for (r, acc_row) in acc.iter_mut().enumerate() {
                    for (c, acc) in acc_row.iter_mut().enumerate() {
                        *acc = w.mul_add(V::load(p.add(r * self.grid.width + c * V::LANES)), *acc);
                    }
                }
            }
            acc
        }
    }

    /// [`CorrelatePlane::tile`] for 3x3 taps with undilated rows: each vector of the `R + 2`
    /// input rows the tile spans is loaded once and feeds the up to three output rows that
    /// read it, and the nine weights stay in registers, so a multiply-add costs half a load
    /// instead of one.
    ///
    /// # Safety
    ///
    /// As [`CorrelatePlane::tiles`], and [`three_by_three`] of the taps is `Some(dw)`.
    #[inline(always)]
    unsafe fn tile_3x3<V: Vector, const R: usize, const C: usize>(
        &self,
        start: usize,
        dw: usize,
    ) -> [[V; C]; R] {
        // SAFETY: the caller's contract: these are the reads of `tile` in another order.
        unsafe {
            let w: [V; 9] = std::array::from_fn(|t| V::splat(self.weights[t]));
            let mut acc = [[V::zero(); C]; R];
            let base = self.src.as_ptr().add(start);
            for i in 0..R + 2 {
                for kw in 0..3 {
                    let row = base.add(i * self.grid.width + kw * dw);
                    let x: [V; C] = std::array::from_fn(|c| V::load(row.add(c * V::LANES)));
                    for kh in 0..3 {
                        if i >= kh && i - kh < R {
                            for c in 0..C {
                                acc[i - kh][c] = w[kh * 3 + kw].mul_add(x[c], acc[i - kh][c]);
                            }
                        }
                    }
                }
            }
            acc
        }
    }
}

/// A plane `[rows, cols]` set at `(top, left)` in a zero border, as the 3x3 taps (rows
/// undilated, columns `dw` apart) of a grid read it in place: grid position `(y, x)` with tap
/// `(kh, kw)` reads plane `(y + kh − top, x + kw·dw − left)`. The rows outside the plane are
/// skipped (their zeros add nothing) and the lanes of the columns outside it masked off.
#[derive(Clone, Copy)]
struct PlaneInBorder<'a> {
    plane: &'a [f32],
    dims: (usize, usize),
    at: (isize, isize),
    dw: usize,
}

impl<'a> PlaneInBorder<'a> {
    fn new(plane: &'a [f32], dims: (usize, usize), at: (isize, isize), dw: usize) -> Self {
        assert_eq!(
            plane.len(),
            dims.0 * dims.1,
            "direct conv: plane of the wrong size"
        );
        PlaneInBorder {
            plane,
            dims,
            at,
            dw,
        }
    }

    /// For each column tap `kw` and vector `c` of `C` from grid column `x`, the lanes whose
    /// plane column `x + c·LANES + lane + kw·dw − left` is inside the plane.
    #[inline(always)]
    fn masks<V: Vector, const C: usize>(&self, x: usize) -> [[V::Mask; C]; 3] {
        let lanes = V::LANES as isize;
        let cols = self.dims.1 as isize;
        std::array::from_fn(|kw| {
            std::array::from_fn(|c| {
                let first = (x + c * V::LANES + kw * self.dw) as isize - self.at.1;
                let from = (-first).clamp(0, lanes) as usize;
                let to = (cols - first).clamp(0, lanes) as usize;
                // SAFETY: masks are made only inside a kernel run for a supported `V`.
                unsafe { V::zero() }.lanes_between(from, to)
            })
        })
    }

    /// Where grid row `y`'s tap row `kh = 0` starts for grid column `x` (plane column
    /// `x − left`, possibly outside the plane: only masked lanes read there), or `None` when
    /// that row is outside the plane.
    #[inline(always)]
    fn row(&self, y: usize, x: usize) -> Option<*const f32> {
        let row = y as isize - self.at.0;
        (0..self.dims.0 as isize).contains(&row).then(|| {
            self.plane
                .as_ptr()
                .wrapping_offset(row * self.dims.1 as isize + x as isize - self.at.1)
        })
    }

    /// The vector `offset` floats from `start`, the lanes of `mask` only.
    ///
    /// # Safety
    ///
    /// The CPU supports `V`; `start` is a [`PlaneInBorder::row`] at `x`, and `offset` and
    /// `mask` are `c·LANES + kw·dw` and [`PlaneInBorder::masks`]`(x)[kw][c]`, which keep the
    /// read inside that row of the plane.
    #[inline(always)]
    unsafe fn load<V: Vector>(&self, start: *const f32, offset: usize, mask: V::Mask) -> V {
        // SAFETY: the caller's contract.
        unsafe { V::load_masked(start.wrapping_add(offset), mask) }
    }
}

/// A plane as the taps of a 3x3 correlation read it in place, at stride 1 ([`PlaneInBorder`])
/// or 2 ([`PlaneAtStrideTwo`]): the register tile of [`CorrelateInPlace`].
trait InPlaceTaps: Copy {
    /// The lane masks of a column of tiles `C` vectors wide.
    type Masks<V: Vector, const C: usize>;

    /// The masks of the column of tiles from output column `ow`.
    fn tile_masks<V: Vector, const C: usize>(&self, ow: usize) -> Self::Masks<V, C>;

    /// The `R x C` vectors of outputs at `(oh, ow)` of the correlation with the taps `w`
    /// (`[kh][kw]`).
    ///
    /// # Safety
    ///
    /// The CPU supports `V`'s instruction set, and `masks` are [`Self::tile_masks`] of `ow`.
    unsafe fn tile<V: Vector, const R: usize, const C: usize>(
        &self,
        at: (usize, usize),
        w: &[V; 9],
        masks: &Self::Masks<V, C>,
    ) -> [[V; C]; R];
}

impl InPlaceTaps for PlaneInBorder<'_> {
    type Masks<V: Vector, const C: usize> = [[V::Mask; C]; 3];

    #[inline(always)]
    fn tile_masks<V: Vector, const C: usize>(&self, ow: usize) -> Self::Masks<V, C> {
        self.masks::<V, C>(ow)
    }

    /// Each vector of the `R + 2` input rows the tile spans is loaded once (masked) and feeds
    /// the up to three output rows that read it; input rows outside the plane are skipped, as
    /// their zeros add nothing.
    #[inline(always)]
    unsafe fn tile<V: Vector, const R: usize, const C: usize>(
        &self,
        (oh, ow): (usize, usize),
        w: &[V; 9],
        masks: &Self::Masks<V, C>,
    ) -> [[V; C]; R] {
        // SAFETY: the caller's contract.
        let mut acc = [[unsafe { V::zero() }; C]; R];
        for i in 0..R + 2 {
            let Some(start) = self.row(oh + i, ow) else {
                continue;
            };
            for kw in 0..3 {
                // SAFETY: `masks` are the column tile's, `start` a row inside the plane; the
                // CPU supports `V`.
                let x: [V; C] = std::array::from_fn(|c| unsafe {
                    self.load(start, c * V::LANES + kw * self.dw, masks[kw][c])
                });
                for kh in 0..3 {
                    if i >= kh && i - kh < R {
                        for c in 0..C {
                            acc[i - kh][c] = w[kh * 3 + kw].mul_add(x[c], acc[i - kh][c]);
                        }
                    }
                }
            }
        }
        acc
    }
}

impl InPlaceTaps for PlaneAtStrideTwo<'_> {
    type Masks<V: Vector, const C: usize> = [[V::Mask; 3]; C];

    #[inline(always)]
    fn tile_masks<V: Vector, const C: usize>(&self, ow: usize) -> Self::Masks<V, C> {
        self.masks::<V, C>(ow)
    }

    /// Each of the `2R + 1` input rows the tile spans is loaded once (masked), split into the
    /// three taps' columns, and feeds the one or two output rows that read it (`kh = i − 2r`);
    /// rows outside the plane are skipped.
    #[inline(always)]
    unsafe fn tile<V: Vector, const R: usize, const C: usize>(
        &self,
        (oh, ow): (usize, usize),
        w: &[V; 9],
        masks: &Self::Masks<V, C>,
    ) -> [[V; C]; R] {
        // SAFETY: the caller's contract.
        let mut acc = [[unsafe { V::zero() }; C]; R];
        for i in 0..2 * R + 1 {
            let Some(start) = self.row(oh, i) else {
                continue;
            };
            for c in 0..C {
                // SAFETY: `masks` are the column tile's, `start` a row inside the plane; the
                // CPU supports `V`.
                let x = unsafe { self.columns::<V>(start, ow + c * V::LANES, masks[c]) };
                for kh in 0..3 {
                    if i >= kh && (i - kh).is_multiple_of(2) && (i - kh) / 2 < R {
                        let r = (i - kh) / 2;
                        for (kw, x) in x.iter().enumerate() {
                            acc[r][c] = w[kh * 3 + kw].mul_add(*x, acc[r][c]);
                        }
                    }
                }
            }
        }
        acc
    }
}

/// `out` `[rows, cols]` = the 3x3 correlation of `src` with `weights`, read in place
/// ([`InPlaceTaps`]): no bordered copy is written. At stride 1 the copy cost a 512-bit store
/// per 16 floats, on a Zen 4 one every two cycles: about 20% of the depthwise S6 forward; at
/// stride 2 the copy into four phase planes, bound by its reads of the input, was 60% of
/// MobileNet's stride-2 depthwise forward.
struct CorrelateInPlace<'a, P> {
    src: P,
    dims: (usize, usize),
    weights: &'a [f32],
    epilogue: Epilogue<'a>,
    out: &'a mut [f32],
    /// What the next call reads first, prefetched into L2 a share per tile ([`prefetch_share`]).
    ahead: &'a [f32],
}

impl<P: InPlaceTaps> VectorKernel for CorrelateInPlace<'_, P> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let (rows, cols) = self.dims;
        let lanes = V::LANES;
        assert!(
            self.weights.len() == 9 && self.out.len() == rows * cols,
            "direct conv: operands do not match the plane's dimensions"
        );
        // SAFETY: `with_vector` runs this kernel only with a vector type the CPU supports; the
        // tiles read only the lanes of `plane` their masks and row checks keep inside it, and
        // write `out` inside the row (tiles start at `oh <= rows - R`, `ow <= cols - span`).
        unsafe {
            if cols >= 2 * lanes {
                self.tiles::<V, 2>(2 * lanes)
            } else if cols >= lanes {
                self.tiles::<V, 1>(lanes)
            } else {
                self.tiles::<V, 1>(cols)
            }
        }
    }
}

impl<P: InPlaceTaps> CorrelateInPlace<'_, P> {
    /// All the plane's tiles of `ROWS x C` vectors (single rows when the plane is shorter),
    /// `span` columns stored per tile; columns outer, so each column of tiles computes its
    /// lane masks once.
    ///
    /// # Safety
    ///
    /// The CPU supports `V`'s instruction set.
    #[inline(always)]
    unsafe fn tiles<V: Vector, const C: usize>(self, span: usize) {
        let (rows, cols) = self.dims;
        let row_block = if rows >= ROWS { ROWS } else { 1 };
        // SAFETY: the caller's contract.
        let w: [V; 9] = std::array::from_fn(|t| unsafe { V::splat(self.weights[t]) });
        let tiles = tile_starts(rows, row_block).count() * tile_starts(cols, span).count();
        let mut tile_index = 0;
        for ow in tile_starts(cols, span) {
            let masks = self.src.tile_masks::<V, C>(ow);
            for oh in tile_starts(rows, row_block) {
                prefetch_share(self.ahead, tile_index, tiles);
                tile_index += 1;
                // SAFETY: the caller's contract; `masks` are this column of tiles'.
                unsafe {
                    if row_block == ROWS {
                        let t = self.src.tile::<V, ROWS, C>((oh, ow), &w, &masks);
                        store_tile(self.out, cols, self.epilogue, &t, (oh, ow), span);
                    } else {
                        let t = self.src.tile::<V, 1, C>((oh, ow), &w, &masks);
                        store_tile(self.out, cols, self.epilogue, &t, (oh, ow), span);
                    }
                }
            }
        }
    }
}

/// Stores a tile at output `(oh, ow)` of `out` (rows of `cols`) through `epilogue`: `span`
/// columns of each row.
///
/// # Safety
///
/// The CPU supports `V`'s instruction set; the tile's rows and `span` columns are inside `out`.
#[inline(always)]
unsafe fn store_tile<V: Vector, const R: usize, const C: usize>(
    out: &mut [f32],
    cols: usize,
    epilogue: Epilogue<'_>,
    tile: &[[V; C]; R],
    (oh, ow): (usize, usize),
    span: usize,
) {
    let out = out.as_mut_ptr();
    for (r, row) in tile.iter().enumerate() {
        // SAFETY: the caller's contract; a narrow row goes through a spill buffer.
        unsafe {
            let dst = out.add((oh + r) * cols + ow);
            if span == C * V::LANES {
                for (c, &v) in row.iter().enumerate() {
                    epilogue.apply(0, v).store(dst.add(c * V::LANES));
                }
            } else {
                let mut spill = [0.0f32; 16];
                epilogue.apply(0, row[0]).store(spill.as_mut_ptr());
                std::ptr::copy_nonoverlapping(spill.as_ptr(), dst, span);
            }
        }
    }
}

/// A plane `[H, W]` set at `(top, left)` in a zero border, as undilated 3x3 taps at stride 2
/// read it in place: output `(oh, ow)` with tap `(kh, kw)` reads plane `(2·oh + kh − top, 2·ow
/// + kw − left)`. A vector of outputs loads the vector pair from its tap `kw = 0` and splits it
/// into its even and odd columns (the taps `kw = 0` and `1`; the even ones slid by one float,
/// `kw = 2`); rows outside the plane are skipped and the lanes of columns outside it masked
/// off, as [`PlaneInBorder`] does at stride 1.
#[derive(Clone, Copy)]
struct PlaneAtStrideTwo<'a> {
    plane: &'a [f32],
    /// `[H, W]` of `plane`.
    dims: (usize, usize),
    /// The padding above and left of the plane.
    at: (usize, usize),
}

impl<'a> PlaneAtStrideTwo<'a> {
    fn new(plane: &'a [f32], dims: (usize, usize), at: (usize, usize)) -> Self {
        assert_eq!(
            plane.len(),
            dims.0 * dims.1,
            "direct conv: plane of the wrong size"
        );
        PlaneAtStrideTwo { plane, dims, at }
    }

    /// The plane column of tap `kw = 0` of output column `ow` (negative in the left border).
    #[inline(always)]
    fn first_column(&self, ow: usize) -> isize {
        (2 * ow) as isize - self.at.1 as isize
    }

    /// For each vector `c` of `C` from output column `ow`, the lanes inside the plane of the
    /// pair of vectors from its first column ([`Self::first_column`]) and of the one float
    /// after the pair (lane 0 of the third mask).
    #[inline(always)]
    fn masks<V: Vector, const C: usize>(&self, ow: usize) -> [[V::Mask; 3]; C] {
        let lanes = V::LANES as isize;
        let cols = self.dims.1 as isize;
        let inside = |first: isize, count: isize| {
            let from = (-first).clamp(0, count) as usize;
            let to = (cols - first).clamp(0, count) as usize;
            // SAFETY: masks are made only inside a kernel run for a supported `V`.
            unsafe { V::zero() }.lanes_between(from, to)
        };
        std::array::from_fn(|c| {
            let first = self.first_column(ow + c * V::LANES);
            [
                inside(first, lanes),
                inside(first + lanes, lanes),
                inside(first + 2 * lanes, 1),
            ]
        })
    }

    /// The start of the plane row that tile row `i` of a tile at output row `oh` reads (`2·oh
    /// + i − top`), or `None` when it is outside the plane.
    #[inline(always)]
    fn row(&self, oh: usize, i: usize) -> Option<*const f32> {
        let row = (2 * oh + i) as isize - self.at.0 as isize;
        (0..self.dims.0 as isize).contains(&row).then(|| {
            self.plane
                .as_ptr()
                .wrapping_offset(row * self.dims.1 as isize)
        })
    }

    /// The three column taps `kw = 0, 1, 2` of the vector of outputs from column `ow`, in the
    /// plane row at `start`.
    ///
    /// # Safety
    ///
    /// The CPU supports `V`; `start` is a [`Self::row`] and `masks` are [`Self::masks`]'s for
    /// `ow` (which keep every read lane inside that row: a masked-off lane is not read,
    /// wherever its address).
    #[inline(always)]
    unsafe fn columns<V: Vector>(
        &self,
        start: *const f32,
        ow: usize,
        masks: [V::Mask; 3],
    ) -> [V; 3] {
        let first = start.wrapping_offset(self.first_column(ow));
        let [low, high, after] = masks;
        // SAFETY: the caller's contract.
        unsafe {
            let (even, odd) = V::load_masked(first, low)
                .deinterleave(V::load_masked(first.wrapping_add(V::LANES), high));
            let next = V::load_masked(first.wrapping_add(2 * V::LANES), after);
            [even, odd, even.slide_one(next)]
        }
    }
}

/// Adds `Σ_p g[p] · src[p + shift_t]` over the output positions `p` of one plane into
/// `sums[t]`, for every tap: `TAP_BLOCK` taps per pass over the plane, each with
/// `GRADIENT_ROWS` rows of accumulators. The columns of a row past its last whole vector go
/// through a lane mask (a zeroed gradient instead would turn an infinite input into NaN).
struct FilterPlane<'a> {
    g: &'a [f32],
    src: FilterSource<'a>,
    dims: (usize, usize),
    sums: &'a mut [f32],
}

/// Where the filter gradient reads the input plane its taps shift over.
#[derive(Clone, Copy)]
enum FilterSource<'a> {
    /// A bordered copy `src`, rows `width` apart, read at the taps' `shifts`.
    Bordered {
        src: &'a [f32],
        width: usize,
        shifts: &'a [usize],
    },
    /// The plane itself, for 3x3 taps with undilated rows ([`reads_in_place`]).
    InPlace(PlaneInBorder<'a>),
    /// The plane itself, for undilated 3x3 taps at stride 2 ([`reads_in_place_at_stride_two`]).
    InPlaceStrideTwo(PlaneAtStrideTwo<'a>),
}

impl VectorKernel for FilterPlane<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let (rows, cols) = self.dims;
        assert!(self.g.len() == rows * cols);
        let (src, width, shifts) = match self.src {
            FilterSource::InPlace(_) | FilterSource::InPlaceStrideTwo(_) => {
                let dw = match self.src {
                    FilterSource::InPlace(plane) => plane.dw,
                    _ => 1,
                };
                assert!(self.sums.len() == 9);
                // SAFETY: `with_vector` runs this only with a vector type the CPU supports;
                // the tiles read the plane through its masks and row checks.
                let sums = unsafe { self.sums_3x3::<V, true>(dw) };
                for (o, s) in self.sums.iter_mut().zip(sums) {
                    *o += s;
                }
                return;
            }
            FilterSource::Bordered { src, width, shifts } => (src, width, shifts),
        };
        assert!(self.sums.len() == shifts.len());
        let max_shift = shifts.iter().copied().max().unwrap_or(0);
        let reach = (rows.max(1) - 1) * width + cols.div_ceil(V::LANES) * V::LANES + max_shift;
        assert!(reach <= src.len(), "direct conv: bordered buffer too short");
        if let Some(dw) = three_by_three(shifts, width) {
            // SAFETY: as below; the 3x3 kernel reads the same positions.
            let sums = unsafe { self.sums_3x3::<V, false>(dw) };
            for (o, s) in self.sums.iter_mut().zip(sums) {
                *o += s;
            }
            return;
        }
        let mut shift_blocks = shifts.chunks_exact(TAP_BLOCK);
        let mut sum_blocks = self.sums.chunks_exact_mut(TAP_BLOCK);
        for (block, out) in (&mut shift_blocks).zip(&mut sum_blocks) {
            let block: &[usize; TAP_BLOCK] = block.try_into().expect("a block of taps");
            // SAFETY: `with_vector` runs this only with a vector type the CPU supports; reads
            // of `src` stay within `reach` (checked above), of `g` within its rows.
            let block_sums =
                unsafe { filter_block::<V, TAP_BLOCK>(self.g, src, width, self.dims, block) };
            for (o, s) in out.iter_mut().zip(block_sums) {
                *o += s;
            }
        }
        for (o, &shift) in sum_blocks
            .into_remainder()
            .iter_mut()
            .zip(shift_blocks.remainder())
        {
            // SAFETY: as above.
            *o += unsafe { filter_block::<V, 1>(self.g, src, width, self.dims, &[shift])[0] };
        }
    }
}

impl FilterPlane<'_> {
    /// The nine tap sums of a 3x3 filter with undilated rows in one pass over the plane: nine
    /// accumulators, and a tile of `ROWS` gradient rows reads each of its `ROWS + 2` input rows
    /// once per column shift for the up to three gradient rows it meets.
    ///
    /// # Safety
    ///
    /// As [`filter_block`]; `IN_PLACE` says whether the source is [`FilterSource::InPlace`],
    /// and a bordered source's taps are 3x3 ([`three_by_three`] is `Some(dw)`).
    #[inline(always)]
    unsafe fn sums_3x3<V: Vector, const IN_PLACE: bool>(&self, dw: usize) -> [f32; 9] {
        let (rows, cols) = self.dims;
        let lanes = V::LANES;
        let whole = cols / lanes * lanes;
        let rest = cols - whole;
        // SAFETY: the caller's contract; a partial vector of `g` is read through its mask.
        unsafe {
            let mut acc = [V::zero(); 9];
            let mask = V::zero().first_lanes(rest);
            let full = V::zero().first_lanes(lanes);
            let mut oh = 0;
            while oh < rows {
                let block = if rows - oh >= ROWS { ROWS } else { 1 };
                for ow in (0..whole).step_by(lanes) {
                    if block == ROWS {
                        self.rows_3x3::<V, ROWS, false, IN_PLACE>(&mut acc, oh, ow, dw, full);
                    } else {
                        self.rows_3x3::<V, 1, false, IN_PLACE>(&mut acc, oh, ow, dw, full);
                    }
                }
                if rest > 0 {
                    if block == ROWS {
                        self.rows_3x3::<V, ROWS, true, IN_PLACE>(&mut acc, oh, whole, dw, mask);
                    } else {
                        self.rows_3x3::<V, 1, true, IN_PLACE>(&mut acc, oh, whole, dw, mask);
                    }
                }
                oh += block;
            }
            acc.map(|v| v.sum())
        }
    }

    /// Adds the products of gradient rows `oh..oh + R` at column `ow` into the tap sums: one
    /// vector per row, or when `PARTIAL` the lanes of `mask` (the row's last columns; a
    /// masked load, where a copy through a spill buffer stalled on store forwarding: the S6
    /// filter gradient +30% on a Zen 4).
    ///
    /// # Safety
    ///
    /// As [`FilterPlane::sums_3x3`].
    #[inline(always)]
    unsafe fn rows_3x3<V: Vector, const R: usize, const PARTIAL: bool, const IN_PLACE: bool>(
        &self,
        acc: &mut [V; 9],
        oh: usize,
        ow: usize,
        dw: usize,
        mask: V::Mask,
    ) {
        let cols = self.dims.1;
        // SAFETY: the caller's contract.
        unsafe {
            let g: [V; R] = std::array::from_fn(|r| {
                let at = self.g.as_ptr().add((oh + r) * cols + ow);
                if PARTIAL {
                    V::load_masked(at, mask)
                } else {
                    V::load(at)
                }
            });
            // Input row `i` of the tile, column tap `kw`, into the sums of the gradient rows
            // that meet it (row `r` reads tile row `stride·r + kh`).
            let mut add = |stride: usize, i: usize, kw: usize, x: V| {
                for kh in 0..3 {
                    if i >= kh && (i - kh).is_multiple_of(stride) && (i - kh) / stride < R {
                        let (r, t) = ((i - kh) / stride, kh * 3 + kw);
                        acc[t] = if PARTIAL {
                            g[r].mul_add_masked(x, acc[t], mask)
                        } else {
                            g[r].mul_add(x, acc[t])
                        };
                    }
                }
            };
            match (IN_PLACE, self.src) {
                (false, FilterSource::Bordered { src, width, .. }) => {
                    let base = src.as_ptr().add(oh * width + ow);
                    for i in 0..R + 2 {
                        for kw in 0..3 {
                            add(1, i, kw, V::load(base.add(i * width + kw * dw)));
                        }
                    }
                }
                (true, FilterSource::InPlace(plane)) => {
                    let masks = plane.masks::<V, 1>(ow);
                    for i in 0..R + 2 {
                        if let Some(start) = plane.row(oh + i, ow) {
                            for (kw, [mask]) in masks.into_iter().enumerate() {
                                add(1, i, kw, plane.load(start, kw * dw, mask));
                            }
                        }
                    }
                }
                (true, FilterSource::InPlaceStrideTwo(plane)) => {
                    let [masks] = plane.masks::<V, 1>(ow);
                    for i in 0..2 * R + 1 {
                        if let Some(start) = plane.row(oh, i) {
                            let x = plane.columns::<V>(start, ow, masks);
                            for (kw, x) in x.into_iter().enumerate() {
                                add(2, i, kw, x);
                            }
                        }
                    }
                }
                _ => unreachable!("IN_PLACE names the source"),
            }
        }
    }
}

/// `Σ_p g[p] · src[p + shifts[t]]` for the `T` taps of one block.
///
/// # Safety
///
/// The CPU supports `V`'s instruction set; `src` holds every row's reads up to the end of its
/// last (partial) vector, `g` is `rows x cols`.
#[inline(always)]
unsafe fn filter_block<V: Vector, const T: usize>(
    g: &[f32],
    src: &[f32],
    width: usize,
    (rows, cols): (usize, usize),
    shifts: &[usize; T],
) -> [f32; T] {
    let lanes = V::LANES;
    let whole = cols / lanes * lanes;
    let rest = cols - whole;
    // SAFETY: the caller's contract; the partial vector of `g` is read through its mask.
    unsafe {
        let mut acc = [[V::zero(); GRADIENT_ROWS]; T];
        let (gp, xp) = (g.as_ptr(), src.as_ptr());
        let mask = V::zero().first_lanes(rest);
        let mut oh = 0;
        while oh < rows {
            let block = (rows - oh).min(GRADIENT_ROWS);
            if block == GRADIENT_ROWS {
                for ow in (0..whole).step_by(lanes) {
                    for r in 0..GRADIENT_ROWS {
                        let gv = V::load(gp.add((oh + r) * cols + ow));
                        let x = xp.add((oh + r) * width + ow);
                        for (acc, &shift) in acc.iter_mut().zip(shifts) {
                            acc[r] = gv.mul_add(V::load(x.add(shift)), acc[r]);
                        }
                    }
                }
            } else {
                for ow in (0..whole).step_by(lanes) {
                    let gv = V::load(gp.add(oh * cols + ow));
                    let x = xp.add(oh * width + ow);
                    for (acc, &shift) in acc.iter_mut().zip(shifts) {
                        acc[0] = gv.mul_add(V::load(x.add(shift)), acc[0]);
                    }
                }
            }
            if rest > 0 {
                for r in 0..block {
                    // Masked, not copied through a spill buffer (a store-forwarding stall;
                    // see `rows_3x3`).
                    let gv = V::load_masked(gp.add((oh + r) * cols + whole), mask);
                    let x = xp.add((oh + r) * width + whole);
                    for (acc, &shift) in acc.iter_mut().zip(shifts) {
                        acc[r] = gv.mul_add_masked(V::load(x.add(shift)), acc[r], mask);
                    }
                }
            }
            oh += block;
        }
        acc.map(|rows| rows.iter().fold(0.0, |total, v| total + v.sum()))
    }
}

fn is_stride_one(s: &Conv2dShape) -> bool {
    s.spec.stride == [1, 1]
}

/// Whether a stride-1 correlation reads its planes in place ([`CorrelateInPlace`]): 3x3
/// filters with undilated rows (the tiles that keep every weight in a register), on AVX-512,
/// whose masked loads cost what plain ones do. AVX2's `vmaskmovps` does not, and its 16
/// registers cannot hold the masks beside the weights and accumulators: in place, its S6
/// forward ran at 56% of the bordered copy's speed on a Zen 4.
fn reads_in_place(s: &Conv2dShape) -> bool {
    is_stride_one(s)
        && (s.kernel_height, s.kernel_width) == (3, 3)
        && s.spec.dilation[0] == 1
        && simd::level() == Level::Avx512
}

/// Whether the passes read the planes in place at stride 2 (the forward and the filter
/// gradient through [`PlaneAtStrideTwo`], backward-data with one filter per channel through
/// [`DataInPlaceStrideTwo`]): undilated 3x3 filters at stride 2, on AVX-512 (whose masked
/// loads cost a plain one). On AVX2 the phase planes stay: in place, S7's forward measured
/// level with them and its filter gradient at a sixth of their speed (Intel Xeon model 207
/// capped at AVX2; the masks and taps do not fit its 16 registers beside the sums).
fn reads_in_place_at_stride_two(s: &Conv2dShape) -> bool {
    s.spec.stride == [2, 2]
        && (s.kernel_height, s.kernel_width) == (3, 3)
        && s.spec.dilation == [1, 1]
        && simd::level() == Level::Avx512
}

/// Forward for one image, with the bias and activation applied as each plane is stored: output
/// channel `o` reads input channel `o / (O / groups)`.
pub(super) fn forward_image(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: ConvActivation,
    s: &Conv2dShape,
    out: &mut [f32],
) {
    let per_channel = s.group_out() * s.out_plane();
    let tasks = channel_tasks(s);
    if tasks == 1 {
        return forward_channels(x, weight, bias, activation, s, 0, out);
    }
    // An image alone (batch 1, or fewer images than threads): its channels are the work to
    // split. The images of a batch split one level up, and this then runs on one thread.
    let channels = s.in_channels.div_ceil(tasks);
    split(|| {
        out.par_chunks_mut(channels * per_channel)
            .enumerate()
            .for_each(|(t, out)| {
                forward_channels(x, weight, bias, activation, s, t * channels, out)
            })
    });
}

/// Whether the forward on a bordered copy prefetches the next plane while it computes this
/// one: only at a stride of one. A strided pass computes a quarter of the outputs (at stride 2)
/// per input line, too little to hide the fetch; the hardware prefetchers, which follow the
/// planes in order, then do better alone: MobileNet's stride-2 depthwise 3x3 (S7: 128
/// channels, 56x56, batch 8, 2 threads, Intel Xeon model 207) +10-15% without it, measured
/// before its AVX-512 forward moved to [`PlaneAtStrideTwo`] (AVX2, and other strided filters,
/// still take this path).
fn prefetches_next_plane(s: &Conv2dShape) -> bool {
    is_stride_one(s)
}

/// How many tasks one image's channels split into: one inside a split (the caller keeps the
/// threads busy) or when the image is too little work to pay for waking the pool (under a
/// million multiply-adds, about 10 µs on one core), else one per thread.
fn channel_tasks(s: &Conv2dShape) -> usize {
    let threads = rayon::current_num_threads();
    let work = s.out_channels * s.out_plane() * s.kernel_height * s.kernel_width;
    if threads < 2 || inside_split() || s.in_channels < threads || work < 1 << 20 {
        1
    } else {
        threads
    }
}

/// Forward of input channels `first..` (as many as `out` holds the outputs of), with the bias
/// and activation applied as each plane is stored.
fn forward_channels(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: ConvActivation,
    s: &Conv2dShape,
    first: usize,
    out: &mut [f32],
) {
    let epilogue = |o: usize| Epilogue { bias, activation }.rows(o, 1);
    let (multiplier, out_dims) = (s.group_out(), (s.out_height, s.out_width));
    let outputs = first * multiplier..first * multiplier + out.len() / s.out_plane();
    if reads_in_place(s) {
        let p = s.spec.padding;
        for (o, out_plane) in outputs.zip(out.chunks_exact_mut(s.out_plane())) {
            let c = o / multiplier;
            let next = x.get((c + 1) * s.in_plane()..(c + 2) * s.in_plane());
            with_vector(CorrelateInPlace {
                src: PlaneInBorder::new(
                    &x[c * s.in_plane()..(c + 1) * s.in_plane()],
                    (s.in_height, s.in_width),
                    (p.top as isize, p.left as isize),
                    s.spec.dilation[1],
                ),
                dims: out_dims,
                weights: &weight[o * 9..(o + 1) * 9],
                epilogue: epilogue(o),
                out: out_plane,
                ahead: share_of(next.unwrap_or(&[]), o % multiplier, multiplier),
            });
        }
        return;
    }
    if reads_in_place_at_stride_two(s) {
        let p = s.spec.padding;
        for (o, out_plane) in outputs.zip(out.chunks_exact_mut(s.out_plane())) {
            let c = o / multiplier;
            with_vector(CorrelateInPlace {
                src: PlaneAtStrideTwo::new(
                    &x[c * s.in_plane()..(c + 1) * s.in_plane()],
                    (s.in_height, s.in_width),
                    (p.top, p.left),
                ),
                dims: out_dims,
                weights: &weight[o * 9..(o + 1) * 9],
                epilogue: epilogue(o),
                out: out_plane,
                ahead: &[],
            });
        }
        return;
    }
    let grid = Bordered::forward(s);
    let shifts = grid.shifts(s, 1);
    let taps = shifts.len();
    with_scratch_parts([grid.len()], |[bordered]| {
        bordered.fill(0.0);
        for (planes, c) in out
            .chunks_exact_mut(multiplier * s.out_plane())
            .zip(first..)
        {
            grid.copy_in(&x[c * s.in_plane()..(c + 1) * s.in_plane()], bordered);
            // The next plane, into L2 while this one computes (into L1 it would evict the
            // bordered plane and the output), a share of it by each output channel's call.
            let next = x
                .get((c + 1) * s.in_plane()..(c + 2) * s.in_plane())
                .filter(|_| prefetches_next_plane(s))
                .unwrap_or(&[]);
            for (k, out_plane) in planes.chunks_exact_mut(s.out_plane()).enumerate() {
                let o = c * multiplier + k;
                with_vector(CorrelatePlane {
                    src: grid.grid(bordered),
                    grid: &grid,
                    dims: out_dims,
                    shifts: &shifts,
                    weights: &weight[o * taps..(o + 1) * taps],
                    epilogue: epilogue(o),
                    out: out_plane,
                    ahead: share_of(next, k, multiplier),
                });
            }
        }
    });
}

/// Backward-data for one image. At stride 1 this is again a correlation: of the output
/// gradients of the channel's filters, bordered by `span − padding`, with each filter's taps
/// reversed, all summed in one tile.
pub(super) fn backward_data_image(gy: &[f32], weight: &[f32], s: &Conv2dShape, gx: &mut [f32]) {
    let multiplier = s.group_out();
    if multiplier == 1 && reads_in_place_at_stride_two(s) {
        let p = s.spec.padding;
        for (c, gx_plane) in gx.chunks_exact_mut(s.in_plane()).enumerate() {
            with_vector(DataInPlaceStrideTwo {
                gy: &gy[c * s.out_plane()..(c + 1) * s.out_plane()],
                gy_dims: (s.out_height, s.out_width),
                at: (p.top, p.left),
                weights: &weight[c * 9..(c + 1) * 9],
                gx: gx_plane,
                dims: (s.in_height, s.in_width),
            });
        }
        return;
    }
    if !is_stride_one(s) {
        return phased_backward_data_image(gy, weight, s, gx);
    }
    let reversed: Vec<f32> = weight
        .chunks_exact(s.kernel_height * s.kernel_width)
        .flat_map(|taps| taps.iter().rev().copied())
        .collect();
    let grid = Bordered::backward_data(s);
    if multiplier == 1 && reads_in_place(s) {
        for (c, gx_plane) in gx.chunks_exact_mut(s.in_plane()).enumerate() {
            let next = gy.get((c + 1) * s.out_plane()..(c + 2) * s.out_plane());
            with_vector(CorrelateInPlace {
                src: PlaneInBorder::new(
                    &gy[c * s.out_plane()..(c + 1) * s.out_plane()],
                    (s.out_height, s.out_width),
                    (grid.top, grid.left),
                    s.spec.dilation[1],
                ),
                dims: (s.in_height, s.in_width),
                weights: &reversed[c * 9..(c + 1) * 9],
                epilogue: Epilogue::default(),
                out: gx_plane,
                ahead: next.unwrap_or(&[]),
            });
        }
        return;
    }
    let shifts = grid.shifts(s, multiplier);
    let per_channel = shifts.len();
    let in_dims = (s.in_height, s.in_width);
    with_scratch_parts([multiplier * grid.len()], |[bordered]| {
        bordered.fill(0.0);
        for (c, gx_plane) in gx.chunks_exact_mut(s.in_plane()).enumerate() {
            for (k, buffer) in bordered.chunks_exact_mut(grid.len()).enumerate() {
                let o = c * multiplier + k;
                grid.copy_in(&gy[o * s.out_plane()..(o + 1) * s.out_plane()], buffer);
            }
            let next = (c + 1) * multiplier * s.out_plane();
            let ahead = gy
                .get(next..next + multiplier * s.out_plane())
                .unwrap_or(&[]);
            let w = &reversed[c * per_channel..(c + 1) * per_channel];
            with_vector(CorrelatePlane {
                src: grid.grid(bordered),
                grid: &grid,
                dims: in_dims,
                shifts: &shifts,
                weights: w,
                epilogue: Epilogue::default(),
                out: gx_plane,
                ahead,
            });
        }
    });
}

/// The input gradient `gx` `[H, W]` of an undilated 3x3 filter at stride 2 with one output
/// channel per input channel, from `gy` `[OH, OW]` read in place
/// ([`reads_in_place_at_stride_two`]): `gx[r][c] = Σ w[kh][kw] · gy[oh][ow]` over
/// `2·oh + kh = r + top`, `2·ow + kw = c + left`. A tile is `ROWS` rows of a pair of vectors of
/// `gx`, from a column where `c + left` is even: its even columns take the taps `kw = 0` and
/// `2` (`gy` columns `(c + left) / 2` and one before) and its odd ones `kw = 1`, so each is a
/// stride-1 sum over shifted vectors of `gy`, interleaved as the tile is stored. The phased
/// path computes the four phases of `gx` apart and interleaves them in a pass of their own:
/// on MobileNet's stride-2 depthwise 3x3 that pass was 44% of the backward-data.
struct DataInPlaceStrideTwo<'a> {
    gy: &'a [f32],
    /// `[OH, OW]` of `gy`.
    gy_dims: (usize, usize),
    /// The padding above and left of `gx`.
    at: (usize, usize),
    /// The filter `[3][3]`, as the forward reads it.
    weights: &'a [f32],
    gx: &'a mut [f32],
    /// `[H, W]` of `gx`.
    dims: (usize, usize),
}

impl VectorKernel for DataInPlaceStrideTwo<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let ((rows, cols), (gy_rows, gy_cols)) = (self.dims, self.gy_dims);
        let (top, left) = self.at;
        assert!(
            self.weights.len() == 9
                && self.gx.len() == rows * cols
                && self.gy.len() == gy_rows * gy_cols,
            "direct conv: operands do not match the plane's dimensions"
        );
        let lanes = V::LANES as isize;
        // SAFETY: `with_vector` runs this kernel only with a vector type the CPU supports.
        let w: [V; 9] = std::array::from_fn(|t| unsafe { V::splat(self.weights[t]) });
        // SAFETY: as above.
        let inside = |first: isize, count: isize, end: usize| unsafe {
            let from = (-first).clamp(0, count) as usize;
            let to = (end as isize - first).clamp(0, count) as usize;
            V::zero().lanes_between(from, to)
        };
        let gx = self.gx.as_mut_ptr();
        // Tiles start where `c + left` and `r + top` are even: a column or row before the
        // plane when the padding is odd (never stored). Steps of `ROWS` keep rows even.
        const { assert!(ROWS.is_multiple_of(2)) };
        for c0 in (-((left % 2) as isize)..cols as isize).step_by(2 * V::LANES) {
            // The `gy` columns of the even lanes' tap `kw = 0`, and the stored lanes.
            let g0 = (c0 + left as isize) / 2;
            let load = [inside(g0, lanes, gy_cols), inside(g0 - 1, lanes, gy_cols)];
            let store = [inside(c0, lanes, cols), inside(c0 + lanes, lanes, cols)];
            for r0 in (-((top % 2) as isize)..rows as isize).step_by(ROWS) {
                // SAFETY: as above.
                let mut even = [unsafe { V::zero() }; ROWS];
                let mut odd = even;
                // Rows `r0 + i` read `gy` rows `q0 − 1 + dq` with `kh = i + 2 − 2·dq`.
                let q0 = (r0 + top as isize) / 2;
                for dq in 0..3 {
                    let q = q0 - 1 + dq as isize;
                    if !(0..gy_rows as isize).contains(&q) {
                        continue;
                    }
                    let row = self.gy.as_ptr().wrapping_offset(q * gy_cols as isize + g0);
                    // SAFETY: the masks keep the reads inside `gy`'s row `q`; the CPU
                    // supports `V`.
                    let (x0, x1) = unsafe {
                        (
                            V::load_masked(row, load[0]),
                            V::load_masked(row.wrapping_sub(1), load[1]),
                        )
                    };
                    for i in 0..ROWS {
                        let Some(kh) = (i + 2).checked_sub(2 * dq).filter(|&kh| kh < 3) else {
                            continue;
                        };
                        even[i] = w[kh * 3].mul_add(x0, even[i]);
                        even[i] = w[kh * 3 + 2].mul_add(x1, even[i]);
                        odd[i] = w[kh * 3 + 1].mul_add(x0, odd[i]);
                    }
                }
                for i in 0..ROWS {
                    let r = r0 + i as isize;
                    if !(0..rows as isize).contains(&r) {
                        continue;
                    }
                    let (low, high) = even[i].interleave(odd[i]);
                    let at = gx.wrapping_offset(r * cols as isize + c0);
                    // SAFETY: the masks keep the stores inside `gx`'s row `r`; the CPU
                    // supports `V`.
                    unsafe {
                        low.store_masked(at, store[0]);
                        high.store_masked(at.wrapping_add(V::LANES), store[1]);
                    }
                }
            }
        }
    }
}

/// The input positions of one phase of a strided backward-data: padded rows `a, a + sh, ...`
/// and columns `b, b + sw, ...` (phase rows `rows`, columns `cols` of them hold pixels), which
/// only the taps `taps` reach.
struct DataPhase {
    a: usize,
    b: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    taps: Vec<usize>,
}

/// Backward-data at a stride above 1, a phase of the input at a time: phase position `(r, q)`
/// (padded position `(r·sh + a, q·sw + b)`) receives tap `(kh, kw)` only if
/// `kh·dh ≡ a (mod sh)` and `kw·dw ≡ b (mod sw)`, from the output gradient at
/// `(r − ⌊kh·dh / sh⌋, q − ⌊kw·dw / sw⌋)`. That is a stride-1 correlation of the output
/// gradient, bordered by the largest of those offsets, with the phase's taps: the forward's
/// tiles ([`CorrelatePlane`]) compute each phase's block into scratch, which is then spread
/// onto its input positions. (The gather it replaces added a product at a time: 3.6 GFLOP/s
/// on MobileNet's stride-2 depthwise 3x3.)
fn phased_backward_data_image(gy: &[f32], weight: &[f32], s: &Conv2dShape, gx: &mut [f32]) {
    let ([sh, sw], [dh, dw], p) = (s.spec.stride, s.spec.dilation, s.spec.padding);
    let (kernel_w, taps) = (s.kernel_width, s.kernel_height * s.kernel_width);
    let multiplier = s.group_out();
    let (reach_h, reach_w) = (dh * (s.kernel_height - 1) / sh, dw * (kernel_w - 1) / sw);
    // Phase indices `i` whose padded index `i·stride + phase` is a pixel (`before` padding).
    let pixels = |phase: usize, before: usize, size: usize, stride: usize| {
        before.saturating_sub(phase).div_ceil(stride)
            ..(before + size).saturating_sub(phase).div_ceil(stride)
    };
    let phases: Vec<DataPhase> = (0..sh * sw)
        .map(|phase| {
            let (a, b) = (phase / sw, phase % sw);
            DataPhase {
                a,
                b,
                rows: pixels(a, p.top, s.in_height, sh),
                cols: pixels(b, p.left, s.in_width, sw),
                taps: (0..taps)
                    .filter(|&t| (t / kernel_w * dh) % sh == a && (t % kernel_w * dw) % sw == b)
                    .collect(),
            }
        })
        .collect();
    let end_rows = phases.iter().map(|ph| ph.rows.end).max().unwrap_or(0);
    let end_cols = phases.iter().map(|ph| ph.cols.end).max().unwrap_or(0);
    let largest = phases
        .iter()
        .map(|ph| ph.rows.len() * ph.cols.len())
        .max()
        .unwrap_or(0);
    let grid = Bordered {
        rows: s.out_height,
        cols: s.out_width,
        top: reach_h as isize,
        left: reach_w as isize,
        height: end_rows + reach_h,
        width: (end_cols + reach_w).next_multiple_of(LINE),
        stride: [1, 1],
    };
    // Each phase's shifts, for the `multiplier` output gradients of a channel laid `len()` apart.
    let shifts: Vec<Vec<usize>> = phases
        .iter()
        .map(|ph| {
            (0..multiplier)
                .flat_map(|k| {
                    ph.taps.iter().map(move |&t| {
                        let (i, j) = (t / kernel_w * dh / sh, t % kernel_w * dw / sw);
                        k * grid.len()
                            + (ph.rows.start + reach_h - i) * grid.width
                            + (ph.cols.start + reach_w - j)
                    })
                })
                .collect()
        })
        .collect();
    let mut weights = Vec::with_capacity(multiplier * taps);
    let phase_count = phases.len();
    with_scratch_parts(
        [multiplier * grid.len(), phase_count * largest],
        |[bordered, blocks]| {
            bordered.fill(0.0);
            for (c, gx_plane) in gx.chunks_exact_mut(s.in_plane()).enumerate() {
                for (k, buffer) in bordered.chunks_exact_mut(grid.len()).enumerate() {
                    let o = c * multiplier + k;
                    grid.copy_in(&gy[o * s.out_plane()..(o + 1) * s.out_plane()], buffer);
                }
                for ((ph, shifts), block) in phases
                    .iter()
                    .zip(&shifts)
                    .zip(blocks.chunks_exact_mut(largest.max(1)))
                {
                    let block = &mut block[..ph.rows.len() * ph.cols.len()];
                    if ph.taps.is_empty() {
                        block.fill(0.0);
                        continue;
                    }
                    if block.is_empty() {
                        continue;
                    }
                    weights.clear();
                    for k in 0..multiplier {
                        let w = &weight[(c * multiplier + k) * taps..][..taps];
                        weights.extend(ph.taps.iter().map(|&t| w[t]));
                    }
                    with_vector(CorrelatePlane {
                        src: grid.grid(bordered),
                        grid: &grid,
                        dims: (ph.rows.len(), ph.cols.len()),
                        shifts,
                        weights: &weights,
                        epilogue: Epilogue::default(),
                        out: block,
                        ahead: &[],
                    });
                }
                with_vector(SpreadPhases {
                    phases: &phases,
                    blocks,
                    block_len: largest,
                    s,
                    gx: gx_plane,
                });
            }
        },
    );
}

/// The blocks of [`phased_backward_data_image`]'s phases (`block_len` floats apart, each
/// `rows x cols` of its phase) onto their input positions of `gx` `[H, W]`: at a column stride
/// of 2 a row's two phases interleaved a vector pair at a time (a value at a time this was
/// two thirds of the pass), otherwise a value at a time.
struct SpreadPhases<'a> {
    phases: &'a [DataPhase],
    blocks: &'a [f32],
    block_len: usize,
    s: &'a Conv2dShape,
    gx: &'a mut [f32],
}

impl VectorKernel for SpreadPhases<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let s = self.s;
        let ([sh, sw], p) = (s.spec.stride, s.spec.padding);
        let width = s.in_width;
        let block = |index: usize| &self.blocks[index * self.block_len..];
        if sw == 2 && width >= 2 {
            // Input columns 0, 2, ... are phase `left mod 2`, columns 1, 3, ... the other; both
            // runs start at their blocks' first column (the blocks hold the pixels only).
            let pairs = width / 2;
            for (h, row) in self.gx.chunks_exact_mut(width).enumerate() {
                let (a, r) = ((h + p.top) % sh, (h + p.top) / sh);
                let even_phase = a * 2 + p.left % 2;
                let odd_phase = a * 2 + (p.left + 1) % 2;
                let (even, odd) = (&self.phases[even_phase], &self.phases[odd_phase]);
                let even_row = &block(even_phase)[(r - even.rows.start) * even.cols.len()..];
                let odd_row = &block(odd_phase)[(r - odd.rows.start) * odd.cols.len()..];
                // SAFETY: `with_vector` runs this only with a vector type the CPU supports.
                unsafe { interleave::<V>(even_row, odd_row, &mut row[..2 * pairs]) };
                if width % 2 == 1 {
                    row[width - 1] = even_row[pairs];
                }
            }
            return;
        }
        for (index, ph) in self.phases.iter().enumerate() {
            let cols = ph.cols.len();
            if cols == 0 {
                continue;
            }
            // Phase position `(r, q)` is input pixel `(r·sh + a − top, q·sw + b − left)`.
            let first_col = ph.cols.start * sw + ph.b - p.left;
            for (r, block_row) in ph.rows.clone().zip(block(index).chunks_exact(cols)) {
                let h = r * sh + ph.a - p.top;
                let row = &mut self.gx[h * width..(h + 1) * width];
                for (v, &g) in row[first_col..].iter_mut().step_by(sw).zip(block_row) {
                    *v = g;
                }
            }
        }
    }
}

/// Backward-filter over the whole batch: `dw[o, t] = Σ_n Σ_p dy[n, o, p] · x_bordered[n, c][p + shift_t]`.
pub(super) fn backward_filter(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    grad_weight: &mut [f32],
) {
    let multiplier = s.group_out();
    let taps = s.kernel_height * s.kernel_width;
    if s.in_channels >= rayon::current_num_threads() {
        // Enough channels: each task owns the filters of a run of input channels, and reads
        // their planes image by image, in the order they lie in memory, which the hardware
        // prefetchers follow. (A task per channel read its planes an image apart and
        // prefetched the next in software: on S6, 2 threads, Intel Xeon model 207, this order
        // without the prefetch is 9% faster, and the order made no difference with it. The
        // prefetch had measured +15% on a Zen 4 in the old order, where no hardware
        // prefetcher follows a jump of an image; this order needs none.)
        let per_task = s
            .in_channels
            .div_ceil(4 * rayon::current_num_threads())
            .max(1);
        grad_weight
            .par_chunks_mut(per_task * multiplier * taps)
            .enumerate()
            .for_each(|(t, gw)| {
                let first = t * per_task;
                let channels = first..first + gw.len() / (multiplier * taps);
                filter_gradient(input, grad_output, s, channels, 0..s.batch, gw)
            });
    } else {
        // Few channels (a single-channel first layer): split the batch instead.
        sum_over_image_chunks(s.batch, grad_weight, |images, partial| {
            filter_gradient(input, grad_output, s, 0..s.in_channels, images, partial)
        });
    }
}

/// Adds the filter gradient of input channels `channels` over `images` into `gw`, which holds
/// those channels' filters.
fn filter_gradient(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    channels: Range<usize>,
    images: Range<usize>,
    gw: &mut [f32],
) {
    let multiplier = s.group_out();
    let taps = s.kernel_height * s.kernel_width;
    let first_channel = channels.start;
    gw.fill(0.0);
    let grid = Bordered::forward(s);
    let shifts = grid.shifts(s, 1);
    let out_dims = (s.out_height, s.out_width);
    let in_place = reads_in_place(s);
    let in_place_at_stride_two = reads_in_place_at_stride_two(s);
    let copies = !in_place && !in_place_at_stride_two;
    with_scratch_parts([if copies { grid.len() } else { 0 }], |[bordered]| {
        bordered.fill(0.0);
        for n in images {
            for c in channels.clone() {
                let plane = &input[(n * s.in_channels + c) * s.in_plane()..][..s.in_plane()];
                let (p, dims) = (s.spec.padding, (s.in_height, s.in_width));
                let src = if in_place {
                    let at = (p.top as isize, p.left as isize);
                    FilterSource::InPlace(PlaneInBorder::new(plane, dims, at, s.spec.dilation[1]))
                } else if in_place_at_stride_two {
                    FilterSource::InPlaceStrideTwo(PlaneAtStrideTwo::new(
                        plane,
                        dims,
                        (p.top, p.left),
                    ))
                } else {
                    grid.copy_in(plane, bordered);
                    FilterSource::Bordered {
                        src: grid.grid(bordered),
                        width: grid.width,
                        shifts: &shifts,
                    }
                };
                for o in c * multiplier..(c + 1) * multiplier {
                    let g =
                        &grad_output[(n * s.out_channels + o) * s.out_plane()..][..s.out_plane()];
                    let local = (o - first_channel * multiplier) * taps;
                    with_vector(FilterPlane {
                        g,
                        src,
                        dims: out_dims,
                        sums: &mut gw[local..local + taps],
                    });
                }
            }
        }
    });
}
