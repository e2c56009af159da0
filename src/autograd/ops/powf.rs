//! `powf`: x raised to a constant power, elementwise.

use super::unary::unary;
use crate::autograd::var::Var;
use crate::tensor::check::expect_finite;

impl<'t> Var<'t> {
    /// `x^exponent`, elementwise, for a constant exponent.
    ///
    /// # Panics
    ///
    /// If `exponent` is not finite.
    pub fn powf(self, exponent: f32) -> Var<'t> {
        expect_finite("powf", "exponent", exponent);
        // d x^p / dx = p · x^(p-1)
        unary(
            self,
            "powf",
            move |x| x.powf(exponent),
            move |x, _| exponent * x.powf(exponent - 1.0),
        )
    }

    /// `x²`, elementwise.
    pub fn square(self) -> Var<'t> {
        // d x² / dx = 2x
        unary(self, "square", |x| x * x, |x, _| 2.0 * x)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        let (y, g) = grad_of(t(&[2.0, 3.0]), |x| x.powf(3.0));
        assert_eq!(y.as_slice(), &[8.0, 27.0]);
        assert_eq!(g.as_slice(), &[12.0, 27.0]);
        let (y, g) = grad_of(t(&[-2.0, 3.0]), |x| x.square());
        assert_eq!(y.as_slice(), &[4.0, 9.0]);
        assert_eq!(g.as_slice(), &[-4.0, 6.0]);
    }

    #[test]
    fn gradcheck_powf() {
        gradcheck(&[t(&[0.5, 1.0, 2.5, 4.0])], |v| v[0].powf(1.7)).assert_passed();
        gradcheck(&[t(&[0.5, 1.0, 2.5, 4.0])], |v| v[0].powf(-0.5)).assert_passed();
        gradcheck(&[t(&[-1.5, 1.0, 2.5, -4.0])], |v| v[0].square()).assert_passed();
    }

    #[test]
    #[should_panic(expected = "powf: exponent must be finite (exponent = NaN)")]
    fn rejects_nan_exponent() {
        let tape = crate::Tape::training();
        tape.input(t(&[1.0])).powf(f32::NAN);
    }
}
