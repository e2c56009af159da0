//! `Dropout`: random zeroing during training.

use super::{Graph, Module, Op, ValueId, no_params};
use crate::autograd::Var;
use crate::tensor::check::contract_violation;

/// Zeroes each element with probability `p` on a training tape, scaling the rest by
/// `1 / (1 − p)`; the identity on an inference tape (PyTorch's `nn.Dropout`).
///
/// # Examples
///
/// ```
/// use striate::nn::{Dropout, Module};
/// use striate::Tensor;
///
/// let dropout = Dropout::new(0.5);
/// let x = Tensor::ones(&[4, 8]);
/// assert_eq!(dropout.predict(&x), x); // inference: identity
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f32,
}

impl Dropout {
    /// Dropout with probability `p`.
    ///
    /// # Panics
    ///
    /// If `p` is outside `[0, 1]`.
    pub fn new(p: f32) -> Dropout {
        if !(0.0..=1.0).contains(&p) {
            contract_violation(
                "Dropout",
                "probability must be in [0, 1]",
                format_args!("p = {p}"),
            );
        }
        Dropout { p }
    }
}

impl Module for Dropout {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.dropout(self.p)
    }

    fn describe(&self) -> String {
        format!("Dropout(p={})", self.p)
    }

    /// Dropout is the identity at inference.
    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::Identity, &[input]))
    }
}
