//! `RmsProp`: gradients scaled by a running root mean square, following
//! `torch.optim.RMSprop`.

use super::delegate_to_state;
use super::groups::{GroupOptions, ParamGroup};
use super::state::{Field, FieldKind, Fields, OptimizerState, ParamState, ParamUpdate};
use super::{Optimizer, expect_non_negative, lerp};
use crate::autograd::Gradients;
use crate::error::Result;
use crate::nn::Module;
use crate::tensor::Tensor;
use crate::tensor::check::contract_violation;
use crate::util::simd::par_chunks_mut_dispatch;

/// The settings of [`RmsProp`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// The learning rate η (PyTorch's `lr`, default 1e-2).
    pub learning_rate: f64,
    /// The smoothing constant α of the running mean of g², in `[0, 1]` (default 0.99).
    pub alpha: f64,
    /// Added to the denominator for numerical stability (default 1e-8).
    pub eps: f64,
    /// The L2 penalty λ added to the gradient (default 0).
    pub weight_decay: f64,
    /// The momentum factor μ; 0 keeps no momentum buffer (default 0).
    pub momentum: f64,
    /// Divide by the centred second moment (an estimate of the variance) instead of the raw
    /// one (default false).
    pub centered: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig {
            learning_rate: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
    }
}

/// RMSprop, following `torch.optim.RMSprop` exactly.
///
/// For each parameter `p` with gradient `∇`, with learning rate η, weight decay λ, smoothing
/// α, momentum μ and ε; `s`, `ḡ` and `b` start at zero:
///
/// ```text
/// g ← ∇ + λ·p                                  (if λ ≠ 0)
/// s ← α·s + (1 − α)·g²
/// ḡ ← α·ḡ + (1 − α)·g                          (centered)
/// a ← √(s − ḡ²) + ε  (centered),  √s + ε  (otherwise)
/// b ← μ·b + g/a;  p ← p − η·b                  (if μ > 0)
/// p ← p − η·g/a                                (otherwise)
/// ```
///
/// Unlike some other frameworks, ε is added after the square root, as in PyTorch.
///
/// # Examples
///
/// ```
/// use striate::optim::{Optimizer, RmsProp, RmsPropConfig};
///
/// let rmsprop = RmsProp::new(RmsPropConfig { momentum: 0.9, centered: true, ..Default::default() });
/// assert_eq!(rmsprop.learning_rate(), 1e-2);
/// ```
#[derive(Clone, Debug)]
pub struct RmsProp {
    config: RmsPropConfig,
    state: OptimizerState<RmsPropState>,
}

impl RmsProp {
    /// An optimizer with one default group configured by `config`.
    ///
    /// # Panics
    ///
    /// If the learning rate, eps, weight decay or momentum is negative or not finite, or alpha
    /// is outside `[0, 1]`.
    #[track_caller]
    pub fn new(config: RmsPropConfig) -> RmsProp {
        const OP: &str = "RmsProp";
        expect_non_negative(OP, "eps", config.eps);
        expect_non_negative(OP, "momentum", config.momentum);
        if !(0.0..=1.0).contains(&config.alpha) {
            contract_violation(
                OP,
                "alpha must be in [0, 1]",
                format_args!("alpha = {}", config.alpha),
            );
        }
        RmsProp {
            state: OptimizerState::new(OP, config.learning_rate, config.weight_decay),
            config,
        }
    }

    /// Adds a parameter group with its own learning rate and weight decay; see
    /// [`Sgd::with_group`](super::Sgd::with_group) for how prefixes select parameters.
    ///
    /// # Panics
    ///
    /// If the prefix is empty or already used, or an option is negative or not finite.
    #[track_caller]
    pub fn with_group(mut self, prefix: &str, options: GroupOptions) -> RmsProp {
        self.state.add_group(prefix, options);
        self
    }

    /// The configuration this optimizer was built with.
    pub fn config(&self) -> &RmsPropConfig {
        &self.config
    }

    fn layout(&self) -> Vec<Field> {
        let mut layout = vec![(SQUARE_AVG, FieldKind::Buffer)];
        if self.config.momentum > 0.0 {
            layout.push((MOMENTUM_BUFFER, FieldKind::Buffer));
        }
        if self.config.centered {
            layout.push((GRAD_AVG, FieldKind::Buffer));
        }
        layout
    }
}

const SQUARE_AVG: &str = "square_avg";
const MOMENTUM_BUFFER: &str = "momentum_buffer";
const GRAD_AVG: &str = "grad_avg";

/// The running averages of one parameter, named as in PyTorch's state.
#[derive(Clone, Debug)]
struct RmsPropState {
    square_avg: Tensor,
    momentum_buffer: Option<Tensor>,
    grad_avg: Option<Tensor>,
}

impl ParamState for RmsPropState {
    fn to_fields(&self) -> Vec<(&'static str, Tensor)> {
        let mut fields = vec![(SQUARE_AVG, self.square_avg.clone())];
        if let Some(b) = &self.momentum_buffer {
            fields.push((MOMENTUM_BUFFER, b.clone()));
        }
        if let Some(g) = &self.grad_avg {
            fields.push((GRAD_AVG, g.clone()));
        }
        fields
    }

    fn from_fields(fields: &mut Fields) -> Self {
        RmsPropState {
            square_avg: fields.buffer(SQUARE_AVG),
            momentum_buffer: fields.take(MOMENTUM_BUFFER),
            grad_avg: fields.take(GRAD_AVG),
        }
    }
}

/// The constants of one parameter's RMSprop step.
#[derive(Clone, Copy)]
struct RmsPropElement {
    lr: f32,
    decay: f32,
    keep: f32,
    blend: f32,
    eps: f32,
    mu: f32,
}

impl RmsPropElement {
    /// The update of one element: `s` its running mean square, `m` its running mean (centred),
    /// `b` its momentum buffer.
    #[inline(always)]
    fn update(self, p: &mut f32, g: f32, s: &mut f32, m: Option<&mut f32>, b: Option<&mut f32>) {
        let g = g + self.decay * *p;
        *s = *s * self.keep + self.blend * g * g;
        let avg = match m {
            Some(m) => {
                *m = lerp(*m, g, self.blend);
                (*s - *m * *m).sqrt() + self.eps
            }
            None => s.sqrt() + self.eps,
        };
        match b {
            Some(b) => {
                *b = *b * self.mu + g / avg;
                *p -= self.lr * *b;
            }
            None => *p -= self.lr * g / avg,
        }
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self, model: &mut dyn Module, grads: &Gradients) {
        let RmsPropConfig {
            alpha,
            eps,
            momentum,
            centered,
            ..
        } = self.config;
        let (keep, blend) = (alpha as f32, (1.0 - alpha) as f32);
        let (eps, mu) = (eps as f32, momentum as f32);
        self.state.for_each_update(model, grads, |update| {
            let ParamUpdate {
                learning_rate,
                weight_decay,
                shape,
                param,
                grad,
                state,
            } = update;
            let state = state.or_insert_with(|| RmsPropState {
                square_avg: Tensor::zeros(shape),
                momentum_buffer: (momentum > 0.0).then(|| Tensor::zeros(shape)),
                grad_avg: centered.then(|| Tensor::zeros(shape)),
            });
            let element = RmsPropElement {
                lr: learning_rate as f32,
                decay: weight_decay as f32,
                keep,
                blend,
                eps,
                mu,
            };
            // On the CPU's widest vectors, the same IEEE operations, a large parameter's chunks
            // on every thread (see `Sgd::step`); one loop per set of state buffers.
            let RmsPropState {
                square_avg,
                momentum_buffer,
                grad_avg,
            } = state;
            let s = square_avg.as_slice_mut();
            match (grad_avg, momentum_buffer) {
                (None, None) => par_chunks_mut_dispatch(
                    [param, s],
                    #[inline(always)]
                    move |at, [param, s]| {
                        for ((p, &g), s) in param.iter_mut().zip(&grad[at..]).zip(s) {
                            element.update(p, g, s, None, None);
                        }
                    },
                ),
                (Some(m), None) => par_chunks_mut_dispatch(
                    [param, s, m.as_slice_mut()],
                    #[inline(always)]
                    move |at, [param, s, m]| {
                        let steps = param.iter_mut().zip(&grad[at..]).zip(s).zip(m);
                        for (((p, &g), s), m) in steps {
                            element.update(p, g, s, Some(m), None);
                        }
                    },
                ),
                (None, Some(b)) => par_chunks_mut_dispatch(
                    [param, s, b.as_slice_mut()],
                    #[inline(always)]
                    move |at, [param, s, b]| {
                        let steps = param.iter_mut().zip(&grad[at..]).zip(s).zip(b);
                        for (((p, &g), s), b) in steps {
                            element.update(p, g, s, None, Some(b));
                        }
                    },
                ),
                (Some(m), Some(b)) => par_chunks_mut_dispatch(
                    [param, s, m.as_slice_mut(), b.as_slice_mut()],
                    #[inline(always)]
                    move |at, [param, s, m, b]| {
                        let steps = param.iter_mut().zip(&grad[at..]).zip(s).zip(m).zip(b);
                        for ((((p, &g), s), m), b) in steps {
                            element.update(p, g, s, Some(m), Some(b));
                        }
                    },
                ),
            }
        });
    }

    delegate_to_state!(state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_model::{TwoParams, assert_slice_eq, step};

    #[test]
    fn two_steps_by_hand() {
        let mut model = TwoParams::new([1.0, -2.0], [0.5]);
        let mut rmsprop = RmsProp::new(RmsPropConfig {
            learning_rate: 0.01,
            alpha: 0.9,
            eps: 0.0,
            ..Default::default()
        });
        // Step 1: s = 0.1·g², so g/√s = sign(g)·√10.
        step(&mut rmsprop, &mut model, Some(&[2.0, -3.0]), None);
        let step1 = 0.01 * 10f32.sqrt();
        assert_slice_eq(
            model.weight.value().as_slice(),
            &[1.0 - step1, -2.0 + step1],
        );
        // Step 2, element 0 with g = 1: s = 0.9·0.4 + 0.1·1 = 0.46.
        step(&mut rmsprop, &mut model, Some(&[1.0, -3.0]), None);
        let e0 = 1.0 - step1 - 0.01 / 0.46f32.sqrt();
        // Element 1 with g = −3 again: s = 0.9·0.9 + 0.1·9 = 1.71.
        let e1 = -2.0 + step1 + 0.01 * 3.0 / 1.71f32.sqrt();
        assert_slice_eq(model.weight.value().as_slice(), &[e0, e1]);
    }

    #[test]
    #[should_panic(expected = "RmsProp: alpha must be in [0, 1] (alpha = 1.5)")]
    fn alpha_above_one_panics() {
        RmsProp::new(RmsPropConfig {
            alpha: 1.5,
            ..Default::default()
        });
    }
}
