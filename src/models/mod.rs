//! Ready-made architectures: the MNIST CNN; VGG, ResNet, Inception and Xception building
//! blocks follow torchvision's parameter names so converted weights load directly.

mod mnist;

pub use mnist::mnist_cnn;
