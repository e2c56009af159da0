//! Small helpers shared by the op tests.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::tape::Tape;
use super::var::Var;
use crate::tensor::Tensor;

/// A 1-D tensor.
pub(crate) fn t(values: &[f32]) -> Tensor {
    Tensor::from_vec(values.to_vec(), &[values.len()]).unwrap()
}

/// A tensor of the given shape.
pub(crate) fn tm(values: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape).unwrap()
}

/// Uniform values in [-1, 1) from a seed.
pub(crate) fn rand_tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, -1.0, 1.0, &mut StdRng::seed_from_u64(seed))
}

/// The value of `f(x)` and the gradient of `sum(f(x))` with respect to `x`.
pub(crate) fn grad_of(x: Tensor, f: impl for<'t> Fn(Var<'t>) -> Var<'t>) -> (Tensor, Tensor) {
    let tape = Tape::training();
    let var = tape.variable(x);
    let y = f(var);
    let value = y.value();
    let grads = y.sum().backward();
    (value, grads.wrt(var).unwrap().clone())
}
