//! `Adam` and `AdamW`: adaptive moment estimation with L2 or decoupled weight decay, following
//! `torch.optim.Adam` and `torch.optim.AdamW`. One update rule serves both.

use super::delegate_to_state;
use super::groups::{GroupOptions, ParamGroup};
use super::state::{
    Field, FieldKind, Fields, OptimizerState, ParamState, ParamUpdate, count_tensor,
};
use super::{Optimizer, expect_non_negative, lerp};
use crate::autograd::Gradients;
use crate::error::Result;
use crate::nn::Module;
use crate::tensor::Tensor;
use crate::tensor::check::contract_violation;
use crate::util::simd::par_chunks_mut_dispatch;

/// The settings of [`Adam`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// The learning rate η (PyTorch's `lr`, default 1e-3).
    pub learning_rate: f64,
    /// The decay rates (β₁, β₂) of the first and second moment estimates, each in `[0, 1)`
    /// (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator for numerical stability (default 1e-8).
    pub eps: f64,
    /// The L2 penalty λ added to the gradient (default 0). For decoupled decay use [`AdamW`].
    pub weight_decay: f64,
    /// Use the running maximum of the second moment, from "On the Convergence of Adam and
    /// Beyond" (default false).
    pub amsgrad: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            learning_rate: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
        }
    }
}

/// The settings of [`AdamW`]: those of [`AdamConfig`], with PyTorch's AdamW default weight
/// decay of 1e-2.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// The learning rate η (default 1e-3).
    pub learning_rate: f64,
    /// The decay rates (β₁, β₂), each in `[0, 1)` (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator for numerical stability (default 1e-8).
    pub eps: f64,
    /// The decoupled weight decay λ: each step scales parameters by `1 − η·λ` (default 1e-2).
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (default false).
    pub amsgrad: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            weight_decay: 1e-2,
            ..AdamWConfig::from(AdamConfig::default())
        }
    }
}

impl From<AdamConfig> for AdamWConfig {
    fn from(c: AdamConfig) -> Self {
        AdamWConfig {
            learning_rate: c.learning_rate,
            betas: c.betas,
            eps: c.eps,
            weight_decay: c.weight_decay,
            amsgrad: c.amsgrad,
        }
    }
}

impl From<AdamWConfig> for AdamConfig {
    fn from(c: AdamWConfig) -> Self {
        AdamConfig {
            learning_rate: c.learning_rate,
            betas: c.betas,
            eps: c.eps,
            weight_decay: c.weight_decay,
            amsgrad: c.amsgrad,
        }
    }
}

/// Adam, following `torch.optim.Adam` exactly.
///
/// For each parameter `p` with gradient `∇` and its own step count `t` (counting the steps
/// in which it had a gradient), with learning rate η, weight decay λ, betas (β₁, β₂) and ε;
/// `m` and `v` start at zero:
///
/// ```text
/// t ← t + 1
/// g ← ∇ + λ·p                                  (if λ ≠ 0)
/// m ← β₁·m + (1 − β₁)·g
/// v ← β₂·v + (1 − β₂)·g²
/// v̂ ← max(v̂, v)  with amsgrad,  else  v̂ = v
/// p ← p − η / (1 − β₁ᵗ) · m / (√v̂ / √(1 − β₂ᵗ) + ε)
/// ```
///
/// Parameter groups ([`Adam::with_group`]) override η and λ.
///
/// # Examples
///
/// ```
/// use striate::optim::{Adam, AdamConfig, Optimizer};
///
/// let adam = Adam::new(AdamConfig { learning_rate: 3e-4, ..Default::default() });
/// assert_eq!(adam.learning_rate(), 3e-4);
/// ```
#[derive(Clone, Debug)]
pub struct Adam {
    config: AdamConfig,
    /// AdamW's rule: decay the parameter by `1 − η·λ` instead of adding `λ·p` to the gradient.
    decoupled: bool,
    state: OptimizerState<AdamState>,
}

impl Adam {
    /// An optimizer with one default group configured by `config`.
    ///
    /// # Panics
    ///
    /// If the learning rate, eps or weight decay is negative or not finite, or a beta is
    /// outside `[0, 1)` (PyTorch's checks).
    #[track_caller]
    pub fn new(config: AdamConfig) -> Adam {
        Adam::with_rule("Adam", config, false)
    }

    #[track_caller]
    fn with_rule(name: &'static str, config: AdamConfig, decoupled: bool) -> Adam {
        expect_non_negative(name, "eps", config.eps);
        for (which, beta) in [("betas.0", config.betas.0), ("betas.1", config.betas.1)] {
            if !(0.0..1.0).contains(&beta) {
                contract_violation(
                    name,
                    format_args!("{which} must be in [0, 1)"),
                    format_args!("{which} = {beta}"),
                );
            }
        }
        Adam {
            state: OptimizerState::new(name, config.learning_rate, config.weight_decay),
            config,
            decoupled,
        }
    }

    /// Adds a parameter group with its own learning rate and weight decay; see
    /// [`Sgd::with_group`](super::Sgd::with_group) for how prefixes select parameters.
    ///
    /// # Panics
    ///
    /// If the prefix is empty or already used, or an option is negative or not finite.
    #[track_caller]
    pub fn with_group(mut self, prefix: &str, options: GroupOptions) -> Adam {
        self.state.add_group(prefix, options);
        self
    }

    /// The configuration this optimizer was built with.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    fn layout(&self) -> &'static [Field] {
        const PLAIN: &[Field] = &[
            (EXP_AVG, FieldKind::Buffer),
            (EXP_AVG_SQ, FieldKind::Buffer),
            (STEP, FieldKind::Count),
        ];
        const AMSGRAD: &[Field] = &[
            (EXP_AVG, FieldKind::Buffer),
            (EXP_AVG_SQ, FieldKind::Buffer),
            (MAX_EXP_AVG_SQ, FieldKind::Buffer),
            (STEP, FieldKind::Count),
        ];
        if self.config.amsgrad { AMSGRAD } else { PLAIN }
    }
}

const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";
const MAX_EXP_AVG_SQ: &str = "max_exp_avg_sq";
const STEP: &str = "step";

/// The moment estimates of one parameter, named as in PyTorch's state.
#[derive(Clone, Debug)]
struct AdamState {
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Option<Tensor>,
}

impl ParamState for AdamState {
    fn to_fields(&self) -> Vec<(&'static str, Tensor)> {
        let mut fields = vec![
            (EXP_AVG, self.exp_avg.clone()),
            (EXP_AVG_SQ, self.exp_avg_sq.clone()),
        ];
        if let Some(max) = &self.max_exp_avg_sq {
            fields.push((MAX_EXP_AVG_SQ, max.clone()));
        }
        fields.push((STEP, count_tensor(self.step)));
        fields
    }

    fn counts(&self) -> Vec<(&'static str, u64)> {
        vec![(STEP, self.step)]
    }

    fn from_fields(fields: &mut Fields) -> Self {
        AdamState {
            step: fields.count(STEP),
            exp_avg: fields.buffer(EXP_AVG),
            exp_avg_sq: fields.buffer(EXP_AVG_SQ),
            max_exp_avg_sq: fields.take(MAX_EXP_AVG_SQ),
        }
    }
}

/// The constants of one parameter's Adam step.
#[derive(Clone, Copy)]
struct AdamElement {
    shrink: f32,
    decay: f32,
    w1: f32,
    beta2: f32,
    w2: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
    step_size: f32,
}

impl AdamElement {
    /// The update of one element; `v_max` its running maximum of `v` under AMSGrad.
    #[inline(always)]
    fn update(self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32, v_max: Option<&mut f32>) {
        *p *= self.shrink;
        let g = g + self.decay * *p;
        *m = lerp(*m, g, self.w1);
        *v = *v * self.beta2 + self.w2 * g * g;
        let v_hat = match v_max {
            Some(v_max) => {
                *v_max = v_max.max(*v);
                *v_max
            }
            None => *v,
        };
        let denom = v_hat.sqrt() / self.bias_correction2_sqrt + self.eps;
        *p -= self.step_size * *m / denom;
    }
}

impl Optimizer for Adam {
    fn step(&mut self, model: &mut dyn Module, grads: &Gradients) {
        let AdamConfig {
            betas: (beta1, beta2),
            eps,
            amsgrad,
            ..
        } = self.config;
        let decoupled = self.decoupled;
        self.state.for_each_update(model, grads, |update| {
            let ParamUpdate {
                learning_rate,
                weight_decay,
                shape,
                param,
                grad,
                state,
            } = update;
            let state = state.or_insert_with(|| AdamState {
                step: 0,
                exp_avg: Tensor::zeros(shape),
                exp_avg_sq: Tensor::zeros(shape),
                max_exp_avg_sq: amsgrad.then(|| Tensor::zeros(shape)),
            });
            state.step += 1;
            let t = state.step as f64;
            let step_size = (learning_rate / (1.0 - beta1.powf(t))) as f32;
            let bias_correction2_sqrt = (1.0 - beta2.powf(t)).sqrt() as f32;
            let (w1, w2) = ((1.0 - beta1) as f32, (1.0 - beta2) as f32);
            let (beta2, eps) = (beta2 as f32, eps as f32);
            let (decay, shrink) = match decoupled {
                false => (weight_decay as f32, 1.0),
                true => (0.0, (1.0 - learning_rate * weight_decay) as f32),
            };
            let element = AdamElement {
                shrink,
                decay,
                w1,
                beta2,
                w2,
                bias_correction2_sqrt,
                eps,
                step_size,
            };
            // On the CPU's widest vectors, the same IEEE operations, a large parameter's chunks
            // on every thread (see `Sgd::step`).
            let AdamState {
                exp_avg,
                exp_avg_sq,
                max_exp_avg_sq,
                ..
            } = state;
            let (m, v) = (exp_avg.as_slice_mut(), exp_avg_sq.as_slice_mut());
            match max_exp_avg_sq {
                None => par_chunks_mut_dispatch(
                    [param, m, v],
                    #[inline(always)]
                    move |at, [param, m, v]| {
                        let steps = param.iter_mut().zip(&grad[at..]).zip(m).zip(v);
                        for (((p, &g), m), v) in steps {
                            element.update(p, g, m, v, None);
                        }
                    },
                ),
                Some(v_max) => par_chunks_mut_dispatch(
                    [param, m, v, v_max.as_slice_mut()],
                    #[inline(always)]
                    move |at, [param, m, v, v_max]| {
                        let steps = param.iter_mut().zip(&grad[at..]).zip(m).zip(v).zip(v_max);
                        for ((((p, &g), m), v), v_max) in steps {
                            element.update(p, g, m, v, Some(v_max));
                        }
                    },
                ),
            }
        });
    }

    delegate_to_state!(state);
}

/// AdamW: Adam with decoupled weight decay, following `torch.optim.AdamW` exactly.
///
/// The rule is [`Adam`]'s without the `λ·p` term in the gradient; instead, before the moment
/// updates, each step decays the parameter:
///
/// ```text
/// p ← p·(1 − η·λ)
/// ```
///
/// # Examples
///
/// ```
/// use striate::optim::{AdamW, AdamWConfig};
///
/// let adamw = AdamW::new(AdamWConfig { learning_rate: 1e-3, ..Default::default() });
/// assert_eq!(adamw.config().weight_decay, 1e-2);
/// ```
#[derive(Clone, Debug)]
pub struct AdamW {
    config: AdamWConfig,
    adam: Adam,
}

impl AdamW {
    /// The per-parameter fields: Adam's.
    fn layout(&self) -> &'static [Field] {
        self.adam.layout()
    }

    /// An optimizer with one default group configured by `config`.
    ///
    /// # Panics
    ///
    /// If the learning rate, eps or weight decay is negative or not finite, or a beta is
    /// outside `[0, 1)` (PyTorch's checks).
    #[track_caller]
    pub fn new(config: AdamWConfig) -> AdamW {
        AdamW {
            config,
            adam: Adam::with_rule("AdamW", config.into(), true),
        }
    }

    /// Adds a parameter group with its own learning rate and weight decay; see
    /// [`Sgd::with_group`](super::Sgd::with_group) for how prefixes select parameters.
    ///
    /// # Panics
    ///
    /// If the prefix is empty or already used, or an option is negative or not finite.
    #[track_caller]
    pub fn with_group(mut self, prefix: &str, options: GroupOptions) -> AdamW {
        self.adam = self.adam.with_group(prefix, options);
        self
    }

    /// The configuration this optimizer was built with.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, model: &mut dyn Module, grads: &Gradients) {
        self.adam.step(model, grads);
    }

    delegate_to_state!(adam.state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_model::{TwoParams, assert_slice_eq, step};

    #[test]
    fn first_steps_by_hand() {
        // With m = v = 0, the first bias-corrected step is η·g/(|g| + ε) ≈ η·sign(g).
        let mut model = TwoParams::new([1.0, -2.0], [0.5]);
        let mut adam = Adam::new(AdamConfig {
            learning_rate: 0.1,
            ..Default::default()
        });
        step(&mut adam, &mut model, Some(&[0.5, -4.0]), None);
        assert_slice_eq(model.weight.value().as_slice(), &[0.9, -1.9]);
        // Second step, element 0 with g = 1: m = 0.9·0.05 + 0.1 = 0.145,
        // v = 0.999·0.00025 + 0.001 = 0.00124975; m̂ = 0.145/0.19, v̂ = 0.00124975/0.001999.
        step(&mut adam, &mut model, Some(&[1.0, -4.0]), None);
        let m_hat = 0.145f64 / (1.0 - 0.81);
        let v_hat = 0.001_249_75f64 / (1.0 - 0.999f64.powi(2));
        let expected = 0.9 - 0.1 * m_hat / (v_hat.sqrt() + 1e-8);
        assert_slice_eq(model.weight.value().as_slice(), &[expected as f32, -1.8]);
    }

    #[test]
    fn adamw_decays_the_parameter_not_the_gradient() {
        // A zero gradient leaves m = v = 0, so only the decay p·(1 − ηλ) moves the parameter.
        let mut model = TwoParams::new([1.0, -2.0], [0.5]);
        let mut adamw = AdamW::new(AdamWConfig {
            learning_rate: 0.1,
            weight_decay: 0.5,
            ..Default::default()
        });
        step(&mut adamw, &mut model, Some(&[0.0, 0.0]), None);
        assert_slice_eq(model.weight.value().as_slice(), &[0.95, -1.9]);
        // Adam's L2 decay instead feeds λp into the moments: a full step of η against sign(p).
        let mut model = TwoParams::new([1.0, -2.0], [0.5]);
        let mut adam = Adam::new(AdamConfig {
            learning_rate: 0.1,
            weight_decay: 0.5,
            ..Default::default()
        });
        step(&mut adam, &mut model, Some(&[0.0, 0.0]), None);
        assert_slice_eq(model.weight.value().as_slice(), &[0.9, -1.9]);
    }

    #[test]
    #[should_panic(expected = "AdamW: betas.1 must be in [0, 1) (betas.1 = 1)")]
    fn beta_of_one_panics() {
        AdamW::new(AdamWConfig {
            betas: (0.9, 1.0),
            ..Default::default()
        });
    }
}
