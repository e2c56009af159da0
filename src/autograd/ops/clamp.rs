//! `clamp`: limit values to a range, elementwise.

use super::unary::unary_with;
use crate::autograd::var::Var;
use crate::tensor::check::contract_violation;

impl<'t> Var<'t> {
    /// Limits every value to `[min, max]`. The gradient passes where the value was strictly
    /// inside the range and is 0 where it was clipped or sat on a bound (the minimum-norm
    /// subgradient, as `relu` and `hardtanh`: PyTorch's convention since pytorch#191142, 2.15
    /// here; before it the bounds passed the gradient).
    ///
    /// # Panics
    ///
    /// If `min > max` or either is NaN.
    pub fn clamp(self, min: f32, max: f32) -> Var<'t> {
        if min.is_nan() || max.is_nan() || min > max {
            contract_violation(
                "clamp",
                "min must not exceed max",
                format_args!("min {min}, max {max}"),
            );
        }
        // The gradient where min < x < max, 0 elsewhere whatever it is (PyTorch selects).
        unary_with(
            self,
            "clamp",
            move |x| x.clamp(min, max),
            move |g, x, _| if min < x && x < max { g } else { 0.0 },
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        let (y, g) = grad_of(t(&[-2.0, 0.5, 3.0]), |x| x.clamp(-1.0, 1.0));
        assert_eq!(y.as_slice(), &[-1.0, 0.5, 1.0]);
        assert_eq!(g.as_slice(), &[0.0, 1.0, 0.0]);
    }

    #[test]
    fn the_bounds_and_nan_stop_the_gradient_as_pytorch() {
        // PyTorch 2.15: x.clamp(-2, 2) at x = [-2, 2, 0] passes [0, 0, 1]; at NaN 0.
        let (y, g) = grad_of(t(&[-2.0, 2.0, 0.0, f32::NAN]), |x| x.clamp(-2.0, 2.0));
        assert!(y.as_slice()[3].is_nan());
        assert_eq!(g.as_slice(), &[0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn gradcheck_clamp_away_from_bounds() {
        gradcheck(&[t(&[-2.0, -0.5, 0.4, 0.9, 3.0])], |v| {
            v[0].clamp(-1.0, 1.0)
        })
        .assert_passed();
    }

    #[test]
    #[should_panic(expected = "clamp: min must not exceed max (min 2, max 1)")]
    fn rejects_inverted_range() {
        let tape = crate::Tape::training();
        tape.input(t(&[1.0])).clamp(2.0, 1.0);
    }
}
