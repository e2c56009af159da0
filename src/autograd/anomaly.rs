//! Anomaly detection: where the first NaN or infinity of a step appeared, as PyTorch's
//! `torch.autograd.detect_anomaly` reports it.
//!
//! With detection on ([`Tape::detect_anomaly`](super::Tape::detect_anomaly)), the tape checks
//! every value it records and every gradient the backward pass computes, and keeps the first
//! non-finite one it meets: which op produced it, in which pass, and the nearest parameter
//! upstream of it (so a caller that knows the parameters' names can name the layer, as
//! [`Fit`](crate::train::Fit) does). Off by default: the check reads every activation once more.

use std::fmt;

use super::param::ParamId;

/// The pass in which a non-finite value appeared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// An op's output (or an input or parameter as it entered the tape).
    Forward,
    /// The gradient an op's backward rule returned for one of its inputs.
    Backward,
}

/// The first non-finite value of a step: where it appeared and what it was.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// Forward output or backward gradient.
    pub pass: Pass,
    /// The op that produced it: `"relu"`, `"Conv2dBackward"`, ..., or `"input"`, `"param"` and
    /// `"variable"` for values that entered the tape from outside.
    pub op: String,
    /// The node's index on the tape (see [`Tape::dump`](super::Tape::dump)).
    pub node: usize,
    /// The nearest parameter the value depends on: the op's own parameter (a convolution's
    /// weight) or, for a parameter-free op, the one of its most recent input. `None` before
    /// any parameter.
    pub param: Option<ParamId>,
    /// The first non-finite element.
    pub value: f32,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pass = match self.pass {
            Pass::Forward => "output",
            Pass::Backward => "gradient from the backward",
        };
        write!(f, "{pass} of op `{}` (tape node {})", self.op, self.node)
    }
}

/// The first non-finite element of `values`, if any.
pub(crate) fn first_non_finite(values: &[f32]) -> Option<f32> {
    // One vectorised pass decides the common case: chunks of 64 Ki values over the thread pool.
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    let finite = |chunk: &[f32]| {
        crate::util::simd::dispatch(
            #[inline(always)]
            || crate::util::simd::all_finite(chunk),
        )
    };
    let all_finite = if values.len() > CHUNK {
        values.par_chunks(CHUNK).all(finite)
    } else {
        finite(values)
    };
    if all_finite {
        return None;
    }
    values.iter().copied().find(|v| !v.is_finite())
}

/// An op's name from its backward rule's `Debug` form: the first word (`relu [2, 3]` → `relu`,
/// `Conv2dBackward { .. }` → `Conv2dBackward`).
pub(crate) fn op_name(rule: &dyn fmt::Debug) -> String {
    format!("{rule:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nan_and_infinities_but_not_large_finite_sums() {
        assert_eq!(first_non_finite(&[1.0, 2.0]), None);
        assert!(first_non_finite(&[1.0, f32::NAN]).unwrap().is_nan());
        assert_eq!(
            first_non_finite(&[f32::NEG_INFINITY, 0.0]),
            Some(f32::NEG_INFINITY)
        );
        // The sum overflows, yet every element is finite.
        assert_eq!(first_non_finite(&[3e38, 3e38]), None);
    }
}
