//! A two-parameter module and helpers for the optimizer tests.

use crate::autograd::{Gradients, Param, Var};
use crate::nn::Module;
use crate::optim::Optimizer;
use crate::tensor::Tensor;

/// Parameters `body.weight` (2 elements) and `head.bias` (1 element); `forward` is unused.
pub(crate) struct TwoParams {
    pub(crate) weight: Param,
    pub(crate) bias: Param,
}

impl TwoParams {
    pub(crate) fn new(weight: [f32; 2], bias: [f32; 1]) -> TwoParams {
        TwoParams {
            weight: Param::new("weight", tensor(&weight)),
            bias: Param::new("bias", tensor(&bias)),
        }
    }
}

impl Module for TwoParams {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input
    }

    fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
        visitor("body.weight", &self.weight);
        visitor("head.bias", &self.bias);
    }

    fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
        visitor("body.weight", &mut self.weight);
        visitor("head.bias", &mut self.bias);
    }
}

pub(crate) fn tensor(values: &[f32]) -> Tensor {
    Tensor::from_vec(values.to_vec(), &[values.len()]).expect("1-D")
}

/// Gradients for the model's parameters; `None` leaves a parameter without one.
pub(crate) fn grads_for(
    model: &TwoParams,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
) -> Gradients {
    let mut grads = Gradients::default();
    if let Some(g) = weight {
        grads.insert(model.weight.id(), tensor(g));
    }
    if let Some(g) = bias {
        grads.insert(model.bias.id(), tensor(g));
    }
    grads
}

/// Asserts that two slices agree to within f32 rounding of a few operations.
#[track_caller]
pub(crate) fn assert_slice_eq(actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (a - e).abs() <= 1e-6 * (1.0 + e.abs()),
            "{actual:?} vs {expected:?}"
        );
    }
}

/// One step of `optimizer` on `model` with the given gradients.
pub(crate) fn step(
    optimizer: &mut dyn Optimizer,
    model: &mut TwoParams,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
) {
    let grads = grads_for(model, weight, bias);
    optimizer.step(model, &grads);
}
