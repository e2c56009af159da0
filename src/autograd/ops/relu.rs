//! `relu`: rectified linear unit elementwise.

use super::unary::unary_with;
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
        // The gradient where y > 0 (and at a NaN output), 0 elsewhere whatever it is: PyTorch's
        // threshold_backward selects.
        unary_with(self, "relu", kernels::relu, |g, _, y| {
            if kernels::relu_passes_gradient(y) {
                g
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
    fn a_nonfinite_gradient_stops_where_the_output_is_not_positive() {
        // PyTorch 2.15: relu(x).backward([inf, 1, nan, nan]) at x = [-1, 2, -5, 5] gives
        // [0, 1, 0, nan].
        let tape = crate::Tape::training();
        let x = tape.variable(t(&[-1.0, 2.0, -5.0, 5.0]));
        let upstream = tape.input(t(&[f32::INFINITY, 1.0, f32::NAN, f32::NAN]));
        let grads = (x.relu() * upstream).sum().backward();
        let g = grads.wrt(x).unwrap().as_slice().to_vec();
        assert_eq!(&g[..3], &[0.0, 1.0, 0.0]);
        assert!(g[3].is_nan());
    }

    #[test]
    fn gradcheck_relu_away_from_kink() {
        gradcheck(&[t(&[-2.0, -0.3, 0.2, 1.5])], |v| v[0].relu()).assert_passed();
    }
}
