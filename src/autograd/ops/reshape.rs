//! `reshape` and `flatten`: the same elements in a new shape (row-major).

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::check::{AxisIndex, resolve_axis};

#[derive(Debug)]
struct ReshapeBackward {
    input_shape: Vec<usize>,
}

impl Backward for ReshapeBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // reshape moves no element: the gradient takes the input's shape back
        vec![Some(grad_output.reshape(&self.input_shape))]
    }
}

impl<'t> Var<'t> {
    /// The same elements in a new shape, read in row-major order. O(1): shares the buffer.
    ///
    /// # Panics
    ///
    /// If the new shape holds a different number of elements.
    pub fn reshape(self, shape: &[usize]) -> Var<'t> {
        let input = self.value();
        let input_shape = input.shape().to_vec();
        self.tape().record(
            input.reshape(shape),
            &[self],
            ReshapeBackward { input_shape },
        )
    }

    /// Merges `start_axis` and every axis after it into one: `[N, C, H, W]` flattened from
    /// axis 1 is `[N, C·H·W]`.
    ///
    /// # Panics
    ///
    /// If `start_axis` is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let x = tape.input(Tensor::zeros(&[8, 32, 7, 7]));
    /// assert_eq!(x.flatten(1).shape(), vec![8, 1568]);
    /// ```
    pub fn flatten(self, start_axis: impl AxisIndex) -> Var<'t> {
        let shape = self.shape();
        let start_axis = resolve_axis("flatten", start_axis, &shape);
        let mut new_shape = shape[..start_axis].to_vec();
        new_shape.push(shape[start_axis..].iter().product());
        self.reshape(&new_shape)
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
        let y = x.reshape(&[3, 2]);
        assert_eq!(y.shape(), vec![3, 2]);
        let w = tape.input(tm(&[1.0, 2.0], &[2]));
        let grads = (y * w).sum().backward();
        assert_eq!(
            grads.wrt(x).unwrap().as_slice(),
            &[1.0, 2.0, 1.0, 2.0, 1.0, 2.0]
        );
    }

    #[test]
    fn gradcheck_reshape_and_flatten() {
        let x = rand_tensor(&[2, 3, 2, 2], 13);
        gradcheck(std::slice::from_ref(&x), |v| v[0].reshape(&[6, 4])).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| v[0].flatten(2)).assert_passed();
    }

    #[test]
    #[should_panic(expected = "reshape: cannot reshape 6 elements into 4 (from [2, 3] to [2, 2])")]
    fn rejects_wrong_size() {
        let tape = Tape::training();
        tape.input(tm(&[0.0; 6], &[2, 3])).reshape(&[2, 2]);
    }
}
