//! Reductions over chosen axes, computed with the reduced axes kept at extent 1.
//!
//! Ops that drop the reduced axes reshape afterwards; keeping them makes the result broadcast
//! straight back against the input, which is what every backward pass of a reduction needs.

use ndarray::Axis;

use super::Tensor;
use super::check::expect_distinct_axes;

/// The larger of `a` and `b`, or NaN if either is NaN (`f32::max` returns the other one and so
/// hides a NaN; PyTorch's `max` propagates it). For `f32` and `f64` alike.
#[inline(always)]
pub fn max_propagating_nan<T: PartialOrd>(a: T, b: T) -> T {
    if a > b || is_nan(&a) { a } else { b }
}

/// The smaller of `a` and `b`, or NaN if either is NaN (see [`max_propagating_nan`]).
#[inline(always)]
pub fn min_propagating_nan<T: PartialOrd>(a: T, b: T) -> T {
    if a < b || is_nan(&a) { a } else { b }
}

/// Whether `x` is unordered with itself, which among floats only NaN is.
#[inline(always)]
fn is_nan<T: PartialOrd>(x: &T) -> bool {
    x.partial_cmp(x).is_none()
}

/// `shape` with every axis in `axes` set to 1.
pub fn kept_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    let mut out = shape.to_vec();
    for &a in axes {
        out[a] = 1;
    }
    out
}

/// `shape` with every axis in `axes` removed.
pub fn dropped_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect()
}

/// Folds `tensor` over `axes` with `f` starting from `init`, keeping the axes at extent 1.
///
/// # Panics
///
/// If an axis is out of range or repeated, naming `op`.
#[track_caller]
pub fn fold_axes_keepdim(
    tensor: &Tensor,
    op: &str,
    axes: &[usize],
    init: f32,
    f: impl Fn(f32, f32) -> f32,
) -> Tensor {
    expect_distinct_axes(op, axes, tensor.shape());
    let mut reduced = tensor.view().to_owned();
    for &axis in axes {
        reduced = reduced
            .fold_axis(Axis(axis), init, |&acc, &x| f(acc, x))
            .insert_axis(Axis(axis));
    }
    Tensor::from_array(reduced)
}

/// Sums over `axes`, keeping them at extent 1.
#[track_caller]
pub fn sum_axes_keepdim(tensor: &Tensor, op: &str, axes: &[usize]) -> Tensor {
    fold_axes_keepdim(tensor, op, axes, 0.0, |acc, x| acc + x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_shapes() {
        let t = Tensor::arange(0.0, 24.0, 1.0).reshape(&[2, 3, 4]);
        let s = sum_axes_keepdim(&t, "sum", &[0, 2]);
        assert_eq!(s.shape(), &[1, 3, 1]);
        assert_eq!(s.as_slice(), &[60.0, 92.0, 124.0]);
        assert_eq!(kept_shape(&[2, 3, 4], &[1]), vec![2, 1, 4]);
        assert_eq!(dropped_shape(&[2, 3, 4], &[0, 2]), vec![3]);
        let m = fold_axes_keepdim(&t, "max", &[1], f32::NEG_INFINITY, f32::max);
        assert_eq!(m.shape(), &[2, 1, 4]);
        assert_eq!(
            m.as_slice(),
            &[8.0, 9.0, 10.0, 11.0, 20.0, 21.0, 22.0, 23.0]
        );
    }

    #[test]
    #[should_panic(expected = "sum: axis 3 out of range for rank 3 (shape [2, 3, 4])")]
    fn rejects_bad_axis() {
        sum_axes_keepdim(&Tensor::zeros(&[2, 3, 4]), "sum", &[3]);
    }
}
