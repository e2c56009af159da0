//! Pure numeric kernels on slices and ndarray views, with no tape: the hot loops of the crate.
//!
//! This is the low-level layer below [`crate::autograd`], public for benchmarking and for
//! writing new ops; a training program uses the layers in [`crate::nn`] or the ops on
//! [`Var`](crate::Var) (whose argument types are re-exported in [`crate::nn::functional`]).
//!
//! Every matrix product in striate goes through [`gemm::gemm`]; each kernel is benchmarked
//! directly in `benches/` and tested against a naive reference.

pub mod blocks;
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

/// The environment variable that, set to `1`, prints each choice the kernels make for this CPU
/// to standard error, once per distinct choice: the GEMM's micro-kernels and cache blocking,
/// and for each convolution shape the kernel family of each pass and its register tiles.
///
/// ```
/// // STRIATE_LOG_KERNELS=1 cargo run --release --example mnist prints lines such as
/// // "striate: conv2d [64, 32, 14, 14] * [64, 32, 3, 3] ...: forward Winograd F(2x2, 3x3) ..."
/// assert_eq!(striate::kernels::LOG_VARIABLE, "STRIATE_LOG_KERNELS");
/// ```
pub const LOG_VARIABLE: &str = "STRIATE_LOG_KERNELS";

/// Prints `message` to standard error once per distinct message when [`LOG_VARIABLE`] is `1`
/// (the message is only built then).
pub(crate) fn log_choice(message: impl FnOnce() -> String) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static ENABLED: OnceLock<bool> = OnceLock::new();
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    if !*ENABLED.get_or_init(|| std::env::var(LOG_VARIABLE).is_ok_and(|v| v.trim() == "1")) {
        return;
    }
    let message = message();
    // A poisoned set (a panic while printing) still holds the messages seen.
    let mut seen = SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if seen
        .get_or_insert_with(HashSet::new)
        .insert(message.clone())
    {
        eprintln!("striate: {message}");
    }
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

/// `grad` where ReLU's output `output` passes it ([`relu_passes_gradient`]), 0 elsewhere
/// whatever `grad` is there (PyTorch selects), in place.
pub(crate) fn mask_relu_gradient(mut grad: crate::Tensor, output: &[f32]) -> crate::Tensor {
    crate::util::simd::par_chunks_dispatch(grad.as_slice_mut(), |start, g| {
        for (g, &y) in g.iter_mut().zip(&output[start..]) {
            *g = if relu_passes_gradient(y) { *g } else { 0.0 };
        }
    });
    grad
}
