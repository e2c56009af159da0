//! `softmax`: normalised exponentials along an axis.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::kernels::softmax::softmax_rows;
use crate::tensor::Tensor;
use crate::tensor::check::{AxisIndex, resolve_axis};

/// Applies a row kernel along `axis` by moving that axis last, running the kernel on contiguous
/// rows, and moving it back.
pub(crate) fn along_axis(
    input: &Tensor,
    axis: usize,
    kernel: impl Fn(&mut [f32], usize),
) -> Tensor {
    let last = input.ndim() - 1;
    let width = input.shape()[axis];
    if axis == last {
        let mut out = input.clone();
        kernel(out.as_slice_mut(), width);
        return out;
    }
    let mut moved = input.transpose(axis, last);
    kernel(moved.as_slice_mut(), width);
    moved.transpose(axis, last)
}

#[derive(Debug)]
struct SoftmaxBackward {
    output: Tensor,
    axis: usize,
}

impl Backward for SoftmaxBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // dx = y ⊙ (g - Σ_axis g ⊙ y)
        let gy = grad_output.zip_map(&self.output, |g, y| g * y);
        let total = crate::tensor::reduce::sum_axes_keepdim(&gy, "softmax", &[self.axis]);
        let total = crate::tensor::broadcast::broadcast_to(&total, gy.shape());
        let mut grad = gy;
        for ((g, &y), &s) in grad
            .as_slice_mut()
            .iter_mut()
            .zip(self.output.as_slice())
            .zip(total.as_slice())
        {
            *g -= y * s;
        }
        vec![Some(grad)]
    }
}

impl<'t> Var<'t> {
    /// Softmax along `axis`: `e^(x_i - max) / Σ e^(x_j - max)`, stable for logits of any
    /// finite magnitude.
    ///
    /// # Panics
    ///
    /// If `axis` is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let p = tape.input(Tensor::from_vec(vec![0.0, 0.0, 1e4, 1e4], &[2, 2]).unwrap()).softmax(1);
    /// assert_eq!(p.value().as_slice(), &[0.5, 0.5, 0.5, 0.5]);
    /// ```
    pub fn softmax(self, axis: impl AxisIndex) -> Var<'t> {
        let input = self.value();
        let axis = resolve_axis("softmax", axis, input.shape());
        let output = along_axis(&input, axis, softmax_rows);
        self.tape()
            .record(output.clone(), &[self], SoftmaxBackward { output, axis })
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, Var, gradcheck};

    #[test]
    fn negative_axes_count_from_the_back() {
        let x = rand_tensor(&[2, 3, 4], 9);
        let tape = Tape::inference();
        let v = tape.input(x);
        assert_eq!(v.softmax(-1).value(), v.softmax(2).value());
        assert_eq!(v.log_softmax(-2).value(), v.log_softmax(1).value());
        assert_eq!(v.sum_axes(&[-1, 0]).value(), v.sum_axes(&[2, 0]).value());
        assert_eq!(
            v.mean_axes_keepdim(&[-3]).value(),
            v.mean_axes_keepdim(&[0]).value()
        );
        assert_eq!(v.max_axes(&[-1]).value(), v.max_axes(&[2]).value());
        assert_eq!(v.flatten(-2).shape(), vec![2, 12]);
        assert_eq!(v.narrow(-1, 1, 2).value(), v.narrow(2, 1, 2).value());
        assert_eq!(v.transpose(0, -1).shape(), vec![4, 3, 2]);
        assert_eq!(Var::concat(&[v, v], -1).shape(), vec![2, 3, 8]);
    }

    #[test]
    fn value_and_gradient_by_hand() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[0.0, 2f32.ln()], &[1, 2]));
        let y = x.softmax(1);
        let v = y.value();
        assert!(
            (v.as_slice()[0] - 1.0 / 3.0).abs() < 1e-6
                && (v.as_slice()[1] - 2.0 / 3.0).abs() < 1e-6
        );
        // d y_0 / dx = y_0 (e_0 - y) = [2/9, -2/9]
        let w = tape.input(tm(&[1.0, 0.0], &[1, 2]));
        let grads = (y * w).sum().backward();
        let g = grads.wrt(x).unwrap();
        assert!((g.as_slice()[0] - 2.0 / 9.0).abs() < 1e-6);
        assert!((g.as_slice()[1] + 2.0 / 9.0).abs() < 1e-6);
    }

    #[test]
    fn stable_for_huge_logits() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[1e4, -1e4, 0.0, 1e4], &[2, 2]));
        let y = x.softmax(1);
        assert_eq!(y.value().as_slice(), &[1.0, 0.0, 0.0, 1.0]);
        let grads = y.square().sum().backward();
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
    fn gradcheck_softmax_each_axis() {
        let x = rand_tensor(&[2, 3, 4], 19).map(|v| 2.0 * v);
        for axis in 0..3 {
            gradcheck(std::slice::from_ref(&x), |v| v[0].softmax(axis)).assert_passed();
        }
    }
}
