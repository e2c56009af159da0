//! Convolutions on a padded "wide" grid, for the GEMM path.
//!
//! Each input plane is copied once into a zero-padded buffer, split into `stride_h · stride_w`
//! phase planes (phase `(a, b)` holds the padded rows `a, a + sh, ...` and columns
//! `b, b + sw, ...`), each of width `Wq = ⌈Wp / sw⌉`. The output is computed on a grid with the
//! same row stride `Wq`. Output `(oh, ow)` of tap `(kh, kw)` reads padded position
//! `(oh·sh + kh·dh, ow·sw + kw·dw)`, which is phase `(kh·dh mod sh, kw·dw mod sw)` at
//! `(oh + ⌊kh·dh / sh⌋, ow + ⌊kw·dw / sw⌋)`: a constant offset from the grid position. So a
//! whole row of the im2col matrix is one contiguous copy (and col2im one contiguous add),
//! whatever the stride, instead of a gather per output row. The `Wq − OW` extra columns of each
//! grid row are computed and discarded (zeros in gradients, so they add nothing).
//!
//! At stride 1 there is a single phase: the padded plane itself.

use super::epilogue::Epilogue;
use super::gradient_gemm;
use super::shape::Conv2dShape;
use super::shifted::{
    self, Gaps, PARALLEL_PACK_MIN, PackedLayout, PackedRows, Rows, shifted_gemm,
    shifted_gemm_reduce,
};
use crate::kernels::gemm::{MatMut, MatRef, gemm, gemm_with_epilogue};
use crate::kernels::scratch::with_scratch_parts;
use crate::kernels::vector::{Vector, VectorKernel, deinterleave_within, interleave, with_vector};
use crate::util::simd::{copy_row, dispatch};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The phase-plane geometry of a convolution.
pub(super) struct Wide {
    /// The row stride of the phase planes and of the wide output grid, `⌈Wp / sw⌉`.
    pub width: usize,
    /// Length of one phase plane: its rows plus a zero tail so the last taps' reads of the
    /// wide grid stay in bounds.
    plane_len: usize,
    /// Length of one channel's phase planes together; the per-channel stride of padded buffers.
    pub padded_len: usize,
    /// Length of the whole wide output grid, `OH · width`.
    pub out_len: usize,
    /// The offset of each tap `(kh, kw)` (row-major) within a channel's phase planes.
    pub shifts: Vec<usize>,
}

impl Wide {
    pub fn new(s: &Conv2dShape) -> Wide {
        let p = s.spec.padding;
        let ([sh, sw], [dh, dw]) = (s.spec.stride, s.spec.dilation);
        // At stride 1 the right padding of a row can be the left padding of the next one: a
        // read past the row's end wraps into zeros as long as it stays within that left margin.
        // That narrows the grid (16 to 15 columns for a 14-wide image), and so the wasted
        // columns of every GEMM. Wider padding than the kernel spans keeps the full width.
        let span = dw * (s.kernel_width - 1);
        let width = if sw == 1 && p.left.min(p.right) <= span {
            s.in_width + p.left.max(p.right)
        } else {
            (s.in_width + p.left + p.right).div_ceil(sw)
        };
        let height = (s.in_height + p.top + p.bottom).div_ceil(sh);
        let tail = dw * (s.kernel_width - 1) / sw;
        let plane_len = height * width + tail;
        let shifts = (0..s.kernel_height)
            .flat_map(|kh| {
                (0..s.kernel_width).map(move |kw| {
                    let (row, col) = (kh * dh, kw * dw);
                    let phase = (row % sh) * sw + col % sw;
                    phase * plane_len + (row / sh) * width + col / sw
                })
            })
            .collect();
        Wide {
            width,
            plane_len,
            padded_len: sh * sw * plane_len,
            out_len: s.out_height * width,
            shifts,
        }
    }

    /// Calls `f(input_row, phase_offset_of_first_column, input_column_step)` for each input row
    /// and column phase: input columns `b0, b0 + sw, ...` of row `h` land contiguously at the
    /// returned offset of the channel's phase planes.
    fn for_each_row_phase(&self, s: &Conv2dShape, mut f: impl FnMut(usize, usize, usize)) {
        let sw = s.spec.stride[1];
        for h in 0..s.in_height {
            for first in 0..sw.min(s.in_width) {
                f(
                    h * s.in_width + first,
                    self.row_phase_offset(s, h, first),
                    sw,
                );
            }
        }
    }

    /// Where input column `first` (`< sw`) of input row `h` lands in a channel's phase planes;
    /// columns `first + sw, first + 2·sw, ...` follow it contiguously.
    fn row_phase_offset(&self, s: &Conv2dShape, h: usize, first: usize) -> usize {
        let p = s.spec.padding;
        let [sh, sw] = s.spec.stride;
        let padded_row = p.top + h;
        let phase = (padded_row % sh) * sw + (p.left + first) % sw;
        phase * self.plane_len + (padded_row / sh) * self.width + (p.left + first) / sw
    }

    /// Copies `plane` `[H, W]` into the phase planes `padded`, zero elsewhere.
    pub fn pad(&self, s: &Conv2dShape, plane: &[f32], padded: &mut [f32]) {
        padded[..self.padded_len].fill(0.0);
        if s.spec.stride[1] == 2 && s.in_width >= 2 {
            // Each row splits into its even and odd columns, a vector pair at a time (the
            // scalar gather took an eighth of a stride-2 forward).
            return with_vector(SplitColumns {
                wide: self,
                s,
                plane,
                padded,
            });
        }
        let w = s.in_width;
        self.for_each_row_phase(s, |start, offset, step| {
            let row = &plane[start..start - start % w + w];
            if step == 1 {
                copy_row(&mut padded[offset..offset + row.len()], row);
            } else {
                for (i, &v) in row.iter().step_by(step).enumerate() {
                    padded[offset + i] = v;
                }
            }
        });
    }

    /// Copies the input positions of phase planes back to `plane` `[H, W]`.
    pub fn unpad(&self, s: &Conv2dShape, padded: &[f32], plane: &mut [f32]) {
        if s.spec.stride[1] == 2 && s.in_width >= 2 {
            return with_vector(MergeColumns {
                wide: self,
                s,
                padded,
                plane,
            });
        }
        let w = s.in_width;
        self.for_each_row_phase(s, |start, offset, step| {
            let row = &mut plane[start..start - start % w + w];
            if step == 1 {
                let len = row.len();
                copy_row(row, &padded[offset..offset + len]);
            } else {
                for (i, v) in row.iter_mut().step_by(step).enumerate() {
                    *v = padded[offset + i];
                }
            }
        });
    }

    /// The offset of every row `(channel, tap)` of the column matrix in buffers holding
    /// `channels` planes `channel_len` apart, each tap `reach(shift)` from its plane's start.
    fn row_offsets(
        &self,
        channels: usize,
        channel_len: usize,
        reach: impl Fn(usize) -> usize,
    ) -> Vec<usize> {
        (0..channels)
            .flat_map(|c| self.shifts.iter().map(move |&shift| (c, shift)))
            .map(|(c, shift)| c * channel_len + reach(shift))
            .collect()
    }

    /// Writes output rows `[first_row, first_row + rows)` of `plane` `[OH, OW]` onto `grid`
    /// (`rows` wide rows) at `offset`, zero in the extra columns.
    pub fn widen(
        &self,
        s: &Conv2dShape,
        plane: &[f32],
        first_row: usize,
        rows: usize,
        grid: &mut [f32],
        offset: usize,
    ) {
        let grid = &mut grid[offset..offset + rows * self.width];
        for (r, grid_row) in grid.chunks_exact_mut(self.width).enumerate() {
            let source = &plane[(first_row + r) * s.out_width..][..s.out_width];
            copy_row(&mut grid_row[..s.out_width], source);
            grid_row[s.out_width..].fill(0.0);
        }
    }

    /// Copies the valid columns of `rows` wide rows back to output rows
    /// `[first_row, first_row + rows)` of `plane` `[OH, OW]`.
    pub fn narrow(&self, s: &Conv2dShape, grid: &[f32], first_row: usize, plane: &mut [f32]) {
        for (r, grid_row) in grid.chunks_exact(self.width).enumerate() {
            let row = &mut plane[(first_row + r) * s.out_width..][..s.out_width];
            copy_row(row, &grid_row[..s.out_width]);
        }
    }

    /// Output rows per GEMM tile: the column buffer stays near 2 MB.
    fn tile_rows(&self, s: &Conv2dShape) -> usize {
        const TARGET_FLOATS: usize = 512 * 1024;
        (TARGET_FLOATS / (s.group_patch() * self.width)).clamp(1, s.out_height.max(1))
    }

    /// Fills `cols` `[Cg·KH·KW, rows·width]` for output rows starting at `first_row` from the
    /// group's padded planes: each row is one contiguous copy.
    fn im2col(&self, padded: &[f32], first_row: usize, rows: usize, cols: &mut [f32]) {
        let n = rows * self.width;
        let taps = self.shifts.len();
        for (r, row) in cols.chunks_exact_mut(n).enumerate() {
            let (c, t) = (r / taps, r % taps);
            let start = c * self.padded_len + self.shifts[t] + first_row * self.width;
            row.copy_from_slice(&padded[start..start + n]);
        }
    }

    /// The adjoint of [`Wide::im2col`]: adds each row of `cols` onto the padded planes.
    fn col2im_add(&self, cols: &[f32], first_row: usize, rows: usize, padded: &mut [f32]) {
        let n = rows * self.width;
        let taps = self.shifts.len();
        for (r, row) in cols.chunks_exact(n).enumerate() {
            let (c, t) = (r / taps, r % taps);
            let start = c * self.padded_len + self.shifts[t] + first_row * self.width;
            let target = &mut padded[start..start + n];
            dispatch(
                #[inline(always)]
                || {
                    for (a, &b) in target.iter_mut().zip(row) {
                        *a += b;
                    }
                },
            );
        }
    }
}

/// The work areas of the GEMM kernels, carved from one per-thread scratch buffer: a group's
/// padded (phase) planes, a tile of the column matrix, and a tile of the wide output grid.
struct Workspace<'a> {
    planes: &'a mut [f32],
    cols: &'a mut [f32],
    grid: &'a mut [f32],
}

/// Runs `f` with the geometry, the output rows per tile, and the work areas.
fn with_workspace(s: &Conv2dShape, f: impl FnOnce(&Wide, usize, Workspace<'_>)) {
    let wide = Wide::new(s);
    let rows = wide.tile_rows(s);
    let tile = rows * wide.width;
    let planes_len = s.group_in() * wide.padded_len;
    with_scratch_parts(
        [planes_len, s.group_patch() * tile, s.group_out() * tile],
        |[planes, cols, grid]| f(&wide, rows, Workspace { planes, cols, grid }),
    );
}

/// [`Wide::pad`]'s copy at column stride 2: each input row's even columns to one phase plane,
/// its odd ones to the other.
struct SplitColumns<'a> {
    wide: &'a Wide,
    s: &'a Conv2dShape,
    plane: &'a [f32],
    padded: &'a mut [f32],
}

impl VectorKernel for SplitColumns<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let w = self.s.in_width;
        let pairs = w / 2;
        for (h, row) in self.plane.chunks_exact(w).enumerate() {
            // The two runs lie in different phase planes (or rows of one), apart.
            let even_at = self.wide.row_phase_offset(self.s, h, 0);
            let odd_at = self.wide.row_phase_offset(self.s, h, 1);
            // SAFETY: `with_vector` runs this only with a vector type the CPU supports.
            unsafe { deinterleave_within::<V>(&row[..2 * pairs], self.padded, even_at, odd_at) };
            if w % 2 == 1 {
                self.padded[even_at + pairs] = row[w - 1];
            }
        }
    }
}

/// [`Wide::unpad`]'s copy at column stride 2, the inverse of [`SplitColumns`].
struct MergeColumns<'a> {
    wide: &'a Wide,
    s: &'a Conv2dShape,
    padded: &'a [f32],
    plane: &'a mut [f32],
}

impl VectorKernel for MergeColumns<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let w = self.s.in_width;
        let pairs = w / 2;
        for (h, row) in self.plane.chunks_exact_mut(w).enumerate() {
            let even = &self.padded[self.wide.row_phase_offset(self.s, h, 0)..];
            let odd = &self.padded[self.wide.row_phase_offset(self.s, h, 1)..];
            // SAFETY: `with_vector` runs this only with a vector type the CPU supports.
            unsafe { interleave::<V>(even, odd, &mut row[..2 * pairs]) };
            if w % 2 == 1 {
                row[w - 1] = even[pairs];
            }
        }
    }
}

/// The output-row tiles: `(first_row, rows)`.
fn tiles(s: &Conv2dShape, rows: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..s.out_height)
        .step_by(rows)
        .map(move |first| (first, rows.min(s.out_height - first)))
}

impl Wide {
    /// Pads the channels of group `g` of `image` `[C, H, W]` into `planes`.
    fn pad_group(&self, s: &Conv2dShape, image: &[f32], g: usize, planes: &mut [f32]) {
        let cg = s.group_in();
        for c in 0..cg {
            let plane = &image[(g * cg + c) * s.in_plane()..][..s.in_plane()];
            self.pad(
                s,
                plane,
                &mut planes[c * self.padded_len..(c + 1) * self.padded_len],
            );
        }
    }

    /// Widens output rows `[first_row, first_row + rows)` of every channel of group `g` of
    /// `image` `[O, OH, OW]` into `grid` `[O/groups, rows·width]`.
    fn widen_group(
        &self,
        s: &Conv2dShape,
        image: &[f32],
        g: usize,
        first_row: usize,
        rows: usize,
        grid: &mut [f32],
    ) {
        let (og, n) = (s.group_out(), rows * self.width);
        for o in 0..og {
            let plane = &image[(g * og + o) * s.out_plane()..][..s.out_plane()];
            self.widen(s, plane, first_row, rows, grid, o * n);
        }
    }
}

/// The weight of group `g`, `[O/groups, Cg·KH·KW]`.
fn group_weight<'a>(weight: &'a [f32], s: &Conv2dShape, g: usize) -> MatRef<'a> {
    let (og, k) = (s.group_out(), s.group_patch());
    MatRef::row_major(&weight[g * og * k..(g + 1) * og * k], og, k)
}

/// Forward of one image: per group, pad its channels, then per tile of output rows
/// `Y_wide = W_g · cols`, narrowed into the output.
pub(super) fn forward_image(
    x: &[f32],
    weight: &[f32],
    s: &Conv2dShape,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) {
    let (og, k) = (s.group_out(), s.group_patch());
    with_workspace(s, |wide, rows, work| {
        for g in 0..s.spec.groups {
            wide.pad_group(s, x, g, work.planes);
            for (first_row, count) in tiles(s, rows) {
                let n = count * wide.width;
                let cols = &mut work.cols[..k * n];
                wide.im2col(work.planes, first_row, count, cols);
                let grid = &mut work.grid[..og * n];
                gemm_with_epilogue(
                    1.0,
                    group_weight(weight, s, g),
                    MatRef::row_major(cols, k, n),
                    0.0,
                    MatMut::row_major(grid, og, n),
                    epilogue.rows(g * og, og).for_gemm(),
                );
                for (o, grid_rows) in grid.chunks_exact(n).enumerate() {
                    let plane = &mut out[(g * og + o) * s.out_plane()..][..s.out_plane()];
                    wide.narrow(s, grid_rows, first_row, plane);
                }
            }
        }
    });
}

/// Backward-data of one image: per tile, `cols = W_gᵀ · dY_wide`, added back onto padded
/// gradient planes, which are finally cropped into `gx`.
pub(super) fn backward_data_image(gy: &[f32], weight: &[f32], s: &Conv2dShape, gx: &mut [f32]) {
    let (cg, og, k) = (s.group_in(), s.group_out(), s.group_patch());
    with_workspace(s, |wide, rows, work| {
        for g in 0..s.spec.groups {
            work.planes.fill(0.0);
            for (first_row, count) in tiles(s, rows) {
                let n = count * wide.width;
                let grid = &mut work.grid[..og * n];
                wide.widen_group(s, gy, g, first_row, count, grid);
                let cols = &mut work.cols[..k * n];
                gemm(
                    1.0,
                    group_weight(weight, s, g).t(),
                    MatRef::row_major(grid, og, n),
                    0.0,
                    MatMut::row_major(cols, k, n),
                );
                wide.col2im_add(cols, first_row, count, work.planes);
            }
            for c in 0..cg {
                let plane = &mut gx[(g * cg + c) * s.in_plane()..][..s.in_plane()];
                wide.unpad(
                    s,
                    &work.planes[c * wide.padded_len..(c + 1) * wide.padded_len],
                    plane,
                );
            }
        }
    });
}

/// Adds `Σ_{n in images} dY_wide,n · cols_nᵀ` into `grad_weight`.
pub(super) fn accumulate_filter_gradient(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    images: std::ops::Range<usize>,
    grad_weight: &mut [f32],
) {
    let (og, k) = (s.group_out(), s.group_patch());
    let (image_in, image_out) = (s.in_channels * s.in_plane(), s.out_channels * s.out_plane());
    with_workspace(s, |wide, rows, work| {
        for n_image in images {
            let x = &input[n_image * image_in..(n_image + 1) * image_in];
            let gy = &grad_output[n_image * image_out..(n_image + 1) * image_out];
            for g in 0..s.spec.groups {
                wide.pad_group(s, x, g, work.planes);
                let gw_g = &mut grad_weight[g * og * k..(g + 1) * og * k];
                for (first_row, count) in tiles(s, rows) {
                    let n = count * wide.width;
                    let cols = &mut work.cols[..k * n];
                    wide.im2col(work.planes, first_row, count, cols);
                    let grid = &mut work.grid[..og * n];
                    wide.widen_group(s, gy, g, first_row, count, grid);
                    // dW_g += dY_wide · colsᵀ (the zero extra columns add nothing)
                    let cols_t = MatRef::row_major(cols, k, n).t();
                    gemm(
                        1.0,
                        MatRef::row_major(grid, og, n),
                        cols_t,
                        1.0,
                        MatMut::row_major(gw_g, og, k),
                    );
                }
            }
        }
    });
}

/// The weight of each group packed for [`shifted_gemm`] in the forward pass: row `o`, column
/// `(c, tap)`.
pub(super) fn pack_forward(weight: &[f32], s: &Conv2dShape) -> Vec<PackedRows> {
    let (og, k) = (s.group_out(), s.group_patch());
    (0..s.spec.groups)
        .map(|g| PackedRows::from_row_major(&weight[g * og * k..(g + 1) * og * k], og, k))
        .collect()
}

/// The weights of the backward-data gather ([`backward_data_image_shifted`]): for each phase
/// plane, the taps that land in it and, for each group, `W_gᵀ` restricted to those taps,
/// packed for [`shifted_gemm`] (row `c`, column `(o, tap)`).
pub(super) struct GatherWeights {
    phases: Vec<GatherPhase>,
    /// The zeros in front of each output-gradient row of the gather's source: the furthest
    /// in-plane shift of a tap.
    reach: usize,
    /// The length of each row of the gather's source: `reach`, then the wide output gradient,
    /// then zeros as far as the last phase row read.
    spread_len: usize,
    /// `[group][phase]`, none for a phase without taps.
    packed: Vec<Vec<Option<PackedRows>>>,
}

/// The weights `[O/groups, Cg, KH, KW]` of one group as each phase's `W_gᵀ` (row `c`, column
/// `(o, tap)` for the phase's taps), packed for [`shifted_gemm`], none for a phase without taps.
/// One sweep through the weight writes every phase: each `(o, c)` holds its taps side by side.
/// (Packed phase by phase a value at a time, each phase reading the whole weight, this was
/// 2.4% of ResNet's stride-2 backward-data.)
fn pack_gather(weight: &[f32], s: &Conv2dShape, phases: &[GatherPhase]) -> Vec<Option<PackedRows>> {
    let (cg, og) = (s.group_in(), s.group_out());
    let taps = s.kernel_height * s.kernel_width;
    // Where tap `t` goes: its phase and its place among the phase's taps.
    let mut place = vec![(0, 0); taps];
    for (index, phase) in phases.iter().enumerate() {
        for (within, &t) in phase.taps.iter().enumerate() {
            place[t] = (index, within);
        }
    }
    let layouts: Vec<PackedLayout> = phases
        .iter()
        .map(|phase| PackedLayout::new(cg, og * phase.taps.len()))
        .collect();
    // Not zeroed first: every value is written, the last block's padding rows as zeros. Split
    // over threads by blocks of rows (each block of every phase is one contiguous run).
    let mut data: Vec<Vec<f32>> = layouts
        .iter()
        .map(|l| Vec::with_capacity(l.len()))
        .collect();
    let block_rows = shifted::block_rows();
    let blocks = cg.div_ceil(block_rows);
    let mut block_parts: Vec<Vec<&mut [MaybeUninit<f32>]>> = (0..blocks)
        .map(|_| Vec::with_capacity(phases.len()))
        .collect();
    for (data, layout) in data.iter_mut().zip(&layouts) {
        let spare = &mut data.spare_capacity_mut()[..layout.len()];
        if spare.is_empty() {
            block_parts.iter_mut().for_each(|parts| parts.push(&mut []));
            continue;
        }
        for (parts, part) in block_parts
            .iter_mut()
            .zip(spare.chunks_mut(layout.block_len()))
        {
            parts.push(part);
        }
    }
    let pack_block = |(b, mut parts): (usize, Vec<&mut [MaybeUninit<f32>]>)| {
        // Element `(first + i, column)` of the block at `column·block_rows + i`.
        let (first, rows) = (b * block_rows, block_rows.min(cg - b * block_rows));
        for o in 0..og {
            let w_o = &weight[o * cg * taps..(o + 1) * cg * taps];
            for (t, &(index, within)) in place.iter().enumerate() {
                let at = (o * phases[index].taps.len() + within) * block_rows;
                for (i, v) in parts[index][at..at + block_rows].iter_mut().enumerate() {
                    v.write(if i < rows {
                        w_o[(first + i) * taps + t]
                    } else {
                        0.0
                    });
                }
            }
        }
    };
    if weight.len() >= PARALLEL_PACK_MIN && !crate::util::threads::inside_split() {
        block_parts.into_par_iter().enumerate().for_each(pack_block);
    } else {
        block_parts.into_iter().enumerate().for_each(pack_block);
    }
    for (data, layout) in data.iter_mut().zip(&layouts) {
        // SAFETY: `pack_block` wrote every packed position: each block of `block_rows` rows,
        // padding rows included, at every column `(o, tap)` of each phase.
        unsafe { data.set_len(layout.len()) };
    }
    data.into_iter()
        .zip(layouts)
        .zip(phases)
        .map(|((data, layout), phase)| {
            (!phase.taps.is_empty()).then(|| PackedRows::from_packed(data, layout))
        })
        .collect()
}

/// One phase plane of the padded input gradient: the taps whose reads land in it (indices
/// into [`Wide::shifts`], none when the strides skip the plane's pixels: its gradient is
/// zero) and the rows of the plane that hold input pixels.
struct GatherPhase {
    taps: Vec<usize>,
    rows: std::ops::Range<usize>,
    /// Where column `(o, tap)` of the product reads the gather's source.
    offsets: Vec<usize>,
}

impl GatherWeights {
    pub fn new(weight: &[f32], s: &Conv2dShape) -> GatherWeights {
        let wide = Wide::new(s);
        let (cg, og) = (s.group_in(), s.group_out());
        let taps = s.kernel_height * s.kernel_width;
        let [sh, sw] = s.spec.stride;
        let in_plane_shift = |t: usize| wide.shifts[t] % wide.plane_len;
        let reach = (0..taps).map(in_plane_shift).max().unwrap_or(0);
        let mut phases: Vec<GatherPhase> = (0..sh * sw)
            .map(|phase| {
                let (phase_row, top) = (phase / sw, s.spec.padding.top);
                // Padded row `phase_row + sh·i` is input row `phase_row + sh·i − top`.
                let first = top.saturating_sub(phase_row).div_ceil(sh);
                let end = (top + s.in_height).saturating_sub(phase_row).div_ceil(sh);
                GatherPhase {
                    taps: (0..taps)
                        .filter(|&t| wide.shifts[t] / wide.plane_len == phase)
                        .collect(),
                    rows: first..end.max(first),
                    offsets: Vec::new(),
                }
            })
            .collect();
        let last_row = phases.iter().map(|phase| phase.rows.end).max().unwrap_or(0);
        let spread_len = reach + (last_row * wide.width).max(wide.out_len);
        for phase in &mut phases {
            let phase_taps = &phase.taps;
            phase.offsets = (0..og)
                .flat_map(|o| {
                    phase_taps
                        .iter()
                        .map(move |&t| o * spread_len + reach - in_plane_shift(t))
                })
                .collect();
        }
        let packed = (0..s.spec.groups)
            .map(|g| {
                pack_gather(
                    &weight[g * og * cg * taps..(g + 1) * og * cg * taps],
                    s,
                    &phases,
                )
            })
            .collect();
        GatherWeights {
            phases,
            reach,
            spread_len,
            packed,
        }
    }
}

/// Forward of one image without a column matrix:
/// `Y_wide[o, p] = Σ_(c, tap) W[o, c, tap] · planes[c, p + shift(tap)]`, read in place. The
/// whole wide grid is one product (no tiles: there is no column matrix to bound), so each block
/// of weights is loaded once per image; with AVX-512 and rows of a vector or more it is written
/// straight into the output ([`Gaps`]). At stride 1 with few input channels ([`Narrow`]) the
/// same product reads shifted copies of the input instead and writes the output in place.
pub(super) fn forward_image_shifted(
    x: &[f32],
    packed: &[PackedRows],
    s: &Conv2dShape,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) {
    let og = s.group_out();
    let group_epilogue = |g: usize| Epilogue {
        bias: epilogue.bias.map(|bias| &bias[g * og..(g + 1) * og]),
        ..epilogue
    };
    if Narrow::pays(s) {
        // The output computed where it goes, no wide grid to narrow.
        let narrow = Narrow::new(s);
        let offsets = narrow.offsets(s);
        let group_out = og * s.out_plane();
        with_scratch_parts([narrow.image_len], |[copies]| {
            for (g, packed) in packed.iter().enumerate() {
                narrow.copy_group(s, x, g, copies);
                let out = &mut out[g * group_out..(g + 1) * group_out];
                let plane = s.out_plane();
                shifted_gemm(
                    packed,
                    &offsets,
                    copies,
                    Gaps::NONE,
                    plane,
                    out,
                    plane,
                    group_epilogue(g),
                );
            }
        });
        return;
    }
    let wide = Wide::new(s);
    let planes_len = s.group_in() * wide.padded_len;
    let offsets = wide.row_offsets(s.group_in(), wide.padded_len, |shift| shift);
    // With AVX-512, rows at least a vector long are stored straight into the output,
    // skipping the grid's extra columns (two masked stores per vector at the end of a tile):
    // S4 forward +5% on two threads (Xeon, Sapphire Rapids) against loading the far lanes of
    // a vector across a row boundary once more, masked, at every step, which itself measured
    // +2.5-3% against narrowing the grid (Zen 4). AVX2's tiles are narrowed: stored in place
    // they measured +1.5% here, and AVX2's masked store is slow on AMD CPUs.
    let gaps = Gaps {
        row: s.out_width,
        gap: wide.width - s.out_width,
    };
    if shifted::wide_tiles() && gaps.supported() {
        let group_out = og * s.out_plane();
        with_scratch_parts([planes_len], |[planes]| {
            for (g, packed) in packed.iter().enumerate() {
                wide.pad_group(s, x, g, planes);
                let out = &mut out[g * group_out..(g + 1) * group_out];
                let plane = s.out_plane();
                let epilogue = group_epilogue(g);
                shifted_gemm(packed, &offsets, planes, gaps, plane, out, plane, epilogue);
            }
        });
        return;
    }
    with_scratch_parts([planes_len, og * wide.out_len], |[planes, grid]| {
        for (g, packed) in packed.iter().enumerate() {
            wide.pad_group(s, x, g, planes);
            let len = wide.out_len;
            let epilogue = group_epilogue(g);
            shifted_gemm(
                packed,
                &offsets,
                planes,
                Gaps::NONE,
                len,
                grid,
                len,
                epilogue,
            );
            for (o, grid_rows) in grid.chunks_exact(wide.out_len).enumerate() {
                let plane = &mut out[(g * og + o) * s.out_plane()..][..s.out_plane()];
                wide.narrow(s, grid_rows, 0, plane);
            }
        }
    });
}

/// Backward-data of one image without a column matrix, as the adjoint of the forward's reads:
/// tap `t` reads phase plane `φ(t)` at `d_t + p` for wide output column `p`, so each phase
/// plane's gradient is the gather `dP_φ[c, q] = Σ_(o, t in φ) W[o, c, t] · dY_wide[o, q − d_t]`
/// (one [`shifted_gemm`] per phase, over a copy of `dY_wide` with `reach` zeros in front),
/// computed on the rows that hold input pixels only. At stride 1 there is one phase; at
/// stride 2 a 3x3 filter's taps split 4 + 2 + 2 + 1 over four.
pub(super) fn backward_data_image_shifted(
    gy: &[f32],
    weights: &GatherWeights,
    s: &Conv2dShape,
    gx: &mut [f32],
) {
    let (cg, og) = (s.group_in(), s.group_out());
    let wide = Wide::new(s);
    let (reach, spread_len) = (weights.reach, weights.spread_len);
    let planes_len = cg * wide.padded_len;
    with_scratch_parts([planes_len, og * spread_len], |[planes, spread]| {
        for (g, packed) in weights.packed.iter().enumerate() {
            for (o, row) in spread.chunks_exact_mut(spread_len).enumerate() {
                let plane = &gy[(g * og + o) * s.out_plane()..][..s.out_plane()];
                row[..reach].fill(0.0);
                wide.widen(s, plane, 0, s.out_height, row, reach);
                row[reach + wide.out_len..].fill(0.0);
            }
            for (index, (phase, packed)) in weights.phases.iter().zip(packed).enumerate() {
                let (first, end) = (phase.rows.start * wide.width, phase.rows.end * wide.width);
                let plane_start = index * wide.plane_len;
                let Some(packed) = packed else {
                    for c in 0..cg {
                        let plane = c * wide.padded_len + plane_start;
                        planes[plane + first..plane + end].fill(0.0);
                    }
                    continue;
                };
                shifted_gemm(
                    packed,
                    &phase.offsets,
                    &spread[first..],
                    Gaps::NONE,
                    end - first,
                    &mut planes[plane_start + first..],
                    wide.padded_len,
                    Epilogue::default(),
                );
            }
            for c in 0..cg {
                let plane = &mut gx[(g * cg + c) * s.in_plane()..][..s.in_plane()];
                wide.unpad(
                    s,
                    &planes[c * wide.padded_len..(c + 1) * wide.padded_len],
                    plane,
                );
            }
        }
    });
}

/// Floats of padded planes and grids per chunk of images in the filter gradients (about 1 MB).
const CHUNK_FLOATS: usize = 256 * 1024;

/// Adds `Σ_{n in images} dY_n · cols_nᵀ` into `grad_weight` without a column matrix. With many
/// columns (see [`gradient_gemm::pays`]) the filter-gradient GEMM reads both operands where
/// they lie ([`gradient_gemm::accumulate_filter_gradient_in_place`]); with few, chunks of
/// images are padded and widened side by side (about 1 MB; a large image alone) and
/// [`shifted_gemm_reduce`]'s dot products read the column rows in place in them.
///
/// Reading the input in place replaced a padded, phase-split copy of it and a widened copy of
/// the gradient (Intel Xeon model 207, 2 threads, alternated in one process): S4's filter
/// gradient +21%, ResNet-18's stem +25%, its other stride-2 convolutions +4-7%, MNIST's second
/// convolution (S2, in place of a copy per filter column) level. The GEMM itself had measured
/// ahead of im2col + a packed GEMM, which must transpose the column matrix to pack it (VGG's
/// 56x56x256 conv 176 → 209 GFLOP/s, ResNet's stride-2 downsampling 122 → 161).
/// Whether [`accumulate_filter_gradient_shifted`] reads the input planes in place
/// ([`gradient_gemm::accumulate_filter_gradient_in_place`]): then it sums exactly the
/// convolution's terms, no product of a discarded grid column among them.
pub(super) fn filter_gradient_in_place(s: &Conv2dShape) -> bool {
    gradient_gemm::pays(s.group_patch())
}

pub(super) fn accumulate_filter_gradient_shifted(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    images: std::ops::Range<usize>,
    grad_weight: &mut [f32],
) {
    if filter_gradient_in_place(s) {
        return gradient_gemm::accumulate_filter_gradient_in_place(
            input,
            grad_output,
            s,
            images,
            grad_weight,
        );
    }
    if Narrow::pays(s) {
        return accumulate_filter_gradient_narrow(input, grad_output, s, images, grad_weight);
    }
    let (cg, og, k) = (s.group_in(), s.group_out(), s.group_patch());
    let (image_in, image_out) = (s.in_channels * s.in_plane(), s.out_channels * s.out_plane());
    let wide = Wide::new(s);
    // Each image's planes and grid start on a cache line, as the first ones do.
    let (planes_len, grid_len) = (
        (cg * wide.padded_len).next_multiple_of(16),
        (og * wide.out_len).next_multiple_of(16),
    );
    let chunk = (CHUNK_FLOATS / (planes_len + grid_len)).clamp(1, images.len().max(1));
    let offsets = wide.row_offsets(cg, wide.padded_len, |shift| shift);
    with_scratch_parts([chunk * planes_len, chunk * grid_len], |[planes, grids]| {
        for g in 0..s.spec.groups {
            let gw_g = &mut grad_weight[g * og * k..(g + 1) * og * k];
            for first in images.clone().step_by(chunk) {
                let count = chunk.min(images.end - first);
                // Pads and widens group `g` of images `first..first + count` side by side.
                for m in 0..count {
                    let n_image = first + m;
                    let x = &input[n_image * image_in..(n_image + 1) * image_in];
                    wide.pad_group(s, x, g, &mut planes[m * planes_len..(m + 1) * planes_len]);
                    let gy = &grad_output[n_image * image_out..(n_image + 1) * image_out];
                    let grid = &mut grids[m * grid_len..(m + 1) * grid_len];
                    wide.widen_group(s, gy, g, 0, s.out_height, grid);
                }
                let grad = Rows {
                    data: grids,
                    rows: og,
                    row_stride: wide.out_len,
                    image_stride: grid_len,
                };
                shifted_gemm_reduce(
                    grad,
                    planes,
                    &offsets,
                    planes_len,
                    count,
                    wide.out_len,
                    gw_g,
                );
            }
        }
    });
}

/// The layout of [`accumulate_filter_gradient_narrow`]: at stride 1, tap `(kh, kw)` of output
/// `(oh, ow)` reads padded position `(oh + kh·dh, ow + kw·dw)`, so a copy of the padded input
/// shifted left by `kw·dw` and cut to the output's width `OW` lines up, row stride `OW`, with
/// the output gradient as it lies: tap `(kh, kw)` is that copy read from row `kh·dh`. One copy
/// per filter column and input channel, `KW · C · Hp · OW` floats an image, replaces widening
/// the `O` planes of the gradient to the wide grid.
struct Narrow {
    /// Padded rows of each copy, `OH + (KH − 1)·dh`.
    rows: usize,
    /// Floats of one image's copies, rounded up to a cache line.
    image_len: usize,
}

impl Narrow {
    fn new(s: &Conv2dShape) -> Narrow {
        let rows = s.out_height + s.spec.dilation[0] * (s.kernel_height - 1);
        let image_len = (s.group_in() * s.kernel_width * rows * s.out_width).next_multiple_of(16);
        Narrow { rows, image_len }
    }

    /// Whether the narrow layout copies less than the wide grid (padded input plus the
    /// widened gradient, or the output narrowed from the grid): so with few input channels and
    /// many outputs (MNIST's first layer: 3 copies of one channel against 32 planes).
    fn pays(s: &Conv2dShape) -> bool {
        let wide = Wide::new(s);
        s.spec.stride == [1, 1]
            && Narrow::new(s).image_len
                < s.group_in() * wide.padded_len + s.group_out() * wide.out_len
    }

    /// Where each column `(c, kh, kw)` of the filter (row-major) reads an image's copies:
    /// copy `(c, kw)` from row `kh·dh`.
    fn offsets(&self, s: &Conv2dShape) -> Vec<usize> {
        let plane = self.rows * s.out_width;
        (0..s.group_in())
            .flat_map(|c| (0..s.kernel_height).map(move |kh| (c, kh)))
            .flat_map(|(c, kh)| (0..s.kernel_width).map(move |kw| (c, kh, kw)))
            .map(|(c, kh, kw)| {
                (c * s.kernel_width + kw) * plane + kh * s.spec.dilation[0] * s.out_width
            })
            .collect()
    }

    /// Copies channels of group `g` of `image` `[C, H, W]` into `copies`, one per (channel,
    /// filter column): row `r`, column `ow` of copy `(c, kw)` is padded position
    /// `(r, ow + kw·dw)`, zero in the padding.
    fn copy_group(&self, s: &Conv2dShape, image: &[f32], g: usize, copies: &mut [f32]) {
        let (cg, ow) = (s.group_in(), s.out_width);
        let p = s.spec.padding;
        let plane = self.rows * ow;
        for c in 0..cg {
            let x = &image[(g * cg + c) * s.in_plane()..][..s.in_plane()];
            for kw in 0..s.kernel_width {
                let copy = &mut copies[(c * s.kernel_width + kw) * plane..][..plane];
                // Input column of output column `j`: `j + shift`.
                let shift = (kw * s.spec.dilation[1]) as isize - p.left as isize;
                let (lo, hi) = super::parallel::valid_columns(0, ow, 1, shift, s.in_width);
                for (r, row) in copy.chunks_exact_mut(ow).enumerate() {
                    let h = r as isize - p.top as isize;
                    if h < 0 || h >= s.in_height as isize || lo == hi {
                        row.fill(0.0);
                        continue;
                    }
                    let source = &x[h as usize * s.in_width..][..s.in_width];
                    row[..lo].fill(0.0);
                    let from = (lo as isize + shift) as usize;
                    copy_row(&mut row[lo..hi], &source[from..from + hi - lo]);
                    row[hi..].fill(0.0);
                }
            }
        }
    }
}

/// As [`accumulate_filter_gradient_shifted`] at stride 1 in the [`Narrow`] layout: the output
/// gradient is read where it lies (no wide grid, so no discarded columns either), the input
/// copied once per filter column.
fn accumulate_filter_gradient_narrow(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    images: std::ops::Range<usize>,
    grad_weight: &mut [f32],
) {
    let (og, k) = (s.group_out(), s.group_patch());
    let (image_in, image_out) = (s.in_channels * s.in_plane(), s.out_channels * s.out_plane());
    let narrow = Narrow::new(s);
    let offsets = narrow.offsets(s);
    let chunk = (CHUNK_FLOATS / narrow.image_len).clamp(1, images.len().max(1));
    with_scratch_parts([chunk * narrow.image_len], |[copies]| {
        for g in 0..s.spec.groups {
            let gw_g = &mut grad_weight[g * og * k..(g + 1) * og * k];
            // Copies group `g` of images `first..first + count` side by side.
            let prepare = |first: usize, count: usize, copies: &mut [f32]| {
                for m in 0..count {
                    let x = &input[(first + m) * image_in..(first + m + 1) * image_in];
                    let copy = &mut copies[m * narrow.image_len..(m + 1) * narrow.image_len];
                    narrow.copy_group(s, x, g, copy);
                }
            };
            for first in images.clone().step_by(chunk) {
                let count = chunk.min(images.end - first);
                prepare(first, count, copies);
                let grad = Rows {
                    data: &grad_output[first * image_out + g * og * s.out_plane()..],
                    rows: og,
                    row_stride: s.out_plane(),
                    image_stride: image_out,
                };
                shifted_gemm_reduce(
                    grad,
                    copies,
                    &offsets,
                    narrow.image_len,
                    count,
                    s.out_plane(),
                    gw_g,
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::{Conv2dSpec, Padding2d};

    #[test]
    fn padding_writes_every_position_of_the_phase_planes() {
        // Into a buffer of NaNs (scratch holds whatever the last kernel left): each pixel at
        // its phase position, zero everywhere else, at strides 1 to 3, asymmetric and wide
        // padding, dilation, and an image narrower than the stride. (Zeroing only the
        // positions without pixels, instead of the whole planes first, measured 2.5% slower on
        // ResNet's stride-2 forward: the memset's full-line stores spare the copy its reads for
        // ownership.)
        for (input, kernel, padding, stride, dilation) in [
            ([5, 7], [3, 3], [1, 1, 1, 1], [1, 1], [1, 1]),
            ([6, 9], [3, 3], [1, 1, 1, 1], [2, 2], [1, 1]),
            ([7, 8], [3, 2], [0, 2, 3, 1], [2, 3], [1, 1]),
            ([5, 5], [3, 3], [4, 4, 4, 4], [1, 1], [1, 1]),
            ([6, 6], [3, 3], [2, 2, 2, 2], [1, 1], [2, 2]),
            ([4, 1], [1, 1], [1, 0, 0, 2], [2, 2], [1, 1]),
        ] {
            let [top, bottom, left, right] = padding;
            let spec = Conv2dSpec {
                padding: Padding2d {
                    top,
                    bottom,
                    left,
                    right,
                },
                stride,
                dilation,
                groups: 1,
            };
            let s = Conv2dShape::new(
                &[1, 1, input[0], input[1]],
                &[1, 1, kernel[0], kernel[1]],
                spec,
            );
            let wide = Wide::new(&s);
            let plane: Vec<f32> = (0..s.in_plane()).map(|i| i as f32 + 1.0).collect();
            let mut want = vec![0.0; wide.padded_len];
            for h in 0..s.in_height {
                for w in 0..s.in_width {
                    let sw = stride[1];
                    want[wide.row_phase_offset(&s, h, w % sw) + w / sw] = plane[h * s.in_width + w];
                }
            }
            let mut padded = vec![f32::NAN; wide.padded_len];
            wide.pad(&s, &plane, &mut padded);
            assert_eq!(padded, want, "{input:?} {padding:?} stride {stride:?}");
        }
    }
}
