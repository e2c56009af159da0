//! Training end to end: [`Fit`], a Keras-style `fit` loop over a [`DataLoader`], with
//! validation, schedules, callbacks (early stopping), progress, NaN detection and training
//! curves; and [`evaluate`] / [`confusion_matrix`] for a trained model.
//!
//! # Examples
//!
//! ```
//! use rand::{SeedableRng, rngs::StdRng};
//! use striate::data::{DataLoader, ImageDataset};
//! use striate::nn::{Dense, Flatten, Relu, Sequential};
//! use striate::optim::{Momentum, Sgd, SgdConfig};
//! use striate::train::{Fit, Progress};
//! use striate::Tensor;
//!
//! // A toy problem: is the image bright or dark?
//! let mut rng = StdRng::seed_from_u64(0);
//! let pixels: Vec<u8> = (0..64).flat_map(|i| vec![if i % 2 == 0 { 20 } else { 230 }; 16]).collect();
//! let labels = (0..64).map(|i| i % 2).collect();
//! let data = ImageDataset::from_u8(pixels, [1, 4, 4], labels)?;
//! let loader = DataLoader::new(data, 16).shuffle(1);
//!
//! let mut model = Sequential::new()
//!     .push(Flatten::new())
//!     .push(Dense::new(16, 8, &mut rng))
//!     .push(Relu)
//!     .push(Dense::new(8, 2, &mut rng));
//! let mut sgd = Sgd::new(SgdConfig { learning_rate: 0.1, momentum: Some(Momentum::classic(0.9)), ..Default::default() });
//! let history = Fit::new(&mut model, &mut sgd)
//!     .epochs(20)
//!     .progress(Progress::Silent)
//!     .run(&loader)?;
//! assert!(history.last().unwrap().train_accuracy > 0.95);
//! # Ok::<(), striate::Error>(())
//! ```

mod callbacks;
mod history;
mod lr_finder;
mod parallel;
mod progress;
pub mod tensorboard;

use std::path::PathBuf;
use std::time::Instant;

pub use callbacks::{Callback, Control, EarlyStopping, Monitor};
pub use history::{EpochRecord, History};
pub use lr_finder::{LrFinder, LrRange};
pub(crate) use parallel::{Replicas, RunFacts};
pub use progress::Progress;

use crate::autograd::{Tape, Var};
use crate::data::DataLoader;
use crate::error::{Error, Result};
use crate::metrics::ConfusionMatrix;
use crate::nn::Module;
use crate::optim::{LrSchedule, Optimizer, ReduceLrOnPlateau, WeightAverage, clip_grad_norm};
use progress::EpochProgress;

/// A loss of logits and class labels, such as `|logits, labels| logits.cross_entropy(labels)`.
pub type LossFn<'a> = Box<dyn for<'t> Fn(Var<'t>, &[usize]) -> Var<'t> + 'a>;

/// The default loss: mean softmax cross-entropy of logits against class labels.
fn cross_entropy<'t>(logits: Var<'t>, labels: &[usize]) -> Var<'t> {
    logits.cross_entropy(labels)
}

/// A training run of a classifier, configured builder-style and started with [`Fit::run`].
///
/// `Fit` trains classification models: the loss takes the model's output (logits) and class
/// labels, and accuracy is counted from the largest logit. For another task (regression,
/// segmentation, a custom objective), write the loop yourself; it is short:
///
/// ```
/// use striate::prelude::*;
///
/// // Regression: fit y = 2x with a dense layer, mean squared error.
/// let mut rng = StdRng::seed_from_u64(0);
/// let mut model = Dense::new(1, 1, &mut rng);
/// let mut sgd = Sgd::new(SgdConfig { learning_rate: 0.1, ..Default::default() });
/// let x = Tensor::from_vec((0..8).map(|i| i as f32 / 8.0).collect(), &[8, 1])?;
/// let y = x.map(|v| 2.0 * v);
/// for _step in 0..200 {
///     let grads = {
///         let tape = Tape::training();
///         let prediction = model.forward(tape.input(x.clone()));
///         let loss = prediction.mse(tape.input(y.clone()));
///         if !loss.item().is_finite() {
///             return Err(Error::NonFinite { what: "loss".into(), value: loss.item() });
///         }
///         loss.backward()
///     };
///     sgd.step(&mut model, &grads);
/// }
/// assert!((model.weight.value().as_slice()[0] - 2.0).abs() < 0.1);
/// # Ok::<(), striate::Error>(())
/// ```
///
/// Each step runs the model on a fresh training tape (seeded from the run's seed and the step
/// number, so dropout repeats exactly), computes the loss, stops with an error if it is NaN or
/// infinite, runs backward, optionally clips the gradient norm, and steps the optimizer. Each
/// epoch then validates (on inference tapes), applies the schedules, records an
/// [`EpochRecord`], shows progress, and asks the callbacks whether to go on.
pub struct Fit<'a> {
    model: &'a mut dyn Module,
    optimizer: &'a mut dyn Optimizer,
    epochs: usize,
    validation: Option<&'a DataLoader>,
    loss: LossFn<'a>,
    schedule: Option<Box<dyn LrSchedule + 'a>>,
    plateau: Option<ReduceLrOnPlateau>,
    callbacks: Vec<Box<dyn Callback + 'a>>,
    progress: Progress,
    plot: Option<PathBuf>,
    max_grad_norm: Option<f32>,
    seed: u64,
    first_epoch: usize,
    detect_anomaly: bool,
    log: Option<tensorboard::LogConfig>,
    board: Option<tensorboard::FitLog>,
    /// The data-parallel group this run is one replica of (see `Fit::distributed`).
    replicas: Option<Box<dyn Replicas + 'a>>,
    /// The weight average updated after every step (see `Fit::average_weights`).
    average: Option<AverageSlot<'a>>,
}

/// A weight average that `Fit` owns ([`Fit::ema`]) or borrows ([`Fit::average_weights`]).
enum AverageSlot<'a> {
    Owned(WeightAverage),
    Borrowed(&'a mut WeightAverage),
}

impl AverageSlot<'_> {
    fn get(&mut self) -> &mut WeightAverage {
        match self {
            AverageSlot::Owned(average) => average,
            AverageSlot::Borrowed(average) => average,
        }
    }
}

impl<'a> Fit<'a> {
    /// A run of one epoch with cross-entropy loss, automatic progress and seed 0.
    pub fn new(model: &'a mut dyn Module, optimizer: &'a mut dyn Optimizer) -> Fit<'a> {
        Fit {
            model,
            optimizer,
            epochs: 1,
            validation: None,
            loss: Box::new(cross_entropy),
            schedule: None,
            plateau: None,
            callbacks: Vec::new(),
            progress: Progress::Auto,
            plot: None,
            max_grad_norm: None,
            seed: 0,
            first_epoch: 0,
            detect_anomaly: false,
            log: None,
            board: None,
            replicas: None,
            average: None,
        }
    }

    /// Makes this run one replica of a data-parallel group: each epoch trains on this
    /// replica's shard, gradients are averaged over the group, metrics are merged, and only
    /// the replica of rank 0 shows progress and writes plots and logs.
    #[cfg(feature = "mpi")]
    pub(crate) fn with_replicas(mut self, replicas: Box<dyn Replicas + 'a>) -> Self {
        self.replicas = Some(replicas);
        self
    }

    /// The number of epochs to train.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Evaluates on `loader` after every epoch.
    pub fn validation(mut self, loader: &'a DataLoader) -> Self {
        self.validation = Some(loader);
        self
    }

    /// Replaces the loss (default: cross-entropy on logits).
    pub fn loss(mut self, loss: impl for<'t> Fn(Var<'t>, &[usize]) -> Var<'t> + 'a) -> Self {
        self.loss = Box::new(loss);
        self
    }

    /// Sets every group's learning rate from `schedule` at the start of each epoch.
    ///
    /// With [`Fit::reduce_on_plateau`] as well, the two compose as in PyTorch: each plateau
    /// multiplies the scheduled rates from then on by the plateau's `factor` (never below its
    /// `min_lr`, unless the schedule itself goes lower).
    pub fn schedule(mut self, schedule: impl LrSchedule + 'a) -> Self {
        self.schedule = Some(Box::new(schedule));
        self
    }

    /// Reduces the learning rate when the validation loss (or the training loss, without
    /// validation) stops improving. Composes with [`Fit::schedule`] (see there).
    pub fn reduce_on_plateau(mut self, plateau: ReduceLrOnPlateau) -> Self {
        self.plateau = Some(plateau);
        self
    }

    /// Adds a callback run after every epoch.
    pub fn callback(mut self, callback: impl Callback + 'a) -> Self {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// How progress is shown.
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Writes the loss and accuracy curves to this SVG file after every epoch.
    pub fn plot(mut self, path: impl Into<PathBuf>) -> Self {
        self.plot = Some(path.into());
        self
    }

    /// Clips the global gradient norm to `max_norm` before each step.
    pub fn clip_grad_norm(mut self, max_norm: f32) -> Self {
        self.max_grad_norm = Some(max_norm);
        self
    }

    /// Keeps an exponential moving average of the weights with this `decay`, updated after
    /// every optimizer step, and ends training with it in the model: Keras's
    /// `optimizer(use_ema=True, ema_momentum=decay)`, with PyTorch's arithmetic. Short for
    /// [`Fit::average_weights`] with a [`WeightAverage::ema`] that `Fit` owns; see there for
    /// what validation, callbacks and the trained model get.
    ///
    /// A decay `d` averages over roughly the last `1 / (1 − d)` steps: 0.999 suits runs of
    /// several thousand steps, 0.99 runs of a few hundred.
    ///
    /// # Panics
    ///
    /// If `decay` is not in `[0, 1]`.
    ///
    /// # Examples
    ///
    /// ```
    /// use rand::{SeedableRng, rngs::StdRng};
    /// use striate::data::{DataLoader, ImageDataset};
    /// use striate::nn::{Dense, Flatten, Sequential};
    /// use striate::optim::{Momentum, Sgd, SgdConfig};
    /// use striate::train::{Fit, Progress};
    ///
    /// let pixels: Vec<u8> = (0..64).flat_map(|i| vec![if i % 2 == 0 { 20 } else { 230 }; 4]).collect();
    /// let data = ImageDataset::from_u8(pixels, [1, 2, 2], (0..64).map(|i| i % 2).collect())?;
    /// let loader = DataLoader::new(data, 8).shuffle(0);
    /// let mut model = Sequential::new().push(Flatten::new()).push(Dense::new(4, 2, &mut StdRng::seed_from_u64(0)));
    /// let mut sgd = Sgd::new(SgdConfig { learning_rate: 0.1, momentum: Some(Momentum::classic(0.9)), ..Default::default() });
    /// let history = Fit::new(&mut model, &mut sgd)
    ///     .epochs(5)
    ///     .ema(0.9)
    ///     .validation(&loader)
    ///     .progress(Progress::Silent)
    ///     .run(&loader)?;
    /// // Validated, and now in `model`: the averaged weights.
    /// assert_eq!(history.last().unwrap().val_accuracy, Some(1.0));
    /// # Ok::<(), striate::Error>(())
    /// ```
    pub fn ema(mut self, decay: f64) -> Self {
        self.average = Some(AverageSlot::Owned(WeightAverage::ema(decay)));
        self
    }

    /// Updates `average` with the model's weights after every optimizer step (PyTorch's
    /// `AveragedModel.update_parameters`; see [`WeightAverage`] for the arithmetic, the start
    /// step and batch-norm buffers), and trains the last weights while judging the averaged
    /// ones:
    ///
    /// - **Validation and callbacks** see the averaged weights (and averaged batch-norm
    ///   statistics): each epoch's `val_loss` and `val_accuracy` are those of the model this
    ///   run would return if it stopped there, and [`EarlyStopping`]'s
    ///   `restore_best_weights` or a callback that saves the model keep what was measured.
    ///   Until the average has its first model (before its start step), they see the
    ///   trained weights. The training loss and accuracy are those of the trained weights.
    /// - **The model ends with the averaged weights**, as Keras's `fit` leaves a model trained
    ///   with `use_ema` (PyTorch keeps a second model instead): what you save or evaluate
    ///   after `run` is the average. The last trained weights stay in `average`
    ///   ([`WeightAverage::is_swapped`]); a later `Fit` given the same average swaps them back
    ///   before training on, so a run split into several `Fit` calls (with
    ///   [`Fit::start_epoch`]) trains as one. [`WeightAverage::state_dict`] saves both for a
    ///   checkpoint.
    /// - If `run` fails, the model holds the last trained weights, not the average. With
    ///   [`EarlyStopping::restore_best_weights`], it ends with the best epoch's average (what
    ///   was validated then), while `average` keeps the last trained weights.
    ///
    /// Each update is one pass over the parameters and buffers, after the optimizer's own.
    ///
    /// # Examples
    ///
    /// SWA's equal average of the weights after each step of the last two epochs:
    ///
    /// ```
    /// use rand::{SeedableRng, rngs::StdRng};
    /// use striate::data::{DataLoader, ImageDataset};
    /// use striate::nn::{Dense, Flatten, Sequential};
    /// use striate::optim::{Sgd, SgdConfig, WeightAverage};
    /// use striate::train::{Fit, Progress};
    ///
    /// let pixels: Vec<u8> = (0..64).flat_map(|i| vec![if i % 2 == 0 { 20 } else { 230 }; 4]).collect();
    /// let data = ImageDataset::from_u8(pixels, [1, 2, 2], (0..64).map(|i| i % 2).collect())?;
    /// let loader = DataLoader::new(data, 8).shuffle(0);
    /// let mut model = Sequential::new().push(Flatten::new()).push(Dense::new(4, 2, &mut StdRng::seed_from_u64(0)));
    /// let mut sgd = Sgd::new(SgdConfig { learning_rate: 0.1, ..Default::default() });
    /// let mut swa = WeightAverage::equal().start_step(3 * loader.len() as u64);
    /// Fit::new(&mut model, &mut sgd)
    ///     .epochs(5)
    ///     .average_weights(&mut swa)
    ///     .progress(Progress::Silent)
    ///     .run(&loader)?;
    /// assert_eq!(swa.n_averaged(), 2 * loader.len() as u64);
    /// assert!(swa.is_swapped()); // the model holds the average
    /// # Ok::<(), striate::Error>(())
    /// ```
    pub fn average_weights(mut self, average: &'a mut WeightAverage) -> Self {
        self.average = Some(AverageSlot::Borrowed(average));
        self
    }

    /// Puts the weight average, if there is one with a model in it, into the model
    /// (`into_model`) or takes it out again.
    fn swap_average(&mut self, into_model: bool) {
        if let Some(slot) = &mut self.average {
            let average = slot.get();
            if average.is_swapped() != into_model && !average.is_empty() {
                average.swap(self.model);
            }
        }
    }

    /// Seeds the training tapes (dropout masks).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Checks every op's output and every gradient of every step for NaN and infinity, like
    /// PyTorch's `torch.autograd.detect_anomaly`, and stops at the first with an error naming
    /// the op, the layer (the parameter-name prefix, such as `features.3`), the epoch and the
    /// step. Off by default: it reads every activation and gradient once more (the README
    /// gives its measured cost).
    ///
    /// Without it, a run still stops at a non-finite loss or gradient, naming the epoch, the
    /// step and (for a gradient) the parameter, but not where the value first appeared.
    pub fn detect_anomaly(mut self, enabled: bool) -> Self {
        self.detect_anomaly = enabled;
        self
    }

    /// Starts counting at `epoch` (0-based) to resume a run: the loader's shuffling, the
    /// schedule and the tape seeds continue where an uninterrupted run would be.
    pub fn start_epoch(mut self, epoch: usize) -> Self {
        self.first_epoch = epoch;
        self
    }

    /// Writes TensorBoard event files to `dir` (created if needed; view with
    /// `tensorboard --logdir dir`): after every step the batch loss (`train/batch_loss`), the
    /// step time (`time/step_seconds`) and each parameter group's learning rate
    /// (`learning_rate/group<i>`) at the global step (1-based); after every epoch the
    /// training and validation loss and accuracy (`epoch/train_loss`, `epoch/val_accuracy`,
    /// ...) and the learning rate at the epoch number (1-based). See
    /// [`Fit::histograms_every`] for weights and gradients.
    ///
    /// # Examples
    ///
    /// ```
    /// use rand::{SeedableRng, rngs::StdRng};
    /// use striate::data::{DataLoader, ImageDataset};
    /// use striate::nn::{Dense, Flatten, Sequential};
    /// use striate::optim::{Sgd, SgdConfig};
    /// use striate::train::{Fit, Progress};
    ///
    /// let data = ImageDataset::from_u8(vec![7; 8 * 4], [1, 2, 2], vec![0, 1, 0, 1, 0, 1, 0, 1])?;
    /// let mut model = Sequential::new().push(Flatten::new()).push(Dense::new(4, 2, &mut StdRng::seed_from_u64(0)));
    /// let mut sgd = Sgd::new(SgdConfig { learning_rate: 0.1, ..Default::default() });
    /// let dir = std::env::temp_dir().join("striate-doc-fit-logs");
    /// Fit::new(&mut model, &mut sgd)
    ///     .epochs(2)
    ///     .progress(Progress::Silent)
    ///     .log_dir(&dir)
    ///     .histograms_every(2)
    ///     .run(&DataLoader::new(data, 4))?;
    /// assert!(std::fs::read_dir(&dir)?.count() >= 1);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        let histograms_every = self.log.as_ref().and_then(|l| l.histograms_every);
        self.log = Some(tensorboard::LogConfig {
            dir: dir.into(),
            histograms_every,
        });
        self
    }

    /// With [`Fit::log_dir`], also logs a histogram of every parameter (`weights/<name>`)
    /// and of its gradient (`gradients/<name>`) every `steps` optimizer steps.
    pub fn histograms_every(mut self, steps: usize) -> Self {
        match &mut self.log {
            Some(log) => log.histograms_every = Some(steps),
            None => {
                self.log = Some(tensorboard::LogConfig {
                    dir: PathBuf::new(),
                    histograms_every: Some(steps),
                })
            }
        }
        self
    }

    /// Sets every parameter group's learning rate (keeping their ratios, see
    /// [`Optimizer::set_learning_rate`]), say to a [`Fit::find_lr`] suggestion.
    pub fn learning_rate(self, learning_rate: f64) -> Self {
        self.optimizer.set_learning_rate(learning_rate);
        self
    }

    /// The learning-rate range test (Smith 2017; fastai's and Lightning's `lr_find`): trains
    /// on batches of `train` while the learning rate grows exponentially from
    /// `range.min_lr` to `range.max_lr`, tracks the exponentially smoothed loss, stops when it
    /// exceeds `range.divergence` times its best, and suggests the rate at its steepest
    /// descent. The model's parameters and buffers and the optimizer's state and learning
    /// rates are restored afterwards, bit for bit. [`LrFinder::save_plot`] draws the curve.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidData`] if `train` has no batch; [`Error::StateDict`] if the
    /// optimizer's state cannot be restored.
    ///
    /// # Panics
    ///
    /// If the range is not `0 < min_lr < max_lr` with at least 2 steps, smoothing in
    /// `[0, 1)` and divergence above 1.
    ///
    /// # Examples
    ///
    /// ```
    /// use rand::{SeedableRng, rngs::StdRng};
    /// use striate::data::{DataLoader, ImageDataset};
    /// use striate::nn::{Dense, Flatten, Sequential};
    /// use striate::optim::{Sgd, SgdConfig};
    /// use striate::train::{Fit, LrRange, Progress};
    ///
    /// let pixels: Vec<u8> = (0..64).flat_map(|i| vec![if i % 2 == 0 { 20 } else { 230 }; 4]).collect();
    /// let data = ImageDataset::from_u8(pixels, [1, 2, 2], (0..64).map(|i| i % 2).collect())?;
    /// let loader = DataLoader::new(data, 8).shuffle(0);
    /// let mut model = Sequential::new().push(Flatten::new()).push(Dense::new(4, 2, &mut StdRng::seed_from_u64(0)));
    /// let mut sgd = Sgd::new(SgdConfig { learning_rate: 0.01, ..Default::default() });
    /// let mut fit = Fit::new(&mut model, &mut sgd).progress(Progress::Silent);
    /// let found = fit.find_lr(&loader, &LrRange { min_lr: 1e-4, max_lr: 10.0, steps: 40, ..Default::default() })?;
    /// let suggested = found.suggestion.unwrap();
    /// # let plot = std::env::temp_dir().join("striate-doc-lr-find.svg");
    /// found.save_plot(&plot)?;
    /// # std::fs::remove_file(&plot)?;
    /// fit.learning_rate(suggested).epochs(2).run(&loader)?;
    /// # Ok::<(), striate::Error>(())
    /// ```
    pub fn find_lr(&mut self, train: &DataLoader, range: &LrRange) -> Result<LrFinder> {
        lr_finder::find_lr(
            self.model,
            self.optimizer,
            &self.loss,
            train,
            range,
            self.seed,
        )
    }

    /// Trains on `train` and returns what each epoch measured.
    ///
    /// # Errors
    ///
    /// [`Error::NonFinite`] naming the epoch and step if the loss or a gradient becomes NaN
    /// or infinite (and, with [`Fit::detect_anomaly`], the op and layer where the first
    /// non-finite value appeared), with the model left as it was before that step;
    /// [`Error::EmptyData`] if the training or validation loader yields no sample;
    /// [`Error::Config`] if the model has no trainable parameter or its two parameter visitors
    /// disagree (it would never learn); [`Error::Io`] if the plot cannot be written.
    pub fn run(mut self, train: &DataLoader) -> Result<History> {
        expect_data("Fit::run: the training loader", train)?;
        if let Some(validation) = self.validation {
            expect_data("Fit::run: the validation loader", validation)?;
        }
        expect_trainable(self.model)?;
        let mut history = History::default();
        let mut batches = train.len();
        if let Some(replicas) = &mut self.replicas {
            let shard = replicas.shard();
            batches = train.shard_len(shard.replicas());
            if batches == 0 {
                return Err(Error::EmptyData {
                    what: format!(
                        "Fit::run: each of the {} shards of the training loader ({} samples, \
                         batch size {}, drop_last)",
                        shard.replicas(),
                        train.dataset().len(),
                        train.batch_size()
                    ),
                });
            }
            let facts = RunFacts {
                train,
                validation: self.validation,
                first_epoch: self.first_epoch,
                epochs: self.epochs,
                seed: self.seed,
            };
            replicas.prepare(self.model, &facts)?;
            if shard.rank() != 0 {
                // Rank 0 speaks for the group.
                self.progress = Progress::Silent;
                self.plot = None;
                self.log = None;
            }
        }
        if let Some(log) = self.log.as_ref().filter(|l| !l.dir.as_os_str().is_empty()) {
            self.board = Some(tensorboard::FitLog::create(log)?);
        }
        let mut plateau_scale = 1.0;
        let result = (|| {
            for epoch in self.first_epoch..self.first_epoch + self.epochs {
                // Train the last weights; validate and call back with the average.
                self.swap_average(false);
                self.set_learning_rates(epoch, plateau_scale);
                let (mut record, display) = self.train_epoch(train, epoch, batches)?;
                self.swap_average(true);
                self.validate(&mut record)?;
                display.finish(&record);
                plateau_scale *= self.plateau_step(&record);
                if let Some(board) = &mut self.board {
                    board.epoch(&record)?;
                }
                history.epochs.push(record.clone());
                if let Some(path) = &self.plot {
                    history.save_plot(path)?;
                }
                for callback in &mut self.callbacks {
                    if let Control::Stop(reason) = callback.on_epoch_end(&record, self.model) {
                        history.stopped_early = Some(reason);
                    }
                }
                if history.stopped_early.is_some() {
                    break;
                }
            }
            Ok(())
        })();
        if result.is_err() {
            self.swap_average(false);
        }
        for callback in &mut self.callbacks {
            callback.on_train_end(self.model);
        }
        if let (Err(error), Some(replicas)) = (&result, &mut self.replicas) {
            replicas.fail(error);
        }
        result.map(|()| history)
    }

    /// The learning rates for `epoch`: the schedule's (if any), scaled by the plateau
    /// reductions so far (never below the plateau's `min_lr` unless the schedule is lower).
    fn set_learning_rates(&mut self, epoch: usize, plateau_scale: f64) {
        let Some(schedule) = &self.schedule else {
            return; // the rates stay as the optimizer (and any plateau) left them
        };
        schedule.apply(self.optimizer, epoch);
        if plateau_scale != 1.0 {
            let min_lr = self.plateau.as_ref().map_or(0.0, |p| p.config().min_lr);
            for group in self.optimizer.param_groups_mut() {
                let scheduled = group.learning_rate();
                group.set_learning_rate((scheduled * plateau_scale).max(min_lr.min(scheduled)));
            }
        }
    }

    /// Feeds the epoch's monitored loss to the plateau scheduler and returns the factor by
    /// which future scheduled rates shrink (1 without a reduction). Without a schedule, the
    /// plateau reduces the optimizer's rates in place, since nothing resets them.
    fn plateau_step(&mut self, record: &EpochRecord) -> f64 {
        let Some(plateau) = &mut self.plateau else {
            return 1.0;
        };
        let metric = record.val_loss.unwrap_or(record.train_loss);
        if self.schedule.is_none() {
            plateau.step(metric, self.optimizer);
            1.0
        } else if plateau.observe(metric) {
            plateau.config().factor
        } else {
            1.0
        }
    }

    /// Trains one epoch; returns its record (without validation) and its open progress
    /// display.
    fn train_epoch(
        &mut self,
        train: &DataLoader,
        epoch: usize,
        batches: usize,
    ) -> Result<(EpochRecord, EpochProgress)> {
        let mut display = EpochProgress::start(
            self.progress,
            epoch + 1,
            self.first_epoch + self.epochs,
            batches,
        );
        let learning_rate = self.optimizer.learning_rate();
        let started = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let (epoch_batches, replica) = match &self.replicas {
            Some(replicas) => {
                let shard = replicas.shard();
                (train.epoch_shard(epoch as u64, shard), shard.rank() as u64)
            }
            None => (train.epoch(epoch as u64), 0),
        };
        for (step, batch) in epoch_batches.fallible().enumerate() {
            let batch = batch?;
            let (step_started, loss_before) = (Instant::now(), loss_sum);
            // Each replica draws its own dropout masks; replica 0 draws a lone run's.
            let tape_seed = self.seed
                ^ ((epoch as u64) << 32 | step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ^ replica.wrapping_mul(0xd1b5_4a32_d192_ed03);
            let at = || {
                format!(
                    "epoch {}, step {} (global step {})",
                    epoch + 1,
                    step + 1,
                    epoch * batches + step + 1
                )
            };
            let mut grads = {
                let tape = Tape::training_with_seed(tape_seed);
                tape.detect_anomaly(self.detect_anomaly);
                let logits = self.model.forward(tape.input(batch.images));
                let loss = (self.loss)(logits, &batch.labels);
                let value = loss.item();
                if let Some(anomaly) = tape.anomaly() {
                    return Err(anomaly_error(self.model, &anomaly, &at()));
                }
                if !value.is_finite() {
                    return Err(Error::NonFinite {
                        what: format!("training loss at {}", at()),
                        value,
                    });
                }
                correct += count_correct(&logits.value(), &batch.labels);
                loss_sum += value as f64 * batch.labels.len() as f64;
                seen += batch.labels.len();
                let grads = match &mut self.replicas {
                    Some(replicas) => replicas.backward(self.model, loss)?,
                    None => loss.backward(),
                };
                if let Some(anomaly) = tape.anomaly() {
                    return Err(anomaly_error(self.model, &anomaly, &at()));
                }
                grads
            };
            expect_finite_gradients(self.model, &grads, &at)?;
            if let Some(max_norm) = self.max_grad_norm {
                clip_grad_norm(&mut grads, max_norm).map_err(|e| match e {
                    Error::NonFinite { what, value } => Error::NonFinite {
                        what: format!("{what} at epoch {}, step {}", epoch + 1, step + 1),
                        value,
                    },
                    other => other,
                })?;
            }
            self.optimizer.step(self.model, &grads);
            if let Some(replicas) = &mut self.replicas {
                replicas.after_step(self.model, &at())?;
            }
            if let Some(average) = &mut self.average {
                average.get().update(self.model);
            }
            if let Some(board) = &mut self.board {
                let global_step = (epoch * batches + step + 1) as u64;
                let seconds = step_started.elapsed().as_secs_f64();
                let step_loss = ((loss_sum - loss_before) / batch.labels.len() as f64) as f32;
                board.step(
                    global_step,
                    step_loss,
                    seconds,
                    self.optimizer,
                    self.model,
                    &grads,
                )?;
            }
            display.batch(
                batch.labels.len(),
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
            );
        }
        if let Some(replicas) = &mut self.replicas {
            replicas.end_epoch(self.model)?;
            let mut sums = [loss_sum, correct as f64, seen as f64];
            replicas.sum(&mut sums)?;
            // Exact: counts stay far below 2^53.
            (loss_sum, correct, seen) = (sums[0], sums[1] as usize, sums[2] as usize);
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let record = EpochRecord {
            epoch: epoch + 1,
            // `run` checked that the loader is not empty, so `seen > 0`.
            train_loss: (loss_sum / seen as f64) as f32,
            train_accuracy: correct as f32 / seen as f32,
            val_loss: None,
            val_accuracy: None,
            learning_rate,
            train_seconds,
            val_seconds: 0.0,
            samples_per_second: seen as f64 / train_seconds.max(1e-9),
        };
        Ok((record, display))
    }

    /// Evaluates on the validation loader, if there is one, into `record`.
    fn validate(&mut self, record: &mut EpochRecord) -> Result<()> {
        if let Some(loader) = self.validation {
            let started = Instant::now();
            let evaluation = match &mut self.replicas {
                Some(replicas) => {
                    let batches = loader.epoch_shard_exact(0, replicas.shard());
                    let mut sums = evaluation_sums(self.model, batches.fallible(), &self.loss)?;
                    replicas.sum(&mut sums)?;
                    Evaluation::from_sums(sums)
                }
                None => evaluate_with(self.model, loader, &self.loss)?,
            };
            record.val_loss = Some(evaluation.loss);
            record.val_accuracy = Some(evaluation.accuracy);
            record.val_seconds = started.elapsed().as_secs_f64();
        }
        Ok(())
    }
}

/// [`Error::EmptyData`] if `loader` yields no sample.
fn expect_data(what: &str, loader: &DataLoader) -> Result<()> {
    if loader.is_empty() {
        return Err(Error::EmptyData {
            what: format!(
                "{what} ({} samples, batch size {})",
                loader.dataset().len(),
                loader.batch_size()
            ),
        });
    }
    Ok(())
}

/// [`Error::Config`] if `model` cannot learn: its visitors disagree, or nothing is trainable.
fn expect_trainable(model: &mut dyn Module) -> Result<()> {
    if let Some(disagreement) = crate::nn::visitor_disagreement(model) {
        return Err(Error::Config(format!(
            "Fit::run: the model's visit_params and visit_params_mut must visit the same \
             parameters: {disagreement}"
        )));
    }
    if model.num_trainable_params() == 0 {
        return Err(Error::Config(format!(
            "Fit::run: the model has no trainable parameter ({} parameters, all frozen or none \
             visited), so training would change nothing",
            model.num_params()
        )));
    }
    Ok(())
}

/// [`Error::NonFinite`] naming the first parameter whose gradient holds a NaN or infinity.
fn expect_finite_gradients(
    model: &dyn Module,
    grads: &crate::Gradients,
    at: &dyn Fn() -> String,
) -> Result<()> {
    let mut found = None;
    model.visit_params(&mut |name, param| {
        if found.is_none()
            && let Some(gradient) = grads.get(param)
            && let Some(value) = crate::autograd::first_non_finite(gradient.as_slice())
        {
            found = Some((name.to_string(), value));
        }
    });
    match found {
        Some((name, value)) => Err(Error::NonFinite {
            what: format!("gradient of `{name}` at {}", at()),
            value,
        }),
        None => Ok(()),
    }
}

/// The error for an anomaly found on a step's tape, naming the layer of its nearest parameter.
fn anomaly_error(model: &dyn Module, anomaly: &crate::autograd::Anomaly, at: &str) -> Error {
    let mut layer = None;
    if let Some(id) = anomaly.param {
        model.visit_params(&mut |name, param| {
            if param.id() == id {
                // `features.3.weight` → layer `features.3`
                let prefix = name.rsplit_once('.').map_or(name, |(prefix, _)| prefix);
                layer = Some(prefix.to_string());
            }
        });
    }
    let layer = match layer {
        Some(layer) => format!(", in or after layer `{layer}`"),
        None if anomaly.op == "input" => " (the batch's input data)".to_string(),
        None => String::new(),
    };
    Error::NonFinite {
        what: format!("anomaly detection: first non-finite {anomaly}{layer}, at {at},"),
        value: anomaly.value,
    }
}

/// How many rows of `logits` `[batch, classes]` have their largest value at the label.
fn count_correct(logits: &crate::Tensor, labels: &[usize]) -> usize {
    logits
        .argmax_last_axis()
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count()
}

/// The loss and accuracy of a model over a whole loader.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean loss per sample.
    pub loss: f32,
    /// Fraction of samples whose largest logit is at the label.
    pub accuracy: f32,
    /// Number of samples seen.
    pub samples: usize,
}

impl Evaluation {
    /// From [`evaluation_sums`] (possibly added over shards), with at least one sample.
    pub(crate) fn from_sums([loss_sum, correct, seen]: [f64; 3]) -> Evaluation {
        Evaluation {
            loss: (loss_sum / seen) as f32,
            accuracy: correct as f32 / seen as f32,
            samples: seen as usize,
        }
    }
}

/// Runs `model` over `loader` on inference tapes and returns the mean cross-entropy and the
/// accuracy.
///
/// # Errors
///
/// [`Error::EmptyData`] if `loader` yields no sample (a loss and accuracy of 0 would look like
/// a result).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::data::{DataLoader, ImageDataset};
/// use striate::models::mnist_cnn;
/// use striate::train::evaluate;
///
/// let data = ImageDataset::from_u8(vec![0; 4 * 28 * 28], [1, 28, 28], vec![0, 1, 2, 3])?;
/// let model = mnist_cnn(10, &mut StdRng::seed_from_u64(0));
/// let result = evaluate(&model, &DataLoader::new(data, 2))?;
/// assert_eq!(result.samples, 4);
/// # Ok::<(), striate::Error>(())
/// ```
pub fn evaluate(model: &dyn Module, loader: &DataLoader) -> Result<Evaluation> {
    let loss: LossFn<'_> = Box::new(cross_entropy);
    evaluate_with(model, loader, &loss)
}

fn evaluate_with(model: &dyn Module, loader: &DataLoader, loss: &LossFn<'_>) -> Result<Evaluation> {
    expect_data("evaluate: the loader", loader)?;
    let sums = evaluation_sums(model, loader.try_epoch(0), loss)?;
    Ok(Evaluation::from_sums(sums))
}

/// The summed loss, the number of correct predictions and the number of samples of `model`
/// over `batches`: sums, so that shards of a dataset can be merged by adding them. A sample the
/// dataset cannot read is an error.
pub(crate) fn evaluation_sums(
    model: &dyn Module,
    batches: crate::data::TryBatches,
    loss: &LossFn<'_>,
) -> Result<[f64; 3]> {
    let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
    for batch in batches {
        let batch = batch?;
        let tape = Tape::inference();
        let logits = model.forward(tape.input(batch.images));
        loss_sum += loss(logits, &batch.labels).item() as f64 * batch.labels.len() as f64;
        correct += count_correct(&logits.value(), &batch.labels);
        seen += batch.labels.len();
    }
    Ok([loss_sum, correct as f64, seen as f64])
}

/// The default loss of [`evaluate`], for callers outside this module.
#[cfg(feature = "mpi")]
pub(crate) fn default_loss() -> LossFn<'static> {
    Box::new(cross_entropy)
}

/// The confusion matrix of `model`'s predictions (largest logit) over `loader`, from which
/// every classification metric and scikit-learn's report follow.
///
/// # Errors
///
/// [`Error::EmptyData`] if `loader` yields no sample.
///
/// # Panics
///
/// If a label or prediction is not below `num_classes`.
pub fn confusion_matrix(
    model: &dyn Module,
    loader: &DataLoader,
    num_classes: usize,
) -> Result<ConfusionMatrix> {
    expect_data("confusion_matrix: the loader", loader)?;
    let mut matrix = ConfusionMatrix::new(num_classes);
    for batch in loader.try_epoch(0) {
        let batch = batch?;
        let logits = model.predict(&batch.images);
        matrix.update_from_scores(&logits, &batch.labels);
    }
    Ok(matrix)
}
