//! `l1`: mean absolute error.

use super::abs::sign;
use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::check::expect_same_shape;

#[derive(Debug)]
struct L1Backward {
    difference: Tensor,
}

impl Backward for L1Backward {
    fn backward(&self, grad_output: Tensor, needs_grad: &[bool]) -> Vec<Option<Tensor>> {
        // d mean|p - t| / dp = sign(p - t)/N = -d/dt
        let scale = grad_output.item() / self.difference.len() as f32;
        let grad = self.difference.map(|d| sign(d) * scale);
        let grad_target = needs_grad[1].then(|| grad.map(|g| -g));
        vec![Some(grad), grad_target]
    }
}

impl<'t> Var<'t> {
    /// Mean absolute error `mean(|self - target|)` over all elements (`l1_loss`).
    ///
    /// # Panics
    ///
    /// If the shapes differ.
    pub fn l1(self, target: Var<'t>) -> Var<'t> {
        let (prediction, target_value) = (self.value(), target.value());
        expect_same_shape(
            "l1",
            "prediction",
            prediction.shape(),
            "target",
            target_value.shape(),
        );
        let difference = prediction.zip_map(&target_value, |p, t| p - t);
        let total: f64 = difference.as_slice().iter().map(|&d| d.abs() as f64).sum();
        let loss = Tensor::scalar((total / difference.len() as f64) as f32);
        self.tape()
            .record(loss, &[self, target], L1Backward { difference })
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, Tensor, gradcheck};

    #[test]
    fn value_and_gradient_by_hand() {
        let tape = Tape::training();
        let p = tape.variable(tm(&[1.0, 2.0], &[2]));
        let t = tape.input(tm(&[0.0, 4.0], &[2]));
        let loss = p.l1(t);
        assert_eq!(loss.item(), 1.5);
        assert_eq!(loss.backward().wrt(p).unwrap().as_slice(), &[0.5, -0.5]);
    }

    #[test]
    fn gradcheck_l1() {
        gradcheck(&[rand_tensor(&[3, 4], 34), rand_tensor(&[3, 4], 35)], |v| {
            v[0].l1(v[1])
        })
        .assert_passed();
    }

    #[test]
    #[should_panic(expected = "l1: prediction and target must have the same shape")]
    fn rejects_shape_mismatch() {
        let tape = Tape::training();
        tape.input(Tensor::zeros(&[3]))
            .l1(tape.input(Tensor::zeros(&[2])));
    }
}
