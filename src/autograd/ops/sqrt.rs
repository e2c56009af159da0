//! `sqrt`: square root elementwise.

use super::unary::unary;
use crate::autograd::var::Var;

impl<'t> Var<'t> {
    /// Square root, elementwise (NaN for negative inputs).
    pub fn sqrt(self) -> Var<'t> {
        // d √x / dx = 1 / (2√x) = 1 / (2y)
        unary(self, "sqrt", f32::sqrt, |_, y| 0.5 / y)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        let (y, g) = grad_of(t(&[4.0, 9.0]), |x| x.sqrt());
        assert_eq!(y.as_slice(), &[2.0, 3.0]);
        assert_eq!(g.as_slice(), &[0.25, 1.0 / 6.0]);
    }

    #[test]
    fn gradcheck_sqrt() {
        gradcheck(&[t(&[0.3, 1.0, 2.5, 9.0])], |v| v[0].sqrt()).assert_passed();
    }
}
