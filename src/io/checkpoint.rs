//! Training checkpoints: model state, optimizer state and progress in one safetensors file.

use std::collections::HashMap;
use std::path::Path;

use super::file::{read_contents, target, write_safetensors_with_integers};
use super::state::{LoadPlan, state_dict};
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::optim::Optimizer;
use crate::tensor::Tensor;

/// The `format` entry of a checkpoint's metadata.
const FORMAT: &str = "striate.checkpoint";
/// The version of the layout below; bumped if it changes incompatibly.
const VERSION: &str = "1";
const MODEL_PREFIX: &str = "model.";
const OPTIMIZER_PREFIX: &str = "optimizer.";

/// Where a training run is, and the seed all its randomness derives from.
///
/// A run is resumable exactly when every random draw of step `s` is made from a generator
/// seeded by `(seed, s)` rather than from one generator carried across steps:
/// [`TrainingProgress::step_seed`] for the step's tape (dropout) and augmentation,
/// [`TrainingProgress::epoch_seed`] for the epoch's shuffle. Then the progress is three
/// integers, stored exactly, and a resumed run draws what the uninterrupted one would have.
///
/// # Examples
///
/// ```
/// use striate::io::TrainingProgress;
/// use striate::Tape;
///
/// let mut progress = TrainingProgress { seed: 42, ..Default::default() };
/// let tape = Tape::training_with_seed(progress.step_seed());
/// # drop(tape);
/// progress.step += 1;
/// assert_ne!(progress.step_seed(), TrainingProgress { seed: 42, ..Default::default() }.step_seed());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TrainingProgress {
    /// Completed epochs.
    pub epoch: u64,
    /// Completed optimizer steps, over all epochs.
    pub step: u64,
    /// The run's seed.
    pub seed: u64,
}

impl TrainingProgress {
    /// The seed for the randomness of the current step: a SplitMix64 mix of `seed` and
    /// `step`, so neighbouring steps get unrelated streams.
    pub fn step_seed(&self) -> u64 {
        splitmix64(self.seed ^ splitmix64(self.step))
    }

    /// The seed for the current epoch's shuffle, unrelated to every step seed.
    pub fn epoch_seed(&self) -> u64 {
        splitmix64(!self.seed ^ splitmix64(self.epoch))
    }
}

/// SplitMix64's output function (Steele, Lea and Flood, 2014): a bijective 64-bit mixer.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Saves everything a training run needs to resume exactly: the model's parameters and
/// buffers (under `model.<name>`), the optimizer's state (under `optimizer.<key>`, see
/// [`Optimizer::state_dict`]) and the progress (in the header's metadata, as decimal
/// integers). Every integer is stored exactly: the optimizer's step counts
/// ([`Optimizer::state_counts`]) as I64 scalars, the progress as text, so a run past 2^24
/// steps resumes with its true counts. The file is a safetensors file, written atomically
/// (see [`AtomicFile`](crate::io::AtomicFile)).
///
/// Files written before counts were I64 (f32 counts, exact up to 2^24) still load.
///
/// # Errors
///
/// [`Error::Io`] naming the path if it cannot be written.
///
/// # Examples
///
/// ```no_run
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::io::{load_checkpoint, save_checkpoint, TrainingProgress};
/// use striate::models::mnist_cnn;
/// use striate::optim::{Adam, AdamConfig};
///
/// let model = mnist_cnn(10, &mut StdRng::seed_from_u64(0));
/// let optimizer = Adam::new(AdamConfig::default());
/// let progress = TrainingProgress { epoch: 3, step: 1407, seed: 7 };
/// save_checkpoint("run.ckpt.safetensors", &model, &optimizer, progress)?;
///
/// let mut model = mnist_cnn(10, &mut StdRng::seed_from_u64(1));
/// let mut optimizer = Adam::new(AdamConfig::default());
/// assert_eq!(load_checkpoint("run.ckpt.safetensors", &mut model, &mut optimizer)?, progress);
/// # Ok::<(), striate::Error>(())
/// ```
pub fn save_checkpoint(
    path: impl AsRef<Path>,
    model: &dyn Module,
    optimizer: &dyn Optimizer,
    progress: TrainingProgress,
) -> Result<()> {
    save_checkpoint_with_metadata(path.as_ref(), model, optimizer, progress, Vec::new())
}

/// [`save_checkpoint`] with `extra` entries in the header's metadata (a data-parallel run
/// records its number of ranks there).
pub(crate) fn save_checkpoint_with_metadata(
    path: &Path,
    model: &dyn Module,
    optimizer: &dyn Optimizer,
    progress: TrainingProgress,
    extra: Vec<(String, String)>,
) -> Result<()> {
    let model_state = state_dict(model)
        .into_iter()
        .map(|(name, t)| (format!("{MODEL_PREFIX}{name}"), t));
    // Counts are stored exactly, as I64, in place of their f32 tensors.
    let mut counts = Vec::new();
    for (key, count) in optimizer.state_counts(model) {
        let value = i64::try_from(count).map_err(|_| {
            Error::invalid_data(
                path.display().to_string(),
                format!("an optimizer count up to {} for {key}", i64::MAX),
                format!("{count}"),
            )
        })?;
        counts.push((format!("{OPTIMIZER_PREFIX}{key}"), value));
    }
    let optimizer_state = optimizer
        .state_dict(model)
        .into_iter()
        .map(|(key, t)| (format!("{OPTIMIZER_PREFIX}{key}"), t))
        .filter(|(key, _)| !counts.iter().any(|(k, _)| k == key));
    let tensors: Vec<(String, Tensor)> = model_state.chain(optimizer_state).collect();
    let mut metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("version".to_string(), VERSION.to_string()),
        ("epoch".to_string(), progress.epoch.to_string()),
        ("step".to_string(), progress.step.to_string()),
        ("seed".to_string(), progress.seed.to_string()),
    ]);
    metadata.extend(extra);
    write_safetensors_with_integers(path, &tensors, &counts, metadata)
}

/// The header metadata of the checkpoint at `path` (format, version, progress, and what
/// [`save_checkpoint_with_metadata`] added).
#[cfg(feature = "mpi")]
pub(crate) fn checkpoint_metadata(path: &Path) -> Result<HashMap<String, String>> {
    Ok(read_contents(path)?.metadata)
}

/// Restores a checkpoint written by [`save_checkpoint`] into a model and an optimizer of the
/// same kind and configuration, and returns the progress to resume from. Training continued
/// from here matches an uninterrupted run step for step, bit for bit (given the seeding rule
/// of [`TrainingProgress`]).
///
/// Everything is checked before anything is written: on error, the model and the optimizer
/// are unchanged.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be read; [`Error::InvalidData`] naming the file if it is
/// corrupt or truncated, not a striate checkpoint, or its progress is malformed;
/// [`Error::StateDict`] if the model's state does not fit (strictly, as
/// [`crate::io::load_weights`]) or the optimizer's does not (see
/// [`Optimizer::load_state_dict`]).
pub fn load_checkpoint(
    path: impl AsRef<Path>,
    model: &mut dyn Module,
    optimizer: &mut dyn Optimizer,
) -> Result<TrainingProgress> {
    let path = path.as_ref();
    let contents = read_contents(path)?;
    let origin = || path.display().to_string();
    let meta = &contents.metadata;
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(Error::invalid_data(
            origin(),
            format!("a checkpoint (metadata format = {FORMAT:?})"),
            match meta.get("format") {
                Some(format) => format!("format {format:?}"),
                None => "a safetensors file without a format entry (saved weights?)".into(),
            },
        ));
    }
    if meta.get("version").map(String::as_str) != Some(VERSION) {
        return Err(Error::invalid_data(
            origin(),
            format!("checkpoint version {VERSION}"),
            format!("version {:?}", meta.get("version")),
        ));
    }
    let integer = |key: &str| -> Result<u64> {
        let text = meta.get(key).map(String::as_str).unwrap_or("nothing");
        text.parse().map_err(|_| {
            Error::invalid_data(
                origin(),
                format!("an unsigned integer for {key}"),
                format!("{text:?}"),
            )
        })
    };
    let progress = TrainingProgress {
        epoch: integer("epoch")?,
        step: integer("step")?,
        seed: integer("seed")?,
    };
    let (mut model_state, mut optimizer_state, mut stray) = (Vec::new(), Vec::new(), Vec::new());
    let mut counts = Vec::new();
    for (key, tensor) in contents.tensors {
        if let Some(name) = key.strip_prefix(MODEL_PREFIX) {
            model_state.push((name.to_string(), tensor));
        } else if let Some(name) = key.strip_prefix(OPTIMIZER_PREFIX) {
            // An I64 scalar is an exact count (files before them held f32 counts, which load
            // as tensors, exact up to 2^24).
            if let Some(&value) = contents.integers.get(&key) {
                let count = u64::try_from(value).map_err(|_| {
                    Error::invalid_data(
                        origin(),
                        format!("a count of at least 0 for {key}"),
                        format!("{value}"),
                    )
                })?;
                counts.push((name.to_string(), count));
                continue;
            }
            optimizer_state.push((name.to_string(), tensor));
        } else {
            stray.push(key);
        }
    }
    let plan = LoadPlan::new(model, &model_state);
    let mut report = plan.report.clone();
    report.unexpected.extend(stray);
    if !report.is_complete() {
        return Err(report.into_error(target(model, path)));
    }
    optimizer
        .load_state_dict_with_counts(model, &optimizer_state, &counts)
        .map_err(|e| match e {
            // Name the file, as every error about a file does.
            Error::StateDict {
                target,
                missing,
                unexpected,
                mismatched,
            } => Error::StateDict {
                target: format!("{target} from {}", path.display()),
                missing,
                unexpected,
                mismatched,
            },
            other => other,
        })?;
    plan.apply(model);
    Ok(progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_across_steps_and_epochs() {
        let at = |epoch, step| TrainingProgress {
            epoch,
            step,
            seed: 1,
        };
        let steps: std::collections::HashSet<u64> =
            (0..100).map(|s| at(0, s).step_seed()).collect();
        assert_eq!(steps.len(), 100);
        assert_ne!(at(0, 0).epoch_seed(), at(1, 0).epoch_seed());
        assert_ne!(at(0, 0).epoch_seed(), at(0, 0).step_seed());
    }
}
