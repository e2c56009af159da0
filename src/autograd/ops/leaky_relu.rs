//! `leaky_relu`: ReLU with a small slope for negative inputs.

use super::unary::unary;
use crate::autograd::var::Var;
use crate::tensor::check::expect_finite;

impl<'t> Var<'t> {
    /// `x` for `x > 0`, `negative_slope · x` otherwise (PyTorch's default slope is 0.01).
    ///
    /// # Panics
    ///
    /// If `negative_slope` is not finite.
    pub fn leaky_relu(self, negative_slope: f32) -> Var<'t> {
        expect_finite("leaky_relu", "negative_slope", negative_slope);
        // d/dx = 1 if x > 0 else slope
        unary(
            self,
            "leaky_relu",
            move |x| if x > 0.0 { x } else { negative_slope * x },
            move |x, _| if x > 0.0 { 1.0 } else { negative_slope },
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        let (y, g) = grad_of(t(&[-2.0, 3.0]), |x| x.leaky_relu(0.1));
        assert_eq!(y.as_slice(), &[-0.2, 3.0]);
        assert_eq!(g.as_slice(), &[0.1, 1.0]);
    }

    #[test]
    fn gradcheck_leaky_relu() {
        gradcheck(&[t(&[-2.0, -0.3, 0.2, 1.5])], |v| v[0].leaky_relu(0.2)).assert_passed();
    }
}
