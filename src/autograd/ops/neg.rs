//! `neg`: elementwise negation.

use std::ops::Neg;

use super::unary::unary;
use crate::autograd::var::Var;

impl<'t> Neg for Var<'t> {
    type Output = Var<'t>;

    /// `-x`, elementwise.
    fn neg(self) -> Var<'t> {
        // d(-x)/dx = -1
        unary(self, "neg", |x| -x, |_, _| -1.0)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        let (y, g) = grad_of(t(&[1.0, -2.0]), |x| -x);
        assert_eq!(y.as_slice(), &[-1.0, 2.0]);
        assert_eq!(g.as_slice(), &[-1.0, -1.0]);
    }

    #[test]
    fn gradcheck_neg() {
        gradcheck(&[t(&[1.0, -2.0, 0.5])], |v| -v[0]).assert_passed();
    }
}
