//! `add`: elementwise sum with NumPy broadcasting.

use std::ops::Add;
use std::sync::Arc;

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::kernels::blocks::ChannelBlocks;
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
