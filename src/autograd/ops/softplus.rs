//! `softplus`: a smooth ReLU, with PyTorch's `beta` and `threshold`.

use super::unary::unary;
use crate::autograd::var::Var;
use crate::tensor::check::{contract_violation, expect_finite};

impl<'t> Var<'t> {
    /// `ln(1 + e^(β·x)) / β`, elementwise, reverting to `x` where `β·x > threshold` (PyTorch's
    /// `softplus(x, beta, threshold)`; its defaults are `beta = 1`, `threshold = 20`). Computed
    /// as PyTorch does: `+∞` gives `+∞` with gradient 1, `-∞` gives 0 with gradient 0.
    ///
    /// # Panics
    ///
    /// If `beta` is 0 or either argument is not finite.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let y = tape.input(Tensor::from_vec(vec![0.0, 30.0], &[2]).unwrap()).softplus(1.0, 20.0);
    /// assert_eq!(y.value().as_slice(), &[2f32.ln(), 30.0]);
    /// ```
    pub fn softplus(self, beta: f32, threshold: f32) -> Var<'t> {
        expect_finite("softplus", "beta", beta);
        expect_finite("softplus", "threshold", threshold);
        if beta == 0.0 {
            contract_violation(
                "softplus",
                "beta must not be 0",
                format_args!("beta {beta}"),
            );
        }
        // d/dx = e^(βx) / (e^(βx) + 1), or 1 above the threshold
        unary(
            self,
            "softplus",
            move |x| {
                if x * beta > threshold {
                    x
                } else {
                    (x * beta).exp().ln_1p() / beta
                }
            },
            move |x, _| {
                let z = (x * beta).exp();
                if x * beta > threshold {
                    1.0
                } else {
                    z / (z + 1.0)
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::{Tape, Tensor, gradcheck};

    #[test]
    fn value_and_gradient_by_hand() {
        // beta 2: softplus(0.5) = ln(1 + e)/2, gradient e/(e + 1); above the threshold x and 1
        let (y, g) = grad_of(t(&[0.5, 3.0]), |x| x.softplus(2.0, 5.0));
        let e = std::f32::consts::E;
        assert!((y.as_slice()[0] - e.ln_1p() / 2.0).abs() < 1e-7);
        assert!((g.as_slice()[0] - e / (e + 1.0)).abs() < 1e-7);
        assert_eq!((y.as_slice()[1], g.as_slice()[1]), (3.0, 1.0));
    }

    #[test]
    fn gradcheck_softplus() {
        let x = t(&[-4.0, -1.3, -0.2, 0.4, 1.1, 3.0]);
        gradcheck(std::slice::from_ref(&x), |v| v[0].softplus(1.0, 20.0)).assert_passed();
        gradcheck(&[x], |v| v[0].softplus(0.5, 1.0)).assert_passed();
    }

    #[test]
    #[should_panic(expected = "softplus: beta must not be 0")]
    fn rejects_zero_beta() {
        Tape::inference()
            .input(Tensor::zeros(&[1]))
            .softplus(0.0, 20.0);
    }
}
