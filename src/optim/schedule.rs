//! Learning-rate schedules, with the closed forms and defaults of
//! `torch.optim.lr_scheduler`.
//!
//! A [`LrSchedule`] is a pure function of the epoch (the number of times the schedule has been
//! stepped, PyTorch's `last_epoch`; step it per epoch or per iteration as you like) and of a
//! group's initial learning rate. [`LrSchedule::apply`] sets every parameter group's rate from
//! its own initial rate, as PyTorch's schedulers do, so groups keep their ratios under
//! multiplicative schedules. [`ReduceLrOnPlateau`] is the stateful exception: it is fed a
//! metric and multiplies the current rates.
//!
//! # Examples
//!
//! Five epochs of linear warm-up, then cosine annealing over the remaining 95:
//!
//! ```
//! use striate::optim::{CosineAnnealingLr, LinearWarmup, LrSchedule, Optimizer, Sgd, SgdConfig};
//!
//! let mut sgd = Sgd::new(SgdConfig { learning_rate: 0.1, ..Default::default() });
//! let schedule = LinearWarmup {
//!     warmup_epochs: 5,
//!     start_factor: 0.2,
//!     then: CosineAnnealingLr { t_max: 95, eta_min: 0.0 },
//! };
//! for epoch in 0..100 {
//!     schedule.apply(&mut sgd, epoch);
//!     // ... train one epoch ...
//! #   if epoch == 0 { assert!((sgd.learning_rate() - 0.02).abs() < 1e-12); }
//! #   if epoch == 5 { assert_eq!(sgd.learning_rate(), 0.1); }
//! }
//! ```

use super::{Optimizer, expect_non_negative};
use crate::tensor::check::contract_violation;

/// A learning rate as a function of the epoch and of a group's initial rate.
pub trait LrSchedule {
    /// The learning rate after `epoch` steps of the schedule, for a group whose initial
    /// learning rate is `initial`.
    ///
    /// # Panics
    ///
    /// If the schedule's settings are invalid (a zero period, a negative factor, ...).
    fn learning_rate(&self, epoch: usize, initial: f64) -> f64;

    /// Sets the learning rate of every parameter group of `optimizer` for `epoch`, each from
    /// its own initial rate.
    ///
    /// # Panics
    ///
    /// As [`LrSchedule::learning_rate`].
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::optim::{GroupOptions, LrSchedule, Optimizer, Sgd, SgdConfig, StepLr};
    ///
    /// let mut sgd = Sgd::new(SgdConfig { learning_rate: 1e-2, ..Default::default() })
    ///     .with_group("features", GroupOptions { learning_rate: Some(1e-4), ..Default::default() });
    /// StepLr { step_size: 10, gamma: 0.5 }.apply(&mut sgd, 25);
    /// assert_eq!(sgd.param_groups()[0].learning_rate(), 1e-2 * 0.25);
    /// assert_eq!(sgd.param_groups()[1].learning_rate(), 1e-4 * 0.25);
    /// ```
    fn apply(&self, optimizer: &mut dyn Optimizer, epoch: usize) {
        for group in optimizer.param_groups_mut() {
            let rate = self.learning_rate(epoch, group.initial_learning_rate());
            group.set_learning_rate(rate);
        }
    }
}

impl<S: LrSchedule + ?Sized> LrSchedule for Box<S> {
    fn learning_rate(&self, epoch: usize, initial: f64) -> f64 {
        (**self).learning_rate(epoch, initial)
    }
}

/// The initial learning rate, always (the schedule after a warm-up that has nothing after it).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Constant;

impl LrSchedule for Constant {
    fn learning_rate(&self, _epoch: usize, initial: f64) -> f64 {
        initial
    }
}

/// Decays the rate by `gamma` every `step_size` epochs: `initial · gamma^⌊epoch / step_size⌋`
/// (PyTorch's `StepLR`, whose default `gamma` is 0.1).
///
/// # Examples
///
/// ```
/// use striate::optim::{LrSchedule, StepLr};
///
/// let schedule = StepLr { step_size: 30, gamma: 0.1 };
/// assert_eq!(schedule.learning_rate(29, 0.05), 0.05);
/// assert_eq!(schedule.learning_rate(30, 0.05), 0.05 * 0.1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLr {
    /// The period of the decay, in epochs; must be positive.
    pub step_size: usize,
    /// The factor applied at each period; must be finite and not negative.
    pub gamma: f64,
}

impl LrSchedule for StepLr {
    fn learning_rate(&self, epoch: usize, initial: f64) -> f64 {
        expect_non_negative("StepLr", "gamma", self.gamma);
        if self.step_size == 0 {
            contract_violation("StepLr", "step_size must be positive", "step_size = 0");
        }
        initial * power(self.gamma, epoch / self.step_size)
    }
}

/// Decays the rate by `gamma` at each milestone: `initial · gamma^(milestones ≤ epoch)`
/// (PyTorch's `MultiStepLR`; default `gamma` 0.1). A milestone listed twice counts twice.
///
/// # Examples
///
/// ```
/// use striate::optim::{LrSchedule, MultiStepLr};
///
/// let schedule = MultiStepLr { milestones: vec![30, 80], gamma: 0.1 };
/// let rates: Vec<f64> = [0, 30, 79, 80].iter().map(|&e| schedule.learning_rate(e, 1.0)).collect();
/// assert_eq!(rates, [1.0, 0.1, 0.1, 0.1 * 0.1]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MultiStepLr {
    /// The epochs at which the rate is multiplied by `gamma`.
    pub milestones: Vec<usize>,
    /// The factor applied at each milestone; must be finite and not negative.
    pub gamma: f64,
}

impl LrSchedule for MultiStepLr {
    fn learning_rate(&self, epoch: usize, initial: f64) -> f64 {
        expect_non_negative("MultiStepLr", "gamma", self.gamma);
        let passed = self.milestones.iter().filter(|&&m| m <= epoch).count();
        initial * power(self.gamma, passed)
    }
}

/// Decays the rate by `gamma` every epoch: `initial · gamma^epoch` (PyTorch's
/// `ExponentialLR`).
///
/// # Examples
///
/// ```
/// use striate::optim::{ExponentialLr, LrSchedule};
///
/// assert_eq!(ExponentialLr { gamma: 0.5 }.learning_rate(3, 1.0), 0.125);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExponentialLr {
    /// The factor applied every epoch; must be finite and not negative.
    pub gamma: f64,
}

impl LrSchedule for ExponentialLr {
    fn learning_rate(&self, epoch: usize, initial: f64) -> f64 {
        expect_non_negative("ExponentialLr", "gamma", self.gamma);
        initial * power(self.gamma, epoch)
    }
}

/// Anneals the rate from its initial value to `eta_min` along half a cosine over `t_max`
/// epochs: `eta_min + (initial − eta_min)·(1 + cos(π·epoch/t_max))/2` (PyTorch's
/// `CosineAnnealingLR`, default `eta_min` 0).
///
/// As in PyTorch, this is annealing without restarts: past `t_max` the cosine continues, and
/// the rate rises again towards the initial one at `2·t_max`.
///
/// # Examples
///
/// ```
/// use striate::optim::{CosineAnnealingLr, LrSchedule};
///
/// let schedule = CosineAnnealingLr { t_max: 10, eta_min: 0.001 };
/// assert_eq!(schedule.learning_rate(0, 0.1), 0.1);
/// assert!((schedule.learning_rate(5, 0.1) - 0.0505).abs() < 1e-12);
/// assert!((schedule.learning_rate(10, 0.1) - 0.001).abs() < 1e-12);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineAnnealingLr {
    /// The number of epochs from the initial rate down to `eta_min`; must be positive.
    pub t_max: usize,
    /// The lowest rate, reached at `t_max`.
    pub eta_min: f64,
}

impl LrSchedule for CosineAnnealingLr {
    fn learning_rate(&self, epoch: usize, initial: f64) -> f64 {
        if self.t_max == 0 {
            contract_violation("CosineAnnealingLr", "t_max must be positive", "t_max = 0");
        }
        expect_non_negative("CosineAnnealingLr", "eta_min", self.eta_min);
        let phase = std::f64::consts::PI * epoch as f64 / self.t_max as f64;
        self.eta_min + (initial - self.eta_min) * (1.0 + phase.cos()) / 2.0
    }
}

/// Ramps the rate linearly from `start_factor · initial` to `initial` over `warmup_epochs`,
/// then follows `then` from its own epoch 0.
///
/// This is PyTorch's `SequentialLR([LinearLR(start_factor, total_iters=warmup_epochs), then],
/// milestones=[warmup_epochs])`; with [`Constant`] after it, it is `LinearLR` alone (whose
/// defaults are `start_factor` 1/3 over 5 epochs).
///
/// # Examples
///
/// ```
/// use striate::optim::{Constant, LinearWarmup, LrSchedule};
///
/// let warmup = LinearWarmup { warmup_epochs: 4, start_factor: 0.2, then: Constant };
/// let rates: Vec<f64> = (0..6).map(|e| warmup.learning_rate(e, 1.0)).collect();
/// assert_eq!(rates, [0.2, 0.4, 0.6000000000000001, 0.8, 1.0, 1.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearWarmup<S = Constant> {
    /// The length of the ramp, in epochs.
    pub warmup_epochs: usize,
    /// The fraction of the initial rate at epoch 0, in `(0, 1]`.
    pub start_factor: f64,
    /// The schedule that takes over at `warmup_epochs`.
    pub then: S,
}

impl<S: LrSchedule> LrSchedule for LinearWarmup<S> {
    fn learning_rate(&self, epoch: usize, initial: f64) -> f64 {
        let start = self.start_factor;
        if !(start > 0.0 && start <= 1.0) {
            contract_violation(
                "LinearWarmup",
                "start_factor must be in (0, 1]",
                format_args!("start_factor = {start}"),
            );
        }
        if epoch >= self.warmup_epochs {
            return self.then.learning_rate(epoch - self.warmup_epochs, initial);
        }
        let progress = epoch as f64 / self.warmup_epochs as f64;
        initial * (start + (1.0 - start) * progress)
    }
}

/// `base^exponent` for a whole exponent, as Python's `float ** int` computes it.
fn power(base: f64, exponent: usize) -> f64 {
    base.powf(exponent as f64)
}

/// Whether [`ReduceLrOnPlateau`] waits for the metric to fall (a loss) or to rise (an
/// accuracy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlateauMode {
    /// Lower is better (PyTorch's `mode="min"`, the default).
    #[default]
    Min,
    /// Higher is better (`mode="max"`).
    Max,
}

/// How [`ReduceLrOnPlateau`] decides that a metric improved on the best one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThresholdMode {
    /// By a fraction: `metric < best·(1 − threshold)` in `Min` mode (PyTorch's `"rel"`, the
    /// default).
    #[default]
    Rel,
    /// By an amount: `metric < best − threshold` in `Min` mode (`"abs"`).
    Abs,
}

/// The settings of [`ReduceLrOnPlateau`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlateauConfig {
    /// Whether lower or higher metrics are better (default `Min`).
    pub mode: PlateauMode,
    /// The factor applied to each rate on a plateau, in `[0, 1)` (default 0.1).
    pub factor: f64,
    /// The number of epochs without improvement tolerated before reducing (default 10).
    pub patience: usize,
    /// The improvement needed to count as one (default 1e-4).
    pub threshold: f64,
    /// Whether `threshold` is relative or absolute (default `Rel`).
    pub threshold_mode: ThresholdMode,
    /// The number of epochs to wait after a reduction before counting again (default 0).
    pub cooldown: usize,
    /// The rate no group is reduced below (default 0).
    pub min_lr: f64,
    /// A reduction smaller than this is skipped (default 1e-8).
    pub eps: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        PlateauConfig {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

/// The running state of a [`ReduceLrOnPlateau`], for checkpoints.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlateauState {
    /// The best metric so far (±∞ before the first).
    pub best: f64,
    /// Epochs since the last improvement (reset by a reduction and during cooldown).
    pub num_bad_epochs: usize,
    /// Cooldown epochs still to wait.
    pub cooldown_counter: usize,
}

/// Multiplies every group's learning rate by `factor` once the metric has not improved for
/// more than `patience` epochs, following PyTorch's `ReduceLROnPlateau` exactly.
///
/// # Examples
///
/// ```
/// use striate::optim::{Optimizer, PlateauConfig, ReduceLrOnPlateau, Sgd, SgdConfig};
///
/// let mut sgd = Sgd::new(SgdConfig { learning_rate: 0.1, ..Default::default() });
/// let mut plateau = ReduceLrOnPlateau::new(PlateauConfig { patience: 1, ..Default::default() });
/// for validation_loss in [1.0f32, 0.8, 0.8, 0.8] {
///     plateau.step(validation_loss, &mut sgd);
/// }
/// // The second epoch without improvement exceeded the patience of 1.
/// assert!((sgd.learning_rate() - 0.01).abs() < 1e-12);
/// ```
#[derive(Clone, Debug)]
pub struct ReduceLrOnPlateau {
    config: PlateauConfig,
    state: PlateauState,
}

impl ReduceLrOnPlateau {
    /// A fresh scheduler.
    ///
    /// # Panics
    ///
    /// If `factor` is outside `[0, 1)`, or `threshold`, `min_lr` or `eps` is negative or not
    /// finite.
    #[track_caller]
    pub fn new(config: PlateauConfig) -> ReduceLrOnPlateau {
        const OP: &str = "ReduceLrOnPlateau";
        if !(0.0..1.0).contains(&config.factor) {
            contract_violation(
                OP,
                "factor must be in [0, 1)",
                format_args!("factor = {}", config.factor),
            );
        }
        expect_non_negative(OP, "threshold", config.threshold);
        expect_non_negative(OP, "min_lr", config.min_lr);
        expect_non_negative(OP, "eps", config.eps);
        let best = match config.mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        };
        ReduceLrOnPlateau {
            config,
            state: PlateauState {
                best,
                num_bad_epochs: 0,
                cooldown_counter: 0,
            },
        }
    }

    /// Records the metric of one epoch and returns whether the rates should be reduced now.
    /// A NaN metric counts as no improvement.
    pub fn observe(&mut self, metric: impl Into<f64>) -> bool {
        let metric = metric.into();
        let improved = self.is_better(metric);
        let state = &mut self.state;
        if improved {
            state.best = metric;
            state.num_bad_epochs = 0;
        } else {
            state.num_bad_epochs += 1;
        }
        if state.cooldown_counter > 0 {
            state.cooldown_counter -= 1;
            state.num_bad_epochs = 0;
        }
        if state.num_bad_epochs > self.config.patience {
            state.cooldown_counter = self.config.cooldown;
            state.num_bad_epochs = 0;
            return true;
        }
        false
    }

    /// Records the metric of one epoch and, on a plateau, multiplies every group's rate of
    /// `optimizer` by `factor`, down to `min_lr`. Returns whether it reduced.
    pub fn step(&mut self, metric: impl Into<f64>, optimizer: &mut dyn Optimizer) -> bool {
        if !self.observe(metric) {
            return false;
        }
        for group in optimizer.param_groups_mut() {
            let old = group.learning_rate();
            let new = (old * self.config.factor).max(self.config.min_lr);
            if old - new > self.config.eps {
                group.set_learning_rate(new);
            }
        }
        true
    }

    /// The settings it was made with.
    pub fn config(&self) -> &PlateauConfig {
        &self.config
    }

    /// The running state, for checkpoints.
    pub fn state(&self) -> PlateauState {
        self.state
    }

    /// Restores a state saved with [`ReduceLrOnPlateau::state`].
    pub fn restore(&mut self, state: PlateauState) {
        self.state = state;
    }

    fn is_better(&self, metric: f64) -> bool {
        let PlateauConfig {
            mode,
            threshold,
            threshold_mode,
            ..
        } = self.config;
        let best = self.state.best;
        match (mode, threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => metric < best * (1.0 - threshold),
            (PlateauMode::Min, ThresholdMode::Abs) => metric < best - threshold,
            (PlateauMode::Max, ThresholdMode::Rel) => metric > best * (1.0 + threshold),
            (PlateauMode::Max, ThresholdMode::Abs) => metric > best + threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(schedule: &dyn LrSchedule, epochs: usize) -> Vec<f64> {
        (0..epochs)
            .map(|e| schedule.learning_rate(e, 1.0))
            .collect()
    }

    fn assert_close(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len());
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < 1e-12, "{actual:?} vs {expected:?}");
        }
    }

    #[test]
    fn step_and_multi_step_follow_pytorch_docs() {
        // PyTorch's StepLR example: lr 0.05 for epochs < 30, 0.005 for 30 <= epoch < 60, ...
        let step = StepLr {
            step_size: 30,
            gamma: 0.1,
        };
        let at = |e| step.learning_rate(e, 0.05);
        assert_close(
            &[at(0), at(29), at(30), at(59), at(60)],
            &[0.05, 0.05, 0.005, 0.005, 0.0005],
        );
        // MultiStepLR example: milestones [30, 80].
        let multi = MultiStepLr {
            milestones: vec![30, 80],
            gamma: 0.1,
        };
        let at = |e| multi.learning_rate(e, 0.05);
        assert_close(
            &[at(29), at(30), at(79), at(80)],
            &[0.05, 0.005, 0.005, 0.0005],
        );
    }

    #[test]
    fn exponential_and_cosine_by_hand() {
        assert_close(
            &rates(&ExponentialLr { gamma: 0.5 }, 4),
            &[1.0, 0.5, 0.25, 0.125],
        );
        let cosine = CosineAnnealingLr {
            t_max: 4,
            eta_min: 0.1,
        };
        let half = std::f64::consts::FRAC_1_SQRT_2 / 2.0;
        let expected = [
            1.0,
            0.1 + 0.9 * (0.5 + half),
            0.55,
            0.1 + 0.9 * (0.5 - half),
            0.1,
        ];
        assert_close(&rates(&cosine, 5), &expected);
    }

    #[test]
    fn warmup_hands_over_at_its_end() {
        let schedule = LinearWarmup {
            warmup_epochs: 2,
            start_factor: 0.5,
            then: ExponentialLr { gamma: 0.5 },
        };
        assert_close(&rates(&schedule, 5), &[0.5, 0.75, 1.0, 0.5, 0.25]);
        let no_warmup = LinearWarmup {
            warmup_epochs: 0,
            start_factor: 0.5,
            then: Constant,
        };
        assert_close(&rates(&no_warmup, 2), &[1.0, 1.0]);
    }

    #[test]
    fn plateau_waits_out_patience_and_cooldown() {
        let mut plateau = ReduceLrOnPlateau::new(PlateauConfig {
            patience: 1,
            cooldown: 2,
            ..Default::default()
        });
        let reduced: Vec<bool> = [5.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
            .into_iter()
            .map(|m: f64| plateau.observe(m))
            .collect();
        // Two bad epochs exceed a patience of 1; the next two are cooldown, which counts none.
        assert_eq!(
            reduced,
            [false, false, false, true, false, false, false, true]
        );
        assert_eq!(plateau.state().best, 4.0);
    }

    #[test]
    fn plateau_nan_is_no_improvement() {
        let mut plateau = ReduceLrOnPlateau::new(PlateauConfig {
            mode: PlateauMode::Max,
            patience: 0,
            ..Default::default()
        });
        assert!(!plateau.observe(0.5));
        assert!(plateau.observe(f64::NAN));
    }

    #[test]
    #[should_panic(expected = "StepLr: step_size must be positive (step_size = 0)")]
    fn zero_step_size_panics() {
        StepLr {
            step_size: 0,
            gamma: 0.1,
        }
        .learning_rate(3, 1.0);
    }

    #[test]
    #[should_panic(expected = "ReduceLrOnPlateau: factor must be in [0, 1) (factor = 1)")]
    fn factor_of_one_panics() {
        ReduceLrOnPlateau::new(PlateauConfig {
            factor: 1.0,
            ..Default::default()
        });
    }
}
