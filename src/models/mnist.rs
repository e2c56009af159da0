//! The small CNN that reaches 99% on MNIST in a few epochs.

use rand::Rng;

use crate::nn::{Conv2dConfig, Dense, Flatten, MaxPool2d, Relu, Sequential};

/// The MNIST CNN: conv(1→32, 3x3, pad 1) → ReLU → max-pool 2 → conv(32→64, 3x3, pad 1) →
/// ReLU → max-pool 2 → flatten → dense 128 → ReLU → dense `num_classes`, with PyTorch's default
/// initialisation. For `[N, 1, 28, 28]` inputs; 421,642 parameters for 10 classes.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::mnist_cnn;
/// use striate::nn::Module;
/// use striate::Tensor;
///
/// let model = mnist_cnn(10, &mut StdRng::seed_from_u64(0));
/// assert_eq!(model.num_params(), 421_642);
/// assert_eq!(model.predict(&Tensor::zeros(&[2, 1, 28, 28])).shape(), &[2, 10]);
/// ```
pub fn mnist_cnn<R: Rng + ?Sized>(num_classes: usize, rng: &mut R) -> Sequential {
    Sequential::new()
        .push(Conv2dConfig::new(1, 32, 3).padding(1).init(rng))
        .push(Relu)
        .push(MaxPool2d::new(2))
        .push(Conv2dConfig::new(32, 64, 3).padding(1).init(rng))
        .push(Relu)
        .push(MaxPool2d::new(2))
        .push(Flatten::new())
        .push(Dense::new(64 * 7 * 7, 128, rng))
        .push(Relu)
        .push(Dense::new(128, num_classes, rng))
}
