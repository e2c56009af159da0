//! Data augmentation: seeded, composable transforms of one image `[C, H, W]`.
//!
//! Every transform draws from an explicit rng. Batched application gives each sample its own
//! stream, derived from `(seed, epoch, index)` by [`sample_rng`], so the same seed produces the
//! same images on any number of threads ([`apply_batch`]).
//!
//! Images are f32 `[channels, height, width]`. Photometric transforms expect values in `[0, 1]`
//! and clamp to it, as torchvision does for float images; [`Normalize`] usually comes last.
//!
//! | striate | torchvision (`transforms.v2`) |
//! |---|---|
//! | [`RandomHorizontalFlip`], [`RandomVerticalFlip`] | same names |
//! | [`RandomRotation`], [`RandomAffine`] | same names; angles counter-clockwise in both (see [`Affine`]) |
//! | [`RandomCrop`], [`CenterCrop`], [`Resize`], [`RandomResizedCrop`] | same names; bilinear, antialiased when shrinking as torchvision's default (`antialias(false)` for the plain bilinear); `Resize::shorter_side(n)` is `Resize(n)` |
//! | [`functional::to_tensor`], [`Normalize::imagenet`] | `ToTensor` (8-bit HWC to f32 CHW in `[0, 1]`), `Normalize(IMAGENET_MEAN, IMAGENET_STD)` |
//! | [`RandomZoom`], [`RandomTranslation`] | Keras' `RandomZoom`, `RandomTranslation` |
//! | [`RandomBrightness`], [`RandomContrast`], [`ColorJitter`] | `ColorJitter` |
//! | [`GaussianNoise`], [`Normalize`], [`RandomErasing`] | same names |
//! | [`ElasticTransform`] | `ElasticTransform` (displacement in pixels, as in Simard et al.) |
//! | [`Compose`], [`RandomApply`], [`RandomChoice`] | same names |
//! | [`functional`] | `transforms.v2.functional` |
//!
//! # Examples
//!
//! ```
//! use striate::Tensor;
//! use striate::transforms::{
//!     apply_batch, Compose, ElasticTransform, GaussianNoise, Interpolation, RandomCrop,
//!     RandomRotation,
//! };
//!
//! let augment = Compose::new(vec![
//!     Box::new(RandomRotation::new(15.0).interpolation(Interpolation::Bilinear)),
//!     Box::new(RandomCrop::new(28).padding(2)),
//!     Box::new(ElasticTransform::new(34.0, 4.0)),
//!     Box::new(GaussianNoise::new(0.05)),
//! ]);
//! let batch = Tensor::zeros(&[8, 1, 28, 28]);
//! let epoch = 3;
//! let augmented = apply_batch(&augment, &batch, 42, epoch, 0);
//! assert_eq!(augmented.shape(), &[8, 1, 28, 28]);
//! assert_eq!(augmented, apply_batch(&augment, &batch, 42, epoch, 0));
//! ```

/// Writes, inside a transform's `impl` block, the builder setters of how it resamples:
/// `interpolation`, `fill` (checked finite, naming the transform) and `fill_mode`, each
/// setting the field of the same name. One definition, so the five resampling transforms
/// document and check them alike.
macro_rules! resampling_setters {
    ($op:literal $(, $setter:ident)+) => {
        $(resampling_setters!(@ $op $setter);)+
    };
    (@ $op:literal interpolation) => {
        /// How pixels are resampled.
        pub fn interpolation(mut self, interpolation: $crate::transforms::Interpolation) -> Self {
            self.interpolation = interpolation;
            self
        }
    };
    (@ $op:literal fill) => {
        /// The value of pixels that come from outside the image.
        ///
        /// # Panics
        ///
        /// If `fill` is not finite.
        pub fn fill(mut self, fill: f32) -> Self {
            $crate::tensor::check::expect_finite($op, "fill", fill);
            self.fill = fill;
            self
        }
    };
    (@ $op:literal fill_mode) => {
        /// How the fill is blended in at the border (default [`FillMode::Taps`];
        /// [`FillMode::TorchvisionMask`] matches torchvision given an explicit `fill`).
        pub fn fill_mode(mut self, fill_mode: $crate::transforms::FillMode) -> Self {
            self.fill_mode = fill_mode;
            self
        }
    };
}

mod compose;
mod elastic;
mod geometric;
pub(crate) mod photometric;
mod sampling;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, RngExt, SeedableRng};
use rayon::prelude::*;

use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, expect_rank, shape_str};

pub use compose::{Compose, RandomApply, RandomChoice};
pub use elastic::ElasticTransform;
pub use geometric::{
    Affine, CenterCrop, Fill, FillMode, PaddingMode, RandomAffine, RandomCrop,
    RandomHorizontalFlip, RandomResizedCrop, RandomRotation, RandomTranslation, RandomVerticalFlip,
    RandomZoom, Resize,
};
pub use photometric::{
    Clamp, ColorJitter, EraseValue, GaussianNoise, IMAGENET_MEAN, IMAGENET_STD, Normalize,
    RandomBrightness, RandomContrast, RandomErasing,
};
pub use sampling::Interpolation;

/// Deterministic image operations, the building blocks of the random transforms (like
/// torchvision's `transforms.v2.functional`).
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::Interpolation;
/// use striate::transforms::functional::{hflip, rotate};
///
/// let image = Tensor::from_vec((0..9).map(|v| v as f32).collect(), &[1, 3, 3]).unwrap();
/// assert_eq!(hflip(&image).as_slice(), &[2.0, 1.0, 0.0, 5.0, 4.0, 3.0, 8.0, 7.0, 6.0]);
/// // A quarter turn counter-clockwise: the right column becomes the top row.
/// let turned = rotate(&image, 90.0, Interpolation::Nearest, 0.0);
/// assert_eq!(turned.as_slice(), &[2.0, 5.0, 8.0, 1.0, 4.0, 7.0, 0.0, 3.0, 6.0]);
/// ```
pub mod functional {
    pub use super::elastic::{displace, elastic_displacement};
    pub use super::geometric::{
        affine, center_crop, crop, hflip, resize, resize_antialiased, resized_crop, rotate,
        translate, vflip,
    };
    pub use super::photometric::{
        adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, erase, normalize,
        to_tensor,
    };
}

/// A random (or deterministic) transformation of one image `[C, H, W]`.
///
/// Closures `Fn(&Tensor, &mut dyn Rng) -> Tensor` are transforms too.
///
/// # Examples
///
/// ```
/// use rand::{Rng, SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{Compose, RandomHorizontalFlip, Transform};
///
/// let invert = |image: &Tensor, _: &mut dyn Rng| image.map(|v| 1.0 - v);
/// let pipeline = Compose::new(vec![Box::new(invert), Box::new(RandomHorizontalFlip::new(1.0))]);
/// let image = Tensor::from_vec(vec![0.0, 0.25], &[1, 1, 2]).unwrap();
/// let out = pipeline.apply(&image, &mut StdRng::seed_from_u64(0));
/// assert_eq!(out.as_slice(), &[0.75, 1.0]);
/// ```
pub trait Transform: Send + Sync {
    /// Transforms one image `[channels, height, width]`, drawing randomness from `rng`.
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor;
}

impl<F> Transform for F
where
    F: Fn(&Tensor, &mut dyn Rng) -> Tensor + Send + Sync,
{
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        self(image, rng)
    }
}

/// The random stream of one sample: a function of `(seed, epoch, index)` alone, so parallel
/// augmentation is reproducible whatever the thread count or scheduling.
///
/// # Examples
///
/// ```
/// use rand::RngExt;
/// use striate::transforms::sample_rng;
///
/// let a: u64 = sample_rng(7, 0, 42).random();
/// let b: u64 = sample_rng(7, 0, 42).random();
/// let c: u64 = sample_rng(7, 1, 42).random();
/// assert_eq!(a, b);
/// assert_ne!(a, c);
/// ```
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> Xoshiro256PlusPlus {
    // SplitMix64 finalisers decorrelate neighbouring (epoch, index) pairs before seeding.
    let mixed = splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ index);
    Xoshiro256PlusPlus::seed_from_u64(mixed)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Applies `transform` to every sample of a batch `[N, C, H, W]`, in parallel over samples.
///
/// Sample `i` draws from [`sample_rng`]`(seed, epoch, first_index + i)`, so the result depends
/// only on the arguments, not on the number of threads; `first_index` is the position of the
/// batch's first sample in the epoch, which keeps streams distinct across batches.
///
/// An empty batch is returned unchanged.
///
/// # Shapes
///
/// `images`: `[N, C, H, W]`; result: `[N, C', H', W']`, the transform's output shape.
///
/// # Panics
///
/// If `images` is not rank 4, or the transform returns different shapes for different samples.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::{apply_batch, RandomCrop};
///
/// let batch = Tensor::ones(&[4, 1, 28, 28]);
/// let cropped = apply_batch(&RandomCrop::new(24), &batch, 0, 0, 0);
/// assert_eq!(cropped.shape(), &[4, 1, 24, 24]);
/// ```
pub fn apply_batch(
    transform: &dyn Transform,
    images: &Tensor,
    seed: u64,
    epoch: u64,
    first_index: u64,
) -> Tensor {
    const OP: &str = "apply_batch";
    expect_rank(OP, "images", images.shape(), 4);
    let count = images.shape()[0];
    if count == 0 {
        return images.clone();
    }
    let sample_shape = &images.shape()[1..];
    let sample_len: usize = sample_shape.iter().product();
    let input = images.as_slice();
    let run = |i: usize| {
        let data = input[i * sample_len..(i + 1) * sample_len].to_vec();
        let sample = Tensor::from_vec(data, sample_shape).expect("slice length matches shape");
        let mut rng = sample_rng(seed, epoch, first_index.wrapping_add(i as u64));
        transform.apply(&sample, &mut rng)
    };

    // Sample 0 fixes the output shape; the others are checked against it.
    let first = run(0);
    let out_sample_shape = first.shape().to_vec();
    let out_len = first.len();
    let mut out = vec![0.0f32; count * out_len];
    out[..out_len].copy_from_slice(first.as_slice());
    if out_len > 0 {
        out[out_len..]
            .par_chunks_mut(out_len)
            .enumerate()
            .for_each(|(k, chunk)| {
                let result = run(k + 1);
                if result.shape() != out_sample_shape.as_slice() {
                    contract_violation(
                        OP,
                        "the transform must return the same shape for every sample",
                        format_args!(
                            "sample 0 {}, sample {} {}",
                            shape_str(&out_sample_shape),
                            k + 1,
                            shape_str(result.shape())
                        ),
                    );
                }
                chunk.copy_from_slice(result.as_slice());
            });
    }
    let mut out_shape = vec![count];
    out_shape.extend_from_slice(&out_sample_shape);
    Tensor::from_vec(out, &out_shape).expect("length matches shape")
}

/// An image size, `height` by `width` pixels.
///
/// A single number means a square; note that torchvision's `Resize(n)` instead scales the
/// shorter edge to `n`.
///
/// # Examples
///
/// ```
/// use striate::transforms::Size;
///
/// assert_eq!(Size::from(28), Size::new(28, 28));
/// assert_eq!(Size::from((24, 32)), Size { height: 24, width: 32 });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Size {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl Size {
    /// A size of `height` rows by `width` columns.
    pub fn new(height: usize, width: usize) -> Size {
        Size { height, width }
    }
}

impl From<usize> for Size {
    fn from(side: usize) -> Size {
        Size::new(side, side)
    }
}

impl From<(usize, usize)> for Size {
    fn from((height, width): (usize, usize)) -> Size {
        Size::new(height, width)
    }
}

// ---------------------------------------------------------------- shared helpers

/// The `(channels, height, width)` of an image, after checking that it is rank 3.
#[track_caller]
fn image_dims(op: &str, image: &Tensor) -> (usize, usize, usize) {
    expect_rank(op, "image", image.shape(), 3);
    let s = image.shape();
    (s[0], s[1], s[2])
}

/// Wraps transform output in a tensor `[channels, height, width]`.
fn image_tensor(data: Vec<f32>, channels: usize, height: usize, width: usize) -> Tensor {
    Tensor::from_vec(data, &[channels, height, width]).expect("kernel output matches its shape")
}

/// A value drawn uniformly from `[low, high)`, or `low` when the interval is empty; unlike
/// `random_range` it accepts `low == high`, which is how a disabled range is written.
fn uniform(rng: &mut dyn Rng, low: f32, high: f32) -> f32 {
    low + (high - low) * rng.random::<f32>()
}

/// An integer drawn uniformly from `0..=max`.
fn uniform_index(rng: &mut dyn Rng, max: usize) -> usize {
    rng.random_range(0..=max)
}

/// A fast generator forked from `rng`, for transforms that draw one number per pixel: the
/// inner loops then call a concrete generator instead of dispatching through `dyn Rng`.
fn fork_rng(rng: &mut dyn Rng) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::from_rng(rng)
}

/// Panics unless `p` is a probability in `[0, 1]`.
#[track_caller]
fn expect_probability(op: &str, name: &str, p: f32) {
    if !(0.0..=1.0).contains(&p) {
        contract_violation(
            op,
            format_args!("{name} must be in [0, 1]"),
            format_args!("{name} = {p}"),
        );
    }
}

/// Panics unless `value` is finite and greater than zero.
#[track_caller]
fn expect_positive(op: &str, name: &str, value: f32) {
    if !(value.is_finite() && value > 0.0) {
        contract_violation(
            op,
            format_args!("{name} must be finite and > 0"),
            format_args!("{name} = {value}"),
        );
    }
}

/// Panics unless `value` is finite and not negative.
#[track_caller]
fn expect_non_negative(op: &str, name: &str, value: f32) {
    if !(value.is_finite() && value >= 0.0) {
        contract_violation(
            op,
            format_args!("{name} must be finite and >= 0"),
            format_args!("{name} = {value}"),
        );
    }
}

/// Panics unless `low..=high` is a finite, non-empty interval.
#[track_caller]
fn expect_interval(op: &str, name: &str, low: f32, high: f32) {
    if !(low.is_finite() && high.is_finite() && low <= high) {
        contract_violation(
            op,
            format_args!("{name} must be a finite interval with min <= max"),
            format_args!("{name} = ({low}, {high})"),
        );
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn test_batch(count: usize) -> Tensor {
        let mut rng = StdRng::seed_from_u64(11);
        Tensor::rand_uniform(&[count, 1, 12, 10], 0.0, 1.0, &mut rng)
    }

    fn pipeline() -> Compose {
        Compose::new(vec![
            Box::new(RandomRotation::new(20.0).interpolation(Interpolation::Bilinear)),
            Box::new(RandomCrop::new(10).padding(2)),
            Box::new(ElasticTransform::new(8.0, 2.0)),
            Box::new(GaussianNoise::new(0.1)),
        ])
    }

    #[test]
    fn batches_are_identical_on_one_and_two_threads() {
        let batch = test_batch(37);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| apply_batch(&pipeline(), &batch, 5, 2, 100))
        };
        let one = run(1);
        assert_eq!(one.shape(), &[37, 1, 10, 10]);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }

    #[test]
    fn sample_i_uses_its_own_stream() {
        let batch = test_batch(5);
        let out = apply_batch(&pipeline(), &batch, 9, 1, 40);
        let sample = batch.select(0, 3);
        let alone = pipeline().apply(&sample, &mut sample_rng(9, 1, 43));
        assert_eq!(out.select(0, 3), alone);
        // Different epochs give different augmentations.
        assert_ne!(out, apply_batch(&pipeline(), &batch, 9, 2, 40));
    }

    #[test]
    fn empty_batch_is_returned_unchanged() {
        let batch = Tensor::zeros(&[0, 1, 4, 4]);
        assert_eq!(
            apply_batch(&pipeline(), &batch, 0, 0, 0).shape(),
            &[0, 1, 4, 4]
        );
    }

    #[test]
    #[should_panic(expected = "apply_batch: the transform must return the same shape")]
    fn inconsistent_shapes_panic() {
        // Crops sample 0 to 2 columns and every other sample to 1 column.
        let erratic = |image: &Tensor, rng: &mut dyn Rng| {
            let first = image.as_slice()[0] == 0.0;
            let _ = rng.next_u32();
            image.narrow(2, 0, if first { 2 } else { 1 })
        };
        let batch = Tensor::from_vec(vec![0.0, 0.0, 1.0, 1.0], &[2, 1, 1, 2]).unwrap();
        apply_batch(&erratic, &batch, 0, 0, 0);
    }

    #[test]
    #[should_panic(expected = "apply_batch: images must have rank 4, got rank 3")]
    fn batch_must_be_rank_4() {
        apply_batch(&pipeline(), &Tensor::zeros(&[1, 4, 4]), 0, 0, 0);
    }

    #[test]
    #[should_panic(expected = "RandomHorizontalFlip: p must be in [0, 1] (p = -0.5)")]
    fn negative_probability_panics_at_construction() {
        RandomHorizontalFlip::new(-0.5);
    }
}
