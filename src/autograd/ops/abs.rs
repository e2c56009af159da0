//! `abs`: absolute value elementwise.

use super::unary::unary;
use crate::autograd::var::Var;

impl<'t> Var<'t> {
    /// Absolute value, elementwise. The derivative at 0 is taken as 0 (PyTorch's choice).
    pub fn abs(self) -> Var<'t> {
        // d |x| / dx = sign(x), 0 at 0
        unary(self, "abs", f32::abs, |x, _| sign(x))
    }
}

/// `sign(x)` with `sign(0) = 0`.
pub(crate) fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        let (y, g) = grad_of(t(&[-2.0, 0.0, 3.0]), |x| x.abs());
        assert_eq!(y.as_slice(), &[2.0, 0.0, 3.0]);
        assert_eq!(g.as_slice(), &[-1.0, 0.0, 1.0]);
    }

    #[test]
    fn gradcheck_abs_away_from_zero() {
        gradcheck(&[t(&[-1.5, -0.2, 0.3, 2.0])], |v| v[0].abs()).assert_passed();
    }
}
