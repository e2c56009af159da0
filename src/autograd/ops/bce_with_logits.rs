//! `binary_cross_entropy_with_logits`: sigmoid and binary cross-entropy, fused for stability.

use super::sigmoid::stable_sigmoid;
use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::check::expect_same_shape;

#[derive(Debug)]
struct BceWithLogitsBackward {
    logits: Tensor,
    targets: Tensor,
}

impl Backward for BceWithLogitsBackward {
    fn backward(&self, grad_output: Tensor, needs_grad: &[bool]) -> Vec<Option<Tensor>> {
        // d/dx = (σ(x) - t)/N, d/dt = -x/N
        let scale = grad_output.item() / self.logits.len() as f32;
        let grad_logits = needs_grad[0].then(|| {
            self.logits
                .zip_map(&self.targets, |x, t| (stable_sigmoid(x) - t) * scale)
        });
        let grad_targets = needs_grad[1].then(|| self.logits.map(|x| -x * scale));
        vec![grad_logits, grad_targets]
    }
}

impl<'t> Var<'t> {
    /// Mean binary cross-entropy between `sigmoid(self)` and targets in `[0, 1]`, computed as
    /// `max(x, 0) - x·t + ln(1 + e^-|x|)`: finite for logits of any magnitude.
    ///
    /// # Panics
    ///
    /// If the shapes differ.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::training();
    /// let logits = tape.input(Tensor::from_vec(vec![100.0, -100.0], &[2]).unwrap());
    /// let targets = tape.input(Tensor::from_vec(vec![0.0, 0.0], &[2]).unwrap());
    /// assert!((logits.binary_cross_entropy_with_logits(targets).item() - 50.0).abs() < 1e-4);
    /// ```
    pub fn binary_cross_entropy_with_logits(self, targets: Var<'t>) -> Var<'t> {
        let (logits, target_values) = (self.value(), targets.value());
        expect_same_shape(
            "binary_cross_entropy_with_logits",
            "logits",
            logits.shape(),
            "targets",
            target_values.shape(),
        );
        let total: f64 = logits
            .as_slice()
            .iter()
            .zip(target_values.as_slice())
            .map(|(&x, &t)| (crate::kernels::relu(x) - x * t + (-x.abs()).exp().ln_1p()) as f64)
            .sum();
        let loss = Tensor::scalar((total / logits.len() as f64) as f32);
        self.tape().record(
            loss,
            &[self, targets],
            BceWithLogitsBackward {
                logits,
                targets: target_values,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, gradcheck};

    #[test]
    fn value_and_gradient_by_hand() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[0.0, 0.0], &[2]));
        let t = tape.input(tm(&[1.0, 0.0], &[2]));
        let loss = x.binary_cross_entropy_with_logits(t);
        assert!((loss.item() - 2f32.ln()).abs() < 1e-6);
        assert_eq!(loss.backward().wrt(x).unwrap().as_slice(), &[-0.25, 0.25]);
    }

    #[test]
    fn finite_at_plus_minus_100() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[100.0, -100.0, 100.0, -100.0], &[4]));
        let t = tape.input(tm(&[1.0, 0.0, 0.0, 1.0], &[4]));
        let loss = x.binary_cross_entropy_with_logits(t);
        assert!((loss.item() - 50.0).abs() < 1e-4);
        let grads = loss.backward();
        let g = grads.wrt(x).unwrap().as_slice().to_vec();
        let expected = [0.0, 0.0, 0.25, -0.25];
        assert!(
            g.iter().zip(expected).all(|(g, e)| (g - e).abs() < 1e-7),
            "{g:?}"
        );
    }

    #[test]
    fn gradcheck_bce_with_logits() {
        let targets = rand_tensor(&[3, 4], 37).map(|v| 0.5 * (v + 1.0));
        gradcheck(&[rand_tensor(&[3, 4], 36).map(|v| 3.0 * v), targets], |v| {
            v[0].binary_cross_entropy_with_logits(v[1])
        })
        .assert_passed();
    }
}
