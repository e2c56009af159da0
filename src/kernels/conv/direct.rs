//! The direct path: convolutions whose groups have one input channel each (depthwise
//! convolutions, and single-channel inputs such as an MNIST net's first layer). A GEMM would
//! have an inner dimension of only `KH·KW`, so instead each output plane is a weighted sum of
//! shifted copies of its input plane.
//!
//! At stride 1, forward and backward-data are both a correlation of one plane with a small
//! kernel ([`correlate_rows`]): each output row is computed straight from the input rows it
//! needs, sixteen columns at a time in registers across all taps, with the few columns where a
//! tap falls outside the image done one by one — no padded copy of the input and no copy of the
//! result (the padded "wide grid" this replaced spent as long copying as computing). The
//! filter gradient at stride 1 still correlates on the padded wide grid. Larger strides walk
//! rows with a gather.

use std::ops::Range;

use rayon::prelude::*;

use super::parallel::{sum_over_image_chunks, valid_columns};
use super::shape::{Conv2dShape, ConvActivation};
use super::wide::Wide;
use crate::kernels::scratch::with_scratch;
use crate::util::simd::{dispatch, dot};

/// Output values computed per step of the wide correlation: one AVX-512 register.
const LANES: usize = 16;

/// `out[t] += Σ_i g[i] · source[i + shifts[t]]` for every tap: the filter gradient of one plane.
/// Taps go four at a time through one pass over `g`, each into its own register of partial
/// sums, so `g` is read a third as often as with one dot product per tap.
#[inline(always)]
fn correlate_taps(g: &[f32], source: &[f32], shifts: &[usize], out: &mut [f32]) {
    let mut shift_blocks = shifts.chunks_exact(4);
    let mut out_blocks = out.chunks_exact_mut(4);
    for (block, totals) in (&mut shift_blocks).zip(&mut out_blocks) {
        let block: &[usize; 4] = block.try_into().expect("chunks of four");
        let sums = dot4(g, source, block);
        for (total, sum) in totals.iter_mut().zip(sums) {
            *total += sum;
        }
    }
    for (total, &shift) in out_blocks
        .into_remainder()
        .iter_mut()
        .zip(shift_blocks.remainder())
    {
        *total += dot(g, &source[shift..shift + g.len()]);
    }
}

/// Four dot products of `g` with `source` shifted by each of `shifts`.
#[inline(always)]
fn dot4(g: &[f32], source: &[f32], shifts: &[usize; 4]) -> [f32; 4] {
    let mut acc = [[0.0f32; LANES]; 4];
    let full = g.len() / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        let gv = &g[base..base + LANES];
        for (acc, &shift) in acc.iter_mut().zip(shifts) {
            let src = &source[base + shift..base + shift + LANES];
            for l in 0..LANES {
                acc[l] += gv[l] * src[l];
            }
        }
    }
    let mut sums = [0.0f32; 4];
    for ((sum, acc), &shift) in sums.iter_mut().zip(&acc).zip(shifts) {
        let tail: f32 = (full..g.len()).map(|i| g[i] * source[i + shift]).sum();
        *sum = acc.iter().sum::<f32>() + tail;
    }
    sums
}

fn is_stride_one(s: &Conv2dShape) -> bool {
    s.spec.stride == [1, 1]
}

/// A plane as the row correlation reads it: `rows x cols`, row-major.
#[derive(Clone, Copy)]
struct Plane<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

/// A kernel for [`correlate_rows`]: `taps` row-major `[height, width]`, tap `(kh, kw)` reading
/// the source at `(r + row_offset + kh·dilation[0], c + col_offset + kw·dilation[1])` for output
/// `(r, c)`.
#[derive(Clone, Copy)]
struct RowKernel<'a> {
    taps: &'a [f32],
    height: usize,
    width: usize,
    dilation: [usize; 2],
    row_offset: isize,
    col_offset: isize,
}

impl RowKernel<'_> {
    /// The source column of output column `c` under tap column `kw` is `c + shift(kw)`.
    #[inline(always)]
    fn shift(&self, kw: usize) -> isize {
        self.col_offset + (kw * self.dilation[1]) as isize
    }

    /// Row `r + row_offset + kh·dh` of `src`, when inside it.
    #[inline(always)]
    fn source_row<'s>(&self, src: Plane<'s>, r: usize, kh: usize) -> Option<&'s [f32]> {
        let i = r as isize + self.row_offset + (kh * self.dilation[0]) as isize;
        (0..src.rows as isize)
            .contains(&i)
            .then(|| &src.data[i as usize * src.cols..(i as usize + 1) * src.cols])
    }

    /// Output row `r`, columns `base..base + LANES` (where every tap column is inside the
    /// source), summed in registers over every tap. The common kernel widths get one
    /// accumulator per tap column, so that the additions form several short dependency chains
    /// instead of one long one (which bounded a 3x3 kernel by the adder's latency).
    #[inline(always)]
    fn block(&self, src: Plane<'_>, r: usize, base: usize, start: f32) -> [f32; LANES] {
        match self.width {
            3 => self.block_of_width::<3>(src, r, base, start),
            5 => self.block_of_width::<5>(src, r, base, start),
            7 => self.block_of_width::<7>(src, r, base, start),
            _ => {
                let mut acc = [start; LANES];
                for kh in 0..self.height {
                    let Some(row) = self.source_row(src, r, kh) else {
                        continue;
                    };
                    for kw in 0..self.width {
                        let w = self.taps[kh * self.width + kw];
                        let first = (base as isize + self.shift(kw)) as usize;
                        let values = &row[first..first + LANES];
                        for l in 0..LANES {
                            acc[l] += w * values[l];
                        }
                    }
                }
                acc
            }
        }
    }

    /// [`block`](Self::block) for a kernel `KW` columns wide.
    #[inline(always)]
    fn block_of_width<const KW: usize>(
        &self,
        src: Plane<'_>,
        r: usize,
        base: usize,
        start: f32,
    ) -> [f32; LANES] {
        let mut acc = [[0.0f32; LANES]; KW];
        let firsts: [usize; KW] =
            std::array::from_fn(|kw| (base as isize + self.shift(kw)) as usize);
        for kh in 0..self.height {
            let Some(row) = self.source_row(src, r, kh) else {
                continue;
            };
            let taps = &self.taps[kh * KW..(kh + 1) * KW];
            for kw in 0..KW {
                let values = &row[firsts[kw]..firsts[kw] + LANES];
                for l in 0..LANES {
                    acc[kw][l] += taps[kw] * values[l];
                }
            }
        }
        let mut total = [start; LANES];
        for column in &acc {
            for l in 0..LANES {
                total[l] += column[l];
            }
        }
        total
    }

    /// Output `(r, j)` one tap at a time, skipping taps outside the source.
    #[inline(always)]
    fn single(&self, src: Plane<'_>, r: usize, j: usize, start: f32) -> f32 {
        let mut total = start;
        for kh in 0..self.height {
            let Some(row) = self.source_row(src, r, kh) else {
                continue;
            };
            for kw in 0..self.width {
                let col = j as isize + self.shift(kw);
                if (0..src.cols as isize).contains(&col) {
                    total += self.taps[kh * self.width + kw] * row[col as usize];
                }
            }
        }
        total
    }
}

/// How [`correlate_rows`] writes its sums `Σ`: `Overwrite` stores `activation(bias + Σ)` (the
/// forward pass with its epilogue fused, so the output is written once), `Accumulate` adds `Σ`
/// to what is there.
#[derive(Clone, Copy)]
enum Store {
    Overwrite {
        bias: f32,
        activation: ConvActivation,
    },
    Accumulate,
}

impl Store {
    #[inline(always)]
    fn start(self) -> f32 {
        match self {
            Store::Overwrite { bias, .. } => bias,
            Store::Accumulate => 0.0,
        }
    }

    #[inline(always)]
    fn apply(self, target: &mut f32, total: f32) {
        *target = match self {
            Store::Overwrite {
                activation: ConvActivation::Relu,
                ..
            } => crate::kernels::relu(total),
            Store::Overwrite { .. } => total,
            Store::Accumulate => *target + total,
        }
    }
}

/// `out[r, c] ← Σ_(kh, kw) taps[kh, kw] · src[r + row_offset + kh·dh, c + col_offset + kw·dw]`
/// as `store` says, with the source zero outside its extent. `out` is `out_rows x out_cols`
/// row-major. Helpers are `#[inline(always)]` so that all of it is
/// compiled inside `dispatch`'s frame, for the CPU's widest vectors.
#[inline(always)]
fn correlate_rows(
    src: Plane<'_>,
    kernel: RowKernel<'_>,
    out: &mut [f32],
    out_cols: usize,
    store: Store,
) {
    // Columns where every tap column lands inside the source: the vectorised interior.
    let lo = (0..kernel.width)
        .map(|kw| (-kernel.shift(kw)).max(0) as usize)
        .max()
        .unwrap_or(0)
        .min(out_cols);
    let hi = (0..kernel.width)
        .map(|kw| (src.cols as isize - kernel.shift(kw)).clamp(0, out_cols as isize) as usize)
        .min()
        .unwrap_or(out_cols)
        .max(lo);
    for (r, out_row) in out.chunks_exact_mut(out_cols).enumerate() {
        let mut c = lo;
        while c + LANES <= hi {
            let acc = kernel.block(src, r, c, store.start());
            for (y, &a) in out_row[c..c + LANES].iter_mut().zip(&acc) {
                store.apply(y, a);
            }
            c += LANES;
        }
        // The interior's tail: one more block ending at `hi` when the interior is wide enough
        // (its first columns were already written and are skipped), else one column at a time.
        let scalar_from = if c < hi && hi - lo >= LANES {
            let acc = kernel.block(src, r, hi - LANES, store.start());
            for (j, &a) in (hi - LANES..hi).zip(&acc).skip(c - (hi - LANES)) {
                store.apply(&mut out_row[j], a);
            }
            hi
        } else {
            c
        };
        for j in (0..lo).chain(scalar_from..hi).chain(hi..out_cols) {
            let total = kernel.single(src, r, j, store.start());
            store.apply(&mut out_row[j], total);
        }
    }
}

/// Forward for one image: output channel `o` reads input channel `o / (O / groups)`. At
/// stride 1 the bias and activation are applied here, as each value is stored; returns whether
/// it did (the strided path leaves them to the caller).
pub(super) fn forward_image(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: ConvActivation,
    s: &Conv2dShape,
    out: &mut [f32],
) -> bool {
    if !is_stride_one(s) {
        strided_forward_image(x, weight, s, out);
        return false;
    }
    let (multiplier, taps) = (s.group_out(), s.kernel_height * s.kernel_width);
    for (o, out_plane) in out.chunks_exact_mut(s.out_plane()).enumerate() {
        let src = Plane {
            data: &x[(o / multiplier) * s.in_plane()..][..s.in_plane()],
            rows: s.in_height,
            cols: s.in_width,
        };
        let kernel = RowKernel {
            taps: &weight[o * taps..(o + 1) * taps],
            height: s.kernel_height,
            width: s.kernel_width,
            dilation: s.spec.dilation,
            row_offset: -(s.spec.padding.top as isize),
            col_offset: -(s.spec.padding.left as isize),
        };
        let store = Store::Overwrite {
            bias: bias.map_or(0.0, |bias| bias[o]),
            activation,
        };
        dispatch(
            #[inline(always)]
            || correlate_rows(src, kernel, out_plane, s.out_width, store),
        );
    }
    true
}

/// Backward-data for one image. At stride 1 this is again a correlation, of the output
/// gradient with the kernel turned by 180°: `dx[i, j] = Σ w[kh, kw] · dy[i + top − kh·dh,
/// j + left − kw·dw]`, i.e. flipped taps at offsets `top − (KH − 1)·dh` and `left − (KW − 1)·dw`.
pub(super) fn backward_data_image(gy: &[f32], weight: &[f32], s: &Conv2dShape, gx: &mut [f32]) {
    if !is_stride_one(s) {
        return strided_backward_data_image(gy, weight, s, gx);
    }
    let (multiplier, taps) = (s.group_out(), s.kernel_height * s.kernel_width);
    let [dh, dw] = s.spec.dilation;
    let mut flipped = vec![0.0f32; taps];
    for (c, gx_plane) in gx.chunks_exact_mut(s.in_plane()).enumerate() {
        for (k, o) in (c * multiplier..(c + 1) * multiplier).enumerate() {
            for (f, w) in flipped
                .iter_mut()
                .zip(weight[o * taps..(o + 1) * taps].iter().rev())
            {
                *f = *w;
            }
            let src = Plane {
                data: &gy[o * s.out_plane()..(o + 1) * s.out_plane()],
                rows: s.out_height,
                cols: s.out_width,
            };
            let kernel = RowKernel {
                taps: &flipped,
                height: s.kernel_height,
                width: s.kernel_width,
                dilation: s.spec.dilation,
                row_offset: s.spec.padding.top as isize - ((s.kernel_height - 1) * dh) as isize,
                col_offset: s.spec.padding.left as isize - ((s.kernel_width - 1) * dw) as isize,
            };
            dispatch(
                #[inline(always)]
                || {
                    let store = if k == 0 {
                        Store::Overwrite {
                            bias: 0.0,
                            activation: ConvActivation::Identity,
                        }
                    } else {
                        Store::Accumulate
                    };
                    correlate_rows(src, kernel, gx_plane, s.in_width, store)
                },
            );
        }
    }
}

/// Backward-filter over the whole batch: `dw[o, t] = Σ_n dy_wide[n, o] · x_padded[n, c][shift_t..]`.
pub(super) fn backward_filter(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    grad_weight: &mut [f32],
) {
    let multiplier = s.group_out();
    let taps = s.kernel_height * s.kernel_width;
    if s.in_channels >= rayon::current_num_threads() {
        // Enough channels: each task owns the filters of one input channel.
        grad_weight
            .par_chunks_mut(multiplier * taps)
            .enumerate()
            .for_each(|(c, gw)| filter_gradient(input, grad_output, s, c..c + 1, 0..s.batch, gw));
    } else {
        // Few channels (a single-channel first layer): split the batch instead.
        sum_over_image_chunks(s.batch, grad_weight, |images, partial| {
            filter_gradient(input, grad_output, s, 0..s.in_channels, images, partial)
        });
    }
}

/// Adds the filter gradient of input channels `channels` over `images` into `gw`, which holds
/// those channels' filters.
fn filter_gradient(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    channels: Range<usize>,
    images: Range<usize>,
    gw: &mut [f32],
) {
    let multiplier = s.group_out();
    let taps = s.kernel_height * s.kernel_width;
    let first_channel = channels.start;
    gw.fill(0.0);
    if !is_stride_one(s) {
        for c in channels {
            for o in c * multiplier..(c + 1) * multiplier {
                let local = (o - first_channel * multiplier) * taps;
                strided_filter_gradient(
                    input,
                    grad_output,
                    s,
                    o,
                    images.clone(),
                    &mut gw[local..local + taps],
                );
            }
        }
        return;
    }
    let wide = Wide::new(s);
    with_scratch(wide.padded_len + wide.out_len, |buffer| {
        let (padded, grad_wide) = buffer.split_at_mut(wide.padded_len);
        for n in images {
            for c in channels.clone() {
                let plane = &input[(n * s.in_channels + c) * s.in_plane()..][..s.in_plane()];
                wide.pad(s, plane, padded);
                for o in c * multiplier..(c + 1) * multiplier {
                    let g =
                        &grad_output[(n * s.out_channels + o) * s.out_plane()..][..s.out_plane()];
                    wide.widen(s, g, 0, s.out_height, grad_wide, 0);
                    let local = (o - first_channel * multiplier) * taps;
                    let gw_o = &mut gw[local..local + taps];
                    dispatch(
                        #[inline(always)]
                        || correlate_taps(grad_wide, padded, &wide.shifts, gw_o),
                    );
                }
            }
        }
    });
}

// ------------------------------------------------------------------------------ strided rows

/// Calls `f(kh, kw, oh, ih, lo, hi, offset)` for every (tap, output row) whose input row is
/// inside the image and whose valid output columns `[lo, hi)` are not empty; the input column
/// of output column `ow` is `ow · stride + offset`.
#[inline(always)]
fn for_each_tap_row(
    s: &Conv2dShape,
    mut f: impl FnMut(usize, usize, usize, usize, usize, usize, isize),
) {
    let [stride_h, stride_w] = s.spec.stride;
    let [dilation_h, dilation_w] = s.spec.dilation;
    for kh in 0..s.kernel_height {
        for oh in 0..s.out_height {
            let ih = (oh * stride_h + kh * dilation_h) as isize - s.spec.padding.top as isize;
            if ih < 0 || ih as usize >= s.in_height {
                continue;
            }
            for kw in 0..s.kernel_width {
                let offset = (kw * dilation_w) as isize - s.spec.padding.left as isize;
                let (lo, hi) = valid_columns(0, s.out_width, stride_w, offset, s.in_width);
                if lo < hi {
                    f(kh, kw, oh, ih as usize, lo, hi, offset);
                }
            }
        }
    }
}

fn strided_forward_image(x: &[f32], weight: &[f32], s: &Conv2dShape, out: &mut [f32]) {
    let multiplier = s.group_out();
    let taps = s.kernel_height * s.kernel_width;
    let stride_w = s.spec.stride[1];
    for (o, out_plane) in out.chunks_mut(s.out_plane()).enumerate() {
        out_plane.fill(0.0);
        let plane = &x[(o / multiplier) * s.in_plane()..][..s.in_plane()];
        let w = &weight[o * taps..(o + 1) * taps];
        for_each_tap_row(s, |kh, kw, oh, ih, lo, hi, offset| {
            let tap = w[kh * s.kernel_width + kw];
            let source = &plane[ih * s.in_width..(ih + 1) * s.in_width];
            let first = ((lo * stride_w) as isize + offset) as usize;
            for (i, y) in out_plane[oh * s.out_width + lo..oh * s.out_width + hi]
                .iter_mut()
                .enumerate()
            {
                *y += tap * source[first + i * stride_w];
            }
        });
    }
}

fn strided_backward_data_image(gy: &[f32], weight: &[f32], s: &Conv2dShape, gx: &mut [f32]) {
    let multiplier = s.group_out();
    let taps = s.kernel_height * s.kernel_width;
    let stride_w = s.spec.stride[1];
    gx.fill(0.0);
    for (c, in_plane) in gx.chunks_mut(s.in_plane()).enumerate() {
        for o in c * multiplier..(c + 1) * multiplier {
            let g_plane = &gy[o * s.out_plane()..(o + 1) * s.out_plane()];
            let w = &weight[o * taps..(o + 1) * taps];
            for_each_tap_row(s, |kh, kw, oh, ih, lo, hi, offset| {
                let tap = w[kh * s.kernel_width + kw];
                let source = &g_plane[oh * s.out_width + lo..oh * s.out_width + hi];
                let target = &mut in_plane[ih * s.in_width..(ih + 1) * s.in_width];
                let first = ((lo * stride_w) as isize + offset) as usize;
                for (i, &g) in source.iter().enumerate() {
                    target[first + i * stride_w] += tap * g;
                }
            });
        }
    }
}

fn strided_filter_gradient(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    o: usize,
    images: Range<usize>,
    gw: &mut [f32],
) {
    let c = o / s.group_out();
    let stride_w = s.spec.stride[1];
    let mut sums = vec![0.0f64; gw.len()];
    for n in images {
        let plane = &input[(n * s.in_channels + c) * s.in_plane()..][..s.in_plane()];
        let g_plane = &grad_output[(n * s.out_channels + o) * s.out_plane()..][..s.out_plane()];
        for_each_tap_row(s, |kh, kw, oh, ih, lo, hi, offset| {
            let g = &g_plane[oh * s.out_width + lo..oh * s.out_width + hi];
            let source = &plane[ih * s.in_width..(ih + 1) * s.in_width];
            let first = ((lo * stride_w) as isize + offset) as usize;
            let dot: f32 = g
                .iter()
                .enumerate()
                .map(|(i, a)| a * source[first + i * stride_w])
                .sum();
            sums[kh * s.kernel_width + kw] += dot as f64;
        });
    }
    for (w, total) in gw.iter_mut().zip(sums) {
        *w += total as f32;
    }
}
