//! `Dataset`: labelled images by index; `ImageDataset`, the in-memory one; `Subset` and the
//! train/validation split.

use std::sync::Arc;

use rand::seq::SliceRandom;

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::tensor::check::{
    checked_volume, contract_violation, expect_index, expect_rank, shape_str,
};
use crate::transforms::sample_rng;

/// Labelled images addressed by index, the source a [`DataLoader`](super::DataLoader) draws
/// batches from.
///
/// Images are `[channels, height, width]` f32, all of one shape; pixel datasets keep them in
/// `[0, 1]` so augmentations and normalisation see the range they expect. Implementations are
/// `Send + Sync`: the loader reads samples from several threads at once.
pub trait Dataset: Send + Sync {
    /// The number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of every image, `[channels, height, width]`.
    fn image_shape(&self) -> [usize; 3];

    /// The class label of sample `index`.
    ///
    /// # Panics
    ///
    /// If `index >= self.len()`.
    fn label(&self, index: usize) -> usize;

    /// Writes image `index` into `out`, row-major `[channels, height, width]`.
    ///
    /// This is the loader's hot path: it writes straight into the batch buffer.
    ///
    /// # Panics
    ///
    /// If `index >= self.len()` or `out.len()` is not the product of
    /// [`image_shape`](Dataset::image_shape).
    fn write_image(&self, index: usize, out: &mut [f32]);

    /// Image `index` as a tensor `[channels, height, width]`.
    ///
    /// # Panics
    ///
    /// If `index >= self.len()`.
    fn image(&self, index: usize) -> Tensor {
        let shape = self.image_shape();
        let mut data = vec![0.0; shape.iter().product()];
        self.write_image(index, &mut data);
        Tensor::from_vec(data, &shape).expect("buffer sized from image_shape")
    }

    /// [`write_image`](Dataset::write_image) for datasets whose samples can fail to read (a
    /// file that does not decode, an image of another size): the error names the sample's
    /// source. The [`DataLoader`](super::DataLoader) reads through this, so such an error
    /// reaches [`try_epoch`](super::DataLoader::try_epoch) and `Fit::run` as an `Err`.
    ///
    /// The default calls `write_image`, which cannot fail.
    ///
    /// # Errors
    ///
    /// Whatever reading sample `index` can meet; see the implementing type.
    ///
    /// # Panics
    ///
    /// As [`write_image`](Dataset::write_image).
    fn try_write_image(&self, index: usize, out: &mut [f32]) -> Result<()> {
        self.write_image(index, out);
        Ok(())
    }

    /// Image `index` as a tensor `[channels, height, width]` at its own size, which may differ
    /// from [`image_shape`](Dataset::image_shape) for a dataset of images of several sizes (an
    /// [`ImageFolder`](super::ImageFolder) without a resize); an augmentation then has to bring
    /// every image to one size. The loader reads augmented samples through this.
    ///
    /// The default calls [`image`](Dataset::image), which cannot fail.
    ///
    /// # Errors
    ///
    /// As [`try_write_image`](Dataset::try_write_image).
    fn try_image(&self, index: usize) -> Result<Tensor> {
        Ok(self.image(index))
    }

    /// Whether reading a sample costs much more than copying it (decoding a file): the
    /// [`DataLoader`](super::DataLoader) then reads the samples of every batch in parallel,
    /// however small the batch. `false` unless a type says otherwise.
    fn costly_reads(&self) -> bool {
        false
    }
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn image_shape(&self) -> [usize; 3] {
        (**self).image_shape()
    }
    fn label(&self, index: usize) -> usize {
        (**self).label(index)
    }
    fn write_image(&self, index: usize, out: &mut [f32]) {
        (**self).write_image(index, out)
    }
    fn image(&self, index: usize) -> Tensor {
        (**self).image(index)
    }
    fn try_write_image(&self, index: usize, out: &mut [f32]) -> Result<()> {
        (**self).try_write_image(index, out)
    }
    fn try_image(&self, index: usize) -> Result<Tensor> {
        (**self).try_image(index)
    }
    fn costly_reads(&self) -> bool {
        (**self).costly_reads()
    }
}

/// Pixel storage: MNIST-family data stays as bytes (a quarter of the memory of f32) and is
/// scaled to `[0, 1]` per batch, which costs microseconds.
#[derive(Clone)]
enum Pixels {
    U8(Arc<[u8]>),
    F32(Arc<[f32]>),
}

/// Labelled images held in memory, cheap to clone (the buffers are shared).
///
/// # Examples
///
/// ```
/// use striate::data::{Dataset, ImageDataset};
///
/// // Two 1×2×2 images stored as bytes; pixels come out scaled to [0, 1].
/// let data = ImageDataset::from_u8(vec![0, 255, 51, 102, 255, 255, 0, 0], [1, 2, 2], vec![3, 7])?;
/// assert_eq!(data.len(), 2);
/// assert_eq!(data.label(1), 7);
/// assert_eq!(data.image(0).as_slice(), &[0.0, 1.0, 0.2, 0.4]);
/// assert_eq!(data.images().shape(), &[2, 1, 2, 2]);
/// # Ok::<(), striate::Error>(())
/// ```
#[derive(Clone)]
pub struct ImageDataset {
    pixels: Pixels,
    image_shape: [usize; 3],
    labels: Arc<[usize]>,
}

impl ImageDataset {
    /// Images stored as bytes `0..=255`, read as `byte / 255`: `pixels` holds
    /// `labels.len()` images of `image_shape` (`[channels, height, width]`), row-major.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidData`] if `pixels.len()` is not `labels.len()` times the image size.
    pub fn from_u8(pixels: Vec<u8>, image_shape: [usize; 3], labels: Vec<usize>) -> Result<Self> {
        check_length(
            "ImageDataset::from_u8",
            pixels.len(),
            image_shape,
            labels.len(),
        )?;
        Ok(ImageDataset {
            pixels: Pixels::U8(pixels.into()),
            image_shape,
            labels: labels.into(),
        })
    }

    /// Images given as an f32 tensor `[n, channels, height, width]`, used as they are.
    ///
    /// # Panics
    ///
    /// If `images` is not rank 4 or `labels.len()` differs from its first axis.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::Tensor;
    /// use striate::data::{Dataset, ImageDataset};
    ///
    /// let data = ImageDataset::from_tensor(&Tensor::zeros(&[5, 3, 8, 8]), vec![0, 1, 2, 1, 0]);
    /// assert_eq!(data.image_shape(), [3, 8, 8]);
    /// ```
    pub fn from_tensor(images: &Tensor, labels: Vec<usize>) -> Self {
        let op = "ImageDataset::from_tensor";
        expect_rank(op, "images", images.shape(), 4);
        let s = images.shape();
        if s[0] != labels.len() {
            contract_violation(
                op,
                format_args!("{} labels for {} images", labels.len(), s[0]),
                format_args!("images {}", shape_str(s)),
            );
        }
        ImageDataset {
            pixels: Pixels::F32(images.as_slice().into()),
            image_shape: [s[1], s[2], s[3]],
            labels: labels.into(),
        }
    }

    /// All labels, in sample order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The number of classes: one more than the largest label (0 if empty).
    pub fn num_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| m + 1)
    }

    /// Every image as one tensor `[n, channels, height, width]` (f32: four bytes a pixel, so
    /// 188 MB for MNIST's 60,000 training digits; a [`DataLoader`](super::DataLoader) converts
    /// only a batch at a time).
    pub fn images(&self) -> Tensor {
        let [c, h, w] = self.image_shape;
        let data = match &self.pixels {
            Pixels::U8(bytes) => bytes.iter().map(|&b| byte_to_unit(b)).collect(),
            Pixels::F32(values) => values.to_vec(),
        };
        Tensor::from_vec(data, &[self.len(), c, h, w]).expect("length checked at construction")
    }
}

impl Dataset for ImageDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn image_shape(&self) -> [usize; 3] {
        self.image_shape
    }

    fn label(&self, index: usize) -> usize {
        expect_index("ImageDataset::label", "index", index, self.len());
        self.labels[index]
    }

    fn write_image(&self, index: usize, out: &mut [f32]) {
        expect_index("ImageDataset::write_image", "index", index, self.len());
        let size: usize = self.image_shape.iter().product();
        if out.len() != size {
            contract_violation(
                "write_image",
                format_args!("output length {} != image size {size}", out.len()),
                format_args!("image shape {}", shape_str(&self.image_shape)),
            );
        }
        let range = index * size..(index + 1) * size;
        match &self.pixels {
            Pixels::U8(bytes) => {
                for (o, &b) in out.iter_mut().zip(&bytes[range]) {
                    *o = byte_to_unit(b);
                }
            }
            Pixels::F32(values) => out.copy_from_slice(&values[range]),
        }
    }
}

impl std::fmt::Debug for ImageDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageDataset")
            .field("len", &self.len())
            .field("image_shape", &self.image_shape)
            .field("num_classes", &self.num_classes())
            .finish()
    }
}

fn byte_to_unit(b: u8) -> f32 {
    f32::from(b) / 255.0
}

fn check_length(origin: &str, len: usize, image_shape: [usize; 3], n: usize) -> Result<()> {
    let Some(expected) = checked_volume(&[n, image_shape[0], image_shape[1], image_shape[2]])
    else {
        return Err(Error::invalid_data(
            origin,
            "an image count and shape whose pixel count fits in usize",
            format!("{n} images of {}", shape_str(&image_shape)),
        ));
    };
    if len != expected {
        return Err(Error::invalid_data(
            origin,
            format!(
                "{expected} pixels for {n} images of {}",
                shape_str(&image_shape)
            ),
            format!("{len} pixels"),
        ));
    }
    Ok(())
}

/// The samples of a dataset at the given indices, in that order.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use striate::Tensor;
/// use striate::data::{Dataset, ImageDataset, Subset};
///
/// let all = Arc::new(ImageDataset::from_tensor(&Tensor::zeros(&[4, 1, 2, 2]), vec![0, 1, 2, 3]));
/// let odd = Subset::new(all, vec![1, 3]);
/// assert_eq!((odd.len(), odd.label(1)), (2, 3));
/// ```
pub struct Subset<D> {
    dataset: Arc<D>,
    indices: Arc<[usize]>,
}

impl<D: Dataset> Subset<D> {
    /// The samples of `dataset` at `indices`.
    ///
    /// # Panics
    ///
    /// If an index is out of range for `dataset`.
    pub fn new(dataset: Arc<D>, indices: Vec<usize>) -> Self {
        if let Some(&bad) = indices.iter().find(|&&i| i >= dataset.len()) {
            contract_violation(
                "Subset::new",
                format_args!("index {bad} out of range"),
                format_args!("dataset of {} samples", dataset.len()),
            );
        }
        Subset {
            dataset,
            indices: indices.into(),
        }
    }

    /// The indices into the underlying dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The underlying dataset.
    pub fn dataset(&self) -> &Arc<D> {
        &self.dataset
    }
}

impl<D> Clone for Subset<D> {
    fn clone(&self) -> Self {
        Subset {
            dataset: Arc::clone(&self.dataset),
            indices: Arc::clone(&self.indices),
        }
    }
}

impl<D: Dataset> Dataset for Subset<D> {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn image_shape(&self) -> [usize; 3] {
        self.dataset.image_shape()
    }
    fn label(&self, index: usize) -> usize {
        expect_index("Subset::label", "index", index, self.len());
        self.dataset.label(self.indices[index])
    }
    fn write_image(&self, index: usize, out: &mut [f32]) {
        expect_index("Subset::write_image", "index", index, self.len());
        self.dataset.write_image(self.indices[index], out)
    }
    fn image(&self, index: usize) -> Tensor {
        expect_index("Subset::image", "index", index, self.len());
        self.dataset.image(self.indices[index])
    }
    fn try_write_image(&self, index: usize, out: &mut [f32]) -> Result<()> {
        expect_index("Subset::try_write_image", "index", index, self.len());
        self.dataset.try_write_image(self.indices[index], out)
    }
    fn try_image(&self, index: usize) -> Result<Tensor> {
        expect_index("Subset::try_image", "index", index, self.len());
        self.dataset.try_image(self.indices[index])
    }
    fn costly_reads(&self) -> bool {
        self.dataset.costly_reads()
    }
}

/// Splits a dataset at random into `(train, validation)`, the validation part holding
/// `round(validation_fraction × len)` samples; the same `seed` gives the same split.
///
/// # Panics
///
/// If `validation_fraction` is not in `[0, 1]`.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::data::{Dataset, ImageDataset, train_validation_split};
///
/// let data = ImageDataset::from_tensor(&Tensor::zeros(&[10, 1, 2, 2]), (0..10).collect());
/// let (train, val) = train_validation_split(data, 0.2, 42);
/// assert_eq!((train.len(), val.len()), (8, 2));
/// ```
pub fn train_validation_split<D: Dataset>(
    dataset: D,
    validation_fraction: f64,
    seed: u64,
) -> (Subset<D>, Subset<D>) {
    if !(0.0..=1.0).contains(&validation_fraction) {
        contract_violation(
            "train_validation_split",
            "validation_fraction must be in [0, 1]",
            format_args!("validation_fraction = {validation_fraction}"),
        );
    }
    let n = dataset.len();
    let n_validation = ((n as f64) * validation_fraction).round() as usize;
    // u64::MAX as the epoch keeps this stream apart from the loaders' per-epoch shuffles.
    let mut order = permutation(n, seed, u64::MAX);
    let validation = order.split_off(n - n_validation);
    let dataset = Arc::new(dataset);
    (
        Subset::new(Arc::clone(&dataset), order),
        Subset::new(dataset, validation),
    )
}

/// A random permutation of `0..n`, a function of `(seed, epoch)` alone.
pub(crate) fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    // The sample streams use indices below n; u64::MAX is never one of them.
    order.shuffle(&mut sample_rng(seed, epoch, u64::MAX));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(n: usize) -> ImageDataset {
        let pixels = (0..n * 4).map(|i| (i % 256) as u8).collect();
        ImageDataset::from_u8(pixels, [1, 2, 2], (0..n).map(|i| i % 3).collect()).unwrap()
    }

    #[test]
    fn from_u8_checks_length() {
        let err = ImageDataset::from_u8(vec![0; 7], [1, 2, 2], vec![0, 1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ImageDataset::from_u8: expected 8 pixels for 2 images of [1, 2, 2], found 7 pixels"
        );
    }

    #[test]
    fn images_match_per_sample_reads() {
        let data = tiny(3);
        let all = data.images();
        assert_eq!(all.shape(), &[3, 1, 2, 2]);
        for i in 0..3 {
            assert_eq!(
                &all.as_slice()[i * 4..(i + 1) * 4],
                data.image(i).as_slice()
            );
        }
        assert_eq!(data.image(1).as_slice()[0], 4.0 / 255.0);
        assert_eq!(data.num_classes(), 3);
    }

    #[test]
    fn split_is_a_seeded_partition() {
        let (train, val) = train_validation_split(tiny(100), 0.1, 7);
        assert_eq!((train.len(), val.len()), (90, 10));
        let mut all: Vec<usize> = train
            .indices()
            .iter()
            .chain(val.indices())
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        let (_, again) = train_validation_split(tiny(100), 0.1, 7);
        assert_eq!(val.indices(), again.indices());
        let (_, other) = train_validation_split(tiny(100), 0.1, 8);
        assert_ne!(val.indices(), other.indices());
        assert_eq!(val.label(0), val.dataset().label(val.indices()[0]));
    }

    #[test]
    #[should_panic(expected = "train_validation_split: validation_fraction must be in [0, 1]")]
    fn split_rejects_bad_fraction() {
        let _ = train_validation_split(tiny(4), 1.5, 0);
    }

    #[test]
    #[should_panic(expected = "Subset::new: index 4 out of range (dataset of 4 samples)")]
    fn subset_checks_indices() {
        let _ = Subset::new(Arc::new(tiny(4)), vec![0, 4]);
    }
}
