//! Datasets and batches: IDX files (MNIST, Fashion-MNIST), CIFAR-10/100, folders of images
//! (`ImageFolder`), where to find or download them, the `Dataset` trait, and a `DataLoader`
//! that turns a dataset into shuffled NCHW batches.
//!
//! Anything read from outside returns `Result<_, striate::Error>`: a missing, truncated or
//! corrupt file is an error naming the file, what was expected and what was found — never a
//! panic, never a silently short dataset.
//!
//! ```no_run
//! use striate::data::{DataLoader, Dataset, Mnist, Split, train_validation_split};
//!
//! // Found in $STRIATE_DATA/mnist or ~/.cache/striate/mnist, else downloaded there.
//! let (train, validation) = train_validation_split(Mnist::load(Split::Train)?, 0.1, 0);
//! let loader = DataLoader::new(train, 64)
//!     .shuffle(42)
//!     .drop_last(true)
//!     .normalize(&[0.1307], &[0.3081]);
//! for epoch in 0..2 {
//!     for batch in loader.epoch(epoch) {
//!         assert_eq!(batch.images.shape(), &[64, 1, 28, 28]);
//!         // ... a training step on batch.images and batch.labels
//!     }
//! }
//! println!("{} samples held out for validation", validation.len());
//! # Ok::<(), striate::Error>(())
//! ```

mod cifar;
mod dataset;
mod download;
mod idx;
mod image_folder;
mod loader;
mod mnist;
mod source;

pub use cifar::{Cifar10, Cifar100};
pub use dataset::{Dataset, ImageDataset, Subset, train_validation_split};
pub use download::Downloader;
pub use idx::{IdxArray, decode_idx, read_idx};
pub use image_folder::{
    ColorMode, IMAGE_EXTENSIONS, ImageFolder, ImageFolderOptions, OnUndecodable, SkippedFile,
    read_image,
};
pub use loader::{Batch, Batches, DataLoader, Shard, TryBatches};
pub use mnist::{FashionMnist, Mnist};
pub use source::{DATA_ENV, DataFile, DataSource, Split};
