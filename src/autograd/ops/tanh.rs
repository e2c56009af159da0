//! `tanh`: hyperbolic tangent elementwise.

use super::unary::unary;
use crate::autograd::var::Var;

impl<'t> Var<'t> {
    /// Hyperbolic tangent, elementwise.
    pub fn tanh(self) -> Var<'t> {
        // d tanh x / dx = 1 - tanh² x = 1 - y²
        unary(self, "tanh", f32::tanh, |_, y| 1.0 - y * y)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        let (y, g) = grad_of(t(&[0.0, 1.0]), |x| x.tanh());
        assert_eq!(y.as_slice(), &[0.0, 1f32.tanh()]);
        assert_eq!(g.as_slice(), &[1.0, 1.0 - 1f32.tanh().powi(2)]);
    }

    #[test]
    fn gradcheck_tanh() {
        gradcheck(&[t(&[-2.0, -0.5, 0.0, 0.8, 1.5])], |v| v[0].tanh()).assert_passed();
    }
}
