//! `mse`: mean squared error.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::check::expect_same_shape;

#[derive(Debug)]
struct MseBackward {
    difference: Tensor,
}

impl Backward for MseBackward {
    fn backward(&self, grad_output: Tensor, needs_grad: &[bool]) -> Vec<Option<Tensor>> {
        // d mean((p - t)²) / dp = 2(p - t)/N = -d/dt
        let scale = 2.0 * grad_output.item() / self.difference.len() as f32;
        let grad = self.difference.map(|d| d * scale);
        let grad_target = needs_grad[1].then(|| grad.map(|g| -g));
        vec![Some(grad), grad_target]
    }
}

impl<'t> Var<'t> {
    /// Mean squared error `mean((self - target)²)` over all elements.
    ///
    /// # Panics
    ///
    /// If the shapes differ (a loss never broadcasts: that hides shape bugs).
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::training();
    /// let prediction = tape.input(Tensor::from_vec(vec![1.0, 3.0], &[2]).unwrap());
    /// let target = tape.input(Tensor::from_vec(vec![0.0, 0.0], &[2]).unwrap());
    /// assert_eq!(prediction.mse(target).item(), 5.0);
    /// ```
    pub fn mse(self, target: Var<'t>) -> Var<'t> {
        let (prediction, target_value) = (self.value(), target.value());
        expect_same_shape(
            "mse",
            "prediction",
            prediction.shape(),
            "target",
            target_value.shape(),
        );
        let difference = prediction.zip_map(&target_value, |p, t| p - t);
        let total: f64 = difference
            .as_slice()
            .iter()
            .map(|&d| (d as f64) * (d as f64))
            .sum();
        let loss = Tensor::scalar((total / difference.len() as f64) as f32);
        self.tape()
            .record(loss, &[self, target], MseBackward { difference })
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
        let t = tape.variable(tm(&[0.0, 4.0], &[2]));
        let loss = p.mse(t);
        assert_eq!(loss.item(), 2.5);
        let grads = loss.backward();
        assert_eq!(grads.wrt(p).unwrap().as_slice(), &[1.0, -2.0]);
        assert_eq!(grads.wrt(t).unwrap().as_slice(), &[-1.0, 2.0]);
    }

    #[test]
    fn gradcheck_mse() {
        gradcheck(&[rand_tensor(&[3, 4], 32), rand_tensor(&[3, 4], 33)], |v| {
            v[0].mse(v[1])
        })
        .assert_passed();
    }

    #[test]
    #[should_panic(
        expected = "mse: prediction and target must have the same shape (prediction [2, 1], target [2])"
    )]
    fn rejects_shape_mismatch() {
        let tape = Tape::training();
        tape.input(Tensor::zeros(&[2, 1]))
            .mse(tape.input(Tensor::zeros(&[2])));
    }
}
