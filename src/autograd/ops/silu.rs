//! `silu`: the sigmoid-weighted linear unit (swish).

use super::unary::unary;
use crate::autograd::var::Var;

impl<'t> Var<'t> {
    /// `x·σ(x) = x / (1 + e^-x)`, elementwise (PyTorch's `silu`, also called swish), computed as
    /// PyTorch does: `-∞` gives NaN, `+∞` gives `+∞`.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let y = tape.input(Tensor::from_vec(vec![0.0, 1.0], &[2]).unwrap()).silu();
    /// assert_eq!(y.value().as_slice(), &[0.0, 1.0 / (1.0 + (-1f32).exp())]);
    /// ```
    pub fn silu(self) -> Var<'t> {
        // d/dx x·σ(x) = σ(x)·(1 + x·(1 - σ(x)))
        unary(
            self,
            "silu",
            |x| x / (1.0 + (-x).exp()),
            |x, _| {
                let sigmoid = 1.0 / (1.0 + (-x).exp());
                sigmoid * (1.0 + x * (1.0 - sigmoid))
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
        // σ(2) = 0.880797; silu(2) = 1.761594; silu'(2) = σ(2)(1 + 2(1 - σ(2))) = 1.090784
        let (y, g) = grad_of(t(&[0.0, 2.0]), |x| x.silu());
        assert_eq!((y.as_slice()[0], g.as_slice()[0]), (0.0, 0.5));
        assert!((y.as_slice()[1] - 1.761_594_2).abs() < 1e-6);
        assert!((g.as_slice()[1] - 1.090_784).abs() < 1e-6);
    }

    #[test]
    fn gradcheck_silu() {
        gradcheck(&[t(&[-4.0, -1.3, -0.2, 0.4, 1.1, 3.0])], |v| v[0].silu()).assert_passed();
    }
}
