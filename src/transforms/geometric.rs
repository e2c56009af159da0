//! Geometric transforms: flips, crops, resizing, and the affine family (rotation, translation,
//! zoom, shear), each resampled once through the shared sampler.
//!
//! Conventions, as torchvision's tensor kernels: pixel `(row, column)` has its centre at
//! `(y, x) = (row, column)`, the image centre is `((w − 1)/2, (h − 1)/2)`, sampling is
//! `grid_sample` with `align_corners=False`; angles are counter-clockwise as displayed (rows grow
//! downward), like `F.rotate`.

use rand::{Rng, RngExt};

use super::sampling::{
    Interpolation, InverseMap, antialias_taps, edge_index, linear_taps, reflect_index, warp_affine,
};
use super::{
    Size, Transform, expect_interval, expect_non_negative, expect_positive, expect_probability,
    image_dims, image_tensor, uniform, uniform_index,
};
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, expect_finite, shape_str};

// ---------------------------------------------------------------- flips

/// Mirrors an image left to right.
///
/// # Panics
///
/// If `image` is not rank 3 `[C, H, W]`.
pub fn hflip(image: &Tensor) -> Tensor {
    let (c, h, w) = image_dims("hflip", image);
    let mut out = image.to_vec();
    if w > 0 {
        out.chunks_exact_mut(w).for_each(|row| row.reverse());
    }
    image_tensor(out, c, h, w)
}

/// Mirrors an image top to bottom.
///
/// # Panics
///
/// If `image` is not rank 3 `[C, H, W]`.
pub fn vflip(image: &Tensor) -> Tensor {
    let (c, h, w) = image_dims("vflip", image);
    let src = image.as_slice();
    let mut out = Vec::with_capacity(src.len());
    for ch in 0..c {
        for i in (0..h).rev() {
            out.extend_from_slice(&src[(ch * h + i) * w..(ch * h + i + 1) * w]);
        }
    }
    image_tensor(out, c, h, w)
}

/// Flips an image left to right with probability `p` (torchvision's `RandomHorizontalFlip`).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{RandomHorizontalFlip, Transform};
///
/// let image = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[1, 1, 3]).unwrap();
/// let flipped = RandomHorizontalFlip::new(1.0).apply(&image, &mut StdRng::seed_from_u64(0));
/// assert_eq!(flipped.as_slice(), &[3.0, 2.0, 1.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomHorizontalFlip {
    p: f32,
}

impl RandomHorizontalFlip {
    /// Flips with probability `p`; torchvision's default is 0.5.
    ///
    /// # Panics
    ///
    /// If `p` is not in `[0, 1]`.
    pub fn new(p: f32) -> Self {
        expect_probability("RandomHorizontalFlip", "p", p);
        RandomHorizontalFlip { p }
    }
}

impl Transform for RandomHorizontalFlip {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        if rng.random::<f32>() < self.p {
            hflip(image)
        } else {
            image.clone()
        }
    }
}

/// Flips an image top to bottom with probability `p` (torchvision's `RandomVerticalFlip`).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{RandomVerticalFlip, Transform};
///
/// let image = Tensor::from_vec(vec![1.0, 2.0], &[1, 2, 1]).unwrap();
/// let same = RandomVerticalFlip::new(0.0).apply(&image, &mut StdRng::seed_from_u64(0));
/// assert_eq!(same, image);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomVerticalFlip {
    p: f32,
}

impl RandomVerticalFlip {
    /// Flips with probability `p`; torchvision's default is 0.5.
    ///
    /// # Panics
    ///
    /// If `p` is not in `[0, 1]`.
    pub fn new(p: f32) -> Self {
        expect_probability("RandomVerticalFlip", "p", p);
        RandomVerticalFlip { p }
    }
}

impl Transform for RandomVerticalFlip {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        if rng.random::<f32>() < self.p {
            vflip(image)
        } else {
            image.clone()
        }
    }
}

// ---------------------------------------------------------------- crops and padding

/// What a crop reads outside the image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PaddingMode {
    /// A constant value; `Constant(0.0)`, zero padding, is the default.
    Constant(f32),
    /// The mirror image without repeating the edge pixel: `c b | a b c d | c b` (torch's
    /// `reflect`).
    Reflect,
    /// The edge pixel repeated: `a a | a b c d | d d` (torch's `replicate`, torchvision's
    /// `edge`).
    Edge,
}

impl Default for PaddingMode {
    fn default() -> Self {
        PaddingMode::Constant(0.0)
    }
}

/// The `size` window of `image` whose top-left pixel is `(top, left)`; positions outside the
/// image are read through `padding_mode`, so a window may overhang the image (torchvision's
/// `F.crop` pads with zeros in that case).
///
/// Padding followed by a crop is one call: pad by `p` then crop at `(i, j)` equals
/// `crop(image, i - p, j - p, ..)`.
///
/// # Panics
///
/// If `image` is not rank 3, or it is empty and a non-empty window must be reflected or
/// replicated from it.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::PaddingMode;
/// use striate::transforms::functional::crop;
///
/// let image = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 2, 2]).unwrap();
/// let window = crop(&image, -1, 0, (2, 3), PaddingMode::Edge);
/// assert_eq!(window.as_slice(), &[1.0, 2.0, 2.0, 1.0, 2.0, 2.0]);
/// ```
pub fn crop(
    image: &Tensor,
    top: isize,
    left: isize,
    size: impl Into<Size>,
    padding_mode: PaddingMode,
) -> Tensor {
    const OP: &str = "crop";
    let (c, h, w) = image_dims(OP, image);
    let Size {
        height: out_h,
        width: out_w,
    } = size.into();
    let fill = match padding_mode {
        PaddingMode::Constant(value) => value,
        _ => 0.0,
    };
    let mut out = vec![fill; c * out_h * out_w];
    if out.is_empty() {
        return image_tensor(out, c, out_h, out_w);
    }
    if (h == 0 || w == 0) && !matches!(padding_mode, PaddingMode::Constant(_)) {
        contract_violation(
            OP,
            format_args!("cannot pad an empty image with {padding_mode:?}"),
            format_args!("image {}", shape_str(image.shape())),
        );
    }
    // The source index of an output position, `None` where the padding reads the constant.
    let source = |i: isize, n: usize| -> Option<usize> {
        if (0..n as isize).contains(&i) {
            return Some(i as usize);
        }
        match padding_mode {
            PaddingMode::Constant(_) => None,
            PaddingMode::Reflect => Some(reflect_index(i, n)),
            PaddingMode::Edge => Some(edge_index(i, n)),
        }
    };
    let columns: Vec<Option<usize>> = (0..out_w).map(|j| source(left + j as isize, w)).collect();
    // Output columns that fall inside the image are one contiguous run, copied per row.
    let run_start = (-left).clamp(0, out_w as isize) as usize;
    let run_end = (w as isize - left).clamp(run_start as isize, out_w as isize) as usize;
    let src = image.as_slice();
    for ch in 0..c {
        for i in 0..out_h {
            let Some(row) = source(top + i as isize, h) else {
                continue;
            };
            let src_row = &src[(ch * h + row) * w..(ch * h + row + 1) * w];
            let dst_row = &mut out[(ch * out_h + i) * out_w..(ch * out_h + i + 1) * out_w];
            if run_end > run_start {
                let from = (left + run_start as isize) as usize;
                dst_row[run_start..run_end]
                    .copy_from_slice(&src_row[from..from + (run_end - run_start)]);
            }
            for j in (0..run_start).chain(run_end..out_w) {
                if let Some(k) = columns[j] {
                    dst_row[j] = src_row[k];
                }
            }
        }
    }
    image_tensor(out, c, out_h, out_w)
}

/// The central `size` window of `image`, as torchvision's `F.center_crop`: the offset is
/// `round((h − th) / 2)` with ties to even (Python's `round`), and a window larger than the
/// image is padded with zeros, the extra row or column going to the bottom and right.
///
/// # Panics
///
/// If `image` is not rank 3.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::functional::center_crop;
///
/// let image = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 4, 4]).unwrap();
/// assert_eq!(center_crop(&image, 2).as_slice(), &[5.0, 6.0, 9.0, 10.0]);
/// ```
pub fn center_crop(image: &Tensor, size: impl Into<Size>) -> Tensor {
    let (_, h, w) = image_dims("center_crop", image);
    let size = size.into();
    let offset = |n: usize, target: usize| -> isize {
        if target > n {
            -(((target - n) / 2) as isize)
        } else {
            ((n - target) as f64 / 2.0).round_ties_even() as isize
        }
    };
    crop(
        image,
        offset(h, size.height),
        offset(w, size.width),
        size,
        PaddingMode::default(),
    )
}

/// Shifts an image by whole pixels, `dx` to the right and `dy` down, filling the uncovered
/// border with `fill`.
///
/// # Panics
///
/// If `image` is not rank 3.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::functional::translate;
///
/// let image = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[1, 1, 3]).unwrap();
/// assert_eq!(translate(&image, 1, 0, -1.0).as_slice(), &[-1.0, 1.0, 2.0]);
/// ```
pub fn translate(image: &Tensor, dx: isize, dy: isize, fill: f32) -> Tensor {
    let (_, h, w) = image_dims("translate", image);
    crop(image, -dy, -dx, (h, w), PaddingMode::Constant(fill))
}

/// Crops a random `size` window, after padding the image by `padding` pixels on every side
/// (torchvision's `RandomCrop`).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{PaddingMode, RandomCrop, Transform};
///
/// let crop = RandomCrop::new(28).padding(2).padding_mode(PaddingMode::Reflect);
/// let out = crop.apply(&Tensor::ones(&[1, 28, 28]), &mut StdRng::seed_from_u64(1));
/// assert_eq!(out, Tensor::ones(&[1, 28, 28]));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomCrop {
    size: Size,
    padding: usize,
    padding_mode: PaddingMode,
}

impl RandomCrop {
    /// Crops windows of `size` (a number for a square, or `(height, width)`), without padding.
    ///
    /// # Panics
    ///
    /// If either side is zero.
    pub fn new(size: impl Into<Size>) -> Self {
        let size = size.into();
        expect_nonzero_size("RandomCrop", size);
        RandomCrop {
            size,
            padding: 0,
            padding_mode: PaddingMode::default(),
        }
    }

    /// Pads every side by `padding` pixels before cropping.
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }

    /// What the padding reads; zeros by default.
    pub fn padding_mode(mut self, padding_mode: PaddingMode) -> Self {
        self.padding_mode = padding_mode;
        self
    }
}

impl Transform for RandomCrop {
    /// # Panics
    ///
    /// If the crop is larger than the padded image; the image size is first known here.
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        let (_, h, w) = image_dims("RandomCrop", image);
        let (padded_h, padded_w) = (h + 2 * self.padding, w + 2 * self.padding);
        if self.size.height > padded_h || self.size.width > padded_w {
            contract_violation(
                "RandomCrop",
                "crop size must not exceed the padded image",
                format_args!(
                    "size [{}, {}], padded image [{padded_h}, {padded_w}] (image {}, padding {})",
                    self.size.height,
                    self.size.width,
                    shape_str(image.shape()),
                    self.padding
                ),
            );
        }
        let top = uniform_index(rng, padded_h - self.size.height) as isize;
        let left = uniform_index(rng, padded_w - self.size.width) as isize;
        let pad = self.padding as isize;
        crop(image, top - pad, left - pad, self.size, self.padding_mode)
    }
}

/// Crops the central window of a fixed size (torchvision's `CenterCrop`); see
/// [`center_crop`](super::functional::center_crop).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{CenterCrop, Transform};
///
/// let out = CenterCrop::new((20, 24)).apply(&Tensor::ones(&[3, 28, 28]), &mut StdRng::seed_from_u64(0));
/// assert_eq!(out.shape(), &[3, 20, 24]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CenterCrop {
    size: Size,
}

impl CenterCrop {
    /// Crops windows of `size` (a number for a square, or `(height, width)`).
    ///
    /// # Panics
    ///
    /// If either side is zero.
    pub fn new(size: impl Into<Size>) -> Self {
        let size = size.into();
        expect_nonzero_size("CenterCrop", size);
        CenterCrop { size }
    }
}

impl Transform for CenterCrop {
    fn apply(&self, image: &Tensor, _rng: &mut dyn Rng) -> Tensor {
        center_crop(image, self.size)
    }
}

#[track_caller]
fn expect_nonzero_size(op: &str, size: Size) {
    if size.height == 0 || size.width == 0 {
        contract_violation(
            op,
            "size must be positive",
            format_args!("size [{}, {}]", size.height, size.width),
        );
    }
}

// ---------------------------------------------------------------- resizing

/// Resizes an image to `size` by bilinear interpolation.
///
/// Follows PyTorch's `interpolate(mode="bilinear", align_corners=False, antialias=False)`:
/// output pixel `o` reads source coordinate `(o + 0.5)·in/out − 0.5`, clamped to the image.
/// torchvision's `F.resize` antialiases by default, which differs when shrinking; upsampling
/// agrees.
///
/// # Panics
///
/// If `image` is not rank 3 or is empty.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::functional::resize;
///
/// let image = Tensor::from_vec(vec![0.0, 1.0], &[1, 1, 2]).unwrap();
/// assert_eq!(resize(&image, (1, 4)).as_slice(), &[0.0, 0.25, 0.75, 1.0]);
/// ```
pub fn resize(image: &Tensor, size: impl Into<Size>) -> Tensor {
    let (_, h, w) = image_dims("resize", image);
    resize_window("resize", image, (0, 0), Size::new(h, w), size.into())
}

/// Resizes an image to `size` by bilinear interpolation with antialiasing: when shrinking, every
/// input pixel under an output pixel is averaged in (torchvision's `F.resize` default,
/// `antialias=True`, and Pillow's `Image.resize(BILINEAR)`). Enlarging is the same as
/// [`resize`].
///
/// # Panics
///
/// If `image` is not rank 3 or is empty.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::functional::resize_antialiased;
///
/// // Halving averages each pair, and a quarter of each neighbour.
/// let image = Tensor::from_vec(vec![0.0, 0.0, 8.0, 8.0], &[1, 1, 4]).unwrap();
/// assert_eq!(resize_antialiased(&image, (1, 2)).as_slice(), &[8.0 / 7.0, 48.0 / 7.0]);
/// ```
pub fn resize_antialiased(image: &Tensor, size: impl Into<Size>) -> Tensor {
    let (_, h, w) = image_dims("resize_antialiased", image);
    resize_window_antialiased(
        "resize_antialiased",
        image,
        (0, 0),
        Size::new(h, w),
        size.into(),
    )
}

/// Crops the `window` whose top-left pixel is `(top, left)` and resizes it to `size`, in one
/// bilinear pass; the window's own border is replicated (torchvision's `F.resized_crop`, which
/// crops, then resizes).
///
/// # Panics
///
/// If `image` is not rank 3, or the window is empty or not inside the image.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::functional::resized_crop;
///
/// let image = Tensor::from_vec(vec![0.0, 1.0, 2.0, 3.0], &[1, 1, 4]).unwrap();
/// assert_eq!(resized_crop(&image, 0, 2, (1, 1), (1, 2)).as_slice(), &[2.0, 2.0]);
/// ```
pub fn resized_crop(
    image: &Tensor,
    top: usize,
    left: usize,
    window: impl Into<Size>,
    size: impl Into<Size>,
) -> Tensor {
    resize_window(
        "resized_crop",
        image,
        (top, left),
        window.into(),
        size.into(),
    )
}

#[track_caller]
fn expect_window(op: &str, image: &Tensor, (top, left): (usize, usize), window: Size) {
    let (_, h, w) = image_dims(op, image);
    if window.height == 0 || window.width == 0 || top + window.height > h || left + window.width > w
    {
        contract_violation(
            op,
            "the window must be non-empty and inside the image",
            format_args!(
                "window [{}, {}] at ({top}, {left}), image {}",
                window.height,
                window.width,
                shape_str(image.shape())
            ),
        );
    }
}

/// The window resized with or without antialiasing.
fn resample_window(
    op: &str,
    image: &Tensor,
    corner: (usize, usize),
    window: Size,
    size: Size,
    antialias: bool,
) -> Tensor {
    if antialias {
        resize_window_antialiased(op, image, corner, window, size)
    } else {
        resize_window(op, image, corner, window, size)
    }
}

/// Antialiased resize of a window: a horizontal pass over the window's rows, then a vertical
/// one (Pillow's order), each with the taps of [`antialias_taps`]; pixels outside the window
/// are never read, so its border is replicated as after a crop.
fn resize_window_antialiased(
    op: &str,
    image: &Tensor,
    (top, left): (usize, usize),
    window: Size,
    size: Size,
) -> Tensor {
    expect_window(op, image, (top, left), window);
    let (c, h, w) = image_dims(op, image);
    let cols = antialias_taps(window.width, size.width);
    let rows = antialias_taps(window.height, size.height);
    let src = image.as_slice();
    let mut across = vec![0.0f32; window.height * size.width];
    let mut out = Vec::with_capacity(c * size.height * size.width);
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        for (y, row_out) in across.chunks_exact_mut(size.width).enumerate() {
            let row = &plane[(top + y) * w + left..(top + y) * w + left + window.width];
            for (o, tap) in row_out.iter_mut().zip(&cols) {
                let taken = &row[tap.start..tap.start + tap.weights.len()];
                *o = taken.iter().zip(&tap.weights).map(|(v, k)| v * k).sum();
            }
        }
        for tap in &rows {
            let first = out.len();
            out.resize(first + size.width, 0.0);
            let row_out = &mut out[first..];
            for (k, &weight) in tap.weights.iter().enumerate() {
                let row = &across[(tap.start + k) * size.width..(tap.start + k + 1) * size.width];
                for (o, v) in row_out.iter_mut().zip(row) {
                    *o += weight * v;
                }
            }
        }
    }
    image_tensor(out, c, size.height, size.width)
}

fn resize_window(
    op: &str,
    image: &Tensor,
    (top, left): (usize, usize),
    window: Size,
    size: Size,
) -> Tensor {
    expect_window(op, image, (top, left), window);
    let (c, h, w) = image_dims(op, image);
    let rows = linear_taps(window.height, size.height);
    let cols = linear_taps(window.width, size.width);
    let src = image.as_slice();
    let mut out = Vec::with_capacity(c * size.height * size.width);
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        for ty in &rows {
            let upper = &plane[(top + ty.lo) * w + left..];
            let lower = &plane[(top + ty.hi) * w + left..];
            for tx in &cols {
                // Separable bilinear weights, rows outermost, as PyTorch's upsample kernel.
                let (wx0, wx1) = (1.0 - tx.frac, tx.frac);
                let above = wx0 * upper[tx.lo] + wx1 * upper[tx.hi];
                let below = wx0 * lower[tx.lo] + wx1 * lower[tx.hi];
                out.push((1.0 - ty.frac) * above + ty.frac * below);
            }
        }
    }
    image_tensor(out, c, size.height, size.width)
}

/// Resizes by bilinear interpolation, antialiased when shrinking (torchvision's `Resize` with
/// its default `antialias=True`): to a fixed size with [`new`](Self::new), or keeping the
/// aspect ratio with [`shorter_side`](Self::shorter_side) (torchvision's `Resize(n)`).
///
/// [`antialias(false)`](Self::antialias) gives the plain bilinear of
/// [`resize`](super::functional::resize); with it on, the rule is that of
/// [`resize_antialiased`](super::functional::resize_antialiased). The two agree when enlarging.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{Resize, Transform};
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let out = Resize::new(32).apply(&Tensor::ones(&[1, 28, 28]), &mut rng);
/// assert_eq!(out.shape(), &[1, 32, 32]);
/// // ImageNet evaluation: the shorter side to 256, then a 224 centre crop.
/// let photo = Tensor::zeros(&[3, 375, 500]);
/// assert_eq!(Resize::shorter_side(256).apply(&photo, &mut rng).shape(), &[3, 256, 341]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resize {
    target: ResizeTarget,
    antialias: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ResizeTarget {
    Exact(Size),
    ShorterSide {
        size: usize,
        max_size: Option<usize>,
    },
}

impl Resize {
    /// Resizes to `size` (a number for a square, or `(height, width)`).
    ///
    /// # Panics
    ///
    /// If either side is zero.
    pub fn new(size: impl Into<Size>) -> Self {
        let size = size.into();
        expect_nonzero_size("Resize", size);
        Resize {
            target: ResizeTarget::Exact(size),
            antialias: true,
        }
    }

    /// Scales the shorter side to `size` and the longer one in proportion, rounded down
    /// (torchvision's `Resize(size)` with an int).
    ///
    /// # Panics
    ///
    /// If `size` is zero.
    pub fn shorter_side(size: usize) -> Self {
        expect_nonzero_size("Resize::shorter_side", Size::new(size, size));
        Resize {
            target: ResizeTarget::ShorterSide {
                size,
                max_size: None,
            },
            antialias: true,
        }
    }

    /// With [`shorter_side`](Self::shorter_side): caps the longer side at `max_size`, shrinking
    /// the shorter one in proportion (torchvision's `max_size`).
    ///
    /// # Panics
    ///
    /// If this is not a shorter-side resize, or `max_size` is not above its size.
    pub fn max_size(mut self, max_size: usize) -> Self {
        match &mut self.target {
            ResizeTarget::ShorterSide {
                size,
                max_size: cap,
            } if max_size > *size => *cap = Some(max_size),
            target => contract_violation(
                "Resize::max_size",
                "max_size applies to shorter_side(size) and must exceed size",
                format_args!("{target:?}, max_size = {max_size}"),
            ),
        }
        self
    }

    /// Whether to antialias when shrinking (default `true`, as torchvision).
    pub fn antialias(mut self, antialias: bool) -> Self {
        self.antialias = antialias;
        self
    }

    /// The output size for an input of `height × width`.
    pub fn output_size(&self, height: usize, width: usize) -> Size {
        match self.target {
            ResizeTarget::Exact(size) => size,
            ResizeTarget::ShorterSide { size, max_size } => {
                // torchvision's `_compute_resized_output_size`, in Python's doubles and int().
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                let (mut new_short, mut new_long) =
                    (size, (size as f64 * long as f64 / short as f64) as usize);
                if let Some(cap) = max_size.filter(|&cap| new_long > cap) {
                    new_short = (cap as f64 * new_short as f64 / new_long as f64) as usize;
                    new_long = cap;
                }
                let (new_short, new_long) = (new_short.max(1), new_long.max(1));
                if width <= height {
                    Size::new(new_long, new_short)
                } else {
                    Size::new(new_short, new_long)
                }
            }
        }
    }
}

impl Transform for Resize {
    fn apply(&self, image: &Tensor, _rng: &mut dyn Rng) -> Tensor {
        let (_, h, w) = image_dims("Resize", image);
        let size = self.output_size(h, w);
        resample_window(
            "Resize",
            image,
            (0, 0),
            Size::new(h, w),
            size,
            self.antialias,
        )
    }
}

/// Crops a random window of random area and aspect ratio and resizes it to a fixed size
/// (torchvision's `RandomResizedCrop`: bilinear, antialiased when shrinking unless
/// [`antialias(false)`](Self::antialias)).
///
/// The window covers a fraction of the image area drawn from `scale` and has a width / height
/// ratio drawn log-uniformly from `ratio`; after ten rejected draws it falls back to the
/// largest central window within the ratio range, as torchvision does.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{RandomResizedCrop, Transform};
///
/// let crop = RandomResizedCrop::new(28).scale(0.6, 1.0);
/// let out = crop.apply(&Tensor::ones(&[1, 28, 28]), &mut StdRng::seed_from_u64(2));
/// assert_eq!(out, Tensor::ones(&[1, 28, 28]));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomResizedCrop {
    size: Size,
    scale: (f32, f32),
    ratio: (f32, f32),
    antialias: bool,
}

impl RandomResizedCrop {
    /// Produces `size` images; area fraction in `[0.08, 1]` and ratio in `[3/4, 4/3]` unless
    /// set.
    ///
    /// # Panics
    ///
    /// If either side is zero.
    pub fn new(size: impl Into<Size>) -> Self {
        let size = size.into();
        expect_nonzero_size("RandomResizedCrop", size);
        RandomResizedCrop {
            size,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            antialias: true,
        }
    }

    /// Whether to antialias when the window is shrunk (default `true`, as torchvision).
    pub fn antialias(mut self, antialias: bool) -> Self {
        self.antialias = antialias;
        self
    }

    /// The range of the window's area as a fraction of the image's.
    ///
    /// # Panics
    ///
    /// If the range is not `0 < min <= max`.
    pub fn scale(mut self, min: f32, max: f32) -> Self {
        expect_interval("RandomResizedCrop", "scale", min, max);
        expect_positive("RandomResizedCrop", "scale min", min);
        self.scale = (min, max);
        self
    }

    /// The range of the window's width / height ratio.
    ///
    /// # Panics
    ///
    /// If the range is not `0 < min <= max`.
    pub fn ratio(mut self, min: f32, max: f32) -> Self {
        expect_interval("RandomResizedCrop", "ratio", min, max);
        expect_positive("RandomResizedCrop", "ratio min", min);
        self.ratio = (min, max);
        self
    }

    /// The window `(top, left, height, width)`, drawn as torchvision's `get_params` does.
    fn window(&self, h: usize, w: usize, rng: &mut dyn Rng) -> (usize, usize, usize, usize) {
        let area = (h * w) as f32;
        let (log_min, log_max) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, log_min, log_max).exp();
            let ww = (target_area * aspect).sqrt().round_ties_even() as usize;
            let wh = (target_area / aspect).sqrt().round_ties_even() as usize;
            if 0 < ww && ww <= w && 0 < wh && wh <= h {
                let top = uniform_index(rng, h - wh);
                let left = uniform_index(rng, w - ww);
                return (top, left, wh, ww);
            }
        }
        let in_ratio = w as f32 / h as f32;
        let (wh, ww) = if in_ratio < self.ratio.0 {
            ((w as f32 / self.ratio.0).round_ties_even() as usize, w)
        } else if in_ratio > self.ratio.1 {
            (h, (h as f32 * self.ratio.1).round_ties_even() as usize)
        } else {
            (h, w)
        };
        let (wh, ww) = (wh.clamp(1, h), ww.clamp(1, w));
        ((h - wh) / 2, (w - ww) / 2, wh, ww)
    }
}

impl Transform for RandomResizedCrop {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        let (_, h, w) = image_dims("RandomResizedCrop", image);
        let (top, left, wh, ww) = self.window(h, w, rng);
        resample_window(
            "RandomResizedCrop",
            image,
            (top, left),
            Size::new(wh, ww),
            self.size,
            self.antialias,
        )
    }
}

// ---------------------------------------------------------------- the affine family

/// How the affine family ([`affine`], [`rotate`], [`RandomRotation`], [`RandomZoom`],
/// [`RandomAffine`]) fills what comes from outside the image. The two differ only for bilinear
/// sampling, in the one-pixel band along the border; nearest sampling gives the same image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FillMode {
    /// The default: each bilinear tap outside the image reads the fill value, so the border
    /// band blends image and fill by the taps' weights (torchvision with `fill=None` when the
    /// fill is 0).
    #[default]
    Taps,
    /// torchvision's behaviour for an explicit `fill`: a mask of ones is warped alongside the
    /// image (taps outside reading 0) and the result is `image · mask + (1 − mask) · fill`, so
    /// bilinear border pixels are scaled by the mask and come out darker; with nearest
    /// sampling, pixels whose mask is below 0.5 take the fill.
    TorchvisionMask,
}

/// The fill of the affine family: a value and how it is blended in. An `f32` converts to
/// [`FillMode::Taps`] with that value, so `rotate(&image, 30.0, Interpolation::Bilinear, 0.0)`
/// keeps its meaning.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::{Fill, Interpolation};
/// use striate::transforms::functional::rotate;
///
/// // a white image rotated with a white fill
/// let image = Tensor::ones(&[1, 5, 5]);
/// let taps = rotate(&image, 30.0, Interpolation::Bilinear, 1.0);
/// let torchvision = rotate(&image, 30.0, Interpolation::Bilinear, Fill::torchvision(1.0));
/// // tap by tap it stays white; torchvision's mask, m·m + (1 − m), darkens the border band
/// assert!(taps.as_slice().iter().all(|&v| (v - 1.0).abs() < 1e-6));
/// assert!(torchvision.as_slice().iter().any(|&v| v < 0.9));
/// assert_eq!(torchvision.as_slice()[12], 1.0); // the centre is untouched
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fill {
    /// The value of what comes from outside the image.
    pub value: f32,
    /// How it is blended in.
    pub mode: FillMode,
}

impl Fill {
    /// `value` blended by torchvision's mask ([`FillMode::TorchvisionMask`]).
    pub fn torchvision(value: f32) -> Fill {
        Fill {
            value,
            mode: FillMode::TorchvisionMask,
        }
    }
}

impl From<f32> for Fill {
    fn from(value: f32) -> Fill {
        Fill {
            value,
            mode: FillMode::Taps,
        }
    }
}

/// An affine transform about the image centre: shear, scale, rotation, then translation.
///
/// The map is torchvision's `F.affine` (its `_get_inverse_affine_matrix`) with one difference:
/// `angle` is counter-clockwise as displayed, like `F.rotate`, whereas `F.affine` takes
/// clockwise angles. So `affine(img, &Affine { angle: a, translate: t, scale: s, shear: sh })`
/// equals torchvision's `F.affine(img, -a, t, s, sh)`.
///
/// # Examples
///
/// ```
/// use striate::transforms::Affine;
///
/// let tilt = Affine { angle: 10.0, scale: 1.1, ..Affine::default() };
/// assert_eq!(tilt.translate, (0.0, 0.0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    /// Rotation in degrees, counter-clockwise as displayed.
    pub angle: f32,
    /// Translation in pixels, `(right, down)`, applied last.
    pub translate: (f32, f32),
    /// Scale factor (> 0); above 1 enlarges the content.
    pub scale: f32,
    /// Shear angles in degrees `(x, y)`, as torchvision defines them; each strictly between
    /// −90 and 90.
    pub shear: (f32, f32),
}

impl Default for Affine {
    /// The identity.
    fn default() -> Self {
        Affine {
            angle: 0.0,
            translate: (0.0, 0.0),
            scale: 1.0,
            shear: (0.0, 0.0),
        }
    }
}

impl Affine {
    /// The map from output pixel indices to input coordinates, for images of `(h, w)` pixels.
    ///
    /// Forward: `M = T · C · R · S · Sh · C⁻¹` (translation, centre, rotation, scale, shear);
    /// the inverse of the 2×2 part is its adjugate over the scale, since rotation and shear have
    /// determinant 1 (torchvision's `_get_inverse_affine_matrix`).
    #[track_caller]
    fn inverse_map(&self, op: &str, (h, w): (usize, usize)) -> InverseMap {
        let fields = [
            ("angle", self.angle),
            ("translate.0", self.translate.0),
            ("translate.1", self.translate.1),
            ("shear.0", self.shear.0),
            ("shear.1", self.shear.1),
        ];
        for (name, value) in fields {
            expect_finite(op, name, value);
        }
        expect_positive(op, "scale", self.scale);
        for (name, shear) in [("shear.0", self.shear.0), ("shear.1", self.shear.1)] {
            if shear.abs() >= 90.0 {
                contract_violation(
                    op,
                    format_args!("{name} must be strictly between -90 and 90 degrees"),
                    format_args!("{name} = {shear}"),
                );
            }
        }
        // torchvision's angle is clockwise: negate ours.
        let rot = -(self.angle as f64).to_radians();
        let (sx, sy) = (
            (self.shear.0 as f64).to_radians(),
            (self.shear.1 as f64).to_radians(),
        );
        let a = (rot - sy).cos() / sy.cos();
        let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
        let c = (rot - sy).sin() / sy.cos();
        let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
        let s = self.scale as f64;
        let (m0, m1, m3, m4) = (d / s, -b / s, -c / s, a / s);
        // Centred coordinates: x_in − cx = m0·(x − cx − tx) + m1·(y − cy − ty).
        let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        let (px, py) = (cx + self.translate.0 as f64, cy + self.translate.1 as f64);
        InverseMap {
            m: [
                m0,
                m1,
                cx - m0 * px - m1 * py,
                m3,
                m4,
                cy - m3 * px - m4 * py,
            ],
        }
    }
}

/// Applies an affine transform about the image centre in one resampling; positions that map
/// outside the image read `fill`. See [`Affine`] for the conventions.
///
/// `fill` is a value (an `f32`, blended tap by tap: [`FillMode::Taps`], the default) or a
/// [`Fill`]. With `fill = 0.0` this equals torchvision's `F.affine(img, -angle, ...,
/// fill=None)`; `Fill::torchvision(v)` equals torchvision with an explicit `fill=[v]`, which
/// scales the image by a warped mask ([`FillMode::TorchvisionMask`]).
///
/// # Panics
///
/// If `image` is not rank 3, a parameter is not finite, the scale is not positive or a shear
/// is ±90° or beyond.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::{Affine, Interpolation};
/// use striate::transforms::functional::affine;
///
/// let image = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[1, 1, 3]).unwrap();
/// let shift = Affine { translate: (1.0, 0.0), ..Affine::default() };
/// let out = affine(&image, &shift, Interpolation::Nearest, 0.0);
/// assert_eq!(out.as_slice(), &[0.0, 1.0, 2.0]);
/// ```
pub fn affine(
    image: &Tensor,
    params: &Affine,
    interpolation: Interpolation,
    fill: impl Into<Fill>,
) -> Tensor {
    affine_in("affine", image, params, interpolation, fill.into())
}

#[track_caller]
fn affine_in(
    op: &str,
    image: &Tensor,
    params: &Affine,
    interpolation: Interpolation,
    fill: Fill,
) -> Tensor {
    let (c, h, w) = image_dims(op, image);
    let map = params.inverse_map(op, (h, w));
    let warp = |src: &[f32], channels: usize, fill: f32| {
        warp_affine(src, (channels, h, w), &map, (h, w), interpolation, fill)
    };
    let out = match fill.mode {
        FillMode::Taps => warp(image.as_slice(), c, fill.value),
        FillMode::TorchvisionMask => {
            // torchvision's _apply_grid_transform: warp a mask of ones with zero padding, then
            // blend (bilinear) or threshold it (nearest)
            let mut out = warp(image.as_slice(), c, 0.0);
            let mask = warp(&vec![1.0; h * w], 1, 0.0);
            for plane in out.chunks_mut(h * w) {
                for (v, &m) in plane.iter_mut().zip(&mask) {
                    *v = match interpolation {
                        Interpolation::Nearest if m < 0.5 => fill.value,
                        Interpolation::Nearest => *v,
                        _ => *v * m + (1.0 - m) * fill.value,
                    };
                }
            }
            out
        }
    };
    image_tensor(out, c, h, w)
}

/// Rotates an image by `angle` degrees counter-clockwise about its centre, keeping its size;
/// corners that come from outside read `fill`. Equals torchvision's `F.rotate(img, angle,
/// interpolation)` with `fill=None` when `fill` is `0.0`, and with `fill=[v]` when it is
/// `Fill::torchvision(v)` (see [`affine`] and [`FillMode`]).
///
/// # Panics
///
/// If `image` is not rank 3 or `angle` is not finite.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::transforms::Interpolation;
/// use striate::transforms::functional::rotate;
///
/// let image = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 2, 2]).unwrap();
/// let half_turn = rotate(&image, 180.0, Interpolation::Nearest, 0.0);
/// assert_eq!(half_turn.as_slice(), &[4.0, 3.0, 2.0, 1.0]);
/// ```
pub fn rotate(
    image: &Tensor,
    angle: f32,
    interpolation: Interpolation,
    fill: impl Into<Fill>,
) -> Tensor {
    let params = Affine {
        angle,
        ..Affine::default()
    };
    affine_in("rotate", image, &params, interpolation, fill.into())
}

/// Rotates by an angle drawn uniformly from a range (torchvision's `RandomRotation`, without
/// `expand`).
///
/// Nearest sampling and fill 0 by default, as torchvision.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{Interpolation, RandomRotation, Transform};
///
/// let rotation = RandomRotation::new(15.0).interpolation(Interpolation::Bilinear);
/// let out = rotation.apply(&Tensor::zeros(&[1, 28, 28]), &mut StdRng::seed_from_u64(0));
/// assert_eq!(out.shape(), &[1, 28, 28]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomRotation {
    degrees: (f32, f32),
    interpolation: Interpolation,
    fill: f32,
    fill_mode: FillMode,
}

impl RandomRotation {
    /// Angles in `[-degrees, degrees]`.
    ///
    /// # Panics
    ///
    /// If `degrees` is negative or not finite.
    pub fn new(degrees: f32) -> Self {
        expect_non_negative("RandomRotation", "degrees", degrees);
        Self::range(-degrees, degrees)
    }

    /// Angles in `[min, max]` degrees, counter-clockwise.
    ///
    /// # Panics
    ///
    /// If the range is not finite with `min <= max`.
    pub fn range(min: f32, max: f32) -> Self {
        expect_interval("RandomRotation", "degrees", min, max);
        RandomRotation {
            degrees: (min, max),
            interpolation: Interpolation::default(),
            fill: 0.0,
            fill_mode: FillMode::Taps,
        }
    }

    resampling_setters!("RandomRotation", interpolation, fill, fill_mode);
}

impl Transform for RandomRotation {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        let params = Affine {
            angle: uniform(rng, self.degrees.0, self.degrees.1),
            ..Affine::default()
        };
        affine_in(
            "RandomRotation",
            image,
            &params,
            self.interpolation,
            Fill {
                value: self.fill,
                mode: self.fill_mode,
            },
        )
    }
}

/// Scales the content about the centre by a factor drawn uniformly from a range (Keras'
/// `RandomZoom`, written as a magnification: above 1 zooms in, below 1 zooms out and fills the
/// border).
///
/// Bilinear sampling and fill 0 by default, as Keras.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{RandomZoom, Transform};
///
/// let zoom = RandomZoom::new(0.9, 1.1);
/// let out = zoom.apply(&Tensor::zeros(&[1, 28, 28]), &mut StdRng::seed_from_u64(0));
/// assert_eq!(out.shape(), &[1, 28, 28]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomZoom {
    scale: (f32, f32),
    interpolation: Interpolation,
    fill: f32,
    fill_mode: FillMode,
}

impl RandomZoom {
    /// Magnifications in `[min, max]`.
    ///
    /// # Panics
    ///
    /// If the range is not `0 < min <= max`, finite.
    pub fn new(min: f32, max: f32) -> Self {
        expect_interval("RandomZoom", "scale", min, max);
        expect_positive("RandomZoom", "scale min", min);
        RandomZoom {
            scale: (min, max),
            interpolation: Interpolation::Bilinear,
            fill: 0.0,
            fill_mode: FillMode::Taps,
        }
    }

    resampling_setters!("RandomZoom", interpolation, fill, fill_mode);
}

impl Transform for RandomZoom {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        let params = Affine {
            scale: uniform(rng, self.scale.0, self.scale.1),
            ..Affine::default()
        };
        let fill = Fill {
            value: self.fill,
            mode: self.fill_mode,
        };
        affine_in("RandomZoom", image, &params, self.interpolation, fill)
    }
}

/// Shifts by whole pixels, up to a fraction of the width and height in each direction
/// (Keras' `RandomTranslation`; the shift is rounded to whole pixels as in torchvision's
/// `RandomAffine`, so the image is moved, not resampled).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{RandomTranslation, Transform};
///
/// let shift = RandomTranslation::new(0.1, 0.1);
/// let out = shift.apply(&Tensor::ones(&[1, 28, 28]), &mut StdRng::seed_from_u64(0));
/// assert_eq!(out.shape(), &[1, 28, 28]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomTranslation {
    max_fraction: (f32, f32),
    fill: f32,
}

impl RandomTranslation {
    /// Horizontal shifts up to `max_dx · width`, vertical ones up to `max_dy · height`, either
    /// way.
    ///
    /// # Panics
    ///
    /// If a fraction is not in `[0, 1]`.
    pub fn new(max_dx: f32, max_dy: f32) -> Self {
        expect_probability("RandomTranslation", "max_dx", max_dx);
        expect_probability("RandomTranslation", "max_dy", max_dy);
        RandomTranslation {
            max_fraction: (max_dx, max_dy),
            fill: 0.0,
        }
    }

    resampling_setters!("RandomTranslation", fill);
}

/// A whole-pixel shift in `[-max_shift, max_shift]`, drawn and rounded as torchvision's
/// `RandomAffine.get_params`.
fn random_shift(rng: &mut dyn Rng, max_shift: f32) -> isize {
    uniform(rng, -max_shift, max_shift).round_ties_even() as isize
}

impl Transform for RandomTranslation {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        let (_, h, w) = image_dims("RandomTranslation", image);
        let dx = random_shift(rng, self.max_fraction.0 * w as f32);
        let dy = random_shift(rng, self.max_fraction.1 * h as f32);
        translate(image, dx, dy, self.fill)
    }
}

/// Rotation, translation, scale and shear drawn at random and applied as one resampling
/// (torchvision's `RandomAffine`).
///
/// Parameters are drawn as torchvision does: the angle uniformly in its range, the translation
/// uniformly up to a fraction of the size and rounded to whole pixels, the scale uniformly,
/// the shears uniformly. Nearest sampling and fill 0 by default, as torchvision.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{Interpolation, RandomAffine, Transform};
///
/// let augment = RandomAffine::new(10.0)
///     .translate(0.1, 0.1)
///     .scale(0.9, 1.1)
///     .shear(5.0)
///     .interpolation(Interpolation::Bilinear);
/// let out = augment.apply(&Tensor::zeros(&[1, 28, 28]), &mut StdRng::seed_from_u64(0));
/// assert_eq!(out.shape(), &[1, 28, 28]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomAffine {
    degrees: (f32, f32),
    translate: (f32, f32),
    scale: (f32, f32),
    shear_x: (f32, f32),
    shear_y: (f32, f32),
    interpolation: Interpolation,
    fill: f32,
    fill_mode: FillMode,
}

impl RandomAffine {
    /// Rotations in `[-degrees, degrees]`; no translation, scaling or shear unless set.
    ///
    /// # Panics
    ///
    /// If `degrees` is negative or not finite.
    pub fn new(degrees: f32) -> Self {
        expect_non_negative("RandomAffine", "degrees", degrees);
        RandomAffine {
            degrees: (-degrees, degrees),
            translate: (0.0, 0.0),
            scale: (1.0, 1.0),
            shear_x: (0.0, 0.0),
            shear_y: (0.0, 0.0),
            interpolation: Interpolation::default(),
            fill: 0.0,
            fill_mode: FillMode::Taps,
        }
    }

    /// Shifts up to `max_dx · width` horizontally and `max_dy · height` vertically.
    ///
    /// # Panics
    ///
    /// If a fraction is not in `[0, 1]`.
    pub fn translate(mut self, max_dx: f32, max_dy: f32) -> Self {
        expect_probability("RandomAffine", "translate max_dx", max_dx);
        expect_probability("RandomAffine", "translate max_dy", max_dy);
        self.translate = (max_dx, max_dy);
        self
    }

    /// Scale factors in `[min, max]`.
    ///
    /// # Panics
    ///
    /// If the range is not `0 < min <= max`, finite.
    pub fn scale(mut self, min: f32, max: f32) -> Self {
        expect_interval("RandomAffine", "scale", min, max);
        expect_positive("RandomAffine", "scale min", min);
        self.scale = (min, max);
        self
    }

    /// Shears along x in `[-degrees, degrees]`, none along y (torchvision's `shear=degrees`).
    ///
    /// # Panics
    ///
    /// If `degrees` is negative or not below 90.
    pub fn shear(self, degrees: f32) -> Self {
        expect_non_negative("RandomAffine", "shear", degrees);
        self.shear_ranges((-degrees, degrees), (0.0, 0.0))
    }

    /// Shears along x in `x = (min, max)` and along y in `y = (min, max)` degrees.
    ///
    /// # Panics
    ///
    /// If a range is not finite with `min <= max`, or reaches ±90°.
    pub fn shear_ranges(mut self, x: (f32, f32), y: (f32, f32)) -> Self {
        for (name, (min, max)) in [("shear x", x), ("shear y", y)] {
            expect_interval("RandomAffine", name, min, max);
            if min <= -90.0 || max >= 90.0 {
                contract_violation(
                    "RandomAffine",
                    format_args!("{name} must stay strictly between -90 and 90 degrees"),
                    format_args!("{name} = ({min}, {max})"),
                );
            }
        }
        self.shear_x = x;
        self.shear_y = y;
        self
    }

    resampling_setters!("RandomAffine", interpolation, fill, fill_mode);
}

impl Transform for RandomAffine {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        let (_, h, w) = image_dims("RandomAffine", image);
        let angle = uniform(rng, self.degrees.0, self.degrees.1);
        let dx = random_shift(rng, self.translate.0 * w as f32);
        let dy = random_shift(rng, self.translate.1 * h as f32);
        let params = Affine {
            angle,
            translate: (dx as f32, dy as f32),
            scale: uniform(rng, self.scale.0, self.scale.1),
            shear: (
                uniform(rng, self.shear_x.0, self.shear_x.1),
                uniform(rng, self.shear_y.0, self.shear_y.1),
            ),
        };
        affine_in(
            "RandomAffine",
            image,
            &params,
            self.interpolation,
            Fill {
                value: self.fill,
                mode: self.fill_mode,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    /// A `[c, h, w]` image whose values are distinct.
    fn ramp(c: usize, h: usize, w: usize) -> Tensor {
        let data = (0..c * h * w).map(|v| v as f32 * 0.01).collect();
        Tensor::from_vec(data, &[c, h, w]).unwrap()
    }

    fn at(image: &Tensor, ch: usize, i: usize, j: usize) -> f32 {
        let s = image.shape();
        image.as_slice()[(ch * s[1] + i) * s[2] + j]
    }

    #[test]
    fn flips_are_involutions_and_mirror() {
        let image = ramp(2, 3, 5);
        assert_eq!(hflip(&hflip(&image)), image);
        assert_eq!(vflip(&vflip(&image)), image);
        let h = hflip(&image);
        let v = vflip(&image);
        for ch in 0..2 {
            for i in 0..3 {
                for j in 0..5 {
                    assert_eq!(at(&h, ch, i, j), at(&image, ch, i, 4 - j));
                    assert_eq!(at(&v, ch, i, j), at(&image, ch, 2 - i, j));
                }
            }
        }
    }

    #[test]
    fn random_flip_probabilities() {
        let image = ramp(1, 4, 4);
        let mut rng = StdRng::seed_from_u64(3);
        let always = RandomHorizontalFlip::new(1.0);
        let never = RandomVerticalFlip::new(0.0);
        let half = RandomHorizontalFlip::new(0.5);
        let mut flipped = 0;
        for _ in 0..1000 {
            assert_eq!(always.apply(&image, &mut rng), hflip(&image));
            assert_eq!(never.apply(&image, &mut rng), image);
            flipped += (half.apply(&image, &mut rng) != image) as usize;
        }
        // Binomial(1000, 0.5): 5 standard deviations is 79.
        assert!((flipped as i64 - 500).abs() < 80, "{flipped}");
    }

    #[test]
    fn rotation_by_zero_is_the_identity() {
        let image = ramp(3, 7, 6);
        for interpolation in [Interpolation::Nearest, Interpolation::Bilinear] {
            assert_eq!(rotate(&image, 0.0, interpolation, 0.5), image);
        }
    }

    #[test]
    fn quarter_turn_with_nearest_is_exact() {
        for n in [4, 5, 28] {
            let image = ramp(2, n, n);
            let turned = rotate(&image, 90.0, Interpolation::Nearest, -1.0);
            // Counter-clockwise, as `np.rot90`: out[i][j] = in[j][n - 1 - i].
            for ch in 0..2 {
                for i in 0..n {
                    for j in 0..n {
                        assert_eq!(at(&turned, ch, i, j), at(&image, ch, j, n - 1 - i));
                    }
                }
            }
            let back = rotate(&turned, -90.0, Interpolation::Nearest, -1.0);
            assert_eq!(back, image);
            let full = (0..4).fold(image.clone(), |im, _| {
                rotate(&im, 90.0, Interpolation::Bilinear, -1.0)
            });
            assert!(full.all_close(&image, 0.0, 1e-5));
        }
    }

    #[test]
    fn affine_translation_by_whole_pixels_is_a_shift() {
        let image = ramp(1, 5, 6);
        let params = Affine {
            translate: (2.0, -1.0),
            ..Affine::default()
        };
        for interpolation in [Interpolation::Nearest, Interpolation::Bilinear] {
            let moved = affine(&image, &params, interpolation, 9.0);
            assert_eq!(moved, translate(&image, 2, -1, 9.0));
        }
    }

    #[test]
    fn scale_two_magnifies_about_the_centre() {
        // 5 x 5, centre (2, 2): output (i, j) reads (2 + (i - 2)/2, 2 + (j - 2)/2).
        let image = ramp(1, 5, 5);
        let zoom = Affine {
            scale: 2.0,
            ..Affine::default()
        };
        let out = affine(&image, &zoom, Interpolation::Bilinear, 0.0);
        assert_eq!(at(&out, 0, 2, 2), at(&image, 0, 2, 2));
        assert_eq!(at(&out, 0, 0, 0), at(&image, 0, 1, 1));
        let between = (at(&image, 0, 1, 2) + at(&image, 0, 1, 3)) / 2.0;
        assert!((at(&out, 0, 0, 3) - between).abs() < 1e-6);
    }

    #[test]
    fn integer_translation_shifts_and_fills() {
        let image = ramp(2, 4, 5);
        let moved = translate(&image, 2, -1, 7.0);
        for ch in 0..2 {
            for i in 0..4 {
                for j in 0..5 {
                    let (si, sj) = (i as isize + 1, j as isize - 2);
                    let expected = if (0..4).contains(&si) && (0..5).contains(&sj) {
                        at(&image, ch, si as usize, sj as usize)
                    } else {
                        7.0
                    };
                    assert_eq!(at(&moved, ch, i, j), expected);
                }
            }
        }
        assert_eq!(translate(&image, 0, 0, 7.0), image);
        assert_eq!(translate(&image, 5, 0, 7.0), Tensor::full(&[2, 4, 5], 7.0));
    }

    #[test]
    fn crops_select_the_expected_window() {
        let image = ramp(2, 6, 7);
        let window = crop(&image, 1, 2, (3, 4), PaddingMode::default());
        assert_eq!(window.shape(), &[2, 3, 4]);
        for ch in 0..2 {
            for i in 0..3 {
                for j in 0..4 {
                    assert_eq!(at(&window, ch, i, j), at(&image, ch, i + 1, j + 2));
                }
            }
        }
        // Centre crops: offsets round((6 - 3) / 2) = 2 (ties to even) and (7 - 3) / 2 = 2.
        let centre = center_crop(&image, 3);
        assert_eq!(centre, crop(&image, 2, 2, 3, PaddingMode::default()));
        // Larger than the image: zero padding, the odd extra row at the bottom.
        let padded = center_crop(&image, (9, 7));
        assert_eq!(padded, crop(&image, -1, 0, (9, 7), PaddingMode::default()));
    }

    #[test]
    fn padding_modes_read_the_documented_pixels() {
        let image = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[1, 1, 3]).unwrap();
        let row = |mode| crop(&image, 0, -2, (1, 7), mode).to_vec();
        assert_eq!(
            row(PaddingMode::Constant(0.0)),
            vec![0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0]
        );
        assert_eq!(
            row(PaddingMode::Reflect),
            vec![3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]
        );
        assert_eq!(
            row(PaddingMode::Edge),
            vec![1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0]
        );
    }

    #[test]
    fn random_crop_with_padding_stays_within_the_padding() {
        let image = ramp(1, 8, 8);
        let crop_t = RandomCrop::new(8).padding(2);
        let mut rng = StdRng::seed_from_u64(5);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            let out = crop_t.apply(&image, &mut rng);
            let found = (-2..=2)
                .flat_map(|dy| (-2..=2).map(move |dx| (dx, dy)))
                .find(|&(dx, dy)| out == translate(&image, dx, dy, 0.0));
            seen.insert(found.expect("a crop of the padded image is a shift"));
        }
        assert_eq!(seen.len(), 25, "every offset is reachable");
    }

    #[test]
    #[should_panic(expected = "RandomCrop: crop size must not exceed the padded image \
                               (size [30, 30], padded image [28, 28]")]
    fn crop_larger_than_padded_image_panics() {
        RandomCrop::new(30)
            .padding(1)
            .apply(&Tensor::zeros(&[1, 26, 26]), &mut StdRng::seed_from_u64(0));
    }

    #[test]
    fn resize_to_the_same_size_is_the_identity() {
        let image = ramp(3, 5, 4);
        assert_eq!(resize(&image, (5, 4)), image);
    }

    #[test]
    fn resize_doubles_a_constant_image_to_a_constant() {
        let image = Tensor::full(&[1, 3, 3], 0.3);
        let out = resize(&image, (6, 5));
        assert!(out.as_slice().iter().all(|&v| (v - 0.3).abs() < 1e-6));
    }

    #[test]
    fn random_resized_crop_windows_stay_inside() {
        let crop_t = RandomResizedCrop::new((10, 12))
            .scale(0.05, 1.0)
            .ratio(0.2, 5.0);
        let mut rng = StdRng::seed_from_u64(8);
        for _ in 0..500 {
            let (top, left, h, w) = crop_t.window(9, 14, &mut rng);
            assert!(h >= 1 && w >= 1 && top + h <= 9 && left + w <= 14);
        }
        let out = crop_t.apply(&ramp(2, 9, 14), &mut rng);
        assert_eq!(out.shape(), &[2, 10, 12]);
    }

    #[test]
    fn random_translation_is_a_whole_pixel_shift() {
        let image = ramp(1, 10, 10);
        let shift = RandomTranslation::new(0.2, 0.1).fill(-1.0);
        let mut rng = StdRng::seed_from_u64(4);
        for _ in 0..50 {
            let out = shift.apply(&image, &mut rng);
            let found = (-1..=1)
                .flat_map(|dy| (-2..=2).map(move |dx| (dx, dy)))
                .any(|(dx, dy)| out == translate(&image, dx, dy, -1.0));
            assert!(found);
        }
    }

    #[test]
    fn random_affine_with_empty_ranges_is_the_identity() {
        let image = ramp(1, 6, 6);
        let none = RandomAffine::new(0.0).interpolation(Interpolation::Bilinear);
        assert_eq!(none.apply(&image, &mut StdRng::seed_from_u64(0)), image);
        let zoom = RandomZoom::new(1.0, 1.0);
        assert_eq!(zoom.apply(&image, &mut StdRng::seed_from_u64(0)), image);
    }

    #[test]
    #[should_panic(expected = "RandomRotation: degrees must be finite and >= 0 (degrees = -5)")]
    fn negative_degrees_panic() {
        RandomRotation::new(-5.0);
    }

    #[test]
    #[should_panic(expected = "RandomAffine: shear x must stay strictly between -90 and 90")]
    fn shear_of_ninety_degrees_panics() {
        RandomAffine::new(0.0).shear(90.0);
    }

    #[test]
    #[should_panic(expected = "RandomResizedCrop: scale min must be finite and > 0")]
    fn zero_scale_panics() {
        RandomResizedCrop::new(8).scale(0.0, 1.0);
    }

    #[test]
    #[should_panic(expected = "affine: scale must be finite and > 0 (scale = 0)")]
    fn affine_with_zero_scale_panics() {
        let params = Affine {
            scale: 0.0,
            ..Affine::default()
        };
        affine(&ramp(1, 2, 2), &params, Interpolation::Nearest, 0.0);
    }
}
