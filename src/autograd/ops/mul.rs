//! `mul`: elementwise product with NumPy broadcasting.

use std::ops::Mul;

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::broadcast::broadcast_zip;

#[derive(Debug)]
struct MulBackward {
    lhs: Tensor,
    rhs: Tensor,
}

impl Backward for MulBackward {
    fn backward(&self, grad_output: Tensor, needs_grad: &[bool]) -> Vec<Option<Tensor>> {
        // d(ab)/da = b, d(ab)/db = a
        let grad_lhs =
            needs_grad[0].then(|| broadcast_zip("mul", &grad_output, &self.rhs, |g, b| g * b));
        let grad_rhs =
            needs_grad[1].then(|| broadcast_zip("mul", &grad_output, &self.lhs, |g, a| g * a));
        vec![grad_lhs, grad_rhs]
    }
}

impl<'t> Mul for Var<'t> {
    type Output = Var<'t>;

    /// `a ⊙ b` (elementwise), broadcasting NumPy-style.
    ///
    /// # Panics
    ///
    /// If the shapes cannot be broadcast together.
    fn mul(self, rhs: Var<'t>) -> Var<'t> {
        let (lhs_value, rhs_value) = (self.value(), rhs.value());
        let value = broadcast_zip("mul", &lhs_value, &rhs_value, |a, b| a * b);
        self.tape().record(
            value,
            &[self, rhs],
            MulBackward {
                lhs: lhs_value,
                rhs: rhs_value,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, gradcheck};

    #[test]
    fn value_and_gradients_by_hand() {
        let tape = Tape::training();
        let a = tape.variable(tm(&[2.0, 3.0], &[2]));
        let b = tape.variable(tm(&[4.0, 5.0], &[2]));
        let y = a * b;
        assert_eq!(y.value().as_slice(), &[8.0, 15.0]);
        let grads = y.sum().backward();
        assert_eq!(grads.wrt(a).unwrap().as_slice(), &[4.0, 5.0]);
        assert_eq!(grads.wrt(b).unwrap().as_slice(), &[2.0, 3.0]);
    }

    #[test]
    fn fan_out_accumulates() {
        // y = x · x uses x twice: dy/dx = 2x
        let tape = Tape::training();
        let x = tape.variable(tm(&[3.0], &[1]));
        let grads = (x * x).sum().backward();
        assert_eq!(grads.wrt(x).unwrap().as_slice(), &[6.0]);
    }

    #[test]
    fn gradcheck_mul_broadcast() {
        gradcheck(
            &[rand_tensor(&[2, 3, 4], 7), rand_tensor(&[1, 4], 8)],
            |v| v[0] * v[1],
        )
        .assert_passed();
    }
}
