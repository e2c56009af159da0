//! The functional form of the layers: ops on [`Var`](crate::Var) and the plain argument
//! types they take, for code that holds its own parameters (PyTorch's
//! `torch.nn.functional`).
//!
//! The ops are methods of `Var` ([`conv2d`](crate::Var::conv2d),
//! [`max_pool2d`](crate::Var::max_pool2d), [`avg_pool2d`](crate::Var::avg_pool2d),
//! [`linear`](crate::Var::linear), [`relu`](crate::Var::relu), ...); their hyperparameters are
//! the small `Copy` structs here, with PyTorch's defaults. The same types describe the kernels
//! in [`crate::kernels`], the low-level layer below the tape, which most programs never use.
//!
//! # Examples
//!
//! ```
//! use striate::nn::functional::{Conv2dSpec, Padding2d, Pool2dSpec};
//! use striate::{Tape, Tensor};
//!
//! let tape = Tape::inference();
//! let x = tape.input(Tensor::ones(&[1, 1, 4, 4]));
//! let w = tape.input(Tensor::ones(&[2, 1, 3, 3]));
//! let spec = Conv2dSpec { padding: Padding2d::symmetric(1, 1), ..Default::default() };
//! let y = x.conv2d(w, None, spec).relu().max_pool2d(Pool2dSpec::square(2));
//! assert_eq!(y.shape(), vec![1, 2, 2, 2]);
//! ```

#[doc(inline)]
pub use crate::kernels::conv::{Conv2dSpec, Padding2d};
#[doc(inline)]
pub use crate::kernels::pool::{AvgDivisor, Pool2dSpec};
