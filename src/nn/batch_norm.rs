//! `BatchNorm`: batch normalisation over the channel axis, with running statistics.

use std::sync::{Arc, Mutex, RwLock};

use super::{Graph, Module, Op, ValueId};
use crate::autograd::ops::batch_norm::ReplicaSum;
use crate::autograd::{Param, ParamId, Var, fresh_version};
use crate::tensor::Tensor;
use crate::tensor::check::contract_violation;

/// The running statistics a batch norm layer keeps for inference.
#[derive(Clone, Debug)]
struct RunningStats {
    mean: Tensor,
    variance: Tensor,
    batches_tracked: u64,
    /// Renewed whenever the statistics may change, as [`Param::version`]: the key of the
    /// weights folded from them.
    version: u64,
}

/// Batch normalisation over axis 1 of `[N, C]`, `[N, C, L]` or `[N, C, H, W]` inputs
/// (PyTorch's `BatchNorm1d` / `BatchNorm2d`, which are aliases of this type: the input's rank
/// decides).
///
/// On a training tape each channel is normalised with the batch's mean and biased variance,
/// and the running statistics move toward them with PyTorch's rule:
/// `running = (1 − momentum) · running + momentum · batch` (the variance term unbiased,
/// `var · n / (n − 1)`), or a cumulative average when `momentum` is `None`. On an inference
/// tape the running statistics are used. Then `y = x̂ · γ + β`.
///
/// **Frozen layers stay in inference mode** (Keras's rule for fine-tuning): when γ is frozen
/// (`requires_grad` off, see [`crate::models::freeze`]), the layer uses and keeps its
/// running statistics even on a training tape, so a frozen backbone is not disturbed by the
/// statistics of a small new dataset.
///
/// # Examples
///
/// ```
/// use striate::nn::{BatchNorm2d, Module};
/// use striate::{Tape, Tensor};
///
/// let bn = BatchNorm2d::new(3);
/// let tape = Tape::training();
/// let y = bn.forward(tape.input(Tensor::full(&[2, 3, 4, 4], 5.0)));
/// assert_eq!(y.value().as_slice()[0], 0.0); // normalised by the batch
/// // running mean moved 10% of the way from 0 toward 5
/// assert!((bn.running_mean().as_slice()[0] - 0.5).abs() < 1e-6);
/// ```
#[derive(Debug)]
pub struct BatchNorm {
    /// Scale γ `[C]` (absent without affine parameters).
    pub weight: Option<Param>,
    /// Shift β `[C]` (absent without affine parameters).
    pub bias: Option<Param>,
    stats: RwLock<RunningStats>,
    momentum: Option<f32>,
    eps: f32,
    /// Set for a synchronised batch norm: the replicas its batch statistics span.
    replicas: Option<Arc<dyn ReplicaSum>>,
    /// The convolution before this layer with the layer folded in, as last computed.
    folded: Mutex<Option<Arc<FoldedConv>>>,
}

/// PyTorch's `BatchNorm1d`: [`BatchNorm`] on `[N, C]` or `[N, C, L]` inputs.
pub type BatchNorm1d = BatchNorm;

/// PyTorch's `BatchNorm2d`: [`BatchNorm`] on `[N, C, H, W]` inputs.
pub type BatchNorm2d = BatchNorm;

impl Clone for BatchNorm {
    fn clone(&self) -> Self {
        BatchNorm {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            stats: RwLock::new(self.read_stats().clone()),
            momentum: self.momentum,
            eps: self.eps,
            replicas: self.replicas.clone(),
            folded: Mutex::new(None),
        }
    }
}

impl BatchNorm {
    /// A layer for `num_features` channels with PyTorch's defaults: γ = 1, β = 0,
    /// momentum 0.1, eps 1e-5, running mean 0 and variance 1.
    pub fn new(num_features: usize) -> BatchNorm {
        BatchNorm {
            weight: Some(Param::new("weight", Tensor::ones(&[num_features]))),
            bias: Some(Param::new("bias", Tensor::zeros(&[num_features]))),
            stats: RwLock::new(RunningStats {
                mean: Tensor::zeros(&[num_features]),
                variance: Tensor::ones(&[num_features]),
                batches_tracked: 0,
                version: fresh_version(),
            }),
            momentum: Some(0.1),
            eps: 1e-5,
            replicas: None,
            folded: Mutex::new(None),
        }
    }

    /// `relu(self.forward(input))` as one op in training ([`Var::batch_norm_relu_train_across`]:
    /// one pass over the activations fewer each way, no tensor kept for the ReLU); the same
    /// values and gradients to the bit. [`then_batch_norm`] and [`Sequential`](super::Sequential)
    /// use it wherever a ReLU follows a batch norm.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::nn::{BatchNorm2d, Module};
    /// use striate::{Tape, Tensor};
    ///
    /// let bn = BatchNorm2d::new(2);
    /// let x = Tensor::from_vec((0..8).map(|v| v as f32).collect(), &[2, 2, 1, 2]).unwrap();
    /// let fused = bn.forward_relu(Tape::training().input(x.clone())).value();
    /// let separate = bn.forward(Tape::training().input(x)).relu().value();
    /// assert_eq!(fused.as_slice(), separate.as_slice());
    /// ```
    pub fn forward_relu<'t>(&self, input: Var<'t>) -> Var<'t> {
        self.forward_activated(input, true)
    }

    /// The forward, then ReLU if `relu`: fused in training, two ops otherwise.
    fn forward_activated<'t>(&self, input: Var<'t>, relu: bool) -> Var<'t> {
        let tape = input.tape();
        let weight = self.weight.as_ref().map(|w| tape.param(w));
        let bias = self.bias.as_ref().map(|b| tape.param(b));
        if !tape.is_training() || self.is_frozen() {
            let stats = self.read_stats();
            let output =
                input.batch_norm_eval(weight, bias, &stats.mean, &stats.variance, self.eps);
            return if relu { output.relu() } else { output };
        }
        let replicas = self.replicas.clone();
        let (output, batch) = if relu {
            input.batch_norm_relu_train_across(weight, bias, self.eps, replicas)
        } else {
            input.batch_norm_train_across(weight, bias, self.eps, replicas)
        };
        let mut stats = self
            .stats
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        stats.batches_tracked += 1;
        let momentum = self.momentum.unwrap_or(1.0 / stats.batches_tracked as f32);
        let unbiased = batch.count as f32 / (batch.count.max(2) - 1) as f32;
        let blend = |running: &mut Tensor, batch: &Tensor, scale: f32| {
            for (r, &b) in running.as_slice_mut().iter_mut().zip(batch.as_slice()) {
                *r = (1.0 - momentum) * *r + momentum * b * scale;
            }
        };
        blend(&mut stats.mean, &batch.mean, 1.0);
        blend(&mut stats.variance, &batch.variance, unbiased);
        stats.version = fresh_version();
        output
    }

    /// Makes this a synchronised batch norm (PyTorch's `SyncBatchNorm`): in training, each
    /// channel is normalised with the mean and variance of the whole global batch, summed over
    /// the replicas of a data-parallel job by `replicas` (see
    /// `striate::distributed::World::replica_sum`, feature `mpi`), and the running statistics
    /// follow the global batch. It costs two small all-reduces per forward and one per
    /// backward; it pays when each replica's batch is too small for good statistics.
    /// Inference is unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use striate::autograd::ops::batch_norm::ReplicaSum;
    /// use striate::nn::{BatchNorm2d, Module};
    /// use striate::{Tape, Tensor};
    ///
    /// // A job of one replica: the sums are its own. An MPI job passes
    /// // `world.replica_sum()` instead.
    /// #[derive(Debug)]
    /// struct Alone;
    /// impl ReplicaSum for Alone {
    ///     fn sum(&self, _values: &mut [f64]) {}
    /// }
    /// let bn = BatchNorm2d::new(2).synchronized(Arc::new(Alone));
    /// let tape = Tape::training();
    /// let y = bn.forward(tape.input(Tensor::from_vec(vec![1.0, 5.0, 3.0, 7.0], &[2, 2, 1, 1]).unwrap()));
    /// assert!((y.value().as_slice()[0] + 1.0).abs() < 1e-4); // (1 - 2) / 1, up to eps
    /// ```
    pub fn synchronized(mut self, replicas: Arc<dyn ReplicaSum>) -> Self {
        self.replicas = Some(replicas);
        self
    }

    /// Sets the momentum of the running statistics; `None` makes them a cumulative average.
    ///
    /// # Panics
    ///
    /// If the momentum is outside `[0, 1]`.
    pub fn momentum(mut self, momentum: Option<f32>) -> Self {
        if let Some(m) = momentum
            && !(0.0..=1.0).contains(&m)
        {
            contract_violation(
                "BatchNorm",
                "momentum must be in [0, 1]",
                format_args!("momentum = {m}"),
            );
        }
        self.momentum = momentum;
        self
    }

    /// Sets the epsilon added to the variance.
    ///
    /// # Panics
    ///
    /// If `eps` is negative or not finite.
    pub fn eps(mut self, eps: f32) -> Self {
        if !(eps >= 0.0 && eps.is_finite()) {
            contract_violation(
                "BatchNorm",
                "eps must be finite and non-negative",
                format_args!("eps = {eps}"),
            );
        }
        self.eps = eps;
        self
    }

    /// Drops the learned γ and β (PyTorch's `affine=False`).
    pub fn without_affine(mut self) -> Self {
        self.weight = None;
        self.bias = None;
        self
    }

    /// The number of channels.
    pub fn num_features(&self) -> usize {
        self.read_stats().mean.len()
    }

    /// A copy of the running mean `[C]`.
    pub fn running_mean(&self) -> Tensor {
        self.read_stats().mean.clone()
    }

    /// A copy of the running variance `[C]`.
    pub fn running_var(&self) -> Tensor {
        self.read_stats().variance.clone()
    }

    fn read_stats(&self) -> std::sync::RwLockReadGuard<'_, RunningStats> {
        self.stats
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_frozen(&self) -> bool {
        self.weight.as_ref().is_some_and(|w| !w.requires_grad())
    }

    /// The weight and bias of a convolution (`weight` `[O, ...]`, `bias` `[O]`) with this layer
    /// folded in, for inference on the running statistics: with `k[o] = γ[o] / √(var[o] + ε)`,
    /// `w'[o] = w[o]·k[o]` and `b'[o] = (b[o] − mean[o])·k[o] + β[o]`, so that
    /// `conv(x; w', b') = bn(conv(x; w, b))` up to rounding. Kept until any of them changes.
    /// `None` if the convolution's output channels are not this layer's channels.
    pub(crate) fn folded_into(
        &self,
        weight: &Param,
        bias: Option<&Param>,
    ) -> Option<Arc<FoldedConv>> {
        let channels = self.num_features();
        let w = weight.value();
        if w.shape().first() != Some(&channels)
            || bias.is_some_and(|b| b.value().shape() != [channels])
        {
            return None;
        }
        let stats = self.read_stats();
        let key = FoldKey {
            weight: (weight.id(), weight.version()),
            bias: bias.map(Param::version),
            scale: self.weight.as_ref().map(Param::version),
            shift: self.bias.as_ref().map(Param::version),
            statistics: stats.version,
            eps: self.eps.to_bits(),
        };
        let mut slot = self
            .folded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(folded) = slot.as_ref().filter(|f| f.key == key) {
            return Some(Arc::clone(folded));
        }
        let factor: Vec<f32> = (0..channels)
            .map(|o| {
                let gamma = self
                    .weight
                    .as_ref()
                    .map_or(1.0, |g| g.value().as_slice()[o]);
                1.0 / (stats.variance.as_slice()[o] + self.eps).sqrt() * gamma
            })
            .collect();
        let per_output = w.len() / channels.max(1);
        let mut folded_weight = w.as_slice().to_vec();
        for (row, k) in folded_weight.chunks_mut(per_output.max(1)).zip(&factor) {
            row.iter_mut().for_each(|v| *v *= k);
        }
        let folded_bias: Vec<f32> = (0..channels)
            .map(|o| {
                let b = bias.map_or(0.0, |b| b.value().as_slice()[o]);
                let beta = self.bias.as_ref().map_or(0.0, |b| b.value().as_slice()[o]);
                (b - stats.mean.as_slice()[o]) * factor[o] + beta
            })
            .collect();
        let folded = Arc::new(FoldedConv {
            key,
            weight: Tensor::from_vec(folded_weight, w.shape()).expect("the weight's shape"),
            bias: Tensor::from_vec(folded_bias, &[channels]).expect("[C]"),
            version: fresh_version(),
        });
        *slot = Some(Arc::clone(&folded));
        Some(folded)
    }
}

/// `relu(bn(layer(input)))` (without the ReLU unless `relu`): one convolution on an inference
/// tape when `layer` is a [`Conv2d`](super::Conv2d), with the batch norm folded into its weight
/// and bias ([`Module::forward_then_batch_norm`]); the three ops in turn otherwise. The result
/// is the same up to rounding (the scale applied to the weights rather than to the sums).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::nn::{BatchNorm2d, Conv2d, Module, then_batch_norm};
/// use striate::{Tape, Tensor};
///
/// let conv = Conv2d::new(3, 8, 3, &mut StdRng::seed_from_u64(0));
/// let bn = BatchNorm2d::new(8);
/// let x = Tensor::ones(&[1, 3, 6, 6]);
/// let tape = Tape::inference();
/// let folded = then_batch_norm(&conv, &bn, tape.input(x.clone()), true).value();
/// let separate = bn.forward(conv.forward(tape.input(x))).relu().value();
/// assert!(folded.all_close(&separate, 1e-5, 1e-6));
/// ```
pub fn then_batch_norm<'t>(
    layer: &dyn Module,
    bn: &BatchNorm,
    input: Var<'t>,
    relu: bool,
) -> Var<'t> {
    if let Some(output) = layer.forward_then_batch_norm(input, bn, relu) {
        return output;
    }
    bn.forward_activated(layer.forward(input), relu)
}

/// Which values a [`FoldedConv`] was computed from: each parameter's version (unique in the
/// process, see [`Param::version`]), the statistics' version and ε.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FoldKey {
    weight: (ParamId, u64),
    bias: Option<u64>,
    scale: Option<u64>,
    shift: Option<u64>,
    statistics: u64,
    eps: u32,
}

/// A convolution's weight and bias with the batch norm after it folded in
/// ([`BatchNorm::folded_into`]): what ONNX Runtime does to a Conv and BatchNormalization
/// pair when it loads a model, here at the first inference after either changes.
#[derive(Debug)]
pub(crate) struct FoldedConv {
    key: FoldKey,
    /// `[O, ...]`, the convolution's weight scaled per output channel.
    pub weight: Tensor,
    /// `[O]`.
    pub bias: Tensor,
    /// A version of the convolution's weight parameter that names `weight` alone, so that
    /// the kernels keep what they prepare from it ([`crate::Tape`]'s derived parameters).
    pub version: u64,
}

impl Module for BatchNorm {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        self.forward_activated(input, false)
    }

    fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
        if let Some(weight) = &self.weight {
            visitor("weight", weight);
        }
        if let Some(bias) = &self.bias {
            visitor("bias", bias);
        }
    }

    fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
        if let Some(weight) = &mut self.weight {
            visitor("weight", weight);
        }
        if let Some(bias) = &mut self.bias {
            visitor("bias", bias);
        }
    }

    fn visit_buffers(&self, visitor: &mut dyn FnMut(&str, &Tensor)) {
        let stats = self.read_stats();
        visitor("running_mean", &stats.mean);
        visitor("running_var", &stats.variance);
        visitor(
            "num_batches_tracked",
            &Tensor::scalar(stats.batches_tracked as f32),
        );
    }

    fn visit_buffers_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Tensor)) {
        let stats = self
            .stats
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        visitor("running_mean", &mut stats.mean);
        visitor("running_var", &mut stats.variance);
        let mut tracked = Tensor::scalar(stats.batches_tracked as f32);
        visitor("num_batches_tracked", &mut tracked);
        stats.batches_tracked = tracked.item().max(0.0) as u64;
        stats.version = fresh_version();
    }

    fn as_batch_norm(&self) -> Option<&BatchNorm> {
        Some(self)
    }

    fn describe(&self) -> String {
        format!("BatchNorm({})", self.num_features())
    }

    /// The inference form: running statistics; a layer without affine parameters gets a scale
    /// of ones and a shift of zeros.
    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        let channels = self.num_features();
        let scale = match &self.weight {
            Some(w) => graph.param("weight", w),
            None => graph.constant("weight", Tensor::ones(&[channels])),
        };
        let shift = match &self.bias {
            Some(b) => graph.param("bias", b),
            None => graph.constant("bias", Tensor::zeros(&[channels])),
        };
        let (mean, variance) = {
            let stats = self.read_stats();
            (stats.mean.clone(), stats.variance.clone())
        };
        let mean = graph.constant("running_mean", mean);
        let variance = graph.constant("running_var", variance);
        Ok(graph.layer(
            self,
            Op::BatchNorm { eps: self.eps },
            &[input, scale, shift, mean, variance],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tape;

    #[test]
    fn running_statistics_follow_pytorch() {
        let bn = BatchNorm::new(1);
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 6.0], &[4, 1]).unwrap();
        for _ in 0..2 {
            let tape = Tape::training();
            bn.forward(tape.input(x.clone()));
        }
        // batch mean 3, unbiased variance 14/3; two updates with momentum 0.1
        let mean = 0.9 * (0.1 * 3.0) + 0.1 * 3.0;
        let var = 0.9 * (0.9 + 0.1 * 14.0 / 3.0) + 0.1 * 14.0 / 3.0;
        assert!((bn.running_mean().item() - mean).abs() < 1e-6);
        assert!((bn.running_var().item() - var).abs() < 1e-5);
        let mut tracked = 0.0;
        bn.visit_buffers(&mut |name, t| {
            if name == "num_batches_tracked" {
                tracked = t.item();
            }
        });
        assert_eq!(tracked, 2.0);
    }

    #[test]
    fn cumulative_average_without_momentum() {
        let bn = BatchNorm::new(1).momentum(None);
        for value in [2.0, 4.0] {
            let tape = Tape::training();
            bn.forward(tape.input(Tensor::from_vec(vec![value, value], &[2, 1]).unwrap()));
        }
        assert!((bn.running_mean().item() - 3.0).abs() < 1e-6);
    }

    #[test]
    fn frozen_layer_stays_in_inference_mode() {
        let mut bn = BatchNorm::new(2);
        bn.visit_params_mut(&mut |_, p| p.set_requires_grad(false));
        let tape = Tape::training();
        let y = bn.forward(tape.input(Tensor::full(&[3, 2], 4.0)));
        // running mean 0, variance 1: the output is the input (up to eps)
        assert!(y.value().as_slice().iter().all(|&v| (v - 4.0).abs() < 1e-3));
        assert_eq!(bn.running_mean().as_slice(), &[0.0, 0.0]);
    }

    #[test]
    fn inference_uses_running_statistics() {
        let bn = BatchNorm::new(1).eps(0.0);
        let x = Tensor::from_vec(vec![3.0], &[1, 1]).unwrap();
        assert_eq!(bn.predict(&x).as_slice(), &[3.0]);
    }
}
