//! NumPy broadcasting: the shape rule, elementwise combination, and the reduction that takes a
//! gradient back to an input's shape.
//!
//! Shapes are aligned at their last axis; two extents are compatible when equal or when one is 1.
//! A missing leading axis counts as extent 1.

use ndarray::{Axis, IxDyn, Zip};

use super::Tensor;
use super::check::{contract_violation, shape_str};

/// The shape two operands broadcast to.
///
/// # Panics
///
/// If an aligned pair of extents differs and neither is 1, naming `op` and both shapes.
///
/// # Examples
///
/// ```
/// use striate::tensor::broadcast::broadcast_shape;
///
/// assert_eq!(broadcast_shape("add", &[8, 1, 5], &[3, 1]), vec![8, 3, 5]);
/// ```
#[track_caller]
pub fn broadcast_shape(op: &str, lhs: &[usize], rhs: &[usize]) -> Vec<usize> {
    let rank = lhs.len().max(rhs.len());
    let mut out = vec![0; rank];
    for (i, extent) in out.iter_mut().enumerate() {
        let l = extent_from_end(lhs, rank - 1 - i);
        let r = extent_from_end(rhs, rank - 1 - i);
        *extent = match (l, r) {
            (l, r) if l == r => l,
            (1, r) => r,
            (l, 1) => l,
            (l, r) => contract_violation(
                op,
                format_args!(
                    "shapes cannot be broadcast: extents {l} and {r} at axis {i} of the result"
                ),
                format_args!("lhs {}, rhs {}", shape_str(lhs), shape_str(rhs)),
            ),
        };
    }
    out
}

/// The extent `from_end` axes before the last one, or 1 past the front.
fn extent_from_end(shape: &[usize], from_end: usize) -> usize {
    if from_end < shape.len() {
        shape[shape.len() - 1 - from_end]
    } else {
        1
    }
}

/// Combines two tensors elementwise after broadcasting them to a common shape.
///
/// # Panics
///
/// If the shapes cannot be broadcast (see [`broadcast_shape`]).
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::tensor::broadcast::broadcast_zip;
///
/// let rows = Tensor::from_vec(vec![1.0, 2.0], &[2, 1]).unwrap();
/// let cols = Tensor::from_vec(vec![10.0, 20.0, 30.0], &[3]).unwrap();
/// let sum = broadcast_zip("add", &rows, &cols, |a, b| a + b);
/// assert_eq!(sum.as_slice(), &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
/// ```
#[track_caller]
pub fn broadcast_zip(
    op: &str,
    lhs: &Tensor,
    rhs: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Tensor {
    if lhs.shape() == rhs.shape() {
        return lhs.zip_map(rhs, f);
    }
    let shape = broadcast_shape(op, lhs.shape(), rhs.shape());
    let lhs_view = lhs.view();
    let rhs_view = rhs.view();
    let lhs_b = lhs_view
        .broadcast(IxDyn(&shape))
        .expect("broadcastable by broadcast_shape");
    let rhs_b = rhs_view
        .broadcast(IxDyn(&shape))
        .expect("broadcastable by broadcast_shape");
    let out = Zip::from(&lhs_b).and(&rhs_b).map_collect(|&a, &b| f(a, b));
    Tensor::from_array(out)
}

/// Sums `grad` over the axes that broadcasting expanded, giving a tensor of `shape`.
///
/// This is the reverse of broadcasting: the gradient of a broadcast input is the sum of the
/// output gradient over every position the input was copied to.
///
/// # Panics
///
/// If `shape` does not broadcast to `grad`'s shape.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::tensor::broadcast::sum_to_shape;
///
/// let grad = Tensor::ones(&[4, 2, 3]);
/// assert_eq!(sum_to_shape(&grad, &[2, 1]).as_slice(), &[12.0, 12.0]);
/// ```
#[track_caller]
pub fn sum_to_shape(grad: &Tensor, shape: &[usize]) -> Tensor {
    if grad.shape() == shape {
        return grad.clone();
    }
    let from = grad.shape();
    let extra = from.len().checked_sub(shape.len());
    let compatible = extra.is_some_and(|extra| {
        shape
            .iter()
            .zip(&from[extra..])
            .all(|(&s, &g)| s == g || s == 1)
    });
    let Some(extra) = extra.filter(|_| compatible) else {
        contract_violation(
            "sum_to_shape",
            "target shape does not broadcast to the gradient's shape",
            format_args!("gradient {}, target {}", shape_str(from), shape_str(shape)),
        );
    };
    let mut reduced = grad.view().to_owned();
    for _ in 0..extra {
        reduced = reduced.sum_axis(Axis(0));
    }
    for (axis, &s) in shape.iter().enumerate() {
        if s == 1 && reduced.shape()[axis] != 1 {
            reduced = reduced.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        }
    }
    Tensor::from_array(reduced)
}

/// Materialises `tensor` broadcast to `shape` (the forward of broadcasting, used by backward
/// passes that spread a reduced gradient back over its input).
///
/// # Panics
///
/// If `tensor`'s shape does not broadcast to `shape`.
#[track_caller]
pub fn broadcast_to(tensor: &Tensor, shape: &[usize]) -> Tensor {
    if tensor.shape() == shape {
        return tensor.clone();
    }
    let view = tensor.view();
    let Some(broadcast) = view.broadcast(IxDyn(shape)) else {
        contract_violation(
            "broadcast_to",
            "shape does not broadcast to the target",
            format_args!(
                "tensor {}, target {}",
                shape_str(tensor.shape()),
                shape_str(shape)
            ),
        );
    };
    Tensor::from_view(broadcast)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_rule() {
        assert_eq!(broadcast_shape("add", &[2, 3], &[2, 3]), vec![2, 3]);
        assert_eq!(broadcast_shape("add", &[2, 3], &[]), vec![2, 3]);
        assert_eq!(broadcast_shape("add", &[1], &[4, 1, 2]), vec![4, 1, 2]);
        assert_eq!(
            broadcast_shape("add", &[5, 1, 7], &[1, 6, 1]),
            vec![5, 6, 7]
        );
    }

    #[test]
    #[should_panic(
        expected = "mul: shapes cannot be broadcast: extents 3 and 4 at axis 1 of the result (lhs [2, 3], rhs [2, 4])"
    )]
    fn incompatible_shapes_panic() {
        broadcast_shape("mul", &[2, 3], &[2, 4]);
    }

    #[test]
    fn sum_to_shape_reduces_leading_and_unit_axes() {
        let g = Tensor::arange(0.0, 24.0, 1.0).reshape(&[2, 3, 4]);
        let s = sum_to_shape(&g, &[3, 1]);
        assert_eq!(s.shape(), &[3, 1]);
        // Row r of the [3, 4] block sums over both batches and all 4 columns.
        let expected: Vec<f32> = (0..3)
            .map(|r| {
                (0..2)
                    .flat_map(|b| (0..4).map(move |c| (b * 12 + r * 4 + c) as f32))
                    .sum()
            })
            .collect();
        assert_eq!(s.as_slice(), expected.as_slice());
        assert_eq!(sum_to_shape(&g, &[]).item(), (0..24).sum::<i32>() as f32);
    }

    #[test]
    fn broadcast_to_repeats() {
        let t = Tensor::from_vec(vec![1.0, 2.0], &[2, 1]).unwrap();
        assert_eq!(
            broadcast_to(&t, &[2, 2, 3]).as_slice(),
            &[1., 1., 1., 2., 2., 2., 1., 1., 1., 2., 2., 2.]
        );
    }

    #[test]
    #[should_panic(expected = "sum_to_shape: target shape does not broadcast")]
    fn sum_to_shape_rejects_incompatible() {
        sum_to_shape(&Tensor::zeros(&[2, 3]), &[2]);
    }
}
