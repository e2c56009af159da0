//! Everything a training program needs, in one `use`:
//!
//! ```
//! use striate::prelude::*;
//! ```
//!
//! It brings the core types ([`Tensor`], [`Tape`], [`Var`], [`Param`]), the common layers and
//! the [`Module`] trait, the optimizers, the data loaders and datasets (with the [`Dataset`]
//! trait, so `len`, `image` and `label` work), [`Fit`] and evaluation, saving and loading
//! weights, the MNIST CNN, and a seedable random generator ([`StdRng`] with [`SeedableRng`])
//! for the constructors that draw initial weights. `rand` and `ndarray` themselves are
//! re-exported at the crate root ([`crate::rand`], [`crate::ndarray`]), so a program needs no
//! other dependency than striate.
//!
//! # Examples
//!
//! ```
//! use striate::prelude::*;
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let model = Sequential::new()
//!     .push(Flatten::new())
//!     .push(Dense::new(4, 2, &mut rng));
//! assert_eq!(model.predict(&Tensor::ones(&[1, 2, 2])).shape(), &[1, 2]);
//! ```

pub use crate::autograd::{Param, Tape, Var};
pub use crate::data::{
    DataLoader, Dataset, FashionMnist, ImageDataset, Mnist, Split, train_validation_split,
};
pub use crate::error::{Error, Result};
pub use crate::io::{load_checkpoint, load_weights, save_checkpoint, save_weights};
pub use crate::models::mnist_cnn;
pub use crate::nn::{
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Conv2dConfig, Dense, Dropout,
    Flatten, GlobalAvgPool2d, LeakyRelu, LogSoftmax, MaxPool2d, Module, Relu, Residual, Sequential,
    Sigmoid, Softmax, Tanh,
};
pub use crate::optim::{
    Adam, AdamConfig, AdamW, AdamWConfig, CosineAnnealingLr, LrSchedule, Momentum, Optimizer,
    ReduceLrOnPlateau, Sgd, SgdConfig, StepLr,
};
pub use crate::tensor::Tensor;
pub use crate::train::{EarlyStopping, Fit, History, Progress, confusion_matrix, evaluate};
pub use rand::rngs::StdRng;
pub use rand::{Rng, SeedableRng};
