//! Data parallelism as PyTorch's `DistributedDataParallel` does it: every rank a full replica,
//! gradients averaged in flat buckets whose reduction starts during backward.

use std::collections::HashMap;
use std::sync::mpsc::Receiver;

use super::comm::Job;
use super::world::World;
use crate::autograd::{Gradients, ParamId, Var};
use crate::data::Shard;
use crate::error::{Error, Result};
use crate::io::{load_state_dict, state_dict};
use crate::nn::Module;
use crate::tensor::Tensor;
use crate::train::{Fit, Replicas, RunFacts};

/// How [`Fit::distributed_with`] trains.
///
/// # Examples
///
/// ```
/// use striate::distributed::DistributedOptions;
///
/// let options = DistributedOptions { check_replicas: true, ..Default::default() };
/// assert_eq!(options.bucket_bytes, 1 << 20);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DistributedOptions {
    /// The size of a gradient bucket in bytes (1 MiB by default): gradients are packed, last
    /// layer first, into flat buckets of about this size, and each bucket's all-reduce starts
    /// as soon as backward has produced all of its gradients. Smaller buckets start sooner
    /// and overlap more; larger ones pay the per-message latency fewer times
    /// (`docs/distributed.md` derives the default).
    pub bucket_bytes: usize,
    /// After every optimizer step, checks that every rank holds bit-identical parameters (by
    /// gathering a hash of them), and stops with an error naming the ranks that diverged.
    /// Costs one hash of the parameters and one small collective per step; off by default.
    pub check_replicas: bool,
}

impl Default for DistributedOptions {
    fn default() -> Self {
        DistributedOptions {
            bucket_bytes: 1 << 20,
            check_replicas: false,
        }
    }
}

impl<'a> Fit<'a> {
    /// Makes this run one replica of data-parallel training over `world`, PyTorch DDP's way,
    /// with the default [`DistributedOptions`]:
    ///
    /// - before training, every rank must have the same model (parameter names, shapes and
    ///   freezing), data sizes, batch size, epochs and seed, or every rank returns an
    ///   [`Error::Distributed`] naming what differs; then every rank takes rank 0's
    ///   parameters and buffers;
    /// - each epoch, rank `r` trains on shard `r` of the epoch's order
    ///   ([`DataLoader::epoch_shard`](crate::data::DataLoader::epoch_shard): padded by
    ///   repeating, or with `drop_last` cut, to equal shards), so with `n` ranks the global
    ///   batch is `n` times the loader's batch size and the run reproduces a single process
    ///   with that batch, up to summation order;
    /// - gradients are averaged over the ranks in buckets reduced during backward, and every
    ///   rank takes the same optimizer step;
    /// - batch norm normalises with each rank's batch statistics, as in DDP, unless the
    ///   layer is synchronised (`BatchNorm2d::new(c).synchronized(world.replica_sum())`,
    ///   PyTorch's `SyncBatchNorm`); its running statistics are rank 0's after every epoch;
    /// - losses, accuracies and the validation are summed over the ranks (each evaluates its
    ///   part of the validation set), so every rank's [`History`](crate::train::History)
    ///   holds the figures of the whole data; only rank 0 shows progress and writes the plot
    ///   and TensorBoard logs; callbacks run on every rank and see the same records.
    ///
    /// An error on one rank mid-run (a NaN loss, a plot that cannot be written) ends the whole
    /// job with a message naming the rank, since its peers would otherwise wait for it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use rand::{SeedableRng, rngs::StdRng};
    /// use striate::data::{DataLoader, ImageDataset};
    /// use striate::distributed::World;
    /// use striate::models::mnist_cnn;
    /// use striate::optim::{Sgd, SgdConfig};
    /// use striate::train::Fit;
    ///
    /// let world = World::init()?; // run under `mpirun -np 2`
    /// let data = ImageDataset::from_u8(vec![0; 256 * 28 * 28], [1, 28, 28], vec![3; 256])?;
    /// let loader = DataLoader::new(data, 64).shuffle(0);
    /// let mut model = mnist_cnn(10, &mut StdRng::seed_from_u64(0));
    /// let mut sgd = Sgd::new(SgdConfig { learning_rate: 0.05, ..Default::default() });
    /// let history = Fit::new(&mut model, &mut sgd).distributed(&world).epochs(2).run(&loader)?;
    /// # Ok::<(), striate::Error>(())
    /// ```
    pub fn distributed(self, world: &'a World) -> Self {
        self.distributed_with(world, DistributedOptions::default())
    }

    /// [`Fit::distributed`] with other bucket sizes or the replica check.
    pub fn distributed_with(self, world: &'a World, options: DistributedOptions) -> Self {
        self.with_replicas(Box::new(DataParallel::new(world, options)))
    }
}

/// One rank's part of data-parallel training.
pub(crate) struct DataParallel<'w> {
    world: &'w World,
    options: DistributedOptions,
    buckets: Vec<Bucket>,
    /// Where each trainable parameter's gradient goes: (bucket, slot in its bucket).
    slots: HashMap<ParamId, (usize, usize)>,
    /// Bucket buffers back from the last step, reused.
    spare: Vec<Vec<f32>>,
}

/// A flat run of gradients all-reduced as one message: the gradients, then one presence flag
/// per parameter (1 where this rank has a gradient for it), so that a parameter no rank used
/// stays without a gradient, as in a single process.
struct Bucket {
    params: Vec<Slot>,
    len: usize,
}

struct Slot {
    id: ParamId,
    offset: usize,
    shape: Vec<usize>,
}

impl Slot {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

impl<'w> DataParallel<'w> {
    pub(crate) fn new(world: &'w World, options: DistributedOptions) -> Self {
        DataParallel {
            world,
            options,
            buckets: Vec::new(),
            slots: HashMap::new(),
            spare: Vec::new(),
        }
    }

    /// Packs the trainable parameters into buckets, last first (backward's order), closing a
    /// bucket once it holds `bucket_bytes`.
    fn plan_buckets(&mut self, model: &dyn Module) {
        let mut trainable = Vec::new();
        model.visit_params(&mut |_, param| {
            if param.requires_grad() {
                trainable.push((param.id(), param.shape().to_vec()));
            }
        });
        let cap = (self.options.bucket_bytes / size_of::<f32>()).max(1);
        let (mut buckets, mut open) = (Vec::new(), Vec::<Slot>::new());
        let mut filled = 0;
        for (id, shape) in trainable.into_iter().rev() {
            let slot = Slot {
                id,
                offset: filled,
                shape,
            };
            filled += slot.len();
            open.push(slot);
            if filled >= cap {
                buckets.push(std::mem::take(&mut open));
                filled = 0;
            }
        }
        if !open.is_empty() {
            buckets.push(open);
        }
        self.slots.clear();
        self.buckets = buckets
            .into_iter()
            .enumerate()
            .map(|(b, params)| {
                for (s, slot) in params.iter().enumerate() {
                    self.slots.insert(slot.id, (b, s));
                }
                let data: usize = params.iter().map(Slot::len).sum();
                Bucket {
                    len: data + params.len(),
                    params,
                }
            })
            .collect();
    }
}

/// FNV-1a over 64-bit words: a fingerprint to compare across ranks, not a cryptographic hash.
#[derive(Clone, Copy)]
pub(crate) struct Fingerprint(u64);

impl Fingerprint {
    pub(crate) fn new() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn word(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(0x0000_0100_0000_01b3);
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.word(bytes.len() as u64);
        for &byte in bytes {
            self.word(byte as u64);
        }
    }

    pub(crate) fn floats(&mut self, values: &[f32]) {
        // Two floats per step, bit for bit (so -0.0 and 0.0, or two NaNs, differ).
        let mut pairs = values.chunks_exact(2);
        for pair in &mut pairs {
            self.word((pair[0].to_bits() as u64) << 32 | pair[1].to_bits() as u64);
        }
        for &last in pairs.remainder() {
            self.word(last.to_bits() as u64);
        }
    }

    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}

/// A fingerprint of a model's structure: parameter names, shapes and freezing, buffer names
/// and shapes.
pub(crate) fn structure_fingerprint(model: &dyn Module) -> u64 {
    let mut hash = Fingerprint::new();
    model.visit_params(&mut |name, param| {
        hash.bytes(name.as_bytes());
        hash.word(param.requires_grad() as u64);
        for &d in param.shape() {
            hash.word(d as u64);
        }
    });
    model.visit_buffers(&mut |name, buffer| {
        hash.bytes(name.as_bytes());
        for &d in buffer.shape() {
            hash.word(d as u64);
        }
    });
    hash.finish()
}

/// A fingerprint of a model's parameter values, bit for bit.
pub(crate) fn parameter_fingerprint(model: &dyn Module) -> u64 {
    let mut hash = Fingerprint::new();
    model.visit_params(&mut |_, param| hash.floats(param.value().as_slice()));
    hash.finish()
}

/// Gives every rank rank 0's buffers (batch norm's running statistics).
fn broadcast_buffers(world: &World, model: &mut dyn Module) -> Result<()> {
    let mut mine = Vec::new();
    model.visit_buffers(&mut |_, buffer| mine.extend_from_slice(buffer.as_slice()));
    if mine.is_empty() {
        return Ok(()); // the same on every rank: the models' structures were checked equal
    }
    let bytes = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = world.broadcast(0, bytes)?;
    let mut values = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    model.visit_buffers_mut(&mut |_, buffer| {
        for (value, from_rank_0) in buffer.as_slice_mut().iter_mut().zip(values.by_ref()) {
            *value = from_rank_0;
        }
    });
    Ok(())
}

/// Gives every rank rank 0's parameters and buffers.
pub(crate) fn broadcast_state(world: &World, model: &mut dyn Module) -> Result<()> {
    let state = state_dict(model);
    let bytes = if world.is_leader() {
        state
            .iter()
            .flat_map(|(_, t)| t.as_slice().iter().flat_map(|v| v.to_le_bytes()))
            .collect()
    } else {
        Vec::new()
    };
    let bytes = world.broadcast(0, bytes)?;
    if world.is_leader() {
        return Ok(());
    }
    let expected: usize = state.iter().map(|(_, t)| t.len() * 4).sum();
    if bytes.len() != expected {
        return Err(Error::Distributed(format!(
            "rank {}: rank 0's model state holds {} bytes, this rank's {expected}",
            world.rank(),
            bytes.len()
        )));
    }
    let mut values = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let received: Vec<(String, Tensor)> = state
        .iter()
        .map(|(name, t)| {
            let data: Vec<f32> = values.by_ref().take(t.len()).collect();
            let tensor = Tensor::from_vec(data, t.shape()).expect("sized from the shape");
            (name.clone(), tensor)
        })
        .collect();
    load_state_dict(model, &received)
}

impl Replicas for DataParallel<'_> {
    fn shard(&self) -> Shard {
        Shard::new(self.world.rank(), self.world.size())
    }

    fn prepare(&mut self, model: &mut dyn Module, facts: &RunFacts) -> Result<()> {
        let world = self.world;
        world.expect_same(
            "the model (a fingerprint of its parameter names, shapes and freezing)",
            structure_fingerprint(model),
        )?;
        let validation = facts.validation.map_or(0, |v| v.dataset().len() as u64);
        let checks: [(&str, u64); 9] = [
            ("the number of ranks", world.size() as u64),
            (
                "the training set's size",
                facts.train.dataset().len() as u64,
            ),
            ("the batch size", facts.train.batch_size() as u64),
            (
                "the batches per shard",
                facts.train.shard_len(world.size()) as u64,
            ),
            ("the validation set's size", validation),
            ("the first epoch", facts.first_epoch as u64),
            ("the number of epochs", facts.epochs as u64),
            ("the seed", facts.seed),
            ("the bucket size", self.options.bucket_bytes as u64),
        ];
        for (what, value) in checks {
            world.expect_same(what, value)?;
        }
        broadcast_state(world, model)?;
        self.plan_buckets(model);
        Ok(())
    }

    fn backward(&mut self, _model: &dyn Module, loss: Var<'_>) -> Result<Gradients> {
        let world = self.world;
        let (buckets, slots) = (&self.buckets, &self.slots);
        let mut buffers: Vec<Vec<f32>> = buckets
            .iter()
            .map(|bucket| {
                let mut buffer = self.spare.pop().unwrap_or_default();
                buffer.clear();
                buffer.resize(bucket.len, 0.0);
                buffer
            })
            .collect();
        let mut ready = vec![0usize; buckets.len()];
        let mut in_flight: Vec<Receiver<Vec<f32>>> = Vec::with_capacity(buckets.len());
        let mut failure = None;
        // Buckets start in order, so every rank submits the same sequence of reductions.
        let mut launch = |in_flight: &mut Vec<Receiver<Vec<f32>>>, buffers: &mut [Vec<f32>]| {
            let data = std::mem::take(&mut buffers[in_flight.len()]);
            match world.submit(|reply| Job::SumF32 { data, reply }) {
                Ok(answer) => in_flight.push(answer),
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        };
        let mut grads = loss.backward_with_hook(&mut |id, gradient| {
            let Some(&(b, s)) = slots.get(&id) else {
                return; // frozen: not in any bucket
            };
            let bucket = &buckets[b];
            let slot = &bucket.params[s];
            let data = bucket.len - bucket.params.len();
            buffers[b][slot.offset..slot.offset + slot.len()].copy_from_slice(gradient.as_slice());
            buffers[b][data + s] = 1.0;
            ready[b] += 1;
            while in_flight.len() < buckets.len()
                && ready[in_flight.len()] == buckets[in_flight.len()].params.len()
            {
                launch(&mut in_flight, &mut buffers);
            }
        });
        // Parameters the loss did not reach on this rank count as zeros, as in DDP.
        while in_flight.len() < buckets.len() {
            launch(&mut in_flight, &mut buffers);
        }
        if let Some(error) = failure {
            return Err(error);
        }
        let scale = world.size() as f32;
        for (bucket, answer) in buckets.iter().zip(in_flight) {
            let waiting = std::time::Instant::now();
            let sums = world.wait(answer)?;
            world.add_exposed(waiting.elapsed().as_secs_f64());
            let data = bucket.len - bucket.params.len();
            for (s, slot) in bucket.params.iter().enumerate() {
                if sums[data + s] == 0.0 {
                    continue; // no rank has a gradient for it
                }
                let mean = sums[slot.offset..slot.offset + slot.len()]
                    .iter()
                    .map(|sum| sum / scale)
                    .collect();
                let mean = Tensor::from_vec(mean, &slot.shape).expect("sized from the shape");
                grads.insert(slot.id, mean);
            }
            self.spare.push(sums);
        }
        Ok(grads)
    }

    fn after_step(&mut self, model: &dyn Module, at: &str) -> Result<()> {
        if !self.options.check_replicas {
            return Ok(());
        }
        self.world
            .expect_same(
                "the parameters (a hash of their bits)",
                parameter_fingerprint(model),
            )
            .map_err(|e| Error::Distributed(format!("after {at}, {e}")))
    }

    fn end_epoch(&mut self, model: &mut dyn Module) -> Result<()> {
        broadcast_buffers(self.world, model)
    }

    fn sum(&mut self, values: &mut [f64]) -> Result<()> {
        self.world.sum_f64(values)
    }

    fn fail(&mut self, error: &Error) -> ! {
        self.world.abort(&format!("{error}"))
    }
}
