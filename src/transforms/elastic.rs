//! Elastic deformation, after Simard, Steinkraus and Platt (2003), "Best Practices for
//! Convolutional Neural Networks Applied to Visual Document Analysis", section 2: a field of
//! uniform random displacements in `[-1, 1]`, smoothed by a Gaussian of standard deviation `σ`,
//! scaled by `α` (pixels), moves every pixel; the image is resampled bilinearly.

use std::sync::{Arc, OnceLock};

use rand::Rng;
use rand::rngs::Xoshiro256PlusPlus;

use super::sampling::{Interpolation, displace_by, reflect_index};
use super::{Transform, expect_non_negative, expect_positive, fork_rng, image_dims, image_tensor};
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, shape_str};
use crate::util::simd;

/// A normalised Gaussian kernel `exp(−t²/2σ²)`, truncated at `4σ` as `scipy.ndimage`'s
/// `gaussian_filter`, which reference implementations of Simard's method use.
fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (4.0 * sigma + 0.5) as isize;
    let two_var = 2.0 * (sigma as f64).powi(2);
    let raw: Vec<f64> = (-radius..=radius)
        .map(|t| (-((t * t) as f64) / two_var).exp())
        .collect();
    let total: f64 = raw.iter().sum();
    raw.iter().map(|&k| (k / total) as f32).collect()
}

/// A 1-D Gaussian filter over `n` samples with torch's reflect boundary, folded into a banded
/// `n × n` matrix `G[o][i] = scale · Σ kernel[t]` over the taps `t` of output `o` whose reflected
/// position is `i`; row `o` has its non-zero weights in `spans[o]`.
///
/// Folding the boundary into the matrix leaves the blur plain multiply-adds over whole rows,
/// which vectorise, whatever the image size or `σ`.
#[derive(Debug)]
struct BandMatrix {
    n: usize,
    weights: Vec<f32>,
    spans: Vec<(usize, usize)>,
}

impl BandMatrix {
    fn new(kernel: &[f32], n: usize, scale: f32) -> BandMatrix {
        let radius = (kernel.len() / 2) as isize;
        let mut weights = vec![0.0f32; n * n];
        let mut spans = Vec::with_capacity(n);
        for (o, row) in weights.chunks_exact_mut(n.max(1)).take(n).enumerate() {
            let (mut lo, mut hi) = (n, 0);
            for (t, &k) in kernel.iter().enumerate() {
                let i = reflect_index(o as isize + t as isize - radius, n);
                row[i] += scale * k;
                (lo, hi) = (lo.min(i), hi.max(i + 1));
            }
            spans.push((lo, hi));
        }
        BandMatrix { n, weights, spans }
    }

    fn row(&self, o: usize) -> (usize, &[f32]) {
        let (lo, hi) = self.spans[o];
        (lo, &self.weights[o * self.n + lo..o * self.n + hi])
    }

    /// `G · src` for `src` of `n` rows of `row_len` values: each output row is a weighted sum
    /// of input rows, computed a block of columns at a time with the block's sums held in
    /// registers (blocks of 32, then 16, 8, 4 and 1 columns, so none spills to memory), on the
    /// widest vectors the CPU has.
    fn apply_to_rows(&self, src: &[f32], row_len: usize) -> Vec<f32> {
        debug_assert_eq!(src.len(), self.n * row_len);
        let mut out = vec![0.0f32; self.n * row_len];
        simd::dispatch(
            #[inline(always)]
            || {
                for (o, dst) in out.chunks_exact_mut(row_len.max(1)).enumerate() {
                    let (lo, weights) = self.row(o);
                    let rows = &src[lo * row_len..];
                    let mut start = 0;
                    start = blocks::<32>(weights, rows, row_len, start, dst);
                    start = blocks::<16>(weights, rows, row_len, start, dst);
                    start = blocks::<8>(weights, rows, row_len, start, dst);
                    start = blocks::<4>(weights, rows, row_len, start, dst);
                    blocks::<1>(weights, rows, row_len, start, dst);
                }
            },
        );
        out
    }
}

/// Fills `dst[start..]` in blocks of `L` columns while whole blocks fit:
/// `dst[c] = Σ_k weights[k] · rows[k · row_len + c]`; returns where it stopped.
#[inline(always)]
fn blocks<const L: usize>(
    weights: &[f32],
    rows: &[f32],
    row_len: usize,
    mut start: usize,
    dst: &mut [f32],
) -> usize {
    while start + L <= row_len {
        let mut acc = [0.0f32; L];
        for (k, &g) in weights.iter().enumerate() {
            let s: &[f32; L] = rows[k * row_len + start..][..L]
                .try_into()
                .expect("L values");
            for (a, &x) in acc.iter_mut().zip(s) {
                *a += g * x;
            }
        }
        for (d, a) in dst[start..start + L].iter_mut().zip(acc) {
            *d = a;
        }
        start += L;
    }
    start
}

/// The `(dx, dy)` displacement fields of Simard's method, each `[height, width]` in pixels.
fn random_field(blur: &SeparableBlur, rng: &mut dyn Rng) -> (Vec<f32>, Vec<f32>) {
    let plane = blur.height * blur.width;
    if plane == 0 {
        return (Vec::new(), Vec::new());
    }
    // i.i.d. noise, so any layout gives the same distribution; `blur_pair` wants this one.
    let mut noise = vec![0.0f32; 2 * plane];
    fill_symmetric_uniform(&mut fork_rng(rng), &mut noise);
    blur.blur_pair(&noise)
}

/// Fills `out` with values uniform in `[-1, 1)`, two per 64-bit draw: 24 random bits each, the
/// resolution of rand's own `f32` sampling, at half the generator calls.
fn fill_symmetric_uniform(rng: &mut Xoshiro256PlusPlus, out: &mut [f32]) {
    const SCALE: f32 = 2.0 / (1u32 << 24) as f32;
    let mut pairs = out.chunks_exact_mut(2);
    for pair in &mut pairs {
        let bits = rng.next_u64();
        pair[0] = (bits >> 40) as f32 * SCALE - 1.0;
        pair[1] = ((bits >> 8) & 0xff_ffff) as f32 * SCALE - 1.0;
    }
    for last in pairs.into_remainder() {
        *last = (rng.next_u64() >> 40) as f32 * SCALE - 1.0;
    }
}

/// The separable Gaussian blur of `height × width` fields: the folded matrix along each axis,
/// with `scale` (α) folded into the first.
#[derive(Debug)]
struct SeparableBlur {
    height: usize,
    width: usize,
    along_height: BandMatrix,
    along_width: BandMatrix,
}

impl SeparableBlur {
    fn new(kernel: &[f32], height: usize, width: usize, scale: f32) -> SeparableBlur {
        SeparableBlur {
            height,
            width,
            along_height: BandMatrix::new(kernel, height, scale),
            along_width: BandMatrix::new(kernel, width, 1.0),
        }
    }

    /// Blurs two fields given side by side, `height` rows of `[a | b]`; returns them as
    /// separate `[height, width]` planes.
    ///
    /// Side by side, the blur along the height treats both fields in rows of `2·width`; a
    /// transpose turns the blur along the width into the same kind of pass.
    fn blur_pair(&self, pair: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (height, width) = (self.height, self.width);
        let plane = height * width;
        let along_height = self.along_height.apply_to_rows(pair, 2 * width);
        // Transpose to `width` rows of `[a column | b column]`.
        let mut columns = vec![0.0f32; 2 * plane];
        for (i, row) in along_height.chunks_exact(2 * width).enumerate() {
            for j in 0..width {
                columns[j * 2 * height + i] = row[j];
                columns[j * 2 * height + height + i] = row[width + j];
            }
        }
        let blurred = self.along_width.apply_to_rows(&columns, 2 * height);
        let mut a = vec![0.0f32; plane];
        let mut b = vec![0.0f32; plane];
        for (j, column) in blurred.chunks_exact(2 * height).enumerate() {
            for i in 0..height {
                a[i * width + j] = column[i];
                b[i * width + j] = column[height + i];
            }
        }
        (a, b)
    }
}

/// A random elastic displacement field `[2, height, width]` (`dx` then `dy`, in pixels):
/// uniform noise in `[-1, 1]`, blurred by a Gaussian of standard deviation `sigma` (reflect
/// boundary, truncated at 4σ), times `alpha`. Apply it with
/// [`displace`](super::functional::displace).
///
/// # Panics
///
/// If `alpha` is negative or `sigma` is not positive (or either is not finite).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::Interpolation;
/// use striate::transforms::functional::{displace, elastic_displacement};
///
/// let field = elastic_displacement(28, 28, 34.0, 4.0, &mut StdRng::seed_from_u64(0));
/// assert_eq!(field.shape(), &[2, 28, 28]);
/// let out = displace(&Tensor::ones(&[1, 28, 28]), &field, Interpolation::Bilinear, 0.0);
/// assert_eq!(out.shape(), &[1, 28, 28]);
/// ```
pub fn elastic_displacement(
    height: usize,
    width: usize,
    alpha: f32,
    sigma: f32,
    rng: &mut dyn Rng,
) -> Tensor {
    expect_non_negative("elastic_displacement", "alpha", alpha);
    expect_positive("elastic_displacement", "sigma", sigma);
    let blur = SeparableBlur::new(&gaussian_kernel(sigma), height, width, alpha);
    let (dx, dy) = random_field(&blur, rng);
    let mut data = dx;
    data.extend_from_slice(&dy);
    Tensor::from_vec(data, &[2, height, width]).expect("two planes of height × width")
}

/// Moves every pixel by a displacement field `[2, H, W]` (`dx` then `dy`, in pixels): output
/// `(row, column)` reads the input at `(column + dx, row + dy)`; positions outside the image
/// read `fill`.
///
/// # Panics
///
/// If `image` is not rank 3 or `displacement` is not `[2, H, W]` for the image's `H, W`.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::Interpolation;
/// use striate::transforms::functional::displace;
///
/// let image = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[1, 1, 3]).unwrap();
/// // Every pixel reads its right neighbour.
/// let right = Tensor::from_vec(vec![1.0, 1.0, 1.0, 0.0, 0.0, 0.0], &[2, 1, 3]).unwrap();
/// let out = displace(&image, &right, Interpolation::Bilinear, 0.0);
/// assert_eq!(out.as_slice(), &[2.0, 3.0, 0.0]);
/// ```
pub fn displace(
    image: &Tensor,
    displacement: &Tensor,
    interpolation: Interpolation,
    fill: f32,
) -> Tensor {
    let (c, h, w) = image_dims("displace", image);
    if displacement.shape() != [2, h, w] {
        contract_violation(
            "displace",
            "displacement must be [2, H, W] for an image [C, H, W]",
            format_args!(
                "image {}, displacement {}",
                shape_str(image.shape()),
                shape_str(displacement.shape())
            ),
        );
    }
    let (dx, dy) = displacement.as_slice().split_at(h * w);
    let out = displace_by(image.as_slice(), (c, h, w), dx, dy, interpolation, fill);
    image_tensor(out, c, h, w)
}

/// Elastic deformation (torchvision's `ElasticTransform`, with Simard et al.'s units).
///
/// `alpha` is the displacement scale in pixels and `sigma` the smoothness in pixels; Simard et
/// al. used α = 34, σ = 4 on MNIST. (torchvision's `alpha` is relative to the image size
/// instead: its α = 50 on a 28-pixel image moves pixels about as far as α ≈ 25 here.)
/// Bilinear sampling and fill 0 by default.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{ElasticTransform, Transform};
///
/// let elastic = ElasticTransform::new(34.0, 4.0);
/// let out = elastic.apply(&Tensor::zeros(&[1, 28, 28]), &mut StdRng::seed_from_u64(0));
/// assert_eq!(out, Tensor::zeros(&[1, 28, 28]));
/// ```
#[derive(Clone, Debug)]
pub struct ElasticTransform {
    alpha: f32,
    kernel: Vec<f32>,
    interpolation: Interpolation,
    fill: f32,
    /// The blur for the first image size seen: datasets have one size, so this saves
    /// rebuilding the matrices per image; other sizes build theirs per call.
    blur: Arc<OnceLock<SeparableBlur>>,
}

impl ElasticTransform {
    /// Displacements of scale `alpha` pixels, smoothed by a Gaussian of std `sigma` pixels.
    ///
    /// # Panics
    ///
    /// If `alpha` is negative or `sigma` is not positive (or either is not finite).
    pub fn new(alpha: f32, sigma: f32) -> Self {
        expect_non_negative("ElasticTransform", "alpha", alpha);
        expect_positive("ElasticTransform", "sigma", sigma);
        ElasticTransform {
            alpha,
            kernel: gaussian_kernel(sigma),
            interpolation: Interpolation::Bilinear,
            fill: 0.0,
            blur: Arc::new(OnceLock::new()),
        }
    }

    resampling_setters!("ElasticTransform", interpolation, fill);
}

impl Transform for ElasticTransform {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        let (c, h, w) = image_dims("ElasticTransform", image);
        let cached = self
            .blur
            .get_or_init(|| SeparableBlur::new(&self.kernel, h, w, self.alpha));
        let (dx, dy) = if (cached.height, cached.width) == (h, w) {
            random_field(cached, rng)
        } else {
            random_field(&SeparableBlur::new(&self.kernel, h, w, self.alpha), rng)
        };
        let out = displace_by(
            image.as_slice(),
            (c, h, w),
            &dx,
            &dy,
            self.interpolation,
            self.fill,
        );
        image_tensor(out, c, h, w)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn ramp(c: usize, h: usize, w: usize) -> Tensor {
        let data = (0..c * h * w).map(|v| (v as f32 * 0.37).sin()).collect();
        Tensor::from_vec(data, &[c, h, w]).unwrap()
    }

    #[test]
    fn alpha_zero_is_the_identity() {
        let image = ramp(2, 13, 11);
        let still = ElasticTransform::new(0.0, 3.0);
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(still.apply(&image, &mut rng), image);
        let nearest = still.interpolation(Interpolation::Nearest);
        assert_eq!(nearest.apply(&image, &mut rng), image);
    }

    #[test]
    fn kernel_is_normalised_and_symmetric() {
        for sigma in [0.3, 1.0, 4.0] {
            let k = gaussian_kernel(sigma);
            assert_eq!(k.len() % 2, 1);
            assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(k.iter().zip(k.iter().rev()).all(|(a, b)| a == b));
        }
        assert_eq!(gaussian_kernel(4.0).len(), 33);
    }

    #[test]
    fn blur_preserves_constants_and_matches_a_direct_convolution() {
        let kernel = gaussian_kernel(1.5);
        let (h, w) = (6, 19);
        let constant = vec![0.7; 2 * h * w];
        let (a, b) = SeparableBlur::new(&kernel, h, w, 1.0).blur_pair(&constant);
        assert!(a.iter().chain(&b).all(|&v| (v - 0.7).abs() < 1e-6));

        // Field `a` is a pattern, `b` its negative times 2: blurred independently.
        let field: Vec<f32> = (0..h * w).map(|v| ((v * 7919) % 13) as f32).collect();
        let mut pair = Vec::new();
        for row in field.chunks(w) {
            pair.extend_from_slice(row);
            pair.extend(row.iter().map(|v| -2.0 * v));
        }
        let (a, b) = SeparableBlur::new(&kernel, h, w, 3.0).blur_pair(&pair);
        let r = (kernel.len() / 2) as isize;
        for i in 0..h {
            for j in 0..w {
                let mut direct = 0.0f64;
                for (s, &ks) in kernel.iter().enumerate() {
                    for (t, &kt) in kernel.iter().enumerate() {
                        let y = reflect_index(i as isize + s as isize - r, h);
                        let x = reflect_index(j as isize + t as isize - r, w);
                        direct += 3.0 * (ks * kt) as f64 * field[y * w + x] as f64;
                    }
                }
                assert!((a[i * w + j] as f64 - direct).abs() < 1e-4);
                assert!((b[i * w + j] as f64 + 2.0 * direct).abs() < 2e-4);
            }
        }
    }

    #[test]
    fn displacements_are_smooth_and_scaled_by_alpha() {
        let mut rng = StdRng::seed_from_u64(1);
        let field = elastic_displacement(64, 64, 10.0, 4.0, &mut rng);
        let dx = &field.as_slice()[..64 * 64];
        let max = dx.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
        // Blurred uniform noise has std ≈ 0.577 / (2 √π σ) ≈ 0.04, so α = 10 gives ~0.4 pixel.
        assert!(max > 0.2 && max < 3.0, "{max}");
        // Neighbours within a row (the flat array wraps from one row to the next).
        let step = dx
            .chunks(64)
            .flat_map(|row| row.windows(2).map(|p| (p[1] - p[0]).abs()))
            .fold(0.0f32, f32::max);
        assert!(
            step < max / 2.0,
            "neighbouring displacements are close: {step} vs {max}"
        );
        // Same rng state, α doubled: exactly twice the field.
        let a = elastic_displacement(8, 8, 1.0, 2.0, &mut StdRng::seed_from_u64(5));
        let b = elastic_displacement(8, 8, 2.0, 2.0, &mut StdRng::seed_from_u64(5));
        assert!(a.map(|v| 2.0 * v).all_close(&b, 1e-5, 1e-6));
    }

    #[test]
    fn constant_displacement_is_a_translation() {
        let image = ramp(1, 6, 7);
        let mut field = vec![2.0f32; 42];
        field.extend(vec![-1.0f32; 42]);
        let field = Tensor::from_vec(field, &[2, 6, 7]).unwrap();
        let out = displace(&image, &field, Interpolation::Bilinear, 0.0);
        // Reading (x + 2, y − 1) moves the content left by 2 and down by 1.
        assert_eq!(out, super::super::functional::translate(&image, -2, 1, 0.0));
    }

    #[test]
    fn transform_equals_the_functional_path_for_every_size() {
        let elastic = ElasticTransform::new(6.0, 2.5);
        // The first size fills the cache; the second is built per call.
        for (h, w) in [(12, 10), (7, 15), (12, 10)] {
            let image = ramp(2, h, w);
            let field = elastic_displacement(h, w, 6.0, 2.5, &mut StdRng::seed_from_u64(9));
            let expected = displace(&image, &field, Interpolation::Bilinear, 0.0);
            let actual = elastic.apply(&image, &mut StdRng::seed_from_u64(9));
            assert_eq!(actual, expected, "{h}x{w}");
        }
    }

    #[test]
    fn uniform_noise_covers_the_symmetric_interval() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut values = vec![0.0f32; 100_001];
        fill_symmetric_uniform(&mut rng, &mut values);
        assert!(values.iter().all(|v| (-1.0..1.0).contains(v)));
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / 1e5;
        // Uniform on [-1, 1): mean 0 (standard error 0.0018), variance 1/3.
        assert!(mean.abs() < 0.008, "{mean}");
        assert!((var - 1.0 / 3.0).abs() < 0.01, "{var}");
        assert!(values.iter().any(|&v| v < -0.999) && values.iter().any(|&v| v > 0.999));
    }

    #[test]
    #[should_panic(expected = "ElasticTransform: sigma must be finite and > 0 (sigma = 0)")]
    fn zero_sigma_panics() {
        ElasticTransform::new(34.0, 0.0);
    }

    #[test]
    #[should_panic(expected = "ElasticTransform: sigma must be finite and > 0 (sigma = -1)")]
    fn negative_sigma_panics() {
        ElasticTransform::new(34.0, -1.0);
    }
}
