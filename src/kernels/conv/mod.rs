//! 2-D convolution kernels on NCHW activations and OIHW weights (PyTorch's layouts): forward,
//! backward-data and backward-filter, with per-axis stride, asymmetric padding, dilation, groups
//! and an optional bias.
//!
//! The paths ([`ConvPath`]), chosen once per shape in [`Conv2dShape::new`] and used by all
//! three passes:
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
//! - **shifted** (`shifted.rs`), the same wide-grid products on AVX-512 and AVX2 CPUs: the
//!   kernel reads each row of the column matrix straight from the padded planes (a row is a
//!   plane at a constant offset), so no column matrix is built and no operand is packed but the
//!   weights, once per call. Forward at any stride; when every thread has images of its own,
//!   the filter gradient; with AVX-512 also backward-data at any stride (a gather per phase
//!   plane over the zero-extended output gradient).
//!
//! - **Winograd** F(2x2, 3x3) and F(4x4, 3x3) (`winograd.rs`) for 3x3 convolutions at stride 1
//!   with 16 channels or more on each side and enough tiles in the batch to pay for the
//!   filter's transform, on AVX2 and AVX-512: 2.25x (4x) fewer multiply-adds in the forward
//!   and backward-data, F(2x2, 3x3) in the filter gradient when every thread has images of its
//!   own; an image holding an infinity or NaN takes one of the paths above.
//!
//! - **channel blocks** (`blocked.rs`), on AVX-512 CPUs wherever Winograd is not chosen, with
//!   16 channels or more on each side: the forward (of a kernel at least as large as the
//!   stride) copies the image into padded blocks of 16 channels and runs register tiles of
//!   output channels in the lanes by pixels broadcast from the blocks, so a stride costs
//!   nothing; backward-data runs the same tile over each column phase of an input row.
//!
//! - **pooled rows** (`pooled_rows.rs`), for the forward of convolution + ReLU + 2x2 max
//!   pooling with at most four input channels (a network's first layer), with AVX-512: tiles
//!   of two output rows, pooled before they are stored, bit for bit the shifted kernel and the
//!   pooling.
//!
//! Backward-data is `cols_grad = Wᵀ · dY` then col2im (contiguous adds); backward-filter is
//! `dW = Σ_n dY_n · cols_nᵀ`, with the columns rebuilt tile by tile rather than stored.
//!
//! Parallelism is one level: over images when there are at least as many as threads (each task
//! owns its image's output, so writes are disjoint by construction), otherwise inside the GEMM
//! or, for Winograd, over blocks of an image's output channels.

mod blocked;
mod direct;
mod epilogue;
mod gradient_gemm;
mod parallel;
mod pointwise;
mod pooled_rows;
mod prepared;
mod shape;
mod shifted;
mod wide;
mod winograd;
mod winograd_gradient;

use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use crate::kernels::blocks::ChannelBlocks;
use crate::kernels::fill::{filled_by_chunk_pairs, filled_by_chunks};
use crate::kernels::pool::{Pool2dShape, Pool2dSpec, max_pool_planes};
use crate::kernels::scratch::with_scratch;
use crate::tensor::check::{contract_violation, shape_str};
use crate::util::simd::{self, dispatch};
use epilogue::Epilogue;
use parallel::{for_each_image, parallel_over_images, sum_over_image_chunks, valid_columns};
use pooled_rows::PooledRows;
pub(crate) use prepared::WeightIdentity;
use prepared::{Form, prepared};
pub use shape::{
    BlockedPasses, Conv2dShape, Conv2dSpec, ConvActivation, ConvPath, Padding2d, ShiftedPasses,
    WinogradPasses, output_extent,
};

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
    shape.expect_lengths("conv2d_forward", &[("output", output.len())]);
    let (per_call, images) = forward_images(input, weight, None, bias, activation, shape);
    let image_out = shape.out_channels * shape.out_plane();
    for_each_image(
        output,
        per_call * image_out,
        shape.batch / per_call,
        |call, out| images(call * per_call, Outputs::Planes(out)),
    );
}

/// As [`conv2d_forward_fused`] into a fresh vector, each image's output zeroed by the thread that
/// computes it rather than all of it up front.
///
/// # Examples
///
/// ```
/// use striate::kernels::conv::{conv2d_forward_fused_to_vec, Conv2dShape, Conv2dSpec, ConvActivation};
///
/// // A 1x1 convolution with weight -1 and bias 3, then ReLU.
/// let shape = Conv2dShape::new(&[1, 1, 1, 4], &[1, 1, 1, 1], Conv2dSpec::default());
/// let out = conv2d_forward_fused_to_vec(
///     &[1.0, 2.0, 3.0, 4.0], &[-1.0], Some(&[3.0]), ConvActivation::Relu, &shape,
/// );
/// assert_eq!(out, [2.0, 1.0, 0.0, 0.0]);
/// ```
pub fn conv2d_forward_fused_to_vec(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: ConvActivation,
    shape: &Conv2dShape,
) -> Vec<f32> {
    conv2d_forward_prepared(input, weight, None, bias, activation, shape)
}

/// [`conv2d_forward_fused_to_vec`] of a weight that, with an identity, is a parameter's value
/// that cannot change while it is in use: its packed or transformed forms are kept for the
/// next call (`prepared.rs`).
pub(crate) fn conv2d_forward_prepared(
    input: &[f32],
    weight: &[f32],
    identity: Option<WeightIdentity>,
    bias: Option<&[f32]>,
    activation: ConvActivation,
    shape: &Conv2dShape,
) -> Vec<f32> {
    let (per_call, images) = forward_images(input, weight, identity, bias, activation, shape);
    let image_out = shape.out_channels * shape.out_plane();
    let calls = shape.batch / per_call;
    filled_by_chunks(
        per_call * image_out,
        calls,
        parallel_over_images(calls),
        |call, out| images(call * per_call, Outputs::Planes(out)),
    )
}

/// Where a convolution into channel blocks reads its input.
#[derive(Clone, Copy, Debug)]
pub enum ConvInput<'a> {
    /// NCHW planes `[N, C, H, W]`.
    Planes(&'a [f32]),
    /// Channel blocks ([`ChannelBlocks`]).
    Blocks(&'a ChannelBlocks),
}

/// Whether the forward of `shape` runs on channel blocks on this CPU: then
/// [`conv2d_forward_blocks`] reads and writes them without converting. (On other shapes it
/// converts at its edges. A pointwise convolution, 1x1 at stride 1, given NCHW planes
/// computes on them, a GEMM that reads them in place, and converts its output.)
pub fn forward_runs_on_blocks(shape: &Conv2dShape) -> bool {
    match shape.path {
        ConvPath::Wide { blocked, .. } => blocked.forward,
        ConvPath::Pointwise => blocked::Blocked::reads_pointwise_blocks(shape),
        ConvPath::Direct => false,
    }
}

/// Whether the forward of `shape` reads NCHW planes into channel blocks as it goes (each
/// image copied into blocks in cache), so that a chain of blocks may start at it rather than
/// after it.
pub(crate) fn forward_starts_blocks(shape: &Conv2dShape) -> bool {
    forward_runs_on_blocks(shape) && !matches!(shape.path, ConvPath::Pointwise)
}

/// Convolution forward with a fused activation, `activation(conv(input, weight) + bias)`, into
/// channel blocks with a border of `halo` pixels: the layout in which a chain of convolutions
/// keeps its activations, as oneDNN's `nChw16c` (see [`ChannelBlocks`]).
///
/// Where [`forward_runs_on_blocks`], the kernel reads the blocks in place (a border at least
/// as wide as the padding; otherwise it copies them with more) and stores each register tile
/// as it is; elsewhere it converts to planes and back. Equal, value for value, to
/// [`conv2d_forward_fused`] on the planes; except that a pointwise convolution with more input
/// channels than its GEMM on planes sums in one pass (a few hundred, from the CPU's L1) may
/// differ in the last bits there, that GEMM adding two partial sums where the tiles on blocks
/// add channel by channel.
///
/// # Panics
///
/// If the input's shape or a slice's length does not match `shape`.
///
/// # Examples
///
/// ```
/// use striate::kernels::blocks::ChannelBlocks;
/// use striate::kernels::conv::{
///     conv2d_forward_blocks, conv2d_forward_fused, Conv2dShape, Conv2dSpec, ConvActivation, ConvInput,
///     Padding2d,
/// };
///
/// let spec = Conv2dSpec { stride: [2, 2], padding: Padding2d::symmetric(1, 1), ..Default::default() };
/// let shape = Conv2dShape::new(&[1, 16, 8, 8], &[32, 16, 3, 3], spec);
/// let x: Vec<f32> = (0..16 * 64).map(|i| (i as f32 * 0.1).cos()).collect();
/// let w: Vec<f32> = (0..32 * 16 * 9).map(|i| (i as f32 * 0.3).sin()).collect();
/// let blocks = ChannelBlocks::from_planes(&x, [1, 16, 8, 8], 1);
/// let y = conv2d_forward_blocks(ConvInput::Blocks(&blocks), &w, None, ConvActivation::Relu, &shape, 1);
/// let mut planes = vec![0.0; 32 * 16];
/// conv2d_forward_fused(&x, &w, None, ConvActivation::Relu, &shape, &mut planes);
/// assert_eq!(y.to_planes(), planes);
/// ```
pub fn conv2d_forward_blocks(
    input: ConvInput<'_>,
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: ConvActivation,
    shape: &Conv2dShape,
    halo: usize,
) -> ChannelBlocks {
    conv2d_forward_blocks_prepared(input, weight, None, bias, activation, shape, halo)
}

/// [`conv2d_forward_blocks`] with the packed weights kept, as [`conv2d_forward_prepared`].
pub(crate) fn conv2d_forward_blocks_prepared(
    input: ConvInput<'_>,
    weight: &[f32],
    identity: Option<WeightIdentity>,
    bias: Option<&[f32]>,
    activation: ConvActivation,
    shape: &Conv2dShape,
    halo: usize,
) -> ChannelBlocks {
    let s = *shape;
    let op = "conv2d_forward_blocks";
    s.expect_lengths(op, &[("weight", weight.len())]);
    if let Some(bias) = bias {
        s.expect_lengths(op, &[("bias", bias.len())]);
    }
    let input_shape = [s.batch, s.in_channels, s.in_height, s.in_width];
    match input {
        ConvInput::Planes(x) => s.expect_lengths(op, &[("input", x.len())]),
        ConvInput::Blocks(x) if x.shape() != input_shape => contract_violation(
            op,
            "the input blocks' shape must be the convolution's input shape",
            format_args!(
                "blocks {}, shape {}",
                shape_str(&x.shape()),
                shape_str(&input_shape)
            ),
        ),
        ConvInput::Blocks(_) => {}
    }
    if !forward_runs_on_blocks(&s)
        || matches!(input, ConvInput::Planes(_)) && !forward_starts_blocks(&s)
    {
        let planes;
        let x = match input {
            ConvInput::Planes(x) => x,
            ConvInput::Blocks(x) => {
                planes = x.to_planes();
                &planes
            }
        };
        let y = conv2d_forward_prepared(x, weight, identity, bias, activation, &s);
        return ChannelBlocks::from_planes(&y, s.output_shape(), halo);
    }
    let blocked = blocked::Blocked::new(&s);
    let form = Form::Blocked {
        tile_channels: blocked.tile_channels(),
    };
    let bytes = blocked.packed_len(&s) * size_of::<f32>();
    let packed = prepared(identity, form, bytes, || blocked.pack(weight, &s));
    let image_in = match input {
        ConvInput::Planes(_) => s.in_channels * s.in_plane(),
        ConvInput::Blocks(x) => x.image_len(),
    };
    let parallel = parallel_over_images(s.batch);
    let write = |n: usize, out: &mut [MaybeUninit<f32>]| {
        let source = match input {
            ConvInput::Planes(x) => blocked::Source::Planes(&x[n * image_in..(n + 1) * image_in]),
            ConvInput::Blocks(x) => blocked::Source::Blocks {
                data: &x.as_slice()[n * image_in..],
                halo: x.halo(),
            },
        };
        let sink = blocked::Sink::Blocks { data: out, halo };
        let epilogue = Epilogue { bias, activation };
        blocked::forward_images(1, source, &packed, &s, &blocked, epilogue, sink);
    };
    // SAFETY: the blocked forward writes every pixel inside the border of every block of an
    // output image, each lane of a channel ([`blocked::Sink::Blocks`]), and reads none of them.
    unsafe { ChannelBlocks::written_by_images(s.output_shape(), halo, parallel, write) }
}

/// Convolution, bias, ReLU and max pooling in one pass over each image, for inference: the
/// convolution's output stays in a per-thread buffer (in cache) and only the pooled planes are
/// written out, so the full-size activation never goes to memory and back. Equal to
/// [`conv2d_forward_fused`] with [`ConvActivation::Relu`] followed by
/// [`max_pool2d_forward`](crate::kernels::pool::max_pool2d_forward), value for value.
///
/// # Panics
///
/// If a slice's length does not match `shape`, or the pooling window does not fit the
/// convolution's output (as [`Pool2dShape::new`]).
///
/// # Examples
///
/// ```
/// use striate::kernels::conv::{conv2d_relu_max_pool2d_to_vec, Conv2dShape, Conv2dSpec};
/// use striate::kernels::pool::Pool2dSpec;
///
/// // A 1x1 convolution with weight 1 and bias -2, ReLU, then 2x2 max pooling.
/// let shape = Conv2dShape::new(&[1, 1, 2, 2], &[1, 1, 1, 1], Conv2dSpec::default());
/// let out = conv2d_relu_max_pool2d_to_vec(
///     &[1.0, 5.0, 3.0, 2.0], &[1.0], Some(&[-2.0]), &shape, Pool2dSpec::square(2),
/// );
/// assert_eq!(out, [3.0]);
/// ```
pub fn conv2d_relu_max_pool2d_to_vec(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &Conv2dShape,
    pool: Pool2dSpec,
) -> Vec<f32> {
    conv2d_relu_max_pool2d_pass(input, weight, None, bias, shape, pool, false).0
}

/// As [`conv2d_relu_max_pool2d_to_vec`], for training: also returns the argmax of each
/// pooling window within its convolution output plane, as
/// [`max_pool2d_forward`](crate::kernels::pool::max_pool2d_forward) records it. The pooled
/// values and indices are all a backward pass needs of the block (the ReLU passes the gradient
/// where the pooled value does, see [`relu_passes_gradient`](crate::kernels::relu_passes_gradient)),
/// so the full-size activation is never written out.
///
/// # Panics
///
/// As [`conv2d_relu_max_pool2d_to_vec`].
///
/// # Examples
///
/// ```
/// use striate::kernels::conv::{conv2d_relu_max_pool2d_with_indices_to_vec, Conv2dShape, Conv2dSpec};
/// use striate::kernels::pool::Pool2dSpec;
///
/// let shape = Conv2dShape::new(&[1, 1, 2, 2], &[1, 1, 1, 1], Conv2dSpec::default());
/// let (out, indices) = conv2d_relu_max_pool2d_with_indices_to_vec(
///     &[1.0, 5.0, 3.0, 2.0], &[1.0], Some(&[-2.0]), &shape, Pool2dSpec::square(2),
/// );
/// assert_eq!((out, indices), (vec![3.0], vec![1]));
/// ```
pub fn conv2d_relu_max_pool2d_with_indices_to_vec(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &Conv2dShape,
    pool: Pool2dSpec,
) -> (Vec<f32>, Vec<u32>) {
    conv2d_relu_max_pool2d_pass(input, weight, None, bias, shape, pool, true)
}

/// The fused convolution + ReLU + max pooling: the pooled values, and the argmax indices
/// when `with_indices` (empty otherwise).
pub(crate) fn conv2d_relu_max_pool2d_pass(
    input: &[f32],
    weight: &[f32],
    identity: Option<WeightIdentity>,
    bias: Option<&[f32]>,
    shape: &Conv2dShape,
    pool: Pool2dSpec,
    with_indices: bool,
) -> (Vec<f32>, Vec<u32>) {
    let s = *shape;
    let (per_call, images) =
        forward_images(input, weight, identity, bias, ConvActivation::Relu, shape);
    let pooled = Pool2dShape::new(
        "conv2d_relu_max_pool2d",
        &[1, s.out_channels, s.out_height, s.out_width],
        pool,
    );
    let pooled_len = per_call * s.out_channels * pooled.out_plane();
    let calls = s.batch / per_call;
    // Few input channels: pooled in registers, an image at a time (not Winograd's path, so
    // one image per call).
    let in_registers = PooledRows::new(weight, bias, &s, &pooled);
    let image_in = s.in_channels * s.in_plane();
    filled_by_chunk_pairs(
        pooled_len,
        if with_indices { pooled_len } else { 0 },
        calls,
        parallel_over_images(calls),
        |call, out, indices| {
            let pool = &pooled;
            let mut indices = with_indices.then_some(indices);
            if let Some(kernel) = &in_registers {
                debug_assert_eq!(per_call, 1);
                let x = &input[call * image_in..(call + 1) * image_in];
                if kernel.image(x, out, indices.as_deref_mut()) {
                    return;
                }
            }
            images(call * per_call, Outputs::Pooled { pool, out, indices })
        },
    )
}

/// Where the run of [`forward_images`] puts a group of images' results.
enum Outputs<'a> {
    /// The output planes.
    Planes(&'a mut [f32]),
    /// Their max pooling by `pool`, with the argmax indices if asked.
    Pooled {
        pool: &'a Pool2dShape,
        out: &'a mut [f32],
        indices: Option<&'a mut [u32]>,
    },
}

/// Checks the forward's operands and returns how many images to compute at a time and the
/// computation of their outputs: `run(first_image, outputs)` fills `outputs` with the results
/// of the images from `first_image` on, as many as it holds.
fn forward_images<'a>(
    input: &'a [f32],
    weight: &'a [f32],
    identity: Option<WeightIdentity>,
    bias: Option<&'a [f32]>,
    activation: ConvActivation,
    shape: &Conv2dShape,
) -> (usize, impl Fn(usize, Outputs<'_>) + Sync + Send + 'a) {
    let s = *shape;
    let op = "conv2d_forward";
    s.expect_lengths(op, &[("input", input.len()), ("weight", weight.len())]);
    if let Some(bias) = bias {
        s.expect_lengths(op, &[("bias", bias.len())]);
    }
    let (image_in, image_out) = (s.in_channels * s.in_plane(), s.out_channels * s.out_plane());
    let winograd = match s.path {
        ConvPath::Wide { winograd, .. } if winograd.forward => {
            let geometry = winograd::Geometry::forward(&s);
            let form = Form::Winograd {
                tile: geometry.tile(),
            };
            let bytes = weight.len() / 9 * geometry.points() * size_of::<f32>();
            let filter = prepared(identity, form, bytes, || {
                winograd::Filter::forward(weight, &s, &geometry).map(Arc::new)
            });
            Option::clone(&filter).map(|filter| (filter, geometry))
        }
        _ => None,
    };
    let blocked = matches!(
        s.path,
        ConvPath::Wide {
            blocked: BlockedPasses { forward: true, .. },
            ..
        }
    )
    .then(|| {
        let blocked = blocked::Blocked::new(&s);
        let bytes = blocked.packed_len(&s) * size_of::<f32>();
        let form = Form::Blocked {
            tile_channels: blocked.tile_channels(),
        };
        let packed = prepared(identity, form, bytes, || blocked.pack(weight, &s));
        (blocked, packed)
    });
    // A strided 1x1 convolution (not depthwise) as a pointwise one on the pixels it reads.
    let subsampled = pointwise::subsampled(&s).filter(|_| matches!(s.path, ConvPath::Wide { .. }));
    let shifted = matches!(s.path, ConvPath::Wide { shifted, .. } if shifted.forward)
        && blocked.is_none()
        && subsampled.is_none();
    let pack = move || {
        let form = Form::Shifted {
            groups: s.spec.groups,
        };
        prepared(identity, form, size_of_val(weight), || {
            wide::pack_forward(weight, &s)
        })
    };
    let packed = fallback_packing(winograd.is_some(), shifted, pack);
    let per_call = match (&winograd, &blocked) {
        (Some((_, geometry)), _) => geometry.images,
        (None, Some((blocked, _))) => blocked.images_per_call(&s),
        (None, None) => 1,
    };
    // Images on channel blocks a group at a time (see `Blocked::images_per_call`).
    let blocked_group = blocked.clone().filter(|_| per_call > 1);
    // Every path applies the bias and activation as it stores the outputs (the direct path
    // to each plane while it is in cache).
    let image = move |n: usize, out: &mut [f32]| {
        let x = &input[n * image_in..(n + 1) * image_in];
        let epilogue = Epilogue { bias, activation };
        if let Some((blocked, packed)) = &blocked {
            let (source, sink) = (blocked::Source::Planes(x), blocked::Sink::Planes(out));
            return blocked::forward_images(1, source, packed, &s, blocked, epilogue, sink);
        }
        if let Some(sub) = &subsampled {
            return pointwise::forward_image_subsampled(x, weight, &s, sub, epilogue, out);
        }
        match s.path {
            ConvPath::Direct => direct::forward_image(x, weight, bias, activation, &s, out),
            ConvPath::Pointwise => pointwise::forward_image(x, weight, &s, epilogue, out),
            ConvPath::Wide { .. } if shifted => {
                let packed = packed.get_or_init(pack);
                wide::forward_image_shifted(x, packed, &s, epilogue, out)
            }
            ConvPath::Wide { .. } => wide::forward_image(x, weight, &s, epilogue, out),
        }
    };
    let run = move |first: usize, outputs: Outputs<'_>| {
        let input_of =
            |images: Range<usize>| &input[images.start * image_in..images.end * image_in];
        let grouped = winograd.as_ref().map(|(filter, geometry)| {
            move |images: Range<usize>, out: &mut [f32]| {
                let out = winograd::Destination::Planes(out);
                winograd::convolve_images(input_of(images), filter, geometry, bias, activation, out)
            }
        });
        let compute = |out: &mut [f32]| match &blocked_group {
            Some((blocked, packed)) => {
                let images = first..first + out.len() / image_out;
                let source = blocked::Source::Planes(input_of(images.clone()));
                let sink = blocked::Sink::Planes(out);
                let epilogue = Epilogue { bias, activation };
                blocked::forward_images(images.len(), source, packed, &s, blocked, epilogue, sink)
            }
            _ => in_groups(first, out, image_out, grouped, &image),
        };
        match outputs {
            Outputs::Planes(out) => compute(out),
            Outputs::Pooled {
                pool,
                out,
                mut indices,
            } => {
                let count = out.len() / (s.out_channels * pool.out_plane()).max(1);
                // Winograd's 2x2 tiles are the windows of a 2x2 pooling: pooled in registers.
                if let Some((filter, geometry)) = &winograd
                    && pool.spec == Pool2dSpec::square(2)
                {
                    let destination = winograd::Destination::Pooled {
                        out: &mut *out,
                        indices: indices.as_deref_mut(),
                    };
                    let x = input_of(first..first + count);
                    if winograd::convolve_images(x, filter, geometry, bias, activation, destination)
                    {
                        return;
                    }
                }
                with_scratch(count * image_out, |conv| {
                    compute(conv);
                    max_pool_planes(conv, pool, out, indices);
                })
            }
        }
    };
    (per_call, run)
}

/// The shifted kernel's packed weights (`pack`) when it computes the images: packed now, before
/// the images spread over threads (the packing splits over them itself), unless Winograd
/// computes them; then only if an image needs the fallback (an infinity or NaN), on first use.
/// A single image's inference would otherwise pack every weight for nothing.
fn fallback_packing<T>(winograd: bool, shifted: bool, pack: impl FnOnce() -> T) -> OnceLock<T> {
    let packed = OnceLock::new();
    if shifted && !winograd {
        let _ = packed.set(pack());
    }
    packed
}

/// Fills `out` with the results of the images from `first` on, as many as it holds (`len`
/// floats each): all of them at once by `winograd` if it has one and they are all finite,
/// otherwise one by one, by `winograd` if that image is finite and by `image` if not (its
/// transforms would spread an infinity or NaN, `∞ − ∞`, to results computed finite directly).
fn in_groups(
    first: usize,
    out: &mut [f32],
    len: usize,
    winograd: Option<impl Fn(Range<usize>, &mut [f32]) -> bool>,
    image: impl Fn(usize, &mut [f32]),
) {
    let count = out.len() / len;
    if let Some(winograd) = &winograd
        && winograd(first..first + count, out)
    {
        return;
    }
    for (m, out) in out.chunks_exact_mut(len).enumerate() {
        let n = first + m;
        let done = count > 1
            && winograd
                .as_ref()
                .is_some_and(|winograd| winograd(n..n + 1, out));
        if !done {
            image(n, out);
        }
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
    shape.expect_lengths("conv2d_backward_data", &[("grad_input", grad_input.len())]);
    let (per_call, images) = backward_data_images(grad_output, weight, shape);
    let image_in = shape.in_channels * shape.in_plane();
    for_each_image(
        grad_input,
        per_call * image_in,
        shape.batch / per_call,
        |call, gx| images(call * per_call, gx),
    );
}

/// As [`conv2d_backward_data`] into a fresh vector, each image's gradient zeroed by the thread
/// that computes it rather than all of it up front.
pub fn conv2d_backward_data_to_vec(
    grad_output: &[f32],
    weight: &[f32],
    shape: &Conv2dShape,
) -> Vec<f32> {
    let (per_call, images) = backward_data_images(grad_output, weight, shape);
    let image_in = shape.in_channels * shape.in_plane();
    let calls = shape.batch / per_call;
    filled_by_chunks(
        per_call * image_in,
        calls,
        parallel_over_images(calls),
        |call, gx| images(call * per_call, gx),
    )
}

/// Checks the backward-data operands and returns how many images to compute at a time and
/// the computation of their gradients, as [`forward_images`].
fn backward_data_images<'a>(
    grad_output: &'a [f32],
    weight: &'a [f32],
    shape: &Conv2dShape,
) -> (usize, impl Fn(usize, &mut [f32]) + Sync + Send + 'a) {
    let s = *shape;
    s.expect_lengths(
        "conv2d_backward_data",
        &[("grad_output", grad_output.len()), ("weight", weight.len())],
    );
    let (image_in, image_out) = (s.in_channels * s.in_plane(), s.out_channels * s.out_plane());
    let winograd = match s.path {
        ConvPath::Wide { winograd, .. } if winograd.backward_data => {
            let geometry = winograd::Geometry::backward_data(&s);
            winograd::Filter::backward_data(weight, &s, &geometry).map(|filter| (filter, geometry))
        }
        _ => None,
    };
    let blocked =
        matches!(s.path, ConvPath::Wide { blocked, .. } if blocked.backward_data).then(|| {
            let blocked = blocked::BlockedGradient::new(&s);
            // Shared by the calls of single images and groups.
            let packed = Arc::new(blocked.pack(weight, &s));
            (blocked, packed)
        });
    let shifted = matches!(s.path, ConvPath::Wide { shifted, .. } if shifted.backward_data)
        && blocked.is_none();
    let packed = fallback_packing(winograd.is_some(), shifted, || {
        wide::GatherWeights::new(weight, &s)
    });
    let per_call = match (&winograd, &blocked) {
        (Some((_, geometry)), _) => geometry.images,
        (None, Some((blocked, _))) => blocked.images_per_call(&s),
        (None, None) => 1,
    };
    // Images on channel blocks a group at a time (see `BlockedGradient::images_per_call`).
    let blocked_group = blocked.clone().filter(|_| per_call > 1);
    let image = move |n: usize, gx: &mut [f32]| {
        let gy = &grad_output[n * image_out..(n + 1) * image_out];
        if let Some((blocked, packed)) = &blocked {
            return blocked::backward_data_images(1, gy, packed, &s, blocked, gx);
        }
        match s.path {
            ConvPath::Direct => direct::backward_data_image(gy, weight, &s, gx),
            ConvPath::Pointwise => pointwise::backward_data_image(gy, weight, &s, gx),
            ConvPath::Wide { .. } if shifted => {
                let packed = packed.get_or_init(|| wide::GatherWeights::new(weight, &s));
                wide::backward_data_image_shifted(gy, packed, &s, gx)
            }
            ConvPath::Wide { .. } => wide::backward_data_image(gy, weight, &s, gx),
        }
    };
    let run = move |first: usize, gx: &mut [f32]| {
        if let Some((blocked, packed)) = &blocked_group {
            let images = first..first + gx.len() / image_in;
            let gy = &grad_output[images.start * image_out..images.end * image_out];
            return blocked::backward_data_images(images.len(), gy, packed, &s, blocked, gx);
        }
        let winograd = winograd.as_ref().map(|(filter, geometry)| {
            move |images: Range<usize>, gx: &mut [f32]| {
                let gy = &grad_output[images.start * image_out..images.end * image_out];
                let identity = ConvActivation::Identity;
                let gx = winograd::Destination::Planes(gx);
                winograd::convolve_images(gy, filter, geometry, None, identity, gx)
            }
        });
        in_groups(first, gx, image_in, winograd, &image);
    };
    (per_call, run)
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
    let op = "conv2d_backward_filter";
    s.expect_lengths(
        op,
        &[
            ("input", input.len()),
            ("grad_output", grad_output.len()),
            ("grad_weight", grad_weight.len()),
        ],
    );
    if let Some(grad_bias) = grad_bias {
        s.expect_lengths(op, &[("grad_bias", grad_bias.len())]);
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
    match s.path {
        ConvPath::Direct => direct::backward_filter(input, grad_output, &s, grad_weight),
        ConvPath::Pointwise => sum_over_image_chunks(s.batch, grad_weight, |images, partial| {
            pointwise::accumulate_filter_gradient(input, grad_output, &s, images, partial)
        }),
        ConvPath::Wide { .. } => match filter_rows_per_thread(&s) {
            Some(rows) => filter_gradient_by_rows(input, grad_output, &s, rows, grad_weight),
            None => sum_over_image_chunks(s.batch, grad_weight, |images, partial| {
                accumulate_wide_filter_gradient(input, grad_output, &s, images, partial)
            }),
        },
    }
}

/// Output channels per thread for [`filter_gradient_by_rows`], where it pays: a gradient too
/// large to stay in half of L2, which the split over images makes every thread but the first
/// zero and hold whole, to be added after (4.7 MB for ResNet's 256 → 512 channels), and, for
/// Winograd's filter gradient, whose threads would each transform every image's input (four
/// times the input's floats for F(2x2, 3x3)), larger than that.
///
/// Against the split over images, alternated in one process (Intel Xeon model 207, 2 threads,
/// batch 8): ResNet's 256 → 512 stride-2 filter gradient +18%, 512 → 512 at 7x7 (Winograd)
/// +21%, 128 → 256 stride-2 +3.6%, the ResNet-18 step +5%; 256 → 256 at 14x14 (Winograd, a
/// 2.4 MB gradient of a 1.6 MB input) read 0.98 call by call and stays with the images.
fn filter_rows_per_thread(s: &Conv2dShape) -> Option<usize> {
    let threads = rayon::current_num_threads();
    let float = size_of::<f32>();
    let bytes = s.out_channels * s.group_in() * s.kernel_height * s.kernel_width * float;
    let budget = crate::kernels::gemm::Caches::of_this_cpu().l2 / 2;
    let winograd = matches!(s.path, ConvPath::Wide { winograd, .. } if winograd.backward_filter);
    let input_bytes = s.batch * s.in_channels * s.in_plane() * float;
    (s.spec.groups == 1
        && parallel_over_images(s.batch)
        && bytes > budget
        && (!winograd || bytes > 4 * input_bytes)
        && s.out_channels >= threads * ROW_UNIT)
        .then(|| s.out_channels.div_ceil(threads).next_multiple_of(ROW_UNIT))
}

/// Output channels of a thread's part in [`filter_gradient_by_rows`] come in multiples of this:
/// a whole number of the filter-gradient kernels' vectors.
const ROW_UNIT: usize = 16;

/// The filter gradient of a [`ConvPath::Wide`] convolution split over its output channels,
/// `rows` a thread, each thread summing every image for its rows straight into the gradient
/// (its rows of the output gradient copied together first): no partial sums to zero and add.
fn filter_gradient_by_rows(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    rows: usize,
    grad_weight: &mut [f32],
) {
    let columns = grad_weight.len() / s.out_channels;
    let plane = s.out_plane();
    crate::util::threads::split(|| {
        grad_weight
            .par_chunks_mut(rows * columns)
            .enumerate()
            .for_each(|(part, grad)| {
                let (first, count) = (part * rows, grad.len() / columns);
                let sub = Conv2dShape {
                    out_channels: count,
                    ..*s
                };
                // A per-thread buffer kept across calls (nested scratch calls get their own).
                crate::kernels::scratch::with_scratch(s.batch * count * plane, |gy| {
                    for (n, rows_of_image) in gy.chunks_exact_mut(count * plane).enumerate() {
                        let image = &grad_output[(n * s.out_channels + first) * plane..];
                        rows_of_image.copy_from_slice(&image[..count * plane]);
                    }
                    grad.fill(0.0);
                    accumulate_wide_filter_gradient(input, gy, &sub, 0..s.batch, grad);
                })
            })
    });
}

/// Adds the filter gradient of `images` of a [`ConvPath::Wide`] convolution into `partial`
/// (zeroed by the caller), with the pass's fast kernel.
fn accumulate_wide_filter_gradient(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    images: Range<usize>,
    partial: &mut [f32],
) {
    let ConvPath::Wide {
        shifted, winograd, ..
    } = s.path
    else {
        unreachable!("conv2d_backward_filter: not a wide convolution");
    };
    let (image_in, image_out) = (s.in_channels * s.in_plane(), s.out_channels * s.out_plane());
    let fast = |images: Range<usize>, partial: &mut [f32]| {
        if images.is_empty() {
            return;
        }
        if winograd.backward_filter {
            winograd_gradient::accumulate_filter_gradient(input, grad_output, s, images, partial)
        } else if shifted.backward_filter {
            wide::accumulate_filter_gradient_shifted(input, grad_output, s, images, partial)
        } else {
            wide::accumulate_filter_gradient(input, grad_output, s, images, partial)
        }
    };
    // The in-place GEMM sums exactly the convolution's terms.
    let exact =
        !winograd.backward_filter && shifted.backward_filter && wide::filter_gradient_in_place(s);
    // The wide grid's discarded columns hold zero gradients that meet real input values in
    // these products; an infinite input there would add 0·∞ = NaN where the convolution has no
    // such term. A finite sum proves no input was infinite or NaN (every one meets real terms
    // too), so only a non-finite one (rare: training stops on it anyway) is redone, its images
    // holding an infinity or NaN summed by the definition.
    fast(images.clone(), partial);
    if exact || all_finite(partial) {
        return;
    }
    partial.fill(0.0);
    let finite = |n: usize| {
        all_finite(&input[n * image_in..(n + 1) * image_in])
            && all_finite(&grad_output[n * image_out..(n + 1) * image_out])
    };
    let mut start = images.start;
    for n in images.clone() {
        if !finite(n) {
            fast(start..n, partial);
            accumulate_filter_gradient_by_definition(input, grad_output, s, n, partial);
            start = n + 1;
        }
    }
    fast(start..images.end, partial);
}

/// Whether every value is finite, with the widest vectors.
fn all_finite(data: &[f32]) -> bool {
    dispatch(
        #[inline(always)]
        || simd::all_finite(data),
    )
}

/// Adds image `n`'s filter gradient into `grad_weight` term by term, as the convolution defines
/// it: `∂W[o, c, kh, kw] += Σ_(oh, ow) ∂Y[n, o, oh, ow] · X[n, c, ih, iw]` over the positions
/// inside the image only. Slow; for the images the fast paths cannot take.
fn accumulate_filter_gradient_by_definition(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    n: usize,
    grad_weight: &mut [f32],
) {
    let (cg, og) = (s.group_in(), s.group_out());
    let [sh, sw] = s.spec.stride;
    let [dh, dw] = s.spec.dilation;
    let p = s.spec.padding;
    let taps = s.kernel_height * s.kernel_width;
    for o in 0..s.out_channels {
        let g = o / og;
        let gy = &grad_output[(n * s.out_channels + o) * s.out_plane()..][..s.out_plane()];
        for ci in 0..cg {
            let c = g * cg + ci;
            let x = &input[(n * s.in_channels + c) * s.in_plane()..][..s.in_plane()];
            let filter = &mut grad_weight[(o * cg + ci) * taps..][..taps];
            for kh in 0..s.kernel_height {
                for kw in 0..s.kernel_width {
                    let mut sum = 0.0f32;
                    for oh in 0..s.out_height {
                        let ih = (oh * sh + kh * dh) as isize - p.top as isize;
                        if ih < 0 || ih >= s.in_height as isize {
                            continue;
                        }
                        let offset = (kw * dw) as isize - p.left as isize;
                        let (lo, hi) = valid_columns(0, s.out_width, sw, offset, s.in_width);
                        for ow in lo..hi {
                            let iw = (ow * sw) as isize + offset;
                            sum += gy[oh * s.out_width + ow]
                                * x[ih as usize * s.in_width + iw as usize];
                        }
                    }
                    filter[kh * s.kernel_width + kw] += sum;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parallel::valid_columns;
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
    fn filter_gradient_by_rows_matches_the_definition() {
        use rand::{RngExt, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(7);
        // A strided 3x3 (the in-place GEMM), a 3x3 with Winograd's filter gradient and one
        // with too few input channels for it: parts of 16 output channels, the last one short;
        // then an infinite input in one image, which the fast kernels redo by the definition.
        for (input, weight, stride) in [
            ([3, 8, 9, 9], [40, 8, 3, 3], 2),
            ([3, 16, 8, 8], [40, 16, 3, 3], 1),
            ([2, 8, 6, 6], [40, 8, 3, 3], 1),
        ] {
            let spec = Conv2dSpec {
                stride: [stride, stride],
                padding: Padding2d::symmetric(weight[2] / 2, weight[3] / 2),
                ..Default::default()
            };
            let s = Conv2dShape::new(&input, &weight, spec);
            let random = |len: usize, rng: &mut StdRng| -> Vec<f32> {
                (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
            };
            let mut x = random(input.iter().product(), &mut rng);
            let gy = random(s.batch * s.out_channels * s.out_plane(), &mut rng);
            for infinite in [false, true] {
                if infinite {
                    x[s.in_channels * s.in_plane() + 5] = f32::INFINITY;
                }
                let len = weight.iter().product();
                let mut want = vec![0.0f32; len];
                for n in 0..s.batch {
                    accumulate_filter_gradient_by_definition(&x, &gy, &s, n, &mut want);
                }
                let mut got = vec![f32::NAN; len];
                filter_gradient_by_rows(&x, &gy, &s, ROW_UNIT, &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let close = g == w || (g - w).abs() <= 1e-4 * (1.0 + w.abs());
                    assert!(
                        close || (g.is_nan() && w.is_nan()),
                        "{input:?} {i}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(
        expected = "conv2d: input channels 3 != weight in_channels 1 x groups 1 (input [64, 3, 28, 28], weight [32, 1, 3, 3])"
    )]
    fn rejects_channel_mismatch() {
        Conv2dShape::new(&[64, 3, 28, 28], &[32, 1, 3, 3], Conv2dSpec::default());
    }
}
