//! Reverse-mode automatic differentiation on a tape.
//!
//! # How it works
//!
//! A [`Tape`] is an arena for one training step. Every op on a [`Var`] computes its value at
//! once and appends a node: the value, the input nodes, and a [`Backward`] rule holding what the
//! derivative needs. Nodes are appended in execution order, so the reverse of the tape is a
//! topological order and the backward pass is one loop:
//!
//! 1. seed the loss's gradient with 1;
//! 2. for each node from the loss down, take its gradient, ask its rule for the gradient of
//!    each input, sum those over broadcast axes back to the input's shape, and add them into
//!    the inputs' slots (the only `+=` of the crate);
//! 3. hand parameter gradients to a fresh [`Gradients`], keyed by [`ParamId`].
//!
//! Interior gradients and each rule's saved tensors are freed as soon as they are consumed;
//! dropping the tape frees the rest. Nothing outlives the step, so nothing leaks across steps
//! and there is no `zero_grad`.
//!
//! On a [`Tape::inference`] tape, or when no input needs a gradient (frozen layers, data),
//! [`Tape::record`] keeps only the value.
//!
//! # Adding an op
//!
//! Create `ops/<op>.rs` and add one `mod` line in `ops/mod.rs`. The file holds:
//! 1. a method on `Var` that computes the value (with [`crate::kernels`] or ndarray) and calls
//!    [`Tape::record`] with the inputs and a rule;
//! 2. a `#[derive(Debug)]` rule struct saving only what backward needs, whose [`Backward`] impl
//!    returns each input's local gradient under a one-line formula comment, skipping inputs
//!    whose `needs_grad` is false when that saves work;
//! 3. tests: a hand-computed case and a [`gradcheck()`].
//!
//! # Examples
//!
//! ```
//! use striate::{Param, Tape, Tensor};
//!
//! let w = Param::new("weight", Tensor::from_vec(vec![0.5, -1.0], &[2, 1]).unwrap());
//! let grads = {
//!     let tape = Tape::training();
//!     let x = tape.input(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap());
//!     let y = x.matmul(tape.param(&w)).sigmoid();
//!     y.mean().backward()
//! }; // the tape, and the graph with it, is dropped here
//! assert_eq!(grads.get(&w).unwrap().shape(), &[2, 1]);
//! ```

mod anomaly;
mod gradcheck;
mod gradients;
pub mod ops;
mod param;
mod tape;
#[cfg(test)]
pub(crate) mod test_util;
mod var;

pub(crate) use anomaly::first_non_finite;
pub use anomaly::{Anomaly, Pass};
pub use gradcheck::{GradcheckOptions, GradcheckReport, WorstElement, gradcheck, gradcheck_with};
pub use gradients::Gradients;
pub(crate) use param::fresh_version;
pub use param::{Param, ParamId};
pub use tape::{Backward, Mode, Tape};
pub use var::Var;
