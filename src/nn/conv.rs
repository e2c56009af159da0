//! `Conv2d`: a 2-D convolution layer.

use rand::Rng;

use super::{BatchNorm, Graph, Module, Op, ValueId};
use crate::autograd::{Param, Var};
use crate::kernels::conv::{Conv2dSpec, ConvActivation, Padding2d};
use crate::kernels::pool::Pool2dSpec;
use crate::tensor::check::contract_violation;
use crate::tensor::init::{pytorch_default_bias, pytorch_default_weight};

/// How a convolution pads its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Zero rows and columns on each side, possibly asymmetric.
    Explicit(Padding2d),
    /// Keep the spatial size (stride 1 only), PyTorch's `padding="same"`: any odd extra row or
    /// column goes to the bottom or right.
    Same,
    /// No padding, PyTorch's `padding="valid"`.
    Valid,
}

impl From<usize> for Padding {
    fn from(p: usize) -> Padding {
        Padding::Explicit(Padding2d::symmetric(p, p))
    }
}

impl From<[usize; 2]> for Padding {
    fn from([h, w]: [usize; 2]) -> Padding {
        Padding::Explicit(Padding2d::symmetric(h, w))
    }
}

impl From<Padding2d> for Padding {
    fn from(p: Padding2d) -> Padding {
        Padding::Explicit(p)
    }
}

/// A size given for both spatial axes (`3`) or per axis (`[3, 5]`), as PyTorch's int-or-tuple
/// arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair(pub [usize; 2]);

impl From<usize> for Pair {
    fn from(v: usize) -> Pair {
        Pair([v, v])
    }
}

impl From<[usize; 2]> for Pair {
    fn from(v: [usize; 2]) -> Pair {
        Pair(v)
    }
}

/// The options of a [`Conv2d`], with PyTorch's names and defaults (stride 1, no padding,
/// dilation 1, groups 1, bias on). Set them builder-style, then [`Conv2dConfig::init`].
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::nn::{Conv2dConfig, Module, Padding};
///
/// let conv = Conv2dConfig::new(64, 128, 3).stride(2).padding(1).bias(false).init(&mut StdRng::seed_from_u64(0));
/// assert_eq!(conv.num_params(), 128 * 64 * 9);
/// let depthwise = Conv2dConfig::new(32, 32, 3).padding(Padding::Same).groups(32).init(&mut StdRng::seed_from_u64(0));
/// assert_eq!(depthwise.weight.shape(), &[32, 1, 3, 3]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Channels of the input.
    pub in_channels: usize,
    /// Channels of the output (number of filters).
    pub out_channels: usize,
    /// Kernel `[height, width]`.
    pub kernel_size: [usize; 2],
    /// Step `[height, width]`.
    pub stride: [usize; 2],
    /// Zero padding.
    pub padding: Padding,
    /// Spacing between kernel taps `[height, width]`.
    pub dilation: [usize; 2],
    /// Channel groups (`groups == in_channels` makes a depthwise convolution).
    pub groups: usize,
    /// Whether the layer adds a learned bias.
    pub bias: bool,
}

impl Conv2dConfig {
    /// PyTorch's defaults for the given sizes.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: impl Into<Pair>,
    ) -> Conv2dConfig {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel_size: kernel_size.into().0,
            stride: [1, 1],
            padding: Padding::Valid,
            dilation: [1, 1],
            groups: 1,
            bias: true,
        }
    }

    /// Sets the stride.
    pub fn stride(mut self, stride: impl Into<Pair>) -> Self {
        self.stride = stride.into().0;
        self
    }

    /// Sets the padding (`1`, `[1, 2]`, a [`Padding2d`], or [`Padding::Same`]).
    pub fn padding(mut self, padding: impl Into<Padding>) -> Self {
        self.padding = padding.into();
        self
    }

    /// Sets the dilation.
    pub fn dilation(mut self, dilation: impl Into<Pair>) -> Self {
        self.dilation = dilation.into().0;
        self
    }

    /// Sets the number of channel groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Turns the bias on or off.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// The kernel-level spec, resolving `Same` and `Valid`.
    ///
    /// # Panics
    ///
    /// If `Same` padding is asked for with a stride other than 1 (as PyTorch), or a size is 0.
    pub fn spec(&self) -> Conv2dSpec {
        if self.groups == 0
            || !self.in_channels.is_multiple_of(self.groups)
            || !self.out_channels.is_multiple_of(self.groups)
        {
            contract_violation(
                "Conv2d",
                "in_channels and out_channels must divide by groups",
                format_args!(
                    "in {}, out {}, groups {}",
                    self.in_channels, self.out_channels, self.groups
                ),
            );
        }
        if self.kernel_size.contains(&0) || self.stride.contains(&0) || self.dilation.contains(&0) {
            contract_violation(
                "Conv2d",
                "kernel_size, stride and dilation must be positive",
                format_args!("{self:?}"),
            );
        }
        let padding = match self.padding {
            Padding::Explicit(p) => p,
            Padding::Valid => Padding2d::default(),
            Padding::Same if self.stride != [1, 1] => contract_violation(
                "Conv2d",
                "padding Same needs stride 1",
                format_args!("stride {:?}", self.stride),
            ),
            Padding::Same => Padding2d::same(self.kernel_size, self.dilation),
        };
        Conv2dSpec {
            stride: self.stride,
            padding,
            dilation: self.dilation,
            groups: self.groups,
        }
    }

    /// Builds the layer with PyTorch's default initialisation.
    ///
    /// # Panics
    ///
    /// As [`Conv2dConfig::spec`].
    pub fn init<R: Rng + ?Sized>(self, rng: &mut R) -> Conv2d {
        let spec = self.spec();
        let shape = [
            self.out_channels,
            self.in_channels / self.groups,
            self.kernel_size[0],
            self.kernel_size[1],
        ];
        let weight = Param::new("weight", pytorch_default_weight(&shape, rng));
        let bias = self
            .bias
            .then(|| Param::new("bias", pytorch_default_bias(self.out_channels, &shape, rng)));
        Conv2d {
            weight,
            bias,
            config: self,
            spec,
        }
    }
}

/// A 2-D convolution layer (PyTorch's `nn.Conv2d`): weight `[out, in/groups, KH, KW]`, optional
/// bias `[out]`, initialised as PyTorch does.
///
/// # Shapes
///
/// Input `[N, in_channels, H, W]`, output `[N, out_channels, OH, OW]`.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::nn::{Conv2d, Module};
/// use striate::Tensor;
///
/// let conv = Conv2d::new(1, 32, 3, &mut StdRng::seed_from_u64(0));
/// assert_eq!(conv.predict(&Tensor::zeros(&[8, 1, 28, 28])).shape(), &[8, 32, 26, 26]);
/// ```
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// `[out_channels, in_channels / groups, KH, KW]`.
    pub weight: Param,
    /// `[out_channels]`, absent when built with `bias(false)`.
    pub bias: Option<Param>,
    config: Conv2dConfig,
    spec: Conv2dSpec,
}

impl Conv2d {
    /// A convolution with PyTorch's defaults (stride 1, no padding, bias); use
    /// [`Conv2dConfig`] for other options.
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel_size: impl Into<Pair>,
        rng: &mut R,
    ) -> Conv2d {
        Conv2dConfig::new(in_channels, out_channels, kernel_size).init(rng)
    }

    /// The options the layer was built with.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }
}

impl Conv2d {
    fn forward_with<'t>(&self, input: Var<'t>, activation: ConvActivation) -> Var<'t> {
        let tape = input.tape();
        let bias = self.bias.as_ref().map(|b| tape.param(b));
        input.conv2d_activated(tape.param(&self.weight), bias, self.spec, activation)
    }
}

impl Module for Conv2d {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        self.forward_with(input, ConvActivation::Identity)
    }

    fn forward_then_relu<'t>(&self, input: Var<'t>) -> Option<Var<'t>> {
        Some(self.forward_with(input, ConvActivation::Relu))
    }

    fn forward_then_relu_max_pool<'t>(&self, input: Var<'t>, pool: Pool2dSpec) -> Option<Var<'t>> {
        let tape = input.tape();
        let bias = self.bias.as_ref().map(|b| tape.param(b));
        Some(input.conv2d_relu_max_pool2d(tape.param(&self.weight), bias, self.spec, pool))
    }

    /// On an inference tape, one convolution with `bn` folded into the weight and bias
    /// ([`BatchNorm`]'s running statistics, kept folded until a parameter or the statistics
    /// change) and the ReLU in its epilogue. Elsewhere `None`: a gradient may be asked of the
    /// separate ops, or anomaly detection expects their values.
    fn forward_then_batch_norm<'t>(
        &self,
        input: Var<'t>,
        bn: &BatchNorm,
        relu: bool,
    ) -> Option<Var<'t>> {
        let tape = input.tape();
        if !tape.fuses_for_inference() {
            return None;
        }
        let folded = bn.folded_into(&self.weight, self.bias.as_ref())?;
        let weight = tape.derived_param(self.weight.id(), folded.version, folded.weight.clone());
        let bias = tape.input(folded.bias.clone());
        let activation = if relu {
            ConvActivation::Relu
        } else {
            ConvActivation::Identity
        };
        Some(input.conv2d_activated(weight, Some(bias), self.spec, activation))
    }

    fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
        visitor("weight", &self.weight);
        if let Some(bias) = &self.bias {
            visitor("bias", bias);
        }
    }

    fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
        visitor("weight", &mut self.weight);
        if let Some(bias) = &mut self.bias {
            visitor("bias", bias);
        }
    }

    fn describe(&self) -> String {
        let c = &self.config;
        let mut text = format!(
            "Conv2d({}, {}, kernel_size={:?}",
            c.in_channels, c.out_channels, c.kernel_size
        );
        if c.stride != [1, 1] {
            text += &format!(", stride={:?}", c.stride);
        }
        let p = self.spec.padding;
        if p != Padding2d::default() {
            if p.top == p.bottom && p.left == p.right {
                text += &format!(", padding=[{}, {}]", p.top, p.left);
            } else {
                text += &format!(", padding={p:?}");
            }
        }
        if c.dilation != [1, 1] {
            text += &format!(", dilation={:?}", c.dilation);
        }
        if c.groups != 1 {
            text += &format!(", groups={}", c.groups);
        }
        if !c.bias {
            text += ", bias=false";
        }
        text + ")"
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        let mut inputs = vec![input, graph.param("weight", &self.weight)];
        if let Some(bias) = &self.bias {
            inputs.push(graph.param("bias", bias));
        }
        Ok(graph.layer(self, Op::Conv2d(self.spec), &inputs))
    }
}
