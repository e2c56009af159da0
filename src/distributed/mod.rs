//! Data-parallel training over MPI, behind the `mpi` feature: the way the field scales a
//! training program from one machine to many (PyTorch's `DistributedDataParallel`, Horovod).
//!
//! Every process (*rank*) of an MPI job holds a full replica of the model and trains on its
//! own shard of each epoch; after each backward pass the gradients are averaged over the
//! ranks and every rank takes the same optimizer step, so the replicas stay bit-identical.
//! Start the program with `mpirun -np N` (and a hostfile for several machines), start a
//! [`World`] at the top of `main`, and add one line to [`Fit`](crate::train::Fit):
//!
//! ```no_run
//! use rand::{SeedableRng, rngs::StdRng};
//! use striate::data::{DataLoader, Mnist, Split};
//! use striate::distributed::World;
//! use striate::models::mnist_cnn;
//! use striate::optim::{Sgd, SgdConfig};
//! use striate::train::Fit;
//!
//! let world = World::init()?;
//! let train = DataLoader::new(Mnist::source().load(Split::Train)?, 64).shuffle(0);
//! let mut model = mnist_cnn(10, &mut StdRng::seed_from_u64(0));
//! let mut sgd = Sgd::new(SgdConfig { learning_rate: 0.05, ..Default::default() });
//! Fit::new(&mut model, &mut sgd)
//!     .distributed(&world) // the one line
//!     .epochs(2)
//!     .run(&train)?;
//! # Ok::<(), striate::Error>(())
//! ```
//!
//! What happens, and what it guarantees:
//!
//! - **Sharding**: PyTorch's `DistributedSampler` semantics
//!   ([`DataLoader::epoch_shard`](crate::data::DataLoader::epoch_shard)). With `N` ranks and
//!   a loader of batch size `B`, a step sees the same `N·B` samples as one process with batch
//!   `N·B`, and reproduces it up to floating-point summation order.
//! - **Gradient buckets, overlapped**: gradients are packed, last layer first, into flat
//!   buckets of about [`DistributedOptions::bucket_bytes`]; a bucket's ring all-reduce starts
//!   on the communication thread as soon as backward has produced its last gradient, while
//!   backward goes on with the earlier layers.
//! - **Same step everywhere**: the all-reduce gives every rank the same bits, and every rank
//!   runs the same optimizer on them; [`DistributedOptions::check_replicas`] proves it after
//!   every step.
//! - **Batch norm** normalises with per-rank statistics, as in DDP; a layer made with
//!   [`BatchNorm::synchronized`](crate::nn::BatchNorm::synchronized) and
//!   [`World::replica_sum`] uses the global batch's (PyTorch's `SyncBatchNorm`).
//! - **Faults end the job**, never hang it: see [`World`].
//! - **Checkpoints**: [`save_checkpoint`] writes from rank 0 and records the number of ranks;
//!   [`load_checkpoint`] loads on every rank and refuses a checkpoint of another world size.
//!
//! `docs/distributed.md` has the cost model of the all-reduce and the measured scaling.

mod comm;
mod data_parallel;
mod world;

pub use data_parallel::DistributedOptions;
pub use world::{CommStats, DEFAULT_PEER_TIMEOUT, World};

use std::path::Path;

use crate::data::{DataLoader, Shard};
use crate::error::{Error, Result};
use crate::io::TrainingProgress;
use crate::metrics::ConfusionMatrix;
use crate::nn::Module;
use crate::optim::Optimizer;
use crate::train::{Evaluation, default_loss, evaluation_sums};

/// The metadata entry of a checkpoint that records the number of ranks that wrote it.
const WORLD_SIZE_KEY: &str = "world_size";

/// Saves a checkpoint of a data-parallel run: rank 0 writes it (every rank holds the same
/// parameters and optimizer state) with the number of ranks in its metadata; every rank
/// returns once the file is complete.
///
/// Collective: every rank must call it.
///
/// # Errors
///
/// [`Error::Io`] on every rank if rank 0 could not write the file (naming the path on rank 0).
///
/// # Examples
///
/// ```no_run
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::distributed::{World, load_checkpoint, save_checkpoint};
/// use striate::io::TrainingProgress;
/// use striate::models::mnist_cnn;
/// use striate::optim::{Sgd, SgdConfig};
///
/// let world = World::init()?;
/// let mut model = mnist_cnn(10, &mut StdRng::seed_from_u64(0));
/// let mut sgd = Sgd::new(SgdConfig::default());
/// // ... train with Fit::distributed ...
/// save_checkpoint(&world, "run.ckpt.safetensors", &model, &sgd, TrainingProgress { epoch: 1, step: 468, seed: 0 })?;
/// let progress = load_checkpoint(&world, "run.ckpt.safetensors", &mut model, &mut sgd)?;
/// # Ok::<(), striate::Error>(())
/// ```
pub fn save_checkpoint(
    world: &World,
    path: impl AsRef<Path>,
    model: &dyn Module,
    optimizer: &dyn Optimizer,
    progress: TrainingProgress,
) -> Result<()> {
    let path = path.as_ref();
    let written = if world.is_leader() {
        let extra = vec![(WORLD_SIZE_KEY.to_string(), world.size().to_string())];
        crate::io::save_checkpoint_with_metadata(path, model, optimizer, progress, extra)
    } else {
        Ok(())
    };
    let ok = world.gather_u64(written.is_ok() as u64)?;
    match written {
        Err(error) => Err(error),
        Ok(()) if ok[0] == 0 => Err(Error::Distributed(format!(
            "rank 0 could not write the checkpoint {}",
            path.display()
        ))),
        Ok(()) => Ok(()),
    }
}

/// Loads a checkpoint written by [`save_checkpoint`] on every rank (from a path every rank
/// can read: a shared or copied file) and returns the progress to resume from, with
/// [`Fit::start_epoch`](crate::train::Fit::start_epoch). Training resumed from it matches an
/// uninterrupted run.
///
/// Collective: every rank must call it.
///
/// # Errors
///
/// On every rank: [`Error::Distributed`] if the checkpoint was written by a run with another
/// number of ranks (its global batch and shards would differ), if some rank could not load
/// it (naming the ranks), or if the ranks loaded different states; otherwise what
/// [`crate::io::load_checkpoint`] returns on the rank that failed.
pub fn load_checkpoint(
    world: &World,
    path: impl AsRef<Path>,
    model: &mut dyn Module,
    optimizer: &mut dyn Optimizer,
) -> Result<TrainingProgress> {
    let path = path.as_ref();
    let loaded = crate::io::checkpoint_metadata(path).and_then(|metadata| {
        let recorded = metadata.get(WORLD_SIZE_KEY).map(String::as_str);
        if recorded != Some(world.size().to_string().as_str()) {
            return Err(Error::Distributed(format!(
                "{}: a checkpoint of a run on {} ranks cannot resume on {} (the global batch \
                 and the shards would differ)",
                path.display(),
                recorded.map_or("an unknown number of".into(), |n| n.to_string()),
                world.size()
            )));
        }
        crate::io::load_checkpoint(path, model, optimizer)
    });
    let ok = world.gather_u64(loaded.is_ok() as u64)?;
    let failed: Vec<String> = (0..world.size())
        .filter(|&r| ok[r] == 0)
        .map(|r| r.to_string())
        .collect();
    let progress = match loaded {
        Err(error) => return Err(error),
        Ok(_) if !failed.is_empty() => {
            return Err(Error::Distributed(format!(
                "rank(s) {} could not load the checkpoint {}",
                failed.join(", "),
                path.display()
            )));
        }
        Ok(progress) => progress,
    };
    let mut hash = data_parallel::Fingerprint::new();
    hash.word(data_parallel::parameter_fingerprint(model));
    for value in [progress.epoch, progress.step, progress.seed] {
        hash.word(value);
    }
    world.expect_same("the loaded checkpoint (a hash of it)", hash.finish())?;
    Ok(progress)
}

/// [`crate::train::evaluate`] over all ranks: each evaluates its part of `loader` (every
/// sample once, no padding), and the sums are merged, so every rank gets the figures of the
/// whole set.
///
/// Collective: every rank must call it.
///
/// # Errors
///
/// [`Error::EmptyData`] if `loader` yields no sample; [`Error::Distributed`] if the
/// communication thread has stopped.
pub fn evaluate(world: &World, model: &dyn Module, loader: &DataLoader) -> Result<Evaluation> {
    if loader.is_empty() {
        return Err(Error::EmptyData {
            what: "distributed::evaluate: the loader".into(),
        });
    }
    let shard = Shard::new(world.rank(), world.size());
    let batches = loader.epoch_shard_exact(0, shard).fallible();
    let mut sums = evaluation_sums(model, batches, &default_loss())?;
    world.sum_f64(&mut sums)?;
    Ok(Evaluation::from_sums(sums))
}

/// [`crate::train::confusion_matrix`] over all ranks: each counts its part of `loader`, and
/// the matrices are summed, so every rank gets the matrix (and accuracy) of the whole set.
///
/// Collective: every rank must call it.
///
/// # Errors
///
/// [`Error::EmptyData`] if `loader` yields no sample; [`Error::Distributed`] if the
/// communication thread has stopped.
///
/// # Panics
///
/// If a label or prediction is not below `num_classes`.
pub fn confusion_matrix(
    world: &World,
    model: &dyn Module,
    loader: &DataLoader,
    num_classes: usize,
) -> Result<ConfusionMatrix> {
    if loader.is_empty() {
        return Err(Error::EmptyData {
            what: "distributed::confusion_matrix: the loader".into(),
        });
    }
    let mut matrix = ConfusionMatrix::new(num_classes);
    let shard = Shard::new(world.rank(), world.size());
    for batch in loader.epoch_shard_exact(0, shard).fallible() {
        let batch = batch?;
        matrix.update_from_scores(&model.predict(&batch.images), &batch.labels);
    }
    // f64 sums of counts are exact below 2^53 samples.
    let mut counts: Vec<f64> = matrix.counts_mut().iter().map(|&c| c as f64).collect();
    world.sum_f64(&mut counts)?;
    for (count, sum) in matrix.counts_mut().iter_mut().zip(counts) {
        *count = sum as u64;
    }
    Ok(matrix)
}
