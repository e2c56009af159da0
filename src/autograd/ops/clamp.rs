//! `clamp`: limit values to a range, elementwise.

use super::unary::unary;
use crate::autograd::var::Var;
use crate::tensor::check::contract_violation;

impl<'t> Var<'t> {
    /// Limits every value to `[min, max]`. The gradient passes where the value was inside the
    /// range (bounds included, as PyTorch) and is 0 where it was clipped.
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
        // d clamp(x) / dx = 1 if min ≤ x ≤ max else 0
        unary(
            self,
            "clamp",
            move |x| x.clamp(min, max),
            move |x, _| if (min..=max).contains(&x) { 1.0 } else { 0.0 },
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
