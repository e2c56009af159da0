//! `dropout`: zero random elements during training, scaling the rest (inverted dropout).

use rand::RngExt;

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::check::contract_violation;

#[derive(Debug)]
struct DropoutBackward {
    /// `1 / (1 − p)` where the element was kept, 0 where it was dropped.
    scale: Tensor,
}

impl Backward for DropoutBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // dy/dx = mask / (1 − p)
        vec![Some(grad_output.zip_map(&self.scale, |g, s| g * s))]
    }
}

impl<'t> Var<'t> {
    /// On a training tape, zeroes each element with probability `p` and scales the kept ones
    /// by `1 / (1 − p)`, so the expected value is unchanged; on an inference tape, the identity.
    /// The mask comes from the tape's rng ([`crate::Tape::training_with_seed`] fixes it).
    ///
    /// # Panics
    ///
    /// If `p` is outside `[0, 1]`.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let x = Tensor::ones(&[10_000]);
    /// let train = Tape::training_with_seed(0);
    /// let y = train.input(x.clone()).dropout(0.5).value();
    /// assert!(y.as_slice().iter().all(|&v| v == 0.0 || v == 2.0));
    /// assert!((y.mean() - 1.0).abs() < 0.05);
    /// let eval = Tape::inference();
    /// assert_eq!(eval.input(x.clone()).dropout(0.5).value(), x);
    /// ```
    pub fn dropout(self, p: f32) -> Var<'t> {
        if !(0.0..=1.0).contains(&p) {
            contract_violation(
                "dropout",
                "probability must be in [0, 1]",
                format_args!("p = {p}"),
            );
        }
        let tape = self.tape();
        if !tape.is_training() || p == 0.0 {
            return self;
        }
        let input = self.value();
        let keep = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
        let scale: Vec<f32> = {
            let mut rng = tape.rng();
            (0..input.len())
                .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
                .collect()
        };
        let scale = Tensor::from_vec(scale, input.shape()).expect("input shape");
        let value = input.zip_map(&scale, |x, s| x * s);
        tape.record(value, &[self], DropoutBackward { scale })
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::gradcheck::{GradcheckOptions, gradcheck_with};
    use crate::autograd::test_util::rand_tensor;
    use crate::{Tape, Tensor};

    #[test]
    fn gradient_follows_the_mask() {
        let tape = Tape::training_with_seed(3);
        let x = tape.variable(Tensor::ones(&[1000]));
        let y = x.dropout(0.25);
        let kept = y.value();
        let grads = y.sum().backward();
        assert_eq!(grads.wrt(x).unwrap(), &kept);
        assert!(
            kept.as_slice()
                .iter()
                .all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6)
        );
    }

    #[test]
    fn gradcheck_dropout_with_a_fixed_mask() {
        // gradcheck seeds every tape identically, so each evaluation draws the same mask
        let options = GradcheckOptions {
            seed: 5,
            ..Default::default()
        };
        gradcheck_with(&[rand_tensor(&[4, 6], 50)], |v| v[0].dropout(0.4), options).assert_passed();
    }

    #[test]
    fn extremes() {
        let tape = Tape::training();
        let x = tape.input(Tensor::ones(&[8]));
        assert_eq!(x.dropout(0.0).value(), Tensor::ones(&[8]));
        assert_eq!(x.dropout(1.0).value(), Tensor::zeros(&[8]));
    }

    #[test]
    #[should_panic(expected = "dropout: probability must be in [0, 1] (p = 1.5)")]
    fn rejects_bad_probability() {
        let tape = Tape::training();
        tape.input(Tensor::ones(&[2])).dropout(1.5);
    }
}
