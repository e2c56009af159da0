//! The direct path: convolutions whose groups have one input channel each (depthwise
//! convolutions, and single-channel inputs such as an MNIST net's first layer). A GEMM would
//! have an inner dimension of only `KH·KW`, so instead each output plane is a weighted sum of
//! shifted copies of its input plane.
//!
//! At stride 1 the input plane is copied once into a zero-padded buffer of width
//! `Wp = W + left + right`, and the output is computed on a "wide" grid with the same row
//! stride: tap `(kh, kw)` is then the constant shift `kh·dh·Wp + kw·dw`, so every tap is one
//! long contiguous multiply-add over the whole plane (the extra `Wp − OW` columns per row are
//! discarded). Larger strides walk rows with a gather.

use std::ops::Range;

use rayon::prelude::*;

use super::parallel::{sum_over_image_chunks, valid_columns};
use super::shape::Conv2dShape;
use super::wide::Wide;
use crate::kernels::scratch::with_scratch_parts;
use crate::util::simd::{dispatch, dot};

/// Output values computed per step of the wide correlation: one AVX-512 register.
const LANES: usize = 16;

/// `out[i] = (accumulate ? out[i] : 0) + Σ_t weights[t] · source[i + shifts[t]]`, a register
/// of outputs at a time so each is stored once.
#[inline(always)]
fn correlate(out: &mut [f32], source: &[f32], shifts: &[usize], weights: &[f32], accumulate: bool) {
    let len = out.len();
    let full = len / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        let mut acc = [0.0f32; LANES];
        if accumulate {
            acc.copy_from_slice(&out[base..base + LANES]);
        }
        for (&shift, &w) in shifts.iter().zip(weights) {
            let src = &source[base + shift..base + shift + LANES];
            for l in 0..LANES {
                acc[l] += w * src[l];
            }
        }
        out[base..base + LANES].copy_from_slice(&acc);
    }
    for i in full..len {
        let total: f32 = shifts
            .iter()
            .zip(weights)
            .map(|(&shift, &w)| w * source[i + shift])
            .sum();
        out[i] = if accumulate { out[i] + total } else { total };
    }
}

/// `out[t] += Σ_i g[i] · source[i + shifts[t]]` for every tap: the filter gradient of one plane.
/// Taps go four at a time through one pass over `g`, each into its own register of partial
/// sums, so `g` is read a third as often as with one dot product per tap.
#[inline(always)]
fn correlate_taps(g: &[f32], source: &[f32], shifts: &[usize], out: &mut [f32]) {
    let mut shift_blocks = shifts.chunks_exact(4);
    let mut out_blocks = out.chunks_exact_mut(4);
    for (block, totals) in (&mut shift_blocks).zip(&mut out_blocks) {
        let block: &[usize; 4] = block.try_into().expect("chunks of four");
        let sums = dot4(g, source, block);
        for (total, sum) in totals.iter_mut().zip(sums) {
            *total += sum;
        }
    }
    for (total, &shift) in out_blocks
        .into_remainder()
        .iter_mut()
        .zip(shift_blocks.remainder())
    {
        *total += dot(g, &source[shift..shift + g.len()]);
    }
}

/// Four dot products of `g` with `source` shifted by each of `shifts`.
#[inline(always)]
fn dot4(g: &[f32], source: &[f32], shifts: &[usize; 4]) -> [f32; 4] {
    let mut acc = [[0.0f32; LANES]; 4];
    let full = g.len() / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        let gv = &g[base..base + LANES];
        for (acc, &shift) in acc.iter_mut().zip(shifts) {
            let src = &source[base + shift..base + shift + LANES];
            for l in 0..LANES {
                acc[l] += gv[l] * src[l];
            }
        }
    }
    let mut sums = [0.0f32; 4];
    for ((sum, acc), &shift) in sums.iter_mut().zip(&acc).zip(shifts) {
        let tail: f32 = (full..g.len()).map(|i| g[i] * source[i + shift]).sum();
        *sum = acc.iter().sum::<f32>() + tail;
    }
    sums
}

fn is_stride_one(s: &Conv2dShape) -> bool {
    s.spec.stride == [1, 1]
}

/// Forward for one image: output channel `o` reads input channel `o / (O / groups)`.
pub(super) fn forward_image(x: &[f32], weight: &[f32], s: &Conv2dShape, out: &mut [f32]) {
    if !is_stride_one(s) {
        return strided_forward_image(x, weight, s, out);
    }
    let wide = Wide::new(s);
    let (multiplier, taps) = (s.group_out(), s.kernel_height * s.kernel_width);
    with_scratch_parts([wide.padded_len, wide.out_len], |[padded, grid]| {
        for (c, plane) in x.chunks_exact(s.in_plane()).enumerate() {
            wide.pad(s, plane, padded);
            for o in c * multiplier..(c + 1) * multiplier {
                let w = &weight[o * taps..(o + 1) * taps];
                dispatch(
                    #[inline(always)]
                    || correlate(grid, padded, &wide.shifts, w, false),
                );
                let out_plane = &mut out[o * s.out_plane()..(o + 1) * s.out_plane()];
                for (row, wide_row) in out_plane
                    .chunks_exact_mut(s.out_width)
                    .zip(grid.chunks(wide.width))
                {
                    row.copy_from_slice(&wide_row[..s.out_width]);
                }
            }
        }
    });
}

/// Backward-data for one image. At stride 1 this is again a wide correlation, of the gradient
/// (front-padded by the largest shift) with the taps reversed:
/// `dx_padded[j] = Σ_t w_t · dy_wide[j − shift_t]`.
pub(super) fn backward_data_image(gy: &[f32], weight: &[f32], s: &Conv2dShape, gx: &mut [f32]) {
    if !is_stride_one(s) {
        return strided_backward_data_image(gy, weight, s, gx);
    }
    let wide = Wide::new(s);
    let (multiplier, taps) = (s.group_out(), s.kernel_height * s.kernel_width);
    let max_shift = *wide.shifts.last().expect("at least one tap");
    let reversed: Vec<usize> = wide.shifts.iter().map(|&shift| max_shift - shift).collect();
    let padded_plane = wide.padded_area();
    let grad_len = padded_plane + max_shift;
    with_scratch_parts([grad_len, padded_plane], |[grad_wide, accumulated]| {
        for (c, gx_plane) in gx.chunks_exact_mut(s.in_plane()).enumerate() {
            for (k, o) in (c * multiplier..(c + 1) * multiplier).enumerate() {
                grad_wide.fill(0.0);
                let plane = &gy[o * s.out_plane()..(o + 1) * s.out_plane()];
                wide.widen(s, plane, 0, s.out_height, grad_wide, max_shift);
                let w = &weight[o * taps..(o + 1) * taps];
                dispatch(
                    #[inline(always)]
                    || correlate(accumulated, grad_wide, &reversed, w, k > 0),
                );
            }
            wide.unpad(s, accumulated, gx_plane);
        }
    });
}

/// Backward-filter over the whole batch: `dw[o, t] = Σ_n dy_wide[n, o] · x_padded[n, c][shift_t..]`.
pub(super) fn backward_filter(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    grad_weight: &mut [f32],
) {
    let multiplier = s.group_out();
    let taps = s.kernel_height * s.kernel_width;
    if s.in_channels >= rayon::current_num_threads() {
        // Enough channels: each task owns the filters of one input channel.
        grad_weight
            .par_chunks_mut(multiplier * taps)
            .enumerate()
            .for_each(|(c, gw)| filter_gradient(input, grad_output, s, c..c + 1, 0..s.batch, gw));
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
    if !is_stride_one(s) {
        for c in channels {
            for o in c * multiplier..(c + 1) * multiplier {
                let local = (o - first_channel * multiplier) * taps;
                strided_filter_gradient(
                    input,
                    grad_output,
                    s,
                    o,
                    images.clone(),
                    &mut gw[local..local + taps],
                );
            }
        }
        return;
    }
    let wide = Wide::new(s);
    with_scratch_parts([wide.padded_len, wide.out_len], |[padded, grad_wide]| {
        for n in images {
            for c in channels.clone() {
                let plane = &input[(n * s.in_channels + c) * s.in_plane()..][..s.in_plane()];
                wide.pad(s, plane, padded);
                for o in c * multiplier..(c + 1) * multiplier {
                    let g =
                        &grad_output[(n * s.out_channels + o) * s.out_plane()..][..s.out_plane()];
                    wide.widen(s, g, 0, s.out_height, grad_wide, 0);
                    let local = (o - first_channel * multiplier) * taps;
                    let gw_o = &mut gw[local..local + taps];
                    dispatch(
                        #[inline(always)]
                        || correlate_taps(grad_wide, padded, &wide.shifts, gw_o),
                    );
                }
            }
        }
    });
}

// ------------------------------------------------------------------------------ strided rows

/// Calls `f(kh, kw, oh, ih, lo, hi, offset)` for every (tap, output row) whose input row is
/// inside the image and whose valid output columns `[lo, hi)` are not empty; the input column
/// of output column `ow` is `ow · stride + offset`.
#[inline(always)]
fn for_each_tap_row(
    s: &Conv2dShape,
    mut f: impl FnMut(usize, usize, usize, usize, usize, usize, isize),
) {
    let [stride_h, stride_w] = s.spec.stride;
    let [dilation_h, dilation_w] = s.spec.dilation;
    for kh in 0..s.kernel_height {
        for oh in 0..s.out_height {
            let ih = (oh * stride_h + kh * dilation_h) as isize - s.spec.padding.top as isize;
            if ih < 0 || ih as usize >= s.in_height {
                continue;
            }
            for kw in 0..s.kernel_width {
                let offset = (kw * dilation_w) as isize - s.spec.padding.left as isize;
                let (lo, hi) = valid_columns(0, s.out_width, stride_w, offset, s.in_width);
                if lo < hi {
                    f(kh, kw, oh, ih as usize, lo, hi, offset);
                }
            }
        }
    }
}

fn strided_forward_image(x: &[f32], weight: &[f32], s: &Conv2dShape, out: &mut [f32]) {
    let multiplier = s.group_out();
    let taps = s.kernel_height * s.kernel_width;
    let stride_w = s.spec.stride[1];
    for (o, out_plane) in out.chunks_mut(s.out_plane()).enumerate() {
        out_plane.fill(0.0);
        let plane = &x[(o / multiplier) * s.in_plane()..][..s.in_plane()];
        let w = &weight[o * taps..(o + 1) * taps];
        for_each_tap_row(s, |kh, kw, oh, ih, lo, hi, offset| {
            let tap = w[kh * s.kernel_width + kw];
            let source = &plane[ih * s.in_width..(ih + 1) * s.in_width];
            let first = ((lo * stride_w) as isize + offset) as usize;
            for (i, y) in out_plane[oh * s.out_width + lo..oh * s.out_width + hi]
                .iter_mut()
                .enumerate()
            {
                *y += tap * source[first + i * stride_w];
            }
        });
    }
}

fn strided_backward_data_image(gy: &[f32], weight: &[f32], s: &Conv2dShape, gx: &mut [f32]) {
    let multiplier = s.group_out();
    let taps = s.kernel_height * s.kernel_width;
    let stride_w = s.spec.stride[1];
    gx.fill(0.0);
    for (c, in_plane) in gx.chunks_mut(s.in_plane()).enumerate() {
        for o in c * multiplier..(c + 1) * multiplier {
            let g_plane = &gy[o * s.out_plane()..(o + 1) * s.out_plane()];
            let w = &weight[o * taps..(o + 1) * taps];
            for_each_tap_row(s, |kh, kw, oh, ih, lo, hi, offset| {
                let tap = w[kh * s.kernel_width + kw];
                let source = &g_plane[oh * s.out_width + lo..oh * s.out_width + hi];
                let target = &mut in_plane[ih * s.in_width..(ih + 1) * s.in_width];
                let first = ((lo * stride_w) as isize + offset) as usize;
                for (i, &g) in source.iter().enumerate() {
                    target[first + i * stride_w] += tap * g;
                }
            });
        }
    }
}

fn strided_filter_gradient(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    o: usize,
    images: Range<usize>,
    gw: &mut [f32],
) {
    let c = o / s.group_out();
    let stride_w = s.spec.stride[1];
    let mut sums = vec![0.0f64; gw.len()];
    for n in images {
        let plane = &input[(n * s.in_channels + c) * s.in_plane()..][..s.in_plane()];
        let g_plane = &grad_output[(n * s.out_channels + o) * s.out_plane()..][..s.out_plane()];
        for_each_tap_row(s, |kh, kw, oh, ih, lo, hi, offset| {
            let g = &g_plane[oh * s.out_width + lo..oh * s.out_width + hi];
            let source = &plane[ih * s.in_width..(ih + 1) * s.in_width];
            let first = ((lo * stride_w) as isize + offset) as usize;
            let dot: f32 = g
                .iter()
                .enumerate()
                .map(|(i, a)| a * source[first + i * stride_w])
                .sum();
            sums[kh * s.kernel_width + kw] += dot as f64;
        });
    }
    for (w, total) in gw.iter_mut().zip(sums) {
        *w += total as f32;
    }
}
