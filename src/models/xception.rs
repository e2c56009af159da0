//! Xception's depthwise-separable convolution (Chollet, 2017) and a small Xception-style
//! network built from it.

use rand::Rng;

use super::stages::{FeatureExtraction, kaiming_conv, module_from_stages, visit_fields};
use crate::autograd::Var;
use crate::nn::{
    BatchNorm, BatchNorm2d, Conv2d, Conv2dConfig, GlobalAvgPool2d, Graph, MaxPool2d, Module, Op,
    Relu, Sequential, ValueId, then_batch_norm,
};

/// A depthwise-separable convolution (Keras's `SeparableConv2D`): a `k x k` depthwise
/// convolution (`groups = in_channels`, one filter per channel, padding `k / 2`) then a 1x1
/// pointwise convolution mixing the channels, both without bias (batch norm follows in
/// Xception). It costs `C·k² + C·C'` weights instead of a full convolution's `C·C'·k²`.
///
/// Parameters `depthwise.weight` `[C, 1, k, k]` and `pointwise.weight` `[C', C, 1, 1]`.
///
/// # Shapes
///
/// Input `[N, in_channels, H, W]`, output `[N, out_channels, H, W]` (odd `k`).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::SeparableConv2d;
/// use striate::nn::Module;
/// use striate::Tensor;
///
/// let conv = SeparableConv2d::new(32, 64, 3, &mut StdRng::seed_from_u64(0));
/// assert_eq!(conv.num_params(), 32 * 9 + 64 * 32);
/// assert_eq!(conv.predict(&Tensor::zeros(&[1, 32, 10, 10])).shape(), &[1, 64, 10, 10]);
/// ```
pub struct SeparableConv2d {
    /// The per-channel spatial convolution.
    pub depthwise: Conv2d,
    /// The 1x1 channel mixing.
    pub pointwise: Conv2d,
}

impl SeparableConv2d {
    /// A separable convolution with a `kernel_size` depthwise stage, initialised
    /// Kaiming-normal (fan out, ReLU).
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        rng: &mut R,
    ) -> SeparableConv2d {
        let depthwise = Conv2dConfig::new(in_channels, in_channels, kernel_size)
            .padding(kernel_size / 2)
            .groups(in_channels)
            .bias(false);
        let pointwise = Conv2dConfig::new(in_channels, out_channels, 1).bias(false);
        SeparableConv2d {
            depthwise: kaiming_conv(depthwise, rng),
            pointwise: kaiming_conv(pointwise, rng),
        }
    }
}

impl Module for SeparableConv2d {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        self.pointwise.forward(self.depthwise.forward(input))
    }

    /// The batch norm folds into the pointwise convolution at inference.
    fn forward_then_batch_norm<'t>(
        &self,
        input: Var<'t>,
        bn: &BatchNorm,
        relu: bool,
    ) -> Option<Var<'t>> {
        if !input.tape().fuses_for_inference() {
            return None;
        }
        let x = self.depthwise.forward(input);
        Some(then_batch_norm(&self.pointwise, bn, x, relu))
    }

    visit_fields!(depthwise, pointwise);

    fn describe(&self) -> String {
        let c = self.pointwise.config();
        format!(
            "SeparableConv2d({}, {}, kernel_size={:?})",
            c.in_channels,
            c.out_channels,
            self.depthwise.config().kernel_size
        )
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        let x = graph.child("depthwise", &self.depthwise, input)?;
        graph.child("pointwise", &self.pointwise, x)
    }
}

/// One downsampling module of [`MiniXception`]: `sepconv1`, `bn1`, ReLU, `sepconv2`, `bn2`,
/// a 3x3 stride-2 max pool, plus a `shortcut` (1x1 stride-2 convolution and batch norm) —
/// Xception's entry-flow block.
///
/// # Shapes
///
/// Input `[N, in_channels, H, W]`, output `[N, out_channels, ⌈H/2⌉, ⌈W/2⌉]`.
pub struct XceptionBlock {
    /// 1x1 stride-2 convolution and batch norm (`shortcut.0`, `shortcut.1`).
    pub shortcut: Sequential,
    /// `in_channels → out_channels`.
    pub sepconv1: SeparableConv2d,
    /// Batch norm after `sepconv1`.
    pub bn1: BatchNorm,
    /// `out_channels → out_channels`.
    pub sepconv2: SeparableConv2d,
    /// Batch norm after `sepconv2`.
    pub bn2: BatchNorm,
    /// 3x3, stride 2, padding 1.
    pub pool: MaxPool2d,
}

impl XceptionBlock {
    /// A block from `in_channels` to `out_channels` that halves the spatial size.
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        rng: &mut R,
    ) -> XceptionBlock {
        let projection = Conv2dConfig::new(in_channels, out_channels, 1)
            .stride(2)
            .bias(false);
        XceptionBlock {
            shortcut: Sequential::new()
                .push(kaiming_conv(projection, rng))
                .push(BatchNorm2d::new(out_channels)),
            sepconv1: SeparableConv2d::new(in_channels, out_channels, 3, rng),
            bn1: BatchNorm2d::new(out_channels),
            sepconv2: SeparableConv2d::new(out_channels, out_channels, 3, rng),
            bn2: BatchNorm2d::new(out_channels),
            pool: MaxPool2d::new(3).stride(2).padding(1),
        }
    }
}

impl Module for XceptionBlock {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        let x = then_batch_norm(&self.sepconv1, &self.bn1, input, true);
        let x = then_batch_norm(&self.sepconv2, &self.bn2, x, false);
        self.pool.forward(x) + self.shortcut.forward(input)
    }

    visit_fields!(shortcut, sepconv1, bn1, sepconv2, bn2);

    fn describe(&self) -> String {
        let c = self.shortcut.layers()[0].describe();
        format!("XceptionBlock({c})")
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        let x = graph.child("sepconv1", &self.sepconv1, input)?;
        let x = graph.child("bn1", &self.bn1, x)?;
        let x = graph.apply(Op::Relu, &[x]);
        let x = graph.child("sepconv2", &self.sepconv2, x)?;
        let x = graph.child("bn2", &self.bn2, x)?;
        let pooled = graph.child("pool", &self.pool, x)?;
        let shortcut = graph.child("shortcut", &self.shortcut, input)?;
        Ok(graph.apply(Op::Add, &[pooled, shortcut]))
    }
}

/// A small Xception-style network for small images (28x28 to 64x64), after the
/// "mini-Xception" of Arriaga et al. (2017):
/// - `conv1`, `bn1`, ReLU, `conv2`, `bn2`, ReLU: two 3x3 convolutions (padding 1, no bias) to
///   `width` channels;
/// - `block1` … `block4`: [`XceptionBlock`]s to `2·width`, `4·width`, `8·width`, `16·width`
///   channels, each halving the size (28 → 14 → 7 → 4 → 2);
/// - `head`: a 3x3 convolution (padding 1, with bias) to `num_classes` channels, then global
///   average pooling to the logits — no dense layer.
///
/// With `width = 8`, one input channel and 10 classes it has 60,410 parameters.
///
/// # Shapes
///
/// Input `[N, in_channels, H, W]`, output `[N, num_classes]`.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::MiniXception;
/// use striate::nn::Module;
/// use striate::Tensor;
///
/// let model = MiniXception::new(1, 10, 8, &mut StdRng::seed_from_u64(0));
/// assert_eq!(model.num_params(), 60_410);
/// assert_eq!(model.predict(&Tensor::zeros(&[2, 1, 28, 28])).shape(), &[2, 10]);
/// ```
pub struct MiniXception {
    /// First stem convolution.
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm,
    /// Second stem convolution.
    pub conv2: Conv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm,
    /// The four downsampling blocks.
    pub blocks: [XceptionBlock; 4],
    /// The classifying convolution.
    pub head: Conv2d,
    width: usize,
}

static RELU: Relu = Relu;
static GLOBAL_POOL: GlobalAvgPool2d = GlobalAvgPool2d;

impl MiniXception {
    /// The network for `in_channels` input channels and `num_classes` classes, with `width`
    /// channels after the stem (8 in the paper).
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        num_classes: usize,
        width: usize,
        rng: &mut R,
    ) -> MiniXception {
        let stem = |i: usize, o: usize, rng: &mut R| {
            kaiming_conv(Conv2dConfig::new(i, o, 3).padding(1).bias(false), rng)
        };
        let conv1 = stem(in_channels, width, rng);
        let conv2 = stem(width, width, rng);
        let blocks = [1, 2, 3, 4].map(|i| XceptionBlock::new(width << (i - 1), width << i, rng));
        let head = Conv2dConfig::new(width << 4, num_classes, 3)
            .padding(1)
            .init(rng);
        MiniXception {
            conv1,
            bn1: BatchNorm2d::new(width),
            conv2,
            bn2: BatchNorm2d::new(width),
            blocks,
            head,
            width,
        }
    }

    fn stages_mut(&mut self) -> Vec<(String, &mut dyn Module)> {
        let mut stages: Vec<(String, &mut dyn Module)> = vec![
            ("conv1".into(), &mut self.conv1),
            ("bn1".into(), &mut self.bn1),
            ("conv2".into(), &mut self.conv2),
            ("bn2".into(), &mut self.bn2),
        ];
        for (i, block) in self.blocks.iter_mut().enumerate() {
            stages.push((format!("block{}", i + 1), block));
        }
        stages.push(("head".into(), &mut self.head));
        stages
    }

    fn description(&self) -> String {
        format!(
            "MiniXception(in_channels={}, num_classes={}, width={})",
            self.conv1.config().in_channels,
            self.head.config().out_channels,
            self.width
        )
    }
}

impl FeatureExtraction for MiniXception {
    fn stages(&self) -> Vec<(String, &dyn Module)> {
        let mut stages: Vec<(String, &dyn Module)> = vec![
            ("conv1".into(), &self.conv1),
            ("bn1".into(), &self.bn1),
            ("relu1".into(), &RELU),
            ("conv2".into(), &self.conv2),
            ("bn2".into(), &self.bn2),
            ("relu2".into(), &RELU),
        ];
        for (i, block) in self.blocks.iter().enumerate() {
            stages.push((format!("block{}", i + 1), block));
        }
        stages.push(("head".into(), &self.head));
        stages.push(("global_pool".into(), &GLOBAL_POOL));
        stages
    }
}

module_from_stages!(MiniXception);

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::Tape;
    use crate::nn::summary;
    use crate::tensor::Tensor;

    #[test]
    fn separable_conv_is_depthwise_then_pointwise() {
        let conv = SeparableConv2d::new(3, 4, 3, &mut StdRng::seed_from_u64(0));
        assert_eq!(conv.depthwise.weight.shape(), &[3, 1, 3, 3]);
        assert_eq!(conv.pointwise.weight.shape(), &[4, 3, 1, 1]);
        let mut names = Vec::new();
        conv.visit_params(&mut |name, _| names.push(name.to_string()));
        assert_eq!(names, ["depthwise.weight", "pointwise.weight"]);
    }

    #[test]
    fn mini_xception_trains_and_summarizes() {
        let model = MiniXception::new(3, 5, 4, &mut StdRng::seed_from_u64(0));
        let table = summary(&model, &[1, 3, 32, 32]);
        let block4 = table
            .rows
            .iter()
            .find(|r| r.layer.starts_with("block4"))
            .unwrap();
        assert_eq!(block4.output_shape, vec![1, 64, 2, 2]);
        let tape = Tape::training();
        let x = Tensor::rand_uniform(&[2, 3, 32, 32], -1.0, 1.0, &mut StdRng::seed_from_u64(1));
        let grads = model.forward(tape.input(x)).sum().backward();
        let mut missing = Vec::new();
        model.visit_params(&mut |name, p| {
            if grads.get(p).is_none() {
                missing.push(name.to_string());
            }
        });
        assert!(missing.is_empty(), "no gradient for {missing:?}");
    }
}
