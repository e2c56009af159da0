//! `binary_cross_entropy`: binary cross-entropy on probabilities, each log clamped at -100.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, expect_same_shape};

/// PyTorch's floor of each log term, so `p = 0` or `1` gives a finite loss.
const LOG_FLOOR: f32 = -100.0;
/// PyTorch's floor of `p(1 - p)` in the gradient.
const EPSILON: f32 = 1e-12;

/// `ln` clamped below at -100, keeping NaN (`f32::max` would drop it).
fn clamped(log: f32) -> f32 {
    if log < LOG_FLOOR { LOG_FLOOR } else { log }
}

#[derive(Debug)]
struct BceBackward {
    probabilities: Tensor,
    targets: Tensor,
}

impl Backward for BceBackward {
    fn backward(&self, grad_output: Tensor, needs_grad: &[bool]) -> Vec<Option<Tensor>> {
        // d/dp = (p - t) / max(p(1 - p), 1e-12) / N, d/dt = -ln(p / (1 - p)) / N
        let scale = grad_output.item() / self.probabilities.len() as f32;
        let grad_probabilities = needs_grad[0].then(|| {
            self.probabilities.zip_map(&self.targets, |p, t| {
                let denominator = (1.0 - p) * p;
                let denominator = if denominator < EPSILON {
                    EPSILON
                } else {
                    denominator
                };
                (p - t) / denominator * scale
            })
        });
        let grad_targets =
            needs_grad[1].then(|| self.probabilities.map(|p| -(p / (1.0 - p)).ln() * scale));
        vec![grad_probabilities, grad_targets]
    }
}

/// Panics unless every non-NaN value lies in `[0, 1]`.
#[track_caller]
fn expect_probabilities(name: &str, values: &Tensor) {
    if let Some((i, &v)) = values
        .as_slice()
        .iter()
        .enumerate()
        .find(|&(_, &v)| !v.is_nan() && !(0.0..=1.0).contains(&v))
    {
        contract_violation(
            "binary_cross_entropy",
            format_args!("{name} must lie in [0, 1]"),
            format_args!("{name}[{i}] = {v}, shape {:?}", values.shape()),
        );
    }
}

impl<'t> Var<'t> {
    /// Mean binary cross-entropy between probabilities `p = self` and targets `t`, both in
    /// `[0, 1]` (PyTorch's `binary_cross_entropy`):
    /// `-mean(t·max(ln p, -100) + (1 - t)·max(ln(1 - p), -100))`. The clamp keeps `p = 0` or
    /// `1` finite; the gradient `(p - t) / max(p(1 - p), 1e-12) / N` is PyTorch's, so it is
    /// finite too. Targets get a gradient `-ln(p / (1 - p)) / N` (infinite at `p = 0` or `1`,
    /// as in PyTorch).
    ///
    /// Prefer [`Var::binary_cross_entropy_with_logits`] on logits: it is exact where this op's
    /// input has already rounded to 0 or 1.
    ///
    /// NaN probabilities or targets give a NaN loss and gradient (PyTorch rejects them with an
    /// error instead); they are left to the training loop's non-finite check.
    ///
    /// # Panics
    ///
    /// If the shapes differ, or a probability or target lies outside `[0, 1]` (as PyTorch).
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::training();
    /// let p = tape.variable(Tensor::from_vec(vec![0.0, 0.5], &[2]).unwrap());
    /// let t = tape.input(Tensor::from_vec(vec![1.0, 1.0], &[2]).unwrap());
    /// let loss = p.binary_cross_entropy(t);
    /// // (100 + ln 2) / 2: the log of 0 is clamped at -100
    /// assert!((loss.item() - (100.0 + 2f32.ln()) / 2.0).abs() < 1e-5);
    /// let grad = loss.backward().wrt(p).unwrap().clone();
    /// assert_eq!(grad.as_slice(), &[-0.5e12, -1.0]);
    /// ```
    pub fn binary_cross_entropy(self, targets: Var<'t>) -> Var<'t> {
        let (probabilities, target_values) = (self.value(), targets.value());
        expect_same_shape(
            "binary_cross_entropy",
            "probabilities",
            probabilities.shape(),
            "targets",
            target_values.shape(),
        );
        expect_probabilities("probabilities", &probabilities);
        expect_probabilities("targets", &target_values);
        let total: f64 = probabilities
            .as_slice()
            .iter()
            .zip(target_values.as_slice())
            .map(|(&p, &t)| ((t - 1.0) * clamped((-p).ln_1p()) - t * clamped(p.ln())) as f64)
            .sum();
        let loss = Tensor::scalar((total / probabilities.len() as f64) as f32);
        self.tape().record(
            loss,
            &[self, targets],
            BceBackward {
                probabilities,
                targets: target_values,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, Tensor, gradcheck};

    #[test]
    fn value_and_gradient_by_hand() {
        let tape = Tape::training();
        let p = tape.variable(tm(&[0.25, 0.5], &[2]));
        let t = tape.variable(tm(&[1.0, 0.0], &[2]));
        let loss = p.binary_cross_entropy(t);
        // (-ln 0.25 - ln 0.5) / 2
        assert!((loss.item() - (4f32.ln() + 2f32.ln()) / 2.0).abs() < 1e-6);
        let grads = loss.backward();
        // (0.25 - 1) / (0.75·0.25) / 2 = -2, (0.5 - 0) / 0.25 / 2 = 1
        assert_eq!(grads.wrt(p).unwrap().as_slice(), &[-2.0, 1.0]);
        // -ln(1/3) / 2, -ln 1 / 2
        let gt = grads.wrt(t).unwrap().as_slice().to_vec();
        assert!(
            (gt[0] - 3f32.ln() / 2.0).abs() < 1e-6 && gt[1] == 0.0,
            "{gt:?}"
        );
    }

    #[test]
    fn zero_and_one_give_finite_losses_and_gradients() {
        let tape = Tape::training();
        let p = tape.variable(tm(&[0.0, 1.0, 0.0, 1.0], &[4]));
        let t = tape.input(tm(&[0.0, 1.0, 1.0, 0.0], &[4]));
        let loss = p.binary_cross_entropy(t);
        assert_eq!(loss.item(), 50.0);
        let grads = loss.backward();
        assert_eq!(
            grads.wrt(p).unwrap().as_slice(),
            &[0.0, 0.0, -0.25e12, 0.25e12]
        );
    }

    #[test]
    fn gradcheck_bce() {
        let p = rand_tensor(&[3, 4], 40).map(|v| 0.5 + 0.4 * v);
        let t = rand_tensor(&[3, 4], 41).map(|v| 0.5 + 0.4 * v);
        gradcheck(&[p, t], |v| v[0].binary_cross_entropy(v[1])).assert_passed();
    }

    #[test]
    #[should_panic(expected = "binary_cross_entropy: probabilities must lie in [0, 1]")]
    fn rejects_probabilities_above_one() {
        let tape = Tape::inference();
        let p = tape.input(Tensor::from_vec(vec![0.5, 1.5], &[2]).unwrap());
        p.binary_cross_entropy(tape.input(Tensor::zeros(&[2])));
    }
}
