//! `relu`: rectified linear unit elementwise.

use super::unary::unary;
use crate::autograd::var::Var;
use crate::kernels;

impl<'t> Var<'t> {
    /// Rectified linear unit, `max(x, 0)`, elementwise; derivative 0 at 0 (as PyTorch). NaN
    /// propagates: `relu(NaN)` is NaN, as in PyTorch.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let y = tape.input(Tensor::from_vec(vec![-1.0, 2.0], &[2]).unwrap()).relu();
    /// assert_eq!(y.value().as_slice(), &[0.0, 2.0]);
    /// ```
    pub fn relu(self) -> Var<'t> {
        let tape = self.tape();
        if tape.keeps_blocks()
            && let Some(blocks) = tape.blocks(self.node())
        {
            return tape.record_blocks(blocks.relu());
        }
        // d relu / dx = 1[y > 0] (1 at a NaN output, as PyTorch's threshold_backward)
        unary(self, "relu", kernels::relu, |_, y| {
            if kernels::relu_passes_gradient(y) {
                1.0
            } else {
                0.0
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        let (y, g) = grad_of(t(&[-1.0, 0.0, 2.0]), |x| x.relu());
        assert_eq!(y.as_slice(), &[0.0, 0.0, 2.0]);
        assert_eq!(g.as_slice(), &[0.0, 0.0, 1.0]);
    }

    #[test]
    fn nan_propagates_and_infinities_keep_their_sign() {
        let (y, g) = grad_of(t(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]), |x| {
            x.relu()
        });
        assert!(y.as_slice()[0].is_nan());
        assert_eq!(&y.as_slice()[1..], &[f32::INFINITY, 0.0]);
        assert_eq!(g.as_slice(), &[1.0, 1.0, 0.0]);
    }

    #[test]
    fn gradcheck_relu_away_from_kink() {
        gradcheck(&[t(&[-2.0, -0.3, 0.2, 1.5])], |v| v[0].relu()).assert_passed();
    }
}
