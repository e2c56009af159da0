//! `concat`: join values along an existing axis.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::check::{AxisIndex, contract_violation, resolve_axis};
use crate::tensor::{Tensor, concat_shape};

#[derive(Debug)]
struct ConcatBackward {
    axis: usize,
    extents: Vec<usize>,
}

impl Backward for ConcatBackward {
    fn backward(&self, grad_output: Tensor, needs_grad: &[bool]) -> Vec<Option<Tensor>> {
        // each input receives its own slice of the gradient
        let mut start = 0;
        self.extents
            .iter()
            .zip(needs_grad)
            .map(|(&len, &needed)| {
                let slice = needed.then(|| grad_output.narrow(self.axis, start, len));
                start += len;
                slice
            })
            .collect()
    }
}

impl<'t> Var<'t> {
    /// Joins values along an existing axis (`torch.cat`).
    ///
    /// # Panics
    ///
    /// If `vars` is empty, ranks differ, or extents differ on any other axis.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor, Var};
    ///
    /// let tape = Tape::inference();
    /// let a = tape.input(Tensor::zeros(&[2, 3]));
    /// let b = tape.input(Tensor::ones(&[2, 5]));
    /// assert_eq!(Var::concat(&[a, b], 1).shape(), vec![2, 8]);
    /// ```
    pub fn concat(vars: &[Var<'t>], axis: impl AxisIndex) -> Var<'t> {
        let Some(first) = vars.first() else {
            contract_violation("concat", "needs at least one tensor", "no inputs");
        };
        let values: Vec<Tensor> = vars.iter().map(|v| v.value()).collect();
        let shapes: Vec<&[usize]> = values.iter().map(|v| v.shape()).collect();
        let axis = resolve_axis("concat", axis, shapes[0]);
        concat_shape("concat", &shapes, axis);
        let extents = shapes.iter().map(|s| s[axis]).collect();
        let refs: Vec<&Tensor> = values.iter().collect();
        let value = Tensor::concat(&refs, axis);
        first
            .tape()
            .record(value, vars, ConcatBackward { axis, extents })
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, Tensor, Var, gradcheck};

    #[test]
    fn value_and_gradients_by_hand() {
        let tape = Tape::training();
        let a = tape.variable(tm(&[1.0, 2.0], &[2, 1]));
        let b = tape.variable(tm(&[3.0, 4.0, 5.0, 6.0], &[2, 2]));
        let y = Var::concat(&[a, b], 1);
        assert_eq!(y.value().as_slice(), &[1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
        let w = tape.input(tm(&[1.0, 2.0, 3.0], &[3]));
        let grads = (y * w).sum().backward();
        assert_eq!(grads.wrt(a).unwrap().as_slice(), &[1.0, 1.0]);
        assert_eq!(grads.wrt(b).unwrap().as_slice(), &[2.0, 3.0, 2.0, 3.0]);
    }

    #[test]
    fn gradcheck_concat() {
        let inputs = [
            rand_tensor(&[2, 3, 2], 15),
            rand_tensor(&[2, 1, 2], 16),
            rand_tensor(&[2, 2, 2], 17),
        ];
        gradcheck(&inputs, |v| Var::concat(v, 1)).assert_passed();
    }

    #[test]
    #[should_panic(
        expected = "concat: input 1 does not match input 0 outside axis 1 (input 0 [2, 3], input 1 [3, 3])"
    )]
    fn rejects_mismatched_shapes() {
        let tape = Tape::training();
        let a = tape.input(Tensor::zeros(&[2, 3]));
        let b = tape.input(Tensor::zeros(&[3, 3]));
        Var::concat(&[a, b], 1);
    }
}
