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

/// The instruction set striate's kernels run with on this CPU: `"avx512"`, `"avx2"` or
/// `"baseline"`, the widest the CPU has, capped by the environment variable `STRIATE_ISA`
/// (read once). For logs, and for benchmarks that must measure the same ceiling the kernels
/// are held to.
///
/// ```
/// let isa = striate::kernels::instruction_set();
/// assert!(["avx512", "avx2", "baseline"].contains(&isa));
/// ```
pub fn instruction_set() -> &'static str {
    crate::util::simd::level().name()
}

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
