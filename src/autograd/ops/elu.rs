//! `elu`: exponential linear unit.

use super::unary::unary;
use crate::autograd::var::Var;
use crate::tensor::check::expect_finite;

impl<'t> Var<'t> {
    /// `x` for `x > 0`, `alpha · (e^x - 1)` otherwise (PyTorch's default alpha is 1).
    ///
    /// # Panics
    ///
    /// If `alpha` is not finite.
    pub fn elu(self, alpha: f32) -> Var<'t> {
        expect_finite("elu", "alpha", alpha);
        // d/dx = alpha·e^x = y + alpha if x ≤ 0 else 1 (so 1 at NaN, as PyTorch's elu_backward)
        unary(
            self,
            "elu",
            move |x| if x > 0.0 { x } else { alpha * x.exp_m1() },
            move |x, y| if x <= 0.0 { y + alpha } else { 1.0 },
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        let (y, g) = grad_of(t(&[-1.0, 2.0]), |x| x.elu(2.0));
        assert_eq!(y.as_slice(), &[2.0 * (-1f32).exp_m1(), 2.0]);
        assert!((g.as_slice()[0] - 2.0 * (-1f32).exp()).abs() < 1e-6);
        assert_eq!(g.as_slice()[1], 1.0);
    }

    #[test]
    fn gradcheck_elu() {
        gradcheck(&[t(&[-2.0, -0.3, 0.2, 1.5])], |v| v[0].elu(1.0)).assert_passed();
        gradcheck(&[t(&[-2.0, -0.3, 0.2, 1.5])], |v| v[0].elu(0.5)).assert_passed();
    }
}
