//! `log_softmax`: the logarithm of softmax along an axis, computed directly.

use super::softmax::along_axis;
use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::kernels::softmax::log_softmax_rows;
use crate::tensor::Tensor;
use crate::tensor::broadcast::broadcast_to;
use crate::tensor::check::{AxisIndex, resolve_axis};
use crate::tensor::reduce::sum_axes_keepdim;

#[derive(Debug)]
struct LogSoftmaxBackward {
    output: Tensor,
    axis: usize,
}

impl Backward for LogSoftmaxBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // dx = g - softmax(x) ⊙ Σ_axis g, with softmax(x) = e^y
        let total = sum_axes_keepdim(&grad_output, "log_softmax", &[self.axis]);
        let total = broadcast_to(&total, grad_output.shape());
        let mut grad = grad_output;
        for ((g, &y), &s) in grad
            .as_slice_mut()
            .iter_mut()
            .zip(self.output.as_slice())
            .zip(total.as_slice())
        {
            *g -= y.exp() * s;
        }
        vec![Some(grad)]
    }
}

impl<'t> Var<'t> {
    /// Log-softmax along `axis`: `x_i - max - ln Σ e^(x_j - max)`, exact and finite for logits
    /// of any finite magnitude (unlike `softmax().ln()`).
    ///
    /// # Panics
    ///
    /// If `axis` is out of range.
    pub fn log_softmax(self, axis: impl AxisIndex) -> Var<'t> {
        let input = self.value();
        let axis = resolve_axis("log_softmax", axis, input.shape());
        let output = along_axis(&input, axis, log_softmax_rows);
        self.tape()
            .record(output.clone(), &[self], LogSoftmaxBackward { output, axis })
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, gradcheck};

    #[test]
    fn value_and_gradient_by_hand() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[0.0, 3f32.ln()], &[2]));
        let y = x.log_softmax(0);
        let v = y.value();
        assert!((v.as_slice()[0] - 0.25f32.ln()).abs() < 1e-6);
        assert!((v.as_slice()[1] - 0.75f32.ln()).abs() < 1e-6);
        // d Σ y / dx = 1 - 2 softmax = [0.5, -0.5]
        let grads = y.sum().backward();
        let g = grads.wrt(x).unwrap();
        assert!((g.as_slice()[0] - 0.5).abs() < 1e-6 && (g.as_slice()[1] + 0.5).abs() < 1e-6);
    }

    #[test]
    fn exact_for_huge_logits() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[1e4, 0.0, -1e4], &[1, 3]));
        let y = x.log_softmax(1);
        assert_eq!(y.value().as_slice(), &[0.0, -1e4, -2e4]);
        let grads = y.sum().backward();
        assert_eq!(grads.wrt(x).unwrap().as_slice(), &[-2.0, 1.0, 1.0]);
    }

    #[test]
    fn gradcheck_log_softmax_each_axis() {
        let x = rand_tensor(&[3, 2, 4], 20).map(|v| 3.0 * v);
        for axis in 0..3 {
            gradcheck(std::slice::from_ref(&x), |v| v[0].log_softmax(axis)).assert_passed();
        }
    }
}
