//! A convolution's hyperparameters ([`Conv2dSpec`], [`Padding2d`]), every size derived and
//! validated once ([`Conv2dShape`]), and the kernel family chosen for it ([`ConvPath`]).

use super::blocked::{Blocked, BlockedGradient};
use super::parallel::parallel_over_images;
use super::{gradient_gemm, shifted, winograd, winograd_gradient};
use crate::tensor::check::{contract_violation, expect_len, shape_str};

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
    /// The kernels that compute it, chosen in [`Conv2dShape::new`] for the CPU at hand.
    pub path: ConvPath,
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
        let mut shape = Conv2dShape {
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
            path: ConvPath::Direct,
        };
        shape.path = shape.choose_path();
        crate::kernels::log_choice(|| shape.describe_choice());
        shape
    }

    /// The choice [`Conv2dShape::new`] made, for [`crate::kernels::LOG_VARIABLE`]: the shape,
    /// the instruction set, and the kernel family of each pass (with the shifted GEMM's tile).
    fn describe_choice(&self) -> String {
        let passes = match self.path {
            ConvPath::Direct => "every pass direct (per-plane multiply-adds)".to_string(),
            ConvPath::Pointwise if Blocked::reads_pointwise_blocks(self) => {
                "every pass a GEMM on the planes in place; forward on channel blocks given them"
                    .to_string()
            }
            ConvPath::Pointwise => "every pass a GEMM on the planes in place".to_string(),
            ConvPath::Wide {
                shifted,
                winograd,
                blocked,
            } => {
                let tile = format!(
                    "shifted GEMM ({} x {} tiles)",
                    shifted::block_rows(),
                    shifted::tile_columns()
                );
                let blocked_tile = Blocked::new(self).describe();
                let blocked_gradient_tile = BlockedGradient::new(self).describe();
                fn family<'a>(winograd: Option<&'a str>, shifted: bool, fast: &'a str) -> &'a str {
                    match winograd {
                        Some(name) => name,
                        None if shifted => fast,
                        None => "im2col + GEMM",
                    }
                }
                use super::winograd::Geometry;
                format!(
                    "forward {}, backward-data {}, filter gradient {}",
                    if blocked.forward {
                        &blocked_tile
                    } else if super::pointwise::subsampled(self).is_some() {
                        "a GEMM on the subsampled planes"
                    } else {
                        family(
                            winograd.forward.then(|| Geometry::forward(self).name()),
                            shifted.forward,
                            &tile,
                        )
                    },
                    if blocked.backward_data {
                        &blocked_gradient_tile
                    } else {
                        family(
                            winograd
                                .backward_data
                                .then(|| Geometry::backward_data(self).name()),
                            shifted.backward_data,
                            &tile,
                        )
                    },
                    family(
                        winograd.backward_filter.then_some("Winograd F(2x2, 3x3)"),
                        shifted.backward_filter,
                        if gradient_gemm::pays(self.group_patch()) {
                            "GEMM over a transposed dY panel, input in place"
                        } else {
                            "shifted reduction"
                        }
                    ),
                )
            }
        };
        let p = self.spec.padding;
        format!(
            "conv2d {} * {} stride {:?} padding [{}, {}, {}, {}] dilation {:?} groups {} on {}: \
             {passes}",
            shape_str(&[self.batch, self.in_channels, self.in_height, self.in_width]),
            shape_str(&[
                self.out_channels,
                self.group_in(),
                self.kernel_height,
                self.kernel_width
            ]),
            self.spec.stride,
            p.top,
            p.bottom,
            p.left,
            p.right,
            self.spec.dilation,
            self.spec.groups,
            crate::kernels::instruction_set(),
        )
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

    pub(super) fn group_in(&self) -> usize {
        self.in_channels / self.spec.groups
    }

    pub(super) fn group_out(&self) -> usize {
        self.out_channels / self.spec.groups
    }

    /// Rows of a group's column matrix: `(C/groups)·KH·KW`.
    pub(super) fn group_patch(&self) -> usize {
        self.group_in() * self.kernel_height * self.kernel_width
    }

    pub(super) fn in_plane(&self) -> usize {
        self.in_height * self.in_width
    }

    pub(super) fn out_plane(&self) -> usize {
        self.out_height * self.out_width
    }

    pub(super) fn is_pointwise(&self) -> bool {
        self.kernel_height == 1
            && self.kernel_width == 1
            && self.spec.stride == [1, 1]
            && self.spec.padding == Padding2d::default()
    }

    /// One input channel per group and few outputs per group (depthwise): a GEMM would have a
    /// single row of inner dimension `KH·KW`, so the direct kernels win. With many outputs per
    /// input channel (a single-channel first layer) the stride-1 GEMM on the wide grid is
    /// better: it computes all filters from one column matrix.
    pub(super) fn is_direct(&self) -> bool {
        self.group_in() == 1 && (self.group_out() < 8 || self.spec.stride != [1, 1])
    }

    /// The kernel family for this shape on this CPU and thread pool; see [`ConvPath`].
    fn choose_path(&self) -> ConvPath {
        if self.is_direct() {
            return ConvPath::Direct;
        }
        if self.is_pointwise() {
            return ConvPath::Pointwise;
        }
        // The shifted kernel fills a register tile of `block_rows` rows: output channels
        // forward and for the filter gradient, input channels backward.
        let tile = |rows: usize| rows >= shifted::block_rows() && shifted::available();
        let winograd = self.winograd_fits();
        // The filter gradient's Winograd computes an image on one thread: with fewer images
        // than threads (a single image) the shifted kernel, which splits an image over
        // threads, is faster.
        let over_images = parallel_over_images(self.batch) || rayon::current_num_threads() == 1;
        let p = self.spec.padding;
        // As the forward of the output gradient padded by `2 − padding`.
        let winograd_data = winograd && p.top.max(p.bottom).max(p.left).max(p.right) <= 2;
        ConvPath::Wide {
            blocked: BlockedPasses {
                forward: !winograd && Blocked::chosen(self),
                backward_data: !winograd_data && BlockedGradient::chosen(self),
            },
            winograd: WinogradPasses {
                forward: winograd,
                backward_data: winograd_data,
                backward_filter: winograd && over_images && winograd_gradient::pays(self),
            },
            shifted: ShiftedPasses {
                forward: tile(self.group_out()),
                // With AVX2's 8-column tiles the backward gather (depth `O·KH·KW`, twice the
                // forward's on MNIST's conv2) measured no faster than im2col + GEMM.
                backward_data: tile(self.group_in()) && shifted::wide_tiles(),
                backward_filter: self.group_out() >= shifted::REDUCE_MIN_ROWS
                    && shifted::reduce_available()
                    && over_images,
            },
        }
    }

    /// Whether Winograd's F(2x2, 3x3) or F(4x4, 3x3) can compute this convolution
    /// (`winograd.rs`): 3x3 filters, stride 1, no dilation, one group, a vector instruction set,
    /// enough channels on both sides that the products, not the transforms, dominate, and
    /// enough tiles in the batch to pay for the filter's transform.
    fn winograd_fits(&self) -> bool {
        let unit = [1, 1];
        self.kernel_height == 3
            && self.kernel_width == 3
            && self.spec.stride == unit
            && self.spec.dilation == unit
            && self.spec.groups == 1
            && self.in_channels >= WINOGRAD_MIN_CHANNELS
            && self.out_channels >= WINOGRAD_MIN_CHANNELS
            && shifted::available()
            && self.batch * self.winograd_tiles() >= WINOGRAD_MIN_TILES
    }

    /// Winograd's output tiles per image of the forward (and of the backward-data, whose
    /// outputs have the input's size: the same at stride 1 with the usual padding).
    fn winograd_tiles(&self) -> usize {
        let tile = winograd::output_tile(self.out_height, self.out_width);
        self.out_height.div_ceil(tile) * self.out_width.div_ceil(tile)
    }

    /// Panics unless each `(what, length)` holds the values its role needs for this shape:
    /// `"input"`, `"weight"`, `"output"` (or their gradients) and `"bias"`.
    #[track_caller]
    pub(super) fn expect_lengths(&self, op: &str, slices: &[(&str, usize)]) {
        for &(what, len) in slices {
            let expected = match what.trim_start_matches("grad_") {
                "input" => self.batch * self.in_channels * self.in_plane(),
                "weight" => self.out_channels * self.group_patch(),
                "output" => self.batch * self.out_channels * self.out_plane(),
                "bias" => self.out_channels,
                other => unreachable!("no slice role {other}"),
            };
            expect_len(op, what, len, expected);
        }
    }
}

/// The kernel family that computes a convolution: chosen once per shape, in
/// [`Conv2dShape::new`], from the shape and what the CPU reports, and used by all three
/// passes. `tests/kernels_reference.rs` checks every family against a naive convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPath {
    /// One input channel and few outputs per group (depthwise): shifted multiply-adds over
    /// whole planes (`direct.rs`).
    Direct,
    /// 1x1, stride 1, no padding: the planes are the GEMM's operand as they lie
    /// (`pointwise.rs`).
    Pointwise,
    /// Everything else: the wide grid of padded planes, as im2col + GEMM (`wide.rs`), or for
    /// the passes marked in `shifted`, the AVX-512 or AVX2 kernel reading the planes in place
    /// (`shifted.rs`).
    Wide {
        /// Which passes run on channel blocks (`blocked.rs`) instead of the shifted kernel.
        blocked: BlockedPasses,
        /// Which passes use the shifted kernel.
        shifted: ShiftedPasses,
        /// Which passes use Winograd's F(2x2, 3x3) (`winograd.rs`) instead; the shifted
        /// kernel or im2col computes any image holding an infinity or NaN.
        winograd: WinogradPasses,
    },
}

/// Channels in and out below which Winograd's transforms cost more than they save.
const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Output tiles per call below which Winograd's filter transform (once per call, `(m + 2)²/9`
/// times the weight's size) costs more than its products save. A single image on two threads
/// of a Zen 4, against the shifted kernel: 512 channels at 7x7 (16 tiles of F(2x2, 3x3)) 0.58x
/// forward and 0.75x backward-data; 256 at 14x14 (49 tiles) 1.3x; 128 at 28x28 (49 tiles of
/// F(4x4, 3x3)) 2.4x forward; 64 at 56x56 1.9x and 2.2x.
const WINOGRAD_MIN_TILES: usize = 32;

/// Which passes of a [`ConvPath::Wide`] convolution use Winograd's F(2x2, 3x3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WinogradPasses {
    /// Forward.
    pub forward: bool,
    /// Backward-data (padding at most 2 on each side).
    pub backward_data: bool,
    /// The filter gradient, channels innermost (every thread with images of its own, as the
    /// forward).
    pub backward_filter: bool,
}

/// Which passes of a [`ConvPath::Wide`] convolution run on channel blocks, channels in the
/// vector lanes (AVX-512).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BlockedPasses {
    /// Forward: output channels in the lanes.
    pub forward: bool,
    /// Backward-data: input channels in the lanes, a column phase of an input row at a time.
    pub backward_data: bool,
}

/// Which passes of a [`ConvPath::Wide`] convolution read the padded planes in place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ShiftedPasses {
    /// Forward, at any stride.
    pub forward: bool,
    /// Backward-data (a gather per phase plane over the zero-extended output gradient).
    pub backward_data: bool,
    /// The filter gradient (when every thread has images of its own).
    pub backward_filter: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logged_choice_names_the_shape_and_each_pass() {
        let spec = Conv2dSpec {
            stride: [2, 2],
            padding: Padding2d::symmetric(1, 1),
            ..Default::default()
        };
        let shape = Conv2dShape::new(&[8, 64, 56, 56], &[128, 64, 3, 3], spec);
        let line = shape.describe_choice();
        assert!(
            line.starts_with("conv2d [8, 64, 56, 56] * [128, 64, 3, 3] stride [2, 2]"),
            "{line}"
        );
        assert!(line.contains(crate::kernels::instruction_set()), "{line}");
        for pass in ["forward ", "backward-data ", "filter gradient "] {
            assert!(line.contains(pass), "{line}");
        }
        let depthwise = Conv2dShape::new(
            &[1, 4, 8, 8],
            &[4, 1, 3, 3],
            Conv2dSpec {
                groups: 4,
                ..Default::default()
            },
        );
        assert!(
            depthwise
                .describe_choice()
                .ends_with("every pass direct (per-plane multiply-adds)")
        );
    }
}
