//! Pure numeric kernels on slices and ndarray views, with no tape: the hot loops of the crate.
//!
//! Every matrix product in striate goes through [`gemm::gemm`]; each kernel is benchmarked
//! directly in `benches/` and tested against a naive reference.

pub mod conv;
pub mod gemm;
pub mod pool;
pub mod scratch;
pub mod softmax;
