//! `ln`: natural logarithm elementwise.

use super::unary::unary;
use crate::autograd::var::Var;

impl<'t> Var<'t> {
    /// Natural logarithm, elementwise (NaN for negative inputs, -inf at 0, as `f32::ln`).
    pub fn ln(self) -> Var<'t> {
        // d ln x / dx = 1 / x
        unary(self, "ln", f32::ln, |x, _| 1.0 / x)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        let (y, g) = grad_of(t(&[1.0, 4.0]), |x| x.ln());
        assert_eq!(y.as_slice(), &[0.0, 4f32.ln()]);
        assert_eq!(g.as_slice(), &[1.0, 0.25]);
    }

    #[test]
    fn gradcheck_ln() {
        gradcheck(&[t(&[0.5, 1.0, 2.5, 7.0])], |v| v[0].ln()).assert_passed();
    }
}
