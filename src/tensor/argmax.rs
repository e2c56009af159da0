//! `argmax` along an axis: the one NaN-aware argmax loop of the crate (predicted classes,
//! confusion matrices, the fit loop's accuracy all call it).

use super::Tensor;
use super::check::{AxisIndex, contract_violation, resolve_axis, shape_str};

/// Whether `candidate` displaces `best` in an argmax scan: larger, or the first NaN (NaN counts
/// as the largest value; ties and later NaNs keep the earlier index), as `torch.argmax`.
#[inline(always)]
fn displaces(candidate: f32, best: f32) -> bool {
    candidate > best || (candidate.is_nan() && !best.is_nan())
}

impl Tensor {
    /// The index of the largest element along `axis`, for every position of the other axes in
    /// row-major order (so the result has the shape with `axis` removed, flattened), as
    /// `torch.argmax(x, dim=axis)`: ties go to the first index, NaN counts as the largest
    /// value (the first NaN wins).
    ///
    /// # Panics
    ///
    /// If `axis` is out of range or the axis is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::Tensor;
    ///
    /// let x = Tensor::from_vec(vec![1.0, 7.0, 7.0, f32::NAN, 0.0, 2.0], &[2, 3]).unwrap();
    /// assert_eq!(x.argmax(1), vec![1, 0]);
    /// assert_eq!(x.argmax(0), vec![1, 0, 0]);
    /// ```
    pub fn argmax(&self, axis: impl AxisIndex) -> Vec<usize> {
        let shape = self.shape();
        let axis = resolve_axis("argmax", axis, shape);
        let len = shape[axis];
        if len == 0 {
            contract_violation(
                "argmax",
                "needs a non-empty axis",
                format_args!("axis {axis} of shape {}", shape_str(shape)),
            );
        }
        let inner: usize = shape[axis + 1..].iter().product();
        let outer: usize = shape[..axis].iter().product();
        let mut indices = vec![0; outer * inner];
        if inner == 0 {
            return indices;
        }
        // One pass over each outer block, row by row along `axis`, keeping the running best of
        // every inner position: contiguous reads whatever the axis.
        let mut best = vec![0.0; inner];
        for (block, out) in self
            .as_slice()
            .chunks(len * inner)
            .zip(indices.chunks_mut(inner))
        {
            best.copy_from_slice(&block[..inner]);
            for (k, row) in block.chunks(inner).enumerate().skip(1) {
                for ((best, index), &x) in best.iter_mut().zip(out.iter_mut()).zip(row) {
                    if displaces(x, *best) {
                        *best = x;
                        *index = k;
                    }
                }
            }
        }
        indices
    }

    /// The index of the largest element along the last axis, for every other position:
    /// [`Tensor::argmax`] of the last axis. For logits `[batch, classes]` this is the predicted
    /// class of each sample. Ties go to the first index, NaN counts as largest.
    ///
    /// # Panics
    ///
    /// If the tensor is rank 0 or its last axis is empty.
    pub fn argmax_last_axis(&self) -> Vec<usize> {
        if self.shape().is_empty() {
            contract_violation(
                "argmax_last_axis",
                "needs a non-empty last axis",
                format_args!("shape {}", shape_str(self.shape())),
            );
        }
        self.argmax(self.shape().len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

    /// The argmax by the definition, one position at a time.
    fn naive(x: &Tensor, axis: usize) -> Vec<usize> {
        let view = x.view();
        let lanes = view.lanes(ndarray::Axis(axis));
        lanes
            .into_iter()
            .map(|lane| {
                let mut best = 0;
                for (i, &v) in lane.iter().enumerate() {
                    let top = lane[best];
                    if v > top || (v.is_nan() && !top.is_nan()) {
                        best = i;
                    }
                }
                best
            })
            .collect()
    }

    #[test]
    fn every_axis_matches_the_definition() {
        let values: Vec<f32> = (0..120)
            .map(|i| match i % 17 {
                3 => f32::NAN,
                5 => f32::INFINITY,
                7 => f32::NEG_INFINITY,
                _ => ((i * 7) % 5) as f32,
            })
            .collect();
        let x = Tensor::from_vec(values, &[2, 3, 4, 5]).unwrap();
        for axis in 0..4 {
            assert_eq!(x.argmax(axis), naive(&x, axis), "axis {axis}");
        }
    }

    #[test]
    fn ties_go_first_and_the_first_nan_wins() {
        let t = Tensor::from_vec(vec![1.0, 3.0, 3.0, 0.0, -1.0, -2.0], &[2, 3]).unwrap();
        assert_eq!(t.argmax_last_axis(), vec![1, 0]);
        let nan = Tensor::from_vec(vec![1.0, f32::NAN, 5.0, f32::NAN], &[4]).unwrap();
        assert_eq!(nan.argmax(0), vec![1]);
    }

    #[test]
    #[should_panic(expected = "argmax: needs a non-empty axis (axis 1 of shape [2, 0])")]
    fn rejects_an_empty_axis() {
        Tensor::zeros(&[2, 0]).argmax(1);
    }
}
