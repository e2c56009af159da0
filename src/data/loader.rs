//! `DataLoader`: a dataset as shuffled, augmented, normalised NCHW batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use rayon::prelude::*;

use super::dataset::{Dataset, permutation};
use crate::error::{Error, Result};
use crate::tensor::check::{contract_violation, shape_str};
use crate::tensor::{PARALLEL_ELEMENTWISE_THRESHOLD, Tensor};
use crate::transforms::photometric::{check_mean_std, normalize_planes};
use crate::transforms::{Transform, sample_rng};

/// One batch: images `[batch, channels, height, width]` and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The images, NCHW.
    pub images: Tensor,
    /// The class label of each image.
    pub labels: Vec<usize>,
}

impl Batch {
    /// The number of samples in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// One of `replicas` shards of each epoch, for data-parallel training
/// ([`DataLoader::epoch_shard`]): the shard of process `rank`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    rank: usize,
    replicas: usize,
}

impl Shard {
    /// Shard `rank` of `replicas`.
    ///
    /// # Panics
    ///
    /// If `rank >= replicas`.
    pub fn new(rank: usize, replicas: usize) -> Shard {
        if rank >= replicas {
            contract_violation(
                "Shard::new",
                "rank must be below the number of replicas",
                format_args!("rank {rank}, replicas {replicas}"),
            );
        }
        Shard { rank, replicas }
    }

    /// This shard's index, below [`Shard::replicas`].
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of shards.
    pub fn replicas(&self) -> usize {
        self.replicas
    }
}

/// Per-channel normalisation, `(x - mean) / std` (computed by the transforms' one
/// normalisation, so a loader and a `Normalize` transform agree to the bit).
#[derive(Debug, Clone)]
struct Normalize {
    mean: Vec<f32>,
    std: Vec<f32>,
}

/// Turns a [`Dataset`] into batches: shuffled from a seed (a new order every epoch),
/// optionally augmented per sample in parallel, optionally normalised per channel.
///
/// Epochs are numbered: [`epoch(e)`](Self::epoch) gives the batches of epoch `e`, a function of
/// the seed and `e` alone, so a run can be resumed or repeated exactly. Iterating `&loader`
/// (or [`iter`](Self::iter)) takes the next epoch number, starting at 0, the way a PyTorch
/// loader reshuffles on every pass.
///
/// Augmentation gives sample `i` of epoch `e` the random stream
/// [`sample_rng(seed, e, i)`](crate::transforms::sample_rng), with `i` its index in the
/// dataset: the images are the same on any number of threads and with any batch size.
/// Order per batch: pixels in `[0, 1]`, then the augmentation, then the normalisation.
///
/// A dataset read from files ([`ImageFolder`](super::ImageFolder)) can fail while a batch is
/// assembled: [`try_epoch`](Self::try_epoch) gives each batch as a `Result`, and `Fit::run`,
/// `evaluate` and `find_lr` return such an error. Iterating with [`epoch`](Self::epoch) or
/// `for batch in &loader` panics with it instead, the way indexing panics where `get` would
/// not.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::data::{DataLoader, ImageDataset};
///
/// let data = ImageDataset::from_u8(vec![128; 10 * 28 * 28], [1, 28, 28], (0..10).collect())?;
/// let loader = DataLoader::new(data, 4)
///     .shuffle(42)
///     .normalize(&[0.1307], &[0.3081]);
/// assert_eq!(loader.len(), 3); // 4 + 4 + 2
/// for batch in &loader {
///     assert_eq!(&batch.images.shape()[1..], &[1, 28, 28]);
///     assert_eq!(batch.images.shape()[0], batch.labels.len());
/// }
/// // drop_last keeps only full batches.
/// let loader = loader.drop_last(true);
/// assert_eq!(loader.epoch(1).map(|b| b.len()).collect::<Vec<_>>(), [4, 4]);
/// # Ok::<(), striate::Error>(())
/// ```
pub struct DataLoader {
    dataset: Arc<dyn Dataset>,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    drop_last: bool,
    normalize: Option<Normalize>,
    augment: Option<Arc<dyn Transform>>,
    prefetch: usize,
    next_epoch: AtomicU64,
}

impl DataLoader {
    /// A loader giving `dataset` in order, in batches of `batch_size` (the last one smaller if
    /// the size does not divide the dataset), without augmentation or normalisation.
    ///
    /// # Panics
    ///
    /// If `batch_size` is 0.
    pub fn new(dataset: impl Dataset + 'static, batch_size: usize) -> Self {
        if batch_size == 0 {
            contract_violation(
                "DataLoader::new",
                "batch_size must be positive",
                "batch_size = 0",
            );
        }
        DataLoader {
            dataset: Arc::new(dataset),
            batch_size,
            shuffle: false,
            seed: 0,
            drop_last: false,
            normalize: None,
            augment: None,
            prefetch: 0,
            next_epoch: AtomicU64::new(0),
        }
    }

    /// Shuffles every epoch, in an order drawn from `seed` and the epoch number. The seed also
    /// seeds the augmentation (which uses 0 without it).
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle = true;
        self.seed = seed;
        self
    }

    /// Drops the last batch of an epoch when it is smaller than `batch_size`.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Normalises each channel `c` to `(x - mean[c]) / std[c]`; one value applies to every
    /// channel. MNIST's usual constants are `mean 0.1307`, `std 0.3081`.
    ///
    /// # Panics
    ///
    /// If `mean` and `std` differ in length or are empty, or a `std` is not positive and
    /// finite. A length that does not match the images' channels panics at the first batch.
    pub fn normalize(mut self, mean: &[f32], std: &[f32]) -> Self {
        check_mean_std("DataLoader::normalize", mean, std);
        self.normalize = Some(Normalize {
            mean: mean.to_vec(),
            std: std.to_vec(),
        });
        self
    }

    /// Applies `transform` to every image `[C, H, W]` (pixels in `[0, 1]`), samples of a batch
    /// in parallel. Every output must have the same shape, which may differ from the input's
    /// (a crop, say).
    pub fn augment(mut self, transform: impl Transform + 'static) -> Self {
        self.augment = Some(Arc::new(transform));
        self
    }

    /// Prepares the next batch on a background thread while the current one is used. Off by
    /// default: assembling a batch costs little next to a training step, and on a machine whose
    /// cores the training step already keeps busy the overlap gains nothing; it pays when a
    /// costly augmentation meets a step that leaves cores idle.
    pub fn prefetch(mut self, prefetch: bool) -> Self {
        self.prefetch = usize::from(prefetch);
        self
    }

    /// Prepares up to `depth` batches ahead on a background thread (0 turns prefetching off,
    /// 1 is [`prefetch(true)`](Self::prefetch)). Memory is bounded by the depth: at most
    /// `depth` finished batches wait, one more is being assembled, and a sample is read (for
    /// an [`ImageFolder`](super::ImageFolder), decoded) only for the batch being assembled.
    pub fn prefetch_depth(mut self, depth: usize) -> Self {
        self.prefetch = depth;
        self
    }

    /// The number of batches in an epoch.
    pub fn len(&self) -> usize {
        self.batch_count(self.dataset.len())
    }

    /// The number of samples per batch (the last batch of an epoch may hold fewer).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Whether an epoch has no batches.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dataset batches are drawn from.
    pub fn dataset(&self) -> &dyn Dataset {
        self.dataset.as_ref()
    }

    /// The batches of epoch `epoch`.
    ///
    /// # Panics
    ///
    /// If a sample cannot be read (a file that does not decode): use
    /// [`try_epoch`](Self::try_epoch) to get that as an error.
    pub fn epoch(&self, epoch: u64) -> Batches {
        self.batches(epoch, self.order(epoch))
    }

    /// The batches of shard `shard.rank()` of epoch `epoch`, for data-parallel training: PyTorch's
    /// `DistributedSampler` semantics. The epoch's order (the one [`DataLoader::epoch`] uses)
    /// is dealt out in turn, sample `k` of the order to shard `k % replicas`, so batch `b` of
    /// every shard together holds exactly batch `b` of a single loader with `replicas` times
    /// the batch size. Every shard gets the same number of samples: when the dataset does not
    /// divide by `replicas`, the order is padded by repeating its first samples (as PyTorch
    /// does), or, with [`DataLoader::drop_last`], its tail is dropped. Augmentation draws per
    /// dataset index, so a sample gets the same image in any shard.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::data::{DataLoader, ImageDataset, Shard};
    ///
    /// let data = ImageDataset::from_u8(vec![0; 5], [1, 1, 1], vec![0, 1, 2, 3, 4])?;
    /// let loader = DataLoader::new(data, 2);
    /// let labels = |rank| loader.epoch_shard(0, Shard::new(rank, 2)).flat_map(|b| b.labels).collect::<Vec<_>>();
    /// assert_eq!(labels(0), [0, 2, 4]);
    /// assert_eq!(labels(1), [1, 3, 0]); // padded with the first sample
    /// assert_eq!(loader.shard_len(2), 2);
    /// # Ok::<(), striate::Error>(())
    /// ```
    pub fn epoch_shard(&self, epoch: u64, shard: Shard) -> Batches {
        let order = self.order(epoch);
        let per_shard = self.shard_samples(shard.replicas);
        let padded = order.iter().cycle().take(per_shard * shard.replicas);
        let mine = padded.skip(shard.rank).step_by(shard.replicas).copied();
        self.batches(epoch, mine.collect())
    }

    /// Shard `shard.rank()` of epoch `epoch` with every sample exactly once over all shards and
    /// no padding (shards may differ by one sample): for evaluation, whose sums over shards
    /// then equal those of the whole dataset.
    pub fn epoch_shard_exact(&self, epoch: u64, shard: Shard) -> Batches {
        let order = self.order(epoch);
        let mine = order.into_iter().skip(shard.rank).step_by(shard.replicas);
        self.batches(epoch, mine.collect())
    }

    /// The number of batches per shard of [`DataLoader::epoch_shard`] over `replicas` shards.
    pub fn shard_len(&self, replicas: usize) -> usize {
        self.batch_count(self.shard_samples(replicas))
    }

    /// Samples per shard: the dataset padded up (or, with `drop_last`, cut down) to a multiple
    /// of `replicas`, divided evenly.
    fn shard_samples(&self, replicas: usize) -> usize {
        let n = self.dataset.len();
        if self.drop_last {
            n / replicas
        } else {
            n.div_ceil(replicas)
        }
    }

    /// The number of batches `samples` samples make.
    fn batch_count(&self, samples: usize) -> usize {
        if self.drop_last {
            samples / self.batch_size
        } else {
            samples.div_ceil(self.batch_size)
        }
    }

    /// Epoch `epoch`'s order of the dataset's indices.
    fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset.len();
        if self.shuffle {
            permutation(n, self.seed, epoch)
        } else {
            (0..n).collect()
        }
    }

    /// The batches of `order`, in batches of `batch_size`.
    fn batches(&self, epoch: u64, order: Vec<usize>) -> Batches {
        let count = self.batch_count(order.len());
        let assembler = Arc::new(Assembler {
            dataset: Arc::clone(&self.dataset),
            augment: self.augment.clone(),
            normalize: self.normalize.clone(),
            seed: self.seed,
            epoch,
            order,
            batch_size: self.batch_size,
        });
        if self.prefetch > 0 {
            Batches::prefetching(assembler, count, self.prefetch)
        } else {
            Batches {
                source: Source::Inline(assembler),
                next: 0,
                count,
            }
        }
    }

    /// The batches of the next epoch: 0 on the first call, then 1, 2, ...
    ///
    /// # Panics
    ///
    /// As [`epoch`](Self::epoch).
    pub fn iter(&self) -> Batches {
        self.epoch(self.next_epoch.fetch_add(1, Ordering::Relaxed))
    }

    /// The batches of epoch `epoch`, each a `Result`: a sample that cannot be read (a file
    /// that does not decode, an image of another size than the rest) ends the epoch with an
    /// error that names it.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::data::{DataLoader, ImageDataset};
    ///
    /// let data = ImageDataset::from_u8(vec![0; 6 * 4], [1, 2, 2], (0..6).collect())?;
    /// let loader = DataLoader::new(data, 4);
    /// for batch in loader.try_epoch(0) {
    ///     let batch = batch?;
    ///     assert!(batch.len() <= 4);
    /// }
    /// # Ok::<(), striate::Error>(())
    /// ```
    pub fn try_epoch(&self, epoch: u64) -> TryBatches {
        self.epoch(epoch).fallible()
    }
}

impl IntoIterator for &DataLoader {
    type Item = Batch;
    type IntoIter = Batches;

    fn into_iter(self) -> Batches {
        self.iter()
    }
}

impl std::fmt::Debug for DataLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("samples", &self.dataset.len())
            .field("batch_size", &self.batch_size)
            .field("shuffle", &self.shuffle)
            .field("seed", &self.seed)
            .field("drop_last", &self.drop_last)
            .field("normalize", &self.normalize)
            .field("augment", &self.augment.is_some())
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

/// Everything needed to build the batches of one epoch, shareable with a prefetch thread.
struct Assembler {
    dataset: Arc<dyn Dataset>,
    augment: Option<Arc<dyn Transform>>,
    normalize: Option<Normalize>,
    seed: u64,
    epoch: u64,
    order: Vec<usize>,
    batch_size: usize,
}

impl Assembler {
    fn batch(&self, b: usize) -> Result<Batch> {
        let start = b * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let indices = &self.order[start..end];
        let (mut data, shape) = match &self.augment {
            None => self.plain(indices)?,
            Some(transform) => self.augmented(transform.as_ref(), indices)?,
        };
        if let Some(normalize) = &self.normalize {
            normalize_in_place(&mut data, &shape, normalize);
        }
        Ok(Batch {
            images: Tensor::from_vec(data, &shape).expect("buffer sized from the batch shape"),
            labels: indices.iter().map(|&i| self.dataset.label(i)).collect(),
        })
    }

    fn plain(&self, indices: &[usize]) -> Result<(Vec<f32>, Vec<usize>)> {
        let [c, h, w] = self.dataset.image_shape();
        let size = c * h * w;
        let mut data = vec![0.0; indices.len() * size];
        // An MNIST batch of 64 converts in microseconds: only big batches, or samples that
        // are decoded from files, repay a fork-join.
        let parallel = data.len() >= PARALLEL_ELEMENTWISE_THRESHOLD || self.dataset.costly_reads();
        if parallel && size > 0 {
            data.par_chunks_mut(size)
                .zip(indices.par_iter())
                .try_for_each(|(out, &i)| self.dataset.try_write_image(i, out))?;
        } else if size > 0 {
            for (out, &i) in data.chunks_mut(size).zip(indices) {
                self.dataset.try_write_image(i, out)?;
            }
        }
        Ok((data, vec![indices.len(), c, h, w]))
    }

    fn augmented(
        &self,
        transform: &dyn Transform,
        indices: &[usize],
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let images: Vec<Tensor> = indices
            .par_iter()
            .map(|&i| {
                let mut rng = sample_rng(self.seed, self.epoch, i as u64);
                Ok(transform.apply(&self.dataset.try_image(i)?, &mut rng))
            })
            .collect::<Result<_>>()?;
        let sample_shape = images.first().map_or_else(
            || self.dataset.image_shape().to_vec(),
            |t| t.shape().to_vec(),
        );
        if sample_shape.len() != 3 || images.iter().any(|t| t.shape() != sample_shape) {
            // Images of several sizes (a folder of photos) need a transform that ends in one
            // size; say which samples differ.
            let first = indices.first().copied().unwrap_or_default();
            let (at, odd) = indices
                .iter()
                .zip(&images)
                .find(|(_, t)| t.shape() != sample_shape)
                .map_or((first, &images[0]), |(&i, t)| (i, t));
            return Err(Error::invalid_data(
                "DataLoader",
                format!(
                    "augmentation that returns images [C, H, W] of one shape (sample {first} \
                     came out {}; end the augmentation with a fixed-size crop or resize)",
                    shape_str(&sample_shape)
                ),
                format!("sample {at} as {}", shape_str(odd.shape())),
            ));
        }
        let mut data = Vec::with_capacity(images.len() * sample_shape.iter().product::<usize>());
        for image in &images {
            data.extend_from_slice(image.as_slice());
        }
        let mut shape = vec![images.len()];
        shape.extend_from_slice(&sample_shape);
        Ok((data, shape))
    }
}

fn normalize_in_place(data: &mut [f32], shape: &[usize], normalize: &Normalize) {
    let (channels, plane) = (shape[1], shape[2] * shape[3]);
    let per_channel = normalize.mean.len();
    if per_channel != 1 && per_channel != channels {
        contract_violation(
            "DataLoader::normalize",
            format_args!("{per_channel} means and stds for {channels} channels"),
            format_args!("batch {}", shape_str(shape)),
        );
    }
    normalize_planes(data, channels, plane, &normalize.mean, &normalize.std);
}

/// Where the batches of an epoch come from.
enum Source {
    /// Built on demand, on the caller's thread.
    Inline(Arc<Assembler>),
    /// Built one ahead on a background thread.
    Prefetch {
        receiver: Option<Receiver<Result<Batch>>>,
        thread: Option<JoinHandle<()>>,
    },
}

/// The batches of one epoch, in order; made by [`DataLoader::epoch`] or [`DataLoader::iter`].
///
/// # Panics
///
/// Iterating panics if a sample cannot be read; [`TryBatches`] gives that as an error.
pub struct Batches {
    source: Source,
    next: usize,
    count: usize,
}

impl Batches {
    fn prefetching(assembler: Arc<Assembler>, count: usize, depth: usize) -> Self {
        // With a rendezvous channel (depth 1) the thread builds exactly one batch ahead, then
        // waits; each extra unit of depth lets one more finished batch wait in the channel.
        let (sender, receiver) = sync_channel(depth - 1);
        let thread = std::thread::Builder::new()
            .name("striate-prefetch".into())
            .spawn(move || {
                for b in 0..count {
                    let batch = assembler.batch(b);
                    let failed = batch.is_err();
                    if sender.send(batch).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the prefetch thread");
        Batches {
            source: Source::Prefetch {
                receiver: Some(receiver),
                thread: Some(thread),
            },
            next: 0,
            count,
        }
    }
}

impl Batches {
    /// The next batch, or the error that kept it from being assembled (after which the epoch
    /// ends).
    fn next_result(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.count {
            return None;
        }
        let batch = match &mut self.source {
            Source::Inline(assembler) => assembler.batch(self.next),
            Source::Prefetch { receiver, thread } => {
                match receiver.as_ref().expect("open while iterating").recv() {
                    Ok(batch) => batch,
                    // The thread ended early: only a panic (in a transform, say) does that;
                    // raise it here rather than end the epoch short.
                    Err(_) => match thread.take().map(JoinHandle::join) {
                        Some(Err(panic)) => std::panic::resume_unwind(panic),
                        _ => unreachable!("prefetch thread ended before its last batch"),
                    },
                }
            }
        };
        // After an error the epoch is over: the prefetch thread has stopped.
        self.next = if batch.is_err() {
            self.count
        } else {
            self.next + 1
        };
        Some(batch)
    }
}

impl Iterator for Batches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.next_result().map(|batch| {
            batch.unwrap_or_else(|error| panic!("{error} (try_epoch gives this as an Err)"))
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches {}

impl Batches {
    /// The same batches as `Result`s: a sample the dataset cannot read (an image file that
    /// fails to decode) arrives as an `Err` instead of a panic. For any epoch or shard, as
    /// [`DataLoader::try_epoch`] is for a whole epoch.
    pub fn fallible(self) -> TryBatches {
        TryBatches(self)
    }
}

/// The batches of one epoch as `Result`s; made by [`DataLoader::try_epoch`] and
/// [`Batches::fallible`]. After an error the iterator ends.
pub struct TryBatches(Batches);

impl Iterator for TryBatches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        self.0.next_result()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        if let Source::Prefetch { receiver, thread } = &mut self.source {
            // Closing the channel first makes a thread blocked in `send` return at once.
            drop(receiver.take());
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, RngExt};

    use super::*;
    use crate::data::ImageDataset;

    /// `n` images of 2×3×3; every pixel of image `i` is `i / 255`, label `i % 4`.
    fn numbered(n: usize) -> ImageDataset {
        let pixels = (0..n).flat_map(|i| [i as u8; 18]).collect();
        ImageDataset::from_u8(pixels, [2, 3, 3], (0..n).map(|i| i % 4).collect()).unwrap()
    }

    /// The dataset index of each image in a batch, read back from its pixels.
    fn ids(batch: &Batch) -> Vec<usize> {
        let size = batch.images.len() / batch.len();
        batch
            .images
            .as_slice()
            .chunks(size)
            .map(|c| (c[0] * 255.0).round() as usize)
            .collect()
    }

    fn all_ids(batches: Batches) -> Vec<usize> {
        batches.flat_map(|b| ids(&b)).collect()
    }

    #[test]
    fn in_order_batches_with_a_short_last_one() {
        let loader = DataLoader::new(numbered(10), 4);
        let batches: Vec<Batch> = loader.epoch(0).collect();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[2].images.shape(), &[2, 2, 3, 3]);
        assert_eq!(batches[1].labels, [0, 1, 2, 3]);
        assert_eq!(all_ids(loader.epoch(0)), (0..10).collect::<Vec<_>>());
        assert_eq!(loader.drop_last(true).epoch(0).len(), 2);
    }

    #[test]
    fn shuffling_is_seeded_per_epoch_and_covers_every_sample() {
        let loader = DataLoader::new(numbered(50), 8).shuffle(3);
        let first = all_ids(loader.epoch(0));
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(first, sorted);
        assert_eq!(first, all_ids(loader.epoch(0)));
        assert_ne!(first, all_ids(loader.epoch(1)));
        // Iterating takes epochs 0, 1, ... in turn.
        assert_eq!(all_ids(loader.iter()), first);
        assert_eq!(all_ids(loader.iter()), all_ids(loader.epoch(1)));
        let other = DataLoader::new(numbered(50), 8).shuffle(4);
        assert_ne!(first, all_ids(other.epoch(0)));
        // Labels travel with their images.
        for batch in loader.epoch(5) {
            let expected: Vec<usize> = ids(&batch).iter().map(|i| i % 4).collect();
            assert_eq!(batch.labels, expected);
        }
    }

    #[test]
    fn normalisation_per_channel() {
        let loader = DataLoader::new(numbered(3), 3).normalize(&[0.0, 1.0], &[0.5, 2.0]);
        let batch = loader.epoch(0).next().unwrap();
        let x = batch.images.as_slice();
        let v = 2.0 / 255.0;
        // Image 2, channel 0 then channel 1.
        assert!((x[36] - v / 0.5).abs() < 1e-6);
        assert!((x[45] - (v - 1.0) / 2.0).abs() < 1e-6);
    }

    #[test]
    #[should_panic(expected = "DataLoader::normalize: 3 means and stds for 2 channels")]
    fn normalisation_must_match_channels() {
        let loader = DataLoader::new(numbered(3), 3).normalize(&[0.0; 3], &[1.0; 3]);
        let _ = loader.epoch(0).next();
    }

    /// Adds noise from the sample's stream, and crops to 2×2 so the output shape differs.
    fn noisy_crop(image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        let noise: f32 = rng.random();
        let cropped = image.narrow(1, 0, 2).narrow(2, 1, 2);
        cropped.map(move |x| x + noise)
    }

    #[test]
    fn augmentation_is_the_same_on_any_thread_count_and_batch_size() {
        let collect = |threads: usize, batch_size: usize, prefetch: bool| -> Vec<Vec<f32>> {
            let loader = DataLoader::new(numbered(37), batch_size)
                .shuffle(11)
                .augment(noisy_crop)
                .prefetch(prefetch);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let images: Vec<Vec<f32>> = pool.install(|| {
                loader
                    .epoch(2)
                    .flat_map(|b| {
                        assert_eq!(&b.images.shape()[1..], &[2, 2, 2]);
                        b.images
                            .as_slice()
                            .chunks(8)
                            .map(<[f32]>::to_vec)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            });
            images
        };
        let reference = collect(1, 5, false);
        assert_eq!(reference.len(), 37);
        assert_eq!(collect(2, 5, false), reference);
        assert_eq!(collect(2, 5, true), reference);
        assert_eq!(collect(1, 16, false), reference);
        // Different epochs draw different noise.
        let loader = DataLoader::new(numbered(37), 37).augment(noisy_crop);
        let a = loader.epoch(0).next().unwrap();
        let b = loader.epoch(1).next().unwrap();
        assert_ne!(a.images, b.images);
    }

    #[test]
    fn prefetching_gives_the_same_batches_and_stops_early_cleanly() {
        let plain = DataLoader::new(numbered(30), 7).shuffle(1);
        let ahead = DataLoader::new(numbered(30), 7).shuffle(1).prefetch(true);
        assert!(plain.epoch(4).eq(ahead.epoch(4)));
        // Dropping the iterator mid-epoch joins the thread without waiting for the rest.
        let mut batches = ahead.epoch(0);
        assert_eq!(batches.len(), 5);
        batches.next().unwrap();
        drop(batches);
    }

    #[test]
    #[should_panic(expected = "broken transform")]
    fn a_panic_in_the_prefetch_thread_reaches_the_caller() {
        let loader = DataLoader::new(numbered(4), 2)
            .augment(|_: &Tensor, _: &mut dyn Rng| -> Tensor { panic!("broken transform") })
            .prefetch(true);
        for _ in &loader {}
    }

    #[test]
    #[should_panic(
        expected = "DataLoader: expected augmentation that returns images [C, H, W] of one shape"
    )]
    fn augmentation_shapes_must_agree() {
        // Image 0 keeps its shape, the others are cropped.
        let loader = DataLoader::new(numbered(4), 4).augment(|t: &Tensor, _: &mut dyn Rng| {
            if t.as_slice()[0] == 0.0 {
                t.clone()
            } else {
                t.narrow(1, 0, 1)
            }
        });
        for _ in loader.epoch(0) {}
    }

    #[test]
    fn large_batches_take_the_parallel_path_with_the_same_result() {
        let data = numbered(2000);
        let big = DataLoader::new(data.clone(), 2000).epoch(0).next().unwrap();
        let small: Vec<f32> = DataLoader::new(data, 10)
            .epoch(0)
            .flat_map(|b| b.images.to_vec())
            .collect();
        assert_eq!(big.images.as_slice(), &small[..]);
    }
}
