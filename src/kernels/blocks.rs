//! [`ChannelBlocks`]: activations kept in blocks of 16 channels between layers (the layout
//! oneDNN calls `nChw16c`), with a zero border, so that a chain of convolutions, batch norms,
//! ReLUs and residual additions runs without converting to NCHW and back at every layer.
//!
//! The convolution kernels that read channel blocks (`conv/blocked.rs`) otherwise copy each NCHW
//! image into padded blocks and transpose every output tile back: on ResNet's downsampling those
//! conversions were about 8% of the forward on a Zen 4. A block with a border at least as wide
//! as the next convolution's padding is read in place; a tile's output is stored as it is.
//!
//! Two invariants make the layout safe to compute on blindly: the border and the lanes past
//! the last channel are zero. Every operation here keeps them zero; a zero in a lane past the
//! channels meets a zero weight in the next convolution, and a zero in the border is the
//! convolution's zero padding.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::kernels::fill::written_by_chunks_then_zeros;
use crate::kernels::vector::{Vector, VectorKernel, transpose_block, with_vector};
use crate::tensor::check::{contract_violation, shape_str};
use crate::util::simd::{Level, level, par_chunks_dispatch};
use crate::util::threads::inside_split;

/// Channels per block: one AVX-512 vector.
pub const BLOCK_CHANNELS: usize = 16;

const LANES: usize = BLOCK_CHANNELS;

/// Floats after the last image, never written: a register tile of the convolution computes up
/// to 14 pixels at twice the block's pixel pitch past a row's end, and discards them.
const SLACK: usize = 32 * LANES;

/// A batch of images `[N, C, H, W]` stored as `[N][C/16][H + 2·halo][W + 2·halo][16]`: blocks of
/// 16 channels (the last padded with zero channels), each pixel's 16 channels contiguous, and a
/// border of `halo` zero pixels around each block.
///
/// # Examples
///
/// ```
/// use striate::kernels::blocks::ChannelBlocks;
///
/// let planes: Vec<f32> = (0..2 * 20 * 3 * 3).map(|i| i as f32).collect();
/// let blocks = ChannelBlocks::from_planes(&planes, [2, 20, 3, 3], 1);
/// assert_eq!(blocks.shape(), [2, 20, 3, 3]);
/// assert_eq!(blocks.padded(), [5, 5]);
/// assert_eq!(blocks.to_planes(), planes);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelBlocks {
    data: Vec<f32>,
    shape: [usize; 4],
    halo: usize,
}

impl ChannelBlocks {
    /// All zeros: every image's blocks, border and slack.
    pub fn zeros(shape: [usize; 4], halo: usize) -> ChannelBlocks {
        let len = shape[0] * blocks_of(shape[1]) * block_len(shape, halo) + SLACK;
        ChannelBlocks {
            // Huge pages where the system allows (see `filled_by_images`).
            data: crate::util::memory::vec_filled(len, 0.0),
            shape,
            halo,
        }
    }

    /// Blocks whose image `n` is written by `fill(n, image)`, on all threads when `parallel`:
    /// the border and the lanes past the channels are zeroed here first, and `fill` writes
    /// every other float (each pixel inside the border, every lane of a channel), never
    /// zeroing the image first (see [`written_by_chunks_then_zeros`]).
    ///
    /// # Safety
    ///
    /// `fill` writes every float of its image outside the border and the lanes past the
    /// channels, and reads none it has not written: the image starts uninitialised there.
    pub(crate) unsafe fn written_by_images(
        shape: [usize; 4],
        halo: usize,
        parallel: bool,
        fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
    ) -> ChannelBlocks {
        let image_len = blocks_of(shape[1]) * block_len(shape, halo);
        let write = |n: usize, image: &mut [MaybeUninit<f32>]| {
            zero_outside_channels(image, shape, halo);
            fill(n, image);
        };
        // SAFETY: `write` zeroes the border and the lanes past the channels, and `fill` every
        // other float (the caller's contract).
        let data =
            unsafe { written_by_chunks_then_zeros(image_len, shape[0], SLACK, parallel, write) };
        ChannelBlocks { data, shape, halo }
    }

    /// The NCHW planes `[N, C, H, W]` in blocks with a border of `halo` pixels.
    ///
    /// # Panics
    ///
    /// If `planes` does not hold `N·C·H·W` floats.
    pub fn from_planes(planes: &[f32], shape: [usize; 4], halo: usize) -> ChannelBlocks {
        if planes.len() != shape.iter().product::<usize>() {
            contract_violation(
                "ChannelBlocks::from_planes",
                "the planes must hold N·C·H·W floats",
                format_args!("shape {}, {} floats", shape_str(&shape), planes.len()),
            );
        }
        let mut blocks = ChannelBlocks::zeros(shape, halo);
        let [_, channels, h, w] = shape;
        let image_in = channels * h * w;
        let image_len = blocks.image_len();
        let padded = blocks.padded();
        let fill = |(n, image): (usize, &mut [f32])| {
            fill_blocks(
                &planes[n * image_in..(n + 1) * image_in],
                channels,
                [h, w],
                [halo, halo],
                padded,
                image,
            )
        };
        let images = blocks.images_mut();
        for_each_chunk(images, image_len.max(1), shape[0] > 1, fill);
        blocks
    }

    /// The images as NCHW planes `[N, C, H, W]`.
    pub fn to_planes(&self) -> Vec<f32> {
        let [_, channels, h, w] = self.shape;
        let image_out = channels * h * w;
        let mut planes = vec![0.0; self.shape.iter().product()];
        let image_len = self.image_len();
        let convert = |(n, out): (usize, &mut [f32])| {
            blocks_to_planes(
                &self.data[n * image_len..(n + 1) * image_len],
                [h, w],
                self.halo,
                out,
            )
        };
        for_each_chunk(&mut planes, image_out.max(1), self.shape[0] > 1, convert);
        planes
    }

    /// `[N, C, H, W]`, the logical shape.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// Zero pixels around each block, on every side.
    pub fn halo(&self) -> usize {
        self.halo
    }

    /// `[H + 2·halo, W + 2·halo]`: the rows and pixels per row of a block.
    pub fn padded(&self) -> [usize; 2] {
        [self.shape[2] + 2 * self.halo, self.shape[3] + 2 * self.halo]
    }

    /// Floats per image: its blocks, borders included.
    pub fn image_len(&self) -> usize {
        blocks_of(self.shape[1]) * block_len(self.shape, self.halo)
    }

    /// Every float: the images in order, then a few zeros after the last.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The images' floats, without the slack after them, for kernels that fill them; they must
    /// keep the border and the lanes past the channels zero.
    pub(crate) fn images_mut(&mut self) -> &mut [f32] {
        let len = self.shape[0] * self.image_len();
        &mut self.data[..len]
    }

    /// `max(x, 0)` of every value (NaN stays NaN, as [`crate::kernels::relu`]); zeros stay
    /// zero.
    pub fn relu(&self) -> ChannelBlocks {
        self.map(crate::kernels::relu)
    }

    /// `f` of every float, borders included: for functions with `f(0) = 0` only.
    fn map(&self, f: impl Fn(f32) -> f32 + Sync + Send) -> ChannelBlocks {
        let mut out = self.clone();
        par_chunks_dispatch(&mut out.data, |_, chunk| {
            for v in chunk {
                *v = f(*v);
            }
        });
        out
    }

    /// `self + other`, elementwise.
    ///
    /// # Panics
    ///
    /// If the two differ in shape or border.
    pub fn add(&self, other: &ChannelBlocks) -> ChannelBlocks {
        if (self.shape, self.halo) != (other.shape, other.halo) {
            contract_violation(
                "ChannelBlocks::add",
                "both operands must have the same shape and border",
                format_args!(
                    "{} with border {}, {} with border {}",
                    shape_str(&self.shape),
                    self.halo,
                    shape_str(&other.shape),
                    other.halo
                ),
            );
        }
        let mut out = self.clone();
        let rhs = &other.data;
        par_chunks_dispatch(&mut out.data, |start, chunk| {
            for (a, &b) in chunk.iter_mut().zip(&rhs[start..]) {
                *a += b;
            }
        });
        out
    }

    /// Batch normalisation with given statistics, per channel `c`: `(x − mean[c]) · inv_std[c]
    /// · scale[c] + shift[c]`, in that order of operations (as the NCHW op, so the two agree to
    /// the bit). The border stays zero.
    ///
    /// # Panics
    ///
    /// If a slice does not hold one value per channel.
    pub fn normalize(
        &self,
        mean: &[f32],
        inv_std: &[f32],
        scale: &[f32],
        shift: &[f32],
    ) -> ChannelBlocks {
        let channels = self.shape[1];
        if [mean, inv_std, scale, shift]
            .iter()
            .any(|s| s.len() != channels)
        {
            contract_violation(
                "ChannelBlocks::normalize",
                "mean, inv_std, scale and shift must hold one value per channel",
                format_args!(
                    "{} channels; {}, {}, {} and {} values",
                    channels,
                    mean.len(),
                    inv_std.len(),
                    scale.len(),
                    shift.len()
                ),
            );
        }
        // Per block, the 16 lanes of each parameter; zero past the channels, where x is zero
        // too, so those lanes stay zero.
        let lanes = |values: &[f32]| {
            let mut padded = vec![0.0; blocks_of(channels) * LANES];
            padded[..channels].copy_from_slice(values);
            padded
        };
        let (mean, inv_std, scale, shift) =
            (lanes(mean), lanes(inv_std), lanes(scale), lanes(shift));
        let mut out = ChannelBlocks::zeros(self.shape, self.halo);
        let [_, _, h, w] = self.shape;
        let (halo, [_, width]) = (self.halo, self.padded());
        let block = block_len(self.shape, halo);
        let blocks = blocks_of(channels);
        let src = &self.data;
        let run = |(index, out): (usize, &mut [f32])| {
            let cb = index % blocks;
            let at = cb * LANES..(cb + 1) * LANES;
            let (m, inv, g, b) = (
                &mean[at.clone()],
                &inv_std[at.clone()],
                &scale[at.clone()],
                &shift[at],
            );
            let x = &src[index * block..(index + 1) * block];
            for y in halo..halo + h {
                let row = (y * width + halo) * LANES..(y * width + halo + w) * LANES;
                let (out, x) = (&mut out[row.clone()], &x[row]);
                for (o, x) in out.chunks_exact_mut(LANES).zip(x.chunks_exact(LANES)) {
                    for l in 0..LANES {
                        o[l] = (x[l] - m[l]) * inv[l] * g[l] + b[l];
                    }
                }
            }
        };
        let images = out.images_mut();
        let parallel = images.len() >= 4 * block;
        for_each_chunk(images, block.max(1), parallel, run);
        out
    }
}

/// Writes zeros to the border of every block of one image of `shape` with a border of `halo`,
/// and to the lanes past the channels of its last block: the floats no kernel computes.
fn zero_outside_channels(image: &mut [MaybeUninit<f32>], shape: [usize; 4], halo: usize) {
    let [_, channels, h, w] = shape;
    let width = w + 2 * halo;
    let row = width * LANES;
    let zero = |run: &mut [MaybeUninit<f32>]| run.fill(MaybeUninit::new(0.0));
    // Channels in the last block, if it is partial.
    let partial = channels % LANES;
    let blocks = image.chunks_exact_mut(block_len(shape, halo));
    let last = blocks.len().saturating_sub(1);
    for (b, block) in blocks.enumerate() {
        let (top, rest) = block.split_at_mut(halo * row);
        let (inside, bottom) = rest.split_at_mut(h * row);
        zero(top);
        zero(bottom);
        for line in inside.chunks_exact_mut(row) {
            zero(&mut line[..halo * LANES]);
            zero(&mut line[(halo + w) * LANES..]);
            if b == last && partial != 0 {
                let pixels = &mut line[halo * LANES..(halo + w) * LANES];
                pixels
                    .chunks_exact_mut(LANES)
                    .for_each(|pixel| zero(&mut pixel[partial..]));
            }
        }
    }
}

/// Blocks of [`BLOCK_CHANNELS`] for `channels`.
fn blocks_of(channels: usize) -> usize {
    channels.div_ceil(LANES)
}

/// Floats of one block of `shape`'s images with a border of `halo`.
fn block_len(shape: [usize; 4], halo: usize) -> usize {
    (shape[2] + 2 * halo) * (shape[3] + 2 * halo) * LANES
}

/// Runs `f` on each chunk of `len` floats of `data` (the last may be shorter) with its index:
/// over the threads if `parallel` and called outside a split (a single image; a batch already
/// has an image per thread), otherwise in order on this thread.
pub(crate) fn for_each_chunk(
    data: &mut [f32],
    len: usize,
    parallel: bool,
    f: impl Fn((usize, &mut [f32])) + Sync + Send,
) {
    if parallel && !inside_split() && rayon::current_num_threads() > 1 {
        data.par_chunks_mut(len).enumerate().for_each(f);
    } else {
        data.chunks_mut(len).enumerate().for_each(f);
    }
}

/// Copies planes `[channels, H, W]` into padded channel blocks `[blocks][PH][PW][LANES]`: plane
/// pixel `(y, x)` at `(before[0] + y, before[1] + x)`. The border, the channels past `channels`
/// and the room after the blocks are zero. The blocks split over the threads when called
/// outside a split (a single image: its copy was a tenth of a stride-2 layer's forward).
pub(crate) fn fill_blocks(
    x: &[f32],
    channels: usize,
    size: [usize; 2],
    before: [usize; 2],
    padded: [usize; 2],
    image: &mut [f32],
) {
    let blocks = blocks_of(channels);
    let block_len = padded[0] * padded[1] * LANES;
    let plane = size[0] * size[1];
    assert!(x.len() >= channels * plane && image.len() >= blocks * block_len);
    let (filled, rest) = image.split_at_mut(blocks * block_len);
    rest.fill(0.0);
    let fill = |(cb, block): (usize, &mut [f32])| {
        let first = cb * LANES;
        let count = LANES.min(channels - first);
        let planes = &x[first * plane..(first + count) * plane];
        if level() == Level::Avx512 {
            with_vector(FillBlock {
                planes,
                size,
                before,
                padded,
                block,
            })
        } else {
            fill_block_scalar(planes, size, before, padded, block)
        }
    };
    for_each_chunk(filled, block_len.max(1), blocks > 1, fill);
}

/// [`FillBlock`] a float at a time, for CPUs whose vectors are not 16 lanes wide.
fn fill_block_scalar(
    planes: &[f32],
    [h, w]: [usize; 2],
    [top, left]: [usize; 2],
    [_, width]: [usize; 2],
    block: &mut [f32],
) {
    block.fill(0.0);
    for (c, plane) in planes.chunks_exact((h * w).max(1)).enumerate() {
        for (y, row) in plane.chunks_exact(w.max(1)).enumerate() {
            for (x, &v) in row.iter().enumerate() {
                block[((top + y) * width + left + x) * LANES + c] = v;
            }
        }
    }
}

/// One block of [`fill_blocks`]: up to [`LANES`] planes, a transposed 16 x 16 block at a time.
struct FillBlock<'a> {
    planes: &'a [f32],
    /// `[H, W]`.
    size: [usize; 2],
    /// Rows above and columns left of the planes in the block.
    before: [usize; 2],
    /// `[PH, PW]`.
    padded: [usize; 2],
    block: &'a mut [f32],
}

impl VectorKernel for FillBlock<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let FillBlock {
            planes,
            size: [h, w],
            before: [top, left],
            padded: [height, width],
            block,
        } = self;
        assert_eq!(V::LANES, LANES);
        let rows = planes.len() / (h * w).max(1);
        assert!(top + h <= height && left + w <= width && rows <= LANES);
        let row_len = width * LANES;
        assert_eq!(block.len(), height * row_len);
        block[..top * row_len].fill(0.0);
        block[(top + h) * row_len..].fill(0.0);
        for y in 0..h {
            let row = &mut block[(top + y) * row_len..(top + y + 1) * row_len];
            row[..left * LANES].fill(0.0);
            row[(left + w) * LANES..].fill(0.0);
            let dst = row[left * LANES..(left + w) * LANES].as_mut_ptr();
            for x0 in (0..w).step_by(LANES) {
                let count = LANES.min(w - x0);
                // SAFETY: `with_vector` runs this with a type the CPU supports. Row `r < rows`
                // reads `count` floats of plane `r` from column `x0` of row `y`, inside
                // `planes` (`x0 + count <= w`); column `m < count` writes the `LANES` floats of
                // pixel `x0 + m < w`, inside the row's unpadded part.
                unsafe {
                    transpose_block::<V>(
                        rows,
                        count,
                        LANES,
                        |r| planes[r * h * w + y * w + x0..].as_ptr(),
                        |m| dst.add((x0 + m) * LANES),
                    );
                }
            }
        }
    }
}

/// The inverse of [`fill_blocks`]: the blocks `[planes / LANES][H + 2·halo][W + 2·halo][LANES]`
/// (the last block's lanes past `planes` ignored) into `planes` `[planes, H, W]`.
pub(crate) fn blocks_to_planes(blocks: &[f32], size: [usize; 2], halo: usize, planes: &mut [f32]) {
    let [h, w] = size;
    blocks_to_plane_rows(blocks, size, halo, [h * w, 0], planes);
}

/// [`blocks_to_planes`] into rows `first_row..first_row + H` of planes of `plane` floats
/// (`planes` `[planes.len() / plane, plane]`, rows of `W`): for kernels that finish their
/// output a few rows at a time and transpose them while they are in cache.
pub(crate) fn blocks_to_plane_rows(
    blocks: &[f32],
    size: [usize; 2],
    halo: usize,
    [plane, first_row]: [usize; 2],
    planes: &mut [f32],
) {
    let [h, w] = size;
    assert!(
        (first_row + h) * w <= plane,
        "blocks_to_plane_rows: rows {first_row}..{} of {w} floats past a plane of {plane}",
        first_row + h
    );
    if level() == Level::Avx512 {
        with_vector(ToPlanes {
            blocks,
            size,
            halo,
            plane,
            first_row,
            planes,
        })
    } else {
        let width = w + 2 * halo;
        let block = (h + 2 * halo) * width * LANES;
        for (c, plane) in planes.chunks_exact_mut(plane.max(1)).enumerate() {
            let (cb, lane) = (c / LANES, c % LANES);
            let rows = plane[first_row * w..].chunks_exact_mut(w.max(1)).take(h);
            for (y, row) in rows.enumerate() {
                for (x, v) in row.iter_mut().enumerate() {
                    *v = blocks[cb * block + ((halo + y) * width + halo + x) * LANES + lane];
                }
            }
        }
    }
}

/// [`blocks_to_plane_rows`] a transposed 16 x 16 block at a time.
struct ToPlanes<'a> {
    blocks: &'a [f32],
    /// `[H, W]`.
    size: [usize; 2],
    halo: usize,
    /// Floats of a destination plane.
    plane: usize,
    /// The destination row of the blocks' first row.
    first_row: usize,
    planes: &'a mut [f32],
}

impl VectorKernel for ToPlanes<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let ToPlanes {
            blocks,
            size: [h, w],
            halo,
            plane,
            first_row,
            planes,
        } = self;
        assert_eq!(V::LANES, LANES);
        if h * w == 0 {
            return;
        }
        let width = w + 2 * halo;
        let block_len = (h + 2 * halo) * width * LANES;
        let channels = planes.len() / plane;
        assert!(blocks.len() >= channels.div_ceil(LANES) * block_len);
        assert!((first_row + h) * w <= plane);
        let dst = planes.as_mut_ptr();
        for cb in 0..channels.div_ceil(LANES) {
            let count = LANES.min(channels - cb * LANES);
            let block = &blocks[cb * block_len..(cb + 1) * block_len];
            for y in 0..h {
                let row = (halo + y) * width + halo;
                // Groups of pixels that end on the block's first plane's line boundaries (and every
                // plane's, when a plane is whole lines): a row of 56 floats starts mid-line in
                // every other row, where groups from its start stored every vector across two
                // lines (ResNet's 64 → 128 stride-2 backward-data +4.5%, alternated in one
                // process on an Intel Xeon model 207).
                let first = dst.wrapping_add(cb * LANES * plane + (first_row + y) * w);
                for (x0, pixels) in line_groups(first, w) {
                    // SAFETY: `with_vector` runs this with a type the CPU supports. Row `r <
                    // pixels` reads `count <= LANES` floats of pixel `(y, x0 + r)` in the block;
                    // column `m < count` writes `pixels` floats of plane `cb·LANES + m <
                    // channels` from row `first_row + y` at `x0`, `x0 + pixels <= w`, inside
                    // the plane (`(first_row + h)·w <= plane`, asserted).
                    unsafe {
                        transpose_block::<V>(
                            pixels,
                            count,
                            pixels,
                            |r| block[(row + x0 + r) * LANES..].as_ptr(),
                            |m| dst.add((cb * LANES + m) * plane + (first_row + y) * w + x0),
                        );
                    }
                }
            }
        }
    }
}

/// The runs of up to [`LANES`] floats a row of `len` floats from `first` is stored in: the
/// floats before `first`'s next line boundary, then whole lines (a vector of [`LANES`] floats is
/// one 64-byte line), then the rest, as `(offset, count)`.
fn line_groups(first: *const f32, len: usize) -> impl Iterator<Item = (usize, usize)> {
    let misaligned = first as usize / size_of::<f32>() % LANES;
    let head = ((LANES - misaligned) % LANES).min(len);
    let rest = (head..len)
        .step_by(LANES)
        .map(move |x0| (x0, LANES.min(len - x0)));
    (head > 0).then_some((0, head)).into_iter().chain(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planes(shape: [usize; 4]) -> Vec<f32> {
        (0..shape.iter().product::<usize>())
            .map(|i| (i as f32 * 0.37).sin())
            .collect()
    }

    #[test]
    fn planes_round_trip_with_zero_border_and_lanes() {
        for (shape, halo) in [([2, 20, 3, 5], 1), ([1, 16, 1, 1], 0), ([3, 33, 17, 18], 2)] {
            let x = planes(shape);
            let blocks = ChannelBlocks::from_planes(&x, shape, halo);
            assert_eq!(blocks.to_planes(), x);
            let [n, c, h, w] = shape;
            let [ph, pw] = blocks.padded();
            let data = blocks.as_slice();
            for n in 0..n {
                for cb in 0..c.div_ceil(16) {
                    for y in 0..ph {
                        for col in 0..pw {
                            for l in 0..16 {
                                let ch = cb * 16 + l;
                                let inside = (halo..halo + h).contains(&y)
                                    && (halo..halo + w).contains(&col)
                                    && ch < c;
                                let at =
                                    n * blocks.image_len() + ((cb * ph + y) * pw + col) * 16 + l;
                                let expected = if inside {
                                    x[((n * c + ch) * h + y - halo) * w + col - halo]
                                } else {
                                    0.0
                                };
                                assert_eq!(data[at], expected, "{shape:?} at {n} {ch} {y} {col}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn line_groups_cover_the_row_and_start_on_lines_after_the_first() {
        let line = vec![0.0f32; 4 * LANES];
        let aligned = line.as_ptr().wrapping_add(line.as_ptr().align_offset(64));
        for misaligned in 0..LANES {
            let first = aligned.wrapping_add(misaligned);
            for len in 0..3 * LANES + 3 {
                let groups: Vec<_> = line_groups(first, len).collect();
                let mut next = 0;
                for (i, &(x0, count)) in groups.iter().enumerate() {
                    assert!(x0 == next && (1..=LANES).contains(&count), "{groups:?}");
                    assert!(i == 0 || (misaligned + x0) % LANES == 0, "{groups:?}");
                    next += count;
                }
                assert_eq!(next, len, "{misaligned} {len}: {groups:?}");
            }
        }
    }

    #[test]
    fn rows_land_in_their_rows_of_taller_planes() {
        // 20 channels (a partial block) of 5 x 19 planes (a partial 16-pixel run), two rows at
        // a time from blocks with a border.
        let ([c, h, w], halo) = ([20, 5, 19], 1);
        let x = planes([1, c, h, w]);
        let mut out = vec![f32::NAN; x.len()];
        for first_row in (0..h).step_by(2) {
            let rows = 2.min(h - first_row);
            let band: Vec<f32> = (0..c)
                .flat_map(|ch| &x[(ch * h + first_row) * w..][..rows * w])
                .copied()
                .collect();
            let blocks = ChannelBlocks::from_planes(&band, [1, c, rows, w], halo);
            let plane = [h * w, first_row];
            blocks_to_plane_rows(blocks.as_slice(), [rows, w], halo, plane, &mut out);
        }
        assert_eq!(out, x);
    }

    #[test]
    fn elementwise_ops_match_the_planes() {
        let shape = [2, 20, 4, 3];
        let (a, b) = (
            planes(shape),
            planes(shape)
                .iter()
                .map(|v| v * 2.0 - 0.5)
                .collect::<Vec<_>>(),
        );
        let (ba, bb) = (
            ChannelBlocks::from_planes(&a, shape, 1),
            ChannelBlocks::from_planes(&b, shape, 1),
        );
        let relu: Vec<f32> = a.iter().map(|&v| crate::kernels::relu(v)).collect();
        assert_eq!(ba.relu().to_planes(), relu);
        let sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(ba.add(&bb).to_planes(), sum);
        let c = shape[1];
        let p = |k: f32| (0..c).map(|i| k + i as f32 * 0.1).collect::<Vec<f32>>();
        let (mean, inv, g, s) = (p(0.1), p(1.0), p(-0.5), p(0.3));
        let normalized = ba.normalize(&mean, &inv, &g, &s);
        let plane = shape[2] * shape[3];
        let expected: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = i / plane % c;
                (v - mean[ch]) * inv[ch] * g[ch] + s[ch]
            })
            .collect();
        assert_eq!(normalized.to_planes(), expected);
        // The border and the lanes past the channels stay zero.
        let again = ChannelBlocks::from_planes(&expected, shape, 1);
        assert_eq!(normalized, again);
    }
}
