//! The one resampler: nearest and bilinear reads of an image at arbitrary coordinates, shared by
//! rotation, affine and elastic transforms; plus the index rules of padding (reflect, edge) and
//! the source taps of a linear resize.
//!
//! Coordinates are pixel indices: pixel `(row, column)` has its centre at `x = column`,
//! `y = row`. A tap outside the image reads the fill value; this is `grid_sample` with
//! `align_corners=False` and zero padding when the fill is 0.

/// How a resampling transform reads between pixels.
///
/// # Examples
///
/// ```
/// use striate::transforms::{Interpolation, RandomRotation};
///
/// let smooth = RandomRotation::new(10.0).interpolation(Interpolation::Bilinear);
/// # let _ = smooth;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Interpolation {
    /// The nearest pixel, ties to even (like `torch.nearbyint`); torchvision's default for
    /// rotation and affine transforms.
    #[default]
    Nearest,
    /// A weighted mean of the four surrounding pixels.
    Bilinear,
}

/// An affine map from output pixel indices to input coordinates:
/// `x_in = m[0]·x + m[1]·y + m[2]`, `y_in = m[3]·x + m[4]·y + m[5]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct InverseMap {
    pub(crate) m: [f64; 6],
}

/// Resamples `src` (`[channels, height, width]`) through an affine inverse map into an
/// `out_height × out_width` image.
pub(crate) fn warp_affine(
    src: &[f32],
    (channels, height, width): (usize, usize, usize),
    map: &InverseMap,
    (out_height, out_width): (usize, usize),
    interpolation: Interpolation,
    fill: f32,
) -> Vec<f32> {
    let [a, b, c, d, e, f] = map.m;
    // Row offsets in f64, then per-pixel f32 steps: exact for integer maps such as quarter
    // turns, and within 1e-6 pixel of the f64 map for images of a few thousand pixels. (No
    // `mul_add`: without a target FMA feature it is a libm call per pixel.)
    let row_x: Vec<f32> = (0..out_height).map(|i| (b * i as f64 + c) as f32).collect();
    let row_y: Vec<f32> = (0..out_height).map(|i| (e * i as f64 + f) as f32).collect();
    let (a, d) = (a as f32, d as f32);
    resample(
        src,
        (channels, height, width),
        (out_height, out_width),
        interpolation,
        fill,
        |i, j| {
            let j = j as f32;
            (a * j + row_x[i], d * j + row_y[i])
        },
    )
}

/// Resamples `src` at `(column + dx, row + dy)` for every pixel: a dense displacement field in
/// pixels, each of `dx` and `dy` laid out `[height, width]`.
pub(crate) fn displace_by(
    src: &[f32],
    (channels, height, width): (usize, usize, usize),
    dx: &[f32],
    dy: &[f32],
    interpolation: Interpolation,
    fill: f32,
) -> Vec<f32> {
    debug_assert_eq!(dx.len(), height * width);
    debug_assert_eq!(dy.len(), height * width);
    resample(
        src,
        (channels, height, width),
        (height, width),
        interpolation,
        fill,
        |i, j| {
            let k = i * width + j;
            (j as f32 + dx[k], i as f32 + dy[k])
        },
    )
}

/// Reads `src` at `coords(row, column)` for every output pixel. Generic over `coords` so that
/// each caller gets its own monomorphic loop: no per-pixel dispatch.
fn resample(
    src: &[f32],
    (channels, height, width): (usize, usize, usize),
    (out_height, out_width): (usize, usize),
    interpolation: Interpolation,
    fill: f32,
    coords: impl Fn(usize, usize) -> (f32, f32),
) -> Vec<f32> {
    let in_plane = height * width;
    let out_plane = out_height * out_width;
    let mut dst = vec![fill; channels * out_plane];
    if in_plane == 0 {
        return dst;
    }
    let (wf, hf) = (width as f32, height as f32);
    match interpolation {
        Interpolation::Nearest => {
            for i in 0..out_height {
                for j in 0..out_width {
                    let (x, y) = coords(i, j);
                    // Negated comparison so that NaN coordinates read the fill.
                    if !(x > -1.0 && x < wf && y > -1.0 && y < hf) {
                        continue;
                    }
                    let (xr, yr) = (round_ties_even(x), round_ties_even(y));
                    if xr < 0 || yr < 0 || xr >= width as isize || yr >= height as isize {
                        continue;
                    }
                    let k = yr as usize * width + xr as usize;
                    let o = i * out_width + j;
                    for ch in 0..channels {
                        dst[ch * out_plane + o] = src[ch * in_plane + k];
                    }
                }
            }
        }
        Interpolation::Bilinear => {
            for i in 0..out_height {
                for j in 0..out_width {
                    let (x, y) = coords(i, j);
                    // One pixel or more outside, every tap reads the fill (NaN lands here too).
                    if !(x > -1.0 && x < wf && y > -1.0 && y < hf) {
                        continue;
                    }
                    let (x0, y0) = (floor(x), floor(y));
                    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
                    // Weights of the taps (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1).
                    let weights = [
                        (1.0 - fx) * (1.0 - fy),
                        fx * (1.0 - fy),
                        (1.0 - fx) * fy,
                        fx * fy,
                    ];
                    let o = i * out_width + j;
                    if x0 >= 0 && y0 >= 0 && x0 + 1 < width as isize && y0 + 1 < height as isize {
                        let k = y0 as usize * width + x0 as usize;
                        for ch in 0..channels {
                            let p = &src[ch * in_plane..(ch + 1) * in_plane];
                            dst[ch * out_plane + o] = weights[0] * p[k]
                                + weights[1] * p[k + 1]
                                + weights[2] * p[k + width]
                                + weights[3] * p[k + width + 1];
                        }
                    } else {
                        // On the border: taps inside read the image, the rest the fill.
                        let mut taps = [(0usize, 0.0f32); 4];
                        let mut outside = 0.0f32;
                        for (t, &weight) in weights.iter().enumerate() {
                            let (tx, ty) = (x0 + (t & 1) as isize, y0 + (t >> 1) as isize);
                            if tx >= 0 && ty >= 0 && tx < width as isize && ty < height as isize {
                                taps[t] = (ty as usize * width + tx as usize, weight);
                            } else {
                                outside += weight;
                            }
                        }
                        for ch in 0..channels {
                            let p = &src[ch * in_plane..(ch + 1) * in_plane];
                            let inside: f32 = taps.iter().map(|&(k, w)| w * p[k]).sum();
                            dst[ch * out_plane + o] = inside + outside * fill;
                        }
                    }
                }
            }
        }
    }
    dst
}

/// 1.5·2^23: adding it to `|x| < 2^22` leaves a float whose last mantissa bits hold `x`
/// rounded to an integer by the FPU's default round-half-to-even mode.
const ROUNDING_MAGIC: f32 = 12_582_912.0;

/// `x.round_ties_even()` as an integer (the rounding of `torch.nearbyint`), for `|x| < 2^22`.
///
/// Read from the bits of `x + 1.5·2^23`: the baseline x86-64 target has no rounding
/// instruction, so `f32::round_ties_even` would be a libm call, and `as` conversions carry
/// saturation checks; this is one addition and one integer subtraction.
#[inline]
fn round_ties_even(x: f32) -> isize {
    debug_assert!(x.abs() < 4_194_304.0);
    ((x + ROUNDING_MAGIC).to_bits() as i32 - ROUNDING_MAGIC.to_bits() as i32) as isize
}

/// `x.floor()` as an integer, for `|x| < 2^22`, by the same trick as [`round_ties_even`].
#[inline]
fn floor(x: f32) -> isize {
    let shifted = x + ROUNDING_MAGIC;
    let rounded = (shifted.to_bits() as i32 - ROUNDING_MAGIC.to_bits() as i32) as isize;
    rounded - ((shifted - ROUNDING_MAGIC) > x) as isize
}

/// The index that torch's `reflect` padding reads for position `i` of an axis of length `n`:
/// a mirror that does not repeat the edge (`d c b | a b c d | c b a`), repeated for positions
/// more than one length away.
pub(crate) fn reflect_index(i: isize, n: usize) -> usize {
    debug_assert!(n > 0);
    let last = n as isize - 1;
    // One reflection covers positions within a length of the image, the common case; the
    // periodic rule (an integer division) is for the rest.
    let once = if i < 0 {
        -i
    } else if i > last {
        2 * last - i
    } else {
        i
    };
    if (0..=last).contains(&once) {
        return once as usize;
    }
    if n == 1 {
        return 0;
    }
    let period = 2 * last;
    let r = i.rem_euclid(period);
    (if r <= last { r } else { period - r }) as usize
}

/// The index that `edge` (replicate) padding reads for position `i` of an axis of length `n`.
pub(crate) fn edge_index(i: isize, n: usize) -> usize {
    debug_assert!(n > 0);
    i.clamp(0, n as isize - 1) as usize
}

/// One output position of a linear resize: it reads input `lo` with weight `1 - frac` and
/// input `hi` with weight `frac`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LinearTap {
    pub(crate) lo: usize,
    pub(crate) hi: usize,
    pub(crate) frac: f32,
}

/// The taps of a linear resize from `in_len` to `out_len` samples, as PyTorch's
/// `upsample_bilinear2d` computes them with `align_corners=False` and no antialiasing: output
/// `o` reads source coordinate `(o + 0.5)·in/out − 0.5`, clamped to `[0, in − 1]` (so the
/// border replicates the edge pixel).
pub(crate) fn linear_taps(in_len: usize, out_len: usize) -> Vec<LinearTap> {
    debug_assert!(in_len > 0);
    let scale = in_len as f32 / out_len as f32;
    (0..out_len)
        .map(|o| {
            let source = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
            let lo = (source.floor() as usize).min(in_len - 1);
            let frac = (source - lo as f32).clamp(0.0, 1.0);
            let hi = (lo + 1).min(in_len - 1);
            LinearTap { lo, hi, frac }
        })
        .collect()
}

/// The taps of an antialiased linear resize: output `o` reads inputs `start..start + weights.len()`
/// with those weights (which sum to 1).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SpanTaps {
    pub(crate) start: usize,
    pub(crate) weights: Vec<f32>,
}

/// The taps of an antialiased linear resize from `in_len` to `out_len` samples: Pillow's
/// `precompute_coeffs` with its bilinear (triangle) filter, which PyTorch's
/// `_upsample_bilinear2d_aa` (torchvision's `antialias=True`) repeats. When shrinking, the
/// triangle is stretched by `in/out`, so every input sample under an output pixel counts;
/// taps past the border are dropped and the rest renormalised. When enlarging it is the plain
/// half-pixel bilinear of [`linear_taps`].
pub(crate) fn antialias_taps(in_len: usize, out_len: usize) -> Vec<SpanTaps> {
    debug_assert!(in_len > 0 && out_len > 0);
    // Pillow and PyTorch compute these in double precision.
    let scale = in_len as f64 / out_len as f64;
    let stretch = scale.max(1.0);
    let support = stretch;
    (0..out_len)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            // Truncation toward zero, as the C casts do.
            let start = ((centre - support + 0.5) as i64).max(0) as usize;
            let end = ((centre + support + 0.5) as i64).min(in_len as i64) as usize;
            let raw: Vec<f64> = (start..end)
                .map(|i| (1.0 - ((i as f64 - centre + 0.5) / stretch).abs()).max(0.0))
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    if total != 0.0 {
                        (w / total) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            SpanTaps { start, weights }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: InverseMap = InverseMap {
        m: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    };

    fn ramp(channels: usize, height: usize, width: usize) -> Vec<f32> {
        (0..channels * height * width).map(|v| v as f32).collect()
    }

    #[test]
    fn identity_map_is_exact_for_both_interpolations() {
        let src = ramp(2, 3, 4);
        for interpolation in [Interpolation::Nearest, Interpolation::Bilinear] {
            let out = warp_affine(&src, (2, 3, 4), &IDENTITY, (3, 4), interpolation, 9.0);
            assert_eq!(out, src);
        }
    }

    #[test]
    fn bilinear_half_pixel_shift_averages_neighbours_and_fill() {
        // x_in = x + 0.5: each output averages two neighbours; the last one mixes in the fill.
        let src = vec![0.0, 2.0, 4.0];
        let map = InverseMap {
            m: [1.0, 0.0, 0.5, 0.0, 1.0, 0.0],
        };
        let out = warp_affine(&src, (1, 1, 3), &map, (1, 3), Interpolation::Bilinear, 10.0);
        assert_eq!(out, vec![1.0, 3.0, 7.0]);
    }

    #[test]
    fn nearest_rounds_ties_to_even_and_fills_outside() {
        let src = vec![0.0, 1.0, 2.0, 3.0];
        let map = InverseMap {
            m: [1.0, 0.0, 0.5, 0.0, 1.0, 0.0],
        };
        // 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 3.5 -> 4 (outside).
        let out = warp_affine(&src, (1, 1, 4), &map, (1, 4), Interpolation::Nearest, -1.0);
        assert_eq!(out, vec![0.0, 2.0, 2.0, -1.0]);
    }

    #[test]
    fn zero_displacement_is_the_identity() {
        let src = ramp(3, 5, 4);
        let zeros = vec![0.0; 20];
        for interpolation in [Interpolation::Nearest, Interpolation::Bilinear] {
            let out = displace_by(&src, (3, 5, 4), &zeros, &zeros, interpolation, 7.0);
            assert_eq!(out, src);
        }
    }

    #[test]
    fn nan_coordinates_read_the_fill() {
        let src = vec![1.0; 4];
        let nan = vec![f32::NAN; 4];
        for interpolation in [Interpolation::Nearest, Interpolation::Bilinear] {
            let out = displace_by(&src, (1, 2, 2), &nan, &nan, interpolation, 0.5);
            assert_eq!(out, vec![0.5; 4]);
        }
    }

    #[test]
    fn fast_rounding_matches_std() {
        for k in -4000..4000 {
            let x = k as f32 * 0.125 + 0.0625 * (k % 3) as f32;
            assert_eq!(floor(x), x.floor() as isize, "floor({x})");
            assert_eq!(
                round_ties_even(x),
                x.round_ties_even() as isize,
                "round({x})"
            );
        }
        for x in [-0.0f32, 0.5, 1.5, 2.5, -0.5, -1.5, 1e-9, -1e-9, 0.999_999_9] {
            assert_eq!(floor(x), x.floor() as isize, "floor({x})");
            assert_eq!(
                round_ties_even(x),
                x.round_ties_even() as isize,
                "round({x})"
            );
        }
    }

    #[test]
    fn padding_indices() {
        let reflect: Vec<usize> = (-4..8).map(|i| reflect_index(i, 4)).collect();
        assert_eq!(reflect, vec![2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]);
        // Far positions, several lengths away, follow the period 2(n - 1).
        let far: Vec<usize> = (-9..-5)
            .chain(10..14)
            .map(|i| reflect_index(i, 4))
            .collect();
        assert_eq!(far, vec![3, 2, 1, 0, 2, 1, 0, 1]);
        assert_eq!(reflect_index(-3, 1), 0);
        let edge: Vec<usize> = (-2..6).map(|i| edge_index(i, 4)).collect();
        assert_eq!(edge, vec![0, 0, 0, 1, 2, 3, 3, 3]);
    }

    #[test]
    fn antialias_taps_average_the_inputs_under_each_output() {
        // Halving: each output covers two inputs, and the stretched triangle reaches one more
        // on each side with weight 1/4 (Pillow's 1/8, 3/8, 3/8, 1/8).
        let taps = antialias_taps(8, 4);
        assert_eq!(taps[1].start, 1);
        assert_eq!(taps[1].weights, vec![0.125, 0.375, 0.375, 0.125]);
        // At the border the missing tap is dropped and the rest renormalised.
        assert_eq!(taps[0].start, 0);
        assert_eq!(taps[0].weights, vec![3.0 / 7.0, 3.0 / 7.0, 1.0 / 7.0]);
        // Enlarging is the plain bilinear.
        for (span, tap) in antialias_taps(3, 7).iter().zip(linear_taps(3, 7)) {
            let mut dense = [0.0f32; 3];
            for (k, w) in span.weights.iter().enumerate() {
                dense[span.start + k] += w;
            }
            let mut expected = [0.0f32; 3];
            expected[tap.lo] += 1.0 - tap.frac;
            expected[tap.hi] += tap.frac;
            for (a, b) in dense.iter().zip(expected) {
                assert!((a - b).abs() < 1e-6, "{dense:?} vs {expected:?}");
            }
        }
    }

    #[test]
    fn linear_taps_follow_half_pixel_centres() {
        // Upsampling 2 -> 4: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to edge).
        let taps = linear_taps(2, 4);
        assert_eq!(
            taps[0],
            LinearTap {
                lo: 0,
                hi: 1,
                frac: 0.0
            }
        );
        assert_eq!(
            taps[1],
            LinearTap {
                lo: 0,
                hi: 1,
                frac: 0.25
            }
        );
        assert_eq!(
            taps[2],
            LinearTap {
                lo: 0,
                hi: 1,
                frac: 0.75
            }
        );
        assert_eq!(taps[3].lo, 1);
        assert_eq!(taps[3].hi, 1);
        // Same length: the identity.
        for (o, tap) in linear_taps(5, 5).iter().enumerate() {
            assert_eq!((tap.lo, tap.frac), (o, 0.0));
        }
    }
}
