//! `exp`: e^x elementwise.

use super::unary::unary;
use crate::autograd::var::Var;

impl<'t> Var<'t> {
    /// `e^x`, elementwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::training();
    /// let y = tape.input(Tensor::from_vec(vec![0.0, 1.0], &[2]).unwrap()).exp();
    /// assert_eq!(y.value().as_slice(), &[1.0, std::f32::consts::E]);
    /// ```
    pub fn exp(self) -> Var<'t> {
        // d e^x / dx = e^x = y
        unary(self, "exp", f32::exp, |_, y| y)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        let (y, g) = grad_of(t(&[0.0, 2.0]), |x| x.exp());
        assert_eq!(y.as_slice(), &[1.0, 2f32.exp()]);
        assert_eq!(g.as_slice(), &[1.0, 2f32.exp()]);
    }

    #[test]
    fn gradcheck_exp() {
        gradcheck(&[t(&[-1.5, 0.0, 0.7, 2.0])], |v| v[0].exp()).assert_passed();
    }
}
