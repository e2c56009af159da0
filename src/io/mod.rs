//! Saving and loading weights and training checkpoints as safetensors files.
//!
//! - [`state_dict`] lists a model's parameters and buffers by hierarchical name (PyTorch's
//!   `state_dict()` keys); [`load_state_dict`] loads them back strictly, and
//!   [`load_state_dict_partial`] loads what fits and reports the rest.
//! - [`save_weights`] / [`load_weights`] / [`load_weights_partial`] do the same through a
//!   safetensors file, the format PyTorch (`safetensors.torch`), Keras and candle read, so
//!   weights move between striate and PyTorch without pickles. `docs/convert_torchvision.md`
//!   shows how to turn a torchvision checkpoint into one.
//! - [`save_checkpoint`] / [`load_checkpoint`] add the optimizer's state and the
//!   [`TrainingProgress`], so an interrupted run resumes exactly.
//!
//! Nothing here panics on a bad file: corrupt headers, truncated data and unsupported dtypes
//! are [`Error::InvalidData`](crate::Error::InvalidData) naming the file, and a file that does
//! not fit the model is [`Error::StateDict`](crate::Error::StateDict) listing every key that
//! does not fit. Every file is written through [`AtomicFile`]: it appears whole or not at all,
//! and a process killed while writing leaves nothing behind ([`write_atomically`] and
//! [`AtomicFile`] are here for programs that write files of their own the same way).

mod checkpoint;
mod file;
mod state;

pub use crate::util::atomic_file::{AtomicFile, write_atomically};
pub use checkpoint::{TrainingProgress, load_checkpoint, save_checkpoint};
#[cfg(feature = "mpi")]
pub(crate) use checkpoint::{checkpoint_metadata, save_checkpoint_with_metadata};
pub use file::{
    load_classifier, load_weights, load_weights_partial, read_safetensors, save_classifier,
    save_weights, write_safetensors,
};
pub use state::{LoadReport, load_state_dict, load_state_dict_partial, state_dict};
