//! `conv2d`: 2-D convolution (cross-correlation, as PyTorch) on NCHW values with OIHW weights.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::kernels::conv::{
    Conv2dShape, Conv2dSpec, ConvActivation, ConvInput, Padding2d, conv2d_backward_data_to_vec,
    conv2d_backward_filter, conv2d_forward_blocks_prepared, conv2d_forward_prepared,
    conv2d_relu_max_pool2d_pass, forward_runs_on_blocks, forward_starts_blocks,
};
use crate::kernels::mask_relu_gradient;
use crate::kernels::pool::{Pool2dShape, Pool2dSpec, max_pool2d_backward_to_vec};
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, shape_str};

#[derive(Debug)]
struct Conv2dBackward {
    input: Tensor,
    weight: Tensor,
    shape: Conv2dShape,
    after: AfterConv,
}

/// What the recorded op applied to the convolution's output, and what of it the backward pass
/// needs to turn the op's output gradient into the convolution's.
#[derive(Debug)]
enum AfterConv {
    Nothing,
    /// ReLU, with its output.
    Relu(Tensor),
    /// ReLU then max pooling: the pooled values (the ReLU's output at each window's argmax)
    /// and the argmax indices; the full-size activation is not kept.
    ReluMaxPool {
        pooled: Tensor,
        indices: Vec<u32>,
        pool: Pool2dShape,
    },
}

impl AfterConv {
    /// The gradient with respect to the convolution's output.
    fn conv_output_gradient(&self, grad_output: Tensor) -> Tensor {
        // ReLU: dY where y > 0 (passing at NaN, as the unfused relu), 0 elsewhere
        let relu_mask = |grad: Tensor, y: &Tensor| mask_relu_gradient(grad, y.as_slice());
        match self {
            AfterConv::Nothing => grad_output,
            AfterConv::Relu(output) => relu_mask(grad_output, output),
            AfterConv::ReluMaxPool {
                pooled,
                indices,
                pool,
            } => {
                // Each window's gradient goes to its argmax, through the ReLU there: masked
                // by the pooled value, which is the ReLU's output at the argmax.
                let grad = relu_mask(grad_output, pooled);
                let gx = max_pool2d_backward_to_vec(grad.as_slice(), indices, pool);
                let shape = [pool.batch, pool.channels, pool.in_height, pool.in_width];
                Tensor::from_vec(gx, &shape).expect("convolution output shape")
            }
        }
    }
}

impl Backward for Conv2dBackward {
    fn backward(&self, grad_output: Tensor, needs_grad: &[bool]) -> Vec<Option<Tensor>> {
        let grad_output = self.after.conv_output_gradient(grad_output);
        // dX = convᵀ(dY, W); dW = Σ_n dY_n · im2col(X_n)ᵀ; db = Σ_(n,p) dY
        let s = &self.shape;
        let grad_input = needs_grad[0].then(|| {
            let gx = conv2d_backward_data_to_vec(grad_output.as_slice(), self.weight.as_slice(), s);
            Tensor::from_vec(gx, self.input.shape()).expect("input shape")
        });
        let needs_bias = needs_grad.get(2).copied().unwrap_or(false);
        let (grad_weight, grad_bias) = if needs_grad[1] || needs_bias {
            let mut gw = vec![0.0; self.weight.len()];
            let mut gb = vec![0.0; s.out_channels];
            conv2d_backward_filter(
                self.input.as_slice(),
                grad_output.as_slice(),
                s,
                &mut gw,
                needs_bias.then_some(&mut gb[..]),
            );
            (
                needs_grad[1]
                    .then(|| Tensor::from_vec(gw, self.weight.shape()).expect("weight shape")),
                needs_bias.then(|| Tensor::from_vec(gb, &[s.out_channels]).expect("bias shape")),
            )
        } else {
            (None, None)
        };
        let mut grads = vec![grad_input, grad_weight];
        if needs_grad.len() == 3 {
            grads.push(grad_bias);
        }
        grads
    }
}

impl<'t> Var<'t> {
    /// 2-D convolution of `[N, C, H, W]` with weight `[O, C/groups, KH, KW]` and an optional
    /// bias `[O]`, as `torch.nn.functional.conv2d`.
    ///
    /// The backward pass computes only the gradients that are needed: the input gradient of a
    /// first layer (whose input is data) or of a frozen backbone's input is skipped.
    ///
    /// # Shapes
    ///
    /// Output `[N, O, OH, OW]` with `OH = (H + top + bottom − dilation·(KH − 1) − 1) / stride + 1`
    /// (and likewise for the width).
    ///
    /// # Panics
    ///
    /// If the shapes break the contract of [`Conv2dShape::new`], or the bias is not `[O]`.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::nn::functional::{Conv2dSpec, Padding2d};
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let images = tape.input(Tensor::ones(&[2, 3, 8, 8]));
    /// let weight = tape.input(Tensor::ones(&[16, 3, 3, 3]));
    /// let spec = Conv2dSpec { padding: Padding2d::symmetric(1, 1), ..Default::default() };
    /// let y = images.conv2d(weight, None, spec);
    /// assert_eq!(y.shape(), vec![2, 16, 8, 8]);
    /// assert_eq!(y.value().as_slice()[9], 27.0); // an interior pixel sums 3·3·3 ones
    /// ```
    pub fn conv2d(self, weight: Var<'t>, bias: Option<Var<'t>>, spec: Conv2dSpec) -> Var<'t> {
        self.conv2d_activated(weight, bias, spec, ConvActivation::Identity)
    }

    /// [`Var::conv2d`] followed by an activation, in one pass: `relu(conv2d(x, w) + b)` without
    /// materialising the pre-activation (what [`Sequential`](crate::nn::Sequential) runs for a
    /// `Conv2d` followed by a `Relu`).
    ///
    /// # Panics
    ///
    /// As [`Var::conv2d`].
    pub fn conv2d_activated(
        self,
        weight: Var<'t>,
        bias: Option<Var<'t>>,
        spec: Conv2dSpec,
        activation: ConvActivation,
    ) -> Var<'t> {
        if let Some(output) = self.conv2d_on_blocks(weight, bias, spec, activation) {
            return output;
        }
        let (input, weight_value, bias_value, shape) = conv_operands(self, weight, bias, spec);
        let output = conv2d_forward_prepared(
            input.as_slice(),
            weight_value.as_slice(),
            weight.frozen_weight(),
            bias_value.as_ref().map(|b| b.as_slice()),
            activation,
            &shape,
        );
        let value = Tensor::from_vec(output, &shape.output_shape()).expect("output shape");
        let after = match activation {
            ConvActivation::Relu => AfterConv::Relu(value.clone()),
            ConvActivation::Identity => AfterConv::Nothing,
        };
        self.tape().record(
            value,
            &conv_inputs(self, weight, bias),
            Conv2dBackward {
                input,
                weight: weight_value,
                shape,
                after,
            },
        )
    }

    /// `conv2d_activated(weight, bias, spec, Relu).max_pool2d(pool)`, the block a
    /// [`Sequential`](crate::nn::Sequential) runs for `Conv2d`, `Relu`, `MaxPool2d`: one pass
    /// per image (or group of images) that keeps the convolution's output in cache and writes
    /// only the pooled planes, plus each window's argmax when an input needs a gradient. The
    /// backward pass sends each window's gradient to its argmax where the pooled value passes
    /// ReLU's gradient, then runs the convolution's backward; the full-size activation is never
    /// stored. Values and gradients are those of the three ops.
    ///
    /// # Panics
    ///
    /// As [`Var::conv2d`] and [`Var::max_pool2d`].
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::nn::functional::{Conv2dSpec, Pool2dSpec};
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let x = tape.input(Tensor::from_vec(vec![1.0, -5.0, 3.0, 2.0], &[1, 1, 2, 2]).unwrap());
    /// let w = tape.input(Tensor::from_vec(vec![-1.0], &[1, 1, 1, 1]).unwrap());
    /// let y = x.conv2d_relu_max_pool2d(w, None, Conv2dSpec::default(), Pool2dSpec::square(2));
    /// assert_eq!(y.value().as_slice(), &[5.0]);
    /// ```
    pub fn conv2d_relu_max_pool2d(
        self,
        weight: Var<'t>,
        bias: Option<Var<'t>>,
        spec: Conv2dSpec,
        pool: Pool2dSpec,
    ) -> Var<'t> {
        let inputs = conv_inputs(self, weight, bias);
        let (input, weight_value, bias_value, shape) = conv_operands(self, weight, bias, spec);
        let pool_shape = Pool2dShape::new("max_pool2d", &shape.output_shape(), pool);
        let training = inputs.iter().any(|v| v.requires_grad());
        // Argmax indices only when a backward pass will read them.
        let (output, indices) = conv2d_relu_max_pool2d_pass(
            input.as_slice(),
            weight_value.as_slice(),
            weight.frozen_weight(),
            bias_value.as_ref().map(|b| b.as_slice()),
            &shape,
            pool,
            training,
        );
        let value = Tensor::from_vec(output, &pool_shape.output_shape()).expect("pooled shape");
        if !training {
            return self
                .tape()
                .record(value, &inputs, Conv2dReluMaxPool2dInference);
        }
        let after = AfterConv::ReluMaxPool {
            pooled: value.clone(),
            indices,
            pool: pool_shape,
        };
        self.tape().record(
            value,
            &inputs,
            Conv2dBackward {
                input,
                weight: weight_value,
                shape,
                after,
            },
        )
    }
}

impl<'t> Var<'t> {
    /// The convolution into channel blocks, kept for the next layer, where the tape keeps
    /// them ([`Tape::keeps_blocks`](crate::Tape)) and the shape's forward runs on them; the
    /// input is read as blocks if it is kept so, otherwise as planes. `None` elsewhere.
    fn conv2d_on_blocks(
        self,
        weight: Var<'t>,
        bias: Option<Var<'t>>,
        spec: Conv2dSpec,
        activation: ConvActivation,
    ) -> Option<Var<'t>> {
        let tape = self.tape();
        if !tape.keeps_blocks() {
            return None;
        }
        let (weight_value, bias_value, shape) = weight_operands(&self.shape(), weight, bias, spec);
        if !forward_runs_on_blocks(&shape) {
            return None;
        }
        let blocks = tape.blocks(self.node());
        if blocks.is_none() && !(forward_starts_blocks(&shape) && next_reads_blocks(&shape)) {
            return None;
        }
        let planes = blocks.is_none().then(|| self.value());
        let input = match (&blocks, &planes) {
            (Some(blocks), _) => ConvInput::Blocks(blocks),
            (None, Some(planes)) => ConvInput::Planes(planes.as_slice()),
            (None, None) => unreachable!("the input is blocks or planes"),
        };
        let output = conv2d_forward_blocks_prepared(
            input,
            weight_value.as_slice(),
            weight.frozen_weight(),
            bias_value.as_ref().map(|b| b.as_slice()),
            activation,
            &shape,
            KEPT_BORDER,
        );
        Some(tape.record_blocks(output))
    }
}

/// Whether the layer that typically follows a convolution of shape `s` (in ResNet and VGG: a
/// 3x3 convolution of as many channels, at stride 1) runs on channel blocks, so that keeping
/// `s`'s output in blocks saves conversions rather than adding one. (Where it does not, a
/// Winograd layer, the tiles of `s` transpose their outputs to NCHW while they are in cache;
/// a separate conversion would cost ResNet-18's inference 2%.)
fn next_reads_blocks(s: &Conv2dShape) -> bool {
    let [n, o, h, w] = s.output_shape();
    let spec = Conv2dSpec {
        padding: Padding2d::symmetric(1, 1),
        ..Default::default()
    };
    forward_runs_on_blocks(&Conv2dShape::new(&[n, o, h, w], &[o, o, 3, 3], spec))
}

/// The border of the channel blocks a convolution keeps: one pixel, a 3x3 kernel's padding,
/// so that the next such convolution reads them in place.
const KEPT_BORDER: usize = 1;

fn conv_operands<'t>(
    input: Var<'t>,
    weight: Var<'t>,
    bias: Option<Var<'t>>,
    spec: Conv2dSpec,
) -> (Tensor, Tensor, Option<Tensor>, Conv2dShape) {
    let input = input.value();
    let (weight_value, bias_value, shape) = weight_operands(input.shape(), weight, bias, spec);
    (input, weight_value, bias_value, shape)
}

/// The weight and bias of a convolution of an input of `input_shape`, and its shape (checked).
fn weight_operands(
    input_shape: &[usize],
    weight: Var<'_>,
    bias: Option<Var<'_>>,
    spec: Conv2dSpec,
) -> (Tensor, Option<Tensor>, Conv2dShape) {
    let weight_value = weight.value();
    let shape = Conv2dShape::new(input_shape, weight_value.shape(), spec);
    let bias_value = bias.map(|b| b.value());
    if let Some(b) = &bias_value
        && b.shape() != [shape.out_channels]
    {
        contract_violation(
            "conv2d",
            format_args!("bias must be [{}]", shape.out_channels),
            format_args!(
                "bias {}, weight {}",
                shape_str(b.shape()),
                shape_str(weight_value.shape())
            ),
        );
    }
    (weight_value, bias_value, shape)
}

/// The tape inputs of a convolution, in the order its backward returns gradients.
fn conv_inputs<'t>(input: Var<'t>, weight: Var<'t>, bias: Option<Var<'t>>) -> Vec<Var<'t>> {
    [Some(input), Some(weight), bias]
        .into_iter()
        .flatten()
        .collect()
}

/// The record of the fused inference block: taken only when no input needs a gradient, so the
/// tape never calls it.
#[derive(Debug)]
struct Conv2dReluMaxPool2dInference;

impl Backward for Conv2dReluMaxPool2dInference {
    fn backward(&self, _: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        unreachable!("the fused inference block is recorded only when no input needs a gradient")
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::kernels::conv::{Conv2dSpec, Padding2d};
    use crate::{Tape, Tensor, gradcheck};

    #[test]
    fn value_and_gradients_by_hand() {
        // 1x1x2x2 input, 1x1x2x2 kernel, no padding: one output = Σ x·w
        let tape = Tape::training();
        let x = tape.variable(tm(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]));
        let w = tape.variable(tm(&[0.5, -1.0, 2.0, 0.0], &[1, 1, 2, 2]));
        let b = tape.variable(tm(&[10.0], &[1]));
        let y = x.conv2d(w, Some(b), Conv2dSpec::default());
        assert_eq!(y.value().as_slice(), &[0.5 - 2.0 + 6.0 + 10.0]);
        let grads = y.sum().backward();
        assert_eq!(grads.wrt(x).unwrap().as_slice(), &[0.5, -1.0, 2.0, 0.0]);
        assert_eq!(grads.wrt(w).unwrap().as_slice(), &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(grads.wrt(b).unwrap().as_slice(), &[1.0]);
    }

    fn check(input: [usize; 4], weight: [usize; 4], spec: Conv2dSpec, seed: u64) {
        let inputs = [
            rand_tensor(&input, seed),
            rand_tensor(&weight, seed + 1),
            rand_tensor(&[weight[0]], seed + 2),
        ];
        gradcheck(&inputs, |v| v[0].conv2d(v[1], Some(v[2]), spec)).assert_passed();
    }

    #[test]
    fn gradcheck_over_stride_padding_dilation_groups() {
        let pad = |t, b, l, r| Padding2d {
            top: t,
            bottom: b,
            left: l,
            right: r,
        };
        let spec = |stride: [usize; 2], padding, dilation: [usize; 2], groups| Conv2dSpec {
            stride,
            padding,
            dilation,
            groups,
        };
        check(
            [2, 3, 5, 5],
            [4, 3, 3, 3],
            spec([1, 1], pad(1, 1, 1, 1), [1, 1], 1),
            40,
        );
        check(
            [1, 2, 7, 6],
            [3, 2, 3, 2],
            spec([2, 3], pad(1, 0, 2, 1), [1, 1], 1),
            41,
        );
        check(
            [2, 2, 7, 7],
            [2, 2, 2, 3],
            spec([1, 2], pad(0, 1, 1, 0), [2, 2], 1),
            42,
        );
        check(
            [1, 4, 5, 6],
            [6, 2, 3, 3],
            spec([1, 1], pad(1, 1, 1, 1), [1, 1], 2),
            43,
        );
        // depthwise with a channel multiplier, and a single input channel
        check(
            [2, 3, 6, 5],
            [6, 1, 3, 3],
            spec([2, 1], pad(1, 1, 1, 1), [1, 1], 3),
            44,
        );
        check(
            [2, 1, 5, 5],
            [3, 1, 3, 3],
            spec([1, 1], pad(1, 1, 1, 1), [1, 1], 1),
            45,
        );
        // pointwise; batch 1 with C == H == W
        check([2, 3, 4, 3], [5, 3, 1, 1], Conv2dSpec::default(), 46);
        check(
            [1, 4, 4, 4],
            [2, 4, 3, 3],
            spec([1, 1], pad(1, 1, 1, 1), [1, 1], 1),
            47,
        );
    }

    #[test]
    fn fused_relu_matches_conv_then_relu() {
        use crate::kernels::conv::ConvActivation;
        let spec = Conv2dSpec {
            padding: Padding2d::symmetric(1, 1),
            ..Default::default()
        };
        let inputs = [
            rand_tensor(&[2, 3, 5, 4], 48),
            rand_tensor(&[4, 3, 3, 3], 49),
            rand_tensor(&[4], 50),
        ];
        // Same values and the same gradients as the separate ops (a finite-difference check
        // would straddle ReLU's kink at outputs near zero).
        let run = |fused: bool| {
            let tape = Tape::training();
            let v: Vec<_> = inputs.iter().map(|t| tape.variable(t.clone())).collect();
            let y = if fused {
                v[0].conv2d_activated(v[1], Some(v[2]), spec, ConvActivation::Relu)
            } else {
                v[0].conv2d(v[1], Some(v[2]), spec).relu()
            };
            let value = y.value();
            let r = tape.input(rand_tensor(value.shape(), 51));
            let grads = (y * r).sum().backward();
            let grads: Vec<_> = v.iter().map(|&x| grads.wrt(x).unwrap().clone()).collect();
            (value, grads)
        };
        let (fused, separate) = (run(true), run(false));
        assert_eq!(fused.0, separate.0);
        for (a, b) in fused.1.iter().zip(&separate.1) {
            assert!(a.all_close(b, 1e-6, 1e-6));
        }
    }

    #[test]
    fn fused_relu_max_pool_matches_the_three_ops_in_training() {
        use crate::kernels::pool::Pool2dSpec;
        let same = |a: &Tensor, b: &Tensor| {
            a.shape() == b.shape()
                && a.as_slice()
                    .iter()
                    .zip(b.as_slice())
                    .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
        };
        let padded = Conv2dSpec {
            padding: Padding2d::symmetric(1, 1),
            ..Default::default()
        };
        let overlapping = Pool2dSpec {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
            dilation: [1, 1],
            ceil_mode: false,
        };
        // An odd height (the last row is in no window), Winograd's shape (16 channels each
        // side), overlapping windows; a NaN in one image; a channel whose bias keeps every
        // ReLU output at zero (all windows tie at 0 and pass no gradient).
        let cases = [
            ([2, 3, 9, 8], [4, 3, 3, 3], Pool2dSpec::square(2)),
            ([3, 16, 8, 10], [16, 16, 3, 3], Pool2dSpec::square(2)),
            ([2, 3, 7, 7], [5, 3, 3, 3], overlapping),
        ];
        for (seed, (input, weight, pool)) in cases.into_iter().enumerate() {
            let seed = 60 + 3 * seed as u64;
            let mut x = rand_tensor(&input, seed);
            x.as_slice_mut()[5] = f32::NAN;
            let w = rand_tensor(&weight, seed + 1);
            let mut b = rand_tensor(&[weight[0]], seed + 2);
            b.as_slice_mut()[1] = -100.0;
            let run = |fused: bool| {
                let tape = Tape::training();
                let v: Vec<_> = [&x, &w, &b]
                    .iter()
                    .map(|t| tape.variable((*t).clone()))
                    .collect();
                let y = if fused {
                    v[0].conv2d_relu_max_pool2d(v[1], Some(v[2]), padded, pool)
                } else {
                    v[0].conv2d(v[1], Some(v[2]), padded)
                        .relu()
                        .max_pool2d(pool)
                };
                let value = y.value();
                let r = tape.input(rand_tensor(value.shape(), seed + 3));
                let grads = (y * r).sum().backward();
                let grads: Vec<_> = v.iter().map(|&t| grads.wrt(t).unwrap().clone()).collect();
                (value, grads)
            };
            let (fused, separate) = (run(true), run(false));
            assert!(same(&fused.0, &separate.0), "values of case {seed}");
            for (a, b) in fused.1.iter().zip(&separate.1) {
                assert!(same(a, b), "gradients of case {seed}");
            }
        }
    }

    #[test]
    fn first_layer_input_gradient_is_skipped() {
        let tape = Tape::training();
        let x = tape.input(rand_tensor(&[1, 1, 4, 4], 1));
        let w = tape.variable(rand_tensor(&[2, 1, 3, 3], 2));
        let grads = x.conv2d(w, None, Conv2dSpec::default()).sum().backward();
        assert!(grads.wrt(x).is_none());
        assert_eq!(grads.wrt(w).unwrap().shape(), &[2, 1, 3, 3]);
    }

    #[test]
    #[should_panic(
        expected = "conv2d: input channels 3 != weight in_channels 1 x groups 1 (input [64, 3, 28, 28], weight [32, 1, 3, 3])"
    )]
    fn rejects_channel_mismatch() {
        let tape = Tape::training();
        let x = tape.input(Tensor::zeros(&[64, 3, 28, 28]));
        x.conv2d(
            tape.input(Tensor::zeros(&[32, 1, 3, 3])),
            None,
            Conv2dSpec::default(),
        );
    }
}
