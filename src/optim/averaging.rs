//! Weight averaging: an exponential moving average (EMA) of a model's parameters, or their
//! equal average over training (stochastic weight averaging, SWA), as PyTorch's
//! `torch.optim.swa_utils.AveragedModel` and Keras's `use_ema` keep them.

use crate::error::{Error, Result};
use crate::nn::Module;
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, shape_str};

use super::lerp;

/// How a [`WeightAverage`] weighs the models it is given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Averaging {
    /// An exponential moving average: `average ← decay · average + (1 − decay) · weight`,
    /// PyTorch's `get_ema_multi_avg_fn(decay)`, Keras's `ema_momentum`.
    Exponential {
        /// The weight of the past, in `[0, 1]`; typically 0.99 to 0.9999.
        decay: f64,
    },
    /// Every model averaged with the same weight: after `n` models, `average ← average +
    /// (weight − average) / (n + 1)`. Stochastic weight averaging (Izmailov et al., 2018),
    /// `AveragedModel`'s default.
    Equal,
}

/// A running average of a model's parameters and buffers, updated after optimizer steps:
/// the averaged weights usually generalise better than the last ones, for nothing but one
/// pass over the parameters per step.
///
/// The arithmetic is that of PyTorch's
/// `AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)` (or,
/// for [`Averaging::Equal`], of `AveragedModel(model, use_buffers=True)`), to float
/// rounding: the first update copies the model; each later one is PyTorch's
/// `lerp(average, weight, w)` with `w = 1 − decay` (rounded to f32 once), or `w = 1 / (n + 1)`
/// after `n` averaged models. [`WeightAverage::start_step`] skips the first updates, as a
/// PyTorch loop that calls `update_parameters` only from a given step does.
///
/// **Buffers** (batch-norm running statistics) are averaged with the same rule as the
/// parameters, as `use_buffers=True` does, so that the averaged model's statistics come from
/// the same stretch of training as its weights. (PyTorch's default, `use_buffers=False`,
/// copies the last statistics, which do not belong to the averaged weights until
/// `update_bn` recomputes them.) Counters (`num_batches_tracked`) are not averaged: they are
/// copied from the model.
///
/// Frozen parameters are averaged too (they do not change, so their average is their value).
///
/// To train with one, give it to [`Fit::average_weights`](crate::train::Fit::average_weights)
/// (or use [`Fit::ema`](crate::train::Fit::ema)); in your own loop, call
/// [`WeightAverage::update`] after each optimizer step and [`WeightAverage::copy_to`] at the
/// end. [`WeightAverage::swap`] exchanges the model's weights with the average in O(1) per
/// tensor, to evaluate the average and go back to training.
///
/// # Checkpoints
///
/// [`WeightAverage::state_dict`] and [`WeightAverage::load_state_dict`] save and restore the
/// average (write it with [`write_safetensors`](crate::io::write_safetensors) beside the
/// checkpoint), including whether it is [swapped](WeightAverage::is_swapped) into the model.
///
/// # Panics
///
/// The constructors panic for a decay outside `[0, 1]`; [`WeightAverage::update`],
/// [`WeightAverage::swap`] and [`WeightAverage::copy_to`] for a model whose parameter or buffer
/// names or shapes differ from those of the first model averaged.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::nn::{Dense, Module};
/// use striate::optim::{Optimizer, Sgd, SgdConfig, WeightAverage};
/// use striate::{Tape, Tensor};
///
/// let mut model = Dense::new(2, 1, &mut StdRng::seed_from_u64(0));
/// let mut sgd = Sgd::new(SgdConfig { learning_rate: 0.1, ..Default::default() });
/// let mut ema = WeightAverage::ema(0.9);
/// let x = Tensor::from_vec(vec![1.0, 2.0, -1.0, 0.5], &[2, 2])?;
/// let y = Tensor::from_vec(vec![1.0, -1.0], &[2, 1])?;
/// for _ in 0..100 {
///     let tape = Tape::training();
///     let loss = model.forward(tape.input(x.clone())).mse(tape.input(y.clone()));
///     let grads = loss.backward();
///     sgd.step(&mut model, &grads);
///     ema.update(&model);
/// }
/// assert_eq!(ema.n_averaged(), 100);
/// // Evaluate the average, then go back to the last weights.
/// let last = model.weight.value().clone();
/// ema.swap(&mut model);
/// assert!((model.predict(&x).as_slice()[0] - 1.0).abs() < 0.05);
/// ema.swap(&mut model);
/// assert_eq!(model.weight.value(), &last);
/// // Or keep the average for good.
/// ema.copy_to(&mut model);
/// # Ok::<(), striate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct WeightAverage {
    averaging: Averaging,
    start_step: u64,
    /// Calls of `update`, including those before `start_step`.
    updates: u64,
    /// Models averaged so far (PyTorch's `n_averaged`).
    n_averaged: u64,
    /// The averaged parameters by name, in the model's visiting order (or, when swapped, the
    /// model's own).
    params: Vec<(String, Tensor)>,
    /// The averaged buffers by name, likewise.
    buffers: Vec<(String, Tensor)>,
    /// Whether the model holds the average and `params` / `buffers` its own weights.
    swapped: bool,
}

/// Whether a buffer is a counter, copied rather than averaged.
fn is_counter(name: &str) -> bool {
    name.rsplit('.').next() == Some("num_batches_tracked")
}

impl WeightAverage {
    /// An exponential moving average with the given `decay` (Keras's `ema_momentum`,
    /// PyTorch's `get_ema_multi_avg_fn(decay)`), averaging from the first update.
    ///
    /// A decay of 0.999 averages over roughly the last 1,000 steps; with fewer steps than
    /// that in the whole run, the first weights keep a large share (start later with
    /// [`WeightAverage::start_step`] or use a smaller decay).
    ///
    /// # Panics
    ///
    /// If `decay` is not in `[0, 1]` (PyTorch raises `ValueError` there).
    pub fn ema(decay: f64) -> WeightAverage {
        WeightAverage::new(Averaging::Exponential { decay })
    }

    /// The equal average of every model given (stochastic weight averaging), PyTorch's
    /// `AveragedModel` default.
    pub fn equal() -> WeightAverage {
        WeightAverage::new(Averaging::Equal)
    }

    /// An average of the given kind.
    ///
    /// # Panics
    ///
    /// If an exponential decay is not in `[0, 1]`.
    pub fn new(averaging: Averaging) -> WeightAverage {
        if let Averaging::Exponential { decay } = averaging
            && !(0.0..=1.0).contains(&decay)
        {
            contract_violation(
                "WeightAverage::ema",
                "decay must be in [0, 1]",
                format_args!("decay = {decay}"),
            );
        }
        WeightAverage {
            averaging,
            start_step: 0,
            updates: 0,
            n_averaged: 0,
            params: Vec::new(),
            buffers: Vec::new(),
            swapped: false,
        }
    }

    /// Ignores the first `steps` calls of [`WeightAverage::update`]: the average starts from
    /// the weights after that many steps (a warm-up that keeps the early, poor weights out
    /// of an EMA, or SWA's `swa_start`). Default 0.
    pub fn start_step(mut self, steps: u64) -> Self {
        self.start_step = steps;
        self
    }

    /// The kind of average.
    pub fn averaging(&self) -> Averaging {
        self.averaging
    }

    /// The number of models averaged so far (updates after the start step).
    pub fn n_averaged(&self) -> u64 {
        self.n_averaged
    }

    /// Whether no model has been averaged yet.
    pub fn is_empty(&self) -> bool {
        self.n_averaged == 0
    }

    /// Whether [`WeightAverage::swap`] has put the average into the model (an odd number of
    /// swaps), so that this holds the model's own weights.
    pub fn is_swapped(&self) -> bool {
        self.swapped
    }

    /// Averages the model's current parameters and buffers in, PyTorch's
    /// `AveragedModel.update_parameters`: call it after each optimizer step. Calls before the
    /// [start step](WeightAverage::start_step) only count.
    ///
    /// # Panics
    ///
    /// If the average is [swapped](WeightAverage::is_swapped) into the model (swap back
    /// first), or the model's parameter or buffer names or shapes differ from those of the
    /// first model averaged.
    pub fn update(&mut self, model: &dyn Module) {
        if self.swapped {
            contract_violation(
                "WeightAverage::update",
                "the average is swapped into the model; swap it back before updating",
                format_args!("{} models averaged", self.n_averaged),
            );
        }
        self.updates += 1;
        if self.updates <= self.start_step {
            return;
        }
        if self.n_averaged == 0 {
            // The first model is copied (shared until either side changes).
            self.params.clear();
            model.visit_params(&mut |name, p| {
                self.params.push((name.to_string(), p.value().clone()))
            });
            self.buffers.clear();
            model.visit_buffers(&mut |name, b| self.buffers.push((name.to_string(), b.clone())));
            self.n_averaged = 1;
            return;
        }
        // PyTorch passes the weight to lerp as a double and its kernel rounds it to f32.
        let weight = match self.averaging {
            Averaging::Exponential { decay } => (1.0 - decay) as f32,
            Averaging::Equal => (1.0 / (self.n_averaged as f64 + 1.0)) as f32,
        };
        let mut params = Entries::new("WeightAverage::update", "parameter", &mut self.params);
        model.visit_params(&mut |name, p| {
            let average = params.next(name, p.value());
            for (a, &w) in average.as_slice_mut().iter_mut().zip(p.value().as_slice()) {
                *a = lerp(*a, w, weight);
            }
        });
        params.finish();
        let mut buffers = Entries::new("WeightAverage::update", "buffer", &mut self.buffers);
        model.visit_buffers(&mut |name, b| {
            let average = buffers.next(name, b);
            if is_counter(name) {
                *average = b.clone();
            } else {
                for (a, &w) in average.as_slice_mut().iter_mut().zip(b.as_slice()) {
                    *a = lerp(*a, w, weight);
                }
            }
        });
        buffers.finish();
        self.n_averaged += 1;
    }

    /// Exchanges the model's parameters and buffers with the average, moving tensors only
    /// (O(1) each): the first call puts the average into the model and keeps the model's
    /// weights here; the second puts them back. Does nothing while nothing is averaged.
    ///
    /// # Panics
    ///
    /// If the model's parameter or buffer names or shapes differ from the averaged ones.
    pub fn swap(&mut self, model: &mut dyn Module) {
        if self.is_empty() {
            return;
        }
        let mut params = Entries::new("WeightAverage::swap", "parameter", &mut self.params);
        model.visit_params_mut(&mut |name, p| {
            std::mem::swap(params.next(name, p.value()), p.value_mut());
        });
        params.finish();
        let mut buffers = Entries::new("WeightAverage::swap", "buffer", &mut self.buffers);
        model.visit_buffers_mut(&mut |name, b| std::mem::swap(buffers.next(name, b), b));
        buffers.finish();
        self.swapped = !self.swapped;
    }

    /// Writes the average into the model's parameters and buffers (Keras's
    /// `finalize_variable_values`), keeping the average. Does nothing while nothing is
    /// averaged, or while the average is [swapped](WeightAverage::is_swapped) in (the model
    /// holds it already).
    ///
    /// # Panics
    ///
    /// If the model's parameter or buffer names or shapes differ from the averaged ones.
    pub fn copy_to(&self, model: &mut dyn Module) {
        if self.is_empty() || self.swapped {
            return;
        }
        let mut params = self.params.clone();
        let mut entries = Entries::new("WeightAverage::copy_to", "parameter", &mut params);
        model.visit_params_mut(&mut |name, p| {
            let value = entries.next(name, p.value()).clone();
            p.set_value(value);
        });
        entries.finish();
        let mut buffers = self.buffers.clone();
        let mut entries = Entries::new("WeightAverage::copy_to", "buffer", &mut buffers);
        model.visit_buffers_mut(&mut |name, b| *b = entries.next(name, b).clone());
        entries.finish();
    }

    /// The average's state, for checkpoints: `param.<name>` and `buffer.<name>` for each
    /// averaged tensor (the model's own weights instead, while
    /// [swapped](WeightAverage::is_swapped)), then the rank-0 counts `updates` and
    /// `n_averaged` (exact up to 2^24) and `swapped` (0 or 1). The tensors share buffers with
    /// the average until it next changes.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut state: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|(name, t)| (format!("param.{name}"), t.clone()))
            .chain(
                self.buffers
                    .iter()
                    .map(|(name, t)| (format!("buffer.{name}"), t.clone())),
            )
            .collect();
        state.push(("updates".into(), Tensor::scalar(self.updates as f32)));
        state.push(("n_averaged".into(), Tensor::scalar(self.n_averaged as f32)));
        state.push(("swapped".into(), Tensor::scalar(f32::from(self.swapped))));
        state
    }

    /// Restores a [`WeightAverage::state_dict`] taken from an average of `model` (or of a
    /// model with the same parameter and buffer names and shapes). The kind of average and
    /// the start step are this one's.
    ///
    /// # Errors
    ///
    /// [`Error::StateDict`] listing every missing, unexpected or mismatched key (a count that
    /// is not a whole number, a tensor whose shape differs from the model's); nothing is
    /// loaded then.
    pub fn load_state_dict(
        &mut self,
        model: &dyn Module,
        state: &[(String, Tensor)],
    ) -> Result<()> {
        let (mut missing, mut unexpected, mut mismatched) = (Vec::new(), Vec::new(), Vec::new());
        let find = |key: &str| state.iter().find(|(k, _)| k == key).map(|(_, t)| t);
        let count =
            |key: &str, mismatched: &mut Vec<String>, missing: &mut Vec<String>| match find(key) {
                Some(t) if t.len() == 1 && t.item() >= 0.0 && t.item().fract() == 0.0 => {
                    t.item() as u64
                }
                Some(t) => {
                    mismatched.push(format!(
                        "{key}: expected a whole number, found shape {} {:?}",
                        shape_str(t.shape()),
                        &t.as_slice()[..t.len().min(1)]
                    ));
                    0
                }
                None => {
                    missing.push(key.to_string());
                    0
                }
            };
        let updates = count("updates", &mut mismatched, &mut missing);
        let n_averaged = count("n_averaged", &mut mismatched, &mut missing);
        let swapped = count("swapped", &mut mismatched, &mut missing);
        if swapped > 1 {
            mismatched.push(format!("swapped: expected 0 or 1, found {swapped}"));
        }
        let mut expected = vec!["updates".to_string(), "n_averaged".into(), "swapped".into()];
        let (mut params, mut buffers) = (Vec::new(), Vec::new());
        if n_averaged > 0 {
            let mut take = |key: String, name: &str, like: &Tensor, into: &mut Vec<_>| {
                match find(&key) {
                    Some(t) if t.shape() == like.shape() => {
                        into.push((name.to_string(), t.clone()))
                    }
                    Some(t) => mismatched.push(format!(
                        "{key}: expected shape {}, found {}",
                        shape_str(like.shape()),
                        shape_str(t.shape())
                    )),
                    None => missing.push(key.clone()),
                }
                expected.push(key);
            };
            model.visit_params(&mut |name, p| {
                take(format!("param.{name}"), name, p.value(), &mut params)
            });
            model.visit_buffers(&mut |name, b| {
                take(format!("buffer.{name}"), name, b, &mut buffers)
            });
        }
        for (key, _) in state {
            if !expected.contains(key) {
                unexpected.push(key.clone());
            }
        }
        if !(missing.is_empty() && unexpected.is_empty() && mismatched.is_empty()) {
            return Err(Error::StateDict {
                target: "WeightAverage".into(),
                missing,
                unexpected,
                mismatched,
            });
        }
        self.updates = updates;
        self.n_averaged = n_averaged;
        self.swapped = swapped == 1 && n_averaged > 0;
        self.params = params;
        self.buffers = buffers;
        Ok(())
    }
}

/// Walks a list of named tensors in step with a model's visitor, checking each name and
/// shape.
struct Entries<'e> {
    op: &'static str,
    what: &'static str,
    entries: &'e mut [(String, Tensor)],
    next: usize,
}

impl<'e> Entries<'e> {
    fn new(op: &'static str, what: &'static str, entries: &'e mut [(String, Tensor)]) -> Self {
        Entries {
            op,
            what,
            entries,
            next: 0,
        }
    }

    /// The entry for the model's next tensor, `name` shaped like `like`.
    #[track_caller]
    fn next(&mut self, name: &str, like: &Tensor) -> &mut Tensor {
        let Some((expected, tensor)) = self.entries.get_mut(self.next) else {
            contract_violation(
                self.op,
                format_args!("the model has more {}s than the averaged one", self.what),
                format_args!("unexpected {} `{name}`", self.what),
            );
        };
        if expected != name || tensor.shape() != like.shape() {
            contract_violation(
                self.op,
                format_args!("the model's {}s must match the averaged model's", self.what),
                format_args!(
                    "model `{name}` {}, average `{expected}` {}",
                    shape_str(like.shape()),
                    shape_str(tensor.shape())
                ),
            );
        }
        self.next += 1;
        tensor
    }

    #[track_caller]
    fn finish(self) {
        if let Some((name, _)) = self.entries.get(self.next) {
            contract_violation(
                self.op,
                format_args!("the model has fewer {}s than the averaged one", self.what),
                format_args!("missing {} `{name}`", self.what),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Param;
    use crate::autograd::Var;

    /// One parameter and one buffer of two elements, set by hand.
    struct Pair {
        weight: Param,
        running: Tensor,
        tracked: Tensor,
    }

    impl Pair {
        fn new(weight: [f32; 2], running: [f32; 2]) -> Pair {
            Pair {
                weight: Param::new("weight", Tensor::from_vec(weight.to_vec(), &[2]).unwrap()),
                running: Tensor::from_vec(running.to_vec(), &[2]).unwrap(),
                tracked: Tensor::scalar(0.0),
            }
        }

        fn set(&mut self, weight: [f32; 2], running: [f32; 2], tracked: f32) {
            self.weight
                .set_value(Tensor::from_vec(weight.to_vec(), &[2]).unwrap());
            self.running = Tensor::from_vec(running.to_vec(), &[2]).unwrap();
            self.tracked = Tensor::scalar(tracked);
        }
    }

    impl Module for Pair {
        fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
            input
        }
        fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
            visitor("weight", &self.weight);
        }
        fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
            visitor("weight", &mut self.weight);
        }
        fn visit_buffers(&self, visitor: &mut dyn FnMut(&str, &Tensor)) {
            visitor("running", &self.running);
            visitor("bn.num_batches_tracked", &self.tracked);
        }
        fn visit_buffers_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Tensor)) {
            visitor("running", &mut self.running);
            visitor("bn.num_batches_tracked", &mut self.tracked);
        }
    }

    fn close(actual: &Tensor, expected: &[f32]) -> bool {
        actual
            .as_slice()
            .iter()
            .zip(expected)
            .all(|(a, e)| (a - e).abs() <= 1e-6 * e.abs().max(1.0))
    }

    #[test]
    fn ema_by_hand_copies_first_then_decays() {
        let mut model = Pair::new([1.0, -2.0], [0.5, 4.0]);
        let mut ema = WeightAverage::ema(0.75);
        ema.update(&model);
        model.set([3.0, 2.0], [1.5, 0.0], 7.0);
        ema.update(&model);
        model.set([-1.0, 0.0], [0.5, 8.0], 9.0);
        ema.update(&model);
        assert_eq!(ema.n_averaged(), 3);
        // 0.75·(0.75·1 + 0.25·3) + 0.25·(−1) = 0.875, and so on.
        let weight = [
            0.75 * (0.75 * 1.0 + 0.25 * 3.0) - 0.25,
            0.75 * (0.75 * -2.0 + 0.25 * 2.0),
        ];
        let running = [
            0.75 * (0.75 * 0.5 + 0.25 * 1.5) + 0.25 * 0.5,
            0.75 * (0.75 * 4.0) + 0.25 * 8.0,
        ];
        ema.swap(&mut model);
        assert!(
            close(model.weight.value(), &weight),
            "{:?}",
            model.weight.value()
        );
        assert!(close(&model.running, &running), "{:?}", model.running);
        // The counter is the model's last, not an average.
        assert_eq!(model.tracked.item(), 9.0);
        ema.swap(&mut model);
        assert_eq!(model.weight.value().as_slice(), &[-1.0, 0.0]);
        assert_eq!(model.running.as_slice(), &[0.5, 8.0]);
    }

    #[test]
    fn equal_average_is_the_mean_and_start_step_skips_updates() {
        let mut model = Pair::new([100.0, 100.0], [100.0, 100.0]);
        let mut swa = WeightAverage::equal().start_step(2);
        for value in [100.0, 100.0, 1.0, 2.0, 6.0] {
            model.set([value, -value], [value, 2.0 * value], 0.0);
            swa.update(&model);
        }
        assert_eq!(swa.n_averaged(), 3);
        swa.copy_to(&mut model);
        assert!(close(model.weight.value(), &[3.0, -3.0]));
        assert!(close(&model.running, &[3.0, 6.0]));
    }

    #[test]
    fn decay_one_keeps_the_first_model_and_zero_the_last() {
        for (decay, expected) in [(1.0, 1.0), (0.0, 5.0)] {
            let mut model = Pair::new([1.0, 1.0], [1.0, 1.0]);
            let mut ema = WeightAverage::ema(decay);
            ema.update(&model);
            model.set([5.0, 5.0], [5.0, 5.0], 1.0);
            ema.update(&model);
            ema.copy_to(&mut model);
            assert_eq!(model.weight.value().as_slice(), &[expected, expected]);
        }
    }

    #[test]
    #[should_panic(expected = "WeightAverage::ema: decay must be in [0, 1] (decay = 1.5)")]
    fn decay_above_one_panics() {
        WeightAverage::ema(1.5);
    }

    #[test]
    #[should_panic(expected = "WeightAverage::ema: decay must be in [0, 1] (decay = NaN)")]
    fn nan_decay_panics() {
        WeightAverage::new(Averaging::Exponential { decay: f64::NAN });
    }

    #[test]
    #[should_panic(expected = "WeightAverage::update: the model's parameters must match")]
    fn another_model_panics() {
        let mut ema = WeightAverage::ema(0.9);
        ema.update(&Pair::new([1.0, 1.0], [1.0, 1.0]));
        let mut other = Pair::new([1.0, 1.0], [1.0, 1.0]);
        other.weight = Param::new("weight", Tensor::zeros(&[3]));
        ema.update(&other);
    }

    #[test]
    #[should_panic(expected = "swap it back before updating")]
    fn updating_while_swapped_panics() {
        let mut model = Pair::new([1.0, 1.0], [1.0, 1.0]);
        let mut ema = WeightAverage::ema(0.9);
        ema.update(&model);
        ema.swap(&mut model);
        ema.update(&model);
    }

    #[test]
    fn state_dict_round_trips_and_rejects_a_wrong_one() {
        let mut model = Pair::new([1.0, 2.0], [3.0, 4.0]);
        let mut ema = WeightAverage::ema(0.5).start_step(1);
        for step in 0..4 {
            model.set([step as f32, 1.0], [2.0, step as f32], step as f32);
            ema.update(&model);
        }
        let mut reference = ema.clone();
        ema.swap(&mut model);
        let state = ema.state_dict();
        let mut restored = WeightAverage::ema(0.5).start_step(1);
        restored.load_state_dict(&model, &state).unwrap();
        assert!(restored.is_swapped());
        assert_eq!(restored.n_averaged(), 3);
        restored.swap(&mut model);
        assert_eq!(model.weight.value().as_slice(), &[3.0, 1.0]);
        model.set([5.0, 5.0], [5.0, 5.0], 5.0);
        reference.update(&model);
        restored.update(&model);
        let (mut a, mut b) = (Pair::new([0.0; 2], [0.0; 2]), Pair::new([0.0; 2], [0.0; 2]));
        reference.copy_to(&mut a);
        restored.copy_to(&mut b);
        assert_eq!(a.weight.value(), b.weight.value());
        assert_eq!(a.running, b.running);

        let mut bad = state.clone();
        bad.retain(|(k, _)| k != "updates");
        bad.push(("param.other".into(), Tensor::zeros(&[1])));
        bad[0].1 = Tensor::zeros(&[3]);
        let error = restored
            .load_state_dict(&model, &bad)
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing keys updates"), "{error}");
        assert!(error.contains("unexpected keys param.other"), "{error}");
        assert!(
            error.contains("param.weight: expected shape [2], found [3]"),
            "{error}"
        );
    }
}
