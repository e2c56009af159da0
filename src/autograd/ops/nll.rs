//! `nll`: negative log-likelihood of log-probabilities at the target classes.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::check::check_class_targets;

#[derive(Debug)]
struct NllBackward {
    shape: Vec<usize>,
    targets: Vec<usize>,
}

impl Backward for NllBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // d loss / d lp[i, c] = -1/N where c = target_i, else 0
        let classes = self.shape[1];
        let value = -grad_output.item() / self.targets.len() as f32;
        let mut grad = Tensor::zeros(&self.shape);
        for (row, &target) in grad.as_slice_mut().chunks_mut(classes).zip(&self.targets) {
            row[target] = value;
        }
        vec![Some(grad)]
    }
}

impl<'t> Var<'t> {
    /// Mean negative log-likelihood: `-mean_i input[i, target_i]` for log-probabilities
    /// `[batch, classes]` (`torch.nn.functional.nll_loss`). `log_softmax(1).nll(t)` equals
    /// `cross_entropy(t)`.
    ///
    /// # Panics
    ///
    /// If the input is not 2-D, the number of targets differs from the batch, or a target is
    /// not below the number of classes.
    pub fn nll(self, targets: &[usize]) -> Var<'t> {
        let input = self.value();
        let (batch, classes) = check_class_targets("nll", input.shape(), targets);
        let total: f64 = input
            .as_slice()
            .chunks(classes)
            .zip(targets)
            .map(|(row, &t)| row[t] as f64)
            .sum();
        let loss = Tensor::scalar((-total / batch as f64) as f32);
        self.tape().record(
            loss,
            &[self],
            NllBackward {
                shape: input.shape().to_vec(),
                targets: targets.to_vec(),
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
        let lp = tape.variable(tm(&[-0.5, -1.0, -2.0, -0.1], &[2, 2]));
        let loss = lp.nll(&[1, 0]);
        assert_eq!(loss.item(), 1.5);
        assert_eq!(
            loss.backward().wrt(lp).unwrap().as_slice(),
            &[0.0, -0.5, -0.5, 0.0]
        );
    }

    #[test]
    fn log_softmax_then_nll_is_cross_entropy() {
        let tape = Tape::inference();
        let x = tape.input(rand_tensor(&[3, 4], 30));
        let a = x.log_softmax(1).nll(&[0, 3, 1]).item();
        let b = x.cross_entropy(&[0, 3, 1]).item();
        assert!((a - b).abs() < 1e-6);
    }

    #[test]
    fn gradcheck_nll() {
        gradcheck(&[rand_tensor(&[3, 4], 31)], |v| v[0].nll(&[2, 0, 3])).assert_passed();
    }

    #[test]
    #[should_panic(expected = "nll: target 4 out of range for 4 classes (sample 0, input [1, 4])")]
    fn rejects_label_out_of_range() {
        let tape = Tape::training();
        tape.input(rand_tensor(&[1, 4], 0)).nll(&[4]);
    }
}
