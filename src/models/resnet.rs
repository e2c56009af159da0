//! ResNet (He et al., 2015) with torchvision's names and layouts: `BasicBlock`, `Bottleneck`
//! and the network.

use rand::Rng;

use super::stages::{FeatureExtraction, kaiming_conv, module_from_stages, visit_fields};
use crate::autograd::Var;
use crate::nn::{
    AdaptiveAvgPool2d, BatchNorm, BatchNorm2d, Conv2d, Conv2dConfig, Dense, Flatten, Graph,
    MaxPool2d, Module, Op, Relu, Sequential, ValueId, then_batch_norm,
};

/// The projection shortcut torchvision calls `downsample`: a strided 1x1 convolution and batch
/// norm (`downsample.0`, `downsample.1`).
fn downsample<R: Rng + ?Sized>(
    in_channels: usize,
    out_channels: usize,
    stride: usize,
    rng: &mut R,
) -> Sequential {
    let conv = Conv2dConfig::new(in_channels, out_channels, 1)
        .stride(stride)
        .bias(false);
    Sequential::new()
        .push(kaiming_conv(conv, rng))
        .push(BatchNorm2d::new(out_channels))
}

/// A `k x k` convolution without bias, "same" padding for odd `k`, initialised as torchvision.
fn conv_no_bias<R: Rng + ?Sized>(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    rng: &mut R,
) -> Conv2d {
    let config = Conv2dConfig::new(in_channels, out_channels, kernel)
        .stride(stride)
        .padding(kernel / 2)
        .bias(false);
    kaiming_conv(config, rng)
}

/// Adds the shortcut (identity, or the projection if there is one) and applies ReLU.
fn close_residual<'t>(body: Var<'t>, input: Var<'t>, downsample: Option<&Sequential>) -> Var<'t> {
    let identity = match downsample {
        Some(projection) => projection.forward(input),
        None => input,
    };
    body.add_relu(identity)
}

/// [`close_residual`] as graph nodes.
fn close_residual_graph(
    graph: &mut Graph,
    body: ValueId,
    input: ValueId,
    downsample: Option<&Sequential>,
) -> crate::Result<ValueId> {
    let identity = match downsample {
        Some(projection) => graph.child("downsample", projection, input)?,
        None => input,
    };
    let sum = graph.apply(Op::Add, &[body, identity]);
    Ok(graph.apply(Op::Relu, &[sum]))
}

/// ResNet-18/34's block: `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))` with 3x3
/// convolutions, the first strided; the shortcut is the identity or, when the shape changes,
/// `downsample` (1x1 strided convolution and batch norm).
///
/// Parameter names are torchvision's: `conv1.weight`, `bn1.*`, `conv2.weight`, `bn2.*`,
/// `downsample.0.weight`, `downsample.1.*`.
///
/// # Shapes
///
/// Input `[N, in_channels, H, W]`, output `[N, channels, ⌈H/stride⌉, ⌈W/stride⌉]`.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::BasicBlock;
/// use striate::nn::Module;
/// use striate::Tensor;
///
/// let block = BasicBlock::new(64, 128, 2, &mut StdRng::seed_from_u64(0));
/// assert!(block.downsample.is_some());
/// assert_eq!(block.predict(&Tensor::zeros(&[1, 64, 8, 8])).shape(), &[1, 128, 4, 4]);
/// ```
pub struct BasicBlock {
    /// 3x3, `in_channels → channels`, strided.
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm,
    /// 3x3, `channels → channels`.
    pub conv2: Conv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm,
    /// The projection shortcut, present when the stride or the channel count changes.
    pub downsample: Option<Sequential>,
}

impl BasicBlock {
    /// ResNet's channel expansion of this block: its output has `channels · 1` channels.
    pub const EXPANSION: usize = 1;

    /// A block from `in_channels` to `channels`, with a projection shortcut if `stride != 1`
    /// or the channel count changes; torchvision's initialisation.
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        channels: usize,
        stride: usize,
        rng: &mut R,
    ) -> BasicBlock {
        BasicBlock {
            conv1: conv_no_bias(in_channels, channels, 3, stride, rng),
            bn1: BatchNorm2d::new(channels),
            conv2: conv_no_bias(channels, channels, 3, 1, rng),
            bn2: BatchNorm2d::new(channels),
            downsample: (stride != 1 || in_channels != channels)
                .then(|| downsample(in_channels, channels, stride, rng)),
        }
    }
}

impl Module for BasicBlock {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        let x = then_batch_norm(&self.conv1, &self.bn1, input, true);
        let body = then_batch_norm(&self.conv2, &self.bn2, x, false);
        close_residual(body, input, self.downsample.as_ref())
    }

    visit_fields!(conv1, bn1, conv2, bn2; downsample);

    fn describe(&self) -> String {
        let c = self.conv1.config();
        format!(
            "BasicBlock({}, {}, stride={})",
            c.in_channels, c.out_channels, c.stride[0]
        )
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        let x = graph.child("conv1", &self.conv1, input)?;
        let x = graph.child("bn1", &self.bn1, x)?;
        let x = graph.apply(Op::Relu, &[x]);
        let x = graph.child("conv2", &self.conv2, x)?;
        let body = graph.child("bn2", &self.bn2, x)?;
        close_residual_graph(graph, body, input, self.downsample.as_ref())
    }
}

/// ResNet-50's block: 1x1 (`in_channels → channels`), 3x3 strided (`channels → channels`),
/// 1x1 (`channels → 4·channels`), each with batch norm, ReLU between, and
/// `relu(body + shortcut(x))` at the end. The stride sits on the 3x3 convolution, as in
/// torchvision ("ResNet v1.5").
///
/// Parameter names are torchvision's: `conv1`–`conv3`, `bn1`–`bn3`, `downsample.0`,
/// `downsample.1`.
///
/// # Shapes
///
/// Input `[N, in_channels, H, W]`, output `[N, 4·channels, ⌈H/stride⌉, ⌈W/stride⌉]`.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::Bottleneck;
/// use striate::nn::Module;
/// use striate::Tensor;
///
/// let block = Bottleneck::new(256, 128, 2, &mut StdRng::seed_from_u64(0));
/// assert_eq!(block.predict(&Tensor::zeros(&[1, 256, 8, 8])).shape(), &[1, 512, 4, 4]);
/// ```
pub struct Bottleneck {
    /// 1x1, `in_channels → channels`.
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm,
    /// 3x3, `channels → channels`, strided.
    pub conv2: Conv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm,
    /// 1x1, `channels → 4·channels`.
    pub conv3: Conv2d,
    /// Batch norm after `conv3`.
    pub bn3: BatchNorm,
    /// The projection shortcut, present when the stride or the channel count changes.
    pub downsample: Option<Sequential>,
}

impl Bottleneck {
    /// ResNet's channel expansion of this block: its output has `channels · 4` channels.
    pub const EXPANSION: usize = 4;

    /// A block from `in_channels` to `4·channels`, with a projection shortcut if
    /// `stride != 1` or `in_channels != 4·channels`; torchvision's initialisation.
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        channels: usize,
        stride: usize,
        rng: &mut R,
    ) -> Bottleneck {
        let out = channels * Self::EXPANSION;
        Bottleneck {
            conv1: conv_no_bias(in_channels, channels, 1, 1, rng),
            bn1: BatchNorm2d::new(channels),
            conv2: conv_no_bias(channels, channels, 3, stride, rng),
            bn2: BatchNorm2d::new(channels),
            conv3: conv_no_bias(channels, out, 1, 1, rng),
            bn3: BatchNorm2d::new(out),
            downsample: (stride != 1 || in_channels != out)
                .then(|| downsample(in_channels, out, stride, rng)),
        }
    }
}

impl Module for Bottleneck {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        let x = then_batch_norm(&self.conv1, &self.bn1, input, true);
        let x = then_batch_norm(&self.conv2, &self.bn2, x, true);
        let body = then_batch_norm(&self.conv3, &self.bn3, x, false);
        close_residual(body, input, self.downsample.as_ref())
    }

    visit_fields!(conv1, bn1, conv2, bn2, conv3, bn3; downsample);

    fn describe(&self) -> String {
        format!(
            "Bottleneck({}, {}, stride={})",
            self.conv1.config().in_channels,
            self.conv3.config().out_channels,
            self.conv2.config().stride[0]
        )
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        let x = graph.child("conv1", &self.conv1, input)?;
        let x = graph.child("bn1", &self.bn1, x)?;
        let x = graph.apply(Op::Relu, &[x]);
        let x = graph.child("conv2", &self.conv2, x)?;
        let x = graph.child("bn2", &self.bn2, x)?;
        let x = graph.apply(Op::Relu, &[x]);
        let x = graph.child("conv3", &self.conv3, x)?;
        let body = graph.child("bn3", &self.bn3, x)?;
        close_residual_graph(graph, body, input, self.downsample.as_ref())
    }
}

/// Which block a [`ResNet`] stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// [`BasicBlock`] (ResNet-18, -34).
    Basic,
    /// [`Bottleneck`] (ResNet-50 and deeper).
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => BasicBlock::EXPANSION,
            BlockKind::Bottleneck => Bottleneck::EXPANSION,
        }
    }
}

/// The options of a [`ResNet`]: [`ResNetConfig::resnet18`], [`ResNetConfig::resnet34`] and
/// [`ResNetConfig::resnet50`] give torchvision's ImageNet networks, and
/// [`ResNetConfig::small_input`] the usual variant for 28x28 and 32x32 images.
///
/// The ImageNet network is
/// - the stem: `conv1` (7x7, stride 2, padding 3, 64 channels, no bias), `bn1`, ReLU, and
///   `maxpool` (3x3, stride 2, padding 1);
/// - `layer1` … `layer4`: `layers[i]` blocks of 64, 128, 256, 512 channels (times the block's
///   expansion; 64 is [`ResNetConfig::width`]), the first block of `layer2` … `layer4` with
///   stride 2;
/// - `avgpool` (adaptive to 1x1), flatten, and `fc`: `Dense(512·expansion, num_classes)`.
///
/// The small-input variant replaces the stem's convolution by a 3x3 stride-1 one (padding 1)
/// and drops the max pool, as is usual for CIFAR: a 32x32 input reaches `layer4` as 4x4, a
/// 28x28 one as 4x4 too (28 → 14 → 7 → 4).
///
/// Initialisation is torchvision's: convolutions Kaiming-normal (fan out, ReLU), batch norm
/// γ = 1, β = 0, `fc` PyTorch's default.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::ResNetConfig;
/// use striate::nn::Module;
/// use striate::Tensor;
///
/// let model = ResNetConfig::resnet18(10).small_input().in_channels(1).init(&mut StdRng::seed_from_u64(0));
/// assert_eq!(model.predict(&Tensor::zeros(&[2, 1, 28, 28])).shape(), &[2, 10]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// The block every layer stacks.
    pub block: BlockKind,
    /// Blocks in `layer1` … `layer4`.
    pub layers: [usize; 4],
    /// Classes of `fc`.
    pub num_classes: usize,
    /// Channels of the input images.
    pub in_channels: usize,
    /// The CIFAR-style stem: 3x3 stride-1 `conv1`, no max pool.
    pub small_input: bool,
    /// Channels of the stem and of `layer1`'s blocks (before expansion); each later layer
    /// doubles them. 64 in every torchvision ResNet.
    pub width: usize,
}

impl ResNetConfig {
    /// ResNet-18: basic blocks `[2, 2, 2, 2]`; 11,689,512 parameters for 1000 classes.
    pub fn resnet18(num_classes: usize) -> ResNetConfig {
        ResNetConfig::new(BlockKind::Basic, [2, 2, 2, 2], num_classes)
    }

    /// ResNet-34: basic blocks `[3, 4, 6, 3]`; 21,797,672 parameters for 1000 classes.
    pub fn resnet34(num_classes: usize) -> ResNetConfig {
        ResNetConfig::new(BlockKind::Basic, [3, 4, 6, 3], num_classes)
    }

    /// ResNet-50: bottlenecks `[3, 4, 6, 3]`; 25,557,032 parameters for 1000 classes.
    pub fn resnet50(num_classes: usize) -> ResNetConfig {
        ResNetConfig::new(BlockKind::Bottleneck, [3, 4, 6, 3], num_classes)
    }

    /// Any depth: `layers[i]` blocks of kind `block` in `layer{i+1}`, RGB input, ImageNet
    /// stem.
    pub fn new(block: BlockKind, layers: [usize; 4], num_classes: usize) -> ResNetConfig {
        ResNetConfig {
            block,
            layers,
            num_classes,
            in_channels: 3,
            small_input: false,
            width: 64,
        }
    }

    /// The CIFAR-style stem for 28x28 and 32x32 inputs (see [`ResNetConfig`]).
    pub fn small_input(mut self) -> ResNetConfig {
        self.small_input = true;
        self
    }

    /// Sets the number of input channels.
    pub fn in_channels(mut self, in_channels: usize) -> ResNetConfig {
        self.in_channels = in_channels;
        self
    }

    /// Sets the channels of the stem and `layer1` (64 by default): a narrower network for
    /// small problems and tests, with the same names.
    pub fn width(mut self, width: usize) -> ResNetConfig {
        self.width = width;
        self
    }

    /// Builds the network.
    pub fn init<R: Rng + ?Sized>(self, rng: &mut R) -> ResNet {
        let (conv1, maxpool) = if self.small_input {
            (conv_no_bias(self.in_channels, self.width, 3, 1, rng), None)
        } else {
            let stem = conv_no_bias(self.in_channels, self.width, 7, 2, rng);
            (stem, Some(MaxPool2d::new(3).stride(2).padding(1)))
        };
        let mut in_channels = self.width;
        let mut make_layer = |index: usize, rng: &mut R| {
            let channels = self.width << index;
            let mut layer = Sequential::new();
            for i in 0..self.layers[index] {
                let stride = if i == 0 && index > 0 { 2 } else { 1 };
                let block: Box<dyn Module> = match self.block {
                    BlockKind::Basic => {
                        Box::new(BasicBlock::new(in_channels, channels, stride, rng))
                    }
                    BlockKind::Bottleneck => {
                        Box::new(Bottleneck::new(in_channels, channels, stride, rng))
                    }
                };
                layer.push_boxed(block);
                in_channels = channels * self.block.expansion();
            }
            layer
        };
        let layer1 = make_layer(0, rng);
        let layer2 = make_layer(1, rng);
        let layer3 = make_layer(2, rng);
        let layer4 = make_layer(3, rng);
        ResNet {
            conv1,
            bn1: BatchNorm2d::new(self.width),
            maxpool,
            layer1,
            layer2,
            layer3,
            layer4,
            avgpool: AdaptiveAvgPool2d::new(1),
            fc: Dense::new(
                (self.width << 3) * self.block.expansion(),
                self.num_classes,
                rng,
            ),
            config: self,
        }
    }
}

/// ResNet with torchvision's parameter names (`conv1`, `bn1`, `layer1.0.conv1`,
/// `layer2.0.downsample.0`, `fc`, …), so weights converted from torchvision load directly;
/// see [`ResNetConfig`] for the architecture and the small-input variant.
///
/// Its stages ([`FeatureExtraction`]) are `conv1`, `bn1`, `relu`, `maxpool` (ImageNet stem
/// only), one per block (`layer1.0`, `layer1.1`, …), `avgpool`, `flatten` and `fc`; the prefix
/// `"layer3"` selects all of `layer3`'s blocks.
///
/// # Shapes
///
/// Input `[N, in_channels, H, W]`; output `[N, num_classes]`.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::resnet18;
/// use striate::nn::{summary, Module};
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let mut model = resnet18(1000, &mut rng);
/// assert_eq!(model.num_params(), 11_689_512);
/// model.replace_head(10, &mut rng);
/// assert_eq!(model.fc.out_features(), 10);
/// let table = summary(&model, &[1, 3, 64, 64]);
/// assert_eq!(table.rows[4].layer, "layer1.0: BasicBlock(64, 64, stride=1)");
/// assert_eq!(table.rows.last().unwrap().output_shape, vec![1, 10]);
/// ```
pub struct ResNet {
    /// The stem convolution.
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm,
    /// The stem's max pool (absent in the small-input variant).
    pub maxpool: Option<MaxPool2d>,
    /// Blocks at 64·expansion channels.
    pub layer1: Sequential,
    /// Blocks at 128·expansion channels, stride 2 first.
    pub layer2: Sequential,
    /// Blocks at 256·expansion channels, stride 2 first.
    pub layer3: Sequential,
    /// Blocks at 512·expansion channels, stride 2 first.
    pub layer4: Sequential,
    /// Adaptive average pooling to 1x1.
    pub avgpool: AdaptiveAvgPool2d,
    /// The classifier head.
    pub fc: Dense,
    config: ResNetConfig,
}

static RELU: Relu = Relu;
static FLATTEN: Flatten = Flatten { start_axis: 1 };

impl ResNet {
    /// The configuration the network was built with (`num_classes` as built, even after
    /// [`ResNet::replace_head`]).
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// Replaces `fc` with a fresh `Dense(512·expansion, num_classes)` (PyTorch's default
    /// initialisation) and returns the old head: the first step of fine-tuning for a new set
    /// of classes.
    pub fn replace_head<R: Rng + ?Sized>(&mut self, num_classes: usize, rng: &mut R) -> Dense {
        let head = Dense::new(self.fc.in_features(), num_classes, rng);
        std::mem::replace(&mut self.fc, head)
    }

    fn layers(&self) -> [(&'static str, &Sequential); 4] {
        [
            ("layer1", &self.layer1),
            ("layer2", &self.layer2),
            ("layer3", &self.layer3),
            ("layer4", &self.layer4),
        ]
    }

    fn stages_mut(&mut self) -> Vec<(String, &mut dyn Module)> {
        let mut stages: Vec<(String, &mut dyn Module)> = vec![
            ("conv1".into(), &mut self.conv1),
            ("bn1".into(), &mut self.bn1),
        ];
        for (name, layer) in [
            ("layer1", &mut self.layer1),
            ("layer2", &mut self.layer2),
            ("layer3", &mut self.layer3),
            ("layer4", &mut self.layer4),
        ] {
            stages.extend(super::stages::sequential_stages_mut(
                name,
                layer.layers_mut(),
            ));
        }
        stages.push(("avgpool".into(), &mut self.avgpool));
        stages.push(("fc".into(), &mut self.fc));
        stages
    }

    fn description(&self) -> String {
        let c = &self.config;
        let depth = match (c.block, c.layers) {
            (BlockKind::Basic, [2, 2, 2, 2]) => "ResNet-18".to_string(),
            (BlockKind::Basic, [3, 4, 6, 3]) => "ResNet-34".to_string(),
            (BlockKind::Bottleneck, [3, 4, 6, 3]) => "ResNet-50".to_string(),
            (block, layers) => format!("ResNet({block:?}, {layers:?})"),
        };
        let width = if c.width == 64 {
            String::new()
        } else {
            format!(", width={}", c.width)
        };
        format!(
            "{depth}{}(in_channels={}, num_classes={}{width})",
            if c.small_input { "-small" } else { "" },
            c.in_channels,
            self.fc.out_features()
        )
    }
}

impl FeatureExtraction for ResNet {
    fn stages(&self) -> Vec<(String, &dyn Module)> {
        let mut stages: Vec<(String, &dyn Module)> = vec![
            ("conv1".into(), &self.conv1),
            ("bn1".into(), &self.bn1),
            ("relu".into(), &RELU),
        ];
        if let Some(pool) = &self.maxpool {
            stages.push(("maxpool".into(), pool));
        }
        for (name, layer) in self.layers() {
            stages.extend(super::stages::sequential_stages(name, layer.layers()));
        }
        stages.push(("avgpool".into(), &self.avgpool));
        stages.push(("flatten".into(), &FLATTEN));
        stages.push(("fc".into(), &self.fc));
        stages
    }
}

module_from_stages!(ResNet);

/// ResNet-18 (torchvision's `resnet18`) for `num_classes` classes: 11,689,512 parameters for
/// 1000. See [`ResNetConfig`] for the architecture and the small-input variant.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::resnet18;
/// use striate::nn::Module;
/// use striate::Tensor;
///
/// let model = resnet18(10, &mut StdRng::seed_from_u64(0));
/// assert_eq!(model.predict(&Tensor::zeros(&[1, 3, 64, 64])).shape(), &[1, 10]);
/// ```
pub fn resnet18<R: Rng + ?Sized>(num_classes: usize, rng: &mut R) -> ResNet {
    ResNetConfig::resnet18(num_classes).init(rng)
}

/// ResNet-34 (torchvision's `resnet34`): 21,797,672 parameters for 1000 classes.
pub fn resnet34<R: Rng + ?Sized>(num_classes: usize, rng: &mut R) -> ResNet {
    ResNetConfig::resnet34(num_classes).init(rng)
}

/// ResNet-50 (torchvision's `resnet50`): 25,557,032 parameters for 1000 classes.
pub fn resnet50<R: Rng + ?Sized>(num_classes: usize, rng: &mut R) -> ResNet {
    ResNetConfig::resnet50(num_classes).init(rng)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::tensor::Tensor;

    #[test]
    fn cifar_resnet18_has_the_usual_parameter_count() {
        let model = ResNetConfig::resnet18(10)
            .small_input()
            .init(&mut StdRng::seed_from_u64(0));
        assert_eq!(model.num_params(), 11_173_962);
        assert_eq!(
            model
                .features(&Tensor::zeros(&[1, 3, 32, 32]), "layer4")
                .shape(),
            &[1, 512, 4, 4]
        );
    }

    #[test]
    fn bottleneck_network_shapes() {
        let model = ResNetConfig::new(BlockKind::Bottleneck, [1, 1, 1, 1], 7)
            .small_input()
            .in_channels(1)
            .init(&mut StdRng::seed_from_u64(0));
        assert_eq!(
            model.predict(&Tensor::zeros(&[2, 1, 28, 28])).shape(),
            &[2, 7]
        );
        assert_eq!(
            model
                .features(&Tensor::zeros(&[2, 1, 28, 28]), "avgpool")
                .shape(),
            &[2, 2048, 1, 1]
        );
    }

    #[test]
    #[should_panic(
        expected = "forward_until: no stage of ResNet-18(in_channels=3, num_classes=10) is named \"layer5\""
    )]
    fn unknown_stage_panics_with_the_stage_names() {
        let model = resnet18(10, &mut StdRng::seed_from_u64(0));
        model.features(&Tensor::zeros(&[1, 3, 32, 32]), "layer5");
    }
}
