//! Elastic deformation, after Simard, Steinkraus and Platt (2003), "Best Practices for
//! Convolutional Neural Networks Applied to Visual Document Analysis", section 2: a field of
//! uniform random displacements in `[-1, 1]`, smoothed by a Gaussian of standard deviation `σ`,
//! scaled by `α` (pixels), moves every pixel; the image is resampled bilinearly.

use rand::{Rng, RngExt};

use super::sampling::{Interpolation, displace_by, reflect_index};
use super::{Transform, expect_non_negative, expect_positive, fork_rng, image_dims, image_tensor};
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, expect_finite, shape_str};

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
/// `n × n` matrix: row `o` has its non-zero weights in `spans[o]`.
///
/// Folding the boundary into the matrix keeps both passes of the separable blur plain
/// multiply-adds over whole rows, which vectorise, whatever the image size or `σ`.
struct BandMatrix {
    n: usize,
    weights: Vec<f32>,
    spans: Vec<(usize, usize)>,
}

impl BandMatrix {
    /// The blur matrix `G[o][i] = Σ kernel[t]` over taps `t` whose reflected position is `i`;
    /// `transposed` stores `Gᵀ` instead.
    fn new(kernel: &[f32], n: usize, scale: f32, transposed: bool) -> BandMatrix {
        let radius = (kernel.len() / 2) as isize;
        let mut weights = vec![0.0f32; n * n];
        for o in 0..n {
            for (t, &k) in kernel.iter().enumerate() {
                let i = reflect_index(o as isize + t as isize - radius, n);
                let at = if transposed { i * n + o } else { o * n + i };
                weights[at] += scale * k;
            }
        }
        let spans = weights
            .chunks_exact(n)
            .map(|row| {
                let lo = row.iter().position(|&g| g != 0.0).unwrap_or(0);
                let hi = row.iter().rposition(|&g| g != 0.0).map_or(lo, |k| k + 1);
                (lo, hi)
            })
            .collect();
        BandMatrix { n, weights, spans }
    }

    fn row(&self, o: usize) -> (usize, &[f32]) {
        let (lo, hi) = self.spans[o];
        (lo, &self.weights[o * self.n + lo..o * self.n + hi])
    }
}

/// Blurs a `[height, width]` field with the separable Gaussian `columns ∘ rows` (rows: the
/// blur along the height, as `G_h`; columns: along the width, as `G_wᵀ`).
fn blur(
    field: &[f32],
    height: usize,
    width: usize,
    rows: &BandMatrix,
    cols_t: &BandMatrix,
) -> Vec<f32> {
    // Along the height: output row o is a weighted sum of input rows.
    let mut vertical = vec![0.0f32; height * width];
    for (o, dst) in vertical.chunks_exact_mut(width).enumerate() {
        let (lo, weights) = rows.row(o);
        for (k, &g) in weights.iter().enumerate() {
            let src = &field[(lo + k) * width..(lo + k + 1) * width];
            dst.iter_mut().zip(src).for_each(|(d, &s)| *d += g * s);
        }
    }
    // Along the width: each input value spreads over its band of output columns.
    let mut out = vec![0.0f32; height * width];
    for (dst, src) in out
        .chunks_exact_mut(width)
        .zip(vertical.chunks_exact(width))
    {
        for (k, &v) in src.iter().enumerate() {
            let (lo, weights) = cols_t.row(k);
            dst[lo..lo + weights.len()]
                .iter_mut()
                .zip(weights)
                .for_each(|(d, &g)| *d += v * g);
        }
    }
    out
}

/// The `(dx, dy)` displacement fields of Simard's method, each `[height, width]` in pixels.
fn random_field(
    height: usize,
    width: usize,
    alpha: f32,
    kernel: &[f32],
    rng: &mut dyn Rng,
) -> (Vec<f32>, Vec<f32>) {
    let mut local = fork_rng(rng);
    let plane = height * width;
    if plane == 0 {
        return (Vec::new(), Vec::new());
    }
    let noise: Vec<f32> = (0..2 * plane)
        .map(|_| 2.0 * local.random::<f32>() - 1.0)
        .collect();
    // α is folded into the first pass.
    let rows = BandMatrix::new(kernel, height, alpha, false);
    let cols_t = BandMatrix::new(kernel, width, 1.0, true);
    let dx = blur(&noise[..plane], height, width, &rows, &cols_t);
    let dy = blur(&noise[plane..], height, width, &rows, &cols_t);
    (dx, dy)
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
    let (dx, dy) = random_field(height, width, alpha, &gaussian_kernel(sigma), rng);
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
#[derive(Clone, Debug, PartialEq)]
pub struct ElasticTransform {
    alpha: f32,
    kernel: Vec<f32>,
    interpolation: Interpolation,
    fill: f32,
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
        }
    }

    /// How pixels are resampled.
    pub fn interpolation(mut self, interpolation: Interpolation) -> Self {
        self.interpolation = interpolation;
        self
    }

    /// The value of pixels that come from outside the image.
    ///
    /// # Panics
    ///
    /// If `fill` is not finite.
    pub fn fill(mut self, fill: f32) -> Self {
        expect_finite("ElasticTransform", "fill", fill);
        self.fill = fill;
        self
    }
}

impl Transform for ElasticTransform {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        let (c, h, w) = image_dims("ElasticTransform", image);
        let (dx, dy) = random_field(h, w, self.alpha, &self.kernel, rng);
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
        let (h, w) = (6, 9);
        let rows = BandMatrix::new(&kernel, h, 1.0, false);
        let cols_t = BandMatrix::new(&kernel, w, 1.0, true);
        let constant = blur(&vec![0.7; h * w], h, w, &rows, &cols_t);
        assert!(constant.iter().all(|&v| (v - 0.7).abs() < 1e-6));

        let field: Vec<f32> = (0..h * w).map(|v| ((v * 7919) % 13) as f32).collect();
        let blurred = blur(&field, h, w, &rows, &cols_t);
        let r = (kernel.len() / 2) as isize;
        for i in 0..h {
            for j in 0..w {
                let mut direct = 0.0f64;
                for (a, &ka) in kernel.iter().enumerate() {
                    for (b, &kb) in kernel.iter().enumerate() {
                        let y = reflect_index(i as isize + a as isize - r, h);
                        let x = reflect_index(j as isize + b as isize - r, w);
                        direct += (ka * kb) as f64 * field[y * w + x] as f64;
                    }
                }
                assert!((blurred[i * w + j] as f64 - direct).abs() < 1e-4);
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
        let step = dx
            .windows(2)
            .map(|p| (p[1] - p[0]).abs())
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
