//! 2-D pooling kernels on NCHW activations: max pooling that records the argmax of each window
//! for its backward, average pooling, adaptive average and max pooling, and global average / max
//! pooling. Parallel over
//! `(image, channel)` planes, each task owning its output plane.

use rayon::prelude::*;

use super::conv::output_extent;
use super::fill::filled_by_chunks;
use crate::kernels::scratch::with_scratch;
use crate::kernels::vector::{Vector, VectorKernel, deinterleave_within, with_vector};
use crate::tensor::check::{contract_violation, expect_len, shape_str};
use crate::util::simd::dispatch;

/// The window of a pooling op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dSpec {
    /// Window size `[height, width]`.
    pub kernel: [usize; 2],
    /// Step between windows `[height, width]` (PyTorch's default is the kernel size).
    pub stride: [usize; 2],
    /// Implicit padding on both sides `[height, width]`: `-inf` for max pooling, zeros for
    /// average pooling. At most half the kernel, as in PyTorch.
    pub padding: [usize; 2],
    /// Spacing between window taps (max pooling only; 1 for average pooling).
    pub dilation: [usize; 2],
    /// Round the output size up instead of down (windows may run off the bottom/right edge).
    pub ceil_mode: bool,
}

impl Pool2dSpec {
    /// A `kernel x kernel` window with stride equal to the kernel, no padding: the usual
    /// `MaxPool2d(k)`.
    pub fn square(kernel: usize) -> Pool2dSpec {
        Pool2dSpec {
            kernel: [kernel, kernel],
            stride: [kernel, kernel],
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
        }
    }
}

/// Every size of one pooling op, validated once: input `[N, C, H, W]`, output `[N, C, OH, OW]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub struct Pool2dShape {
    pub batch: usize,
    pub channels: usize,
    pub in_height: usize,
    pub in_width: usize,
    pub out_height: usize,
    pub out_width: usize,
    pub spec: Pool2dSpec,
}

impl Pool2dShape {
    /// Checks `input` (`[N, C, H, W]`) against `spec` and derives the output size.
    ///
    /// # Panics
    ///
    /// If the input is not 4-D, a kernel size, stride or dilation is zero, the padding exceeds
    /// half the kernel, or the window does not fit; the message names `op`.
    #[track_caller]
    pub fn new(op: &str, input: &[usize], spec: Pool2dSpec) -> Pool2dShape {
        let context = || format!("input {}, spec {spec:?}", shape_str(input));
        if input.len() != 4 {
            contract_violation(op, "input must be 4-D [N, C, H, W]", context());
        }
        if spec.kernel.contains(&0) || spec.stride.contains(&0) || spec.dilation.contains(&0) {
            contract_violation(
                op,
                "kernel, stride and dilation must be positive",
                context(),
            );
        }
        if (0..2).any(|a| spec.padding[a] * 2 > spec.kernel[a]) {
            contract_violation(op, "padding must be at most half the kernel", context());
        }
        let extent = |axis: usize| {
            output_extent(
                input[2 + axis],
                spec.padding[axis],
                spec.padding[axis],
                spec.kernel[axis],
                spec.stride[axis],
                spec.dilation[axis],
                spec.ceil_mode,
            )
        };
        let (Some(out_height), Some(out_width)) = (extent(0), extent(1)) else {
            contract_violation(op, "window larger than the padded input", context());
        };
        Pool2dShape {
            batch: input[0],
            channels: input[1],
            in_height: input[2],
            in_width: input[3],
            out_height,
            out_width,
            spec,
        }
    }

    /// The output shape `[N, C, OH, OW]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.channels, self.out_height, self.out_width]
    }

    fn in_plane(&self) -> usize {
        self.in_height * self.in_width
    }

    pub(crate) fn out_plane(&self) -> usize {
        self.out_height * self.out_width
    }

    fn planes(&self) -> usize {
        self.batch * self.channels
    }

    /// The window rows `[start, end)` of output row `oh` before clipping to the image, as
    /// signed positions in input coordinates.
    fn window(&self, axis: usize, out_index: usize) -> (isize, isize) {
        let start =
            (out_index * self.spec.stride[axis]) as isize - self.spec.padding[axis] as isize;
        let span = (self.spec.dilation[axis] * (self.spec.kernel[axis] - 1) + 1) as isize;
        (start, start + span)
    }
}

/// Max pooling forward: each output is the largest input of its window (NaN if the window holds
/// one, as PyTorch), and `indices`, when given, records where it was, as a position within its
/// input plane (inference needs no indices and skips them).
///
/// # Panics
///
/// If a slice's length does not match `shape`.
///
/// # Examples
///
/// ```
/// use striate::kernels::pool::{max_pool2d_forward, Pool2dShape, Pool2dSpec};
///
/// let shape = Pool2dShape::new("max_pool2d", &[1, 1, 2, 4], Pool2dSpec::square(2));
/// let (mut out, mut idx) = (vec![0.0; 2], vec![0u32; 2]);
/// max_pool2d_forward(&[1., 5., 2., 0., 3., 4., 7., 6.], &shape, &mut out, Some(&mut idx));
/// assert_eq!((out, idx), (vec![5.0, 7.0], vec![1, 6]));
/// ```
pub fn max_pool2d_forward(
    input: &[f32],
    shape: &Pool2dShape,
    output: &mut [f32],
    indices: Option<&mut [u32]>,
) {
    let s = *shape;
    expect_len(
        "max_pool2d",
        "input",
        input.len(),
        s.planes() * s.in_plane(),
    );
    expect_len(
        "max_pool2d",
        "output",
        output.len(),
        s.planes() * s.out_plane(),
    );
    if s.out_plane() == 0 {
        return;
    }
    let planes_per_task = planes_per_task(&s);
    let group_input = |group: usize, planes: usize| {
        &input[group * planes_per_task * s.in_plane()..][..planes * s.in_plane()]
    };
    match indices {
        Some(indices) => {
            expect_len(
                "max_pool2d",
                "indices",
                indices.len(),
                s.planes() * s.out_plane(),
            );
            output
                .par_chunks_mut(planes_per_task * s.out_plane())
                .zip(indices.par_chunks_mut(planes_per_task * s.out_plane()))
                .enumerate()
                .for_each(|(group, (out, idx))| {
                    let planes = out.len() / s.out_plane();
                    max_pool_planes(group_input(group, planes), &s, out, Some(idx))
                });
        }
        None => output
            .par_chunks_mut(planes_per_task * s.out_plane())
            .enumerate()
            .for_each(|(group, out)| {
                let planes = out.len() / s.out_plane();
                max_pool_planes(group_input(group, planes), &s, out, None)
            }),
    }
}

/// Output floats per task of [`max_pool2d_forward`].
const PLANE_GROUP_FLOATS: usize = 4096;

/// Planes per task of [`max_pool2d_forward`]: several when planes are small (each is cheap),
/// few enough that every thread gets several tasks to balance.
fn planes_per_task(s: &Pool2dShape) -> usize {
    let threads = rayon::current_num_threads();
    (PLANE_GROUP_FLOATS / s.out_plane().max(1)).clamp(1, s.planes().div_ceil(4 * threads).max(1))
}

/// Max pooling of consecutive planes: `x` holds whole input planes, `out` (and `idx`, the
/// argmax of each window within its input plane, when a backward pass will need it) the same
/// number of output planes. The common 2x2 window runs every plane inside one call compiled
/// for the CPU's vectors (a call per plane cost as much as the pooling of MNIST's small
/// planes).
pub(crate) fn max_pool_planes(
    x: &[f32],
    s: &Pool2dShape,
    out: &mut [f32],
    idx: Option<&mut [u32]>,
) {
    if s.out_plane() == 0 {
        return;
    }
    let planes = out.len() / s.out_plane();
    assert!(
        out.len() == planes * s.out_plane()
            && x.len() == planes * s.in_plane()
            && idx.as_ref().is_none_or(|idx| idx.len() == out.len()),
        "max_pool_planes: {} inputs and {} outputs are not whole planes of {} and {}",
        x.len(),
        out.len(),
        s.in_plane(),
        s.out_plane()
    );
    let input_planes = x.chunks_exact(s.in_plane());
    match (s.spec == Pool2dSpec::square(2), idx) {
        (true, None) => with_vector(Max2x2Planes::<false> {
            x,
            shape: s,
            out,
            idx: &mut [],
        }),
        (true, Some(idx)) if s.in_plane() < 1 << 24 => with_vector(Max2x2Planes::<true> {
            x,
            shape: s,
            out,
            idx,
        }),
        (true, Some(idx)) => {
            // Indices past 2^24 are not exact in float lanes: the scalar rule.
            let w = s.in_width;
            dispatch(
                #[inline(always)]
                || {
                    let output_planes = out
                        .chunks_exact_mut(s.out_plane())
                        .zip(idx.chunks_exact_mut(s.out_plane()));
                    for (x, (out, idx)) in input_planes.zip(output_planes) {
                        let rows = out
                            .chunks_exact_mut(s.out_width)
                            .zip(idx.chunks_exact_mut(s.out_width));
                        for (oh, (out_row, idx_row)) in rows.enumerate() {
                            let (top, bottom) = (&x[2 * oh * w..], &x[(2 * oh + 1) * w..]);
                            let base = (2 * oh * w) as u32;
                            max_2x2_row::<true>(top, bottom, out_row, idx_row, base, w as u32);
                        }
                    }
                },
            )
        }
        // (The scratch is taken outside `with_vector`: a closure inside it would not inherit
        // the instruction set.)
        (false, None) => with_scratch(MaxPoolPlanes::<false>::phased_len(s), |phased| {
            with_vector(MaxPoolPlanes::<false> {
                x,
                shape: s,
                out,
                idx: &mut [],
                phased,
            })
        }),
        (false, Some(idx)) if s.in_plane() < 1 << 24 => {
            with_scratch(MaxPoolPlanes::<true>::phased_len(s), |phased| {
                with_vector(MaxPoolPlanes::<true> {
                    x,
                    shape: s,
                    out,
                    idx,
                    phased,
                })
            })
        }
        (false, Some(idx)) => {
            // Indices past 2^24 are not exact in float lanes: the scalar rule.
            let output_planes = out
                .chunks_exact_mut(s.out_plane())
                .zip(idx.chunks_exact_mut(s.out_plane()));
            for (x, (out, idx)) in input_planes.zip(output_planes) {
                max_pool_plane(x, s, out, Some(idx));
            }
        }
    }
}

fn max_pool_plane(x: &[f32], s: &Pool2dShape, out: &mut [f32], mut idx: Option<&mut [u32]>) {
    let [dilation_h, dilation_w] = s.spec.dilation;
    for oh in 0..s.out_height {
        let (h0, h1) = s.window(0, oh);
        for ow in 0..s.out_width {
            let (w0, w1) = s.window(1, ow);
            let mut best = f32::NEG_INFINITY;
            let mut best_index = u32::MAX;
            for ih in (h0..h1)
                .step_by(dilation_h)
                .filter(|&h| h >= 0 && (h as usize) < s.in_height)
            {
                for iw in (w0..w1)
                    .step_by(dilation_w)
                    .filter(|&w| w >= 0 && (w as usize) < s.in_width)
                {
                    let i = ih as usize * s.in_width + iw as usize;
                    let v = x[i];
                    if beats(v, best) || best_index == u32::MAX {
                        best = v;
                        best_index = i as u32;
                    }
                }
            }
            out[oh * s.out_width + ow] = best;
            if let Some(idx) = idx.as_deref_mut() {
                idx[oh * s.out_width + ow] = best_index;
            }
        }
    }
}

/// Max pooling of whole planes with any window, stride, padding and dilation (ResNet's 3x3
/// stride 2 padded by 1), a vector of output columns at a time; `idx` gets the argmax of each
/// window within its input plane with `WITH_INDEX` (as long as `out`, empty otherwise).
///
/// Each input row is first copied into its column phases (`sw` runs: padded columns `b, b + sw,
/// …` in run `b`) with `-inf` around them, so that tap `kw` of output columns `j, j + 1, …`
/// reads run `(kw·dw) mod sw` at `j + ⌊kw·dw / sw⌋`: one vector load per tap and output row,
/// the padding included, instead of a scalar loop that tested each tap against the border
/// (12% of ResNet-18's single-image inference on a Zen 4). Rows outside the plane are skipped.
///
/// The maximum is the vector `max` of the taps; its index is the first tap (in row-major
/// window order) equal to it, as PyTorch's rule picks it when nothing is NaN. Both hold only
/// for finite inputs (the padding's `-inf` then never ties with an input, and `max` never meets
/// a NaN): a plane holding an infinity or NaN is redone by the exact rule
/// ([`max_pool_plane`]). Indices are computed in float lanes: the caller keeps planes below
/// 2^24 floats.
struct MaxPoolPlanes<'a, const WITH_INDEX: bool> {
    x: &'a [f32],
    shape: &'a Pool2dShape,
    out: &'a mut [f32],
    idx: &'a mut [u32],
    /// Room for a plane's phase rows ([`MaxPoolPlanes::phased_len`]).
    phased: &'a mut [f32],
}

impl<const WITH_INDEX: bool> MaxPoolPlanes<'_, WITH_INDEX> {
    /// Floats of one phase row with vectors of `lanes`: `sw` runs, each long enough for a whole
    /// vector of outputs from its last start (`j` at most `max(out_width, lanes) − lanes`)
    /// shifted by the last tap.
    fn phased_row_len(s: &Pool2dShape, lanes: usize) -> usize {
        let (sw, dw) = (s.spec.stride[1], s.spec.dilation[1]);
        sw * (s.out_width.max(lanes) + (s.spec.kernel[1] - 1) * dw / sw)
    }

    /// Floats of the phase rows of one plane, for any vector length.
    fn phased_len(s: &Pool2dShape) -> usize {
        s.in_height * Self::phased_row_len(s, EVEN_OFFSETS.len())
    }
}

impl<const WITH_INDEX: bool> VectorKernel for MaxPoolPlanes<'_, WITH_INDEX> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let MaxPoolPlanes {
            x,
            shape: s,
            out,
            idx,
            phased,
        } = self;
        let lanes = V::LANES;
        let (width, out_width) = (s.in_width, s.out_width);
        let kernel_w = s.spec.kernel[1];
        let [dh, dw] = s.spec.dilation;
        let (sw, pw) = (s.spec.stride[1], s.spec.padding[1]);
        assert!(!WITH_INDEX || (idx.len() == out.len() && s.in_plane() < 1 << 24));
        let row_len = Self::phased_row_len(s, lanes);
        let run_len = row_len / sw;
        // Each phase's first input column, where it lands in its run, and how many (columns
        // past the runs are read by no window).
        let mut runs: Vec<(usize, usize, usize)> = (0..sw)
            .filter_map(|b| {
                let first = (b + sw - pw % sw) % sw;
                let at = (first + pw) / sw;
                let count = width
                    .saturating_sub(first)
                    .div_ceil(sw)
                    .min(run_len.saturating_sub(at));
                (count > 0).then_some((first, b * run_len + at, count))
            })
            .collect();
        runs.sort_unstable();
        // The taps of a window row: where each one reads in a phase row, and its input
        // column's offset from the window's first output column's `ow·sw − pw`.
        let taps: Vec<(usize, f32)> = (0..kernel_w)
            .map(|k| {
                let at = (k * dw) % sw * run_len + k * dw / sw;
                (at, (k * dw) as f32 - pw as f32)
            })
            .collect();
        let column_offsets: [f32; EVEN_OFFSETS.len()] = std::array::from_fn(|i| (i * sw) as f32);
        assert!(lanes <= column_offsets.len());
        // SAFETY: `with_vector` runs this only with a vector type the CPU supports; the array
        // holds at least `lanes` floats.
        let (zero, column_offsets, minus_infinity) = unsafe {
            (
                V::zero(),
                V::load(column_offsets.as_ptr()),
                V::splat(f32::NEG_INFINITY),
            )
        };
        let starts: Vec<(usize, usize)> = if out_width >= lanes {
            let last = out_width - lanes;
            (0..last)
                .step_by(lanes)
                .chain([last])
                .map(|j| (j, lanes))
                .collect()
        } else {
            vec![(0, out_width)]
        };
        let plane_rows = s.in_height * row_len;
        let mut idx_planes = idx.chunks_exact_mut(s.out_plane().max(1));
        // The border stays `-inf`: every plane writes the same positions inside it.
        let phased = &mut phased[..plane_rows];
        phased.fill(f32::NEG_INFINITY);
        for (x, out) in x
            .chunks_exact(s.in_plane())
            .zip(out.chunks_exact_mut(s.out_plane()))
        {
            let idx = if WITH_INDEX {
                idx_planes
                    .next()
                    .expect("as many index planes as output planes")
            } else {
                &mut []
            };
            // (Inlined here, inside the vector kernel's instruction set.)
            if !crate::util::simd::all_finite(x) {
                max_pool_plane(x, s, out, WITH_INDEX.then_some(idx));
                continue;
            }
            for (row, phase_row) in x.chunks_exact(width).zip(phased.chunks_exact_mut(row_len)) {
                split_phases::<V>(row, phase_row, &runs, sw);
            }
            for (oh, out_row) in out.chunks_exact_mut(out_width).enumerate() {
                let (h0, h1) = s.window(0, oh);
                let window_rows: Vec<usize> = (h0..h1)
                    .step_by(dh)
                    .filter(|&h| h >= 0 && (h as usize) < s.in_height)
                    .map(|h| h as usize)
                    .collect();
                for &(j, n) in &starts {
                    let tap_rows = window_rows.iter().map(|&h| &phased[h * row_len + j..]);
                    // SAFETY (the loads): each tap reads `lanes` floats from `at <= row_len −
                    // run_len + (kernel_w − 1)·dw / sw` past `j`, and `j + lanes <=
                    // max(out_width, lanes)`, so within the row's `row_len` floats.
                    let mut best = minus_infinity;
                    for row in tap_rows.clone() {
                        for &(at, _) in &taps {
                            best = best.max(unsafe { V::load(row[at..].as_ptr()) });
                        }
                    }
                    // SAFETY: `n <= lanes` outputs from `j` lie in `out_row` (and in the
                    // index row of the same length).
                    unsafe { best.store_first(out_row.as_mut_ptr().add(j), n) };
                    if !WITH_INDEX {
                        continue;
                    }
                    // The first tap equal to the maximum: the taps in reverse order, each
                    // taking the lanes where it is equal.
                    let mut at_max = zero;
                    for (row, &h) in tap_rows.zip(&window_rows).rev() {
                        let first = (h * width + j * sw) as f32;
                        for &(at, offset) in taps.iter().rev() {
                            // SAFETY: as for the loads above; the splat needs only the
                            // instruction set.
                            let (value, index) = unsafe {
                                (
                                    V::load(row[at..].as_ptr()),
                                    V::splat(first + offset).add(column_offsets),
                                )
                            };
                            at_max = value.select_equal(best, index, at_max);
                        }
                    }
                    let idx_row = &mut idx[oh * out_width..(oh + 1) * out_width];
                    // SAFETY: as for the outputs; whole numbers below 2^24 (asserted).
                    unsafe {
                        at_max
                            .to_u32_bits()
                            .store_first(idx_row.as_mut_ptr().add(j) as *mut f32, n)
                    };
                }
            }
        }
    }
}

/// One input row into its column phases within `phase_row`: each of `runs` (first input column,
/// where it lands, count) takes every `sw`-th column; two phases of stride 2 a vector pair at a
/// time.
#[inline(always)]
fn split_phases<V: Vector>(
    row: &[f32],
    phase_row: &mut [f32],
    runs: &[(usize, usize, usize)],
    sw: usize,
) {
    match *runs {
        [(0, at, count)] if sw == 1 => phase_row[at..at + count].copy_from_slice(&row[..count]),
        [(0, at0, count0), (1, at1, count1)] if sw == 2 => {
            let pairs = count0.min(count1);
            // SAFETY: the callers run inside `with_vector`, with a vector type the CPU supports.
            unsafe { deinterleave_within::<V>(&row[..2 * pairs], phase_row, at0, at1) };
            for i in pairs..count0 {
                phase_row[at0 + i] = row[2 * i];
            }
            for i in pairs..count1 {
                phase_row[at1 + i] = row[2 * i + 1];
            }
        }
        _ => {
            for &(first, at, count) in runs {
                let run = &mut phase_row[at..at + count];
                for (v, &x) in run.iter_mut().zip(row[first..].iter().step_by(sw)) {
                    *v = x;
                }
            }
        }
    }
}

/// Whether `candidate` replaces `best` in a max-pooling window: larger, or NaN. This is
/// PyTorch's rule (`val > maxval || isnan(val)`): NaN propagates, a later NaN takes the index
/// from an earlier one (so the gradient goes where PyTorch sends it), and ties keep the
/// earlier element.
#[inline(always)]
fn beats(candidate: f32, best: f32) -> bool {
    candidate > best || candidate.is_nan()
}

/// The 2x2 maxima of whole planes (`out` planes of `[OH, OW]` from planes of `[H, W]`), a
/// vector of outputs at a time: the larger of each two input rows, then of each pair of
/// columns ([`Vector::deinterleave`]). With `WITH_INDEX`, `idx` gets each window's argmax
/// within its input plane: the first of the four (in row-major order) equal to the maximum, as
/// PyTorch's rule picks it when nothing is NaN; the indices are computed in float lanes (exact
/// below 2^24, which the caller checks) and stored as integers. A row of at least a vector of
/// outputs ends with a whole vector overlapping the one before it (no masked access); shorter
/// rows (MNIST's 7) are read masked. `max` does not propagate NaN as pooling must, so a plane
/// whose windows summed to NaN (a NaN input, or `∞ − ∞`) is redone by the exact rule.
struct Max2x2Planes<'a, const WITH_INDEX: bool> {
    x: &'a [f32],
    shape: &'a Pool2dShape,
    out: &'a mut [f32],
    /// The argmax indices with `WITH_INDEX`, as long as `out`; empty otherwise.
    idx: &'a mut [u32],
}

/// `2·i` for the lanes `i` of the widest vector: each output lane's first input column.
const EVEN_OFFSETS: [f32; 16] = [
    0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0, 24.0, 26.0, 28.0, 30.0,
];

/// The 2x2 maxima of `2·LANES` columns of two rows (each row as two vectors) into one vector:
/// the pooling step shared by the pooling kernel and the kernels that pool their outputs in
/// registers. `max` does not propagate NaN as pooling must: callers check for it.
pub(crate) struct Max2x2<V> {
    zero: V,
    even_offsets: V,
    /// A window's second, third and fourth inputs' offsets from its first, as floats.
    right: V,
    below: V,
    below_right: V,
}

impl<V: Vector> Max2x2<V> {
    /// The maxima alone: the larger of each two rows, then of each pair of columns.
    #[inline(always)]
    pub fn of(top: [V; 2], bottom: [V; 2]) -> V {
        let (even, odd) = top[0].max(bottom[0]).deinterleave(top[1].max(bottom[1]));
        even.max(odd)
    }

    /// For the index arithmetic of input rows `width` floats long.
    ///
    /// # Safety
    ///
    /// The CPU supports `V`'s instruction set.
    #[inline(always)]
    pub unsafe fn new(width: usize) -> Max2x2<V> {
        assert!(V::LANES <= EVEN_OFFSETS.len());
        // SAFETY: the caller's contract; `EVEN_OFFSETS` holds at least `LANES` floats.
        unsafe {
            Max2x2 {
                zero: V::zero(),
                even_offsets: V::load(EVEN_OFFSETS.as_ptr()),
                right: V::splat(1.0),
                below: V::splat(width as f32),
                below_right: V::splat(width as f32 + 1.0),
            }
        }
    }

    /// The maxima and, as whole floats, the index of each one's input: the first of its
    /// window's four (in row-major order) equal to the maximum, as PyTorch's rule picks it when
    /// nothing is NaN. `first` is the index of the first window's top-left input; indices are
    /// exact below 2^24.
    #[inline(always)]
    pub fn with_index(&self, top: [V; 2], bottom: [V; 2], first: usize) -> (V, V) {
        let (a, b) = top[0].deinterleave(top[1]);
        let (c, d) = bottom[0].deinterleave(bottom[1]);
        let (best, at) = self.window([a, b, c, d]);
        // SAFETY: holding `self.zero` proves the CPU supports `V` (see `Vector`).
        let first = unsafe { V::splat(first as f32) };
        (best, first.add(self.even_offsets).add(at).to_u32_bits())
    }

    /// The maxima of windows whose four inputs are the lanes of `window`, as [`Max2x2::window`]
    /// computes them, without the index (for inference).
    #[inline(always)]
    pub fn maximum([a, b, c, d]: [V; 4]) -> V {
        a.max(b).max(c.max(d))
    }

    /// The maxima of windows whose four inputs (top left, top right, bottom left, bottom
    /// right) are the lanes of `window`, and the offset of each one's input from its window's
    /// first, as a float: the first of the four equal to the maximum (PyTorch's rule when
    /// nothing is NaN).
    #[inline(always)]
    pub fn window(&self, window: [V; 4]) -> (V, V) {
        let best = Self::maximum(window);
        let [a, b, c, _] = window;
        let at = c.select_equal(best, self.below, self.below_right);
        let at = b.select_equal(best, self.right, at);
        (best, a.select_equal(best, self.zero, at))
    }
}

impl<const WITH_INDEX: bool> VectorKernel for Max2x2Planes<'_, WITH_INDEX> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let Max2x2Planes {
            x,
            shape: s,
            out,
            idx,
        } = self;
        let (lanes, width, out_width) = (V::LANES, s.in_width, s.out_width);
        // The caller checked whole planes; a 2x2 window without padding fits in the input.
        assert!(2 * out_width <= width && 2 * s.out_height <= s.in_height);
        assert!(!WITH_INDEX || (idx.len() == out.len() && s.in_plane() < 1 << 24));
        // SAFETY: `with_vector` runs this only with a vector type the CPU supports.
        let (zero, window) = unsafe { (V::zero(), Max2x2::<V>::new(width)) };
        let mut idx_planes = idx.chunks_exact_mut(s.out_plane().max(1));
        for (x, out) in x
            .chunks_exact(s.in_plane())
            .zip(out.chunks_exact_mut(s.out_plane()))
        {
            let idx = if WITH_INDEX {
                idx_planes
                    .next()
                    .expect("as many index planes as output planes")
            } else {
                &mut []
            };
            let mut check = zero;
            for (oh, row) in out.chunks_exact_mut(out_width).enumerate() {
                let (top, bottom) = (&x[2 * oh * width..], &x[(2 * oh + 1) * width..]);
                let idx_row = if WITH_INDEX {
                    &mut idx[oh * out_width..(oh + 1) * out_width]
                } else {
                    &mut []
                };
                // SAFETY (the macro's uses): `n` outputs from `j` lie in `row` (and in
                // `idx_row`, of the same length, with `WITH_INDEX`); their `2n` inputs from
                // column `2j` in each input row (`2·(j + n) <= 2·out_width <= width`,
                // asserted), of which `low` and `high` are read.
                // (Macros, not closures: a closure would not inherit the instruction set.)
                macro_rules! outputs {
                    ($j:expr, $n:expr, $load:ident $(, $masks:expr)?) => {{
                        let (j, n) = ($j, $n);
                        let (t, b) = (top.as_ptr().add(2 * j), bottom.as_ptr().add(2 * j));
                        let [t0, t1, b0, b1] = outputs!(@read $load, t, b $(, $masks)?);
                        check = t0.add(t1).add(b0).add(b1).mul_add(zero, check);
                        if WITH_INDEX {
                            let first = 2 * oh * width + 2 * j;
                            let (best, index) = window.with_index([t0, t1], [b0, b1], first);
                            best.store_first(row.as_mut_ptr().add(j), n);
                            index.store_first(idx_row.as_mut_ptr().add(j) as *mut f32, n);
                        } else {
                            Max2x2::of([t0, t1], [b0, b1]).store_first(row.as_mut_ptr().add(j), n);
                        }
                    }};
                    (@read load, $t:expr, $b:expr) => {
                        [
                            V::load($t),
                            V::load($t.add(lanes)),
                            V::load($b),
                            V::load($b.add(lanes)),
                        ]
                    };
                    (@read load_masked, $t:expr, $b:expr, $masks:expr) => {{
                        let (low, high) = $masks;
                        [
                            V::load_masked($t, low),
                            V::load_masked($t.add(lanes), high),
                            V::load_masked($b, low),
                            V::load_masked($b.add(lanes), high),
                        ]
                    }};
                }
                if out_width >= lanes {
                    let last = out_width - lanes;
                    for j in (0..last).step_by(lanes).chain([last]) {
                        // SAFETY: see the macro; whole vectors, `j + lanes <= out_width`.
                        unsafe { outputs!(j, lanes, load) }
                    }
                } else {
                    let n = out_width;
                    let (low, high) = ((2 * n).min(lanes), (2 * n).saturating_sub(lanes));
                    let masks = (zero.first_lanes(low), zero.first_lanes(high));
                    // SAFETY: see the macro; the masks cover the `2n` inputs.
                    unsafe { outputs!(0, n, load_masked, masks) }
                }
            }
            if check.sum().is_nan() {
                for (oh, row) in out.chunks_exact_mut(out_width).enumerate() {
                    let (top, bottom) = (&x[2 * oh * width..], &x[(2 * oh + 1) * width..]);
                    let base = (2 * oh * width) as u32;
                    if WITH_INDEX {
                        let idx_row = &mut idx[oh * out_width..(oh + 1) * out_width];
                        max_2x2_row::<true>(top, bottom, row, idx_row, base, width as u32);
                    } else {
                        max_2x2_row::<false>(top, bottom, row, &mut [], base, width as u32);
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn max_2x2_row<const WITH_INDEX: bool>(
    top: &[f32],
    bottom: &[f32],
    out: &mut [f32],
    idx: &mut [u32],
    base: u32,
    width: u32,
) {
    let n = out.len();
    let (top, bottom) = (&top[..2 * n], &bottom[..2 * n]);
    // `f32::max` and equality tests vectorise. `max` skips NaN, so a row whose window sums are
    // NaN (a NaN input, or rarely inf − inf) is redone by the exact rule.
    let mut poisoned = false;
    for ow in 0..n {
        let (a, b, c, d) = (
            top[2 * ow],
            top[2 * ow + 1],
            bottom[2 * ow],
            bottom[2 * ow + 1],
        );
        let best = a.max(b).max(c.max(d));
        poisoned |= (a + b + c + d).is_nan();
        out[ow] = best;
        if WITH_INDEX {
            // The first position holding the maximum, in row-major window order, as a chain
            // of selects (no branches, so the loop stays vectorised).
            let mut at = width + 1;
            at = if c == best { width } else { at };
            at = if b == best { 1 } else { at };
            at = if a == best { 0 } else { at };
            idx[ow] = base + 2 * ow as u32 + at;
        }
    }
    if !poisoned {
        return;
    }
    for ow in 0..n {
        let (a, b, c, d) = (
            top[2 * ow],
            top[2 * ow + 1],
            bottom[2 * ow],
            bottom[2 * ow + 1],
        );
        let (upper, upper_at) = if beats(b, a) { (b, 1) } else { (a, 0) };
        let (lower, lower_at) = if beats(d, c) {
            (d, width + 1)
        } else {
            (c, width)
        };
        let (best, at) = if beats(lower, upper) {
            (lower, lower_at)
        } else {
            (upper, upper_at)
        };
        out[ow] = best;
        if WITH_INDEX {
            idx[ow] = base + 2 * ow as u32 + at;
        }
    }
}

/// Max pooling backward: each output gradient goes to the input position its window's maximum
/// came from (summed where windows overlap).
///
/// # Panics
///
/// If a slice's length does not match `shape`.
pub fn max_pool2d_backward(
    grad_output: &[f32],
    indices: &[u32],
    shape: &Pool2dShape,
    grad_input: &mut [f32],
) {
    let s = *shape;
    expect_len(
        "max_pool2d_backward",
        "grad_input",
        grad_input.len(),
        s.planes() * s.in_plane(),
    );
    let plane = max_pool2d_backward_planes(grad_output, indices, shape);
    if s.in_plane() == 0 {
        return;
    }
    grad_input
        .par_chunks_mut(s.in_plane())
        .enumerate()
        .for_each(|(p, gx)| {
            gx.fill(0.0);
            plane(p, gx);
        });
}

/// As [`max_pool2d_backward`] into a fresh vector, each plane zeroed by the thread that fills
/// it.
pub fn max_pool2d_backward_to_vec(
    grad_output: &[f32],
    indices: &[u32],
    shape: &Pool2dShape,
) -> Vec<f32> {
    let plane = max_pool2d_backward_planes(grad_output, indices, shape);
    filled_by_chunks(shape.in_plane(), shape.planes(), true, plane)
}

/// Checks the backward's operands and returns the scatter of one plane's gradient into its
/// zeroed input gradient.
fn max_pool2d_backward_planes<'a>(
    grad_output: &'a [f32],
    indices: &'a [u32],
    shape: &Pool2dShape,
) -> impl Fn(usize, &mut [f32]) + Sync + Send + 'a {
    let s = *shape;
    expect_len(
        "max_pool2d_backward",
        "grad_output",
        grad_output.len(),
        s.planes() * s.out_plane(),
    );
    expect_len(
        "max_pool2d_backward",
        "indices",
        indices.len(),
        s.planes() * s.out_plane(),
    );
    move |plane, gx| {
        let range = plane * s.out_plane()..(plane + 1) * s.out_plane();
        for (&g, &i) in grad_output[range.clone()].iter().zip(&indices[range]) {
            if let Some(slot) = gx.get_mut(i as usize) {
                *slot += g;
            }
        }
    }
}

/// How average pooling counts the window for its divisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AvgDivisor {
    /// Divide by the window size including zero padding (PyTorch's default,
    /// `count_include_pad=True`).
    IncludePadding,
    /// Divide by the number of input elements in the window (`count_include_pad=False`).
    ExcludePadding,
}

/// The clipped window `[h0, h1) x [w0, w1)` of an output position and its divisor, by
/// PyTorch's rule: the padded window is clipped to `input + padding` for the divisor with
/// padding, and to the input for the summed elements.
fn avg_window(
    s: &Pool2dShape,
    oh: usize,
    ow: usize,
    divisor: AvgDivisor,
) -> (usize, usize, usize, usize, f32) {
    let (h0, h1) = s.window(0, oh);
    let (w0, w1) = s.window(1, ow);
    let h1 = h1.min((s.in_height + s.spec.padding[0]) as isize);
    let w1 = w1.min((s.in_width + s.spec.padding[1]) as isize);
    let padded_count = (h1 - h0) * (w1 - w0);
    let (h0, w0) = (h0.max(0) as usize, w0.max(0) as usize);
    let (h1, w1) = (
        (h1 as usize).min(s.in_height),
        (w1 as usize).min(s.in_width),
    );
    let count = match divisor {
        AvgDivisor::IncludePadding => padded_count as usize,
        AvgDivisor::ExcludePadding => (h1.saturating_sub(h0)) * (w1.saturating_sub(w0)),
    };
    (h0, h1, w0, w1, 1.0 / count.max(1) as f32)
}

/// Average pooling forward.
///
/// # Panics
///
/// If a slice's length does not match `shape`, or the spec has a dilation other than 1.
pub fn avg_pool2d_forward(
    input: &[f32],
    shape: &Pool2dShape,
    divisor: AvgDivisor,
    output: &mut [f32],
) {
    let s = *shape;
    expect_unit_dilation(&s);
    expect_len(
        "avg_pool2d",
        "input",
        input.len(),
        s.planes() * s.in_plane(),
    );
    expect_len(
        "avg_pool2d",
        "output",
        output.len(),
        s.planes() * s.out_plane(),
    );
    if s.out_plane() == 0 {
        return;
    }
    output
        .par_chunks_mut(s.out_plane())
        .enumerate()
        .for_each(|(plane, out)| {
            let x = &input[plane * s.in_plane()..(plane + 1) * s.in_plane()];
            for oh in 0..s.out_height {
                for ow in 0..s.out_width {
                    let (h0, h1, w0, w1, scale) = avg_window(&s, oh, ow, divisor);
                    let total: f32 = (h0..h1)
                        .map(|h| {
                            x[h * s.in_width + w0..h * s.in_width + w1]
                                .iter()
                                .sum::<f32>()
                        })
                        .sum();
                    out[oh * s.out_width + ow] = total * scale;
                }
            }
        });
}

/// Average pooling backward: each output gradient is spread evenly (by the same divisor) over
/// the input elements of its window.
///
/// # Panics
///
/// If a slice's length does not match `shape`, or the spec has a dilation other than 1.
pub fn avg_pool2d_backward(
    grad_output: &[f32],
    shape: &Pool2dShape,
    divisor: AvgDivisor,
    grad_input: &mut [f32],
) {
    let s = *shape;
    expect_unit_dilation(&s);
    expect_len(
        "avg_pool2d_backward",
        "grad_output",
        grad_output.len(),
        s.planes() * s.out_plane(),
    );
    expect_len(
        "avg_pool2d_backward",
        "grad_input",
        grad_input.len(),
        s.planes() * s.in_plane(),
    );
    if s.in_plane() == 0 {
        return;
    }
    grad_input
        .par_chunks_mut(s.in_plane())
        .enumerate()
        .for_each(|(plane, gx)| {
            gx.fill(0.0);
            let g = &grad_output[plane * s.out_plane()..(plane + 1) * s.out_plane()];
            for oh in 0..s.out_height {
                for ow in 0..s.out_width {
                    let (h0, h1, w0, w1, scale) = avg_window(&s, oh, ow, divisor);
                    let share = g[oh * s.out_width + ow] * scale;
                    for h in h0..h1 {
                        gx[h * s.in_width + w0..h * s.in_width + w1]
                            .iter_mut()
                            .for_each(|v| *v += share);
                    }
                }
            }
        });
}

#[track_caller]
fn expect_unit_dilation(s: &Pool2dShape) {
    if s.spec.dilation != [1, 1] {
        contract_violation(
            "avg_pool2d",
            "dilation must be 1",
            format_args!("spec {:?}", s.spec),
        );
    }
}

/// The input rows (or columns) `[start, end)` that adaptive pooling averages for output index
/// `index` of `output` along an axis of `input` elements. PyTorch's rule: `start =
/// floor(index·input / output)`, `end = ceil((index + 1)·input / output)`, so bins cover the
/// input, may overlap by one element, and never come out empty when `output <= input`.
///
/// # Examples
///
/// ```
/// use striate::kernels::pool::adaptive_bin;
///
/// // 10 inputs into 4 bins: [0, 3), [2, 5), [5, 8), [7, 10)
/// let bins: Vec<_> = (0..4).map(|i| adaptive_bin(i, 10, 4)).collect();
/// assert_eq!(bins, vec![(0, 3), (2, 5), (5, 8), (7, 10)]);
/// ```
pub fn adaptive_bin(index: usize, input: usize, output: usize) -> (usize, usize) {
    let start = index * input / output;
    let end = ((index + 1) * input).div_ceil(output);
    (start, end)
}

/// Sizes of one adaptive pooling: `planes` (`N·C`) planes of `input` `[H, W]` pooled into
/// `output` `[OH, OW]` bins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AdaptivePool2dShape {
    /// `N·C`, the number of planes.
    pub planes: usize,
    /// `[H, W]` of each input plane.
    pub input: [usize; 2],
    /// `[OH, OW]` of each output plane.
    pub output: [usize; 2],
}

impl AdaptivePool2dShape {
    /// Checks an `[N, C, H, W]` input against the output size.
    ///
    /// # Panics
    ///
    /// If the input is not 4-D, or an input or output extent is 0.
    #[track_caller]
    pub fn new(op: &str, input: &[usize], output: [usize; 2]) -> AdaptivePool2dShape {
        let context = || format!("input {}, output size {output:?}", shape_str(input));
        if input.len() != 4 {
            contract_violation(op, "input must be 4-D [N, C, H, W]", context());
        }
        if input[2] == 0 || input[3] == 0 || output.contains(&0) {
            contract_violation(op, "input and output sizes must be positive", context());
        }
        AdaptivePool2dShape {
            planes: input[0] * input[1],
            input: [input[2], input[3]],
            output,
        }
    }

    fn in_plane(&self) -> usize {
        self.input[0] * self.input[1]
    }

    fn out_plane(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// The clipped window of output `(oh, ow)` and the reciprocal of its size.
    fn bin(&self, oh: usize, ow: usize) -> (usize, usize, usize, usize, f32) {
        let (h0, h1) = adaptive_bin(oh, self.input[0], self.output[0]);
        let (w0, w1) = adaptive_bin(ow, self.input[1], self.output[1]);
        (h0, h1, w0, w1, 1.0 / ((h1 - h0) * (w1 - w0)) as f32)
    }
}

/// Adaptive average pooling forward (PyTorch's `adaptive_avg_pool2d`): output `(oh, ow)` is the
/// mean of the input bin given by [`adaptive_bin`] on each axis.
///
/// # Panics
///
/// If a slice's length does not match `shape`.
pub fn adaptive_avg_pool2d_forward(input: &[f32], shape: &AdaptivePool2dShape, output: &mut [f32]) {
    let s = *shape;
    let op = "adaptive_avg_pool2d";
    expect_len(op, "input", input.len(), s.planes * s.in_plane());
    expect_len(op, "output", output.len(), s.planes * s.out_plane());
    if output.is_empty() {
        return;
    }
    output
        .par_chunks_mut(s.out_plane())
        .zip(input.par_chunks(s.in_plane()))
        .for_each(|(out, x)| {
            for oh in 0..s.output[0] {
                for ow in 0..s.output[1] {
                    let (h0, h1, w0, w1, scale) = s.bin(oh, ow);
                    let total: f32 = (h0..h1)
                        .map(|h| {
                            x[h * s.input[1] + w0..h * s.input[1] + w1]
                                .iter()
                                .sum::<f32>()
                        })
                        .sum();
                    out[oh * s.output[1] + ow] = total * scale;
                }
            }
        });
}

/// Adaptive average pooling backward: each output gradient is spread evenly over its bin
/// (summed where neighbouring bins overlap).
///
/// # Panics
///
/// If a slice's length does not match `shape`.
pub fn adaptive_avg_pool2d_backward(
    grad_output: &[f32],
    shape: &AdaptivePool2dShape,
    grad_input: &mut [f32],
) {
    let s = *shape;
    let op = "adaptive_avg_pool2d_backward";
    expect_len(
        op,
        "grad_output",
        grad_output.len(),
        s.planes * s.out_plane(),
    );
    expect_len(op, "grad_input", grad_input.len(), s.planes * s.in_plane());
    if grad_input.is_empty() {
        return;
    }
    grad_input
        .par_chunks_mut(s.in_plane())
        .zip(grad_output.par_chunks(s.out_plane()))
        .for_each(|(gx, g)| {
            gx.fill(0.0);
            for oh in 0..s.output[0] {
                for ow in 0..s.output[1] {
                    let (h0, h1, w0, w1, scale) = s.bin(oh, ow);
                    let share = g[oh * s.output[1] + ow] * scale;
                    for h in h0..h1 {
                        gx[h * s.input[1] + w0..h * s.input[1] + w1]
                            .iter_mut()
                            .for_each(|v| *v += share);
                    }
                }
            }
        });
}

/// Adaptive max pooling forward (PyTorch's `adaptive_max_pool2d`): output `(oh, ow)` is the
/// largest value of the input bin given by [`adaptive_bin`] on each axis, and `indices` its
/// position within the plane (`h·W + w`). PyTorch's NaN rule: a value replaces the maximum when
/// `value > max || value.is_nan()`, so the bin's last NaN wins; a bin of `-inf` keeps its first
/// element.
///
/// # Panics
///
/// If a slice's length does not match `shape`.
pub fn adaptive_max_pool2d_forward(
    input: &[f32],
    shape: &AdaptivePool2dShape,
    output: &mut [f32],
    indices: &mut [u32],
) {
    let s = *shape;
    let op = "adaptive_max_pool2d";
    expect_len(op, "input", input.len(), s.planes * s.in_plane());
    expect_len(op, "output", output.len(), s.planes * s.out_plane());
    expect_len(op, "indices", indices.len(), s.planes * s.out_plane());
    if output.is_empty() {
        return;
    }
    output
        .par_chunks_mut(s.out_plane())
        .zip(indices.par_chunks_mut(s.out_plane()))
        .zip(input.par_chunks(s.in_plane()))
        .for_each(|((out, idx), x)| {
            for oh in 0..s.output[0] {
                for ow in 0..s.output[1] {
                    let (h0, h1, w0, w1, _) = s.bin(oh, ow);
                    let mut best = h0 * s.input[1] + w0;
                    for h in h0..h1 {
                        for w in w0..w1 {
                            let i = h * s.input[1] + w;
                            if beats(x[i], x[best]) {
                                best = i;
                            }
                        }
                    }
                    out[oh * s.output[1] + ow] = x[best];
                    idx[oh * s.output[1] + ow] = best as u32;
                }
            }
        });
}

/// Backward of [`adaptive_max_pool2d_forward`]: each output gradient goes to its bin's argmax
/// (summed where overlapping bins share it).
///
/// # Panics
///
/// If a slice's length does not match `shape`.
pub fn adaptive_max_pool2d_backward(
    grad_output: &[f32],
    indices: &[u32],
    shape: &AdaptivePool2dShape,
    grad_input: &mut [f32],
) {
    let s = *shape;
    let op = "adaptive_max_pool2d_backward";
    expect_len(
        op,
        "grad_output",
        grad_output.len(),
        s.planes * s.out_plane(),
    );
    expect_len(op, "indices", indices.len(), s.planes * s.out_plane());
    expect_len(op, "grad_input", grad_input.len(), s.planes * s.in_plane());
    if grad_input.is_empty() {
        return;
    }
    grad_input
        .par_chunks_mut(s.in_plane())
        .zip(
            grad_output
                .par_chunks(s.out_plane())
                .zip(indices.par_chunks(s.out_plane())),
        )
        .for_each(|(gx, (g, idx))| {
            gx.fill(0.0);
            for (&g, &i) in g.iter().zip(idx) {
                gx[i as usize] += g;
            }
        });
}

/// Global average pooling: the mean of each `H x W` plane, `[N, C, H, W] -> [N, C]`.
///
/// # Panics
///
/// If `output.len() · plane` differs from `input.len()`.
pub fn global_avg_pool_forward(input: &[f32], plane: usize, output: &mut [f32]) {
    expect_len(
        "global_avg_pool2d",
        "input",
        input.len(),
        output.len() * plane,
    );
    let scale = 1.0 / plane.max(1) as f32;
    output.par_iter_mut().enumerate().for_each(|(i, o)| {
        *o = input[i * plane..(i + 1) * plane].iter().sum::<f32>() * scale;
    });
}

/// Backward of [`global_avg_pool_forward`]: each plane receives its gradient divided evenly.
///
/// # Panics
///
/// If `grad_output.len() · plane` differs from `grad_input.len()`.
pub fn global_avg_pool_backward(grad_output: &[f32], plane: usize, grad_input: &mut [f32]) {
    expect_len(
        "global_avg_pool2d_backward",
        "grad_input",
        grad_input.len(),
        grad_output.len() * plane,
    );
    if plane == 0 {
        return;
    }
    let scale = 1.0 / plane as f32;
    grad_input
        .par_chunks_mut(plane)
        .zip(grad_output.par_iter())
        .for_each(|(gx, &g)| gx.fill(g * scale));
}

/// Global max pooling: the largest value of each plane and its position,
/// `[N, C, H, W] -> [N, C]`.
///
/// # Panics
///
/// If the lengths disagree, or `plane` is 0.
pub fn global_max_pool_forward(
    input: &[f32],
    plane: usize,
    output: &mut [f32],
    indices: &mut [u32],
) {
    expect_len(
        "global_max_pool2d",
        "input",
        input.len(),
        output.len() * plane,
    );
    expect_len("global_max_pool2d", "indices", indices.len(), output.len());
    if plane == 0 {
        contract_violation("global_max_pool2d", "planes must not be empty", "");
    }
    output
        .par_iter_mut()
        .zip(indices.par_iter_mut())
        .enumerate()
        .for_each(|(i, (o, idx))| {
            let x = &input[i * plane..(i + 1) * plane];
            let mut best = 0;
            for (j, &v) in x.iter().enumerate() {
                if beats(v, x[best]) {
                    best = j;
                }
            }
            *o = x[best];
            *idx = best as u32;
        });
}

/// Backward of [`global_max_pool_forward`]: each plane's gradient goes to its maximum.
///
/// # Panics
///
/// If the lengths disagree.
pub fn global_max_pool_backward(
    grad_output: &[f32],
    indices: &[u32],
    plane: usize,
    grad_input: &mut [f32],
) {
    expect_len(
        "global_max_pool2d_backward",
        "grad_input",
        grad_input.len(),
        grad_output.len() * plane,
    );
    expect_len(
        "global_max_pool2d_backward",
        "indices",
        indices.len(),
        grad_output.len(),
    );
    if plane == 0 {
        return;
    }
    grad_input
        .par_chunks_mut(plane)
        .zip(grad_output.par_iter().zip(indices.par_iter()))
        .for_each(|(gx, (&g, &i))| {
            gx.fill(0.0);
            gx[i as usize] = g;
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg_divisor_rules_match_pytorch() {
        // 3x3 input, kernel 2, stride 2, padding 1: the corner window covers one element and
        // three padding cells.
        let spec = Pool2dSpec {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [1, 1],
            dilation: [1, 1],
            ceil_mode: false,
        };
        let s = Pool2dShape::new("avg_pool2d", &[1, 1, 3, 3], spec);
        assert_eq!((s.out_height, s.out_width), (2, 2));
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut with = vec![0.0; 4];
        avg_pool2d_forward(&x, &s, AvgDivisor::IncludePadding, &mut with);
        assert_eq!(
            with,
            vec![
                0.25,
                (2.0 + 3.0) / 4.0,
                (4.0 + 7.0) / 4.0,
                (5.0 + 6.0 + 8.0 + 9.0) / 4.0
            ]
        );
        let mut without = vec![0.0; 4];
        avg_pool2d_forward(&x, &s, AvgDivisor::ExcludePadding, &mut without);
        assert_eq!(without, vec![1.0, 2.5, 5.5, 7.0]);
    }

    #[test]
    fn adaptive_bins_match_pytorch() {
        // torch.nn.functional.adaptive_avg_pool2d(torch.arange(1., 6.).view(1, 1, 1, 5), (1, 3))
        // is [[1.5, 3.0, 4.5]]: bins [0, 2), [1, 4), [3, 5)
        let s = AdaptivePool2dShape::new("adaptive_avg_pool2d", &[1, 1, 1, 5], [1, 3]);
        let mut out = vec![0.0; 3];
        adaptive_avg_pool2d_forward(&[1.0, 2.0, 3.0, 4.0, 5.0], &s, &mut out);
        assert_eq!(out, vec![1.5, 3.0, 4.5]);
        // more bins than inputs: each bin holds one element, repeated
        assert_eq!(
            (0..4).map(|i| adaptive_bin(i, 2, 4)).collect::<Vec<_>>(),
            vec![(0, 1), (0, 1), (1, 2), (1, 2)]
        );
        // a multiple of the output size: plain non-overlapping windows
        assert_eq!(adaptive_bin(3, 14, 7), (6, 8));
    }

    #[test]
    fn max_pool_ignores_padding_and_records_argmax() {
        let spec = Pool2dSpec {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            ceil_mode: false,
        };
        let s = Pool2dShape::new("max_pool2d", &[1, 1, 2, 2], spec);
        let x = [-4.0, -3.0, -2.0, -1.0];
        let (mut out, mut idx) = (vec![0.0; 4], vec![0; 4]);
        max_pool2d_forward(&x, &s, &mut out, Some(&mut idx));
        assert_eq!(out, vec![-1.0; 4]);
        assert_eq!(idx, vec![3; 4]);
    }

    #[test]
    fn nan_propagates_through_the_2x2_path() {
        let s = Pool2dShape::new("max_pool2d", &[1, 1, 2, 4], Pool2dSpec::square(2));
        let x = [
            1.0,
            5.0,
            f32::INFINITY,
            0.0,
            3.0,
            f32::NAN,
            7.0,
            f32::NEG_INFINITY,
        ];
        let (mut out, mut idx) = (vec![0.0; 2], vec![0; 2]);
        max_pool2d_forward(&x, &s, &mut out, Some(&mut idx));
        assert!(out[0].is_nan());
        assert_eq!(idx[0], 5);
        // inf − inf poisons the window sum without any NaN input: the exact path still gives inf
        assert_eq!((out[1], idx[1]), (f32::INFINITY, 2));
    }

    #[test]
    #[should_panic(expected = "max_pool2d: padding must be at most half the kernel")]
    fn rejects_large_padding() {
        let spec = Pool2dSpec {
            padding: [2, 2],
            ..Pool2dSpec::square(2)
        };
        Pool2dShape::new("max_pool2d", &[1, 1, 8, 8], spec);
    }
}
