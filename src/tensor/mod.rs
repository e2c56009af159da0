//! `Tensor`: an f32, dynamic-rank, row-major array on `ndarray`, cheap to clone.
//!
//! A `Tensor` shares its buffer on clone (an [`ndarray::ArcArray`]); writing through
//! [`Tensor::as_slice_mut`] copies first if the buffer is shared (copy-on-write). Every tensor is
//! kept in standard (row-major, contiguous) layout, so kernels can take `as_slice()` without
//! checking strides; operations that would produce another layout (permute, narrow) copy.

mod argmax;
pub mod broadcast;
pub mod check;
pub mod init;
pub mod reduce;

use std::fmt;

use ndarray::{ArcArray, ArrayD, ArrayViewD, Axis, IxDyn};
use rand::{Rng, RngExt};
use rand_distr::{Distribution, Normal};

use crate::error::{Error, Result};
use crate::util::simd::{dispatch, par_chunks_dispatch, par_fill_new};
use check::{contract_violation, shape_str};

/// Elementwise maps switch to rayon from this many elements; below it the fork-join costs more
/// than it saves.
pub(crate) const PARALLEL_ELEMENTWISE_THRESHOLD: usize = 1 << 16;

/// An f32 tensor of any rank, stored row-major on `ndarray`.
///
/// Cloning is O(1): clones share the buffer until one of them is written.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
///
/// let t = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
/// assert_eq!(t.shape(), &[2, 3]);
/// let r = t.reshape(&[3, 2]);
/// assert_eq!(r.as_slice(), t.as_slice());
/// assert_eq!(t.transpose(0, 1).as_slice(), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// ```
#[derive(Clone, PartialEq)]
pub struct Tensor {
    data: ArcArray<f32, IxDyn>,
}

impl Tensor {
    // ---------------------------------------------------------------- construction

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// A tensor with every element equal to `value`.
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        let len = check::expect_volume("full", shape);
        let data = crate::util::memory::vec_filled(len, value);
        Tensor::from_vec(data, shape).expect("length matches shape")
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::full(&[], value)
    }

    /// Builds a tensor from row-major data.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidData`] if `data.len()` is not the product of `shape`.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::Tensor;
    ///
    /// assert!(Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).is_ok());
    /// let err = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[2, 2]).unwrap_err();
    /// assert_eq!(err.to_string(), "from_vec: expected 4 elements for shape [2, 2], found 3 elements");
    /// ```
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let Some(expected) = check::checked_volume(shape) else {
            return Err(Error::invalid_data(
                "from_vec",
                "a shape whose element count fits in usize",
                format!("shape {}", shape_str(shape)),
            ));
        };
        if data.len() != expected {
            return Err(Error::invalid_data(
                "from_vec",
                format!("{expected} elements for shape {}", shape_str(shape)),
                format!("{} elements", data.len()),
            ));
        }
        let array = ArrayD::from_shape_vec(IxDyn(shape), data).expect("length checked above");
        Ok(Tensor {
            data: array.into_shared(),
        })
    }

    /// Wraps an ndarray array of any dimension, copying only if it is not in standard layout.
    pub fn from_array<D: ndarray::Dimension>(array: ndarray::Array<f32, D>) -> Tensor {
        let array = array.into_dyn();
        let array = if array.is_standard_layout() {
            array
        } else {
            array.as_standard_layout().into_owned()
        };
        Tensor {
            data: array.into_shared(),
        }
    }

    /// Copies an ndarray view of any layout into a new tensor.
    pub fn from_view(view: ArrayViewD<'_, f32>) -> Tensor {
        Tensor::from_array(view.as_standard_layout().into_owned())
    }

    /// Values drawn uniformly from `[low, high)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use rand::{SeedableRng, rngs::StdRng};
    /// use striate::Tensor;
    ///
    /// let mut rng = StdRng::seed_from_u64(0);
    /// let t = Tensor::rand_uniform(&[100], -1.0, 1.0, &mut rng);
    /// assert!(t.as_slice().iter().all(|&x| (-1.0..1.0).contains(&x)));
    /// ```
    pub fn rand_uniform<R: Rng + ?Sized>(
        shape: &[usize],
        low: f32,
        high: f32,
        rng: &mut R,
    ) -> Tensor {
        if low.is_nan() || high.is_nan() || low >= high {
            contract_violation(
                "rand_uniform",
                "low must be below high",
                format_args!("low {low}, high {high}"),
            );
        }
        let len = check::expect_volume("rand_uniform", shape);
        let mut data = crate::util::memory::vec_for(len);
        data.extend((0..len).map(|_| low + (high - low) * rng.random::<f32>()));
        Tensor::from_vec(data, shape).expect("length matches shape")
    }

    /// Values drawn from a normal distribution with the given mean and standard deviation.
    pub fn rand_normal<R: Rng + ?Sized>(
        shape: &[usize],
        mean: f32,
        std: f32,
        rng: &mut R,
    ) -> Tensor {
        let normal = match Normal::new(mean, std) {
            Ok(normal) => normal,
            Err(_) => contract_violation(
                "rand_normal",
                "std must be finite and non-negative",
                format_args!("mean {mean}, std {std}"),
            ),
        };
        let len = check::expect_volume("rand_normal", shape);
        let mut data = crate::util::memory::vec_for(len);
        data.extend((0..len).map(|_| normal.sample(rng)));
        Tensor::from_vec(data, shape).expect("length matches shape")
    }

    /// The 1-D tensor `start, start + step, ...` up to but excluding `end`.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::Tensor;
    ///
    /// assert_eq!(Tensor::arange(0.0, 2.0, 0.5).as_slice(), &[0.0, 0.5, 1.0, 1.5]);
    /// ```
    pub fn arange(start: f32, end: f32, step: f32) -> Tensor {
        if step == 0.0 || !step.is_finite() {
            contract_violation(
                "arange",
                "step must be finite and non-zero",
                format_args!("step {step}"),
            );
        }
        let count = ((end - start) / step).ceil().max(0.0) as usize;
        let data: Vec<f32> = (0..count).map(|i| start + step * i as f32).collect();
        let len = data.len();
        Tensor::from_vec(data, &[len]).expect("length matches shape")
    }

    // ---------------------------------------------------------------- inspection

    /// The extent of each axis.
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// The number of axes.
    pub fn ndim(&self) -> usize {
        self.data.ndim()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements in row-major order.
    pub fn as_slice(&self) -> &[f32] {
        self.data
            .as_slice()
            .expect("Tensor invariant: standard layout")
    }

    /// The elements in row-major order, mutably; copies the buffer first if it is shared.
    pub fn as_slice_mut(&mut self) -> &mut [f32] {
        self.data
            .as_slice_mut()
            .expect("Tensor invariant: standard layout")
    }

    /// A read-only ndarray view.
    pub fn view(&self) -> ArrayViewD<'_, f32> {
        self.data.view()
    }

    /// A mutable ndarray view; copies the buffer first if it is shared.
    pub fn view_mut(&mut self) -> ndarray::ArrayViewMutD<'_, f32> {
        self.data.view_mut()
    }

    /// Converts into an owned ndarray array, copying only if the buffer is shared.
    pub fn into_array(self) -> ArrayD<f32> {
        self.data.into_owned()
    }

    /// The elements as a new `Vec`, row-major.
    pub fn to_vec(&self) -> Vec<f32> {
        self.as_slice().to_vec()
    }

    /// The single value of a one-element tensor.
    ///
    /// # Panics
    ///
    /// If the tensor does not have exactly one element.
    pub fn item(&self) -> f32 {
        if self.len() != 1 {
            contract_violation(
                "item",
                format_args!("tensor must have exactly one element, has {}", self.len()),
                format_args!("shape {}", shape_str(self.shape())),
            );
        }
        self.as_slice()[0]
    }

    /// Whether both tensors share one buffer (a clone not yet written to).
    pub fn shares_buffer_with(&self, other: &Tensor) -> bool {
        std::ptr::eq(self.data.as_ptr(), other.data.as_ptr())
    }

    // ---------------------------------------------------------------- shape manipulation

    /// The same elements in a new shape, read and written in row-major order.
    ///
    /// O(1): the buffer is shared.
    ///
    /// # Panics
    ///
    /// If the new shape holds a different number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        let new_len = check::expect_volume("reshape", shape);
        if new_len != self.len() {
            contract_violation(
                "reshape",
                format_args!("cannot reshape {} elements into {new_len}", self.len()),
                format_args!("from {} to {}", shape_str(self.shape()), shape_str(shape)),
            );
        }
        Tensor {
            data: self
                .data
                .clone()
                .into_shape_with_order(IxDyn(shape))
                .expect("standard layout reshapes in row-major order"),
        }
    }

    /// Reorders the axes: axis `i` of the result is axis `axes[i]` of `self`. Copies.
    ///
    /// # Panics
    ///
    /// If `axes` is not a permutation of `0..ndim`.
    pub fn permute(&self, axes: &[usize]) -> Tensor {
        check::expect_permutation("permute", axes, self.shape());
        if axes.iter().enumerate().all(|(i, &a)| i == a) {
            return self.clone();
        }
        Tensor::from_view(self.data.view().permuted_axes(IxDyn(axes)))
    }

    /// Swaps two axes. Copies.
    ///
    /// # Panics
    ///
    /// If either axis is out of range.
    pub fn transpose(&self, axis_a: usize, axis_b: usize) -> Tensor {
        check::expect_axis("transpose", axis_a, self.shape());
        check::expect_axis("transpose", axis_b, self.shape());
        let mut axes: Vec<usize> = (0..self.ndim()).collect();
        axes.swap(axis_a, axis_b);
        self.permute(&axes)
    }

    /// `len` consecutive entries along `axis`, starting at `start`. Copies.
    ///
    /// # Panics
    ///
    /// If the axis is out of range or `start + len` exceeds its extent.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Tensor {
        check::expect_axis("narrow", axis, self.shape());
        if start + len > self.shape()[axis] {
            contract_violation(
                "narrow",
                format_args!(
                    "range {start}..{} exceeds extent {} of axis {axis}",
                    start + len,
                    self.shape()[axis]
                ),
                format_args!("shape {}", shape_str(self.shape())),
            );
        }
        let view = self
            .data
            .slice_axis(Axis(axis), ndarray::Slice::from(start..start + len));
        Tensor::from_view(view)
    }

    /// The sub-tensor at `index` along `axis`, with that axis removed. Copies.
    ///
    /// # Panics
    ///
    /// If the axis or index is out of range.
    pub fn select(&self, axis: usize, index: usize) -> Tensor {
        check::expect_axis("select", axis, self.shape());
        if index >= self.shape()[axis] {
            contract_violation(
                "select",
                format_args!(
                    "index {index} out of range for axis {axis} of extent {}",
                    self.shape()[axis]
                ),
                format_args!("shape {}", shape_str(self.shape())),
            );
        }
        Tensor::from_view(self.data.index_axis(Axis(axis), index))
    }

    /// Joins tensors along an existing axis.
    ///
    /// # Panics
    ///
    /// If `tensors` is empty, ranks differ, or extents differ on any other axis.
    pub fn concat(tensors: &[&Tensor], axis: usize) -> Tensor {
        let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape()).collect();
        let out_shape = concat_shape("concat", &shapes, axis);
        let views: Vec<ArrayViewD<'_, f32>> = tensors.iter().map(|t| t.view()).collect();
        let joined = ndarray::concatenate(Axis(axis), &views).expect("shapes checked above");
        debug_assert_eq!(joined.shape(), out_shape.as_slice());
        Tensor::from_array(joined)
    }

    // ---------------------------------------------------------------- elementwise and reductions

    /// Applies `f` to every element, in parallel for large tensors.
    pub fn map(&self, f: impl Fn(f32) -> f32 + Sync + Send) -> Tensor {
        let input = self.as_slice();
        // SAFETY: each chunk `out` is zipped with an input slice of its own length, so every
        // slot is written.
        let out = unsafe {
            par_fill_new(
                input.len(),
                PARALLEL_ELEMENTWISE_THRESHOLD / 4,
                |start, out| {
                    let input = &input[start..start + out.len()];
                    dispatch(
                        #[inline(always)]
                        || {
                            for (o, &x) in out.iter_mut().zip(input) {
                                o.write(f(x));
                            }
                        },
                    )
                },
            )
        };
        Tensor::from_vec(out, self.shape()).expect("same length")
    }

    /// Combines two tensors of the same shape elementwise, in parallel for large tensors.
    ///
    /// # Panics
    ///
    /// If the shapes differ (use [`broadcast::broadcast_zip`] for broadcasting).
    pub fn zip_map(&self, other: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Tensor {
        check::expect_same_shape("zip_map", "lhs", self.shape(), "rhs", other.shape());
        let (a, b) = (self.as_slice(), other.as_slice());
        // SAFETY: each chunk `out` is zipped with slices of `a` and `b` of its own length (the
        // shapes are equal), so every slot is written.
        let out = unsafe {
            par_fill_new(a.len(), PARALLEL_ELEMENTWISE_THRESHOLD / 4, |start, out| {
                let (a, b) = (&a[start..start + out.len()], &b[start..start + out.len()]);
                dispatch(
                    #[inline(always)]
                    || {
                        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                            o.write(f(x, y));
                        }
                    },
                )
            })
        };
        Tensor::from_vec(out, self.shape()).expect("same length")
    }

    /// Adds `other` into `self` elementwise (same shape), copying first if the buffer is shared.
    ///
    /// # Panics
    ///
    /// If the shapes differ.
    pub fn add_assign(&mut self, other: &Tensor) {
        check::expect_same_shape("add_assign", "lhs", self.shape(), "rhs", other.shape());
        let other = other.as_slice();
        par_chunks_dispatch(self.as_slice_mut(), |start, chunk| {
            for (a, &b) in chunk.iter_mut().zip(&other[start..]) {
                *a += b;
            }
        });
    }

    /// The sum of all elements (accumulated in f64).
    pub fn sum(&self) -> f32 {
        self.as_slice().iter().map(|&x| x as f64).sum::<f64>() as f32
    }

    /// The mean of all elements; NaN for an empty tensor.
    pub fn mean(&self) -> f32 {
        (self.as_slice().iter().map(|&x| x as f64).sum::<f64>() / self.len() as f64) as f32
    }

    /// Whether every element is within `atol + rtol * |other|` of `other` (same shape).
    pub fn all_close(&self, other: &Tensor, rtol: f32, atol: f32) -> bool {
        self.shape() == other.shape()
            && self
                .as_slice()
                .iter()
                .zip(other.as_slice())
                .all(|(&a, &b)| (a - b).abs() <= atol + rtol * b.abs())
    }
}

/// The shape of `concat` along `axis`, with the contract check shared by the tensor method and
/// the autograd op.
pub(crate) fn concat_shape(op: &str, shapes: &[&[usize]], axis: usize) -> Vec<usize> {
    let Some(first) = shapes.first() else {
        contract_violation(op, "needs at least one tensor", "no inputs");
    };
    check::expect_axis(op, axis, first);
    let mut out = first.to_vec();
    out[axis] = 0;
    for (i, shape) in shapes.iter().enumerate() {
        let compatible = shape.len() == first.len()
            && shape
                .iter()
                .zip(first.iter())
                .enumerate()
                .all(|(a, (x, y))| a == axis || x == y);
        if !compatible {
            contract_violation(
                op,
                format_args!("input {i} does not match input 0 outside axis {axis}"),
                format_args!(
                    "input 0 {}, input {i} {}",
                    shape_str(first),
                    shape_str(shape)
                ),
            );
        }
        out[axis] += shape[axis];
    }
    out
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{} {:?}", shape_str(self.shape()), self.data)
    }
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.data, f)
    }
}

impl<D: ndarray::Dimension> From<ndarray::Array<f32, D>> for Tensor {
    fn from(array: ndarray::Array<f32, D>) -> Tensor {
        Tensor::from_array(array)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn constructors_have_requested_shapes_and_values() {
        assert_eq!(Tensor::zeros(&[2, 3]).as_slice(), &[0.0; 6]);
        assert_eq!(Tensor::ones(&[4]).sum(), 4.0);
        assert_eq!(Tensor::full(&[2], 7.5).as_slice(), &[7.5, 7.5]);
        assert_eq!(Tensor::scalar(3.0).shape(), &[] as &[usize]);
        assert_eq!(Tensor::scalar(3.0).item(), 3.0);
        assert_eq!(
            Tensor::arange(0.0, 5.0, 1.0).as_slice(),
            &[0.0, 1.0, 2.0, 3.0, 4.0]
        );
        assert_eq!(Tensor::arange(5.0, 0.0, -2.0).as_slice(), &[5.0, 3.0, 1.0]);
    }

    #[test]
    fn random_constructors_are_seeded_and_in_distribution() {
        let a = Tensor::rand_normal(&[10_000], 2.0, 0.5, &mut StdRng::seed_from_u64(1));
        let b = Tensor::rand_normal(&[10_000], 2.0, 0.5, &mut StdRng::seed_from_u64(1));
        assert_eq!(a, b);
        assert!((a.mean() - 2.0).abs() < 0.02);
        let var = a.map(|x| (x - 2.0) * (x - 2.0)).mean();
        assert!((var.sqrt() - 0.5).abs() < 0.02);
        let u = Tensor::rand_uniform(&[10_000], -3.0, 1.0, &mut StdRng::seed_from_u64(2));
        assert!((u.mean() + 1.0).abs() < 0.05);
    }

    #[test]
    fn from_vec_rejects_wrong_length() {
        let err = Tensor::from_vec(vec![0.0; 5], &[2, 3]).unwrap_err();
        assert!(matches!(err, Error::InvalidData { .. }));
    }

    #[test]
    fn reshape_is_row_major_and_shares_the_buffer() {
        let t = Tensor::arange(0.0, 6.0, 1.0).reshape(&[2, 3]);
        let r = t.reshape(&[3, 2]);
        assert!(r.shares_buffer_with(&t));
        assert_eq!(r.view()[[1, 0]], 2.0);
    }

    #[test]
    #[should_panic(expected = "reshape: cannot reshape 6 elements into 8 (from [2, 3] to [2, 4])")]
    fn reshape_rejects_wrong_size() {
        Tensor::zeros(&[2, 3]).reshape(&[2, 4]);
    }

    #[test]
    fn permute_moves_axes() {
        let t = Tensor::arange(0.0, 24.0, 1.0).reshape(&[2, 3, 4]);
        let p = t.permute(&[2, 0, 1]);
        assert_eq!(p.shape(), &[4, 2, 3]);
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    assert_eq!(p.view()[[k, i, j]], t.view()[[i, j, k]]);
                }
            }
        }
        assert_eq!(p.permute(&[1, 2, 0]), t);
    }

    #[test]
    fn narrow_select_and_concat() {
        let t = Tensor::arange(0.0, 12.0, 1.0).reshape(&[3, 4]);
        let n = t.narrow(1, 1, 2);
        assert_eq!(n.as_slice(), &[1.0, 2.0, 5.0, 6.0, 9.0, 10.0]);
        assert_eq!(t.select(0, 2).as_slice(), &[8.0, 9.0, 10.0, 11.0]);
        let left = t.narrow(1, 0, 1);
        let right = t.narrow(1, 1, 3);
        assert_eq!(Tensor::concat(&[&left, &right], 1), t);
    }

    #[test]
    #[should_panic(
        expected = "concat: input 1 does not match input 0 outside axis 0 (input 0 [2, 3], input 1 [2, 4])"
    )]
    fn concat_rejects_mismatch() {
        Tensor::concat(&[&Tensor::zeros(&[2, 3]), &Tensor::zeros(&[2, 4])], 0);
    }

    #[test]
    fn copy_on_write() {
        let a = Tensor::ones(&[3]);
        let mut b = a.clone();
        assert!(b.shares_buffer_with(&a));
        b.as_slice_mut()[0] = 5.0;
        assert_eq!(a.as_slice(), &[1.0, 1.0, 1.0]);
        assert_eq!(b.as_slice(), &[5.0, 1.0, 1.0]);
    }

    #[test]
    fn large_maps_match_small_maps() {
        let n = PARALLEL_ELEMENTWISE_THRESHOLD * 3 + 7;
        let t = Tensor::arange(0.0, n as f32, 1.0);
        let m = t.map(|x| x * 2.0);
        assert!(
            m.as_slice()
                .iter()
                .enumerate()
                .all(|(i, &x)| x == 2.0 * i as f32)
        );
        let z = t.zip_map(&m, |a, b| b - a);
        assert_eq!(z, t);
    }
}
