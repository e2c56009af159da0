//! The model workloads `benches/train_step.rs` times and `scripts/paired/` exposes to
//! `scripts/paired_ratios.py`: one definition, so that both time the same thing.

use std::hint::black_box;

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::io::{load_state_dict, state_dict};
use striate::models::{ResNet, mnist_cnn, resnet18};
use striate::nn::{Module, Sequential};
use striate::optim::{Momentum, Optimizer, Sgd, SgdConfig};
use striate::{Tape, Tensor};

/// One SGD step of `model` on `images`: forward, cross-entropy, backward (with anomaly
/// detection if `detect`), update.
pub fn sgd_step(
    model: &mut impl Module,
    optimizer: &mut Sgd,
    images: &Tensor,
    labels: &[usize],
    detect: bool,
) {
    let grads = {
        let tape = Tape::training();
        tape.detect_anomaly(detect);
        let loss = model
            .forward(tape.input(images.clone()))
            .cross_entropy(labels);
        black_box(loss.item());
        loss.backward()
    };
    optimizer.step(model, &grads);
}

/// SGD with classic momentum 0.9, as `scripts/compare_pytorch.py`'s `torch.optim.SGD`.
pub fn momentum_sgd(learning_rate: f64) -> Sgd {
    Sgd::new(SgdConfig {
        learning_rate,
        momentum: Some(Momentum::classic(0.9)),
        ..Default::default()
    })
}

/// The MNIST CNN, a batch of 64 random images with labels to train on and a batch of 256 to
/// classify, and the state to start again from.
pub struct MnistWorkload {
    pub model: Sequential,
    pub optimizer: Sgd,
    pub images: Tensor,
    pub labels: Vec<usize>,
    pub batch: Tensor,
    initial: Vec<(String, Tensor)>,
    steps: u64,
}

impl MnistWorkload {
    /// Every `RESTART` steps the model and optimizer start again from the same initial state
    /// (untimed by the caller's choice). Trained for ever on one batch of random labels, the
    /// model memorises it, the loss nears 0, and after about 750 steps the backward pass fills
    /// with subnormal floats, which cost the CPU a microcode assist each: the step took twice
    /// as long (Sapphire Rapids). That is a benchmark's artefact, not a real run's, and
    /// PyTorch's side of `scripts/compare_pytorch.py` runs about a hundred steps from its
    /// initial state; so do these. (striate has no flush-to-zero switch yet; a real run that
    /// meets subnormals pays the same assists.)
    pub const RESTART: u64 = 100;

    pub fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(0);
        let model = mnist_cnn(10, &mut rng);
        let initial = state_dict(&model);
        let images = Tensor::rand_uniform(&[64, 1, 28, 28], 0.0, 1.0, &mut rng);
        let batch = Tensor::rand_uniform(&[256, 1, 28, 28], 0.0, 1.0, &mut rng);
        MnistWorkload {
            model,
            optimizer: momentum_sgd(0.05),
            images,
            labels: (0..64).map(|i| i % 10).collect(),
            batch,
            initial,
            steps: 0,
        }
    }

    /// Starts again from the initial state if this step is a multiple of [`Self::RESTART`];
    /// call before each timed step.
    pub fn restart_if_due(&mut self) {
        if self.steps.is_multiple_of(Self::RESTART) {
            load_state_dict(&mut self.model, &self.initial).expect("the model's own state");
            self.optimizer = momentum_sgd(0.05);
        }
        self.steps += 1;
    }

    /// One SGD step at batch 64.
    pub fn step(&mut self, detect: bool) {
        sgd_step(
            &mut self.model,
            &mut self.optimizer,
            &self.images,
            &self.labels,
            detect,
        );
    }

    /// Class scores of the batch of 256.
    pub fn infer(&self) -> Tensor {
        self.model.predict(&self.batch)
    }
}

/// ResNet-18 (1000 classes, random weights), a batch of 8 random 224x224 images with labels to
/// train on and a single image to classify.
pub struct ResNetWorkload {
    pub model: ResNet,
    pub optimizer: Sgd,
    pub images: Tensor,
    pub labels: Vec<usize>,
    pub image: Tensor,
}

impl ResNetWorkload {
    pub fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(0);
        let model = resnet18(1000, &mut rng);
        let images = Tensor::rand_uniform(&[8, 3, 224, 224], -2.0, 2.0, &mut rng);
        let image = Tensor::rand_uniform(&[1, 3, 224, 224], -2.0, 2.0, &mut rng);
        ResNetWorkload {
            model,
            optimizer: momentum_sgd(0.01),
            images,
            labels: (0..8).map(|i| i * 100).collect(),
            image,
        }
    }

    /// One SGD step at batch 8.
    pub fn step(&mut self) {
        sgd_step(
            &mut self.model,
            &mut self.optimizer,
            &self.images,
            &self.labels,
            false,
        );
    }

    /// Class scores of the single image.
    pub fn infer(&self) -> Tensor {
        self.model.predict(&self.image)
    }
}
