//! Arithmetic with an `f32` constant: `x + s`, `x - s`, `s - x`, `x * s`, `s * x`, `x / s`,
//! `s / x`.

use std::ops::{Add, Div, Mul, Sub};

use super::unary::unary;
use crate::autograd::var::Var;

impl<'t> Var<'t> {
    /// `x + s`, elementwise.
    pub fn add_scalar(self, s: f32) -> Var<'t> {
        // d(x + s)/dx = 1
        unary(self, "add_scalar", move |x| x + s, |_, _| 1.0)
    }

    /// `x · s`, elementwise.
    pub fn mul_scalar(self, s: f32) -> Var<'t> {
        // d(x·s)/dx = s
        unary(self, "mul_scalar", move |x| x * s, move |_, _| s)
    }

    /// `x / s`, elementwise.
    pub fn div_scalar(self, s: f32) -> Var<'t> {
        let inverse = 1.0 / s;
        // d(x/s)/dx = 1/s
        unary(self, "div_scalar", move |x| x / s, move |_, _| inverse)
    }

    /// `s / x`, elementwise.
    pub fn rdiv_scalar(self, s: f32) -> Var<'t> {
        // d(s/x)/dx = -s/x²
        unary(
            self,
            "rdiv_scalar",
            move |x| s / x,
            move |x, _| -s / (x * x),
        )
    }
}

impl<'t> Add<f32> for Var<'t> {
    type Output = Var<'t>;
    fn add(self, s: f32) -> Var<'t> {
        self.add_scalar(s)
    }
}

impl<'t> Add<Var<'t>> for f32 {
    type Output = Var<'t>;
    fn add(self, x: Var<'t>) -> Var<'t> {
        x.add_scalar(self)
    }
}

impl<'t> Sub<f32> for Var<'t> {
    type Output = Var<'t>;
    fn sub(self, s: f32) -> Var<'t> {
        self.add_scalar(-s)
    }
}

impl<'t> Sub<Var<'t>> for f32 {
    type Output = Var<'t>;
    fn sub(self, x: Var<'t>) -> Var<'t> {
        // d(s - x)/dx = -1
        unary(x, "rsub_scalar", move |x| self - x, |_, _| -1.0)
    }
}

impl<'t> Mul<f32> for Var<'t> {
    type Output = Var<'t>;
    fn mul(self, s: f32) -> Var<'t> {
        self.mul_scalar(s)
    }
}

impl<'t> Mul<Var<'t>> for f32 {
    type Output = Var<'t>;
    fn mul(self, x: Var<'t>) -> Var<'t> {
        x.mul_scalar(self)
    }
}

impl<'t> Div<f32> for Var<'t> {
    type Output = Var<'t>;
    fn div(self, s: f32) -> Var<'t> {
        self.div_scalar(s)
    }
}

impl<'t> Div<Var<'t>> for f32 {
    type Output = Var<'t>;
    fn div(self, x: Var<'t>) -> Var<'t> {
        x.rdiv_scalar(self)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn values_and_gradients_by_hand() {
        let x = t(&[2.0, 4.0]);
        let (y, g) = grad_of(x.clone(), |x| x + 1.0);
        assert_eq!(
            (y.as_slice(), g.as_slice()),
            (&[3.0, 5.0][..], &[1.0, 1.0][..])
        );
        let (y, g) = grad_of(x.clone(), |x| 10.0 - x);
        assert_eq!(
            (y.as_slice(), g.as_slice()),
            (&[8.0, 6.0][..], &[-1.0, -1.0][..])
        );
        let (y, g) = grad_of(x.clone(), |x| 3.0 * x);
        assert_eq!(
            (y.as_slice(), g.as_slice()),
            (&[6.0, 12.0][..], &[3.0, 3.0][..])
        );
        let (y, g) = grad_of(x.clone(), |x| x / 2.0);
        assert_eq!(
            (y.as_slice(), g.as_slice()),
            (&[1.0, 2.0][..], &[0.5, 0.5][..])
        );
        let (y, g) = grad_of(x, |x| 8.0 / x);
        assert_eq!(
            (y.as_slice(), g.as_slice()),
            (&[4.0, 2.0][..], &[-2.0, -0.5][..])
        );
    }

    #[test]
    fn gradcheck_scalar_ops() {
        let x = t(&[0.5, -1.5, 2.0]);
        gradcheck(std::slice::from_ref(&x), |v| v[0] + 2.5).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| v[0] - 2.5).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| 2.5 - v[0]).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| v[0] * -1.5).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| v[0] / 4.0).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| 1.0 / v[0]).assert_passed();
    }
}
