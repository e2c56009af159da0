//! Optimizers, learning-rate schedules, gradient clipping and weight averaging.
//!
//! An [`Optimizer`] updates a [`Module`]'s parameters from the [`Gradients`] of one backward
//! pass. Every optimizer here follows PyTorch's `torch.optim` update rule exactly (each one
//! states its rule), so a run can be compared with PyTorch step by step; option names and
//! defaults are PyTorch's too.
//!
//! - Hyperparameters are `f64`, as PyTorch's are Python floats; each step derives its
//!   constants (bias corrections, `1 − β`) in `f64` and rounds them to `f32` once, as PyTorch's
//!   kernels do, then updates the `f32` parameters in place, element by element.
//! - A parameter that is frozen ([`Param::requires_grad`] off) or has no gradient in `grads`
//!   (it did not take part in the loss) is skipped and gets no state, as PyTorch skips
//!   parameters whose `.grad` is `None`.
//! - State is kept per parameter, keyed by [`ParamId`](crate::ParamId). Cloning a `Param`
//!   keeps its id, so one optimizer must not step two clones of a parameter.
//! - [Parameter groups](ParamGroup) give the parameters under a name prefix their own learning
//!   rate and weight decay. [Schedules](LrSchedule) set each group's rate from its initial one.
//! - [`Optimizer::state_dict`] exports the state by parameter name, and
//!   [`Optimizer::load_state_dict`] resumes it, step for step.
//! - A [`WeightAverage`] keeps an exponential moving average (or SWA's equal average) of the
//!   weights beside any optimizer, as PyTorch's `AveragedModel` does.
//!
//! # Examples
//!
//! A training step: forward on a fresh tape, backward, clip, step.
//!
//! ```
//! use striate::nn::Module;
//! use striate::optim::{Momentum, Optimizer, Sgd, SgdConfig, clip_grad_norm};
//! use striate::{Param, Tape, Tensor, Var};
//!
//! /// y = slope · x
//! struct Line {
//!     slope: Param,
//! }
//!
//! impl Module for Line {
//!     fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
//!         input * input.tape().param(&self.slope)
//!     }
//!     fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
//!         visitor("slope", &self.slope);
//!     }
//!     fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
//!         visitor("slope", &mut self.slope);
//!     }
//! }
//!
//! let mut model = Line { slope: Param::new("slope", Tensor::zeros(&[1])) };
//! let mut optimizer = Sgd::new(SgdConfig {
//!     learning_rate: 0.05,
//!     momentum: Some(Momentum::classic(0.5)),
//!     ..Default::default()
//! });
//! let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
//! let y = x.map(|v| 2.0 * v);
//! for _ in 0..50 {
//!     let tape = Tape::training();
//!     let loss = model.forward(tape.input(x.clone())).mse(tape.input(y.clone()));
//!     let mut grads = loss.backward();
//!     clip_grad_norm(&mut grads, 10.0).expect("finite gradients");
//!     optimizer.step(&mut model, &grads);
//! }
//! assert!((model.slope.value().item() - 2.0).abs() < 1e-3);
//! ```

mod adam;
mod averaging;
mod clip;
mod groups;
mod rmsprop;
pub mod schedule;
mod sgd;
mod state;

/// Writes, inside an `impl Optimizer` block, the six methods every striate optimizer hands to
/// its [`OptimizerState`](state::OptimizerState): `param_groups`, `param_groups_mut`,
/// `state_dict`, `load_state_dict`, `state_counts` and `load_state_dict_with_counts`. The
/// argument is the path of the state field (`state`, or `adam.state` for AdamW); the
/// optimizer provides an inherent `layout()` listing its per-parameter fields. One place, so
/// the four optimizers cannot drift apart in how they save and load.
macro_rules! delegate_to_state {
    ($($field:ident).+) => {
        fn param_groups(&self) -> &[ParamGroup] {
            self.$($field).+.groups()
        }

        fn param_groups_mut(&mut self) -> &mut [ParamGroup] {
            self.$($field).+.groups_mut()
        }

        fn state_dict(&self, model: &dyn Module) -> Vec<(String, Tensor)> {
            self.$($field).+.state_dict(model)
        }

        fn load_state_dict(
            &mut self,
            model: &dyn Module,
            state: &[(String, Tensor)],
        ) -> Result<()> {
            self.load_state_dict_with_counts(model, state, &[])
        }

        fn state_counts(&self, model: &dyn Module) -> Vec<(String, u64)> {
            self.$($field).+.counts(model)
        }

        fn load_state_dict_with_counts(
            &mut self,
            model: &dyn Module,
            state: &[(String, Tensor)],
            counts: &[(String, u64)],
        ) -> Result<()> {
            let layout = self.layout();
            self.$($field).+.load_state_dict_with_counts(model, layout.as_ref(), state, counts)
        }
    };
}

pub(crate) use delegate_to_state;

pub use adam::{Adam, AdamConfig, AdamW, AdamWConfig};
pub use averaging::{Averaging, WeightAverage};
pub use clip::{clip_grad_norm, clip_grad_value};
pub use groups::{GroupOptions, ParamGroup};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use schedule::{
    Constant, CosineAnnealingLr, ExponentialLr, LinearWarmup, LrSchedule, MultiStepLr,
    PlateauConfig, PlateauMode, PlateauState, ReduceLrOnPlateau, StepLr, ThresholdMode,
};
pub use sgd::{Momentum, Sgd, SgdConfig};

use crate::autograd::Gradients;
#[cfg(doc)]
use crate::autograd::Param;
use crate::error::Result;
use crate::nn::Module;
use crate::tensor::Tensor;
use crate::tensor::check::contract_violation;

/// Updates a model's parameters from gradients. Object safe, so a training loop can hold a
/// `Box<dyn Optimizer>`.
///
/// Group 0 of [`Optimizer::param_groups`] is the default group, configured by the optimizer's
/// config; [`Optimizer::learning_rate`] is its rate.
///
/// # Examples
///
/// ```
/// use striate::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
///
/// let mut optimizers: Vec<Box<dyn Optimizer>> = vec![
///     Box::new(Sgd::new(SgdConfig { learning_rate: 0.1, ..Default::default() })),
///     Box::new(Adam::new(AdamConfig::default())),
/// ];
/// for optimizer in &mut optimizers {
///     optimizer.set_learning_rate(optimizer.learning_rate() / 2.0);
/// }
/// assert_eq!(optimizers[0].learning_rate(), 0.05);
/// ```
pub trait Optimizer: Send {
    /// Updates every trainable parameter of `model` that has a gradient in `grads`, using its
    /// group's learning rate and weight decay.
    ///
    /// # Panics
    ///
    /// If a gradient's shape differs from its parameter's, or a parameter group selects no
    /// parameter of `model` (a mistyped prefix).
    fn step(&mut self, model: &mut dyn Module, grads: &Gradients);

    /// The parameter groups, the default group first.
    fn param_groups(&self) -> &[ParamGroup];

    /// The parameter groups, to set their learning rates (as schedules do).
    fn param_groups_mut(&mut self) -> &mut [ParamGroup];

    /// The optimizer's state as `(key, tensor)` pairs, for checkpoints: for each parameter of
    /// `model` with state, `state.<parameter name>.<field>` (such as
    /// `state.features.0.weight.exp_avg`, or `.step` as a rank-0 tensor), in `model`'s order;
    /// then `param_groups.<index>.learning_rate` for each group.
    ///
    /// The tensors are a snapshot that shares buffers with the optimizer until its next step
    /// (copy-on-write), so taking it is cheap. Being f32, a step count is exact up to 2^24
    /// ([`Optimizer::state_counts`] has it exactly, and checkpoints store that) and a learning
    /// rate is rounded; loading keeps the optimizer's exact rate when it rounds to the stored
    /// one.
    fn state_dict(&self, model: &dyn Module) -> Vec<(String, Tensor)>;

    /// Replaces the state and the groups' learning rates with those of a
    /// [`Optimizer::state_dict`], matching parameters of `model` by name, so that training
    /// resumes step for step. Parameters absent from `state` start afresh.
    ///
    /// # Errors
    ///
    /// [`Error::StateDict`](crate::Error::StateDict), listing every key that is missing (a
    /// field of a parameter whose other fields are present, a group's learning rate), every
    /// unexpected key (an unknown parameter or field), and every tensor whose shape or value
    /// does not fit. Nothing is loaded then.
    fn load_state_dict(&mut self, model: &dyn Module, state: &[(String, Tensor)]) -> Result<()>;

    /// The integer part of the state — step counts — exactly, as `(key, count)` pairs under
    /// the keys [`Optimizer::state_dict`] gives their f32 tensors (exact only up to 2^24).
    /// Checkpoints store these as I64. Optimizers without counts return nothing (the default).
    fn state_counts(&self, model: &dyn Module) -> Vec<(String, u64)> {
        let _ = model;
        Vec::new()
    }

    /// [`Optimizer::load_state_dict`] with exact counts, as [`Optimizer::state_counts`] gives
    /// them: a count in `counts` takes the place of the tensor of the same key in `state`
    /// (which may then be absent). The default, for optimizers without counts, passes the
    /// counts on as f32 scalars.
    ///
    /// # Errors
    ///
    /// As [`Optimizer::load_state_dict`].
    fn load_state_dict_with_counts(
        &mut self,
        model: &dyn Module,
        state: &[(String, Tensor)],
        counts: &[(String, u64)],
    ) -> Result<()> {
        let mut state = state.to_vec();
        state.retain(|(key, _)| !counts.iter().any(|(k, _)| k == key));
        state.extend(
            counts
                .iter()
                .map(|(k, c)| (k.clone(), Tensor::scalar(*c as f32))),
        );
        self.load_state_dict(model, &state)
    }

    /// The learning rate of the default group.
    fn learning_rate(&self) -> f64 {
        self.param_groups()[0].learning_rate()
    }

    /// Sets the default group's learning rate to `learning_rate` and scales every other group
    /// by the same factor relative to its initial rate, so the groups keep their configured
    /// ratios: group `i` gets `learning_rate × initialᵢ / initial₀`. If the default group's
    /// initial rate is 0, the ratios are undefined and every group gets `learning_rate`.
    ///
    /// # Panics
    ///
    /// If `learning_rate` is negative or not finite.
    fn set_learning_rate(&mut self, learning_rate: f64) {
        let groups = self.param_groups_mut();
        let base = groups[0].initial_learning_rate();
        groups[0].set_learning_rate(learning_rate);
        for group in &mut groups[1..] {
            let rate = if base > 0.0 {
                group.initial_learning_rate() * (learning_rate / base)
            } else {
                learning_rate
            };
            group.set_learning_rate(rate);
        }
    }
}

/// Panics unless a hyperparameter (a learning rate, a weight decay, a factor) is finite and
/// not negative, PyTorch's check on most of them.
#[track_caller]
pub(crate) fn expect_non_negative(op: &str, name: &str, value: f64) {
    if !value.is_finite() || value < 0.0 {
        contract_violation(
            op,
            format_args!("{name} must be finite and not negative"),
            format_args!("{name} = {value}"),
        );
    }
}

/// PyTorch's `lerp(a, b, w) = a + w·(b − a)`, in the form its CPU kernel uses for small `w`
/// (and the mirrored form for large `w`), so moment estimates round as PyTorch's do.
#[inline]
pub(crate) fn lerp(a: f32, b: f32, w: f32) -> f32 {
    if w.abs() < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

#[cfg(test)]
pub(crate) mod test_model;
#[cfg(test)]
mod tests;
