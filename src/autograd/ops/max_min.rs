//! `max` and `min`: the extreme over all elements or over chosen axes.
//!
//! Where several elements tie for the extreme, the gradient is shared equally between them
//! (PyTorch's `amax`/`amin` rule), so the gradient is the same whatever order ties are met in.
//!
//! NaN propagates as in PyTorch: the extreme of values holding a NaN is NaN. Its gradient then
//! follows PyTorch too: over all elements (`max()`, PyTorch's `torch.max(x)`) it is shared
//! between the NaN elements; over axes (`max_axes`, PyTorch's `amax`) no element equals NaN,
//! so the slice's gradient is NaN.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::tensor::broadcast::broadcast_to;
use crate::tensor::check::{AxisIndex, resolve_axes};
use crate::tensor::reduce::{
    dropped_shape, fold_axes_keepdim, kept_shape, max_propagating_nan, min_propagating_nan,
    sum_axes_keepdim,
};

#[derive(Debug)]
struct ExtremeBackward {
    op: &'static str,
    input: Tensor,
    /// The extreme with reduced axes kept at extent 1.
    extreme: Tensor,
    axes: Vec<usize>,
    /// Over every element (`max()` / `min()`): a NaN extreme sends its gradient to the NaN
    /// elements (PyTorch's `evenly_distribute_backward`).
    whole: bool,
}

impl Backward for ExtremeBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // d max(x) / dx_i = 1[x_i = max] / (number of ties)
        let shape = self.input.shape();
        let extreme = broadcast_to(&self.extreme, shape);
        let nan_extreme = self.whole && self.extreme.as_slice()[0].is_nan();
        let mask = self.input.zip_map(&extreme, |x, m| {
            if x == m || (nan_extreme && x.is_nan()) {
                1.0
            } else {
                0.0
            }
        });
        let ties = sum_axes_keepdim(&mask, self.op, &self.axes);
        let share = grad_output
            .reshape(self.extreme.shape())
            .zip_map(&ties, |g, n| g / n);
        let grad = mask.zip_map(&broadcast_to(&share, shape), |m, s| m * s);
        vec![Some(grad)]
    }
}

/// Which extreme a reduction takes.
#[derive(Clone, Copy)]
enum Extreme {
    Max,
    Min,
}

impl<'t> Var<'t> {
    /// The largest element, as a rank-0 value.
    pub fn max(self) -> Var<'t> {
        self.extreme_of_all(Extreme::Max)
    }

    /// The smallest element, as a rank-0 value.
    pub fn min(self) -> Var<'t> {
        self.extreme_of_all(Extreme::Min)
    }

    /// The largest value over `axes`, which are removed from the shape.
    ///
    /// # Panics
    ///
    /// If an axis is out of range or repeated.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let x = tape.input(Tensor::from_vec(vec![1.0, 5.0, 3.0, 2.0], &[2, 2]).unwrap());
    /// assert_eq!(x.max_axes(&[1]).value().as_slice(), &[5.0, 3.0]);
    /// assert_eq!(x.min_axes_keepdim(&[0]).value().as_slice(), &[1.0, 2.0]);
    /// ```
    pub fn max_axes<A: AxisIndex>(self, axes: &[A]) -> Var<'t> {
        let axes = resolve_axes("max", axes, &self.shape());
        self.extreme(Extreme::Max, &axes, false)
    }

    /// The largest value over `axes`, which are kept with extent 1.
    ///
    /// # Panics
    ///
    /// If an axis is out of range or repeated.
    pub fn max_axes_keepdim<A: AxisIndex>(self, axes: &[A]) -> Var<'t> {
        let axes = resolve_axes("max", axes, &self.shape());
        self.extreme(Extreme::Max, &axes, true)
    }

    /// The smallest value over `axes`, which are removed from the shape.
    ///
    /// # Panics
    ///
    /// If an axis is out of range or repeated.
    pub fn min_axes<A: AxisIndex>(self, axes: &[A]) -> Var<'t> {
        let axes = resolve_axes("min", axes, &self.shape());
        self.extreme(Extreme::Min, &axes, false)
    }

    /// The smallest value over `axes`, which are kept with extent 1.
    ///
    /// # Panics
    ///
    /// If an axis is out of range or repeated.
    pub fn min_axes_keepdim<A: AxisIndex>(self, axes: &[A]) -> Var<'t> {
        let axes = resolve_axes("min", axes, &self.shape());
        self.extreme(Extreme::Min, &axes, true)
    }

    fn extreme_of_all(self, which: Extreme) -> Var<'t> {
        let axes: Vec<usize> = (0..self.ndim()).collect();
        self.extreme_with(which, &axes, false, true)
    }

    fn extreme(self, which: Extreme, axes: &[usize], keepdim: bool) -> Var<'t> {
        self.extreme_with(which, axes, keepdim, false)
    }

    fn extreme_with(self, which: Extreme, axes: &[usize], keepdim: bool, whole: bool) -> Var<'t> {
        let input = self.value();
        let (op, extreme) = match which {
            Extreme::Max => (
                "max",
                fold_axes_keepdim(&input, "max", axes, f32::NEG_INFINITY, max_propagating_nan),
            ),
            Extreme::Min => (
                "min",
                fold_axes_keepdim(&input, "min", axes, f32::INFINITY, min_propagating_nan),
            ),
        };
        let out_shape = if keepdim {
            kept_shape(input.shape(), axes)
        } else {
            dropped_shape(input.shape(), axes)
        };
        let value = extreme.reshape(&out_shape);
        self.tape().record(
            value,
            &[self],
            ExtremeBackward {
                op,
                input,
                extreme,
                axes: axes.to_vec(),
                whole,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{t, tm};
    use crate::{Tape, gradcheck};

    #[test]
    fn values_and_gradients_by_hand() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[1.0, 5.0, 3.0, 2.0, 0.0, 4.0], &[2, 3]));
        assert_eq!(x.max().item(), 5.0);
        assert_eq!(x.min().item(), 0.0);
        assert_eq!(x.max_axes(&[0]).value().as_slice(), &[2.0, 5.0, 4.0]);
        let grads = x.max_axes(&[1]).sum().backward();
        assert_eq!(
            grads.wrt(x).unwrap().as_slice(),
            &[0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        );
    }

    #[test]
    fn ties_share_the_gradient() {
        let tape = Tape::training();
        let x = tape.variable(t(&[2.0, 7.0, 7.0, 1.0]));
        let grads = x.max().backward();
        assert_eq!(grads.wrt(x).unwrap().as_slice(), &[0.0, 0.5, 0.5, 0.0]);
    }

    #[test]
    fn gradcheck_max_min() {
        // Distinct values keep the check away from ties (the kink of max).
        let x = tm(
            &(0..24)
                .map(|i| ((i * 7) % 24) as f32 * 0.1)
                .collect::<Vec<_>>(),
            &[2, 3, 4],
        );
        gradcheck(std::slice::from_ref(&x), |v| v[0].max()).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| v[0].min_axes(&[2])).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| v[0].max_axes_keepdim(&[0, 1])).assert_passed();
    }
}
