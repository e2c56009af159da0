//! `permute`, `transpose` and `t`: reorder axes.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::check::{AxisIndex, expect_rank, resolve_axis};

#[derive(Debug)]
struct PermuteBackward {
    inverse: Vec<usize>,
}

impl Backward for PermuteBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // the gradient moves back through the inverse permutation
        vec![Some(grad_output.permute(&self.inverse))]
    }
}

impl<'t> Var<'t> {
    /// Reorders the axes: axis `i` of the result is axis `axes[i]` of the input.
    ///
    /// # Panics
    ///
    /// If `axes` is not a permutation of `0..ndim`.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let nchw = tape.input(Tensor::zeros(&[2, 3, 4, 5]));
    /// assert_eq!(nchw.permute(&[0, 2, 3, 1]).shape(), vec![2, 4, 5, 3]);
    /// ```
    pub fn permute(self, axes: &[usize]) -> Var<'t> {
        let value = self.value().permute(axes);
        let mut inverse = vec![0; axes.len()];
        for (i, &a) in axes.iter().enumerate() {
            inverse[a] = i;
        }
        self.tape()
            .record(value, &[self], PermuteBackward { inverse })
    }

    /// Swaps two axes.
    ///
    /// # Panics
    ///
    /// If either axis is out of range.
    pub fn transpose(self, axis_a: impl AxisIndex, axis_b: impl AxisIndex) -> Var<'t> {
        let shape = self.shape();
        let axis_a = resolve_axis("transpose", axis_a, &shape);
        let axis_b = resolve_axis("transpose", axis_b, &shape);
        let mut axes: Vec<usize> = (0..shape.len()).collect();
        axes.swap(axis_a, axis_b);
        self.permute(&axes)
    }

    /// The transpose of a matrix.
    ///
    /// # Panics
    ///
    /// If the value is not 2-D.
    pub fn t(self) -> Var<'t> {
        expect_rank("t", "input", &self.shape(), 2);
        self.permute(&[1, 0])
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, gradcheck};

    #[test]
    fn value_and_gradient_by_hand() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]));
        let y = x.t();
        assert_eq!(y.value().as_slice(), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let w = tape.input(tm(&[1.0, 10.0], &[2]));
        let grads = (y * w).sum().backward();
        assert_eq!(
            grads.wrt(x).unwrap().as_slice(),
            &[1.0, 1.0, 1.0, 10.0, 10.0, 10.0]
        );
    }

    #[test]
    fn gradcheck_permute() {
        let x = rand_tensor(&[2, 3, 4], 14);
        gradcheck(std::slice::from_ref(&x), |v| v[0].permute(&[2, 0, 1])).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| v[0].transpose(0, 2)).assert_passed();
    }

    #[test]
    #[should_panic(expected = "permute: axes [0, 2] are not a permutation of 0..2 (shape [2, 3])")]
    fn rejects_bad_permutation() {
        let tape = Tape::training();
        tape.input(tm(&[0.0; 6], &[2, 3])).permute(&[0, 2]);
    }
}
