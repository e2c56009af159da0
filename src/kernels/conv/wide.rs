//! Stride-1 convolutions on a padded "wide" grid.
//!
//! Each input plane is copied once into a zero-padded buffer of width `Wp = W + left + right`,
//! and the output is computed on a grid with the same row stride. Tap `(kh, kw)` then reads the
//! padded plane at the constant offset `kh·dh·Wp + kw·dw`, so a whole row of the im2col matrix
//! is one contiguous copy (and col2im one contiguous add) instead of a segment per output row.
//! The `Wp − OW` extra columns of each grid row are computed and discarded (zeros in gradients,
//! so they add nothing).
//!
//! The GEMM kernels here serve every stride-1 convolution that is neither pointwise nor direct;
//! the direct kernels use the same geometry.

use super::Conv2dShape;
use crate::kernels::gemm::{MatMut, MatRef, gemm};
use crate::kernels::scratch::with_scratch;
use crate::simd::dispatch;

/// The padded-plane geometry of a stride-1 convolution.
pub(super) struct Wide {
    /// Padded width: the row stride of the padded input and of the wide output grid.
    pub width: usize,
    /// Length of one padded plane: the padded image plus a zero tail so the last taps' reads of
    /// the wide grid stay in bounds.
    pub padded_len: usize,
    /// Length of the whole wide output grid, `OH · width`.
    pub out_len: usize,
    /// The offset of each tap `(kh, kw)`, row-major.
    pub shifts: Vec<usize>,
}

impl Wide {
    pub fn new(s: &Conv2dShape) -> Wide {
        debug_assert_eq!(s.spec.stride, [1, 1], "the wide grid needs stride 1");
        let p = s.spec.padding;
        let width = s.in_width + p.left + p.right;
        let height = s.in_height + p.top + p.bottom;
        let [dh, dw] = s.spec.dilation;
        let shifts = (0..s.kernel_height)
            .flat_map(|kh| (0..s.kernel_width).map(move |kw| kh * dh * width + kw * dw))
            .collect();
        Wide {
            width,
            padded_len: height * width + dw * (s.kernel_width - 1),
            out_len: s.out_height * width,
            shifts,
        }
    }

    /// The padded plane's area without the tail.
    pub fn padded_area(&self, s: &Conv2dShape) -> usize {
        (s.in_height + s.spec.padding.top + s.spec.padding.bottom) * self.width
    }

    /// Copies `plane` `[H, W]` into `padded` with zero borders.
    pub fn pad(&self, s: &Conv2dShape, plane: &[f32], padded: &mut [f32]) {
        padded.fill(0.0);
        let (top, left) = (s.spec.padding.top, s.spec.padding.left);
        for (h, row) in plane.chunks_exact(s.in_width).enumerate() {
            let start = (top + h) * self.width + left;
            padded[start..start + s.in_width].copy_from_slice(row);
        }
    }

    /// Copies the interior of a padded plane back to `plane` `[H, W]`.
    pub fn unpad(&self, s: &Conv2dShape, padded: &[f32], plane: &mut [f32]) {
        let (top, left) = (s.spec.padding.top, s.spec.padding.left);
        for (h, row) in plane.chunks_exact_mut(s.in_width).enumerate() {
            let start = (top + h) * self.width + left;
            row.copy_from_slice(&padded[start..start + s.in_width]);
        }
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
            grid_row[..s.out_width].copy_from_slice(source);
            grid_row[s.out_width..].fill(0.0);
        }
    }

    /// Copies the valid columns of `rows` wide rows back to output rows
    /// `[first_row, first_row + rows)` of `plane` `[OH, OW]`.
    pub fn narrow(&self, s: &Conv2dShape, grid: &[f32], first_row: usize, plane: &mut [f32]) {
        for (r, grid_row) in grid.chunks_exact(self.width).enumerate() {
            plane[(first_row + r) * s.out_width..][..s.out_width]
                .copy_from_slice(&grid_row[..s.out_width]);
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

/// Forward of one image: per group, pad its channels, then per tile of output rows
/// `Y_wide = W_g · cols`, narrowed into the output.
pub(super) fn forward_image(x: &[f32], weight: &[f32], s: &Conv2dShape, out: &mut [f32]) {
    let wide = Wide::new(s);
    let (cg, og, k) = (s.group_in(), s.group_out(), s.group_patch());
    let rows = wide.tile_rows(s);
    let tile = rows * wide.width;
    with_scratch(cg * wide.padded_len + k * tile + og * tile, |buffer| {
        let (padded, rest) = buffer.split_at_mut(cg * wide.padded_len);
        let (cols, grid) = rest.split_at_mut(k * tile);
        for g in 0..s.spec.groups {
            for c in 0..cg {
                let plane = &x[(g * cg + c) * s.in_plane()..][..s.in_plane()];
                wide.pad(
                    s,
                    plane,
                    &mut padded[c * wide.padded_len..(c + 1) * wide.padded_len],
                );
            }
            let w = MatRef::row_major(&weight[g * og * k..(g + 1) * og * k], og, k);
            for first_row in (0..s.out_height).step_by(rows) {
                let count = rows.min(s.out_height - first_row);
                let n = count * wide.width;
                let cols = &mut cols[..k * n];
                wide.im2col(padded, first_row, count, cols);
                let grid = &mut grid[..og * n];
                gemm(
                    1.0,
                    w,
                    MatRef::row_major(cols, k, n),
                    0.0,
                    MatMut::row_major(grid, og, n),
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
    let wide = Wide::new(s);
    let (cg, og, k) = (s.group_in(), s.group_out(), s.group_patch());
    let rows = wide.tile_rows(s);
    let tile = rows * wide.width;
    with_scratch(cg * wide.padded_len + k * tile + og * tile, |buffer| {
        let (accumulated, rest) = buffer.split_at_mut(cg * wide.padded_len);
        let (cols, grid) = rest.split_at_mut(k * tile);
        for g in 0..s.spec.groups {
            accumulated.fill(0.0);
            let w_t = MatRef::row_major(&weight[g * og * k..(g + 1) * og * k], og, k).t();
            for first_row in (0..s.out_height).step_by(rows) {
                let count = rows.min(s.out_height - first_row);
                let n = count * wide.width;
                let grid = &mut grid[..og * n];
                for o in 0..og {
                    let plane = &gy[(g * og + o) * s.out_plane()..][..s.out_plane()];
                    wide.widen(s, plane, first_row, count, grid, o * n);
                }
                let cols = &mut cols[..k * n];
                gemm(
                    1.0,
                    w_t,
                    MatRef::row_major(grid, og, n),
                    0.0,
                    MatMut::row_major(cols, k, n),
                );
                wide.col2im_add(cols, first_row, count, accumulated);
            }
            for c in 0..cg {
                let plane = &mut gx[(g * cg + c) * s.in_plane()..][..s.in_plane()];
                wide.unpad(
                    s,
                    &accumulated[c * wide.padded_len..(c + 1) * wide.padded_len],
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
    let wide = Wide::new(s);
    let (cg, og, k) = (s.group_in(), s.group_out(), s.group_patch());
    let rows = wide.tile_rows(s);
    let tile = rows * wide.width;
    with_scratch(cg * wide.padded_len + k * tile + og * tile, |buffer| {
        let (padded, rest) = buffer.split_at_mut(cg * wide.padded_len);
        let (cols, grid) = rest.split_at_mut(k * tile);
        for n_image in images {
            for g in 0..s.spec.groups {
                for c in 0..cg {
                    let plane = &input[((n_image * s.in_channels) + g * cg + c) * s.in_plane()..]
                        [..s.in_plane()];
                    wide.pad(
                        s,
                        plane,
                        &mut padded[c * wide.padded_len..(c + 1) * wide.padded_len],
                    );
                }
                let gw_g = &mut grad_weight[g * og * k..(g + 1) * og * k];
                for first_row in (0..s.out_height).step_by(rows) {
                    let count = rows.min(s.out_height - first_row);
                    let n = count * wide.width;
                    let cols = &mut cols[..k * n];
                    wide.im2col(padded, first_row, count, cols);
                    let grid = &mut grid[..og * n];
                    for o in 0..og {
                        let plane = &grad_output
                            [((n_image * s.out_channels) + g * og + o) * s.out_plane()..]
                            [..s.out_plane()];
                        wide.widen(s, plane, first_row, count, grid, o * n);
                    }
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
