//! `add`: elementwise sum with NumPy broadcasting.

use std::fmt;
use std::ops::Add;
use std::sync::Arc;

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::kernels::{self, blocks::ChannelBlocks};
use crate::tensor::Tensor;
use crate::tensor::broadcast::broadcast_zip;

#[derive(Debug)]
struct AddBackward;

impl Backward for AddBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // d(a + b)/da = d(a + b)/db = 1; the engine sums over broadcast axes
        vec![Some(grad_output.clone()), Some(grad_output)]
    }
}

impl<'t> Add for Var<'t> {
    type Output = Var<'t>;

    /// `a + b`, broadcasting NumPy-style.
    ///
    /// # Panics
    ///
    /// If the shapes cannot be broadcast together.
    fn add(self, rhs: Var<'t>) -> Var<'t> {
        if let Some(sum) = add_on_blocks(self, rhs) {
            return sum;
        }
        let value = broadcast_zip("add", &self.value(), &rhs.value(), |a, b| a + b);
        self.tape().record(value, &[self, rhs], AddBackward)
    }
}

/// The backward of [`Var::add_relu`]: the output's gradient where the output is positive (or
/// NaN), 0 elsewhere, to both operands.
struct AddReluBackward {
    output: Tensor,
}

impl fmt::Debug for AddReluBackward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "add_relu {:?}", self.output.shape())
    }
}

impl Backward for AddReluBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        let grad = kernels::mask_relu_gradient(grad_output, self.output.as_slice());
        vec![Some(grad.clone()), Some(grad)]
    }
}

impl<'t> Var<'t> {
    /// `relu(a + b)` for operands of one shape, as one op (a residual block's end): one pass
    /// over the values instead of two, and no sum kept for the ReLU's backward. The same values
    /// and gradients to the bit as `(a + b).relu()`, which it is where the shapes differ (a
    /// broadcast) or an inference tape keeps channel blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::training();
    /// let a = tape.input(Tensor::from_vec(vec![1.0, -3.0], &[2]).unwrap());
    /// let b = tape.input(Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap());
    /// assert_eq!(a.add_relu(b).value().as_slice(), &[2.0, 0.0]);
    /// ```
    pub fn add_relu(self, rhs: Var<'t>) -> Var<'t> {
        let tape = self.tape();
        if self.shape() != rhs.shape() || tape.keeps_blocks() {
            return (self + rhs).relu();
        }
        let output = self
            .value()
            .zip_map(&rhs.value(), |a, b| kernels::relu(a + b));
        let backward = AddReluBackward {
            output: output.clone(),
        };
        tape.record(output, &[self, rhs], backward)
    }
}

/// `a + b` kept in channel blocks where the tape keeps them and one operand is (the other,
/// of the same shape, converted to the same blocks: a residual block's shortcut).
fn add_on_blocks<'t>(a: Var<'t>, b: Var<'t>) -> Option<Var<'t>> {
    let tape = a.tape();
    if !tape.keeps_blocks() || a.shape() != b.shape() {
        return None;
    }
    let (x, y) = match (tape.blocks(a.node()), tape.blocks(b.node())) {
        (None, None) => return None,
        (Some(x), Some(y)) if x.halo() == y.halo() => (x, y),
        (Some(x), _) => {
            let y = ChannelBlocks::from_planes(b.value().as_slice(), x.shape(), x.halo());
            (x, Arc::new(y))
        }
        (None, Some(y)) => {
            let x = ChannelBlocks::from_planes(a.value().as_slice(), y.shape(), y.halo());
            (Arc::new(x), y)
        }
    };
    Some(tape.record_blocks(x.add(&y)))
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, gradcheck};

    #[test]
    fn broadcast_value_and_gradients_by_hand() {
        let tape = Tape::training();
        let a = tape.variable(tm(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]));
        let b = tape.variable(tm(&[10.0, 20.0, 30.0], &[3]));
        let y = a + b;
        assert_eq!(y.value().as_slice(), &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        let grads = y.sum().backward();
        assert_eq!(grads.wrt(a).unwrap().as_slice(), &[1.0; 6]);
        // b was added to both rows: its gradient sums them.
        assert_eq!(grads.wrt(b).unwrap().as_slice(), &[2.0; 3]);
    }

    #[test]
    fn add_relu_matches_the_two_ops_to_the_bit() {
        let (a, b) = (
            rand_tensor(&[2, 3, 4, 5], 90),
            rand_tensor(&[2, 3, 4, 5], 91),
        );
        let mut upstream = rand_tensor(&[2, 3, 4, 5], 92);
        upstream.as_slice_mut()[..4].copy_from_slice(&[f32::INFINITY, f32::NAN, 1.0, -2.0]);
        let run = |fused: bool| {
            let tape = Tape::training();
            let (x, y) = (tape.variable(a.clone()), tape.variable(b.clone()));
            let out = if fused { x.add_relu(y) } else { (x + y).relu() };
            let grads = (out * tape.input(upstream.clone())).sum().backward();
            let bits =
                |t: &crate::Tensor| t.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            (
                bits(&out.value()),
                bits(grads.wrt(x).unwrap()),
                bits(grads.wrt(y).unwrap()),
            )
        };
        assert_eq!(run(true), run(false));
    }

    #[test]
    fn gradcheck_add_relu() {
        // Sums at least 0.1 from the kink.
        let a = tm(&[0.5, -0.7, 1.2, -0.05, 0.3, 2.0], &[2, 3]);
        let b = tm(&[0.2, 0.1, -1.5, -0.3, -0.1, -1.0], &[2, 3]);
        gradcheck(&[a, b], |v| v[0].add_relu(v[1])).assert_passed();
    }

    #[test]
    fn gradcheck_add_broadcast() {
        gradcheck(
            &[rand_tensor(&[2, 3, 4], 1), rand_tensor(&[3, 1], 2)],
            |v| v[0] + v[1],
        )
        .assert_passed();
        gradcheck(&[rand_tensor(&[4], 3), rand_tensor(&[2, 1, 4], 4)], |v| {
            v[0] + v[1]
        })
        .assert_passed();
    }

    #[test]
    #[should_panic(
        expected = "add: shapes cannot be broadcast: extents 3 and 2 at axis 1 of the result (lhs [2, 3], rhs [2, 2])"
    )]
    fn rejects_incompatible_shapes() {
        let tape = Tape::training();
        let _ =
            tape.input(crate::Tensor::zeros(&[2, 3])) + tape.input(crate::Tensor::zeros(&[2, 2]));
    }
}
