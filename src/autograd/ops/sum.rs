//! `sum`: the sum over all elements or over chosen axes.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::broadcast::broadcast_to;
use crate::tensor::check::{AxisIndex, resolve_axes};
use crate::tensor::reduce::{dropped_shape, kept_shape, sum_axes_keepdim};

#[derive(Debug)]
struct SumBackward {
    input_shape: Vec<usize>,
    kept_shape: Vec<usize>,
}

impl Backward for SumBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // d Σx / dx_i = 1: every input element receives the gradient of its sum
        let grad = grad_output.reshape(&self.kept_shape);
        vec![Some(broadcast_to(&grad, &self.input_shape))]
    }
}

impl<'t> Var<'t> {
    /// The sum of all elements, as a rank-0 value.
    pub fn sum(self) -> Var<'t> {
        let axes: Vec<usize> = (0..self.ndim()).collect();
        self.sum_axes(&axes)
    }

    /// The sum over `axes`, which are removed from the shape.
    ///
    /// # Panics
    ///
    /// If an axis is out of range or repeated.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let x = tape.input(Tensor::arange(0.0, 6.0, 1.0).reshape(&[2, 3]));
    /// assert_eq!(x.sum_axes(&[1]).value().as_slice(), &[3.0, 12.0]);
    /// assert_eq!(x.sum_axes_keepdim(&[0]).shape(), vec![1, 3]);
    /// ```
    pub fn sum_axes<A: AxisIndex>(self, axes: &[A]) -> Var<'t> {
        let axes = resolve_axes("sum", axes, &self.shape());
        let dropped = dropped_shape(&self.shape(), &axes);
        self.reduce_sum(&axes, &dropped)
    }

    /// The sum over `axes`, which are kept with extent 1.
    ///
    /// # Panics
    ///
    /// If an axis is out of range or repeated.
    pub fn sum_axes_keepdim<A: AxisIndex>(self, axes: &[A]) -> Var<'t> {
        let axes = resolve_axes("sum", axes, &self.shape());
        let kept = kept_shape(&self.shape(), &axes);
        self.reduce_sum(&axes, &kept)
    }

    fn reduce_sum(self, axes: &[usize], out_shape: &[usize]) -> Var<'t> {
        let input = self.value();
        let summed = sum_axes_keepdim(&input, "sum", axes);
        let backward = SumBackward {
            input_shape: input.shape().to_vec(),
            kept_shape: summed.shape().to_vec(),
        };
        self.tape()
            .record(summed.reshape(out_shape), &[self], backward)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, gradcheck};

    #[test]
    fn values_and_gradient_by_hand() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]));
        assert_eq!(x.sum().item(), 21.0);
        assert_eq!(x.sum_axes(&[0]).value().as_slice(), &[5.0, 7.0, 9.0]);
        let weights = tape.input(tm(&[1.0, 10.0], &[2]));
        let grads = (x.sum_axes(&[1]) * weights).sum().backward();
        assert_eq!(
            grads.wrt(x).unwrap().as_slice(),
            &[1.0, 1.0, 1.0, 10.0, 10.0, 10.0]
        );
    }

    #[test]
    fn gradcheck_sum() {
        let x = rand_tensor(&[2, 3, 4], 11);
        gradcheck(std::slice::from_ref(&x), |v| v[0].sum()).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| v[0].sum_axes(&[0, 2])).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| v[0].sum_axes_keepdim(&[1])).assert_passed();
    }
}
