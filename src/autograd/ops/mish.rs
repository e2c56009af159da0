//! `mish`: `x·tanh(softplus(x))`.

use super::unary::unary;
use crate::autograd::var::Var;

impl<'t> Var<'t> {
    /// `x · tanh(ln(1 + e^x))`, elementwise (PyTorch's `mish`), computed as PyTorch does:
    /// `+∞` gives `+∞`, `-∞` gives NaN (`-∞·0`), and the gradient at `±∞` is NaN.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let y = tape.input(Tensor::from_vec(vec![0.0, 1.0], &[2]).unwrap()).mish();
    /// assert_eq!(y.value().as_slice(), &[0.0, 1f32.exp().ln_1p().tanh()]);
    /// ```
    pub fn mish(self) -> Var<'t> {
        // d/dx = tanh(sp(x)) + x·σ(x)·(1 - tanh²(sp(x))), sp(x) = ln(1 + e^x)
        unary(
            self,
            "mish",
            |x| x * x.exp().ln_1p().tanh(),
            |x, _| {
                let sigmoid = 1.0 / (1.0 + (-x).exp());
                let tanh_softplus = x.exp().ln_1p().tanh();
                tanh_softplus + x * sigmoid * (1.0 - tanh_softplus * tanh_softplus)
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
        // at 0: tanh(ln 2) = 0.6, so mish'(0) = 0.6; at 1: tanh(ln(1 + e)) = 0.865098
        let (y, g) = grad_of(t(&[0.0, 1.0]), |x| x.mish());
        assert_eq!(y.as_slice()[0], 0.0);
        assert!((g.as_slice()[0] - 0.6).abs() < 1e-7);
        assert!((y.as_slice()[1] - 0.865_098_4).abs() < 1e-6);
        // 0.865098 + 1·σ(1)·(1 - 0.865098²) = 1.049036
        assert!((g.as_slice()[1] - 1.049_036_3).abs() < 1e-6);
    }

    #[test]
    fn gradcheck_mish() {
        gradcheck(&[t(&[-4.0, -1.3, -0.2, 0.4, 1.1, 3.0])], |v| v[0].mish()).assert_passed();
    }
}
