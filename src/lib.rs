//! # striate
//!
//! Convolutional networks on the CPU, from scratch in Rust: an f32 tensor on `ndarray`, a
//! reverse-mode autograd tape, layers, optimizers, a Keras-style [`Fit`](train::Fit) loop,
//! metrics exact to scikit-learn, augmentation checked against torchvision, and a model zoo
//! whose weights load from PyTorch.
//!
//! Named after the striate cortex (V1), where receptive fields — the idea behind convolution —
//! were found.
//!
//! ## Training a CNN
//!
//! The README's program, on a tiny synthetic dataset so that it runs here as a test; for
//! MNIST, replace the dataset with `Mnist::load(Split::Train)?` (see [`data::Mnist`]).
//! One `use` line brings everything (see [`prelude`]):
//!
//! ```
//! use striate::prelude::*;
//!
//! // 64 images of 28x28: class 0 is dark, class 1 bright (with a little texture).
//! let pixels: Vec<u8> = (0..64u8)
//!     .flat_map(|i| (0..28 * 28).map(move |p| if i % 2 == 0 { 20 } else { 220 } + (p % 7) as u8))
//!     .collect();
//! let labels: Vec<usize> = (0..64).map(|i| i % 2).collect();
//! let data = ImageDataset::from_u8(pixels, [1, 28, 28], labels)?;
//! let train = DataLoader::new(data.clone(), 16).shuffle(0).normalize(&[0.5], &[0.5]);
//! let test = DataLoader::new(data, 32).normalize(&[0.5], &[0.5]);
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let mut model = Sequential::new()
//!     .push(Conv2dConfig::new(1, 8, 3).padding(1).init(&mut rng))
//!     .push(Relu)
//!     .push(MaxPool2d::new(2))
//!     .push(Flatten::new())
//!     .push(Dense::new(8 * 14 * 14, 2, &mut rng));
//! let mut sgd = Sgd::new(SgdConfig { learning_rate: 0.05, momentum: Some(Momentum::classic(0.9)), ..Default::default() });
//!
//! let history = Fit::new(&mut model, &mut sgd).epochs(2).progress(Progress::Silent).run(&train)?;
//! println!("{history}");
//! let evaluation = evaluate(&model, &test)?;
//! assert!(evaluation.accuracy > 0.9);
//! println!("{}", confusion_matrix(&model, &test, 2)?.classification_report());
//!
//! // Save, reload into a fresh model of the same architecture, predict one image.
//! let path = std::env::temp_dir().join(format!("striate-front-page-{}.safetensors", std::process::id()));
//! save_weights(&model, &path)?;
//! let mut reloaded = Sequential::new()
//!     .push(Conv2dConfig::new(1, 8, 3).padding(1).init(&mut rng))
//!     .push(Relu)
//!     .push(MaxPool2d::new(2))
//!     .push(Flatten::new())
//!     .push(Dense::new(8 * 14 * 14, 2, &mut rng));
//! load_weights(&mut reloaded, &path)?;
//! let bright = Tensor::full(&[1, 1, 28, 28], (220.0 / 255.0 - 0.5) / 0.5);
//! assert_eq!(reloaded.predict(&bright).argmax_last_axis(), [1]);
//! # std::fs::remove_file(&path)?;
//! # Ok::<(), striate::Error>(())
//! ```
//!
//! ## Autograd
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
//! | [`nn::Module`], [`nn::Sequential`] | `nn.Module`, `nn.Sequential` |
//! | [`train::Fit`] | Keras' `model.fit` |
//!
//! ## Layers of the crate
//!
//! Users start from [`prelude`], [`nn`], [`optim`], [`data`], [`train`], [`models`], [`io`],
//! [`metrics`] and [`transforms`]. [`kernels`] is the low-level layer below the tape (the
//! numeric kernels on slices, public for benchmarking and for writing ops); most programs never
//! touch it.

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod autograd;
pub mod data;
#[cfg(feature = "mpi")]
pub mod distributed;
pub mod error;
pub mod explain;
pub mod io;
pub mod kernels;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod onnx;
pub mod optim;
pub mod prelude;
pub mod tensor;
pub mod train;
pub mod transforms;
mod util;

pub use autograd::{Backward, Gradients, Mode, Param, ParamId, Tape, Var, gradcheck};
pub use error::{Error, Result};
/// The `ndarray` version striate's [`Tensor::from_array`] and [`Tensor::into_array`] speak, so a
/// program converting arrays needs no dependency of its own (and cannot pick a mismatched one).
pub use ndarray;
/// The `rand` version striate's constructors take their `&mut impl Rng` from, re-exported so a
/// program seeds them without a dependency of its own: `striate::rand::rngs::StdRng` (also in
/// [`prelude`]).
pub use rand;
pub use tensor::Tensor;

/// Starts the pool of threads striate's kernels use (rayon's global pool), with `threads`
/// threads, or with `0` the default: `RAYON_NUM_THREADS` from the environment, or else one
/// per core.
///
/// Call it once, before any other work. Called from the program's main thread, it makes that
/// thread one of the pool's threads (as OpenMP's master thread is one of its team, and as in
/// PyTorch): every parallel region of a kernel then starts from a thread of the pool, which
/// runs its share itself, instead of handing all of it to the pool and sleeping until it is
/// done. On a 2-vCPU VM that sleep and wake cost 13-21 us per region, a tenth of an MNIST
/// training step. So call it from the thread that runs your training or inference loop: the
/// main thread, which must then live as long as the pool (it does: the pool ends with the
/// program). Called from any other thread, or for a single thread, it starts a pool of
/// `threads` threads of its own.
///
/// Without it, the pool starts at the first parallel work with the default number of threads,
/// none of them the caller's.
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
    util::threads::build_global_pool(threads)
        .map_err(|e| Error::Config(format!("set_num_threads({threads}): {e}")))
}

/// Asks the allocator to keep freed memory for reuse, so that training steps stop
/// page-faulting their buffers back in: an explicit opt-in for programs that train.
///
/// Every step allocates the same large buffers (activations, gradients, pooling indices) and
/// frees them when its tape drops. glibc's malloc returns large free blocks to the operating
/// system (trimming the heap, or unmapping blocks above its mmap threshold), so the next step
/// page-faults all of that memory in again: on the MNIST CNN that was a fifth of the step.
/// This sets glibc's trim threshold to 1 GiB and its mmap threshold to 32 MiB, so recurring
/// buffers are reused. From then on, striate's own buffers of 4 MiB or more (tensors, work
/// areas) also ask Linux for transparent huge pages (`madvise(MADV_HUGEPAGE)`, which the usual
/// system setting `madvise` honours): a large operand read a plane apart at every step stops
/// missing the TLB, and with buffers reused, the larger pages' first faults are paid once.
///
/// It changes a setting of the whole process (every allocation of the program, not only
/// striate's), which is why striate never does it on its own: call it once at the start of a
/// training program, as the examples and benches do. The environment variable
/// `STRIATE_MALLOC_TUNING=0` turns the call into a no-op (to compare), and on platforms other
/// than Linux with glibc it does nothing.
///
/// # Examples
///
/// ```
/// striate::keep_freed_memory(); // once, before training
/// ```
pub fn keep_freed_memory() {
    util::memory::keep_freed_memory();
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
