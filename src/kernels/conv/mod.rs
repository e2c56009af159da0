//! 2-D convolution kernels on NCHW activations and OIHW weights (PyTorch's layouts): forward,
//! backward-data and backward-filter, with per-axis stride, asymmetric padding, dilation, groups
//! and an optional bias.
//!
//! Four paths, chosen by shape:
//! - **pointwise** (1x1, stride 1, no padding): the input planes already are the GEMM's right
//!   operand, `Y_n = W · X_n`, with no copy at all (`pointwise.rs`);
//! - **direct** (one input channel and few outputs per group: depthwise convolutions): shifted
//!   multiply-adds over whole planes, which vectorise, instead of a GEMM with a single row
//!   (`direct.rs`);
//! - **im2col + GEMM** otherwise (`wide.rs`): each image's channels are padded once into phase
//!   planes on which every row of the column matrix `[Cg·KH·KW, P]` is one contiguous copy; the
//!   matrix is built a tile of output rows at a time into a reused per-thread buffer of bounded
//!   size, and `Y = W · cols` lands in the output tile.
//!
//! - **shifted** (`shifted.rs`), the same wide-grid products on AVX-512 CPUs when every thread
//!   has images of its own: the kernel reads each row of the column matrix straight from the
//!   padded planes (a row is a plane at a constant offset), so no column matrix is built and no
//!   operand is packed but the weights, once per call. Forward at any stride, backward-data at
//!   stride 1 (as a gather over the zero-extended output gradient), and the filter gradient of
//!   images small enough that a chunk of them shares the L2 cache.
//!
//! Backward-data is `cols_grad = Wᵀ · dY` then col2im (contiguous adds); backward-filter is
//! `dW = Σ_n dY_n · cols_nᵀ`, with the columns rebuilt tile by tile rather than stored.
//!
//! Parallelism is one level: over images when there are at least as many as threads (each task
//! owns its image's output, so writes are disjoint by construction), otherwise inside the GEMM.

mod direct;
mod pointwise;
mod shifted;
mod wide;

use std::ops::Range;

use rayon::prelude::*;

use crate::tensor::check::{contract_violation, expect_len, shape_str};
use crate::util::simd::{self, dispatch};

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

/// What the forward kernel applies to each output after adding the bias, while the image's
/// output is still in cache: a fused activation saves a full pass over the activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConvActivation {
    /// Nothing: the plain convolution.
    #[default]
    Identity,
    /// `max(y, 0)`.
    Relu,
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

    /// One input channel per group and few outputs per group (depthwise): a GEMM would have a
    /// single row of inner dimension `KH·KW`, so the direct kernels win. With many outputs per
    /// input channel (a single-channel first layer) the stride-1 GEMM on the wide grid is
    /// better: it computes all filters from one column matrix.
    fn is_direct(&self) -> bool {
        self.group_in() == 1 && (self.group_out() < 8 || self.spec.stride != [1, 1])
    }

    /// The wide-grid path reads the padded planes in place ([`shifted`]) rather than through a
    /// column matrix and the general GEMM: on AVX-512 CPUs, when the product has `rows` (output
    /// channels forward, input channels backward) to fill the kernel's register tile. The
    /// kernel parallelises over blocks of rows when it is not already one image per thread.
    fn is_shifted(&self, rows: usize) -> bool {
        !self.is_direct()
            && !self.is_pointwise()
            && rows >= shifted::BLOCK_ROWS
            && shifted::available()
    }
}

/// Whether to split work over images: only with enough of them to keep every thread busy;
/// otherwise the GEMM parallelises inside.
fn parallel_over_images(batch: usize) -> bool {
    batch >= rayon::current_num_threads() && rayon::current_num_threads() > 1
}

/// Computes `out = Σ_chunks f(images)` where `f` adds the contribution of a range of images into
/// a zeroed buffer: one contiguous chunk of images per thread, each into a private buffer, and
/// the partial sums added at the end (the one place results depend on the thread count, by
/// summation order). With fewer images than threads, one call does all of them and the work
/// parallelises inside.
fn sum_over_image_chunks(
    batch: usize,
    out: &mut [f32],
    f: impl Fn(Range<usize>, &mut [f32]) + Sync + Send,
) {
    out.fill(0.0);
    if !parallel_over_images(batch) {
        f(0..batch, out);
        return;
    }
    let threads = rayon::current_num_threads();
    let per_thread = batch.div_ceil(threads);
    let partials: Vec<Vec<f32>> = (0..threads)
        .into_par_iter()
        .map(|t| {
            let mut partial = vec![0.0f32; out.len()];
            f(
                (t * per_thread).min(batch)..((t + 1) * per_thread).min(batch),
                &mut partial,
            );
            partial
        })
        .collect();
    for partial in &partials {
        for (o, p) in out.iter_mut().zip(partial) {
            *o += p;
        }
    }
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
    conv2d_forward_fused(input, weight, bias, ConvActivation::Identity, shape, output);
}

/// Convolution forward with a fused activation: `output = activation(conv(input, weight) + bias)`.
///
/// # Panics
///
/// If a slice's length does not match `shape`.
pub fn conv2d_forward_fused(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: ConvActivation,
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
    let packed = s
        .is_shifted(s.group_out())
        .then(|| wide::pack_forward(weight, &s));
    for_each_image(output, image_out, s.batch, |n, out| {
        let x = &input[n * image_in..(n + 1) * image_in];
        if s.is_direct() {
            direct::forward_image(x, weight, &s, out);
        } else if let Some(packed) = &packed {
            wide::forward_image_shifted(x, packed, &s, out);
        } else if s.is_pointwise() {
            pointwise::forward_image(x, weight, &s, out);
        } else {
            wide::forward_image(x, weight, &s, out);
        }
        if bias.is_some() || activation != ConvActivation::Identity {
            for (o, plane) in out.chunks_mut(s.out_plane()).enumerate() {
                let b = bias.map_or(0.0, |bias| bias[o]);
                dispatch(
                    #[inline(always)]
                    || match activation {
                        ConvActivation::Identity => plane.iter_mut().for_each(|y| *y += b),
                        ConvActivation::Relu => {
                            plane.iter_mut().for_each(|y| *y = super::relu(*y + b))
                        }
                    },
                );
            }
        }
    });
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
    let packed = (s.is_shifted(s.group_in()) && s.spec.stride == [1, 1])
        .then(|| wide::pack_backward_data(weight, &s));
    for_each_image(grad_input, image_in, s.batch, |n, gx| {
        let gy = &grad_output[n * image_out..(n + 1) * image_out];
        if s.is_direct() {
            direct::backward_data_image(gy, weight, &s, gx);
        } else if let Some(packed) = &packed {
            wide::backward_data_image_shifted(gy, packed, &s, gx);
        } else if s.is_pointwise() {
            pointwise::backward_data_image(gy, weight, &s, gx);
        } else {
            wide::backward_data_image(gy, weight, &s, gx);
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
        grad_bias.par_iter_mut().enumerate().for_each(|(o, b)| {
            let total: f64 = (0..s.batch)
                .map(|n| {
                    let g = &grad_output[(n * s.out_channels + o) * plane..][..plane];
                    dispatch(
                        #[inline(always)]
                        || simd::sum(g),
                    ) as f64
                })
                .sum();
            *b = total as f32;
        });
    }
    if s.is_direct() {
        direct::backward_filter(input, grad_output, &s, grad_weight);
    } else if s.is_pointwise() {
        sum_over_image_chunks(s.batch, grad_weight, |images, partial| {
            pointwise::accumulate_filter_gradient(input, grad_output, &s, images, partial)
        });
    } else if s.is_shifted(s.group_out())
        && wide::shifted_filter_fits(&s)
        && (parallel_over_images(s.batch) || rayon::current_num_threads() == 1)
    {
        sum_over_image_chunks(s.batch, grad_weight, |images, partial| {
            wide::accumulate_filter_gradient_shifted(input, grad_output, &s, images, partial)
        });
    } else {
        sum_over_image_chunks(s.batch, grad_weight, |images, partial| {
            wide::accumulate_filter_gradient(input, grad_output, &s, images, partial)
        });
    }
}

/// Adds `Σ_{n in images} dY_n · cols(X_n)ᵀ` into `grad_weight`.
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
