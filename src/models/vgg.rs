//! VGG (Simonyan and Zisserman, 2014) with torchvision's names and layouts.

use rand::Rng;

use super::stages::{
    FeatureExtraction, kaiming_conv, module_from_stages, sequential_stages, sequential_stages_mut,
};
use crate::autograd::Param;
use crate::nn::{
    AdaptiveAvgPool2d, BatchNorm2d, Conv2dConfig, Dense, Dropout, Flatten, MaxPool2d, Module, Relu,
    Sequential,
};
use crate::tensor::Tensor;
use crate::tensor::check::contract_violation;

/// The output channels of VGG's five stages; each stage ends with a 2x2 max pool.
const STAGE_WIDTHS: [usize; 5] = [64, 128, 256, 512, 512];

/// The 3x3 convolutions in each stage of torchvision's configurations "A", "B", "D" and "E".
fn convs_per_stage(depth: usize) -> [usize; 5] {
    match depth {
        11 => [1, 1, 2, 2, 2],
        13 => [2, 2, 2, 2, 2],
        16 => [2, 2, 3, 3, 3],
        19 => [2, 2, 4, 4, 4],
        _ => contract_violation(
            "VggConfig",
            "depth must be 11, 13, 16 or 19",
            format_args!("depth {depth}"),
        ),
    }
}

/// The options of a [`Vgg`]. [`VggConfig::new`] gives torchvision's ImageNet network;
/// [`VggConfig::small_input`] the variant for 28x28 and 32x32 images.
///
/// The network is
/// - `features`: the depth's stack of 3x3 convolutions (padding 1, each followed by batch norm
///   if asked, then ReLU) with a 2x2 max pool after each group: five pools in all;
/// - `avgpool`: adaptive average pooling to `pooled_size x pooled_size`;
/// - `classifier`: `Dense(512·pooled², hidden)`, ReLU, `Dropout(dropout)`,
///   `Dense(hidden, hidden)`, ReLU, `Dropout(dropout)`, `Dense(hidden, num_classes)` — indices
///   0 to 6, so the head is `classifier.6`.
///
/// Initialisation is torchvision's: convolutions Kaiming-normal (fan out, ReLU) with zero
/// bias, dense layers `N(0, 0.01)` with zero bias, batch norm γ = 1, β = 0.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::VggConfig;
/// use striate::nn::Module;
/// use striate::Tensor;
///
/// // VGG-11 with batch norm for grey 28x28 digits
/// let model = VggConfig::new(11).batch_norm(true).small_input().in_channels(1).num_classes(10)
///     .init(&mut StdRng::seed_from_u64(0));
/// assert_eq!(model.predict(&Tensor::zeros(&[2, 1, 28, 28])).shape(), &[2, 10]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VggConfig {
    /// 11, 13, 16 or 19 weight layers.
    pub depth: usize,
    /// Batch norm after every convolution (torchvision's `vgg16_bn`).
    pub batch_norm: bool,
    /// Classes of the head.
    pub num_classes: usize,
    /// Channels of the input images.
    pub in_channels: usize,
    /// The side of `avgpool`'s output: 7 for ImageNet, 1 for small inputs.
    pub pooled_size: usize,
    /// The width of the two hidden dense layers: 4096 for ImageNet, 512 for small inputs.
    pub hidden: usize,
    /// The dropout probability in the classifier.
    pub dropout: f32,
    /// Whether the pools round their output size up, so that 28x28 inputs survive five pools
    /// (28 → 14 → 7 → 4 → 2 → 1); it changes nothing for sizes that are multiples of 32.
    pub ceil_mode: bool,
}

impl VggConfig {
    /// torchvision's VGG of this depth for 1000 classes, RGB inputs of 224x224 (any size from
    /// 32x32 works, thanks to the adaptive pool), without batch norm.
    ///
    /// # Panics
    ///
    /// If `depth` is not 11, 13, 16 or 19.
    pub fn new(depth: usize) -> VggConfig {
        convs_per_stage(depth);
        VggConfig {
            depth,
            batch_norm: false,
            num_classes: 1000,
            in_channels: 3,
            pooled_size: 7,
            hidden: 4096,
            dropout: 0.5,
            ceil_mode: false,
        }
    }

    /// The variant for 28x28 and 32x32 inputs (CIFAR-style): the same `features`, with pools
    /// that round up so 28x28 maps reach 1x1 too; `avgpool` to 1x1; and a 512-wide classifier
    /// (`Dense(512, 512)`, `Dense(512, 512)`, `Dense(512, num_classes)`), keeping the
    /// parameter names of the ImageNet network. VGG-16 so has 15.2M parameters for 10 classes
    /// instead of 134M.
    pub fn small_input(mut self) -> VggConfig {
        self.pooled_size = 1;
        self.hidden = 512;
        self.ceil_mode = true;
        self
    }

    /// Turns batch norm after each convolution on or off.
    pub fn batch_norm(mut self, batch_norm: bool) -> VggConfig {
        self.batch_norm = batch_norm;
        self
    }

    /// Sets the number of classes.
    pub fn num_classes(mut self, num_classes: usize) -> VggConfig {
        self.num_classes = num_classes;
        self
    }

    /// Sets the number of input channels.
    pub fn in_channels(mut self, in_channels: usize) -> VggConfig {
        self.in_channels = in_channels;
        self
    }

    /// Builds the network.
    ///
    /// # Panics
    ///
    /// If the depth is unsupported or the dropout probability is outside `[0, 1]`.
    pub fn init<R: Rng + ?Sized>(self, rng: &mut R) -> Vgg {
        let mut features = Sequential::new();
        let mut channels = self.in_channels;
        for (&out, &convs) in STAGE_WIDTHS.iter().zip(&convs_per_stage(self.depth)) {
            for _ in 0..convs {
                let config = Conv2dConfig::new(channels, out, 3).padding(1);
                features = features.push(kaiming_conv(config, rng));
                if self.batch_norm {
                    features = features.push(BatchNorm2d::new(out));
                }
                features = features.push(Relu);
                channels = out;
            }
            features = features.push(MaxPool2d::new(2).ceil_mode(self.ceil_mode));
        }
        let flat = channels * self.pooled_size * self.pooled_size;
        let classifier = Sequential::new()
            .push(normal_dense(flat, self.hidden, rng))
            .push(Relu)
            .push(Dropout::new(self.dropout))
            .push(normal_dense(self.hidden, self.hidden, rng))
            .push(Relu)
            .push(Dropout::new(self.dropout))
            .push(normal_dense(self.hidden, self.num_classes, rng));
        Vgg {
            features,
            avgpool: AdaptiveAvgPool2d::new(self.pooled_size),
            classifier,
            config: self,
        }
    }
}

/// A dense layer as torchvision initialises VGG's: weight `N(0, 0.01)`, zero bias.
fn normal_dense<R: Rng + ?Sized>(in_features: usize, out_features: usize, rng: &mut R) -> Dense {
    Dense {
        weight: Param::new(
            "weight",
            Tensor::rand_normal(&[out_features, in_features], 0.0, 0.01, rng),
        ),
        bias: Some(Param::new("bias", Tensor::zeros(&[out_features]))),
    }
}

/// VGG with torchvision's parameter names (`features.<i>.*`, `classifier.<i>.*`), so weights
/// converted from torchvision load directly; see [`VggConfig`] for the architecture and the
/// small-input variant.
///
/// Its stages ([`FeatureExtraction`]) are `features.0` …, `avgpool`, `flatten`,
/// `classifier.0` … `classifier.6`.
///
/// # Shapes
///
/// Input `[N, in_channels, H, W]` with `H, W >= 32`; output `[N, num_classes]`.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::VggConfig;
/// use striate::nn::Module;
/// use striate::Tensor;
///
/// let mut model = VggConfig::new(16).small_input().num_classes(100).init(&mut StdRng::seed_from_u64(0));
/// assert_eq!(model.predict(&Tensor::zeros(&[1, 3, 32, 32])).shape(), &[1, 100]);
/// model.replace_head(10, &mut StdRng::seed_from_u64(1)); // fine-tune for 10 classes
/// assert_eq!(model.predict(&Tensor::zeros(&[1, 3, 32, 32])).shape(), &[1, 10]);
/// ```
pub struct Vgg {
    /// The convolutional feature stack.
    pub features: Sequential,
    /// Adaptive average pooling to the classifier's input size.
    pub avgpool: AdaptiveAvgPool2d,
    /// The dense classifier; `classifier.layers()[6]` is the head.
    pub classifier: Sequential,
    config: VggConfig,
}

/// The flatten between `avgpool` and `classifier` (a function call in torchvision, so it owns
/// no parameter name).
static FLATTEN: Flatten = Flatten { start_axis: 1 };

impl Vgg {
    /// The configuration the network was built with (`num_classes` as built, even after
    /// [`Vgg::replace_head`]).
    pub fn config(&self) -> &VggConfig {
        &self.config
    }

    /// Replaces the head `classifier.6` with a fresh `Dense(hidden, num_classes)` (PyTorch's
    /// default initialisation) and returns the old one: the first step of fine-tuning for a
    /// new set of classes.
    pub fn replace_head<R: Rng + ?Sized>(
        &mut self,
        num_classes: usize,
        rng: &mut R,
    ) -> Box<dyn Module> {
        let head = Box::new(Dense::new(self.config.hidden, num_classes, rng));
        std::mem::replace(&mut self.classifier.layers_mut()[6], head)
    }

    fn stages_mut(&mut self) -> Vec<(String, &mut dyn Module)> {
        let mut stages: Vec<(String, &mut dyn Module)> =
            sequential_stages_mut("features", self.features.layers_mut()).collect();
        stages.push(("avgpool".into(), &mut self.avgpool));
        stages.extend(sequential_stages_mut(
            "classifier",
            self.classifier.layers_mut(),
        ));
        stages
    }

    fn description(&self) -> String {
        let c = &self.config;
        format!(
            "VGG-{}{}(in_channels={}, num_classes={})",
            c.depth,
            if c.batch_norm { "-BN" } else { "" },
            c.in_channels,
            c.num_classes
        )
    }
}

impl FeatureExtraction for Vgg {
    fn stages(&self) -> Vec<(String, &dyn Module)> {
        let mut stages: Vec<(String, &dyn Module)> =
            sequential_stages("features", self.features.layers()).collect();
        stages.push(("avgpool".into(), &self.avgpool));
        stages.push(("flatten".into(), &FLATTEN));
        stages.extend(sequential_stages("classifier", self.classifier.layers()));
        stages
    }
}

module_from_stages!(Vgg);

/// VGG-11 (torchvision's `vgg11`) for `num_classes` classes: 132,863,336 parameters for 1000.
/// See [`VggConfig`] for the architecture and other variants.
pub fn vgg11<R: Rng + ?Sized>(num_classes: usize, rng: &mut R) -> Vgg {
    VggConfig::new(11).num_classes(num_classes).init(rng)
}

/// VGG-11 with batch norm (torchvision's `vgg11_bn`).
pub fn vgg11_bn<R: Rng + ?Sized>(num_classes: usize, rng: &mut R) -> Vgg {
    VggConfig::new(11)
        .batch_norm(true)
        .num_classes(num_classes)
        .init(rng)
}

/// VGG-13 (torchvision's `vgg13`).
pub fn vgg13<R: Rng + ?Sized>(num_classes: usize, rng: &mut R) -> Vgg {
    VggConfig::new(13).num_classes(num_classes).init(rng)
}

/// VGG-13 with batch norm (torchvision's `vgg13_bn`).
pub fn vgg13_bn<R: Rng + ?Sized>(num_classes: usize, rng: &mut R) -> Vgg {
    VggConfig::new(13)
        .batch_norm(true)
        .num_classes(num_classes)
        .init(rng)
}

/// VGG-16 (torchvision's `vgg16`): 138,357,544 parameters for 1000 classes, 553 MB of f32.
/// See [`VggConfig`] for the architecture and other variants.
///
/// # Examples
///
/// ```no_run
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::vgg16;
/// use striate::nn::{summary, Module};
///
/// let model = vgg16(1000, &mut StdRng::seed_from_u64(0));
/// assert_eq!(model.num_params(), 138_357_544);
/// println!("{}", summary(&model, &[1, 3, 224, 224]));
/// ```
pub fn vgg16<R: Rng + ?Sized>(num_classes: usize, rng: &mut R) -> Vgg {
    VggConfig::new(16).num_classes(num_classes).init(rng)
}

/// VGG-16 with batch norm (torchvision's `vgg16_bn`).
pub fn vgg16_bn<R: Rng + ?Sized>(num_classes: usize, rng: &mut R) -> Vgg {
    VggConfig::new(16)
        .batch_norm(true)
        .num_classes(num_classes)
        .init(rng)
}

/// VGG-19 (torchvision's `vgg19`).
pub fn vgg19<R: Rng + ?Sized>(num_classes: usize, rng: &mut R) -> Vgg {
    VggConfig::new(19).num_classes(num_classes).init(rng)
}

/// VGG-19 with batch norm (torchvision's `vgg19_bn`).
pub fn vgg19_bn<R: Rng + ?Sized>(num_classes: usize, rng: &mut R) -> Vgg {
    VggConfig::new(19)
        .batch_norm(true)
        .num_classes(num_classes)
        .init(rng)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::nn::summary;

    #[test]
    fn small_vgg_runs_on_28_and_32_pixel_inputs() {
        let model = VggConfig::new(11)
            .small_input()
            .in_channels(1)
            .num_classes(10)
            .init(&mut StdRng::seed_from_u64(0));
        for side in [28, 32] {
            let out = model.predict(&Tensor::zeros(&[2, 1, side, side]));
            assert_eq!(out.shape(), &[2, 10]);
        }
        let table = summary(&model, &[1, 1, 28, 28]);
        let pool = table
            .rows
            .iter()
            .find(|r| r.layer.starts_with("avgpool"))
            .unwrap();
        assert_eq!(pool.output_shape, vec![1, 512, 1, 1]);
        assert_eq!(
            table.rows.last().unwrap().layer,
            "classifier.6: Dense(512, 10)"
        );
    }

    #[test]
    fn small_vgg16_parameter_count() {
        let model = VggConfig::new(16)
            .small_input()
            .num_classes(10)
            .init(&mut StdRng::seed_from_u64(0));
        // 14,714,688 conv parameters + 512·512·2 + 512·2 + 512·10 + 10
        assert_eq!(
            model.num_params(),
            14_714_688 + 2 * (512 * 512 + 512) + 5130
        );
    }

    #[test]
    #[should_panic(expected = "VggConfig: depth must be 11, 13, 16 or 19 (depth 12)")]
    fn unsupported_depth_panics() {
        VggConfig::new(12);
    }
}
