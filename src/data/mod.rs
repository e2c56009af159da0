//! Datasets and batches: IDX files (MNIST, Fashion-MNIST), where to find or download them, the
//! `Dataset` trait, and a `DataLoader` that turns a dataset into shuffled NCHW batches.
//!
//! Anything read from outside returns `Result<_, striate::Error>`: a missing, truncated or
//! corrupt file is an error naming the file, what was expected and what was found — never a
//! panic, never a silently short dataset.
//!
//! ```no_run
//! use striate::data::{Dataset, Mnist, Split};
//!
//! let test = Mnist::load(Split::Test)?;
//! println!("{} test digits, the first a {}", test.len(), test.label(0));
//! # Ok::<(), striate::Error>(())
//! ```

mod dataset;
mod download;
mod idx;
mod loader;
mod mnist;

pub use dataset::{Dataset, ImageDataset, Subset, train_validation_split};
pub use download::Downloader;
pub use idx::{IdxArray, decode_idx, read_idx};
pub use loader::{Batch, Batches, DataLoader};
pub use mnist::{DATA_ENV, DataFile, DataSource, FashionMnist, Mnist, Split};
