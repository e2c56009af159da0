//! GoogLeNet's Inception module (Szegedy et al., 2014) with torchvision's names.

use rand::Rng;

use super::stages::{kaiming_conv, visit_fields};
use crate::autograd::Var;
use crate::nn::{
    BatchNorm, BatchNorm2d, Conv2d, Conv2dConfig, Graph, MaxPool2d, Module, Op, Sequential,
    ValueId, then_batch_norm,
};

/// Convolution (no bias), batch norm (eps 0.001) and ReLU: torchvision's `BasicConv2d`, the
/// unit of GoogLeNet and Inception v3. Parameters `conv.weight`, `bn.*`.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::BasicConv2d;
/// use striate::nn::{Conv2dConfig, Module};
/// use striate::Tensor;
///
/// let unit = BasicConv2d::new(Conv2dConfig::new(3, 16, 3).padding(1), &mut StdRng::seed_from_u64(0));
/// assert_eq!(unit.predict(&Tensor::zeros(&[1, 3, 8, 8])).shape(), &[1, 16, 8, 8]);
/// ```
#[doc(alias = "ConvBnRelu")]
pub struct BasicConv2d {
    /// The convolution (built without bias whatever the config says: batch norm follows).
    pub conv: Conv2d,
    /// Batch norm with eps 0.001, as torchvision's.
    pub bn: BatchNorm,
}

impl BasicConv2d {
    /// The unit for a convolution config; the bias is turned off, the weight initialised
    /// Kaiming-normal (fan out, ReLU).
    pub fn new<R: Rng + ?Sized>(config: Conv2dConfig, rng: &mut R) -> BasicConv2d {
        let channels = config.out_channels;
        BasicConv2d {
            conv: kaiming_conv(config.bias(false), rng),
            bn: BatchNorm2d::new(channels).eps(1e-3),
        }
    }
}

impl Module for BasicConv2d {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        then_batch_norm(&self.conv, &self.bn, input, true)
    }

    visit_fields!(conv, bn);

    fn describe(&self) -> String {
        format!("BasicConv2d({})", self.conv.describe())
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        let x = graph.child("conv", &self.conv, input)?;
        let x = graph.child("bn", &self.bn, x)?;
        Ok(graph.apply(Op::Relu, &[x]))
    }
}

/// The channel counts of an [`InceptionBlock`], in the order of torchvision's
/// `Inception(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)`.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::InceptionConfig;
/// use striate::nn::Module;
/// use striate::Tensor;
///
/// // GoogLeNet's inception (3a): 64 + 128 + 32 + 32 = 256 channels out
/// let block = InceptionConfig::new(192, 64, 96, 128, 16, 32, 32).init(&mut StdRng::seed_from_u64(0));
/// assert_eq!(block.predict(&Tensor::zeros(&[1, 192, 28, 28])).shape(), &[1, 256, 28, 28]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InceptionConfig {
    /// Channels of the input.
    pub in_channels: usize,
    /// Branch 1: the 1x1 convolution's channels.
    pub ch1x1: usize,
    /// Branch 2: the 1x1 reduction before the 3x3.
    pub ch3x3_reduce: usize,
    /// Branch 2: the 3x3 convolution's channels.
    pub ch3x3: usize,
    /// Branch 3: the 1x1 reduction before the "5x5".
    pub ch5x5_reduce: usize,
    /// Branch 3: the "5x5" convolution's channels.
    pub ch5x5: usize,
    /// Branch 4: the 1x1 projection after the max pool.
    pub pool_proj: usize,
    /// Branch 3's kernel: 3, as torchvision's GoogLeNet (a slip kept for its pretrained
    /// weights), or 5, as the paper.
    pub branch3_kernel: usize,
}

impl InceptionConfig {
    /// A block with torchvision's argument order and its 3x3 kernel in branch 3.
    pub fn new(
        in_channels: usize,
        ch1x1: usize,
        ch3x3_reduce: usize,
        ch3x3: usize,
        ch5x5_reduce: usize,
        ch5x5: usize,
        pool_proj: usize,
    ) -> InceptionConfig {
        InceptionConfig {
            in_channels,
            ch1x1,
            ch3x3_reduce,
            ch3x3,
            ch5x5_reduce,
            ch5x5,
            pool_proj,
            branch3_kernel: 3,
        }
    }

    /// Uses the paper's 5x5 kernel in branch 3 (padding 2) instead of torchvision's 3x3.
    pub fn paper_5x5(mut self) -> InceptionConfig {
        self.branch3_kernel = 5;
        self
    }

    /// The channels of the block's output: the four branches' sum.
    pub fn out_channels(&self) -> usize {
        self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj
    }

    /// Builds the block.
    pub fn init<R: Rng + ?Sized>(self, rng: &mut R) -> InceptionBlock {
        let unit = |i: usize, o: usize, k: usize, rng: &mut R| {
            BasicConv2d::new(Conv2dConfig::new(i, o, k).padding(k / 2), rng)
        };
        let c = self;
        InceptionBlock {
            branch1: unit(c.in_channels, c.ch1x1, 1, rng),
            branch2: Sequential::new()
                .push(unit(c.in_channels, c.ch3x3_reduce, 1, rng))
                .push(unit(c.ch3x3_reduce, c.ch3x3, 3, rng)),
            branch3: Sequential::new()
                .push(unit(c.in_channels, c.ch5x5_reduce, 1, rng))
                .push(unit(c.ch5x5_reduce, c.ch5x5, c.branch3_kernel, rng)),
            branch4: Sequential::new()
                .push(MaxPool2d::new(3).stride(1).padding(1).ceil_mode(true))
                .push(unit(c.in_channels, c.pool_proj, 1, rng)),
            config: self,
        }
    }
}

/// GoogLeNet's Inception module: four parallel branches on the same input, concatenated on
/// the channel axis —
/// 1. `branch1`: 1x1;
/// 2. `branch2`: 1x1 reduction, then 3x3;
/// 3. `branch3`: 1x1 reduction, then 3x3 (torchvision) or 5x5 (the paper; see
///    [`InceptionConfig::branch3_kernel`]);
/// 4. `branch4`: 3x3 max pool (stride 1), then a 1x1 projection;
///
/// every convolution a [`BasicConv2d`] (conv, batch norm, ReLU). The names are torchvision's
/// (`branch1.conv.weight`, `branch2.1.bn.running_mean`, `branch4.1.conv.weight`, …), so a
/// block loads the weights of the matching GoogLeNet block.
///
/// # Shapes
///
/// Input `[N, in_channels, H, W]`, output `[N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W]`.
pub struct InceptionBlock {
    /// The 1x1 branch.
    pub branch1: BasicConv2d,
    /// 1x1 then 3x3.
    pub branch2: Sequential,
    /// 1x1 then 3x3 or 5x5.
    pub branch3: Sequential,
    /// Max pool then 1x1.
    pub branch4: Sequential,
    config: InceptionConfig,
}

impl InceptionBlock {
    /// The configuration the block was built with.
    pub fn config(&self) -> &InceptionConfig {
        &self.config
    }
}

impl Module for InceptionBlock {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        let branches = [
            self.branch1.forward(input),
            self.branch2.forward(input),
            self.branch3.forward(input),
            self.branch4.forward(input),
        ];
        Var::concat(&branches, 1)
    }

    visit_fields!(branch1, branch2, branch3, branch4);

    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "InceptionBlock({}, [{}, {}, {}, {}])",
            c.in_channels, c.ch1x1, c.ch3x3, c.ch5x5, c.pool_proj
        )
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        let branches = [
            graph.child("branch1", &self.branch1, input)?,
            graph.child("branch2", &self.branch2, input)?,
            graph.child("branch3", &self.branch3, input)?,
            graph.child("branch4", &self.branch4, input)?,
        ];
        Ok(graph.apply(Op::Concat(1), &branches))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::Tape;
    use crate::tensor::Tensor;

    #[test]
    fn branches_concatenate_in_order_and_train() {
        let block = InceptionConfig::new(4, 2, 3, 5, 1, 3, 2)
            .paper_5x5()
            .init(&mut StdRng::seed_from_u64(0));
        assert_eq!(block.config().out_channels(), 12);
        let x = Tensor::rand_uniform(&[2, 4, 6, 6], -1.0, 1.0, &mut StdRng::seed_from_u64(1));
        let tape = Tape::training();
        let y = block.forward(tape.input(x.clone()));
        assert_eq!(y.shape(), vec![2, 12, 6, 6]);
        // the first two channels are branch 1's output
        let tape2 = Tape::training();
        let b1 = block.branch1.forward(tape2.input(x));
        assert_eq!(y.value().narrow(1, 0, 2), b1.value());
        let grads = y.sum().backward();
        let mut with_gradient = 0;
        block.visit_params(&mut |_, p| with_gradient += usize::from(grads.get(p).is_some()));
        assert_eq!(with_gradient, 6 * 3); // six units, each conv weight + γ + β
        assert_eq!(block.branch3.layers()[1].num_params(), 3 * 5 * 5 + 2 * 3);
    }
}
