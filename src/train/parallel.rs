//! What [`Fit`](super::Fit) asks of a data-parallel group. The group itself (MPI, buckets,
//! overlap) lives in `crate::distributed`, above this layer, which plugs an implementation in
//! with `Fit::distributed`; `train` only knows this interface.

use crate::autograd::{Gradients, Var};
use crate::data::{DataLoader, Shard};
use crate::error::{Error, Result};
use crate::nn::Module;

/// One process's view of a group of replicas training one model in lockstep.
///
/// Every method but [`Replicas::shard`] and [`Replicas::fail`] is collective: every replica
/// calls it at the same point of the run, or the group waits.
pub(crate) trait Replicas {
    /// This replica's shard of the data.
    fn shard(&self) -> Shard;

    /// Before training: checks that every replica has the same model, data and run length
    /// (an error on every replica if not), then gives every replica rank 0's parameters and
    /// buffers, as PyTorch's DDP does at construction.
    fn prepare(&mut self, model: &mut dyn Module, facts: &RunFacts) -> Result<()>;

    /// Runs backward from `loss` and returns the gradients averaged over the replicas.
    fn backward(&mut self, model: &dyn Module, loss: Var<'_>) -> Result<Gradients>;

    /// After each optimizer step (`at` names it): an optional check that every replica holds
    /// bit-identical parameters.
    fn after_step(&mut self, model: &dyn Module, at: &str) -> Result<()>;

    /// At the end of each epoch's training: gives every replica rank 0's buffers (batch
    /// norm's running statistics, which each replica updated from its own batches), as DDP
    /// does, so that validation, checkpoints and the trained model are those of one model.
    fn end_epoch(&mut self, model: &mut dyn Module) -> Result<()>;

    /// Sums `values` over the replicas, in place.
    fn sum(&mut self, values: &mut [f64]) -> Result<()>;

    /// Ends the whole job after `error` struck this replica mid-run (its peers would wait for
    /// it forever otherwise).
    fn fail(&mut self, error: &Error) -> !;
}

/// What must agree across replicas before a run starts.
// Read only by the implementation, which needs the `mpi` feature.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) struct RunFacts<'l> {
    pub train: &'l DataLoader,
    pub validation: Option<&'l DataLoader>,
    pub first_epoch: usize,
    pub epochs: usize,
    pub seed: u64,
}
