//! Photometric transforms: brightness, contrast, saturation, hue, noise, normalisation and
//! erasing. Pixel positions never move.
//!
//! The colour adjustments follow torchvision's float kernels (`adjust_brightness`, ...): they
//! expect values in `[0, 1]` and clamp their result to it.

use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};

use super::{
    Size, Transform, expect_interval, expect_non_negative, expect_positive, expect_probability,
    fork_rng, image_dims, image_tensor, uniform, uniform_index,
};
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, expect_finite, shape_str};

/// ITU-R 601-2 luma weights, as torchvision's `rgb_to_grayscale`.
const LUMA: [f32; 3] = [0.2989, 0.587, 0.114];

/// torchvision's `_blend`: `factor·x + (1 − factor)·other`, clamped to `[0, 1]`.
#[inline]
fn blend(x: f32, other: f32, factor: f32) -> f32 {
    (factor * x + (1.0 - factor) * other).clamp(0.0, 1.0)
}

/// Multiplies every value by `factor`, clamped to `[0, 1]` (torchvision's
/// `adjust_brightness`); works for any number of channels.
///
/// # Panics
///
/// If `image` is not rank 3 or `factor` is negative or not finite.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::functional::adjust_brightness;
///
/// let image = Tensor::from_vec(vec![0.2, 0.6], &[1, 1, 2]).unwrap();
/// assert_eq!(adjust_brightness(&image, 2.0).as_slice(), &[0.4, 1.0]);
/// ```
pub fn adjust_brightness(image: &Tensor, factor: f32) -> Tensor {
    image_dims("adjust_brightness", image);
    expect_non_negative("adjust_brightness", "factor", factor);
    image.map(|x| blend(x, 0.0, factor))
}

/// Blends every value with the image's mean intensity: `factor·x + (1 − factor)·mean`,
/// clamped to `[0, 1]` (torchvision's `adjust_contrast`).
///
/// For 3 channels the mean is that of the luma image, as torchvision; for any other channel
/// count it is the mean of all values (torchvision accepts only 1 or 3 channels, and for 1 the
/// two agree).
///
/// # Panics
///
/// If `image` is not rank 3 or `factor` is negative or not finite.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::functional::adjust_contrast;
///
/// let image = Tensor::from_vec(vec![0.2, 0.6], &[1, 1, 2]).unwrap();
/// let flat = adjust_contrast(&image, 0.0);
/// assert!(flat.all_close(&Tensor::full(&[1, 1, 2], 0.4), 0.0, 1e-6));
/// ```
pub fn adjust_contrast(image: &Tensor, factor: f32) -> Tensor {
    let (c, h, w) = image_dims("adjust_contrast", image);
    expect_non_negative("adjust_contrast", "factor", factor);
    let src = image.as_slice();
    let plane = h * w;
    let mean = if c == 3 {
        let sum: f64 = (0..plane)
            .map(|k| luma(src[k], src[plane + k], src[2 * plane + k]) as f64)
            .sum();
        sum / plane as f64
    } else {
        src.iter().map(|&x| x as f64).sum::<f64>() / src.len() as f64
    };
    let mean = mean as f32;
    image.map(|x| blend(x, mean, factor))
}

#[inline]
fn luma(r: f32, g: f32, b: f32) -> f32 {
    LUMA[0] * r + LUMA[1] * g + LUMA[2] * b
}

/// The channel count a colour operation needs: 3, or 1, for which it is the identity (as in
/// torchvision).
#[track_caller]
fn expect_rgb_or_gray(op: &str, image: &Tensor) -> bool {
    let (c, _, _) = image_dims(op, image);
    match c {
        3 => true,
        1 => false,
        _ => contract_violation(
            op,
            format_args!("needs 1 or 3 channels, got {c}"),
            format_args!("image {}", shape_str(image.shape())),
        ),
    }
}

/// Blends each pixel with its own luma: 0 gives a grey image, 1 the original, above 1
/// stronger colours; clamped to `[0, 1]` (torchvision's `adjust_saturation`). A 1-channel
/// image is returned unchanged.
///
/// # Panics
///
/// If `image` is not rank 3 with 1 or 3 channels, or `factor` is negative or not finite.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::functional::adjust_saturation;
///
/// let red = Tensor::from_vec(vec![1.0, 0.0, 0.0], &[3, 1, 1]).unwrap();
/// let grey = adjust_saturation(&red, 0.0);
/// assert!(grey.all_close(&Tensor::full(&[3, 1, 1], 0.2989), 0.0, 1e-6));
/// ```
pub fn adjust_saturation(image: &Tensor, factor: f32) -> Tensor {
    expect_non_negative("adjust_saturation", "factor", factor);
    if !expect_rgb_or_gray("adjust_saturation", image) {
        return image.clone();
    }
    let (c, h, w) = image_dims("adjust_saturation", image);
    let plane = h * w;
    let mut out = image.to_vec();
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for k in 0..plane {
        let grey = luma(r[k], g[k], b[k]);
        r[k] = blend(r[k], grey, factor);
        g[k] = blend(g[k], grey, factor);
        b[k] = blend(b[k], grey, factor);
    }
    image_tensor(out, c, h, w)
}

/// Rotates every pixel's hue by `shift` turns (torchvision's `adjust_hue`, whose
/// `hue_factor` is `shift` in `[-0.5, 0.5]`; here any finite shift is taken modulo a full
/// turn). A 1-channel image is returned unchanged.
///
/// Goes through HSV per pixel with torchvision's formulas (after Pillow's `Convert.c`), so a
/// shift of 0 or a whole turn reproduces the image up to rounding (about 1e-7).
///
/// # Panics
///
/// If `image` is not rank 3 with 1 or 3 channels, or `shift` is not finite.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::functional::adjust_hue;
///
/// // A third of a turn takes red to green.
/// let red = Tensor::from_vec(vec![1.0, 0.0, 0.0], &[3, 1, 1]).unwrap();
/// let green = adjust_hue(&red, 1.0 / 3.0);
/// assert!(green.all_close(&Tensor::from_vec(vec![0.0, 1.0, 0.0], &[3, 1, 1]).unwrap(), 0.0, 1e-6));
/// ```
pub fn adjust_hue(image: &Tensor, shift: f32) -> Tensor {
    expect_finite("adjust_hue", "shift", shift);
    if !expect_rgb_or_gray("adjust_hue", image) {
        return image.clone();
    }
    // Within torchvision's range keep the shift as given, so results match it to the ulp.
    let shift = if (-0.5..=0.5).contains(&shift) {
        shift
    } else {
        shift.rem_euclid(1.0)
    };
    let (c, h, w) = image_dims("adjust_hue", image);
    let plane = h * w;
    let mut out = image.to_vec();
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for k in 0..plane {
        let (hue, s, v) = rgb_to_hsv(r[k], g[k], b[k]);
        let hue = (hue + shift).rem_euclid(1.0);
        (r[k], g[k], b[k]) = hsv_to_rgb(hue, s, v);
    }
    image_tensor(out, c, h, w)
}

/// RGB to HSV, hue in turns `[0, 1)`: torchvision's `_rgb_to_hsv` (from Pillow's `Convert.c`),
/// including its choice of `h = s = 0` for greys.
fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let grey = maxc == minc;
    let range = maxc - minc;
    let s = range / if grey { 1.0 } else { maxc };
    let divisor = if grey { 1.0 } else { range };
    let (rc, gc, bc) = (
        (maxc - r) / divisor,
        (maxc - g) / divisor,
        (maxc - b) / divisor,
    );
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        (rc + 2.0) - bc
    } else {
        (gc + 4.0) - rc
    };
    let h = (h * (1.0 / 6.0) + 1.0) % 1.0;
    (h, s, maxc)
}

/// HSV to RGB: torchvision's `_hsv_to_rgb`.
fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    let sector = h6.floor();
    let f = h6 - sector;
    let sxf = s * f;
    let one_minus_s = 1.0 - s;
    let q = ((1.0 - sxf) * v).clamp(0.0, 1.0);
    let t = ((sxf + one_minus_s) * v).clamp(0.0, 1.0);
    let p = (one_minus_s * v).clamp(0.0, 1.0);
    match (sector as i64).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Draws a brightness factor in `[max(0, 1 − max_delta), 1 + max_delta]` and applies
/// [`adjust_brightness`](super::functional::adjust_brightness) (torchvision's
/// `ColorJitter(brightness=max_delta)`); any channel count.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{RandomBrightness, Transform};
///
/// let out = RandomBrightness::new(0.3).apply(&Tensor::full(&[1, 2, 2], 0.5), &mut StdRng::seed_from_u64(0));
/// assert!(out.as_slice().iter().all(|&v| (0.35..=0.65).contains(&v)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomBrightness {
    factor: (f32, f32),
}

impl RandomBrightness {
    /// Factors within `max_delta` of 1.
    ///
    /// # Panics
    ///
    /// If `max_delta` is negative or not finite.
    pub fn new(max_delta: f32) -> Self {
        RandomBrightness {
            factor: factor_range("RandomBrightness", "max_delta", max_delta),
        }
    }
}

impl Transform for RandomBrightness {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        adjust_brightness(image, uniform(rng, self.factor.0, self.factor.1))
    }
}

/// Draws a contrast factor in `[max(0, 1 − max_delta), 1 + max_delta]` and applies
/// [`adjust_contrast`](super::functional::adjust_contrast) (torchvision's
/// `ColorJitter(contrast=max_delta)`); any channel count.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{RandomContrast, Transform};
///
/// let flat = Tensor::full(&[1, 2, 2], 0.5);
/// let out = RandomContrast::new(0.5).apply(&flat, &mut StdRng::seed_from_u64(0));
/// assert!(out.all_close(&flat, 0.0, 1e-6));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomContrast {
    factor: (f32, f32),
}

impl RandomContrast {
    /// Factors within `max_delta` of 1.
    ///
    /// # Panics
    ///
    /// If `max_delta` is negative or not finite.
    pub fn new(max_delta: f32) -> Self {
        RandomContrast {
            factor: factor_range("RandomContrast", "max_delta", max_delta),
        }
    }
}

impl Transform for RandomContrast {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        adjust_contrast(image, uniform(rng, self.factor.0, self.factor.1))
    }
}

/// torchvision's `_check_input`: a jitter amount `d` means factors in `[max(0, 1 − d), 1 + d]`.
#[track_caller]
fn factor_range(op: &str, name: &str, delta: f32) -> (f32, f32) {
    expect_non_negative(op, name, delta);
    ((1.0 - delta).max(0.0), 1.0 + delta)
}

/// Random brightness, contrast, saturation and hue, applied in a random order (torchvision's
/// `ColorJitter`).
///
/// Each amount `d` draws a factor uniformly in `[max(0, 1 − d), 1 + d]`; hue draws a shift in
/// `[-hue, hue]` turns. Amounts left at zero are skipped, so the default jitter is exactly the
/// identity. Saturation and hue leave 1-channel images unchanged and need 1 or 3 channels;
/// brightness and contrast take any channel count.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{ColorJitter, Transform};
///
/// let jitter = ColorJitter::new().brightness(0.4).contrast(0.4).saturation(0.4).hue(0.1);
/// let out = jitter.apply(&Tensor::full(&[3, 8, 8], 0.5), &mut StdRng::seed_from_u64(0));
/// assert_eq!(out.shape(), &[3, 8, 8]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ColorJitter {
    brightness: Option<(f32, f32)>,
    contrast: Option<(f32, f32)>,
    saturation: Option<(f32, f32)>,
    hue: Option<f32>,
}

impl ColorJitter {
    /// No jitter; set the amounts with the methods below.
    pub fn new() -> Self {
        Self::default()
    }

    /// Brightness factors within `amount` of 1.
    ///
    /// # Panics
    ///
    /// If `amount` is negative or not finite.
    pub fn brightness(mut self, amount: f32) -> Self {
        self.brightness = Self::jitter("brightness", amount);
        self
    }

    /// Contrast factors within `amount` of 1.
    ///
    /// # Panics
    ///
    /// If `amount` is negative or not finite.
    pub fn contrast(mut self, amount: f32) -> Self {
        self.contrast = Self::jitter("contrast", amount);
        self
    }

    /// Saturation factors within `amount` of 1.
    ///
    /// # Panics
    ///
    /// If `amount` is negative or not finite.
    pub fn saturation(mut self, amount: f32) -> Self {
        self.saturation = Self::jitter("saturation", amount);
        self
    }

    /// Hue shifts in `[-amount, amount]` turns.
    ///
    /// # Panics
    ///
    /// If `amount` is not in `[0, 0.5]`.
    pub fn hue(mut self, amount: f32) -> Self {
        if !(0.0..=0.5).contains(&amount) {
            contract_violation(
                "ColorJitter",
                "hue must be in [0, 0.5]",
                format_args!("hue = {amount}"),
            );
        }
        self.hue = (amount > 0.0).then_some(amount);
        self
    }

    #[track_caller]
    fn jitter(name: &str, amount: f32) -> Option<(f32, f32)> {
        let range = factor_range("ColorJitter", name, amount);
        (amount > 0.0).then_some(range)
    }
}

impl Transform for ColorJitter {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        // Draw everything first, as torchvision's `make_params`: a random order, then factors.
        let mut order = [0usize, 1, 2, 3];
        for i in (1..order.len()).rev() {
            order.swap(i, uniform_index(rng, i));
        }
        let mut draw = |range: Option<(f32, f32)>| range.map(|(lo, hi)| uniform(rng, lo, hi));
        let brightness = draw(self.brightness);
        let contrast = draw(self.contrast);
        let saturation = draw(self.saturation);
        let hue = draw(self.hue.map(|h| (-h, h)));
        let mut out = image.clone();
        for step in order {
            out = match (step, brightness, contrast, saturation, hue) {
                (0, Some(f), _, _, _) => adjust_brightness(&out, f),
                (1, _, Some(f), _, _) => adjust_contrast(&out, f),
                (2, _, _, Some(f), _) => adjust_saturation(&out, f),
                (3, _, _, _, Some(f)) => adjust_hue(&out, f),
                _ => out,
            };
        }
        out
    }
}

/// How [`GaussianNoise`] keeps values in range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clamp {
    /// Clamp to `[min, max]`; `Range(0.0, 1.0)` is the default.
    Range(f32, f32),
    /// Leave values unbounded, e.g. for noise added after [`Normalize`].
    Off,
}

impl Default for Clamp {
    fn default() -> Self {
        Clamp::Range(0.0, 1.0)
    }
}

/// Adds independent Gaussian noise to every value, then clamps to the value range
/// (torchvision's `GaussianNoise(mean, sigma, clip=True)`).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{Clamp, GaussianNoise, Transform};
///
/// let noise = GaussianNoise::new(0.1);
/// let out = noise.apply(&Tensor::zeros(&[1, 28, 28]), &mut StdRng::seed_from_u64(0));
/// assert!(out.as_slice().iter().all(|&v| (0.0..=1.0).contains(&v)));
///
/// let unclamped = GaussianNoise::new(0.1).mean(0.5).clamp(Clamp::Off);
/// # let _ = unclamped;
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaussianNoise {
    mean: f32,
    std: f32,
    clamp: Clamp,
}

impl GaussianNoise {
    /// Zero-mean noise of standard deviation `std`, clamped to `[0, 1]`.
    ///
    /// # Panics
    ///
    /// If `std` is negative or not finite.
    pub fn new(std: f32) -> Self {
        expect_non_negative("GaussianNoise", "std", std);
        GaussianNoise {
            mean: 0.0,
            std,
            clamp: Clamp::default(),
        }
    }

    /// The mean of the noise.
    ///
    /// # Panics
    ///
    /// If `mean` is not finite.
    pub fn mean(mut self, mean: f32) -> Self {
        expect_finite("GaussianNoise", "mean", mean);
        self.mean = mean;
        self
    }

    /// The value range to clamp to.
    ///
    /// # Panics
    ///
    /// If a range is not finite with `min <= max`.
    pub fn clamp(mut self, clamp: Clamp) -> Self {
        if let Clamp::Range(min, max) = clamp {
            expect_interval("GaussianNoise", "clamp", min, max);
        }
        self.clamp = clamp;
        self
    }
}

impl Transform for GaussianNoise {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        let (c, h, w) = image_dims("GaussianNoise", image);
        let mut local = fork_rng(rng);
        let (min, max) = match self.clamp {
            Clamp::Range(min, max) => (min, max),
            Clamp::Off => (f32::NEG_INFINITY, f32::INFINITY),
        };
        let out = image
            .as_slice()
            .iter()
            .map(|&x| {
                let z: f32 = StandardNormal.sample(&mut local);
                (x + self.mean + self.std * z).clamp(min, max)
            })
            .collect();
        image_tensor(out, c, h, w)
    }
}

/// `(x − mean[c]) / std[c]` for every value of channel `c` (torchvision's `F.normalize`); a
/// single mean and std apply to every channel.
///
/// # Panics
///
/// If `image` is not rank 3, the lengths of `mean` and `std` differ from each other or from
/// the channel count (other than 1), or a std is not positive.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::functional::normalize;
///
/// let image = Tensor::from_vec(vec![0.5, 1.0], &[2, 1, 1]).unwrap();
/// let out = normalize(&image, &[0.5, 0.0], &[0.25, 2.0]);
/// assert_eq!(out.as_slice(), &[0.0, 0.5]);
/// ```
pub fn normalize(image: &Tensor, mean: &[f32], std: &[f32]) -> Tensor {
    check_mean_std("normalize", mean, std);
    normalize_in("normalize", image, mean, std)
}

#[track_caller]
fn normalize_in(op: &str, image: &Tensor, mean: &[f32], std: &[f32]) -> Tensor {
    let (c, h, w) = image_dims(op, image);
    if mean.len() != 1 && mean.len() != c {
        contract_violation(
            op,
            format_args!("{} means and stds for {c} channels", mean.len()),
            format_args!("image {}", shape_str(image.shape())),
        );
    }
    let mut out = image.to_vec();
    normalize_planes(&mut out, c, h * w, mean, std);
    image_tensor(out, c, h, w)
}

/// The one normalisation of the crate (images here, batches in the `DataLoader`):
/// `(x - mean[c]) / std[c]` in place over consecutive planes of `plane` values, plane `k`
/// belonging to channel `k % channels`; a single mean and std apply to every channel. The
/// caller has checked that `mean` holds 1 or `channels` values.
///
/// Division, not multiplication by `1 / std`, to match torchvision to the ulp.
pub(crate) fn normalize_planes(
    values: &mut [f32],
    channels: usize,
    plane: usize,
    mean: &[f32],
    std: &[f32],
) {
    if plane == 0 {
        return;
    }
    for (k, values) in values.chunks_exact_mut(plane).enumerate() {
        let c = if mean.len() == 1 { 0 } else { k % channels };
        let (m, s) = (mean[c], std[c]);
        values.iter_mut().for_each(|x| *x = (*x - m) / s);
    }
}

/// Panics unless `mean` and `std` have the same nonzero length, every mean is finite and every
/// std positive and finite.
#[track_caller]
pub(crate) fn check_mean_std(op: &str, mean: &[f32], std: &[f32]) {
    if mean.is_empty() || mean.len() != std.len() {
        contract_violation(
            op,
            "mean and std must have the same, non-zero length",
            format_args!("mean {mean:?}, std {std:?}"),
        );
    }
    for &m in mean {
        expect_finite(op, "mean", m);
    }
    for &s in std {
        expect_positive(op, "std", s);
    }
}

/// Normalises each channel with a fixed mean and standard deviation (torchvision's
/// `Normalize`); see [`normalize`](super::functional::normalize).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{Normalize, Transform};
///
/// // The MNIST statistics.
/// let norm = Normalize::new(&[0.1307], &[0.3081]);
/// let out = norm.apply(&Tensor::full(&[1, 2, 2], 0.1307), &mut StdRng::seed_from_u64(0));
/// assert_eq!(out, Tensor::zeros(&[1, 2, 2]));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Normalize {
    /// One mean and std per channel, or one of each for all channels.
    ///
    /// # Panics
    ///
    /// If the lengths differ or are zero, or a std is not positive.
    pub fn new(mean: &[f32], std: &[f32]) -> Self {
        check_mean_std("Normalize", mean, std);
        Normalize {
            mean: mean.to_vec(),
            std: std.to_vec(),
        }
    }

    /// ImageNet's statistics, [`IMAGENET_MEAN`] and [`IMAGENET_STD`], which every torchvision
    /// model pre-trained on ImageNet expects of its RGB input.
    ///
    /// # Examples
    ///
    /// ```
    /// use rand::{SeedableRng, rngs::StdRng};
    /// use striate::Tensor;
    /// use striate::transforms::{Normalize, Transform};
    ///
    /// let out = Normalize::imagenet().apply(&Tensor::zeros(&[3, 1, 1]), &mut StdRng::seed_from_u64(0));
    /// assert!((out.as_slice()[0] + 0.485 / 0.229).abs() < 1e-6);
    /// ```
    pub fn imagenet() -> Self {
        Normalize::new(&IMAGENET_MEAN, &IMAGENET_STD)
    }
}

/// The per-channel (RGB) mean of ImageNet's training images, in `[0, 1]`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// The per-channel (RGB) standard deviation of ImageNet's training images, in `[0, 1]`.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Turns 8-bit pixels stored row by row, channels interleaved (`[height, width, channels]`, as
/// image files and decoders give them), into an f32 image `[channels, height, width]` in
/// `[0, 1]`, each byte divided by 255 (torchvision's `ToTensor`).
///
/// # Panics
///
/// If `pixels.len()` is not `height × width × channels`.
///
/// # Examples
///
/// ```
/// use striate::transforms::functional::to_tensor;
///
/// // One row of two RGB pixels: red, then white.
/// let image = to_tensor(&[255, 0, 0, 255, 255, 255], 1, 2, 3);
/// assert_eq!(image.shape(), &[3, 1, 2]);
/// assert_eq!(image.as_slice(), &[1.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
/// ```
pub fn to_tensor(pixels: &[u8], height: usize, width: usize, channels: usize) -> Tensor {
    let mut out = vec![0.0; pixels.len()];
    hwc_bytes_to_chw(pixels, height, width, channels, &mut out);
    image_tensor(out, channels, height, width)
}

/// [`to_tensor`] into a buffer of the same length.
///
/// # Panics
///
/// If `pixels` or `out` is not `height × width × channels` long.
pub(crate) fn hwc_bytes_to_chw(
    pixels: &[u8],
    height: usize,
    width: usize,
    channels: usize,
    out: &mut [f32],
) {
    let plane = height * width;
    if pixels.len() != plane * channels || out.len() != pixels.len() {
        contract_violation(
            "to_tensor",
            "pixels and output must hold height × width × channels values",
            format_args!(
                "{} pixels, {} outputs for [{height}, {width}, {channels}]",
                pixels.len(),
                out.len()
            ),
        );
    }
    if channels == 1 {
        for (o, &b) in out.iter_mut().zip(pixels) {
            *o = f32::from(b) / 255.0;
        }
        return;
    }
    for (p, pixel) in pixels.chunks_exact(channels).enumerate() {
        for (c, &b) in pixel.iter().enumerate() {
            out[c * plane + p] = f32::from(b) / 255.0;
        }
    }
}

impl Transform for Normalize {
    fn apply(&self, image: &Tensor, _rng: &mut dyn Rng) -> Tensor {
        normalize_in("Normalize", image, &self.mean, &self.std)
    }
}

/// Sets the `size` window at `(top, left)` to `value` in every channel.
///
/// # Panics
///
/// If `image` is not rank 3 or the window is not inside it.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::functional::erase;
///
/// let out = erase(&Tensor::ones(&[1, 2, 3]), 0, 1, (1, 2), 0.0);
/// assert_eq!(out.as_slice(), &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
/// ```
pub fn erase(image: &Tensor, top: usize, left: usize, size: impl Into<Size>, value: f32) -> Tensor {
    let size = size.into();
    let mut out = image.clone();
    erase_with("erase", &mut out, top, left, size, |_| value);
    out
}

/// Overwrites a window of `image` with `value(k)`, `k` counting the erased values.
#[track_caller]
fn erase_with(
    op: &str,
    image: &mut Tensor,
    top: usize,
    left: usize,
    size: Size,
    mut value: impl FnMut(usize) -> f32,
) {
    let (c, h, w) = image_dims(op, image);
    if top + size.height > h || left + size.width > w {
        contract_violation(
            op,
            "the window must lie inside the image",
            format_args!(
                "window [{}, {}] at ({top}, {left}), image {}",
                size.height,
                size.width,
                shape_str(image.shape())
            ),
        );
    }
    let data = image.as_slice_mut();
    let mut k = 0;
    for ch in 0..c {
        for i in top..top + size.height {
            let row = (ch * h + i) * w;
            for x in &mut data[row + left..row + left + size.width] {
                *x = value(k);
                k += 1;
            }
        }
    }
}

/// What [`RandomErasing`] writes into the erased window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EraseValue {
    /// One value everywhere; `Constant(0.0)` is the default.
    Constant(f32),
    /// Independent standard normal values (torchvision's `value="random"`).
    Random,
}

impl Default for EraseValue {
    fn default() -> Self {
        EraseValue::Constant(0.0)
    }
}

/// Erases a random rectangle with probability `p` (torchvision's `RandomErasing`, Zhong et
/// al. 2017, "Random Erasing Data Augmentation").
///
/// The rectangle covers a fraction of the area drawn from `scale` with a height / width ratio
/// drawn log-uniformly from `ratio`; if ten draws fail to fit, the image is left unchanged.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{RandomErasing, Transform};
///
/// let erase = RandomErasing::new(1.0).scale(0.1, 0.2);
/// let out = erase.apply(&Tensor::ones(&[1, 28, 28]), &mut StdRng::seed_from_u64(0));
/// let erased = out.as_slice().iter().filter(|&&v| v == 0.0).count();
/// assert!(erased > 0 && erased < 28 * 28 / 4);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomErasing {
    p: f32,
    scale: (f32, f32),
    ratio: (f32, f32),
    value: EraseValue,
}

impl RandomErasing {
    /// Erases with probability `p`; area fraction in `[0.02, 0.33]`, ratio in `[0.3, 3.3]`
    /// and value 0 unless set.
    ///
    /// # Panics
    ///
    /// If `p` is not in `[0, 1]`.
    pub fn new(p: f32) -> Self {
        expect_probability("RandomErasing", "p", p);
        RandomErasing {
            p,
            scale: (0.02, 0.33),
            ratio: (0.3, 3.3),
            value: EraseValue::default(),
        }
    }

    /// The range of the erased area as a fraction of the image's.
    ///
    /// # Panics
    ///
    /// If the range is not within `[0, 1]` with `min <= max`.
    pub fn scale(mut self, min: f32, max: f32) -> Self {
        expect_interval("RandomErasing", "scale", min, max);
        expect_probability("RandomErasing", "scale min", min);
        expect_probability("RandomErasing", "scale max", max);
        self.scale = (min, max);
        self
    }

    /// The range of the rectangle's height / width ratio.
    ///
    /// # Panics
    ///
    /// If the range is not `0 < min <= max`, finite.
    pub fn ratio(mut self, min: f32, max: f32) -> Self {
        expect_interval("RandomErasing", "ratio", min, max);
        expect_positive("RandomErasing", "ratio min", min);
        self.ratio = (min, max);
        self
    }

    /// What the rectangle is filled with.
    ///
    /// # Panics
    ///
    /// If a constant is not finite.
    pub fn value(mut self, value: EraseValue) -> Self {
        if let EraseValue::Constant(v) = value {
            expect_finite("RandomErasing", "value", v);
        }
        self.value = value;
        self
    }
}

impl Transform for RandomErasing {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        let (_, h, w) = image_dims("RandomErasing", image);
        if rng.random::<f32>() >= self.p {
            return image.clone();
        }
        let area = (h * w) as f32;
        let (log_min, log_max) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let erase_area = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, log_min, log_max).exp();
            let eh = (erase_area * aspect).sqrt().round_ties_even() as usize;
            let ew = (erase_area / aspect).sqrt().round_ties_even() as usize;
            if !(eh < h && ew < w) {
                continue;
            }
            let top = uniform_index(rng, h - eh);
            let left = uniform_index(rng, w - ew);
            let mut out = image.clone();
            let size = Size::new(eh, ew);
            match self.value {
                EraseValue::Constant(v) => {
                    erase_with("RandomErasing", &mut out, top, left, size, |_| v)
                }
                EraseValue::Random => {
                    let mut local = fork_rng(rng);
                    erase_with("RandomErasing", &mut out, top, left, size, |_| {
                        StandardNormal.sample(&mut local)
                    });
                }
            }
            return out;
        }
        image.clone()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn random_rgb(h: usize, w: usize, seed: u64) -> Tensor {
        Tensor::rand_uniform(&[3, h, w], 0.0, 1.0, &mut StdRng::seed_from_u64(seed))
    }

    #[test]
    fn unit_factors_are_the_identity() {
        let image = random_rgb(5, 6, 1);
        assert_eq!(adjust_brightness(&image, 1.0), image);
        assert_eq!(adjust_contrast(&image, 1.0), image);
        assert_eq!(adjust_saturation(&image, 1.0), image);
        let gray = Tensor::rand_uniform(&[1, 4, 4], 0.0, 1.0, &mut StdRng::seed_from_u64(2));
        assert_eq!(adjust_saturation(&gray, 0.3), gray);
        assert_eq!(adjust_hue(&gray, 0.3), gray);
    }

    #[test]
    fn jitter_with_zero_ranges_is_the_identity() {
        let image = random_rgb(7, 7, 3);
        let none = ColorJitter::new()
            .brightness(0.0)
            .contrast(0.0)
            .saturation(0.0)
            .hue(0.0);
        let mut rng = StdRng::seed_from_u64(0);
        for _ in 0..10 {
            assert_eq!(none.apply(&image, &mut rng), image);
        }
    }

    #[test]
    fn hue_shifted_by_a_full_turn_is_the_identity() {
        let mut image = random_rgb(9, 9, 4);
        // Greys, primaries and ties between channels exercise every branch of the conversion.
        let special = [
            [0.5, 0.5, 0.5],
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [0.7, 0.7, 0.2],
            [0.2, 0.7, 0.7],
            [0.7, 0.2, 0.7],
            [0.0, 0.0, 0.0],
        ];
        let data = image.as_slice_mut();
        for (k, rgb) in special.iter().enumerate() {
            for ch in 0..3 {
                data[ch * 81 + k] = rgb[ch];
            }
        }
        for turns in [1.0, -1.0, 2.0, 0.0] {
            let out = adjust_hue(&image, turns);
            assert!(out.all_close(&image, 0.0, 1e-6), "shift {turns}");
        }
        // Half a turn twice is a full turn.
        let twice = adjust_hue(&adjust_hue(&image, 0.5), 0.5);
        assert!(twice.all_close(&image, 0.0, 1e-5));
    }

    #[test]
    fn hsv_round_trip_of_primaries() {
        assert_eq!(rgb_to_hsv(1.0, 0.0, 0.0), (0.0, 1.0, 1.0));
        let (h, s, v) = rgb_to_hsv(0.0, 0.0, 1.0);
        assert!((h - 2.0 / 3.0).abs() < 1e-6 && s == 1.0 && v == 1.0);
        let (r, g, b) = hsv_to_rgb(h, s, v);
        assert!(r.abs() < 1e-6 && g.abs() < 1e-6 && (b - 1.0).abs() < 1e-6);
    }

    #[test]
    fn contrast_of_any_channel_count_blends_with_the_mean() {
        let image =
            Tensor::from_vec(vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.1, 0.3], &[4, 1, 2]).unwrap();
        let mean = image.mean();
        let out = adjust_contrast(&image, 0.5);
        for (&o, &x) in out.as_slice().iter().zip(image.as_slice()) {
            assert!((o - (0.5 * x + 0.5 * mean)).abs() < 1e-6);
        }
    }

    #[test]
    fn noise_has_the_requested_mean_and_std() {
        let (mean, std) = (0.05f32, 0.2f32);
        let noise = GaussianNoise::new(std).mean(mean).clamp(Clamp::Off);
        let image = Tensor::full(&[1, 200, 200], 0.5);
        let out = noise.apply(&image, &mut StdRng::seed_from_u64(12));
        let n = out.len() as f64;
        let residuals: Vec<f64> = out.as_slice().iter().map(|&v| v as f64 - 0.5).collect();
        let sample_mean = residuals.iter().sum::<f64>() / n;
        let sample_var = residuals
            .iter()
            .map(|r| (r - sample_mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        // Standard errors: std/sqrt(n) = 0.001 for the mean, std/sqrt(2n) ≈ 0.0007 for the std.
        assert!(
            (sample_mean - mean as f64).abs() < 4.0 * 0.001,
            "{sample_mean}"
        );
        assert!(
            (sample_var.sqrt() - std as f64).abs() < 4.0 * 0.0007,
            "{sample_var}"
        );
    }

    #[test]
    fn noise_is_clamped_to_the_range() {
        let out = GaussianNoise::new(1.0).apply(
            &Tensor::full(&[2, 30, 30], 0.5),
            &mut StdRng::seed_from_u64(1),
        );
        assert!(out.as_slice().iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert!(out.as_slice().contains(&0.0) && out.as_slice().contains(&1.0));
    }

    #[test]
    fn normalize_per_channel_and_shared() {
        let image = Tensor::from_vec(vec![1.0, 3.0, 5.0, 7.0], &[2, 1, 2]).unwrap();
        let per = normalize(&image, &[1.0, 5.0], &[2.0, 1.0]);
        assert_eq!(per.as_slice(), &[0.0, 1.0, 0.0, 2.0]);
        let shared = normalize(&image, &[1.0], &[2.0]);
        assert_eq!(shared.as_slice(), &[0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    #[should_panic(expected = "Normalize: 3 means and stds for 2 channels")]
    fn normalize_with_wrong_channel_count_panics() {
        Normalize::new(&[0.5; 3], &[0.2; 3])
            .apply(&Tensor::zeros(&[2, 2, 2]), &mut StdRng::seed_from_u64(0));
    }

    #[test]
    #[should_panic(expected = "Normalize: std must be finite and > 0 (std = 0)")]
    fn zero_std_panics() {
        Normalize::new(&[0.5], &[0.0]);
    }

    #[test]
    fn random_erasing_writes_one_rectangle() {
        let erase = RandomErasing::new(1.0).value(EraseValue::Constant(-1.0));
        let mut rng = StdRng::seed_from_u64(6);
        for _ in 0..50 {
            let out = erase.apply(&Tensor::ones(&[2, 20, 24]), &mut rng);
            let plane = &out.as_slice()[..480];
            let rows: Vec<usize> = (0..20)
                .filter(|&i| plane[i * 24..][..24].contains(&-1.0))
                .collect();
            let cols: Vec<usize> = (0..24)
                .filter(|&j| (0..20).any(|i| plane[i * 24 + j] == -1.0))
                .collect();
            let erased = plane.iter().filter(|&&v| v == -1.0).count();
            assert_eq!(erased, rows.len() * cols.len(), "a filled rectangle");
            assert_eq!(
                &out.as_slice()[..480],
                &out.as_slice()[480..],
                "same window in every channel"
            );
        }
    }

    #[test]
    #[should_panic(expected = "RandomErasing: p must be in [0, 1] (p = 1.5)")]
    fn erasing_probability_above_one_panics() {
        RandomErasing::new(1.5);
    }

    #[test]
    #[should_panic(expected = "adjust_saturation: needs 1 or 3 channels, got 2")]
    fn saturation_of_two_channels_panics() {
        adjust_saturation(&Tensor::zeros(&[2, 1, 1]), 0.5);
    }
}
