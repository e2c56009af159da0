//! The flags every example shares, spelled the same everywhere: `--data-dir`, `--seed`,
//! `--threads` (and `--epochs` where an example trains, declared by that example since its
//! default differs).

use std::path::PathBuf;

use striate::data::{FashionMnist, ImageDataset, Mnist, Split};

/// Where the data comes from, the seed, and the thread count.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Directory holding the dataset files [default: $STRIATE_DATA, then ~/.cache/striate, else
    /// download]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seed for shuffling, initial weights and augmentation
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads for striate's kernels [default: one per core]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

impl Common {
    /// Starts striate's thread pool with `--threads` (or the default count), the main thread one
    /// of them, and lets malloc keep freed memory for the next training step (see
    /// `striate::set_num_threads` and `striate::keep_freed_memory`).
    pub fn start_threads(&self) -> striate::Result<()> {
        striate::keep_freed_memory();
        striate::set_num_threads(self.threads.map_or(0, usize::from))
    }

    /// MNIST (or Fashion-MNIST) `split`, looked for in `--data-dir` first.
    pub fn load(&self, fashion: bool, split: Split) -> striate::Result<ImageDataset> {
        let mut source = if fashion {
            FashionMnist::source()
        } else {
            Mnist::source()
        };
        if let Some(dir) = &self.data_dir {
            source = source.dir(dir);
        }
        source.load(split)
    }
}
