//! `Var<'t>`: a `Copy` handle to one value on a tape.

use std::fmt;

use super::gradients::Gradients;
use super::param::ParamId;
use super::tape::Tape;
use crate::tensor::Tensor;

/// A value recorded on a [`Tape`]: a tape reference and a node index, `Copy`, so expressions read
/// like maths (`a * b + c`). The borrow checker keeps it from outliving its tape.
///
/// The methods used most, by task (each links to its documentation below):
///
/// | task | methods |
/// |---|---|
/// | read the value | [`value`](Var::value), [`item`](Var::item) (one element), [`shape`](Var::shape) |
/// | differentiate | [`backward`](Var::backward) → [`Gradients`], [`detach`](Var::detach) |
/// | layers as functions | [`conv2d`](Var::conv2d), [`linear`](Var::linear), [`matmul`](Var::matmul), [`max_pool2d`](Var::max_pool2d), [`avg_pool2d`](Var::avg_pool2d), [`batch_norm_train`](Var::batch_norm_train), [`dropout`](Var::dropout) |
/// | activations | [`relu`](Var::relu), [`leaky_relu`](Var::leaky_relu), [`elu`](Var::elu), [`sigmoid`](Var::sigmoid), [`tanh`](Var::tanh), [`softmax`](Var::softmax), [`log_softmax`](Var::log_softmax) |
/// | losses | [`cross_entropy`](Var::cross_entropy), [`nll`](Var::nll), [`mse`](Var::mse), [`l1`](Var::l1), [`binary_cross_entropy_with_logits`](Var::binary_cross_entropy_with_logits) |
/// | reductions | [`sum`](Var::sum), [`mean`](Var::mean), [`max`](Var::max), [`min`](Var::min) and their `_axes` forms |
/// | shapes | [`reshape`](Var::reshape), [`flatten`](Var::flatten), [`permute`](Var::permute), [`transpose`](Var::transpose), [`concat`](Var::concat), [`narrow`](Var::narrow) |
///
/// Operators `+ - * /` work with other vars or with `f32`; binary operators broadcast
/// NumPy-style. NaN and infinities propagate through every op exactly as in PyTorch.
///
/// # Examples
///
/// ```
/// use striate::{Tape, Tensor};
///
/// let tape = Tape::training();
/// let x = tape.variable(Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3])?);
/// let loss = (x.relu() * 2.0).sum();
/// assert_eq!(loss.item(), 8.0);
/// let grads = loss.backward();
/// assert_eq!(grads.wrt(x).unwrap().as_slice(), &[2.0, 0.0, 2.0]);
/// # Ok::<(), striate::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Var<'t> {
    tape: &'t Tape,
    node: usize,
}

impl<'t> Var<'t> {
    pub(crate) fn new(tape: &'t Tape, node: usize) -> Var<'t> {
        Var { tape, node }
    }

    /// The tape this value lives on.
    pub fn tape(&self) -> &'t Tape {
        self.tape
    }

    /// The index of this value on its tape.
    pub fn node(&self) -> usize {
        self.node
    }

    /// The value (an O(1) clone of the stored tensor; for a value kept in channel blocks, see
    /// [`Var::in_channel_blocks`], converted to NCHW once, on the first call).
    pub fn value(&self) -> Tensor {
        self.tape.value(self.node)
    }

    /// Whether the value is kept in channel blocks ([`ChannelBlocks`]) rather than as a tensor.
    ///
    /// On an inference tape, convolutions whose forward runs on channel blocks (AVX-512 CPUs,
    /// 16 channels or more) keep their outputs so when the layer that usually follows (a 3x3
    /// convolution of as many channels) runs on them too, and batch norm, ReLU and additions
    /// that follow keep them: the next convolution reads them in place. Anything else reads the
    /// value through [`Var::value`], which converts it to NCHW with the same numbers. Training
    /// tapes keep tensors.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::nn::{Conv2dConfig, Module};
    /// use striate::{Tape, Tensor};
    /// use rand::SeedableRng;
    ///
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    /// let conv = Conv2dConfig::new(16, 32, 3).stride(2).padding(1).init(&mut rng);
    /// let tape = Tape::inference();
    /// // Its output, 7x7, is what a 3x3 convolution on channel blocks would read next.
    /// let y = conv.forward(tape.input(Tensor::ones(&[1, 16, 14, 14]))).relu();
    /// let on_avx512 = striate::kernels::instruction_set() == "avx512";
    /// assert_eq!(y.in_channel_blocks(), on_avx512);
    /// assert_eq!(y.value().shape(), [1, 32, 7, 7]); // NCHW either way
    /// ```
    ///
    /// [`ChannelBlocks`]: crate::kernels::blocks::ChannelBlocks
    pub fn in_channel_blocks(&self) -> bool {
        self.tape.blocks(self.node).is_some()
    }

    /// The value's shape.
    pub fn shape(&self) -> Vec<usize> {
        self.tape.shape(self.node)
    }

    /// The number of axes.
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// The single value of a one-element var, such as a loss.
    ///
    /// # Panics
    ///
    /// If the value does not have exactly one element.
    pub fn item(&self) -> f32 {
        self.value().item()
    }

    /// Whether a gradient will flow into this value.
    pub fn requires_grad(&self) -> bool {
        self.tape.requires_grad(self.node)
    }

    /// For a parameter's value that gets no gradient (read on an inference tape, or frozen):
    /// which parameter and value it is, so that kernels can keep what they derive from it.
    pub(crate) fn frozen_weight(&self) -> Option<crate::kernels::conv::WeightIdentity> {
        self.tape.frozen_param(self.node).map(|(id, version)| {
            crate::kernels::conv::WeightIdentity {
                param: id.as_u64(),
                version,
            }
        })
    }

    /// The same value as a new constant leaf: no gradient flows back through it.
    pub fn detach(&self) -> Var<'t> {
        self.tape.input(self.value())
    }

    /// Runs the backward pass from this one-element value (the loss) and returns the gradient
    /// of every trainable parameter and variable it depends on.
    ///
    /// A tape supports one backward pass; its graph is freed as the pass goes.
    ///
    /// This is [`Var::backward_with`] seeded with 1 (PyTorch's `loss.backward()`).
    ///
    /// # Panics
    ///
    /// If the tape is an inference tape, if the value does not hold exactly one element, or if
    /// the tape was already used for a backward pass.
    pub fn backward(self) -> Gradients {
        self.tape.backward_from(self.node, None, None)
    }

    /// [`Var::backward`], calling `on_ready(id, gradient)` once for each parameter the loss
    /// depends on as soon as its gradient is complete, while the pass goes on to the earlier
    /// layers (PyTorch's gradient-ready hooks). Data-parallel training uses it to start
    /// reducing the last layers' gradients while the first layers' are still being computed.
    /// The returned [`Gradients`] hold the same values `on_ready` saw.
    ///
    /// # Panics
    ///
    /// As [`Var::backward`].
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Param, Tape, Tensor};
    ///
    /// let first = Param::new("first", Tensor::from_vec(vec![2.0], &[1]).unwrap());
    /// let last = Param::new("last", Tensor::from_vec(vec![3.0], &[1]).unwrap());
    /// let tape = Tape::training();
    /// let x = tape.input(Tensor::from_vec(vec![1.0], &[1]).unwrap());
    /// let loss = (x * tape.param(&first) * tape.param(&last)).sum();
    /// let mut order = Vec::new();
    /// let grads = loss.backward_with_hook(&mut |id, gradient| order.push((id, gradient.as_slice()[0])));
    /// // the later layer's gradient is ready first
    /// assert_eq!(order, [(last.id(), 2.0), (first.id(), 3.0)]);
    /// assert_eq!(grads.get(&first).unwrap().as_slice(), &[3.0]);
    /// ```
    pub fn backward_with_hook(self, on_ready: &mut dyn FnMut(ParamId, &Tensor)) -> Gradients {
        self.tape.backward_from(self.node, None, Some(on_ready))
    }

    /// Runs the backward pass from a value of any shape, given the gradient of some scalar with
    /// respect to it (PyTorch's `y.backward(gradient)`): the returned gradients are the
    /// vector-Jacobian product `Jᵀ·gradient`, that is the gradients of `sum(self ⊙ gradient)`.
    ///
    /// A tape supports one backward pass; its graph is freed as the pass goes.
    ///
    /// # Panics
    ///
    /// If `gradient`'s shape differs from this value's, if the tape is an inference tape, or if
    /// the tape was already used for a backward pass.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::training();
    /// let x = tape.variable(Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap());
    /// let y = x * x; // dy/dx = 2x, elementwise
    /// let grads = y.backward_with(&Tensor::from_vec(vec![1.0, 0.5, -1.0], &[3]).unwrap());
    /// assert_eq!(grads.wrt(x).unwrap().as_slice(), &[2.0, 2.0, -6.0]);
    /// ```
    pub fn backward_with(self, gradient: &Tensor) -> Gradients {
        self.tape.backward_from(self.node, Some(gradient), None)
    }
}

impl fmt::Debug for Var<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Var(%{} {:?})", self.node, self.shape())
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, Tensor};

    #[test]
    fn backward_with_is_the_vector_jacobian_product() {
        let (x, seed) = (rand_tensor(&[2, 3], 1), rand_tensor(&[2, 3], 2));
        let with = {
            let tape = Tape::training();
            let v = tape.variable(x.clone());
            let grads = v.softmax(1).backward_with(&seed);
            grads.wrt(v).unwrap().clone()
        };
        let summed = {
            let tape = Tape::training();
            let v = tape.variable(x);
            let grads = (v.softmax(1) * tape.input(seed)).sum().backward();
            grads.wrt(v).unwrap().clone()
        };
        assert!(with.all_close(&summed, 1e-6, 1e-7));
    }

    #[test]
    fn backward_is_backward_with_one() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[2.0], &[1]));
        let grads = (x * x).backward_with(&tm(&[1.0], &[1]));
        assert_eq!(grads.wrt(x).unwrap().as_slice(), &[4.0]);
    }

    #[test]
    #[should_panic(
        expected = "backward_with: the gradient must have the output's shape (gradient [3], output [2, 3])"
    )]
    fn backward_with_rejects_another_shape() {
        let tape = Tape::training();
        let x = tape.variable(Tensor::zeros(&[2, 3]));
        x.exp().backward_with(&Tensor::zeros(&[3]));
    }

    #[test]
    #[should_panic(expected = "backward: the loss must hold exactly one element")]
    fn backward_still_wants_one_element() {
        let tape = Tape::training();
        tape.variable(Tensor::zeros(&[2])).exp().backward();
    }
}
