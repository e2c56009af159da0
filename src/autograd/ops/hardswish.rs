//! `hardswish`: the piecewise-quadratic swish of MobileNetV3.

use super::unary::unary_with;
use crate::autograd::var::Var;

impl<'t> Var<'t> {
    /// `x · clamp(x + 3, 0, 6) / 6`, elementwise (PyTorch's `hardswish`): 0 below -3, `x` above
    /// 3. NaN propagates through the value; as in PyTorch the gradient is 0 up to -3 and 1 from 3
    /// on (so one-sided at the kinks), 1 at NaN and `+∞`,
    /// and `-∞` gives NaN (`-∞·0`) with gradient 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let y = tape.input(Tensor::from_vec(vec![-4.0, 1.0, 4.0], &[3]).unwrap()).hardswish();
    /// assert_eq!(y.value().as_slice(), &[-0.0, 4.0 / 6.0, 4.0]);
    /// ```
    pub fn hardswish(self) -> Var<'t> {
        // d/dx = 0 to -3, x/3 + 1/2 on (-3, 3), 1 from 3 (and at NaN), as PyTorch's backward,
        // which selects 0 up to -3 whatever the gradient is.
        unary_with(
            self,
            "hardswish",
            // f32::clamp keeps NaN (unlike f32::max / f32::min)
            |x| x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            |g, x, _| {
                if x <= -3.0 {
                    0.0
                } else if x < 3.0 {
                    g * (x / 3.0 + 0.5)
                } else {
                    g
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        let (y, g) = grad_of(t(&[-4.0, -3.0, 0.0, 1.5, 3.0, 5.0]), |x| x.hardswish());
        assert_eq!(y.as_slice(), &[-0.0, -0.0, 0.0, 1.125, 3.0, 5.0]);
        assert_eq!(g.as_slice(), &[0.0, 0.0, 0.5, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn gradcheck_hardswish() {
        // away from the kinks at ±3
        gradcheck(&[t(&[-5.0, -2.5, -0.7, 0.3, 2.2, 4.0])], |v| {
            v[0].hardswish()
        })
        .assert_passed();
    }
}
