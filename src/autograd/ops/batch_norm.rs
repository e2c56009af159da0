//! `batch_norm_train` and `batch_norm_eval`: normalise each channel (axis 1) over the batch and
//! spatial axes, then scale and shift.

use std::fmt;
use std::mem::MaybeUninit;
use std::sync::Arc;

use rayon::prelude::*;

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::kernels;
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, shape_str};
use crate::util::simd::{self, dispatch};

/// The per-channel statistics of one training batch.
#[derive(Clone, Debug)]
pub struct BatchStats {
    /// Mean of each channel, `[C]`.
    pub mean: Tensor,
    /// Biased variance of each channel (divided by the count), `[C]`.
    pub variance: Tensor,
    /// How many values each channel's statistics summarise (`N · H · W`); the unbiased
    /// variance for running statistics is `variance · count / (count − 1)`.
    pub count: usize,
}

/// Sums per-channel statistics over the replicas of a data-parallel job, for a synchronised
/// batch norm: element-wise, in place, with the same result on every replica. Every replica
/// calls it at the same points (two sums per forward, one per backward).
///
/// `striate::distributed` (feature `mpi`) implements it over MPI.
pub trait ReplicaSum: fmt::Debug + Send + Sync {
    /// Replaces `values` with their element-wise sum over the replicas.
    fn sum(&self, values: &mut [f64]);
}

/// `(batch, channels, spatial)` of an input `[N, C, ...]`, checking the affine parameters.
#[track_caller]
fn layout(op: &str, input: &Tensor, params: &[Option<&Tensor>]) -> (usize, usize, usize) {
    if input.ndim() < 2 {
        contract_violation(
            op,
            "input must be at least 2-D [N, C, ...]",
            format_args!("input {}", shape_str(input.shape())),
        );
    }
    let (batch, channels) = (input.shape()[0], input.shape()[1]);
    for p in params.iter().flatten() {
        if p.shape() != [channels] {
            contract_violation(
                op,
                format_args!("per-channel tensors must be [{channels}]"),
                format_args!(
                    "input {}, got {}",
                    shape_str(input.shape()),
                    shape_str(p.shape())
                ),
            );
        }
    }
    (batch, channels, input.shape()[2..].iter().product())
}

/// `terms(run_index, run)` of each contiguous run of one channel's values in `[N, C, spatial]`
/// data (run `i` is channel `i mod C`), computed in parallel. (Computed serially on the calling
/// thread, the statistics of training's batch norms were 7% of a ResNet-18 step on two threads,
/// with the other thread idle.)
fn per_run<const K: usize>(
    data: &[f32],
    spatial: usize,
    terms: impl Fn(usize, &[f32]) -> [f64; K] + Sync + Send,
) -> Vec<[f64; K]> {
    if spatial == 0 {
        return Vec::new();
    }
    // A few thousand floats a task at least (a BatchNorm1d's runs are single values).
    let min_runs = (1 << 12) / spatial + 1;
    data.par_chunks(spatial)
        .with_min_len(min_runs)
        .enumerate()
        .map(|(i, run)| terms(i, run))
        .collect()
}

/// The terms of [`per_run`] added per channel in run order, so that the sums do not depend on
/// the thread count.
fn sum_per_channel<const K: usize>(runs: &[[f64; K]], channels: usize) -> [Vec<f64>; K] {
    let mut sums = std::array::from_fn(|_| vec![0.0f64; channels]);
    for (i, run) in runs.iter().enumerate() {
        for (sum, term) in sums.iter_mut().zip(run) {
            sum[i % channels] += term;
        }
    }
    sums
}

/// What one channel's values go through: `x̂ = (x − mean) · inv_std`, then `x̂ · γ + β`. The
/// forward and the backward (which recomputes `x̂`, and with a fused ReLU the sign of the
/// output, from the input rather than keeping them) evaluate the same expressions, so they
/// agree to the bit.
#[derive(Clone, Copy)]
struct Channel {
    mean: f32,
    inv_std: f32,
    scale: f32,
    shift: f32,
}

impl Channel {
    #[inline(always)]
    fn normalized(self, x: f32) -> f32 {
        (x - self.mean) * self.inv_std
    }

    /// The output before a fused ReLU.
    #[inline(always)]
    fn affine(self, x: f32) -> f32 {
        self.normalized(x) * self.scale + self.shift
    }

    /// The part of the output's gradient `g` at input `x` that reaches the normalisation: all of
    /// it, or with a fused ReLU none where the output is `<= 0` (PyTorch's threshold_backward:
    /// a NaN output passes it).
    #[inline(always)]
    fn reaching<const RELU: bool>(self, g: f32, x: f32) -> f32 {
        if RELU && !kernels::relu_passes_gradient(self.affine(x)) {
            0.0
        } else {
            g
        }
    }
}

/// The per-channel constants of a batch norm.
struct Channels<'a> {
    mean: &'a [f32],
    inv_std: &'a [f32],
    gamma: Option<&'a Tensor>,
    beta: Option<&'a Tensor>,
}

impl Channels<'_> {
    fn get(&self, c: usize) -> Channel {
        Channel {
            mean: self.mean[c],
            inv_std: self.inv_std[c],
            scale: self.gamma.map_or(1.0, |g| g.as_slice()[c]),
            shift: self.beta.map_or(0.0, |b| b.as_slice()[c]),
        }
    }
}

/// A new `[N, C, spatial]` tensor of `input`'s shape whose run `c` of each image is written by
/// `write(c, run, reads_there)`, `reads_there` being the runs at the same place in each of
/// `reads`: an image per task, with no zero-fill first (which took as long as the writes).
fn per_channel_runs<const K: usize>(
    input: &Tensor,
    channels: usize,
    reads: [&[f32]; K],
    write: impl Fn(usize, &mut [MaybeUninit<f32>], [&[f32]; K]) + Sync + Send,
) -> Tensor {
    let images = input.shape()[0];
    let image = input.len() / images.max(1);
    let spatial = image / channels.max(1);
    let output = if spatial == 0 {
        vec![0.0; input.len()]
    } else {
        let fill = |start: usize, out: &mut [MaybeUninit<f32>]| {
            for (c, run) in out.chunks_mut(spatial).enumerate() {
                let at = start + c * spatial;
                write(c, run, reads.map(|r| &r[at..at + spatial]));
            }
        };
        // SAFETY: each chunk is whole images (`par_fill_new` splits at multiples of `image`,
        // or not at all), `spatial` divides it, and `write` writes every element of each run
        // (its callers' loops zip the run with reads of its length).
        unsafe { simd::par_fill_new(input.len(), image, fill) }
    };
    Tensor::from_vec(output, input.shape()).expect("input shape")
}

/// `y = x̂ · γ + β` ([`Channel::affine`]), then ReLU if `relu`.
fn normalize(input: &Tensor, channels: &Channels<'_>, relu: bool) -> Tensor {
    let count = channels.mean.len();
    per_channel_runs(input, count, [input.as_slice()], |c, y, [x]| {
        let channel = channels.get(c);
        dispatch(
            #[inline(always)]
            move || {
                if relu {
                    for (o, &v) in y.iter_mut().zip(x) {
                        o.write(kernels::relu(channel.affine(v)));
                    }
                } else {
                    for (o, &v) in y.iter_mut().zip(x) {
                        o.write(channel.affine(v));
                    }
                }
            },
        )
    })
}

#[derive(Debug)]
struct BatchNormBackward {
    /// The op's input, from which the backward recomputes `x̂` ([`Channel`]) rather than the
    /// forward writing it out: one activation-sized tensor less to write and to hold until the
    /// backward (the tape holds the input anyway).
    input: Tensor,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    gamma: Option<Tensor>,
    beta: Option<Tensor>,
    /// A ReLU fused after the affine map.
    relu: bool,
    /// Training mode: the statistics depend on the input, which adds two terms to dx.
    batch_statistics: bool,
    has_bias: bool,
    /// With a synchronised batch norm: the replicas whose values the statistics spanned.
    replicas: Option<Arc<dyn ReplicaSum>>,
    /// How many values each channel's statistics summarise (over all replicas).
    count: usize,
}

impl Backward for BatchNormBackward {
    fn backward(&self, grad_output: Tensor, needs_grad: &[bool]) -> Vec<Option<Tensor>> {
        if self.relu {
            self.backward_with::<true>(grad_output, needs_grad)
        } else {
            self.backward_with::<false>(grad_output, needs_grad)
        }
    }
}

impl BatchNormBackward {
    /// The backward, with a fused ReLU's mask applied to `dy` as it is read if `RELU`.
    fn backward_with<const RELU: bool>(
        &self,
        grad_output: Tensor,
        needs_grad: &[bool],
    ) -> Vec<Option<Tensor>> {
        let channels = self.inv_std.len();
        let spatial = self.input.len() / (self.input.shape()[0] * channels).max(1);
        let count = self.count as f64;
        let constants = Channels {
            mean: &self.mean,
            inv_std: &self.inv_std,
            gamma: self.gamma.as_ref(),
            beta: self.beta.as_ref(),
        };
        // Σ dy and Σ dy·x̂ per channel: dβ, dγ, and the mean terms of dx.
        let x = self.input.as_slice();
        let runs = per_run(grad_output.as_slice(), spatial, |i, dy| {
            let x = &x[i * spatial..(i + 1) * spatial];
            let channel = constants.get(i % channels);
            dispatch(
                #[inline(always)]
                || {
                    let reaching = |g, v| channel.reaching::<RELU>(g, v);
                    let sum = simd::sum_f64_of_pairs(dy, x, reaching);
                    let dot = simd::sum_f64_of_pairs(dy, x, |g, v| {
                        reaching(g, v) * channel.normalized(v)
                    });
                    [sum, dot]
                },
            )
        });
        let [sum_dy, sum_dy_xhat] = sum_per_channel(&runs, channels);
        // dx's mean terms run over every replica's values; dγ and dβ stay this replica's (the
        // data-parallel average of parameter gradients comes after).
        let (mut all_dy, mut all_dy_xhat) = (sum_dy.clone(), sum_dy_xhat.clone());
        if let Some(replicas) = self.replicas.as_ref().filter(|_| needs_grad[0]) {
            let mut sums: Vec<f64> = sum_dy.iter().chain(&sum_dy_xhat).copied().collect();
            replicas.sum(&mut sums);
            all_dy.copy_from_slice(&sums[..channels]);
            all_dy_xhat.copy_from_slice(&sums[channels..]);
        }
        let grad_input = needs_grad[0].then(|| {
            // train: dx = γ·inv_std·(dy − mean(dy) − x̂·mean(dy·x̂)); eval: dx = γ·inv_std·dy
            let reads = [grad_output.as_slice(), x];
            per_channel_runs(&self.input, channels, reads, |c, gx, [dy, x]| {
                let channel = constants.get(c);
                let scale = channel.scale * channel.inv_std;
                let (mean_dy, mean_dy_xhat) = if self.batch_statistics {
                    ((all_dy[c] / count) as f32, (all_dy_xhat[c] / count) as f32)
                } else {
                    (0.0, 0.0)
                };
                dispatch(
                    #[inline(always)]
                    move || {
                        for ((o, &g), &v) in gx.iter_mut().zip(dy).zip(x) {
                            let g = channel.reaching::<RELU>(g, v);
                            o.write(scale * (g - mean_dy - channel.normalized(v) * mean_dy_xhat));
                        }
                    },
                )
            })
        });
        let to_tensor = |sums: &[f64]| {
            Tensor::from_vec(sums.iter().map(|&s| s as f32).collect(), &[channels]).expect("[C]")
        };
        let mut grads = vec![grad_input];
        if self.gamma.is_some() {
            // dγ = Σ dy·x̂
            grads.push(needs_grad[1].then(|| to_tensor(&sum_dy_xhat)));
        }
        if self.has_bias {
            // dβ = Σ dy
            grads.push(needs_grad[grads.len()].then(|| to_tensor(&sum_dy)));
        }
        grads
    }
}

impl<'t> Var<'t> {
    /// Batch normalisation with the batch's own statistics (training mode): each channel of
    /// `[N, C, ...]` is normalised by its mean and biased variance over every axis but 1, then
    /// scaled by `weight` (γ) and shifted by `bias` (β). Returns the output and the statistics,
    /// from which a layer updates its running averages.
    ///
    /// # Panics
    ///
    /// If the input has fewer than 2 axes, `weight`/`bias` are not `[C]`, or the input holds
    /// at most one value per channel (batch × spatial ≤ 1), as PyTorch refuses.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::training();
    /// let x = tape.input(Tensor::from_vec(vec![1.0, 10.0, 3.0, 30.0], &[2, 2]).unwrap());
    /// let (y, stats) = x.batch_norm_train(None, None, 0.0);
    /// assert_eq!(stats.mean.as_slice(), &[2.0, 20.0]);
    /// assert_eq!(y.value().as_slice(), &[-1.0, -1.0, 1.0, 1.0]);
    /// ```
    pub fn batch_norm_train(
        self,
        weight: Option<Var<'t>>,
        bias: Option<Var<'t>>,
        eps: f32,
    ) -> (Var<'t>, BatchStats) {
        self.batch_norm_train_across(weight, bias, eps, None)
    }

    /// [`Var::batch_norm_train`] with statistics over the values of every replica of a
    /// data-parallel job (a synchronised batch norm, PyTorch's `SyncBatchNorm`): the mean and
    /// variance, and the mean terms of the input's gradient, are summed with `replicas`. With
    /// `None` it is [`Var::batch_norm_train`].
    ///
    /// # Panics
    ///
    /// As [`Var::batch_norm_train`], with the count over all replicas.
    pub fn batch_norm_train_across(
        self,
        weight: Option<Var<'t>>,
        bias: Option<Var<'t>>,
        eps: f32,
        replicas: Option<Arc<dyn ReplicaSum>>,
    ) -> (Var<'t>, BatchStats) {
        self.batch_norm_train_activated(weight, bias, eps, replicas, false)
    }

    /// [`Var::batch_norm_train_across`] then ReLU, as one op: the same values and gradients to
    /// the bit as the two ops (PyTorch's, where the upstream gradient is not finite), with one
    /// pass over the activations fewer each way, and no tensor kept for the ReLU's backward
    /// (the sign of each output is recomputed from the input).
    ///
    /// # Panics
    ///
    /// As [`Var::batch_norm_train`].
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::training();
    /// let x = tape.input(Tensor::from_vec(vec![1.0, 10.0, 3.0, 30.0], &[2, 2]).unwrap());
    /// let (y, _) = x.batch_norm_relu_train_across(None, None, 0.0, None);
    /// assert_eq!(y.value().as_slice(), &[0.0, 0.0, 1.0, 1.0]);
    /// ```
    pub fn batch_norm_relu_train_across(
        self,
        weight: Option<Var<'t>>,
        bias: Option<Var<'t>>,
        eps: f32,
        replicas: Option<Arc<dyn ReplicaSum>>,
    ) -> (Var<'t>, BatchStats) {
        self.batch_norm_train_activated(weight, bias, eps, replicas, true)
    }

    /// The training batch norm, then ReLU if `relu`.
    fn batch_norm_train_activated(
        self,
        weight: Option<Var<'t>>,
        bias: Option<Var<'t>>,
        eps: f32,
        replicas: Option<Arc<dyn ReplicaSum>>,
        relu: bool,
    ) -> (Var<'t>, BatchStats) {
        let input = self.value();
        let (gamma, beta) = (weight.map(|w| w.value()), bias.map(|b| b.value()));
        let (_, channels, spatial) = layout("batch_norm", &input, &[gamma.as_ref(), beta.as_ref()]);
        let mut count = input.len() / channels.max(1);
        // Each replica's sums, then their totals: one collective for the sums and the count.
        let sum_over_replicas = |values: &mut Vec<f64>| {
            if let Some(replicas) = &replicas {
                replicas.sum(values);
            }
        };
        // One pass over the input: each run's sum, and its squared deviations about its own
        // mean while the run is still in cache; a channel's runs then combine exactly (Chan's
        // formula, below) once the channel's mean is known.
        let runs = per_run(input.as_slice(), spatial, |_, run| {
            dispatch(
                #[inline(always)]
                || {
                    let sum = simd::sum_f64(run);
                    [
                        sum,
                        simd::squared_deviations_f64(run, sum / run.len() as f64),
                    ]
                },
            )
        });
        let [mut sums, _] = sum_per_channel(&runs, channels);
        sums.push(count as f64);
        sum_over_replicas(&mut sums);
        count = sums.pop().expect("the count") as usize;
        if count <= 1 {
            // One value per channel normalises to exactly 0 (the output is β whatever the
            // input) and has no unbiased variance: PyTorch refuses it too.
            contract_violation(
                "batch_norm",
                "expected more than 1 value per channel when training",
                format_args!("input {}, {count} per channel", shape_str(input.shape())),
            );
        }
        // In f64, the squared deviations about the channel's mean (no cancellation): a run of
        // `n` values with mean `m_r` and squared deviations `M_r` about it contributes
        // `M_r + n·(m_r − mean)²`.
        let mean: Vec<f64> = sums.iter().map(|s| s / count.max(1) as f64).collect();
        let mut squares = vec![0.0f64; channels];
        for (i, &[sum, deviations]) in runs.iter().enumerate() {
            let c = i % channels;
            let offset = sum / spatial as f64 - mean[c];
            squares[c] += deviations + spatial as f64 * offset * offset;
        }
        sum_over_replicas(&mut squares);
        let variance: Vec<f32> = squares
            .iter()
            .map(|s| (s / count.max(1) as f64) as f32)
            .collect();
        let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let inv_std: Vec<f32> = variance.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        let inputs: Vec<Var<'t>> = [Some(self), weight, bias].into_iter().flatten().collect();
        let constants = Channels {
            mean: &mean,
            inv_std: &inv_std,
            gamma: gamma.as_ref(),
            beta: beta.as_ref(),
        };
        let output = normalize(&input, &constants, relu);
        let stats = BatchStats {
            mean: Tensor::from_vec(mean.clone(), &[channels]).expect("[C]"),
            variance: Tensor::from_vec(variance, &[channels]).expect("[C]"),
            count,
        };
        let backward = BatchNormBackward {
            input,
            mean,
            inv_std,
            gamma,
            has_bias: beta.is_some(),
            beta,
            relu,
            batch_statistics: true,
            replicas,
            count,
        };
        (self.tape().record(output, &inputs, backward), stats)
    }

    /// Batch normalisation with given statistics (inference mode, or a frozen layer):
    /// `(x − mean) / √(variance + eps) · γ + β` per channel of `[N, C, ...]`.
    ///
    /// # Panics
    ///
    /// If the input has fewer than 2 axes, or `weight`, `bias`, `mean` or `variance` are not
    /// `[C]`.
    pub fn batch_norm_eval(
        self,
        weight: Option<Var<'t>>,
        bias: Option<Var<'t>>,
        mean: &Tensor,
        variance: &Tensor,
        eps: f32,
    ) -> Var<'t> {
        let tape = self.tape();
        let (gamma, beta) = (weight.map(|w| w.value()), bias.map(|b| b.value()));
        let inv_std = |channels: usize| -> Vec<f32> {
            let inv_std = variance.as_slice().iter().map(|v| 1.0 / (v + eps).sqrt());
            inv_std.take(channels).collect()
        };
        if tape.keeps_blocks()
            && let Some(blocks) = tape.blocks(self.node())
        {
            // Channel blocks kept between layers: the same formula, lane by lane.
            let channels = blocks.shape()[1];
            let parameters = [gamma.as_ref(), beta.as_ref(), Some(mean), Some(variance)];
            if parameters.iter().flatten().any(|p| p.shape() != [channels]) {
                layout("batch_norm", &self.value(), &parameters);
            }
            let scale = gamma.map_or(vec![1.0; channels], |g| g.to_vec());
            let shift = beta.map_or(vec![0.0; channels], |b| b.to_vec());
            let y = blocks.normalize(mean.as_slice(), &inv_std(channels), &scale, &shift);
            return tape.record_blocks(y);
        }
        let input = self.value();
        layout(
            "batch_norm",
            &input,
            &[gamma.as_ref(), beta.as_ref(), Some(mean), Some(variance)],
        );
        let inv_std = inv_std(mean.len());
        let inputs: Vec<Var<'t>> = [Some(self), weight, bias].into_iter().flatten().collect();
        let constants = Channels {
            mean: mean.as_slice(),
            inv_std: &inv_std,
            gamma: gamma.as_ref(),
            beta: beta.as_ref(),
        };
        let output = normalize(&input, &constants, false);
        let backward = BatchNormBackward {
            count: input.len() / mean.len().max(1),
            input,
            mean: mean.to_vec(),
            inv_std,
            gamma,
            has_bias: beta.is_some(),
            beta,
            relu: false,
            batch_statistics: false,
            replicas: None,
        };
        self.tape().record(output, &inputs, backward)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::rand_tensor;
    use crate::{Tape, Tensor, gradcheck};

    #[test]
    fn normalises_each_channel() {
        let tape = Tape::training();
        let x = tape.input(rand_tensor(&[4, 3, 5, 5], 70).map(|v| 3.0 * v + 2.0));
        let (y, stats) = x.batch_norm_train(None, None, 1e-5);
        assert_eq!(stats.count, 100);
        let y = y.value();
        for c in 0..3 {
            let values: Vec<f32> = (0..4)
                .flat_map(|n| y.select(0, n).select(0, c).to_vec())
                .collect();
            let mean = values.iter().sum::<f32>() / 100.0;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 100.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                "channel {c}: mean {mean} var {var}"
            );
        }
    }

    #[test]
    fn statistics_match_two_passes_in_f64_far_from_zero() {
        // Runs of different means around a large offset: the runs' own deviations and their
        // means' offsets must combine to the deviations about the channel's mean.
        let x = rand_tensor(&[3, 2, 7, 5], 81).map(|v| 1.0e4 + 3.0 * v);
        let tape = Tape::training();
        let (_, stats) = tape.input(x.clone()).batch_norm_train(None, None, 0.0);
        for c in 0..2 {
            let values: Vec<f64> = (0..3)
                .flat_map(|n| x.select(0, n).select(0, c).to_vec())
                .map(f64::from)
                .collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let variance =
                values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
            assert_eq!(stats.mean.as_slice()[c], mean as f32);
            assert_eq!(stats.variance.as_slice()[c], variance as f32);
        }
    }

    #[test]
    fn fused_relu_matches_the_two_ops_to_the_bit() {
        let x = rand_tensor(&[3, 4, 5, 3], 82);
        let (gamma, beta) = (rand_tensor(&[4], 83), rand_tensor(&[4], 84));
        // An upstream gradient with infinities and NaNs where the ReLU stops it and passes it.
        let mut upstream = rand_tensor(&[3, 4, 5, 3], 85);
        upstream.as_slice_mut()[..6].copy_from_slice(&[
            f32::INFINITY,
            f32::NAN,
            1.0,
            -1.0,
            0.5,
            2.0,
        ]);
        let run = |fused: bool| {
            let tape = Tape::training();
            let (input, weight, bias) = (
                tape.variable(x.clone()),
                tape.variable(gamma.clone()),
                tape.variable(beta.clone()),
            );
            let y = if fused {
                input
                    .batch_norm_relu_train_across(Some(weight), Some(bias), 1e-5, None)
                    .0
            } else {
                input
                    .batch_norm_train(Some(weight), Some(bias), 1e-5)
                    .0
                    .relu()
            };
            let grads = (y * tape.input(upstream.clone())).sum().backward();
            let wrt = |v| grads.wrt(v).unwrap().to_vec();
            (y.value().to_vec(), wrt(input), wrt(weight), wrt(bias))
        };
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let (fused, separate) = (run(true), run(false));
        for (a, b) in [
            (&fused.0, &separate.0),
            (&fused.1, &separate.1),
            (&fused.2, &separate.2),
            (&fused.3, &separate.3),
        ] {
            assert_eq!(bits(a), bits(b));
        }
    }

    #[test]
    fn gradcheck_fused_relu() {
        // Evenly spaced values, and γ and β that keep every output at least 0.07 from the kink
        // (a finite difference across it measures neither side).
        let x: Vec<f32> = (0..36)
            .map(|i| {
                let (n, c, s) = (i / 12, i / 6 % 2, i % 6);
                let k = (n * 6 + s) as f32 - 8.5;
                if c == 0 { 0.7 * k } else { 2.0 - 1.3 * k }
            })
            .collect();
        let inputs = [
            Tensor::from_vec(x, &[3, 2, 3, 2]).unwrap(),
            Tensor::from_vec(vec![1.5, -0.8], &[2]).unwrap(),
            Tensor::from_vec(vec![0.25, -0.3], &[2]).unwrap(),
        ];
        gradcheck(&inputs, |v| {
            let (y, _) = v[0].batch_norm_relu_train_across(Some(v[1]), Some(v[2]), 1e-5, None);
            y
        })
        .assert_passed();
    }

    #[test]
    fn eval_uses_given_statistics() {
        let tape = Tape::inference();
        let x = tape.input(Tensor::from_vec(vec![3.0, 5.0], &[1, 2]).unwrap());
        let mean = Tensor::from_vec(vec![1.0, 1.0], &[2]).unwrap();
        let var = Tensor::from_vec(vec![4.0, 16.0], &[2]).unwrap();
        let y = x.batch_norm_eval(None, None, &mean, &var, 0.0);
        assert_eq!(y.value().as_slice(), &[1.0, 1.0]);
    }

    #[test]
    fn gradcheck_training_mode() {
        let inputs = [
            rand_tensor(&[3, 2, 3, 2], 71),
            rand_tensor(&[2], 72),
            rand_tensor(&[2], 73),
        ];
        gradcheck(&inputs, |v| {
            v[0].batch_norm_train(Some(v[1]), Some(v[2]), 1e-5).0
        })
        .assert_passed();
        // batch 1, 2-D input (BatchNorm1d), no affine parameters
        gradcheck(&[rand_tensor(&[5, 3], 74)], |v| {
            v[0].batch_norm_train(None, None, 1e-5).0
        })
        .assert_passed();
        gradcheck(&[rand_tensor(&[1, 3, 3, 3], 75)], |v| {
            v[0].batch_norm_train(None, None, 1e-5).0
        })
        .assert_passed();
    }

    #[test]
    fn gradcheck_eval_mode() {
        let mean = rand_tensor(&[3], 76);
        let var = rand_tensor(&[3], 77).map(|v| v.abs() + 0.5);
        let inputs = [
            rand_tensor(&[2, 3, 2, 2], 78),
            rand_tensor(&[3], 79),
            rand_tensor(&[3], 80),
        ];
        gradcheck(&inputs, |v| {
            v[0].batch_norm_eval(Some(v[1]), Some(v[2]), &mean, &var, 1e-5)
        })
        .assert_passed();
    }

    #[test]
    #[should_panic(
        expected = "batch_norm: expected more than 1 value per channel when training (input [1, 3], 1 per channel)"
    )]
    fn rejects_one_value_per_channel_in_training() {
        let tape = Tape::training();
        let x = tape.input(Tensor::from_vec(vec![1.0, 2.0, 3.0], &[1, 3]).unwrap());
        x.batch_norm_train(None, None, 1e-5);
    }

    #[test]
    #[should_panic(expected = "batch_norm: expected more than 1 value per channel")]
    fn rejects_a_single_image_of_one_pixel() {
        let tape = Tape::training();
        let x = tape.input(Tensor::zeros(&[1, 2, 1, 1]));
        x.batch_norm_train(None, None, 1e-5);
    }

    #[test]
    #[should_panic(
        expected = "batch_norm: per-channel tensors must be [3] (input [2, 3, 4, 4], got [4])"
    )]
    fn rejects_wrong_parameter_shape() {
        let tape = Tape::training();
        let x = tape.input(Tensor::zeros(&[2, 3, 4, 4]));
        x.batch_norm_train(Some(tape.input(Tensor::ones(&[4]))), None, 1e-5);
    }

    /// `k` replicas holding the same batch: every sum is `k` times this replica's.
    #[derive(Debug)]
    struct IdenticalReplicas(f64);

    impl super::ReplicaSum for IdenticalReplicas {
        fn sum(&self, values: &mut [f64]) {
            values.iter_mut().for_each(|v| *v *= self.0);
        }
    }

    #[test]
    fn synchronised_over_identical_replicas_equals_one_batch() {
        // The global batch is k copies of this one: the same mean, variance, output and input
        // gradient; dγ and dβ stay this replica's; the count is k times larger.
        let x = rand_tensor(&[3, 2, 4, 4], 71);
        let gamma = rand_tensor(&[2], 72);
        let run = |replicas: Option<std::sync::Arc<dyn super::ReplicaSum>>| {
            let tape = Tape::training();
            let (input, weight) = (tape.variable(x.clone()), tape.variable(gamma.clone()));
            let (y, stats) = input.batch_norm_train_across(Some(weight), None, 1e-5, replicas);
            let grads = (y * y).sum().backward();
            let (dx, dgamma) = (
                grads.wrt(input).unwrap().clone(),
                grads.wrt(weight).unwrap().clone(),
            );
            (y.value(), dx, dgamma, stats)
        };
        let (y1, dx1, dg1, stats1) = run(None);
        let (y3, dx3, dg3, stats3) = run(Some(std::sync::Arc::new(IdenticalReplicas(3.0))));
        assert_eq!(stats3.count, 3 * stats1.count);
        for (a, b) in [(&y1, &y3), (&dx1, &dx3), (&dg1, &dg3)] {
            for (p, q) in a.as_slice().iter().zip(b.as_slice()) {
                assert!((p - q).abs() < 1e-5, "{p} vs {q}");
            }
        }
    }
}
