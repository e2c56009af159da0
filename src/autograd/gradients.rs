//! `Gradients`: what one backward pass produced, keyed by parameter id.

use std::collections::HashMap;

use super::param::{Param, ParamId};
use super::var::Var;
use crate::tensor::check::contract_violation;

/// The gradients of one backward pass: one tensor per trainable parameter that the loss depends
/// on (summed where a parameter was used more than once), plus one per
/// [`crate::Tape::variable`] leaf.
///
/// Each backward pass returns a fresh `Gradients`, so there is nothing to zero between steps.
#[derive(Debug, Default, Clone)]
pub struct Gradients {
    params: HashMap<ParamId, crate::Tensor>,
    variables: HashMap<usize, crate::Tensor>,
    tape_id: u64,
}

impl Gradients {
    pub(crate) fn new(tape_id: u64) -> Gradients {
        Gradients {
            tape_id,
            ..Gradients::default()
        }
    }

    pub(crate) fn accumulate_param(&mut self, id: ParamId, grad: crate::Tensor) {
        match self.params.get_mut(&id) {
            Some(existing) => existing.add_assign(&grad),
            None => {
                self.params.insert(id, grad);
            }
        }
    }

    pub(crate) fn insert_variable(&mut self, node: usize, grad: crate::Tensor) {
        self.variables.insert(node, grad);
    }

    /// The gradient of a parameter, if the loss depends on it and it is not frozen.
    pub fn get(&self, param: &Param) -> Option<&crate::Tensor> {
        self.params.get(&param.id())
    }

    /// The gradient of the parameter with this id.
    pub fn get_by_id(&self, id: ParamId) -> Option<&crate::Tensor> {
        self.params.get(&id)
    }

    /// The gradient of a parameter, mutably (for clipping or scaling before a step).
    pub fn get_mut(&mut self, id: ParamId) -> Option<&mut crate::Tensor> {
        self.params.get_mut(&id)
    }

    /// Replaces or adds the gradient of a parameter.
    pub fn insert(&mut self, id: ParamId, grad: crate::Tensor) {
        self.params.insert(id, grad);
    }

    /// The gradient with respect to a leaf made by [`crate::Tape::variable`].
    ///
    /// # Panics
    ///
    /// If `var` belongs to a different tape than the one this backward pass ran on.
    pub fn wrt(&self, var: Var<'_>) -> Option<&crate::Tensor> {
        if var.tape().id() != self.tape_id {
            contract_violation(
                "Gradients::wrt",
                "the variable belongs to another tape",
                format_args!(
                    "variable's tape {}, gradients' tape {}",
                    var.tape().id(),
                    self.tape_id
                ),
            );
        }
        self.variables.get(&var.node())
    }

    /// Iterates over `(id, gradient)` pairs of parameters, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &crate::Tensor)> {
        self.params.iter().map(|(&id, g)| (id, g))
    }

    /// Iterates mutably over parameter gradients, in no particular order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ParamId, &mut crate::Tensor)> {
        self.params.iter_mut().map(|(&id, g)| (id, g))
    }

    /// The number of parameter gradients.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether no parameter received a gradient.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
}
