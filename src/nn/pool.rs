//! Pooling layers: `MaxPool2d`, `AvgPool2d`, `AdaptiveAvgPool2d`, `AdaptiveMaxPool2d`,
//! `GlobalAvgPool2d`, `GlobalMaxPool2d`.

use super::conv::Pair;
use super::{Graph, Module, Op, ValueId, no_params};
use crate::autograd::Var;
use crate::kernels::pool::{AvgDivisor, Pool2dSpec};

/// Max pooling over `kernel_size` windows (PyTorch's `nn.MaxPool2d`). The stride defaults to
/// the kernel size; padding counts as `-inf`.
///
/// # Shapes
///
/// Input `[N, C, H, W]`, output `[N, C, OH, OW]`.
///
/// # Examples
///
/// ```
/// use striate::nn::{MaxPool2d, Module};
/// use striate::Tensor;
///
/// let pool = MaxPool2d::new(2);
/// assert_eq!(pool.predict(&Tensor::zeros(&[1, 3, 28, 28])).shape(), &[1, 3, 14, 14]);
/// let overlapping = MaxPool2d::new(3).stride(2).padding(1); // ResNet's stem
/// assert_eq!(overlapping.predict(&Tensor::zeros(&[1, 3, 112, 112])).shape(), &[1, 3, 56, 56]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    /// The window.
    pub spec: Pool2dSpec,
}

impl MaxPool2d {
    /// A `kernel_size` window stepping by its own size.
    pub fn new(kernel_size: impl Into<Pair>) -> MaxPool2d {
        let kernel = kernel_size.into().0;
        MaxPool2d {
            spec: Pool2dSpec {
                kernel,
                stride: kernel,
                padding: [0, 0],
                dilation: [1, 1],
                ceil_mode: false,
            },
        }
    }

    /// Sets the stride.
    pub fn stride(mut self, stride: impl Into<Pair>) -> Self {
        self.spec.stride = stride.into().0;
        self
    }

    /// Sets the padding (at most half the kernel).
    pub fn padding(mut self, padding: impl Into<Pair>) -> Self {
        self.spec.padding = padding.into().0;
        self
    }

    /// Sets the dilation.
    pub fn dilation(mut self, dilation: impl Into<Pair>) -> Self {
        self.spec.dilation = dilation.into().0;
        self
    }

    /// Rounds the output size up rather than down.
    pub fn ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.spec.ceil_mode = ceil_mode;
        self
    }
}

impl Module for MaxPool2d {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.max_pool2d(self.spec)
    }

    fn max_pool_window(&self) -> Option<Pool2dSpec> {
        Some(self.spec)
    }

    fn describe(&self) -> String {
        describe_pool("MaxPool2d", &self.spec)
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::MaxPool2d(self.spec), &[input]))
    }
}

fn describe_pool(name: &str, spec: &Pool2dSpec) -> String {
    let mut text = format!("{name}(kernel_size={:?}", spec.kernel);
    if spec.stride != spec.kernel {
        text += &format!(", stride={:?}", spec.stride);
    }
    if spec.padding != [0, 0] {
        text += &format!(", padding={:?}", spec.padding);
    }
    if spec.dilation != [1, 1] {
        text += &format!(", dilation={:?}", spec.dilation);
    }
    if spec.ceil_mode {
        text += ", ceil_mode=true";
    }
    text + ")"
}

/// Average pooling over `kernel_size` windows (PyTorch's `nn.AvgPool2d`). The stride defaults
/// to the kernel size; padding counts as zeros and, by default, in the divisor.
///
/// # Shapes
///
/// Input `[N, C, H, W]`, output `[N, C, OH, OW]`.
///
/// # Examples
///
/// ```
/// use striate::nn::{AvgPool2d, Module};
/// use striate::Tensor;
///
/// let pool = AvgPool2d::new(2);
/// assert_eq!(pool.predict(&Tensor::ones(&[1, 1, 4, 4])).as_slice(), &[1.0; 4]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool2d {
    /// The window (dilation stays 1).
    pub spec: Pool2dSpec,
    /// Whether padding counts in the divisor.
    pub divisor: AvgDivisor,
}

impl AvgPool2d {
    /// A `kernel_size` window stepping by its own size.
    pub fn new(kernel_size: impl Into<Pair>) -> AvgPool2d {
        AvgPool2d {
            spec: MaxPool2d::new(kernel_size).spec,
            divisor: AvgDivisor::IncludePadding,
        }
    }

    /// Sets the stride.
    pub fn stride(mut self, stride: impl Into<Pair>) -> Self {
        self.spec.stride = stride.into().0;
        self
    }

    /// Sets the padding (at most half the kernel).
    pub fn padding(mut self, padding: impl Into<Pair>) -> Self {
        self.spec.padding = padding.into().0;
        self
    }

    /// Rounds the output size up rather than down.
    pub fn ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.spec.ceil_mode = ceil_mode;
        self
    }

    /// Whether padding counts in the divisor (PyTorch's `count_include_pad`, default true).
    pub fn count_include_pad(mut self, include: bool) -> Self {
        self.divisor = if include {
            AvgDivisor::IncludePadding
        } else {
            AvgDivisor::ExcludePadding
        };
        self
    }
}

impl Module for AvgPool2d {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.avg_pool2d(self.spec, self.divisor)
    }

    fn describe(&self) -> String {
        describe_pool("AvgPool2d", &self.spec)
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::AvgPool2d(self.spec, self.divisor), &[input]))
    }
}

/// Average pooling to a fixed output size whatever the input size (PyTorch's
/// `nn.AdaptiveAvgPool2d`), with PyTorch's bins; see [`Var::adaptive_avg_pool2d`]. VGG uses it
/// to feed its classifier `7x7` maps from any input of at least `32x32`.
///
/// # Shapes
///
/// Input `[N, C, H, W]`, output `[N, C, OH, OW]`.
///
/// # Examples
///
/// ```
/// use striate::nn::{AdaptiveAvgPool2d, Module};
/// use striate::Tensor;
///
/// let pool = AdaptiveAvgPool2d::new(7);
/// assert_eq!(pool.predict(&Tensor::zeros(&[1, 512, 14, 14])).shape(), &[1, 512, 7, 7]);
/// assert_eq!(pool.predict(&Tensor::zeros(&[1, 512, 9, 11])).shape(), &[1, 512, 7, 7]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdaptiveAvgPool2d {
    /// The output `[height, width]`.
    pub output_size: [usize; 2],
}

impl AdaptiveAvgPool2d {
    /// Pooling to `output_size` (`7` or `[7, 7]`).
    pub fn new(output_size: impl Into<Pair>) -> AdaptiveAvgPool2d {
        AdaptiveAvgPool2d {
            output_size: output_size.into().0,
        }
    }
}

impl Module for AdaptiveAvgPool2d {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.adaptive_avg_pool2d(self.output_size)
    }

    fn describe(&self) -> String {
        format!("AdaptiveAvgPool2d(output_size={:?})", self.output_size)
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::AdaptiveAvgPool2d(self.output_size), &[input]))
    }
}

/// Max pooling to a fixed output size whatever the input size (PyTorch's
/// `nn.AdaptiveMaxPool2d`), with PyTorch's bins and NaN rule; see [`Var::adaptive_max_pool2d`].
///
/// # Shapes
///
/// Input `[N, C, H, W]`, output `[N, C, OH, OW]`.
///
/// # Examples
///
/// ```
/// use striate::nn::{AdaptiveMaxPool2d, Module};
/// use striate::Tensor;
///
/// let pool = AdaptiveMaxPool2d::new([2, 3]);
/// assert_eq!(pool.predict(&Tensor::zeros(&[1, 8, 9, 11])).shape(), &[1, 8, 2, 3]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdaptiveMaxPool2d {
    /// The output `[height, width]`.
    pub output_size: [usize; 2],
}

impl AdaptiveMaxPool2d {
    /// Pooling to `output_size` (`7` or `[7, 7]`).
    pub fn new(output_size: impl Into<Pair>) -> AdaptiveMaxPool2d {
        AdaptiveMaxPool2d {
            output_size: output_size.into().0,
        }
    }
}

impl Module for AdaptiveMaxPool2d {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.adaptive_max_pool2d(self.output_size)
    }

    fn describe(&self) -> String {
        format!("AdaptiveMaxPool2d(output_size={:?})", self.output_size)
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::AdaptiveMaxPool2d(self.output_size), &[input]))
    }
}

/// The mean of each channel: `[N, C, H, W] -> [N, C]` (Keras's `GlobalAveragePooling2D`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalAvgPool2d;

impl Module for GlobalAvgPool2d {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.global_avg_pool2d()
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::GlobalAvgPool2d, &[input]))
    }
}

/// The maximum of each channel: `[N, C, H, W] -> [N, C]` (Keras's `GlobalMaxPooling2D`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalMaxPool2d;

impl Module for GlobalMaxPool2d {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.global_max_pool2d()
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::GlobalMaxPool2d, &[input]))
    }
}
