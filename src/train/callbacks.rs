//! Callbacks run at the end of every epoch: early stopping, and the trait for your own.

use super::history::EpochRecord;
use crate::nn::Module;
use crate::tensor::Tensor;
use crate::tensor::check::contract_violation;

/// Whether training goes on after an epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// Train the next epoch.
    Continue,
    /// Stop now, for the given reason (recorded in the history).
    Stop(String),
}

/// Code run by [`Fit`](super::Fit) after each epoch (after validation and schedules), with the
/// epoch's record and the model; Keras's `Callback.on_epoch_end`.
pub trait Callback {
    /// Called after each epoch; return [`Control::Stop`] to end training.
    fn on_epoch_end(&mut self, record: &EpochRecord, model: &mut dyn Module) -> Control;

    /// Called once when training ends, whatever the reason.
    fn on_train_end(&mut self, _model: &mut dyn Module) {}
}

/// The quantity a callback watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monitor {
    /// Validation loss (lower is better); needs a validation set.
    ValLoss,
    /// Validation accuracy (higher is better); needs a validation set.
    ValAccuracy,
    /// Training loss (lower is better).
    TrainLoss,
    /// Training accuracy (higher is better).
    TrainAccuracy,
}

impl Monitor {
    /// The watched value in `record`, if it was measured.
    pub fn value(self, record: &EpochRecord) -> Option<f32> {
        match self {
            Monitor::ValLoss => record.val_loss,
            Monitor::ValAccuracy => record.val_accuracy,
            Monitor::TrainLoss => Some(record.train_loss),
            Monitor::TrainAccuracy => Some(record.train_accuracy),
        }
    }

    /// Whether larger values are better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Monitor::ValAccuracy | Monitor::TrainAccuracy)
    }

    fn name(self) -> &'static str {
        match self {
            Monitor::ValLoss => "val_loss",
            Monitor::ValAccuracy => "val_accuracy",
            Monitor::TrainLoss => "loss",
            Monitor::TrainAccuracy => "accuracy",
        }
    }
}

/// Stops training when the monitored quantity has not improved by more than `min_delta` for
/// `patience` epochs (Keras's `EarlyStopping`). With `restore_best_weights`, the model gets
/// back the parameters and buffers of its best epoch when training ends.
///
/// # Examples
///
/// ```
/// use striate::train::{EarlyStopping, Monitor};
///
/// let stopper = EarlyStopping::new(Monitor::ValLoss).patience(3).min_delta(1e-4).restore_best_weights(true);
/// # let _ = stopper;
/// ```
#[derive(Debug)]
pub struct EarlyStopping {
    monitor: Monitor,
    patience: usize,
    min_delta: f32,
    restore_best_weights: bool,
    best: Option<f32>,
    epochs_without_improvement: usize,
    best_state: Option<Vec<(String, Tensor)>>,
}

impl EarlyStopping {
    /// Watches `monitor` with patience 0 and no minimum improvement.
    pub fn new(monitor: Monitor) -> EarlyStopping {
        EarlyStopping {
            monitor,
            patience: 0,
            min_delta: 0.0,
            restore_best_weights: false,
            best: None,
            epochs_without_improvement: 0,
            best_state: None,
        }
    }

    /// Epochs without improvement tolerated before stopping.
    pub fn patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    /// The smallest change that counts as an improvement.
    ///
    /// # Panics
    ///
    /// If `min_delta` is negative or not finite.
    pub fn min_delta(mut self, min_delta: f32) -> Self {
        if !(min_delta >= 0.0 && min_delta.is_finite()) {
            contract_violation(
                "EarlyStopping",
                "min_delta must be finite and non-negative",
                format_args!("min_delta = {min_delta}"),
            );
        }
        self.min_delta = min_delta;
        self
    }

    /// Whether to put the best epoch's weights back when training ends.
    pub fn restore_best_weights(mut self, restore: bool) -> Self {
        self.restore_best_weights = restore;
        self
    }

    fn improved(&self, value: f32) -> bool {
        match self.best {
            None => true,
            Some(best) if self.monitor.higher_is_better() => value > best + self.min_delta,
            Some(best) => value < best - self.min_delta,
        }
    }
}

/// The model's parameters and buffers by name (O(1) clones of the tensors).
pub(crate) fn snapshot(model: &dyn Module) -> Vec<(String, Tensor)> {
    let mut state = Vec::new();
    model.visit_params(&mut |name, p| state.push((name.to_string(), p.value().clone())));
    model.visit_buffers(&mut |name, b| state.push((format!("buffer:{name}"), b.clone())));
    state
}

/// Puts a [`snapshot`] back into the model it was taken from.
pub(crate) fn restore(model: &mut dyn Module, state: &[(String, Tensor)]) {
    let lookup: std::collections::HashMap<&str, &Tensor> =
        state.iter().map(|(n, t)| (n.as_str(), t)).collect();
    model.visit_params_mut(&mut |name, p| {
        if let Some(value) = lookup.get(name) {
            p.set_value((*value).clone());
        }
    });
    model.visit_buffers_mut(&mut |name, b| {
        if let Some(value) = lookup.get(format!("buffer:{name}").as_str()) {
            *b = (*value).clone();
        }
    });
}

impl Callback for EarlyStopping {
    fn on_epoch_end(&mut self, record: &EpochRecord, model: &mut dyn Module) -> Control {
        let Some(value) = self.monitor.value(record) else {
            contract_violation(
                "EarlyStopping",
                format_args!("{} is not measured", self.monitor.name()),
                "give Fit a validation loader to monitor validation metrics",
            );
        };
        if self.improved(value) {
            self.best = Some(value);
            self.epochs_without_improvement = 0;
            if self.restore_best_weights {
                self.best_state = Some(snapshot(model));
            }
            return Control::Continue;
        }
        self.epochs_without_improvement += 1;
        if self.epochs_without_improvement > self.patience {
            return Control::Stop(format!(
                "{} did not improve on {:.4} for {} epochs",
                self.monitor.name(),
                self.best.unwrap_or(f32::NAN),
                self.epochs_without_improvement
            ));
        }
        Control::Continue
    }

    fn on_train_end(&mut self, model: &mut dyn Module) {
        if let Some(state) = self.best_state.take() {
            restore(model, &state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, val_loss: f32) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss: 1.0,
            train_accuracy: 0.5,
            val_loss: Some(val_loss),
            val_accuracy: Some(0.5),
            learning_rate: 0.1,
            train_seconds: 1.0,
            val_seconds: 0.1,
            samples_per_second: 1.0,
        }
    }

    #[test]
    fn stops_after_patience_epochs_without_improvement() {
        let mut model = crate::nn::Sequential::new();
        let mut stopper = EarlyStopping::new(Monitor::ValLoss)
            .patience(1)
            .min_delta(0.01);
        let losses = [1.0, 0.5, 0.495, 0.6];
        let controls: Vec<Control> = losses
            .iter()
            .enumerate()
            .map(|(i, &l)| stopper.on_epoch_end(&record(i + 1, l), &mut model))
            .collect();
        assert_eq!(
            controls[..3],
            [Control::Continue, Control::Continue, Control::Continue]
        );
        assert!(matches!(&controls[3], Control::Stop(reason) if reason.contains("val_loss")));
    }
}
