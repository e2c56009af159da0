//! `narrow` and `split`: take consecutive entries along an axis.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::check::{AxisIndex, contract_violation, resolve_axis, shape_str};

#[derive(Debug)]
struct NarrowBackward {
    input_shape: Vec<usize>,
    axis: usize,
    start: usize,
}

impl Backward for NarrowBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // the gradient lands in the narrowed window; elsewhere it is zero
        let mut grad = Tensor::zeros(&self.input_shape);
        let len = grad_output.shape()[self.axis];
        grad.view_mut()
            .slice_axis_mut(
                ndarray::Axis(self.axis),
                ndarray::Slice::from(self.start..self.start + len),
            )
            .assign(&grad_output.view());
        vec![Some(grad)]
    }
}

impl<'t> Var<'t> {
    /// `len` consecutive entries along `axis`, starting at `start` (`torch.narrow`).
    ///
    /// # Panics
    ///
    /// If the axis is out of range or the window exceeds it.
    pub fn narrow(self, axis: impl AxisIndex, start: usize, len: usize) -> Var<'t> {
        let input = self.value();
        let axis = resolve_axis("narrow", axis, input.shape());
        let value = input.narrow(axis, start, len);
        self.tape().record(
            value,
            &[self],
            NarrowBackward {
                input_shape: input.shape().to_vec(),
                axis,
                start,
            },
        )
    }

    /// Splits along `axis` into consecutive pieces of the given extents (`torch.split` with a
    /// list of sizes).
    ///
    /// # Panics
    ///
    /// If the axis is out of range or the sizes do not add up to its extent.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let x = tape.input(Tensor::zeros(&[2, 10]));
    /// let parts = x.split(1, &[3, 7]);
    /// assert_eq!(parts[1].shape(), vec![2, 7]);
    /// ```
    pub fn split(self, axis: impl AxisIndex, sizes: &[usize]) -> Vec<Var<'t>> {
        let shape = self.shape();
        let axis = resolve_axis("split", axis, &shape);
        let total: usize = sizes.iter().sum();
        if total != shape[axis] {
            contract_violation(
                "split",
                format_args!(
                    "sizes {sizes:?} add up to {total}, not extent {} of axis {axis}",
                    shape[axis]
                ),
                format_args!("input {}", shape_str(&shape)),
            );
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&len| {
                let piece = self.narrow(axis, start, len);
                start += len;
                piece
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, Var, gradcheck};

    #[test]
    fn value_and_gradient_by_hand() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]));
        let y = x.narrow(1, 1, 2);
        assert_eq!(y.value().as_slice(), &[2.0, 3.0, 5.0, 6.0]);
        let grads = y.sum().backward();
        assert_eq!(
            grads.wrt(x).unwrap().as_slice(),
            &[0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
        );
    }

    #[test]
    fn gradcheck_narrow_and_split() {
        let x = rand_tensor(&[3, 5, 2], 18);
        gradcheck(std::slice::from_ref(&x), |v| v[0].narrow(1, 1, 3)).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| {
            let parts = v[0].split(1, &[2, 3]);
            Var::concat(&[parts[1], parts[0]], 1)
        })
        .assert_passed();
    }

    #[test]
    #[should_panic(
        expected = "split: sizes [2, 2] add up to 4, not extent 5 of axis 1 (input [3, 5, 2])"
    )]
    fn split_rejects_wrong_sizes() {
        let tape = Tape::training();
        tape.input(rand_tensor(&[3, 5, 2], 0)).split(1, &[2, 2]);
    }
}
