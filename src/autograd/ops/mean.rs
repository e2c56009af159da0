//! `mean`: the average over all elements or over chosen axes, composed as sum × 1/n.

use crate::autograd::var::Var;
use crate::tensor::check::{AxisIndex, expect_distinct_axes, resolve_axes};

impl<'t> Var<'t> {
    /// The mean of all elements, as a rank-0 value.
    pub fn mean(self) -> Var<'t> {
        let axes: Vec<usize> = (0..self.ndim()).collect();
        self.mean_axes(&axes)
    }

    /// The mean over `axes`, which are removed from the shape.
    ///
    /// # Panics
    ///
    /// If an axis is out of range or repeated.
    pub fn mean_axes<A: AxisIndex>(self, axes: &[A]) -> Var<'t> {
        let axes = resolve_axes("mean", axes, &self.shape());
        let count = reduced_count(&self, &axes);
        self.sum_axes(&axes).mul_scalar(1.0 / count as f32)
    }

    /// The mean over `axes`, which are kept with extent 1.
    ///
    /// # Panics
    ///
    /// If an axis is out of range or repeated.
    pub fn mean_axes_keepdim<A: AxisIndex>(self, axes: &[A]) -> Var<'t> {
        let axes = resolve_axes("mean", axes, &self.shape());
        let count = reduced_count(&self, &axes);
        self.sum_axes_keepdim(&axes).mul_scalar(1.0 / count as f32)
    }
}

fn reduced_count(var: &Var<'_>, axes: &[usize]) -> usize {
    let shape = var.shape();
    expect_distinct_axes("mean", axes, &shape);
    axes.iter().map(|&a| shape[a]).product()
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, gradcheck};

    #[test]
    fn values_and_gradient_by_hand() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]));
        assert_eq!(x.mean().item(), 3.5);
        assert_eq!(x.mean_axes(&[1]).value().as_slice(), &[2.0, 5.0]);
        let grads = x.mean().backward();
        assert_eq!(grads.wrt(x).unwrap().as_slice(), &[1.0 / 6.0; 6]);
    }

    #[test]
    fn gradcheck_mean() {
        let x = rand_tensor(&[3, 4, 2], 12);
        gradcheck(std::slice::from_ref(&x), |v| v[0].mean()).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| v[0].mean_axes(&[1])).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| {
            v[0].mean_axes_keepdim(&[0, 2])
        })
        .assert_passed();
    }

    #[test]
    #[should_panic(expected = "mean: axis 5 out of range for rank 3")]
    fn rejects_bad_axis() {
        let tape = Tape::training();
        tape.input(rand_tensor(&[3, 4, 2], 0)).mean_axes(&[5]);
    }
}
