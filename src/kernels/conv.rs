//! 2-D convolution kernels on NCHW activations and OIHW weights (PyTorch's layouts): forward,
//! backward-data and backward-filter, with per-axis stride, asymmetric padding, dilation, groups
//! and an optional bias.
//!
//! Three paths, chosen by shape:
//! - **pointwise** (1x1, stride 1, no padding): the input planes already are the GEMM's right
//!   operand, `Y_n = W · X_n`, with no copy at all;
//! - **direct** (one input channel per group: depthwise convolutions and single-channel inputs
//!   such as the first layer of an MNIST net): shifted multiply-adds along rows, which
//!   vectorise, instead of a GEMM with an inner dimension of 9;
//! - **im2col + GEMM** otherwise: for each image the column matrix `[Cg·KH·KW, P]` (P output
//!   pixels) is built one tile of pixels at a time into a reused per-thread buffer of bounded
//!   size, and `Y = W · cols` is written straight into the output tile.
//!
//! Backward-data is `cols_grad = Wᵀ · dY` then col2im (scatter-add); backward-filter is
//! `dW = Σ_n dY_n · cols_nᵀ`, with the columns rebuilt tile by tile rather than stored.
//!
//! Parallelism is one level: over images when there are at least as many as threads (each task
//! owns its image's output, so writes are disjoint by construction), otherwise inside the GEMM.

use rayon::prelude::*;

use super::gemm::{MatMut, MatRef, gemm};
use super::scratch::with_scratch;
use crate::tensor::check::{contract_violation, shape_str};

/// Zero padding on each side of the two spatial axes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Padding2d {
    /// Rows added above.
    pub top: usize,
    /// Rows added below.
    pub bottom: usize,
    /// Columns added on the left.
    pub left: usize,
    /// Columns added on the right.
    pub right: usize,
}

impl Padding2d {
    /// The same padding on both sides: `height` rows above and below, `width` columns left and
    /// right (PyTorch's `padding=(height, width)`).
    pub fn symmetric(height: usize, width: usize) -> Padding2d {
        Padding2d {
            top: height,
            bottom: height,
            left: width,
            right: width,
        }
    }

    /// Padding that keeps the spatial size at stride 1 (PyTorch's `padding="same"`): the total
    /// `dilation·(kernel−1)` is split with the extra row or column at the bottom or right.
    pub fn same(kernel: [usize; 2], dilation: [usize; 2]) -> Padding2d {
        let total_h = dilation[0] * (kernel[0] - 1);
        let total_w = dilation[1] * (kernel[1] - 1);
        Padding2d {
            top: total_h / 2,
            bottom: total_h - total_h / 2,
            left: total_w / 2,
            right: total_w - total_w / 2,
        }
    }
}

/// The number of window positions along one axis.
///
/// `floor((input + padding − dilation·(kernel−1) − 1) / stride) + 1`, or with `ceil_mode` the
/// ceiling, dropping a last window that would start entirely in the right padding (PyTorch's
/// pooling rule). `None` when the window does not fit even once.
pub fn output_extent(
    input: usize,
    padding_before: usize,
    padding_after: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    let padded = input + padding_before + padding_after;
    let span = dilation * (kernel - 1) + 1;
    if padded < span {
        return None;
    }
    let steps = padded - span;
    let mut extent = if ceil_mode {
        steps.div_ceil(stride) + 1
    } else {
        steps / stride + 1
    };
    if ceil_mode && (extent - 1) * stride >= input + padding_before {
        extent -= 1;
    }
    Some(extent)
}

/// The hyperparameters of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dSpec {
    /// Step between windows, `[height, width]`.
    pub stride: [usize; 2],
    /// Zero padding of the input.
    pub padding: Padding2d,
    /// Spacing between kernel taps, `[height, width]`.
    pub dilation: [usize; 2],
    /// Number of channel groups; input and output channels must both divide by it.
    pub groups: usize,
}

impl Default for Conv2dSpec {
    fn default() -> Self {
        Conv2dSpec {
            stride: [1, 1],
            padding: Padding2d::default(),
            dilation: [1, 1],
            groups: 1,
        }
    }
}

/// Every size of one convolution, validated once: input `[N, C, H, W]`, weight
/// `[O, C/groups, KH, KW]`, output `[N, O, OH, OW]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub struct Conv2dShape {
    pub batch: usize,
    pub in_channels: usize,
    pub in_height: usize,
    pub in_width: usize,
    pub out_channels: usize,
    pub kernel_height: usize,
    pub kernel_width: usize,
    pub out_height: usize,
    pub out_width: usize,
    pub spec: Conv2dSpec,
}

impl Conv2dShape {
    /// Checks the input and weight shapes against `spec` and derives the output size.
    ///
    /// # Panics
    ///
    /// If a rank is not 4, channels do not match or do not divide by `groups`, a stride,
    /// dilation or `groups` is zero, or the kernel does not fit in the padded input; the message
    /// names `conv2d` and both shapes.
    #[track_caller]
    pub fn new(input: &[usize], weight: &[usize], spec: Conv2dSpec) -> Conv2dShape {
        let context = || format!("input {}, weight {}", shape_str(input), shape_str(weight));
        if input.len() != 4 || weight.len() != 4 {
            contract_violation(
                "conv2d",
                "input and weight must be 4-D (NCHW and OIHW)",
                context(),
            );
        }
        let Conv2dSpec {
            stride,
            padding,
            dilation,
            groups,
        } = spec;
        if groups == 0 || stride.contains(&0) || dilation.contains(&0) {
            contract_violation(
                "conv2d",
                format_args!(
                    "stride {stride:?}, dilation {dilation:?} and groups {groups} must be positive"
                ),
                context(),
            );
        }
        let (in_channels, out_channels) = (input[1], weight[0]);
        if in_channels % groups != 0 || out_channels % groups != 0 {
            contract_violation(
                "conv2d",
                format_args!(
                    "channels {in_channels} in and {out_channels} out must divide by groups {groups}"
                ),
                context(),
            );
        }
        if weight[1] * groups != in_channels {
            contract_violation(
                "conv2d",
                format_args!(
                    "input channels {in_channels} != weight in_channels {} x groups {groups}",
                    weight[1]
                ),
                context(),
            );
        }
        if weight[2] == 0 || weight[3] == 0 {
            contract_violation("conv2d", "kernel must not be empty", context());
        }
        let out_height = output_extent(
            input[2],
            padding.top,
            padding.bottom,
            weight[2],
            stride[0],
            dilation[0],
            false,
        );
        let out_width = output_extent(
            input[3],
            padding.left,
            padding.right,
            weight[3],
            stride[1],
            dilation[1],
            false,
        );
        let (Some(out_height), Some(out_width)) = (out_height, out_width) else {
            contract_violation(
                "conv2d",
                format_args!("kernel (dilated) larger than the padded input (padding {padding:?})"),
                context(),
            );
        };
        Conv2dShape {
            batch: input[0],
            in_channels,
            in_height: input[2],
            in_width: input[3],
            out_channels,
            kernel_height: weight[2],
            kernel_width: weight[3],
            out_height,
            out_width,
            spec,
        }
    }

    /// The output shape `[N, O, OH, OW]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [
            self.batch,
            self.out_channels,
            self.out_height,
            self.out_width,
        ]
    }

    /// Floating-point operations of one pass: `2·N·O·OH·OW·(C/groups)·KH·KW`.
    pub fn flops(&self) -> u64 {
        2 * (self.batch * self.out_channels * self.out_height * self.out_width) as u64
            * self.group_patch() as u64
    }

    fn group_in(&self) -> usize {
        self.in_channels / self.spec.groups
    }

    fn group_out(&self) -> usize {
        self.out_channels / self.spec.groups
    }

    /// Rows of a group's column matrix: `(C/groups)·KH·KW`.
    fn group_patch(&self) -> usize {
        self.group_in() * self.kernel_height * self.kernel_width
    }

    fn in_plane(&self) -> usize {
        self.in_height * self.in_width
    }

    fn out_plane(&self) -> usize {
        self.out_height * self.out_width
    }

    fn is_pointwise(&self) -> bool {
        self.kernel_height == 1
            && self.kernel_width == 1
            && self.spec.stride == [1, 1]
            && self.spec.padding == Padding2d::default()
    }

    fn is_direct(&self) -> bool {
        self.group_in() == 1
    }

    /// Output pixels per im2col tile: the column buffer stays near 2 MB (512 Ki floats)
    /// whatever the image size.
    fn tile_pixels(&self) -> usize {
        const TARGET_FLOATS: usize = 512 * 1024;
        let pixels = (TARGET_FLOATS / self.group_patch()).max(64);
        pixels.min(self.out_plane()).max(1)
    }
}

#[track_caller]
fn expect_len(op: &str, what: &str, len: usize, expected: usize) {
    if len != expected {
        contract_violation(
            op,
            format_args!("{what} holds {len} values, the shape needs {expected}"),
            "",
        );
    }
}

/// Whether to split work over images: only with enough of them to keep every thread busy;
/// otherwise the GEMM parallelises inside.
fn parallel_over_images(batch: usize) -> bool {
    batch >= rayon::current_num_threads() && rayon::current_num_threads() > 1
}

/// Runs `f(image_index, output_chunk)` for every image, in parallel when it pays.
fn for_each_image(
    output: &mut [f32],
    chunk: usize,
    batch: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if chunk == 0 {
        return;
    }
    if parallel_over_images(batch) {
        output
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(n, out)| f(n, out));
    } else {
        output
            .chunks_mut(chunk)
            .enumerate()
            .for_each(|(n, out)| f(n, out));
    }
}

// ------------------------------------------------------------------------------------ forward

/// Convolution forward: `output = conv(input, weight) + bias`.
///
/// Slices are row-major: `input` `[N, C, H, W]`, `weight` `[O, C/groups, KH, KW]`, `bias`
/// `[O]`, `output` `[N, O, OH, OW]` (overwritten).
///
/// # Panics
///
/// If a slice's length does not match `shape`.
///
/// # Examples
///
/// ```
/// use striate::kernels::conv::{conv2d_forward, Conv2dShape, Conv2dSpec, Padding2d};
///
/// // A 3x3 box filter over a 4x4 image of ones, padded by 1: corners see 4 ones, edges 6.
/// let spec = Conv2dSpec { padding: Padding2d::symmetric(1, 1), ..Default::default() };
/// let shape = Conv2dShape::new(&[1, 1, 4, 4], &[1, 1, 3, 3], spec);
/// let mut out = vec![0.0; 16];
/// conv2d_forward(&[1.0; 16], &[1.0; 9], None, &shape, &mut out);
/// assert_eq!(&out[..4], &[4.0, 6.0, 6.0, 4.0]);
/// ```
pub fn conv2d_forward(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &Conv2dShape,
    output: &mut [f32],
) {
    let s = *shape;
    expect_len(
        "conv2d_forward",
        "input",
        input.len(),
        s.batch * s.in_channels * s.in_plane(),
    );
    expect_len(
        "conv2d_forward",
        "weight",
        weight.len(),
        s.out_channels * s.group_patch(),
    );
    expect_len(
        "conv2d_forward",
        "output",
        output.len(),
        s.batch * s.out_channels * s.out_plane(),
    );
    if let Some(bias) = bias {
        expect_len("conv2d_forward", "bias", bias.len(), s.out_channels);
    }
    let image_in = s.in_channels * s.in_plane();
    let image_out = s.out_channels * s.out_plane();
    for_each_image(output, image_out, s.batch, |n, out| {
        let x = &input[n * image_in..(n + 1) * image_in];
        if s.is_direct() {
            direct_forward_image(x, weight, &s, out);
        } else if s.is_pointwise() {
            pointwise_forward_image(x, weight, &s, out);
        } else {
            im2col_forward_image(x, weight, &s, out);
        }
        if let Some(bias) = bias {
            for (plane, &b) in out.chunks_mut(s.out_plane()).zip(bias) {
                plane.iter_mut().for_each(|y| *y += b);
            }
        }
    });
}

fn pointwise_forward_image(x: &[f32], weight: &[f32], s: &Conv2dShape, out: &mut [f32]) {
    let (cg, og, plane) = (s.group_in(), s.group_out(), s.in_plane());
    for g in 0..s.spec.groups {
        let w = MatRef::row_major(&weight[g * og * cg..(g + 1) * og * cg], og, cg);
        let x_g = MatRef::row_major(&x[g * cg * plane..(g + 1) * cg * plane], cg, plane);
        let y_g = MatMut::row_major(&mut out[g * og * plane..(g + 1) * og * plane], og, plane);
        gemm(1.0, w, x_g, 0.0, y_g);
    }
}

fn im2col_forward_image(x: &[f32], weight: &[f32], s: &Conv2dShape, out: &mut [f32]) {
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

/// The valid part `[lo, hi)` of output columns `[start, end)` whose input column
/// `ow·stride + offset` lands inside `[0, width)`.
#[inline]
fn valid_columns(
    start: usize,
    end: usize,
    stride: usize,
    offset: isize,
    width: usize,
) -> (usize, usize) {
    let lo = if offset >= 0 { 0 } else { (-offset) as usize }.div_ceil(stride);
    let last = width as isize - 1 - offset;
    let hi = if last < 0 {
        0
    } else {
        last as usize / stride + 1
    };
    let lo = lo.clamp(start, end);
    (lo, hi.clamp(lo, end))
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

// ------------------------------------------------------------------------------------ direct

/// For the direct path: calls `f(kh, kw, oh, input_row, lo, hi, offset)` for every
/// (tap, output row) whose input row is inside the image, with the valid output
/// columns `[lo, hi)` and the input column offset (`iw = ow·sw + offset`).
#[inline]
fn for_each_direct_tap(
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

/// Direct forward for one image when each group has one input channel (depthwise, or a
/// single-channel input): output channel `o` reads input channel `o / (O / groups)`.
fn direct_forward_image(x: &[f32], weight: &[f32], s: &Conv2dShape, out: &mut [f32]) {
    let multiplier = s.group_out();
    let taps = s.kernel_height * s.kernel_width;
    let stride_w = s.spec.stride[1];
    for (o, out_plane) in out.chunks_mut(s.out_plane()).enumerate() {
        out_plane.fill(0.0);
        let plane = &x[(o / multiplier) * s.in_plane()..][..s.in_plane()];
        let w = &weight[o * taps..(o + 1) * taps];
        for_each_direct_tap(s, |kh, kw, oh, ih, lo, hi, offset| {
            let tap = w[kh * s.kernel_width + kw];
            let source = &plane[ih * s.in_width..(ih + 1) * s.in_width];
            let target = &mut out_plane[oh * s.out_width + lo..oh * s.out_width + hi];
            let first = ((lo * stride_w) as isize + offset) as usize;
            if stride_w == 1 {
                for (y, &v) in target.iter_mut().zip(&source[first..first + (hi - lo)]) {
                    *y += tap * v;
                }
            } else {
                for (i, y) in target.iter_mut().enumerate() {
                    *y += tap * source[first + i * stride_w];
                }
            }
        });
    }
}

/// Direct backward-data for one image: every output gradient flows back to the input position
/// each tap read, `dx[c, ih, iw] += w[o, kh, kw] · dy[o, oh, ow]`.
fn direct_backward_data_image(
    grad_out: &[f32],
    weight: &[f32],
    s: &Conv2dShape,
    grad_in: &mut [f32],
) {
    let multiplier = s.group_out();
    let taps = s.kernel_height * s.kernel_width;
    let stride_w = s.spec.stride[1];
    grad_in.fill(0.0);
    for (c, in_plane) in grad_in.chunks_mut(s.in_plane()).enumerate() {
        for o in c * multiplier..(c + 1) * multiplier {
            let g_plane = &grad_out[o * s.out_plane()..(o + 1) * s.out_plane()];
            let w = &weight[o * taps..(o + 1) * taps];
            for_each_direct_tap(s, |kh, kw, oh, ih, lo, hi, offset| {
                let tap = w[kh * s.kernel_width + kw];
                let source = &g_plane[oh * s.out_width + lo..oh * s.out_width + hi];
                let target = &mut in_plane[ih * s.in_width..(ih + 1) * s.in_width];
                let first = ((lo * stride_w) as isize + offset) as usize;
                if stride_w == 1 {
                    for (t, &g) in target[first..first + (hi - lo)].iter_mut().zip(source) {
                        *t += tap * g;
                    }
                } else {
                    for (i, &g) in source.iter().enumerate() {
                        target[first + i * stride_w] += tap * g;
                    }
                }
            });
        }
    }
}

/// Direct backward-filter for output channel `o` over the whole batch:
/// `dw[o, kh, kw] = Σ_n Σ_(oh,ow) dy[n, o, oh, ow] · x[n, c, ih, iw]`.
fn direct_backward_filter_channel(
    input: &[f32],
    grad_out: &[f32],
    s: &Conv2dShape,
    o: usize,
    grad_w: &mut [f32],
) {
    let c = o / s.group_out();
    let stride_w = s.spec.stride[1];
    let mut sums = vec![0.0f64; grad_w.len()];
    for n in 0..s.batch {
        let plane = &input[(n * s.in_channels + c) * s.in_plane()..][..s.in_plane()];
        let g_plane = &grad_out[(n * s.out_channels + o) * s.out_plane()..][..s.out_plane()];
        for_each_direct_tap(s, |kh, kw, oh, ih, lo, hi, offset| {
            let g = &g_plane[oh * s.out_width + lo..oh * s.out_width + hi];
            let source = &plane[ih * s.in_width..(ih + 1) * s.in_width];
            let first = ((lo * stride_w) as isize + offset) as usize;
            let dot: f32 = if stride_w == 1 {
                g.iter()
                    .zip(&source[first..first + (hi - lo)])
                    .map(|(a, b)| a * b)
                    .sum()
            } else {
                g.iter()
                    .enumerate()
                    .map(|(i, a)| a * source[first + i * stride_w])
                    .sum()
            };
            sums[kh * s.kernel_width + kw] += dot as f64;
        });
    }
    for (w, s) in grad_w.iter_mut().zip(sums) {
        *w = s as f32;
    }
}

// ------------------------------------------------------------------------------------ backward

/// Convolution backward with respect to the input: `grad_input = convᵀ(grad_output, weight)`.
///
/// Slices are row-major: `grad_output` `[N, O, OH, OW]`, `weight` `[O, C/groups, KH, KW]`,
/// `grad_input` `[N, C, H, W]` (overwritten).
///
/// # Panics
///
/// If a slice's length does not match `shape`.
pub fn conv2d_backward_data(
    grad_output: &[f32],
    weight: &[f32],
    shape: &Conv2dShape,
    grad_input: &mut [f32],
) {
    let s = *shape;
    expect_len(
        "conv2d_backward_data",
        "grad_output",
        grad_output.len(),
        s.batch * s.out_channels * s.out_plane(),
    );
    expect_len(
        "conv2d_backward_data",
        "weight",
        weight.len(),
        s.out_channels * s.group_patch(),
    );
    expect_len(
        "conv2d_backward_data",
        "grad_input",
        grad_input.len(),
        s.batch * s.in_channels * s.in_plane(),
    );
    let image_in = s.in_channels * s.in_plane();
    let image_out = s.out_channels * s.out_plane();
    for_each_image(grad_input, image_in, s.batch, |n, gx| {
        let gy = &grad_output[n * image_out..(n + 1) * image_out];
        if s.is_direct() {
            direct_backward_data_image(gy, weight, &s, gx);
        } else if s.is_pointwise() {
            pointwise_backward_data_image(gy, weight, &s, gx);
        } else {
            im2col_backward_data_image(gy, weight, &s, gx);
        }
    });
}

fn pointwise_backward_data_image(gy: &[f32], weight: &[f32], s: &Conv2dShape, gx: &mut [f32]) {
    let (cg, og, plane) = (s.group_in(), s.group_out(), s.in_plane());
    for g in 0..s.spec.groups {
        // dX_g = W_gᵀ · dY_g
        let w_t = MatRef::row_major(&weight[g * og * cg..(g + 1) * og * cg], og, cg).t();
        let gy_g = MatRef::row_major(&gy[g * og * plane..(g + 1) * og * plane], og, plane);
        let gx_g = MatMut::row_major(&mut gx[g * cg * plane..(g + 1) * cg * plane], cg, plane);
        gemm(1.0, w_t, gy_g, 0.0, gx_g);
    }
}

fn im2col_backward_data_image(gy: &[f32], weight: &[f32], s: &Conv2dShape, gx: &mut [f32]) {
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

/// Convolution backward with respect to the weight (and bias):
/// `grad_weight = Σ_n dY_n · cols(X_n)ᵀ`, `grad_bias[o] = Σ_(n,p) dY[n, o, p]`.
///
/// Slices are row-major: `input` `[N, C, H, W]`, `grad_output` `[N, O, OH, OW]`, `grad_weight`
/// `[O, C/groups, KH, KW]` and `grad_bias` `[O]` (both overwritten).
///
/// # Panics
///
/// If a slice's length does not match `shape`.
pub fn conv2d_backward_filter(
    input: &[f32],
    grad_output: &[f32],
    shape: &Conv2dShape,
    grad_weight: &mut [f32],
    grad_bias: Option<&mut [f32]>,
) {
    let s = *shape;
    expect_len(
        "conv2d_backward_filter",
        "input",
        input.len(),
        s.batch * s.in_channels * s.in_plane(),
    );
    expect_len(
        "conv2d_backward_filter",
        "grad_output",
        grad_output.len(),
        s.batch * s.out_channels * s.out_plane(),
    );
    expect_len(
        "conv2d_backward_filter",
        "grad_weight",
        grad_weight.len(),
        s.out_channels * s.group_patch(),
    );
    if let Some(grad_bias) = grad_bias {
        expect_len(
            "conv2d_backward_filter",
            "grad_bias",
            grad_bias.len(),
            s.out_channels,
        );
        let plane = s.out_plane();
        for (o, b) in grad_bias.iter_mut().enumerate() {
            let total: f64 = (0..s.batch)
                .map(|n| {
                    let g = &grad_output[(n * s.out_channels + o) * plane..][..plane];
                    g.iter().sum::<f32>() as f64
                })
                .sum();
            *b = total as f32;
        }
    }
    if s.is_direct() {
        let per_channel = s.group_patch();
        grad_weight
            .par_chunks_mut(per_channel)
            .enumerate()
            .for_each(|(o, gw)| direct_backward_filter_channel(input, grad_output, &s, o, gw));
        return;
    }
    let threads = rayon::current_num_threads();
    if !parallel_over_images(s.batch) {
        grad_weight.fill(0.0);
        accumulate_filter_gradient(input, grad_output, &s, 0..s.batch, grad_weight);
        return;
    }
    // Each thread sums its share of the images into a private buffer; the partial sums are
    // added at the end (the one place results depend on the thread count, by summation order).
    let per_thread = s.batch.div_ceil(threads);
    let partials: Vec<Vec<f32>> = (0..threads)
        .into_par_iter()
        .map(|t| {
            let images = (t * per_thread).min(s.batch)..((t + 1) * per_thread).min(s.batch);
            let mut partial = vec![0.0f32; grad_weight.len()];
            accumulate_filter_gradient(input, grad_output, &s, images, &mut partial);
            partial
        })
        .collect();
    grad_weight.copy_from_slice(&partials[0]);
    for partial in &partials[1..] {
        for (w, p) in grad_weight.iter_mut().zip(partial) {
            *w += p;
        }
    }
}

/// Adds `Σ_{n in images} dY_n · cols(X_n)ᵀ` into `grad_weight`.
fn accumulate_filter_gradient(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_extents() {
        assert_eq!(output_extent(28, 1, 1, 3, 1, 1, false), Some(28));
        assert_eq!(output_extent(56, 1, 1, 3, 2, 1, false), Some(28));
        assert_eq!(output_extent(5, 0, 0, 2, 2, 1, false), Some(2));
        assert_eq!(output_extent(5, 0, 0, 2, 2, 1, true), Some(3));
        // ceil mode never starts a window in the right padding only
        assert_eq!(output_extent(4, 1, 1, 2, 2, 1, true), Some(3));
        assert_eq!(output_extent(2, 0, 0, 3, 1, 1, false), None);
    }

    #[test]
    fn same_padding_splits_extra_to_the_end() {
        assert_eq!(
            Padding2d::same([3, 4], [1, 1]),
            Padding2d {
                top: 1,
                bottom: 1,
                left: 1,
                right: 2
            }
        );
        assert_eq!(Padding2d::same([3, 3], [2, 2]), Padding2d::symmetric(2, 2));
    }

    #[test]
    fn valid_columns_clip_to_the_image() {
        // stride 1, offset -1 over width 4: ow 0 reads -1 (invalid); ow 1..4 read 0..3
        assert_eq!(valid_columns(0, 4, 1, -1, 4), (1, 4));
        assert_eq!(valid_columns(0, 4, 1, 1, 4), (0, 3));
        assert_eq!(valid_columns(0, 3, 2, -1, 5), (1, 3));
        assert_eq!(valid_columns(2, 3, 1, 0, 4), (2, 3));
    }

    #[test]
    #[should_panic(
        expected = "conv2d: input channels 3 != weight in_channels 1 x groups 1 (input [64, 3, 28, 28], weight [32, 1, 3, 3])"
    )]
    fn rejects_channel_mismatch() {
        Conv2dShape::new(&[64, 3, 28, 28], &[32, 1, 3, 3], Conv2dSpec::default());
    }
}
