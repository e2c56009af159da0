//! `div`: elementwise quotient with NumPy broadcasting.

use std::ops::Div;

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::broadcast::broadcast_zip;

#[derive(Debug)]
struct DivBackward {
    lhs: Tensor,
    rhs: Tensor,
}

impl Backward for DivBackward {
    fn backward(&self, grad_output: Tensor, needs_grad: &[bool]) -> Vec<Option<Tensor>> {
        // d(a/b)/da = 1/b, d(a/b)/db = -a/b²
        let grad_lhs =
            needs_grad[0].then(|| broadcast_zip("div", &grad_output, &self.rhs, |g, b| g / b));
        let grad_rhs = needs_grad[1].then(|| {
            let a_over_b2 = broadcast_zip("div", &self.lhs, &self.rhs, |a, b| a / (b * b));
            broadcast_zip("div", &grad_output, &a_over_b2, |g, q| -g * q)
        });
        vec![grad_lhs, grad_rhs]
    }
}

impl<'t> Div for Var<'t> {
    type Output = Var<'t>;

    /// `a / b` (elementwise), broadcasting NumPy-style.
    ///
    /// # Panics
    ///
    /// If the shapes cannot be broadcast together.
    fn div(self, rhs: Var<'t>) -> Var<'t> {
        let (lhs_value, rhs_value) = (self.value(), rhs.value());
        let value = broadcast_zip("div", &lhs_value, &rhs_value, |a, b| a / b);
        self.tape().record(
            value,
            &[self, rhs],
            DivBackward {
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
        let a = tape.variable(tm(&[6.0], &[1]));
        let b = tape.variable(tm(&[3.0], &[1]));
        let y = a / b;
        assert_eq!(y.value().as_slice(), &[2.0]);
        let grads = y.sum().backward();
        assert_eq!(grads.wrt(a).unwrap().as_slice(), &[1.0 / 3.0]);
        assert_eq!(grads.wrt(b).unwrap().as_slice(), &[-6.0 / 9.0]);
    }

    #[test]
    fn gradcheck_div_broadcast() {
        let denominator = rand_tensor(&[3, 1], 10).map(|x| x.abs() + 0.5);
        gradcheck(&[rand_tensor(&[2, 3, 4], 9), denominator], |v| v[0] / v[1]).assert_passed();
    }
}
