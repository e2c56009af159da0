//! Pure numeric kernels on slices and ndarray views, with no tape: the hot loops of the crate.
//!
//! This is the low-level layer below [`crate::autograd`], public for benchmarking and for
//! writing new ops; a training program uses the layers in [`crate::nn`] or the ops on
//! [`Var`](crate::Var) (whose argument types are re-exported in [`crate::nn::functional`]).
//!
//! Every matrix product in striate goes through [`gemm::gemm`]; each kernel is benchmarked
//! directly in `benches/` and tested against a naive reference.

pub mod conv;
pub mod fill;
pub mod gemm;
pub mod pool;
pub mod scratch;
pub mod softmax;
pub mod special;
pub(crate) mod vector;

/// `max(x, 0)` exactly as PyTorch computes it: NaN stays NaN and `-0.0` stays `-0.0`
/// (`f32::max(x, 0.0)` would turn NaN into 0 and hide it).
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    if x < 0.0 { 0.0 } else { x }
}

/// Whether ReLU's gradient passes where its output is `y`: where `y > 0`, and also at a NaN
/// output, as PyTorch's `threshold_backward` (which zeroes only where `y <= 0`).
#[inline(always)]
pub fn relu_passes_gradient(y: f32) -> bool {
    y > 0.0 || y.is_nan()
}
