//! `sub`: elementwise difference with NumPy broadcasting.

use std::ops::Sub;

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::broadcast::broadcast_zip;

#[derive(Debug)]
struct SubBackward;

impl Backward for SubBackward {
    fn backward(&self, grad_output: Tensor, needs_grad: &[bool]) -> Vec<Option<Tensor>> {
        // d(a - b)/da = 1, d(a - b)/db = -1
        let grad_rhs = needs_grad[1].then(|| grad_output.map(|g| -g));
        vec![Some(grad_output), grad_rhs]
    }
}

impl<'t> Sub for Var<'t> {
    type Output = Var<'t>;

    /// `a - b`, broadcasting NumPy-style.
    ///
    /// # Panics
    ///
    /// If the shapes cannot be broadcast together.
    fn sub(self, rhs: Var<'t>) -> Var<'t> {
        let value = broadcast_zip("sub", &self.value(), &rhs.value(), |a, b| a - b);
        self.tape().record(value, &[self, rhs], SubBackward)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, gradcheck};

    #[test]
    fn value_and_gradients_by_hand() {
        let tape = Tape::training();
        let a = tape.variable(tm(&[5.0, 7.0], &[2]));
        let b = tape.variable(tm(&[1.0], &[1]));
        let y = a - b;
        assert_eq!(y.value().as_slice(), &[4.0, 6.0]);
        let grads = y.sum().backward();
        assert_eq!(grads.wrt(a).unwrap().as_slice(), &[1.0, 1.0]);
        assert_eq!(grads.wrt(b).unwrap().as_slice(), &[-2.0]);
    }

    #[test]
    fn gradcheck_sub_broadcast() {
        gradcheck(&[rand_tensor(&[3, 4], 5), rand_tensor(&[4], 6)], |v| {
            v[0] - v[1]
        })
        .assert_passed();
    }
}
