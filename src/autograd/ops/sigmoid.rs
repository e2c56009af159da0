//! `sigmoid`: the logistic function elementwise.

use super::unary::unary;
use crate::autograd::var::Var;

/// `1 / (1 + e^-x)`, computed without overflow for any finite `x`.
pub(crate) fn stable_sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl<'t> Var<'t> {
    /// The logistic sigmoid `1 / (1 + e^-x)`, elementwise; finite and exact at ±100.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let y = tape.input(Tensor::from_vec(vec![-100.0, 0.0, 100.0], &[3]).unwrap()).sigmoid();
    /// assert_eq!(y.value().as_slice(), &[(-100f32).exp(), 0.5, 1.0]);
    /// ```
    pub fn sigmoid(self) -> Var<'t> {
        // dσ/dx = σ(1 - σ) = y(1 - y)
        unary(self, "sigmoid", stable_sigmoid, |_, y| y * (1.0 - y))
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        let (y, g) = grad_of(t(&[0.0]), |x| x.sigmoid());
        assert_eq!(y.as_slice(), &[0.5]);
        assert_eq!(g.as_slice(), &[0.25]);
    }

    #[test]
    fn finite_at_plus_minus_100() {
        let (y, g) = grad_of(t(&[-100.0, 100.0]), |x| x.sigmoid());
        assert!(
            y.as_slice()
                .iter()
                .chain(g.as_slice())
                .all(|v| v.is_finite())
        );
        assert_eq!(y.as_slice()[1], 1.0);
        assert!(y.as_slice()[0] > 0.0);
    }

    #[test]
    fn gradcheck_sigmoid() {
        gradcheck(&[t(&[-3.0, -0.5, 0.0, 0.8, 4.0])], |v| v[0].sigmoid()).assert_passed();
    }
}
