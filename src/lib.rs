//! # striate
//!
//! A from-scratch deep-learning crate for convolutional networks on the CPU: an f32 tensor on
//! `ndarray`, a reverse-mode autograd tape, layers, optimizers, metrics and augmentation.
//!
//! Named after the striate cortex (V1), where receptive fields — the idea behind convolution —
//! were found.
//!
//! ```
//! use striate::{gradcheck, Tape, Tensor};
//!
//! // Differentiate y = Σ tanh(x)·x and check the gradient against finite differences.
//! let x = Tensor::from_vec(vec![0.5, -1.0, 2.0], &[3]).unwrap();
//! let tape = Tape::training();
//! let v = tape.variable(x.clone());
//! let grads = (v.tanh() * v).sum().backward();
//! assert_eq!(grads.wrt(v).unwrap().shape(), &[3]);
//! gradcheck(&[x], |v| (v[0].tanh() * v[0]).sum()).assert_passed();
//! ```
//!
//! | striate | PyTorch |
//! |---|---|
//! | [`Tensor`] | `torch.Tensor` (data only) |
//! | [`Tape::training`] / [`Tape::inference`] | autograd recording / `torch.no_grad()` + `eval()` |
//! | [`Var`] | a tensor with `requires_grad` inside a step |
//! | [`Param`] | `nn.Parameter` |
//! | `loss.backward()` → [`Gradients`] | `loss.backward()` → `.grad` fields |

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod atomic_file;
pub mod autograd;
pub mod data;
pub mod error;
pub mod explain;
pub mod io;
pub mod kernels;
mod memory;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod onnx;
pub mod optim;
pub mod simd;
pub mod tensor;
pub mod train;
pub mod transforms;

pub use autograd::{Backward, Gradients, Mode, Param, ParamId, Tape, Var, gradcheck};
pub use error::{Error, Result};
pub use tensor::Tensor;

/// Sets the number of threads striate's kernels use (rayon's global pool).
///
/// Call it once, before any other work. Without it, the pool takes `RAYON_NUM_THREADS` from
/// the environment, or else one thread per core.
///
/// # Errors
///
/// [`Error::Config`] if the pool was already started (by an earlier call or by any parallel
/// work).
///
/// # Examples
///
/// ```
/// // Another test in this process may have started the pool already; then this is an error.
/// let _ = striate::set_num_threads(2);
/// assert!(striate::num_threads() >= 1);
/// ```
pub fn set_num_threads(threads: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| Error::Config(format!("set_num_threads({threads}): {e}")))
}

/// The number of threads striate's kernels use.
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// The README's examples, compiled and run as doc tests so they cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// `docs/convert_torchvision.md`'s Rust example, compiled as a doc test so it cannot rot.
#[doc = include_str!("../docs/convert_torchvision.md")]
#[cfg(doctest)]
pub struct ConvertTorchvisionDoctests;
