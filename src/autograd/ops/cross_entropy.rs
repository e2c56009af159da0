//! `cross_entropy`: softmax cross-entropy from logits and class indices, fused for stability.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::kernels::softmax::log_softmax_rows;
use crate::tensor::Tensor;
use crate::tensor::check::{check_class_targets, contract_violation};

#[derive(Debug)]
struct CrossEntropyBackward {
    log_probs: Tensor,
    targets: Vec<usize>,
    smoothing: f32,
}

impl Backward for CrossEntropyBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // d loss / d logits = (softmax - q) / N, with q = (1 - ε)·onehot + ε / C
        let (batch, classes) = (self.log_probs.shape()[0], self.log_probs.shape()[1]);
        let scale = grad_output.item() / batch as f32;
        let uniform = self.smoothing / classes as f32;
        let mut grad = self.log_probs.map(|lp| lp.exp() - uniform);
        for (row, &target) in grad.as_slice_mut().chunks_mut(classes).zip(&self.targets) {
            row[target] -= 1.0 - self.smoothing;
            row.iter_mut().for_each(|g| *g *= scale);
        }
        vec![Some(grad)]
    }
}

impl<'t> Var<'t> {
    /// Mean softmax cross-entropy of logits `[batch, classes]` against class indices
    /// (`torch.nn.functional.cross_entropy`). Computed through log-softmax, so it is exact and
    /// finite for logits of any finite magnitude.
    ///
    /// # Panics
    ///
    /// If the logits are not 2-D, the number of targets differs from the batch, or a target is
    /// not below the number of classes.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::training();
    /// let logits = tape.input(Tensor::from_vec(vec![0.0, 0.0, 1e4, 0.0], &[2, 2]).unwrap());
    /// let loss = logits.cross_entropy(&[1, 0]);
    /// assert!((loss.item() - 0.5 * 2f32.ln()).abs() < 1e-6);
    /// ```
    pub fn cross_entropy(self, targets: &[usize]) -> Var<'t> {
        self.cross_entropy_with_label_smoothing(targets, 0.0)
    }

    /// Cross-entropy against smoothed targets `(1 - ε)·onehot + ε / classes`
    /// (PyTorch's `label_smoothing = ε`).
    ///
    /// # Panics
    ///
    /// As [`Var::cross_entropy`], and if `label_smoothing` is outside `[0, 1]`.
    pub fn cross_entropy_with_label_smoothing(
        self,
        targets: &[usize],
        label_smoothing: f32,
    ) -> Var<'t> {
        let logits = self.value();
        let (batch, classes) = check_class_targets("cross_entropy", logits.shape(), targets);
        if !(0.0..=1.0).contains(&label_smoothing) {
            contract_violation(
                "cross_entropy",
                "label_smoothing must be in [0, 1]",
                format_args!("label_smoothing = {label_smoothing}"),
            );
        }
        let mut log_probs = logits;
        log_softmax_rows(log_probs.as_slice_mut(), classes);
        let uniform = label_smoothing / classes as f32;
        let mut total = 0.0f64;
        for (row, &target) in log_probs.as_slice().chunks(classes).zip(targets) {
            let row_sum: f64 = row.iter().map(|&lp| lp as f64).sum();
            total -= (1.0 - label_smoothing as f64) * row[target] as f64 + uniform as f64 * row_sum;
        }
        let loss = Tensor::scalar((total / batch as f64) as f32);
        self.tape().record(
            loss,
            &[self],
            CrossEntropyBackward {
                log_probs,
                targets: targets.to_vec(),
                smoothing: label_smoothing,
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
        // logits [0, ln 3]: softmax [1/4, 3/4]; target 1: loss = -ln(3/4)
        let tape = Tape::training();
        let x = tape.variable(tm(&[0.0, 3f32.ln()], &[1, 2]));
        let loss = x.cross_entropy(&[1]);
        assert!((loss.item() + 0.75f32.ln()).abs() < 1e-6);
        let grads = loss.backward();
        let g = grads.wrt(x).unwrap().as_slice().to_vec();
        assert!((g[0] - 0.25).abs() < 1e-6 && (g[1] + 0.25).abs() < 1e-6);
    }

    #[test]
    fn label_smoothing_matches_formula() {
        // ε = 0.2, C = 2: q = [0.1, 0.9] for target 1
        let tape = Tape::training();
        let x = tape.variable(tm(&[0.0, 3f32.ln()], &[1, 2]));
        let loss = x.cross_entropy_with_label_smoothing(&[1], 0.2);
        let expected = -(0.1 * 0.25f32.ln() + 0.9 * 0.75f32.ln());
        assert!((loss.item() - expected).abs() < 1e-6);
        let g = loss.backward().wrt(x).unwrap().as_slice().to_vec();
        assert!((g[0] - 0.15).abs() < 1e-6 && (g[1] + 0.15).abs() < 1e-6);
    }

    #[test]
    fn stable_for_huge_logits() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[1e4, -1e4, 0.0, -1e4, 1e4, 5e3], &[2, 3]));
        let loss = x.cross_entropy(&[1, 2]);
        // sample 0: -log p(-1e4) = 2e4; sample 1: -log p(5e3) = 5e3
        assert_eq!(loss.item(), (2e4 + 5e3) / 2.0);
        let grads = loss.backward();
        assert!(
            grads
                .wrt(x)
                .unwrap()
                .as_slice()
                .iter()
                .all(|g| g.is_finite())
        );
    }

    #[test]
    fn gradcheck_cross_entropy() {
        let x = rand_tensor(&[4, 5], 29).map(|v| 2.0 * v);
        gradcheck(std::slice::from_ref(&x), |v| {
            v[0].cross_entropy(&[0, 4, 2, 2])
        })
        .assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| {
            v[0].cross_entropy_with_label_smoothing(&[1, 3, 0, 2], 0.1)
        })
        .assert_passed();
    }

    #[test]
    #[should_panic(
        expected = "cross_entropy: target 10 out of range for 10 classes (sample 1, input [2, 10])"
    )]
    fn rejects_label_out_of_range() {
        let tape = Tape::training();
        tape.input(Tensor::zeros(&[2, 10])).cross_entropy(&[3, 10]);
    }

    #[test]
    #[should_panic(expected = "cross_entropy: 3 targets for a batch of 2 (input [2, 10])")]
    fn rejects_wrong_target_count() {
        let tape = Tape::training();
        tape.input(Tensor::zeros(&[2, 10]))
            .cross_entropy(&[3, 1, 2]);
    }
}
