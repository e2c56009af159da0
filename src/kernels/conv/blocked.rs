//! The forward and backward-data with channels in the vector lanes, on channel-blocked images
//! (the layout oneDNN calls `nChw16c`), for AVX-512 CPUs. The forward is described here; the
//! backward-data, which runs the same register tile, at [`BlockedGradient`].
//!
//! Each image is copied once into blocks of one vector's width of channels, padded:
//! `[C/B][H + pads][W + pads][B]` with `B` lanes. A register tile holds `P` output pixels of one
//! row by `R` vectors of output channels. Each step loads the `R` weight vectors of one input
//! channel and tap, and multiplies them by that channel's value at each of the `P` pixels,
//! broadcast from the block. The pixels lie at constant offsets (the column stride is a
//! compile-time constant), so a stride costs nothing.
//!
//! The shifted kernel keeps pixels in the lanes instead, so a stride-2 convolution there needs a
//! phase split of every plane and a wide grid with a discarded column per row. On ResNet's
//! downsampling (64 → 128 channels, 56 → 28) those were 7% of the forward on a Zen 4.
//! A 7x7 plane fills 7 of a tile's 16 lanes per row; here 7 pixels fill a tile exactly.
//!
//! The finished tile is transposed back to NCHW as it is stored, after bias and activation.
//! The copy in and the transposes out are the price: on ResNet's downsampling the copy took
//! 4.5% of the forward, the weights' packing 1% and the tile's loop most of the rest, at about
//! the FMA peak.

use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::OnceLock;

use super::epilogue::Epilogue;
use super::shape::Conv2dShape;
#[cfg(doc)]
use crate::kernels::blocks::ChannelBlocks;
use crate::kernels::blocks::{blocks_to_plane_rows, fill_blocks};
use crate::kernels::fill::filled_by_chunks;
use crate::kernels::scratch::{LINE, with_scratch};
use crate::kernels::vector::{Vector, VectorKernel, transpose_block, with_vector};
use crate::util::simd::{Level, level, prefetch_line_l2};
use crate::util::threads::inside_split;
use rayon::prelude::*;

/// The environment variable that decides where this path computes the forward and the
/// backward-data: `1` wherever it fits ([`Blocked::fits`]), `0` nowhere (the shifted kernel
/// instead). The two round differently: for runs that must repeat another's bits, and for
/// tests of either path.
pub const BLOCKED_VARIABLE: &str = "STRIATE_CONV_BLOCKED";

/// [`BLOCKED_VARIABLE`]'s value, if set to one.
fn forced_choice() -> Option<bool> {
    static FORCED: OnceLock<Option<bool>> = OnceLock::new();
    *FORCED.get_or_init(|| {
        let value = std::env::var(BLOCKED_VARIABLE).ok()?;
        match value.trim() {
            "0" => Some(false),
            "1" => Some(true),
            other => {
                eprintln!("striate: {BLOCKED_VARIABLE}={other} is neither 0 nor 1; ignored");
                None
            }
        }
    })
}

/// The lanes of the vectors this path runs on: AVX-512's.
const LANES: usize = 16;

/// Floats in a tile's staging buffer: `P · R · LANES` of the largest tile.
const STAGING: usize = 28 * LANES;

/// The sizes of one convolution's blocked forward: the blocked image and the register tile.
#[derive(Clone, Copy, Debug)]
pub(super) struct Blocked {
    /// Blocks of [`LANES`] input channels (the last padded with zero channels).
    in_blocks: usize,
    /// Rows of a padded block.
    height: usize,
    /// Pixels in a row of a padded block.
    width: usize,
    /// Output pixels per tile (`P`).
    pixels: usize,
    /// Vectors of output channels per tile (`R`).
    vectors: usize,
}

impl Blocked {
    /// Whether this path can compute the forward of `s` on this CPU: AVX-512, one group, a
    /// column stride of 1 or 2, and at least a vector of channels on each side (fewer would
    /// leave lanes of every step empty).
    pub fn fits(s: &Conv2dShape) -> bool {
        level() == Level::Avx512
            && s.spec.groups == 1
            && matches!(s.spec.stride[1], 1 | 2)
            && s.in_channels >= LANES
            && s.out_channels >= LANES
    }

    /// Whether this path computes the forward of `s` (where Winograd does not): wherever it
    /// fits, unless the kernel is smaller than the stride (a 1x1 convolution at stride 2 reads
    /// a quarter of the input, and the blocked copy would transpose all of it: 0.93x the
    /// shifted kernel on ResNet's 1x1 downsampling). [`BLOCKED_VARIABLE`] overrides the choice.
    ///
    /// Against the shifted kernel in one binary, alternated (Zen 4, 2 threads, batch 8,
    /// GFLOP/s): ResNet's 3x3 stride-2 downsampling 64 → 128 channels 206 vs 190, 128 → 256
    /// 196 vs 173, 256 → 512 (7x7 outputs) 179 vs 151; 5x5 at stride 1 with 64 channels on
    /// 28x28 216 vs 195. A single image, its weights prepared once: ResNet-18's inference
    /// 17.3-17.9 ms against 18.6-18.8.
    pub fn chosen(s: &Conv2dShape) -> bool {
        let [sh, sw] = s.spec.stride;
        let reads_every_pixel = s.kernel_height >= sh && s.kernel_width >= sw;
        Blocked::fits(s) && forced_choice().unwrap_or(reads_every_pixel)
    }

    /// Whether the forward of a pointwise convolution (1x1, stride 1, unpadded), whose NCHW
    /// planes a GEMM reads in place, runs on channel blocks when its input is in them: tiles
    /// of one tap, each pixel's channels broadcast from its block, the pixels in sequence.
    /// [`BLOCKED_VARIABLE`]`=0` turns it off.
    ///
    /// On ResNet's and MobileNet's 256 → 64 at 56x56 (batch 8, 2 threads, Intel Xeon of
    /// family 6 model 207, best of 4 alternations): 296 GFLOP/s against the GEMM's 266 and
    /// oneDNN's 303 on channels-last; one thread 141-144 against 127-134 and 130-137. From
    /// planes it measured slower than the GEMM (the copy into blocks), so planes stay there.
    pub fn reads_pointwise_blocks(s: &Conv2dShape) -> bool {
        s.is_pointwise() && Blocked::fits(s) && forced_choice() != Some(false)
    }

    /// The blocked image's sizes and the register tile for `s`.
    pub fn new(s: &Conv2dShape) -> Blocked {
        let p = s.spec.padding;
        // Tiles of 14 pixels by 32 channels, or on rows shorter than 14 (a 7x7 plane) 7 by 64:
        // 28 sums either way, of AVX-512's 32 registers.
        let (pixels, vectors) = if s.out_width >= 14 { (14, 2) } else { (7, 4) };
        Blocked {
            in_blocks: s.in_channels.div_ceil(LANES),
            height: s.in_height + p.top + p.bottom,
            width: s.in_width + p.left + p.right,
            pixels,
            vectors,
        }
    }

    /// How many images of `s`'s batch one call of [`forward_images`] takes: where the weights
    /// do not stay in L2 from one image to the next, a group of images shares each pass of them
    /// ([`Passes`]); see [`images_per_call`].
    pub fn images_per_call(&self, s: &Conv2dShape) -> usize {
        images_per_call(s, self.packed_len(s), self.image_len(s))
    }

    /// The path and its register tile, for the log of kernel choices.
    pub fn describe(&self) -> String {
        let (pixels, channels) = (self.pixels, self.tile_channels());
        format!("channel blocks ({pixels} pixels x {channels} channels tiles)")
    }

    /// The offset of each tap `(kh, kw)` in a padded block, from its window's first pixel.
    fn taps(&self, s: &Conv2dShape) -> Vec<usize> {
        let [dh, dw] = s.spec.dilation;
        let row_len = self.width * LANES;
        (0..s.kernel_height)
            .flat_map(|kh| (0..s.kernel_width).map(move |kw| kh * dh * row_len + kw * dw * LANES))
            .collect()
    }

    /// Floats in one padded block of channels.
    fn block_len(&self) -> usize {
        self.height * self.width * LANES
    }

    /// Floats of an image's blocked copy: the blocks, then room for the last tile's pixels past
    /// the end of a row (computed, never stored).
    fn image_len(&self, s: &Conv2dShape) -> usize {
        self.in_blocks * self.block_len() + self.pixels * s.spec.stride[1] * LANES
    }

    /// Output channels per tile.
    pub fn tile_channels(&self) -> usize {
        self.vectors * LANES
    }

    /// Floats of the packed weights, [`Blocked::pack`]'s length.
    pub fn packed_len(&self, s: &Conv2dShape) -> usize {
        s.out_channels.div_ceil(self.tile_channels()) * self.weight_block_len(s)
    }

    /// Floats of the packed weights of one tile's output channels.
    fn weight_block_len(&self, s: &Conv2dShape) -> usize {
        self.in_blocks * s.kernel_height * s.kernel_width * LANES * self.tile_channels()
    }

    /// The weights `[O, C, KH, KW]` packed for the tiles: per block of [`Blocked::tile_channels`]
    /// output channels, `[C/B][KH][KW][B][R·B]` (the order the tile reads them), zero for the
    /// channels past `O` and `C`.
    pub fn pack(&self, weight: &[f32], s: &Conv2dShape) -> Vec<f32> {
        let (c_in, taps) = (s.in_channels, s.kernel_height * s.kernel_width);
        let width = self.tile_channels();
        let block_len = self.weight_block_len(s);
        let fill = |ob: usize, block: &mut [f32]| {
            let first = ob * width;
            with_vector(PackBlock {
                weight: &weight[first * c_in * taps..],
                outputs: width.min(s.out_channels - first),
                depth: c_in * taps,
                taps,
                width,
                block,
            })
        };
        packed_by_chunks(self.packed_len(s), block_len, fill)
    }
}

/// The packed weights, `len` floats in chunks of `chunk_len` (a tile's), chunk `i` being
/// `fill(i, chunk)` applied to a zeroed chunk: each zeroed by the thread that fills it, just
/// before (a zero-fill of the whole buffer first was 4.6% of the forward of ResNet's 256 →
/// 512 channels, whose weights are packed anew at every training step), split over the
/// threads when large and called outside a split.
fn packed_by_chunks(
    len: usize,
    chunk_len: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    assert!(chunk_len > 0 && len.is_multiple_of(chunk_len));
    let parallel = len >= super::shifted::PARALLEL_PACK_MIN && !inside_split();
    filled_by_chunks(chunk_len, len / chunk_len, parallel, fill)
}

/// One block of [`Blocked::pack`]: the `outputs` rows of `weight` (`depth = C·KH·KW` floats
/// each) transposed into `block`, `[C/B][KH·KW][B][width]`, a 16 x 16 block at a time (the
/// rows are read in order; a float at a time, the scattered writes made a single image's pack
/// as slow as its products).
struct PackBlock<'a> {
    weight: &'a [f32],
    outputs: usize,
    depth: usize,
    taps: usize,
    width: usize,
    block: &'a mut [f32],
}

impl VectorKernel for PackBlock<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let PackBlock {
            weight,
            outputs,
            depth,
            taps,
            width,
            block,
        } = self;
        assert_eq!(V::LANES, LANES);
        assert!(outputs <= width && weight.len() >= outputs * depth);
        assert!(block.len() >= depth.div_ceil(taps * LANES) * taps * LANES * width);
        let (src, dst) = (weight.as_ptr(), block.as_mut_ptr());
        for j in (0..outputs).step_by(LANES) {
            // Where column `k = c·T + t` (input channel `c`, tap `t`) of the rows goes:
            // `((c/B·T + t)·B + c%B)·width`, followed along `k` without dividing.
            let (mut c, mut t) = (0, 0);
            for k in (0..depth).step_by(LANES) {
                let count = (depth - k).min(LANES);
                let mut places = [0usize; LANES];
                for place in &mut places[..count] {
                    *place = ((c / LANES * taps + t) * LANES + c % LANES) * width + j;
                    t += 1;
                    if t == taps {
                        (c, t) = (c + 1, 0);
                    }
                }
                // SAFETY: `with_vector` runs this with a type the CPU supports. Row `r` reads
                // `count` floats of output `j + r < outputs` from `k + count <= depth`
                // (asserted `weight` holds them); column `m` writes `LANES` floats from
                // `places[m]`, whose output `j + LANES <= width` (width is a multiple of
                // `LANES`), inside the asserted block.
                unsafe {
                    transpose_block::<V>(
                        (outputs - j).min(LANES),
                        count,
                        LANES,
                        |r| src.add((j + r) * depth + k),
                        |m| dst.add(places[m]),
                    );
                }
            }
        }
    }
}

/// How many images of `s`'s batch a blocked pass takes at a time, given the floats of its packed
/// weights and of one image's blocked copy: one, unless the weights do not stay in half of L2
/// from one image to the next (a 3x3 layer of 256 → 512 channels packs 4.7 MB); then a group
/// that shares them while they are in cache, as many images as give every thread a group and
/// whose copies fit in half of L2.
fn images_per_call(s: &Conv2dShape, packed_len: usize, image_len: usize) -> usize {
    let budget = crate::kernels::gemm::Caches::of_this_cpu().l2 / 2;
    let bytes = |floats: usize| floats * size_of::<f32>();
    if bytes(packed_len) <= budget {
        return 1;
    }
    let threads = rayon::current_num_threads();
    (1..=s.batch)
        .filter(|&k| {
            s.batch.is_multiple_of(k) && s.batch / k >= threads && bytes(k * image_len) <= budget
        })
        .max()
        .unwrap_or(1)
}

/// Each image's part (`part` floats of each image's `image_len`) of each block of channels, by
/// block: the output of one task of a blocked pass over a group of images.
fn by_block<T>(data: &mut [T], images: usize, image_len: usize, part: usize) -> Vec<Vec<&mut [T]>> {
    assert_eq!(data.len(), images * image_len);
    let mut parts: Vec<Vec<&mut [T]>> = Vec::new();
    for image in data.chunks_exact_mut(image_len) {
        for (block, part) in image.chunks_mut(part).enumerate() {
            if block == parts.len() {
                parts.push(Vec::with_capacity(images));
            }
            parts[block].push(part);
        }
    }
    parts
}

/// `f(block, part)` for each block's part, split over the threads when called outside a split
/// (a single image or group).
fn for_each_block<T: Send>(parts: Vec<T>, f: impl Fn(usize, T) + Sync + Send) {
    if !inside_split() && rayon::current_num_threads() > 1 {
        parts
            .into_par_iter()
            .enumerate()
            .for_each(|(block, part)| f(block, part));
    } else {
        for (block, part) in parts.into_iter().enumerate() {
            f(block, part);
        }
    }
}

/// Where the blocked forward reads a run of consecutive images.
pub(crate) enum Source<'a> {
    /// Their planes `[n, C, H, W]`, copied into padded blocks first.
    Planes(&'a [f32]),
    /// Their blocks with a border of `halo` ([`ChannelBlocks`]' layout), followed by whatever
    /// comes after them in the batch and the slack: the tiles read past a row's end. Read in
    /// place when the border covers the padding, otherwise copied into padded blocks first.
    Blocks { data: &'a [f32], halo: usize },
}

/// Where the blocked forward writes a run of consecutive images.
pub(crate) enum Sink<'a> {
    /// Their planes `[n, O, OH, OW]`, transposed from each tile.
    Planes(&'a mut [f32]),
    /// Their blocks with a border of `halo`, uninitialised until written: the tiles write every
    /// pixel inside the border of every block, each lane of a channel `< O`, and nothing else
    /// (the border and the lanes past `O` are the caller's to zero, as
    /// [`ChannelBlocks::written_by_images`] does).
    Blocks {
        data: &'a mut [MaybeUninit<f32>],
        halo: usize,
    },
}

/// The forward of `images` consecutive images with `packed` from [`Blocked::pack`]: the images
/// in padded blocks (copied unless `source` already is), then the tiles of each block of output
/// channels, split over the threads when called outside a split (a single image or group).
pub(crate) fn forward_images(
    images: usize,
    source: Source<'_>,
    packed: &[f32],
    s: &Conv2dShape,
    blocked: &Blocked,
    epilogue: Epilogue<'_>,
    sink: Sink<'_>,
) {
    assert_eq!(
        level(),
        Level::Avx512,
        "conv2d blocked forward: AVX-512 only"
    );
    assert_eq!(packed.len(), blocked.packed_len(s));
    let p = s.spec.padding;
    let covers = |halo: usize| halo >= p.top.max(p.bottom).max(p.left).max(p.right);
    match source {
        Source::Blocks { data, halo } if covers(halo) => {
            // The blocks as they are: a block's rows and pixels are the image's with the border,
            // and the first window starts `halo − pad` pixels in.
            let geometry = Blocked {
                height: s.in_height + 2 * halo,
                width: s.in_width + 2 * halo,
                ..*blocked
            };
            let origin = ((halo - p.top) * geometry.width + halo - p.left) * LANES;
            let stride = blocked.in_blocks * geometry.block_len();
            let inputs = Inputs {
                data: &data[origin..],
                stride,
                images,
            };
            tiles_of_images(inputs, packed, s, &geometry, epilogue, sink);
        }
        source => with_scratch(images * blocked.image_len(s), |copies| {
            let (before, padded) = ([p.top, p.left], [blocked.height, blocked.width]);
            let size = [s.in_height, s.in_width];
            let stride = blocked.image_len(s);
            for (n, image) in copies.chunks_exact_mut(stride).enumerate() {
                match source {
                    Source::Planes(x) => {
                        let len = s.in_channels * s.in_plane();
                        assert_eq!(x.len(), images * len);
                        let x = &x[n * len..(n + 1) * len];
                        fill_blocks(x, s.in_channels, size, before, padded, image);
                    }
                    Source::Blocks { data, halo } => {
                        let len = blocked.in_blocks
                            * (s.in_height + 2 * halo)
                            * (s.in_width + 2 * halo)
                            * LANES;
                        let data = &data[n * len..];
                        repad_blocks(data, blocked.in_blocks, size, halo, before, padded, image)
                    }
                }
            }
            let inputs = Inputs {
                data: copies,
                stride,
                images,
            };
            tiles_of_images(inputs, packed, s, blocked, epilogue, sink);
        }),
    }
}

/// The padded blocks of a run of images as the tiles read them: image `n`'s first window at
/// `data[n · stride..]`.
#[derive(Clone, Copy)]
struct Inputs<'a> {
    data: &'a [f32],
    stride: usize,
    images: usize,
}

/// Copies `blocks` blocks of `size` pixels with a border of `halo` into blocks of `padded`
/// size, pixel `(y, x)` at `(before[0] + y, before[1] + x)`, zero around.
fn repad_blocks(
    source: &[f32],
    blocks: usize,
    [h, w]: [usize; 2],
    halo: usize,
    before: [usize; 2],
    padded: [usize; 2],
    image: &mut [f32],
) {
    let from_width = w + 2 * halo;
    let from_len = (h + 2 * halo) * from_width * LANES;
    let to_len = padded[0] * padded[1] * LANES;
    image.fill(0.0);
    for cb in 0..blocks {
        for y in 0..h {
            let from = cb * from_len + ((halo + y) * from_width + halo) * LANES;
            let to = cb * to_len + ((before[0] + y) * padded[1] + before[1]) * LANES;
            image[to..to + w * LANES].copy_from_slice(&source[from..from + w * LANES]);
        }
    }
}

/// The tiles of every block of output channels of a run of images in padded blocks of
/// `blocked`'s geometry.
fn tiles_of_images(
    inputs: Inputs<'_>,
    packed: &[f32],
    s: &Conv2dShape,
    blocked: &Blocked,
    epilogue: Epilogue<'_>,
    sink: Sink<'_>,
) {
    let channels = blocked.tile_channels();
    let taps = blocked.taps(s);
    let len = blocked.weight_block_len(s);
    let run = |ob: usize, out: TileOut<'_>| {
        let first = ob * channels;
        let count = channels.min(s.out_channels - first);
        with_vector(Tiles {
            inputs,
            weights: &packed[ob * len..(ob + 1) * len],
            s,
            blocked,
            taps: &taps,
            epilogue: epilogue.rows(first, count),
            channels: count,
            out,
        })
    };
    // Output channels outer: a block's weights stay in L2 while its rows go by. (Rows outer,
    // the input's rows in cache across the blocks, measured level on S4.)
    let images = inputs.images;
    let parts = match sink {
        Sink::Planes(out) => {
            let plane = s.out_plane();
            let parts = by_block(out, images, s.out_channels * plane, channels * plane);
            parts.into_iter().map(TileOut::Planes).collect::<Vec<_>>()
        }
        Sink::Blocks { data, halo } => {
            let block = (s.out_height + 2 * halo) * (s.out_width + 2 * halo) * LANES;
            let image_len = s.out_channels.div_ceil(LANES) * block;
            let parts = by_block(data, images, image_len, blocked.vectors * block);
            let blocks = |data| TileOut::Blocks { data, halo };
            parts.into_iter().map(blocks).collect::<Vec<_>>()
        }
    };
    for_each_block(parts, run);
}

/// Where [`Tiles`] store: one tile of output channels' part of a [`Sink`], image by image.
enum TileOut<'a> {
    /// `[channels, OH, OW]` of each image.
    Planes(Vec<&'a mut [f32]>),
    /// `[channels / LANES][OH + 2·halo][OW + 2·halo][LANES]` of each image, uninitialised until
    /// the tiles write it.
    Blocks {
        data: Vec<&'a mut [MaybeUninit<f32>]>,
        halo: usize,
    },
}

/// The tiles of one block of output channels: every row of output pixels of every image,
/// [`Blocked`]'s `P` pixels at a time.
struct Tiles<'a> {
    inputs: Inputs<'a>,
    weights: &'a [f32],
    s: &'a Conv2dShape,
    blocked: &'a Blocked,
    /// [`Blocked::taps`].
    taps: &'a [usize],
    epilogue: Epilogue<'a>,
    /// Output channels of the tile, at most `R·LANES`.
    channels: usize,
    out: TileOut<'a>,
}

impl VectorKernel for Tiles<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        if V::LANES != LANES {
            unreachable!("conv2d blocked forward: vectors of {} lanes", V::LANES);
        }
        match (self.blocked.pixels, self.s.spec.stride[1]) {
            (14, 1) => self.rows::<V, 14, 2, 1>(),
            (14, 2) => self.rows::<V, 14, 2, 2>(),
            (7, 1) => self.rows::<V, 7, 4, 1>(),
            (7, 2) => self.rows::<V, 7, 4, 2>(),
            (pixels, stride) => unreachable!("no tile of {pixels} pixels at stride {stride}"),
        }
    }
}

impl Tiles<'_> {
    #[inline(always)]
    fn rows<V: Vector, const P: usize, const R: usize, const SW: usize>(self) {
        let Tiles {
            inputs,
            weights,
            s,
            blocked,
            taps,
            epilogue,
            channels,
            out,
        } = self;
        assert!(P <= LANES && P * R * LANES <= STAGING && R == blocked.vectors);
        let (oh_count, ow_count) = (s.out_height, s.out_width);
        let plane = oh_count * ow_count;
        assert!(channels <= R * LANES);
        // Each image's part of the output; as blocks, output vector `r` and pixel `(oh, ow)`
        // go to the floats `(r·OBH + halo + oh)·OBW + halo + ow` pixels in.
        let (outs, blocks): (Vec<*mut f32>, _) = match out {
            TileOut::Planes(outs) => {
                assert!(outs.iter().all(|out| out.len() == channels * plane));
                (outs.into_iter().map(|out| out.as_mut_ptr()).collect(), None)
            }
            TileOut::Blocks { data, halo } => {
                let size = [oh_count + 2 * halo, ow_count + 2 * halo];
                let len = channels.div_ceil(LANES) * size[0] * size[1] * LANES;
                assert!(data.iter().all(|out| out.len() == len));
                let outs = data
                    .into_iter()
                    .map(|out| out.as_mut_ptr().cast())
                    .collect();
                (outs, Some((halo, size)))
            }
        };
        assert_eq!(outs.len(), inputs.images);
        let row_len = blocked.width * LANES;
        // The last float any tile reads, pixels past the row included.
        let last_row = (oh_count - 1) * s.spec.stride[0] * row_len;
        let last_pixel = (ow_count.div_ceil(P) * P - 1) * SW * LANES;
        let reach = (blocked.in_blocks - 1) * blocked.block_len()
            + last_row
            + taps.last().copied().unwrap_or(0)
            + last_pixel
            + LANES;
        let image = inputs.data;
        assert!(
            inputs.images > 0 && (inputs.images - 1) * inputs.stride + reach <= image.len(),
            "conv2d blocked forward: tile reads past the image"
        );
        assert_eq!(
            weights.len(),
            blocked.in_blocks * taps.len() * LANES * R * LANES
        );
        let mut bias = [0.0f32; STAGING];
        if let Some(b) = epilogue.bias {
            bias[..channels].copy_from_slice(b);
        }
        let mut staging = [0.0f32; STAGING];
        let mut store = |n: usize, oh: usize, ow: usize, sums: [[V; R]; P]| {
            let pixels = P.min(ow_count - ow);
            let out = outs[n];
            if let Some((halo, [_, width])) = blocks {
                for (p, sums) in sums.iter().enumerate().take(pixels) {
                    for (r, &sum) in sums.iter().enumerate() {
                        let count = channels.saturating_sub(r * LANES).min(LANES);
                        if count == 0 {
                            break;
                        }
                        let at = ((r * (oh_count + 2 * halo) + halo + oh) * width + halo + ow + p)
                            * LANES;
                        // SAFETY: `with_vector` runs this with a type the CPU supports; block
                        // `r` holds a channel (`count > 0`), so it is in `out`, and pixel
                        // `(oh, ow + p)` with `ow + p < OW` is inside it; a write through a
                        // pointer, so the place may be uninitialised ([`Sink::Blocks`]). The
                        // lanes past `count` (past `O`) are not written: the caller zeroed them.
                        // Every tile of every block of channels stores all its pixels here, so
                        // the last pass writes each pixel inside the border.
                        unsafe {
                            let y = epilogue.activate(sum.add(V::load(bias[r * LANES..].as_ptr())));
                            y.store_first(out.add(at), count);
                        }
                    }
                }
                return;
            }
            for (p, sums) in sums.iter().enumerate() {
                for (r, &sum) in sums.iter().enumerate() {
                    let at = (p * R + r) * LANES;
                    // SAFETY: as above; `at + LANES <= P·R·LANES <= STAGING` (asserted).
                    unsafe {
                        let y = epilogue.activate(sum.add(V::load(bias[r * LANES..].as_ptr())));
                        y.store(staging[at..].as_mut_ptr());
                    }
                }
            }
            for r in 0..R {
                let count = channels.saturating_sub(r * LANES).min(LANES);
                if count == 0 {
                    break;
                }
                let staged = staging.as_ptr();
                // SAFETY: as above. Row `p < P` reads `count` floats of the staged tile;
                // column `m < count` writes `pixels` floats of channel `r·LANES + m <
                // channels` from pixel `(oh, ow)`: `ow + pixels <= OW`, inside its plane.
                unsafe {
                    transpose_block::<V>(
                        P,
                        count,
                        pixels,
                        |p| staged.add((p * R + r) * LANES),
                        |m| out.add((r * LANES + m) * plane + oh * ow_count + ow),
                    );
                }
            }
        };
        // The depth in passes whose weights stay in L1 while every tile takes them (see
        // [`Passes`]); the sums of the tiles carried from one pass to the next in `partial`.
        let passes = Passes::new(blocked.in_blocks, taps.len(), R);
        let tiles_per_row = ow_count.div_ceil(P);
        let tiles_per_image = oh_count * tiles_per_row;
        // SAFETY: `with_vector` runs this with a type the CPU supports.
        let zero = unsafe { [[V::zero(); R]; P] };
        let mut partial = if passes.count() > 1 {
            vec![zero; inputs.images * tiles_per_image]
        } else {
            Vec::new()
        };
        for (i, (blocks_of_pass, taps_of_pass)) in passes.iter().enumerate() {
            let last = i + 1 == passes.count();
            let x_start = blocks_of_pass.start * blocked.block_len();
            let w_start = passes.weights(i, taps.len(), R).start;
            // The next pass's weights into L2 while this pass runs, a share by each tile: on
            // one image the tiles of a pass are few (7 rows of a 7x7 layer), and the first
            // waited on each weight from L3 or memory. Alternated in one process (Intel Xeon
            // model 207, 2 threads, one image): four 512-channel 3x3 layers at 7x7 +12-13%,
            // ResNet-18 +3-4%; 256 → 512 at stride 2 on 14x14, batch 8, +5%. The tile issues
            // its share one line per step ([`FarLines`]): all of it before the tile (41 lines
            // for a 512-channel layer on one image) held a tenth of ResNet-18's single-image
            // samples on those prefetches, most likely each waiting for a free fill buffer
            // (this VM has no counters to show it). One per step measured (Intel Xeon model
            // 167, 2 threads, alternated in one process): ResNet-18
            // on one image +4.7%, +6.4% and +6.8%, 512 → 512 at 7x7 on one image +5% and +10%,
            // 256 → 512 at stride 2 +5.4% and +6.5%; S4 (a few lines per tile) and 128 → 256
            // at stride 2 level (S4 0.96-1.06 over five runs).
            let next_weights = if last {
                0..0
            } else {
                passes.weights(i + 1, taps.len(), R)
            };
            let mut fetched = next_weights.start;
            let share = next_weights
                .len()
                .div_ceil(LINE)
                .div_ceil(inputs.images * tiles_per_image);
            // Images inside the pass: its weights serve every image's tiles while in L1.
            for (n, oh) in (0..inputs.images).flat_map(|n| (0..oh_count).map(move |oh| (n, oh))) {
                let row = n * inputs.stride + oh * s.spec.stride[0] * row_len;
                for ow in (0..ow_count).step_by(P) {
                    let tile_index = n * tiles_per_image + oh * tiles_per_row + ow / P;
                    let carried = partial.get_mut(tile_index);
                    let start = carried.as_deref().copied().unwrap_or(zero);
                    let far = FarLines {
                        first: weights.as_ptr().wrapping_add(fetched),
                        lines: share.min(next_weights.end.saturating_sub(fetched).div_ceil(LINE)),
                    };
                    fetched += far.lines * LINE;
                    // SAFETY: `with_vector` runs this with a type the CPU supports; every read
                    // of the tile is below `n·stride + reach <= image.len()` (asserted for the
                    // last image: a pass reads a subset of the blocks and taps) and of the weights within their asserted
                    // length (`w_start` is where the pass's first block and tap begin in the
                    // `[C/B][T][B][R·B]` order).
                    let sums = unsafe {
                        tile::<V, P, R, SW, false>(
                            image[row + ow * SW * LANES + x_start..].as_ptr(),
                            weights[w_start..].as_ptr(),
                            blocks_of_pass.len(),
                            blocked.block_len(),
                            &taps[taps_of_pass.clone()],
                            start,
                            far,
                        )
                    };
                    match carried {
                        Some(carried) if !last => *carried = sums,
                        _ => store(n, oh, ow, sums),
                    }
                }
            }
        }
    }
}

/// The order in which the blocked forward's tiles go through the depth (blocks of input
/// channels by taps): in passes whose weights fit in half the L1 cache, each pass over every
/// tile of a block of output channels before the next, the tiles' sums carried between passes
/// (in the same order of additions, so the results are the same bits). Read in one pass, a tile
/// takes each weight vector from L2 for `P` multiply-adds: 18 bytes a cycle at two per cycle
/// for 7-pixel tiles of 64 channels. A pass is a run of whole blocks (all their taps) or, where
/// one block's taps do not fit, a run of one block's taps.
///
/// Against one pass, alternated in one process (Intel Xeon model 207, 2 threads, medians):
/// three 512-channel 3x3 layers at 7x7 on one image 174-179 against 164-166 GFLOP/s (one
/// thread 74-106 against 68-102), ResNet's 64 → 128 stride-2 downsampling at batch 8 on
/// channel blocks 189-191 against 184-187, ResNet-18's single image 21.5 against 22.0 ms.
#[derive(Clone, Debug)]
struct Passes {
    passes: Vec<(Range<usize>, Range<usize>)>,
}

impl Passes {
    fn new(in_blocks: usize, taps: usize, vectors: usize) -> Passes {
        let tap_bytes = LANES * vectors * LANES * size_of::<f32>();
        let budget = crate::kernels::gemm::Caches::of_this_cpu().l1d / 2;
        let whole = 0..in_blocks;
        if in_blocks * taps * tap_bytes <= budget {
            return Passes {
                passes: vec![(whole, 0..taps)],
            };
        }
        let per_block = taps * tap_bytes;
        let passes = if per_block <= budget {
            let run = budget / per_block;
            (0..in_blocks)
                .step_by(run)
                .map(|first| (first..(first + run).min(in_blocks), 0..taps))
                .collect()
        } else {
            let run = (budget / tap_bytes).max(1);
            (0..in_blocks)
                .flat_map(|block| {
                    (0..taps)
                        .step_by(run)
                        .map(move |first| (block..block + 1, first..(first + run).min(taps)))
                })
                .collect()
        };
        Passes { passes }
    }

    fn count(&self) -> usize {
        self.passes.len()
    }

    /// Where pass `i`'s weights lie in the `[C/B][T][B][R·B]` order of a tile of `vectors`
    /// vectors over `taps` taps: its blocks' taps, one run.
    fn weights(&self, i: usize, taps: usize, vectors: usize) -> Range<usize> {
        let (blocks, taps_of_pass) = &self.passes[i];
        let tap_len = LANES * vectors * LANES;
        (blocks.start * taps + taps_of_pass.start) * tap_len
            ..((blocks.end - 1) * taps + taps_of_pass.end) * tap_len
    }

    fn iter(&self) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + '_ {
        self.passes.iter().cloned()
    }
}

/// The sums of one tile: `P` pixels, `SW` apart, by `R` vectors of output channels, over every
/// block of input channels and tap: `sums[p][r] = Σ_{cb, t, c} x[cb·block + taps[t] + p·SW·B +
/// c] · w[((cb·T + t)·B + c)·R·B + r·B ..]`. With `FETCH_WEIGHTS`, each step also prefetches
/// the weights [`WEIGHT_STEPS_AHEAD`] steps on, for callers whose weights come from L2.
///
/// # Safety
///
/// The CPU supports `V`'s instruction set, whose vectors have [`LANES`] lanes; every `x` and `w`
/// read above is in bounds.
#[inline(always)]
unsafe fn tile<
    V: Vector,
    const P: usize,
    const R: usize,
    const SW: usize,
    const FETCH_WEIGHTS: bool,
>(
    x: *const f32,
    w: *const f32,
    in_blocks: usize,
    block: usize,
    taps: &[usize],
    start: [[V; R]; P],
    far: FarLines,
) -> [[V; R]; P] {
    // SAFETY: the caller's contract.
    unsafe {
        let mut sums = start;
        let mut w = w;
        let mut far_line = 0;
        for cb in 0..in_blocks {
            let x_block = x.add(cb * block);
            for (t, &tap) in taps.iter().enumerate() {
                let x = x_block.add(tap);
                // The pixels of the next tap (or the next block's first) into L1 while this
                // one runs, one line per step over the first P steps: the 14 lines a tap
                // reads are new, and a step's 28 multiply-adds wait on its broadcasts. On
                // ResNet's downsampling (Zen 4, one thread) 106-109 GFLOP/s against 98-104.
                let next = if t + 1 < taps.len() {
                    x_block.add(taps[t + 1])
                } else {
                    x_block.add(block + taps[0])
                };
                for c in 0..LANES {
                    if c < P {
                        crate::util::simd::prefetch_line(next.add(c * SW * LANES));
                    }
                    if far_line < far.lines {
                        prefetch_line_l2(far.first.wrapping_add(far_line * LINE));
                        far_line += 1;
                    }
                    if FETCH_WEIGHTS {
                        for r in 0..R {
                            // A hint: the pointer is formed, never read.
                            let ahead = w.wrapping_add((WEIGHT_STEPS_AHEAD * R + r) * LANES);
                            crate::util::simd::prefetch_line(ahead);
                        }
                    }
                    let weights: [V; R] = std::array::from_fn(|r| V::load(w.add(r * LANES)));
                    for (p, sums) in sums.iter_mut().enumerate() {
                        let value = V::splat(*x.add(p * SW * LANES + c));
                        for (sum, &weight) in sums.iter_mut().zip(&weights) {
                            *sum = value.mul_add(weight, *sum);
                        }
                    }
                    w = w.add(R * LANES);
                }
            }
        }
        sums
    }
}

/// Lines a tile fetches into L2 for a later pass, one per step from its first, so that they
/// are spread over its work rather than queued at once: `lines` lines from `first` on (a
/// hint: the lines need not be readable).
#[derive(Clone, Copy)]
struct FarLines {
    first: *const f32,
    lines: usize,
}

impl FarLines {
    const NONE: FarLines = FarLines {
        first: std::ptr::null(),
        lines: 0,
    };
}

/// How many steps ahead a tile whose weights come from L2 prefetches them (the backward-data,
/// whose weights of a class of taps are read once per tile, up to 64 KiB of them for ResNet's
/// downsampling). A step is about 14 cycles of multiply-adds, and the samples of a profile sat
/// on the first multiply-adds after each weight load. Alternated in one process (Intel Xeon
/// model 207, 2 threads, batch 8, medians): ResNet's 64 → 128 stride-2 backward-data 185-228
/// against 166-221 GFLOP/s, 128 → 256 191-225 against 161-185; 4, 8 and 16 steps alike. The
/// forward's weights stay in L1 through a pass ([`Passes`]), where the prefetch measured level.
const WEIGHT_STEPS_AHEAD: usize = 8;

// ------------------------------------------------------------------------------ backward-data

/// The sizes of one convolution's backward-data on channel blocks: the output gradient copied
/// into padded blocks of [`LANES`] channels, and register tiles of `P` pixels of one column
/// phase of an input row by `R` vectors of input channels.
///
/// Input pixel `(y, x)` takes tap `(kh, kw)` from `dY[oh, ow]` where `y + pad = oh·sh + kh·dh`:
/// only the taps with `kh·dh ≡ y + pad (mod sh)` count, and along a column phase `x = px +
/// sw·p` consecutive pixels read consecutive columns of `dY`. So each phase of each row is a
/// stride-1 product over its taps, run by the forward's tile, with the weights packed per
/// class of taps (transposed: input channels in the lanes). The tiles write a row of the input
/// gradient in blocks, transposed into NCHW as soon as its phases are done, while it is in L1
/// (a whole image's blocks transposed at the end took 8% of ResNet's 64 → 128 stride-2
/// backward-data on an Intel Xeon model 207, a pass bound by the stores to the planes).
#[derive(Clone, Copy, Debug)]
pub(super) struct BlockedGradient {
    /// Blocks of [`LANES`] output channels of `dY`.
    grad_blocks: usize,
    /// Rows above and columns left of `dY` in a padded block.
    before: [usize; 2],
    /// `[rows, columns]` of a padded block.
    padded: [usize; 2],
    /// Output pixels per tile (`P`).
    pixels: usize,
    /// Vectors of input channels per tile (`R`).
    vectors: usize,
}

impl BlockedGradient {
    /// Whether this path computes the backward-data of `s` (where Winograd does not): wherever
    /// it fits ([`Blocked::fits`]), unless [`BLOCKED_VARIABLE`] says otherwise.
    ///
    /// Against the shifted kernel's gather in one binary, alternated (Zen 4, 2 threads, batch
    /// 8, GFLOP/s): ResNet's 3x3 stride-2 downsampling 64 → 128 channels 206 vs 197 and 209
    /// vs 202, 128 → 256 201 vs 180, 256 → 512 144 vs 138; its 1x1 downsampling 64 → 128 level
    /// (120 vs 117), 256 → 512 129 vs 108; 5x5 at stride 1 on 28x28 216 vs 206. A single
    /// image splits its tiles of input channels over the threads, which the gather does not:
    /// 128 → 256 at stride 2 147 vs 87, 512 channels at 7x7 87 vs 68.
    pub fn chosen(s: &Conv2dShape) -> bool {
        Blocked::fits(s) && forced_choice().unwrap_or(true)
    }

    /// The blocks' sizes and the register tile for `s`.
    pub fn new(s: &Conv2dShape) -> BlockedGradient {
        let ([sh, sw], [dh, dw]) = (s.spec.stride, s.spec.dilation);
        let p = s.spec.padding;
        // `oh = (y + top − kh·dh) / sh` reaches down to `−⌈(KH−1)·dh / sh⌉` and up to
        // `(H − 1 + top) / sh`; the rows outside `0..OH` are the zero border.
        let top = ((s.kernel_height - 1) * dh).div_ceil(sh);
        let left = ((s.kernel_width - 1) * dw).div_ceil(sw);
        let bottom = ((s.in_height - 1 + p.top) / sh + 1).saturating_sub(s.out_height);
        let right = ((s.in_width - 1 + p.left) / sw + 1).saturating_sub(s.out_width);
        let phase_width = s.in_width.div_ceil(sw);
        let (pixels, vectors) = if phase_width >= 14 { (14, 2) } else { (7, 4) };
        BlockedGradient {
            grad_blocks: s.out_channels.div_ceil(LANES),
            before: [top, left],
            padded: [top + s.out_height + bottom, left + s.out_width + right],
            pixels,
            vectors,
        }
    }

    /// The path and its register tile, for the log of kernel choices.
    pub fn describe(&self) -> String {
        let (pixels, channels) = (self.pixels, self.tile_channels());
        format!("channel blocks ({pixels} pixels x {channels} channels tiles)")
    }

    fn block_len(&self) -> usize {
        self.padded[0] * self.padded[1] * LANES
    }

    /// Floats of the blocked `dY`, with room for the last tile's pixels past a row.
    fn image_len(&self) -> usize {
        self.grad_blocks * self.block_len() + self.pixels * LANES
    }

    /// How many images of `s`'s batch one call of [`backward_data_images`] takes: a group
    /// where the weights do not stay in L2 from one image to the next, each tile of input
    /// channels taking the group's images in turn (see [`images_per_call`]).
    pub fn images_per_call(&self, s: &Conv2dShape) -> usize {
        images_per_call(s, self.packed_len(s), self.image_len())
    }

    fn tile_channels(&self) -> usize {
        self.vectors * LANES
    }

    /// Tiles of input channels.
    fn in_tiles(&self, s: &Conv2dShape) -> usize {
        s.in_channels.div_ceil(self.tile_channels())
    }

    /// The kernel rows (or columns) of each class `r < stride`: the `k` with `k·dilation ≡ r`.
    fn classes(kernel: usize, stride: usize, dilation: usize) -> Vec<Vec<usize>> {
        let mut classes = vec![Vec::new(); stride];
        for k in 0..kernel {
            classes[k * dilation % stride].push(k);
        }
        classes
    }

    /// Where each class `(ry, rx)` of taps starts in a tile's packed weights.
    fn class_offsets(&self, s: &Conv2dShape) -> Vec<usize> {
        let ([sh, sw], [dh, dw]) = (s.spec.stride, s.spec.dilation);
        let rows = Self::classes(s.kernel_height, sh, dh);
        let columns = Self::classes(s.kernel_width, sw, dw);
        let step = self.grad_blocks * LANES * self.tile_channels();
        let mut offsets = Vec::with_capacity(sh * sw + 1);
        let mut at = 0;
        for ry in &rows {
            for rx in &columns {
                offsets.push(at);
                at += ry.len() * rx.len() * step;
            }
        }
        offsets.push(at);
        offsets
    }

    /// Floats of the packed weights, [`BlockedGradient::pack`]'s length.
    pub fn packed_len(&self, s: &Conv2dShape) -> usize {
        let tile = self.grad_blocks * s.kernel_height * s.kernel_width * LANES;
        self.in_tiles(s) * tile * self.tile_channels()
    }

    /// The weights `[O, C, KH, KW]` packed for the tiles: per tile of input channels, per class
    /// `(ry, rx)`, `[O/B][taps of the class][B][R·B]`, input channels in the last axis (zero
    /// past `O` and `C`).
    pub fn pack(&self, weight: &[f32], s: &Conv2dShape) -> Vec<f32> {
        let ([sh, sw], [dh, dw]) = (s.spec.stride, s.spec.dilation);
        let (kh_count, kw_count) = (s.kernel_height, s.kernel_width);
        let taps = kh_count * kw_count;
        let (c_in, width) = (s.in_channels, self.tile_channels());
        let rows = Self::classes(kh_count, sh, dh);
        let columns = Self::classes(kw_count, sw, dw);
        let tile_len = self.packed_len(s) / self.in_tiles(s);
        // Where tap `t` of output channel `o` starts in a tile: its class's part, then
        // `[o / B][its index in the class][o % B]`, a row of `width` input channels.
        let offsets = self.class_offsets(s);
        let mut tap_start = vec![(0, (0, 0)); taps];
        for (ry, kh_class) in rows.iter().enumerate() {
            for (rx, kw_class) in columns.iter().enumerate() {
                let class_taps = kh_class.len() * kw_class.len();
                for (i, &kh) in kh_class.iter().enumerate() {
                    for (j, &kw) in kw_class.iter().enumerate() {
                        let index = i * kw_class.len() + j;
                        tap_start[kh * kw_count + kw] =
                            (offsets[ry * sw + rx], (index, class_taps));
                    }
                }
            }
        }
        let tap_start = &tap_start;
        let fill = |ct: usize, tile: &mut [f32]| {
            with_vector(PackGradientTile {
                weight,
                out_channels: s.out_channels,
                in_channels: c_in,
                taps,
                first: ct * width,
                width,
                tap_start,
                tile,
            })
        };
        packed_by_chunks(self.packed_len(s), tile_len, fill)
    }
}

/// One tile of [`BlockedGradient::pack`]: input channels `first..first + width` of every
/// output channel, each output channel's `[C, T]` rows transposed a 16 x 16 block at a time so
/// that each tap's input channels land side by side. (A float at a time, with the taps' stride
/// in the reads, the pack was a tenth of ResNet's 256 → 512 backward-data.)
struct PackGradientTile<'a> {
    weight: &'a [f32],
    out_channels: usize,
    in_channels: usize,
    taps: usize,
    first: usize,
    width: usize,
    /// Per tap: where its class starts, and its index among the class's taps and their count.
    tap_start: &'a [(usize, (usize, usize))],
    tile: &'a mut [f32],
}

impl VectorKernel for PackGradientTile<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let PackGradientTile {
            weight,
            out_channels,
            in_channels,
            taps,
            first,
            width,
            tap_start,
            tile,
        } = self;
        assert_eq!(V::LANES, LANES);
        assert!(weight.len() >= out_channels * in_channels * taps && tap_start.len() == taps);
        let channels = width.min(in_channels - first);
        let place = |o: usize, t: usize, c: usize| {
            let (class, (index, class_taps)) = tap_start[t];
            class + ((o / LANES * class_taps + index) * LANES + o % LANES) * width + c
        };
        assert!(width % LANES == 0 && out_channels > 0);
        let end = (0..taps).map(|t| place(out_channels - 1, t, width - LANES) + LANES);
        assert!(end.max().unwrap_or(0) <= tile.len());
        let (src, dst) = (weight.as_ptr(), tile.as_mut_ptr());
        for o in 0..out_channels {
            for c in (0..channels).step_by(LANES) {
                for t in (0..taps).step_by(LANES) {
                    let count = (taps - t).min(LANES);
                    // SAFETY: `with_vector` runs this with a type the CPU supports. Row `r`
                    // reads `count` taps of input channel `first + c + r < in_channels` of
                    // output `o`, inside `weight` (asserted); column `m` writes `LANES`
                    // channels from `place(o, t + m, c)`, `c + LANES <= width`: a row of the
                    // tile, inside it (the largest place is asserted).
                    unsafe {
                        transpose_block::<V>(
                            (channels - c).min(LANES),
                            count,
                            LANES,
                            |r| src.add((o * in_channels + first + c + r) * taps + t),
                            |m| dst.add(place(o, t + m, c)),
                        );
                    }
                }
            }
        }
    }
}

/// The input gradient of one image (`gy` `[O, OH, OW]` into `gx` `[C, H, W]`, overwritten)
/// with `packed` from [`BlockedGradient::pack`]: blocked copy of `gy`, then per tile of input
/// channels its tiles and their transposition into `gx`, the tiles of input channels split
/// over the threads when called outside a split (a single image).
pub(super) fn backward_data_images(
    images: usize,
    gy: &[f32],
    packed: &[f32],
    s: &Conv2dShape,
    blocked: &BlockedGradient,
    gx: &mut [f32],
) {
    assert_eq!(
        level(),
        Level::Avx512,
        "conv2d blocked backward-data: AVX-512 only"
    );
    let (plane, width) = (s.in_plane(), blocked.tile_channels());
    let (image_in, image_out) = (s.in_channels * plane, s.out_channels * s.out_plane());
    assert_eq!(gy.len(), images * image_out);
    assert_eq!(gx.len(), images * image_in);
    assert_eq!(packed.len(), blocked.packed_len(s));
    let tiles = blocked.in_tiles(s);
    let tile_len = packed.len() / tiles;
    let stride = blocked.image_len();
    with_scratch(images * stride, |copies| {
        for (gy, image) in gy
            .chunks_exact(image_out)
            .zip(copies.chunks_exact_mut(stride))
        {
            fill_blocks(
                gy,
                s.out_channels,
                [s.out_height, s.out_width],
                blocked.before,
                blocked.padded,
                image,
            );
        }
        let copies = &*copies;
        let offsets = blocked.class_offsets(s);
        // Each tile of input channels a row at a time in blocks of the task's own thread, each
        // row transposed into `gx` as it is finished, while it is in L1; the images of a group
        // one after the other, while the tile's weights are in L2.
        let parts = by_block(gx, images, image_in, width * plane);
        for_each_block(parts, |ct, gxs| {
            with_scratch(width * s.in_width, |row| {
                for (image, gx) in copies.chunks_exact(stride).zip(gxs) {
                    with_vector(GradientTiles {
                        image,
                        weights: &packed[ct * tile_len..(ct + 1) * tile_len],
                        class_offsets: &offsets,
                        s,
                        blocked,
                        row: &mut row[..width * s.in_width],
                        gx,
                    });
                }
            })
        });
    })
}

/// The tiles of one tile of input channels: every column phase of an input row into the blocks
/// `row` (`[R][W][LANES]`), then the row into its planes of `gx`, row after row.
struct GradientTiles<'a> {
    image: &'a [f32],
    weights: &'a [f32],
    class_offsets: &'a [usize],
    s: &'a Conv2dShape,
    blocked: &'a BlockedGradient,
    row: &'a mut [f32],
    /// The tile's input channels' planes, `[channels, H, W]`.
    gx: &'a mut [f32],
}

impl VectorKernel for GradientTiles<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        if V::LANES != LANES {
            unreachable!(
                "conv2d blocked backward-data: vectors of {} lanes",
                V::LANES
            );
        }
        match self.blocked.pixels {
            14 => self.rows::<V, 14, 2>(),
            7 => self.rows::<V, 7, 4>(),
            pixels => unreachable!("no tile of {pixels} pixels"),
        }
    }
}

impl GradientTiles<'_> {
    #[inline(always)]
    fn rows<V: Vector, const P: usize, const R: usize>(self) {
        let GradientTiles {
            image,
            weights,
            class_offsets,
            s,
            blocked,
            row,
            gx,
        } = self;
        assert!(P <= LANES && R == blocked.vectors);
        let (h, w) = (s.in_height, s.in_width);
        let ([sh, sw], [dh, dw]) = (s.spec.stride, s.spec.dilation);
        let (pad_top, pad_left) = (s.spec.padding.top, s.spec.padding.left);
        let [top, left] = blocked.before;
        let row_len = blocked.padded[1] * LANES;
        let block_len = blocked.block_len();
        assert_eq!(row.len(), R * w * LANES);
        assert_eq!(*class_offsets.last().unwrap(), weights.len());
        let rows = BlockedGradient::classes(s.kernel_height, sh, dh);
        let columns = BlockedGradient::classes(s.kernel_width, sw, dw);
        let mut taps = Vec::with_capacity(s.kernel_height * s.kernel_width);
        for y in 0..h {
            let out = row.as_mut_ptr();
            let ry = (y + pad_top) % sh;
            for px in 0..sw.min(w) {
                let rx = (px + pad_left) % sw;
                taps.clear();
                for &kh in &rows[ry] {
                    // Divisible by `sh`: `kh·dh ≡ y + pad_top`.
                    let oh = (y + pad_top + top * sh - kh * dh) / sh;
                    for &kw in &columns[rx] {
                        let ow = (px + pad_left + left * sw - kw * dw) / sw;
                        taps.push(oh * row_len + ow * LANES);
                    }
                }
                let class = ry * sw + rx;
                let w_class = &weights[class_offsets[class]..class_offsets[class + 1]];
                assert_eq!(
                    w_class.len(),
                    blocked.grad_blocks * taps.len() * LANES * R * LANES
                );
                let count = (w - px).div_ceil(sw);
                let farthest = taps.iter().max().copied().unwrap_or(0)
                    + (blocked.grad_blocks - 1) * block_len
                    + count.div_ceil(P) * P * LANES;
                assert!(
                    taps.is_empty() || farthest <= image.len(),
                    "conv2d blocked backward-data: tile reads past the gradient"
                );
                for first in (0..count).step_by(P) {
                    // SAFETY: `with_vector` runs this with a type the CPU supports; every read
                    // is below `farthest <= image.len()` (asserted) and within `w_class`
                    // (its length asserted).
                    let sums = unsafe {
                        tile::<V, P, R, 1, true>(
                            image[first * LANES..].as_ptr(),
                            w_class.as_ptr(),
                            blocked.grad_blocks,
                            block_len,
                            &taps,
                            [[V::zero(); R]; P],
                            FarLines::NONE,
                        )
                    };
                    for (p, sums) in sums.iter().enumerate().take(count - first) {
                        let x = px + sw * (first + p);
                        for (r, sum) in sums.iter().enumerate() {
                            // SAFETY: as above; block `r < R`, pixel `x < w`: inside `row`
                            // (its length asserted).
                            unsafe { sum.store(out.add((r * w + x) * LANES)) };
                        }
                    }
                }
            }
            // Every phase has written its columns: the row is whole.
            blocks_to_plane_rows(row, [1, w], 0, [h * w, y], gx);
        }
    }
}
