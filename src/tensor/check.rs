//! The one place that formats shape-contract panics.
//!
//! Every op that rejects its arguments panics through [`contract_violation`] (usually via the
//! helpers below), so messages share one form: the op, the rule that was broken, then the shapes:
//!
//! ```text
//! matmul: inner dimensions 3 != 4 (lhs [2, 3], rhs [4, 5])
//! ```

use std::fmt::Display;

/// Panics with `"{op}: {rule} ({context})"`, the message form every shape check uses.
///
/// Marked `#[cold]` so the check's happy path stays tight in hot kernels.
#[cold]
#[inline(never)]
#[track_caller]
pub fn contract_violation(op: &str, rule: impl Display, context: impl Display) -> ! {
    panic!("{op}: {rule} ({context})")
}

/// Formats a shape as `[2, 3, 4]`.
pub fn shape_str(shape: &[usize]) -> String {
    format!("{shape:?}")
}

/// Panics unless `shape` has exactly `rank` axes.
#[track_caller]
pub fn expect_rank(op: &str, what: &str, shape: &[usize], rank: usize) {
    if shape.len() != rank {
        contract_violation(
            op,
            format_args!("{what} must have rank {rank}, got rank {}", shape.len()),
            format_args!("{what} {}", shape_str(shape)),
        );
    }
}

/// Panics unless `shape` has one of the ranks in `ranks`.
#[track_caller]
pub fn expect_rank_in(op: &str, what: &str, shape: &[usize], ranks: &[usize]) {
    if !ranks.contains(&shape.len()) {
        contract_violation(
            op,
            format_args!(
                "{what} must have rank in {ranks:?}, got rank {}",
                shape.len()
            ),
            format_args!("{what} {}", shape_str(shape)),
        );
    }
}

/// Panics unless the two shapes are equal.
#[track_caller]
pub fn expect_same_shape(op: &str, lhs_name: &str, lhs: &[usize], rhs_name: &str, rhs: &[usize]) {
    if lhs != rhs {
        contract_violation(
            op,
            format_args!("{lhs_name} and {rhs_name} must have the same shape"),
            format_args!(
                "{lhs_name} {}, {rhs_name} {}",
                shape_str(lhs),
                shape_str(rhs)
            ),
        );
    }
}

/// Panics unless `axis < rank`.
#[track_caller]
pub fn expect_axis(op: &str, axis: usize, shape: &[usize]) {
    if axis >= shape.len() {
        contract_violation(
            op,
            format_args!("axis {axis} out of range for rank {}", shape.len()),
            format_args!("shape {}", shape_str(shape)),
        );
    }
}

/// An axis argument: a `usize` counts from the front, a signed integer (`isize`, `i32`, `i64`)
/// may also count from the back, `-1` being the last axis, as PyTorch's `dim`. Accepted by
/// `Var::{softmax, log_softmax, sum_axes, mean_axes, max_axes, min_axes}` (and their `_keepdim`
/// forms), `Var::{flatten, narrow, split, transpose, concat}` and `Tensor::argmax`, each
/// resolving it through [`resolve_axis`] here; an integer literal such as `1` or `-1` needs no
/// suffix, so calls written with `usize` axes compile unchanged. (`permute` and the `Tensor`
/// reshaping methods still take `usize`.)
///
/// # Examples
///
/// ```
/// use striate::Tensor;
///
/// let x = Tensor::from_vec(vec![1.0, 5.0, 3.0, 2.0], &[2, 2]).unwrap();
/// assert_eq!(x.argmax(-1), x.argmax(1));
/// assert_eq!(x.argmax(1usize), vec![1, 0]);
/// ```
pub trait AxisIndex: Copy + std::fmt::Debug {
    /// The axis as a signed offset: from the front when non-negative, from the back otherwise.
    fn signed(self) -> i64;
}

impl AxisIndex for usize {
    fn signed(self) -> i64 {
        i64::try_from(self).unwrap_or(i64::MAX)
    }
}

impl AxisIndex for isize {
    fn signed(self) -> i64 {
        self as i64
    }
}

impl AxisIndex for i32 {
    fn signed(self) -> i64 {
        self as i64
    }
}

impl AxisIndex for i64 {
    fn signed(self) -> i64 {
        self
    }
}

/// The axis `axis` names in a tensor of shape `shape`: `rank + axis` for a negative one.
///
/// # Panics
///
/// Unless `-rank <= axis < rank`.
#[track_caller]
pub fn resolve_axis(op: &str, axis: impl AxisIndex, shape: &[usize]) -> usize {
    let (signed, rank) = (axis.signed(), shape.len() as i64);
    let resolved = if signed < 0 { signed + rank } else { signed };
    if !(0..rank).contains(&resolved) {
        contract_violation(
            op,
            format_args!("axis {signed} out of range for rank {rank}"),
            format_args!("shape {}", shape_str(shape)),
        );
    }
    resolved as usize
}

/// [`resolve_axis`] for each of `axes`, in order (repeats are left to the op to reject).
#[track_caller]
pub fn resolve_axes<A: AxisIndex>(op: &str, axes: &[A], shape: &[usize]) -> Vec<usize> {
    axes.iter().map(|&a| resolve_axis(op, a, shape)).collect()
}

/// Panics unless `axes` is a permutation of `0..rank`.
#[track_caller]
pub fn expect_permutation(op: &str, axes: &[usize], shape: &[usize]) {
    let mut seen = vec![false; shape.len()];
    let valid = axes.len() == shape.len()
        && axes
            .iter()
            .all(|&a| a < seen.len() && !std::mem::replace(&mut seen[a], true));
    if !valid {
        contract_violation(
            op,
            format_args!("axes {axes:?} are not a permutation of 0..{}", shape.len()),
            format_args!("shape {}", shape_str(shape)),
        );
    }
}

/// Panics unless every axis in `axes` is in range and none repeats.
#[track_caller]
pub fn expect_distinct_axes(op: &str, axes: &[usize], shape: &[usize]) {
    let mut seen = vec![false; shape.len()];
    for &a in axes {
        expect_axis(op, a, shape);
        if std::mem::replace(&mut seen[a], true) {
            contract_violation(
                op,
                format_args!("axis {a} repeated in {axes:?}"),
                format_args!("shape {}", shape_str(shape)),
            );
        }
    }
}

/// The number of elements of `shape`, or `None` if the product overflows `usize`: for shapes
/// read from a file or given by a caller, before anything is allocated from them.
pub fn checked_volume(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |total, &d| total.checked_mul(d))
}

/// The number of elements of `shape`; panics, naming `op`, if the product overflows `usize`.
#[track_caller]
pub fn expect_volume(op: &str, shape: &[usize]) -> usize {
    checked_volume(shape).unwrap_or_else(|| {
        contract_violation(
            op,
            "the shape's element count must fit in usize",
            format_args!("shape {}", shape_str(shape)),
        )
    })
}

/// Panics unless `index < len`: a sample, class or position asked for past the end.
#[track_caller]
pub fn expect_index(op: &str, what: &str, index: usize, len: usize) {
    if index >= len {
        contract_violation(
            op,
            format_args!("{what} must be below {len}"),
            format_args!("{what} {index}, length {len}"),
        );
    }
}

/// Panics unless a buffer holds the `expected` number of values for its shape (a kernel's slice
/// arguments).
#[track_caller]
pub fn expect_len(op: &str, what: &str, len: usize, expected: usize) {
    if len != expected {
        contract_violation(
            op,
            format_args!("{what} holds {len} values, the shape needs {expected}"),
            format_args!("{what} length {len}"),
        );
    }
}

/// Panics unless `value` is finite; for hyperparameters such as a slope or a probability.
#[track_caller]
pub fn expect_finite(op: &str, name: &str, value: f32) {
    if !value.is_finite() {
        contract_violation(
            op,
            format_args!("{name} must be finite"),
            format_args!("{name} = {value}"),
        );
    }
}

/// Panics unless `[batch, classes]` scores (logits, probabilities) come with one class index
/// `< classes` per sample; returns `(batch, classes)`. Shared by the classification losses and
/// metrics.
#[track_caller]
pub(crate) fn check_class_targets(op: &str, shape: &[usize], targets: &[usize]) -> (usize, usize) {
    expect_rank(op, "input", shape, 2);
    let (batch, classes) = (shape[0], shape[1]);
    if targets.len() != batch {
        contract_violation(
            op,
            format_args!("{} targets for a batch of {batch}", targets.len()),
            format_args!("input {}", shape_str(shape)),
        );
    }
    if let Some((sample, &target)) = targets.iter().enumerate().find(|&(_, &t)| t >= classes) {
        contract_violation(
            op,
            format_args!("target {target} out of range for {classes} classes"),
            format_args!("sample {sample}, input {}", shape_str(shape)),
        );
    }
    (batch, classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_axes_count_from_the_back() {
        let shape = [2, 3, 4];
        assert_eq!(resolve_axis("op", -1, &shape), 2);
        assert_eq!(resolve_axis("op", -3isize, &shape), 0);
        assert_eq!(resolve_axis("op", 1usize, &shape), 1);
        assert_eq!(resolve_axes("op", &[-1i64, 0], &shape), vec![2, 0]);
    }

    #[test]
    #[should_panic(expected = "op: axis -4 out of range for rank 3 (shape [2, 3, 4])")]
    fn rejects_an_axis_before_the_first() {
        resolve_axis("op", -4, &[2, 3, 4]);
    }

    #[test]
    #[should_panic(expected = "matmul: inner dimensions 3 != 4 (lhs [2, 3], rhs [4, 5])")]
    fn message_form() {
        contract_violation(
            "matmul",
            "inner dimensions 3 != 4",
            format_args!("lhs {}, rhs {}", shape_str(&[2, 3]), shape_str(&[4, 5])),
        );
    }

    #[test]
    #[should_panic(expected = "permute: axes [0, 0] are not a permutation of 0..2")]
    fn permutation_rejects_repeats() {
        expect_permutation("permute", &[0, 0], &[2, 3]);
    }

    #[test]
    fn permutation_accepts_valid() {
        expect_permutation("permute", &[2, 0, 1], &[2, 3, 4]);
    }
}
