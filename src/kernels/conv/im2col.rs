//! The GEMM paths: pointwise convolutions straight on the input planes, and im2col + GEMM for
//! everything else, tile by tile through a bounded per-thread column buffer.

use super::{Conv2dShape, valid_columns};
use crate::kernels::gemm::{MatMut, MatRef, gemm};
use crate::kernels::scratch::with_scratch;

pub(super) fn pointwise_forward_image(x: &[f32], weight: &[f32], s: &Conv2dShape, out: &mut [f32]) {
    let (cg, og, plane) = (s.group_in(), s.group_out(), s.in_plane());
    for g in 0..s.spec.groups {
        let w = MatRef::row_major(&weight[g * og * cg..(g + 1) * og * cg], og, cg);
        let x_g = MatRef::row_major(&x[g * cg * plane..(g + 1) * cg * plane], cg, plane);
        let y_g = MatMut::row_major(&mut out[g * og * plane..(g + 1) * og * plane], og, plane);
        gemm(1.0, w, x_g, 0.0, y_g);
    }
}

pub(super) fn im2col_forward_image(x: &[f32], weight: &[f32], s: &Conv2dShape, out: &mut [f32]) {
    let (cg, og, k) = (s.group_in(), s.group_out(), s.group_patch());
    let (plane_in, plane_out) = (s.in_plane(), s.out_plane());
    let tile = s.tile_pixels();
    with_scratch(k * tile, |cols| {
        for g in 0..s.spec.groups {
            let x_g = &x[g * cg * plane_in..(g + 1) * cg * plane_in];
            let w = MatRef::row_major(&weight[g * og * k..(g + 1) * og * k], og, k);
            let out_g = &mut out[g * og * plane_out..(g + 1) * og * plane_out];
            for start in (0..plane_out).step_by(tile) {
                let width = tile.min(plane_out - start);
                let cols = &mut cols[..k * width];
                im2col(x_g, s, start, width, cols);
                // The output tile: rows o of length `width`, `plane_out` apart.
                let y = MatMut::strided(&mut out_g[start..], og, width, plane_out, 1);
                gemm(1.0, w, MatRef::row_major(cols, k, width), 0.0, y);
            }
        }
    });
}

/// Calls `f(kernel_row, kernel_col, input_row, output_row, ow_start, ow_end, column)` for every
/// row segment of the column matrix of pixels `[start, start + width)`: the pieces im2col and
/// col2im both walk. `input_row` is `None` where the window row lies in the padding.
#[inline]
fn for_each_segment(
    s: &Conv2dShape,
    start: usize,
    width: usize,
    mut f: impl FnMut(usize, usize, Option<usize>, usize, usize, usize, usize),
) {
    let [stride_h, _] = s.spec.stride;
    let [dilation_h, _] = s.spec.dilation;
    for kh in 0..s.kernel_height {
        for kw in 0..s.kernel_width {
            let mut pixel = start;
            let mut column = 0;
            while pixel < start + width {
                let oh = pixel / s.out_width;
                let ow_start = pixel % s.out_width;
                let ow_end = s.out_width.min(ow_start + (start + width - pixel));
                let ih = (oh * stride_h + kh * dilation_h) as isize - s.spec.padding.top as isize;
                let input_row = (ih >= 0 && (ih as usize) < s.in_height).then_some(ih as usize);
                f(kh, kw, input_row, oh, ow_start, ow_end, column);
                column += ow_end - ow_start;
                pixel += ow_end - ow_start;
            }
        }
    }
}

/// Writes the column matrix `[Cg·KH·KW, width]` of output pixels `[start, start + width)` for
/// one image's group `x_g` `[Cg, H, W]`: row `(c, kh, kw)`, column `p` holds
/// `x[c, oh·sh + kh·dh − top, ow·sw + kw·dw − left]`, zero in the padding.
fn im2col(x_g: &[f32], s: &Conv2dShape, start: usize, width: usize, cols: &mut [f32]) {
    let taps = s.kernel_height * s.kernel_width;
    let [_, stride_w] = s.spec.stride;
    let [_, dilation_w] = s.spec.dilation;
    for c in 0..s.group_in() {
        let plane = &x_g[c * s.in_plane()..(c + 1) * s.in_plane()];
        let rows = &mut cols[c * taps * width..(c + 1) * taps * width];
        for_each_segment(
            s,
            start,
            width,
            |kh, kw, input_row, _, ow_start, ow_end, column| {
                let row = &mut rows[(kh * s.kernel_width + kw) * width..]
                    [column..column + ow_end - ow_start];
                let Some(ih) = input_row else {
                    row.fill(0.0);
                    return;
                };
                let source = &plane[ih * s.in_width..(ih + 1) * s.in_width];
                let offset = (kw * dilation_w) as isize - s.spec.padding.left as isize;
                let (lo, hi) = valid_columns(ow_start, ow_end, stride_w, offset, s.in_width);
                row[..lo - ow_start].fill(0.0);
                row[hi - ow_start..].fill(0.0);
                if lo == hi {
                    return;
                }
                let valid = &mut row[lo - ow_start..hi - ow_start];
                let first = (lo * stride_w) as isize + offset;
                if stride_w == 1 {
                    valid.copy_from_slice(&source[first as usize..first as usize + valid.len()]);
                } else {
                    for (i, v) in valid.iter_mut().enumerate() {
                        *v = source[first as usize + i * stride_w];
                    }
                }
            },
        );
    }
}

/// The adjoint of [`im2col`]: adds every column-matrix entry back onto the input position it
/// was read from.
fn col2im_add(cols: &[f32], s: &Conv2dShape, start: usize, width: usize, x_g: &mut [f32]) {
    let taps = s.kernel_height * s.kernel_width;
    let [_, stride_w] = s.spec.stride;
    let [_, dilation_w] = s.spec.dilation;
    let plane_len = s.in_plane();
    for c in 0..s.group_in() {
        let plane = &mut x_g[c * plane_len..(c + 1) * plane_len];
        let rows = &cols[c * taps * width..(c + 1) * taps * width];
        for_each_segment(
            s,
            start,
            width,
            |kh, kw, input_row, _, ow_start, ow_end, column| {
                let Some(ih) = input_row else { return };
                let row =
                    &rows[(kh * s.kernel_width + kw) * width..][column..column + ow_end - ow_start];
                let target = &mut plane[ih * s.in_width..(ih + 1) * s.in_width];
                let offset = (kw * dilation_w) as isize - s.spec.padding.left as isize;
                let (lo, hi) = valid_columns(ow_start, ow_end, stride_w, offset, s.in_width);
                if lo == hi {
                    return;
                }
                let valid = &row[lo - ow_start..hi - ow_start];
                let first = ((lo * stride_w) as isize + offset) as usize;
                if stride_w == 1 {
                    for (t, &v) in target[first..first + valid.len()].iter_mut().zip(valid) {
                        *t += v;
                    }
                } else {
                    for (i, &v) in valid.iter().enumerate() {
                        target[first + i * stride_w] += v;
                    }
                }
            },
        );
    }
}

pub(super) fn pointwise_backward_data_image(
    gy: &[f32],
    weight: &[f32],
    s: &Conv2dShape,
    gx: &mut [f32],
) {
    let (cg, og, plane) = (s.group_in(), s.group_out(), s.in_plane());
    for g in 0..s.spec.groups {
        // dX_g = W_gᵀ · dY_g
        let w_t = MatRef::row_major(&weight[g * og * cg..(g + 1) * og * cg], og, cg).t();
        let gy_g = MatRef::row_major(&gy[g * og * plane..(g + 1) * og * plane], og, plane);
        let gx_g = MatMut::row_major(&mut gx[g * cg * plane..(g + 1) * cg * plane], cg, plane);
        gemm(1.0, w_t, gy_g, 0.0, gx_g);
    }
}

pub(super) fn im2col_backward_data_image(
    gy: &[f32],
    weight: &[f32],
    s: &Conv2dShape,
    gx: &mut [f32],
) {
    let (cg, og, k) = (s.group_in(), s.group_out(), s.group_patch());
    let (plane_in, plane_out) = (s.in_plane(), s.out_plane());
    let tile = s.tile_pixels();
    gx.fill(0.0);
    with_scratch(k * tile, |cols| {
        for g in 0..s.spec.groups {
            let w_t = MatRef::row_major(&weight[g * og * k..(g + 1) * og * k], og, k).t();
            let gy_g = &gy[g * og * plane_out..(g + 1) * og * plane_out];
            let gx_g = &mut gx[g * cg * plane_in..(g + 1) * cg * plane_in];
            for start in (0..plane_out).step_by(tile) {
                let width = tile.min(plane_out - start);
                let cols = &mut cols[..k * width];
                // cols = W_gᵀ · dY_g[:, tile], then scatter-add back to the input
                let gy_tile = MatRef::strided(&gy_g[start..], og, width, plane_out, 1);
                gemm(1.0, w_t, gy_tile, 0.0, MatMut::row_major(cols, k, width));
                col2im_add(cols, s, start, width, gx_g);
            }
        }
    });
}

/// Adds `Σ_{n in images} dY_n · cols(X_n)ᵀ` into `grad_weight`.
pub(super) fn accumulate_filter_gradient(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    images: std::ops::Range<usize>,
    grad_weight: &mut [f32],
) {
    let (cg, og, k) = (s.group_in(), s.group_out(), s.group_patch());
    let (plane_in, plane_out) = (s.in_plane(), s.out_plane());
    let image_in = s.in_channels * plane_in;
    let image_out = s.out_channels * plane_out;
    let tile = s.tile_pixels();
    let scratch_len = if s.is_pointwise() { 0 } else { k * tile };
    with_scratch(scratch_len, |cols| {
        for n in images {
            let x = &input[n * image_in..(n + 1) * image_in];
            let gy = &grad_output[n * image_out..(n + 1) * image_out];
            for g in 0..s.spec.groups {
                let x_g = &x[g * cg * plane_in..(g + 1) * cg * plane_in];
                let gy_g = &gy[g * og * plane_out..(g + 1) * og * plane_out];
                let gw_g = &mut grad_weight[g * og * k..(g + 1) * og * k];
                if s.is_pointwise() {
                    // dW_g += dY_g · X_gᵀ
                    let x_t = MatRef::row_major(x_g, cg, plane_in).t();
                    let gy_m = MatRef::row_major(gy_g, og, plane_out);
                    gemm(1.0, gy_m, x_t, 1.0, MatMut::row_major(gw_g, og, k));
                    continue;
                }
                for start in (0..plane_out).step_by(tile) {
                    let width = tile.min(plane_out - start);
                    let cols = &mut cols[..k * width];
                    im2col(x_g, s, start, width, cols);
                    let gy_tile = MatRef::strided(&gy_g[start..], og, width, plane_out, 1);
                    let cols_t = MatRef::row_major(cols, k, width).t();
                    gemm(1.0, gy_tile, cols_t, 1.0, MatMut::row_major(gw_g, og, k));
                }
            }
        }
    });
}
