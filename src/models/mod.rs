//! Ready-made architectures and transfer learning.
//!
//! | network | constructor | parameters (1000 classes) |
//! |---|---|---|
//! | MNIST CNN | [`mnist_cnn`] | 421,642 (10 classes) |
//! | VGG-11/13/16/19, with or without batch norm | [`vgg16`], [`vgg16_bn`], … [`VggConfig`] | VGG-16: 138,357,544 |
//! | ResNet-18/34/50 | [`resnet18`], [`resnet34`], [`resnet50`], [`ResNetConfig`] | 11,689,512 / 21,797,672 / 25,557,032 |
//! | Inception module (GoogLeNet) | [`InceptionConfig`] → [`InceptionBlock`] | |
//! | depthwise-separable convolution, small Xception | [`SeparableConv2d`], [`MiniXception`] | |
//!
//! VGG and ResNet use **torchvision's parameter names and layouts** (`features.0.weight`,
//! `layer1.0.downsample.0.weight`, `fc.bias`, batch norm's `running_mean`, …), so a
//! torchvision checkpoint converted to safetensors (`docs/convert_torchvision.md`) loads with
//! [`crate::io::load_weights`] as it is. Every network takes its number of classes and input
//! channels, and has a variant for 28x28 and 32x32 images ([`VggConfig::small_input`],
//! [`ResNetConfig::small_input`]). [`crate::nn::summary`] lists each network's stages with
//! their output shapes.
//!
//! # Transfer learning
//!
//! A pretrained network is adapted to a new task in four moves, all by parameter name:
//!
//! 1. **Load** the pretrained weights, skipping the old head:
//!    [`crate::io::load_weights_partial`] reports what did not fit.
//! 2. **Replace the head** for the new classes: [`ResNet::replace_head`] (`fc`),
//!    [`Vgg::replace_head`] (`classifier.6`); any `Sequential` through
//!    [`Sequential::layers_mut`](crate::nn::Sequential::layers_mut).
//! 3. **Freeze** the backbone with [`freeze`] (and later [`unfreeze`] it), by name prefix.
//! 4. **Train** with a lower learning rate for the backbone than for the head, through the
//!    optimizer's [parameter groups](crate::optim::GroupOptions).
//!
//! **Batch norm in a frozen part stays in inference mode**, as in Keras: a [`BatchNorm`] whose
//! γ is frozen normalises with its running statistics and does not update them, even on a
//! training tape. The statistics learned on the large pretraining set are kept rather than
//! replaced by those of a few small batches of the new data, which would shift every
//! activation the frozen layers were trained for. (PyTorch differs: its batch norm follows
//! `model.train()`, whatever `requires_grad` says.) Unfreeze a part and its batch norm trains
//! again.
//!
//! [`FeatureExtraction`] runs a network up to a named stage instead, to use a pretrained
//! backbone as a fixed feature extractor: `model.features(&images, "layer4")`.
//!
//! [`BatchNorm`]: crate::nn::BatchNorm
//!
//! # Examples
//!
//! Fine-tuning a ResNet-18 for 10 classes: the head learns at `1e-2`, the unfrozen last stage
//! at `1e-4`, the rest stays frozen.
//!
//! ```
//! use rand::{SeedableRng, rngs::StdRng};
//! use striate::models::{freeze, unfreeze, ResNetConfig};
//! use striate::nn::Module;
//! use striate::optim::{GroupOptions, Momentum, Optimizer, Sgd, SgdConfig};
//! use striate::{Tape, Tensor};
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let mut model = ResNetConfig::resnet18(1000).small_input().init(&mut rng);
//! // striate::io::load_weights(&mut model, "resnet18.safetensors")?;  (pretrained weights)
//! model.replace_head(10, &mut rng);
//! freeze(&mut model, "");
//! unfreeze(&mut model, "layer4");
//! unfreeze(&mut model, "fc");
//! let mut optimizer = Sgd::new(SgdConfig {
//!     learning_rate: 1e-2,
//!     momentum: Some(Momentum::classic(0.9)),
//!     ..Default::default()
//! })
//! .with_group("layer4", GroupOptions { learning_rate: Some(1e-4), ..Default::default() });
//!
//! let images = Tensor::rand_uniform(&[4, 3, 32, 32], -1.0, 1.0, &mut rng);
//! let labels = [0, 3, 9, 3];
//! let tape = Tape::training();
//! let loss = model.forward(tape.input(images)).cross_entropy(&labels);
//! let grads = loss.backward();
//! optimizer.step(&mut model, &grads);
//! // the frozen stem's batch norm kept its running statistics
//! assert_eq!(model.bn1.running_mean(), Tensor::zeros(&[64]));
//! ```

mod inception;
mod mnist;
mod resnet;
pub(crate) mod stages;
mod transfer;
mod vgg;
mod xception;

pub use inception::{BasicConv2d, InceptionBlock, InceptionConfig};
pub use mnist::mnist_cnn;
pub use resnet::{
    BasicBlock, BlockKind, Bottleneck, ResNet, ResNetConfig, resnet18, resnet34, resnet50,
};
pub use stages::FeatureExtraction;
pub use transfer::{freeze, unfreeze};
pub use vgg::{Vgg, VggConfig, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn};
pub use xception::{MiniXception, SeparableConv2d, XceptionBlock};
