//! The filter gradient of Winograd's F(2x2, 3x3) (`winograd.rs`), channels innermost.
//!
//! `∂W = Gᵀ·[Σ_t (A·∂Y_t·Aᵀ) ⊙ (Bᵀ·d_t·B)]·G`: for each of the 16 points `ξ` of the transformed
//! domain, a product `∂U[ξ] = Σ_t ∂M[ξ, t]ᵀ · V[ξ, t]`, `[O, K] x [K, C]` over the `K` tiles `t`
//! of a chunk of images. Laid out tiles innermost (as the forward keeps `V`), that product is a
//! reduction along rows, with a horizontal sum per output and per call: it pays only over many
//! images at once, whose transforms then go to L3 and back. Laid out channels innermost, it is
//! a plain register-tile GEMM (output channels broadcast from `∂M`, vectors of input channels
//! from `V`, summed over the tiles into accumulators that stay in memory between chunks): no
//! horizontal sums, so a chunk is one image or a block of its tile rows, whose transforms stay
//! in L2 while the products read them.
//!
//! Each block of tile rows is copied channels innermost (input padded, gradient zero past the
//! output), then transformed a vector of channels at a time. Channels are padded to a multiple
//! of [`CHANNEL_BLOCK`] with zeros. Non-finite values are left to the caller, which redoes a
//! gradient whose sum is not finite by other means: the transforms would turn an infinity into
//! NaN (`∞ − ∞`) where a direct sum keeps it.

use std::ops::Range;

use super::parallel::valid_columns;
use super::shape::Conv2dShape;
use super::winograd::POINTS;
use crate::kernels::gemm::Caches;
use crate::kernels::scratch::with_scratch_parts;
use crate::kernels::vector::{Vector, VectorKernel, transpose_block, with_vector};

/// Channels are padded to a multiple of this: the widest vector, and two of AVX2's.
const CHANNEL_BLOCK: usize = 16;

/// The sizes of one filter gradient: image, tiles, blocks and chunks.
struct Layout {
    channels: usize,
    outputs: usize,
    /// `channels` and `outputs` rounded up to [`CHANNEL_BLOCK`].
    channels_padded: usize,
    outputs_padded: usize,
    in_height: usize,
    in_width: usize,
    top: usize,
    left: usize,
    out_height: usize,
    out_width: usize,
    /// Rows and columns of 2x2 output tiles.
    tile_rows: usize,
    tile_columns: usize,
    /// Tile rows transformed at a time (all of them for small images).
    block_rows: usize,
    /// Tiles the transform buffers hold: whole blocks, images side by side.
    capacity: usize,
}

impl Layout {
    fn new(s: &Conv2dShape) -> Layout {
        let (channels, outputs) = (s.in_channels, s.out_channels);
        let channels_padded = channels.next_multiple_of(CHANNEL_BLOCK);
        let outputs_padded = outputs.next_multiple_of(CHANNEL_BLOCK);
        let tile_rows = s.out_height.div_ceil(2);
        let tile_columns = s.out_width.div_ceil(2);
        // A chunk's transforms get half of L2; the accumulators and the copies share the rest.
        let per_tile = POINTS * (channels_padded + outputs_padded) * size_of::<f32>();
        let target = (Caches::of_this_cpu().l2 / 2 / per_tile).max(tile_columns);
        let block_rows = (target / tile_columns).clamp(1, tile_rows);
        let block_tiles = block_rows * tile_columns;
        Layout {
            channels,
            outputs,
            channels_padded,
            outputs_padded,
            in_height: s.in_height,
            in_width: s.in_width,
            top: s.spec.padding.top,
            left: s.spec.padding.left,
            out_height: s.out_height,
            out_width: s.out_width,
            tile_rows,
            tile_columns,
            block_rows,
            capacity: (target / block_tiles).max(1) * block_tiles,
        }
    }

    /// Padded input rows and columns a block reads: its tiles' 4x4 windows, 2 apart.
    fn window(&self, block_rows: usize) -> [usize; 2] {
        [2 * block_rows + 2, 2 * self.tile_columns + 2]
    }
}

/// Tiles per chunk below which the products cannot pay for reading and writing their
/// accumulators (`16·O·C` floats, in memory between chunks): each accumulator takes `2·K`
/// flops a chunk of `K` tiles. Against the shifted kernel's filter gradient, 8 images on two
/// threads of a Zen 4 (1 MiB L2): 512 channels at 7x7 (chunks of 8 tiles, 16 MB of
/// accumulators) 0.67x; 256 at 14x14 (14 tiles) 1.37x; 128 at 28x28 (28 tiles) 1.6x.
const MIN_CHUNK_TILES: usize = 12;

/// Whether this path pays for `s` on this CPU: whether its chunks, sized to the L2 cache, hold
/// [`MIN_CHUNK_TILES`] tiles.
pub(super) fn pays(s: &Conv2dShape) -> bool {
    Layout::new(s).capacity >= MIN_CHUNK_TILES
}

/// Adds `Σ_{n in images} ∂L/∂W` of image `n` into `grad_weight` (`[O, C, 3, 3]`) for a 3x3,
/// stride-1, undilated, ungrouped convolution. Any input or output gradient holding an infinity
/// or NaN gives a non-finite sum (the caller checks and redoes it without this path).
pub(super) fn accumulate_filter_gradient(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    images: Range<usize>,
    grad_weight: &mut [f32],
) {
    let l = Layout::new(s);
    assert!(
        s.kernel_height == 3
            && s.kernel_width == 3
            && s.spec.stride == [1, 1]
            && s.spec.dilation == [1, 1]
            && s.spec.groups == 1,
        "winograd: filter gradient of {s:?}"
    );
    assert_eq!(
        grad_weight.len(),
        l.outputs * l.channels * 9,
        "winograd: filter gradient"
    );
    let image_in = l.channels * l.in_height * l.in_width;
    let image_out = l.outputs * l.out_height * l.out_width;
    let [window_rows, window_columns] = l.window(l.block_rows);
    let lens = [
        window_rows * window_columns * l.channels_padded,
        2 * l.block_rows * 2 * l.tile_columns * l.outputs_padded,
        POINTS * l.capacity * l.channels_padded,
        POINTS * l.capacity * l.outputs_padded,
        POINTS * l.outputs * l.channels_padded,
    ];
    with_scratch_parts(lens, |[window, gradient, v, dm, sums]| {
        // The first batch of products writes every sum, the others add to them: no zero-fill
        // of the sums first (16·O·C' floats, 16 MiB for a 512-channel layer, 1.2% of a
        // ResNet-18 training step).
        let mut accumulate = false;
        let mut tiles = 0;
        for n in images {
            let x = &input[n * image_in..(n + 1) * image_in];
            let gy = &grad_output[n * image_out..(n + 1) * image_out];
            for first in (0..l.tile_rows).step_by(l.block_rows) {
                let rows = l.block_rows.min(l.tile_rows - first);
                if tiles + rows * l.tile_columns > l.capacity {
                    with_vector(Products {
                        l: &l,
                        v,
                        dm,
                        tiles,
                        accumulate,
                        sums,
                    });
                    (accumulate, tiles) = (true, 0);
                }
                let [window_rows, window_columns] = l.window(rows);
                let x_plane = [l.channels, l.in_height, l.in_width];
                let y_plane = [l.outputs, l.out_height, l.out_width];
                with_vector(ChannelsLast {
                    planes: x,
                    dims: x_plane,
                    origin: [(2 * first) as isize - l.top as isize, -(l.left as isize)],
                    size: [window_rows, window_columns],
                    stride: l.channels_padded,
                    out: window,
                });
                with_vector(ChannelsLast {
                    planes: gy,
                    dims: y_plane,
                    origin: [(2 * first) as isize, 0],
                    size: [2 * rows, 2 * l.tile_columns],
                    stride: l.outputs_padded,
                    out: gradient,
                });
                with_vector(InputTransform {
                    l: &l,
                    window,
                    rows,
                    v: &mut v[tiles * l.channels_padded..],
                });
                with_vector(GradientTransform {
                    l: &l,
                    gradient,
                    rows,
                    dm: &mut dm[tiles * l.outputs_padded..],
                });
                tiles += rows * l.tile_columns;
            }
        }
        if tiles > 0 {
            with_vector(Products {
                l: &l,
                v,
                dm,
                tiles,
                accumulate,
                sums,
            });
            accumulate = true;
        }
        if !accumulate {
            // No tiles: every sum is 0, and so is what they add.
            return;
        }
        with_vector(AddFilters {
            l: &l,
            sums,
            grad_weight,
        });
    });
}

/// `∂W += Gᵀ·∂U·G` of every (output, channel) pair from the points' sums `[16][O][C']`, into
/// the 3x3 filters `[O, C, 3, 3]`, a vector of channels at a time. (Pair by pair in f64, with
/// sixteen loads a plane apart each, it was 7% of a ResNet-18 training step on an Intel Xeon
/// model 207; in f32 each value rounds a few times instead of once, far below the rounding of
/// the sums themselves.)
struct AddFilters<'a> {
    l: &'a Layout,
    sums: &'a [f32],
    grad_weight: &'a mut [f32],
}

impl VectorKernel for AddFilters<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let AddFilters {
            l,
            sums,
            grad_weight,
        } = self;
        let (outputs, channels, padded) = (l.outputs, l.channels, l.channels_padded);
        assert!(padded.is_multiple_of(V::LANES) && channels <= padded);
        assert!(sums.len() >= POINTS * outputs * padded);
        assert_eq!(grad_weight.len(), outputs * channels * 9);
        // SAFETY: `with_vector` runs this only with a vector type the CPU supports.
        let (half, zero) = unsafe { (V::splat(0.5), V::zero()) };
        let mut taps = [[0.0f32; 16]; 9];
        // Plain loops and a function, no closures: a closure left uninlined runs without the
        // target features, each vector operation a call.
        for o in 0..outputs {
            for c in (0..channels).step_by(V::LANES) {
                let mut u = [zero; POINTS];
                for (p, u) in u.iter_mut().enumerate() {
                    // SAFETY: point `p`'s sums of output `o` hold `padded` channels, `c + LANES
                    // <= padded` of them (a multiple of `LANES`), inside `sums` (asserted).
                    *u = unsafe { V::load(sums.as_ptr().add((p * outputs + o) * padded + c)) };
                }
                // Down the columns of ∂U (three rows of four), then along the rows.
                let mut columns = [[zero; 3]; 4];
                for (j, column) in columns.iter_mut().enumerate() {
                    *column = g_transposed([u[j], u[4 + j], u[8 + j], u[12 + j]], half, zero);
                }
                for row in 0..3 {
                    let across = [
                        columns[0][row],
                        columns[1][row],
                        columns[2][row],
                        columns[3][row],
                    ];
                    let along = g_transposed(across, half, zero);
                    for (column, tap) in along.into_iter().enumerate() {
                        // SAFETY: a row of `taps` holds 16 floats, `LANES` at most.
                        unsafe { tap.store(taps[3 * row + column].as_mut_ptr()) };
                    }
                }
                let first = (o * channels + c) * 9;
                let count = V::LANES.min(channels - c);
                for (lane, filter) in grad_weight[first..first + 9 * count]
                    .chunks_exact_mut(9)
                    .enumerate()
                {
                    for (w, taps) in filter.iter_mut().zip(&taps) {
                        *w += taps[lane];
                    }
                }
            }
        }
    }
}

/// `Gᵀ = [1 ½ ½ 0; 0 ½ −½ 0; 0 ½ ½ 1]` applied to four vectors (`half` and `zero` splat). A
/// function, not a closure's body, so that it inlines with the target features.
#[inline(always)]
fn g_transposed<V: Vector>([a, b, c, d]: [V; 4], half: V, zero: V) -> [V; 3] {
    let (sum, difference) = (b.add(c), b.sub(c));
    [
        sum.mul_add(half, a),
        difference.mul_add(half, zero),
        sum.mul_add(half, d),
    ]
}

/// Copies `size[0]` rows and `size[1]` columns of the planes `[channels, height, width]`,
/// starting at plane position `origin` (negative or past the edge: zeros), into `out`
/// `[rows, columns, stride]` with the channels innermost (zeros from `channels` to `stride`, a
/// multiple of [`CHANNEL_BLOCK`]): square blocks of a vector's width transposed in registers.
struct ChannelsLast<'a> {
    planes: &'a [f32],
    dims: [usize; 3],
    origin: [isize; 2],
    size: [usize; 2],
    stride: usize,
    out: &'a mut [f32],
}

impl VectorKernel for ChannelsLast<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let ChannelsLast {
            planes,
            dims: [channels, height, width],
            origin: [top, left],
            size: [rows, columns],
            stride,
            out,
        } = self;
        let lanes = V::LANES;
        assert!(lanes <= 16 && stride.is_multiple_of(CHANNEL_BLOCK) && channels <= stride);
        assert!(planes.len() >= channels * height * width);
        let out = &mut out[..rows * columns * stride];
        out.fill(0.0);
        let (lo, hi) = valid_columns(0, columns, 1, left, width);
        for r in 0..rows {
            let h = top + r as isize;
            if h < 0 || h >= height as isize || lo == hi {
                continue;
            }
            for c in (0..channels).step_by(lanes) {
                for j in (lo..hi).step_by(lanes) {
                    let count = lanes.min(hi - j);
                    // SAFETY: `with_vector` runs this only with a vector type the CPU supports;
                    // plane row `h` of channels `c..` (< channels) holds input columns
                    // `j + left .. + count` (within `0..width`, as `valid_columns` keeps them);
                    // each store writes `lanes` floats from `(r·columns + j + m)·stride + c`,
                    // within `out` as `c + lanes <= stride`.
                    unsafe {
                        let (planes, out) = (planes.as_ptr(), out.as_mut_ptr());
                        transpose_block::<V>(
                            channels - c,
                            count,
                            lanes,
                            |k| {
                                let at = ((c + k) * height + h as usize) * width;
                                planes.add((at as isize + j as isize + left) as usize)
                            },
                            |m| out.add((r * columns + j + m) * stride + c),
                        );
                    }
                }
            }
        }
    }
}

/// `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]` applied to `(d0, d1, d2, d3)`.
#[inline(always)]
fn b_transpose<V: Vector>([d0, d1, d2, d3]: [V; 4]) -> [V; 4] {
    [d0.sub(d2), d1.add(d2), d2.sub(d1), d1.sub(d3)]
}

/// `A = [1 0; 1 1; 1 −1; 0 −1]` applied to `(e0, e1)`.
#[inline(always)]
fn a_spread<V: Vector>(e0: V, e1: V, zero: V) -> [V; 4] {
    [e0, e0.add(e1), e0.sub(e1), zero.sub(e1)]
}

/// `V[ξ, t, c] = (Bᵀ·d·B)[ξ]` for the tiles of a block (`rows` tile rows) from its window,
/// into `v[(ξ·capacity + t)·channels_padded + c]`.
struct InputTransform<'a> {
    l: &'a Layout,
    window: &'a [f32],
    rows: usize,
    v: &'a mut [f32],
}

impl VectorKernel for InputTransform<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let InputTransform { l, window, rows, v } = self;
        let stride = l.channels_padded;
        let [window_rows, columns] = l.window(rows);
        let point = l.capacity * stride;
        let tiles = rows * l.tile_columns;
        assert!(window.len() >= window_rows * columns * stride);
        assert!(v.len() >= (POINTS - 1) * point + tiles * stride);
        for t in 0..tiles {
            let (tr, tc) = (t / l.tile_columns, t % l.tile_columns);
            for c in (0..stride).step_by(V::LANES) {
                // SAFETY: `with_vector` runs this only with a vector type the CPU supports;
                // window positions (2·tr + i, 2·tc + j), i, j < 4, are within its
                // `window_rows x columns` and `c + LANES <= stride` (a multiple of every
                // width); `v` holds the 16 points of `tiles` tiles (asserted above).
                unsafe {
                    macro_rules! at {
                        ($i:expr, $j:expr) => {
                            V::load(
                                window
                                    .as_ptr()
                                    .add(((2 * tr + $i) * columns + 2 * tc + $j) * stride + c),
                            )
                        };
                    }
                    // Bᵀ·d down the columns, then ·B along the rows.
                    let mut down = [[V::zero(); 4]; 4];
                    for (j, down) in down.iter_mut().enumerate() {
                        *down = b_transpose([at!(0, j), at!(1, j), at!(2, j), at!(3, j)]);
                    }
                    let out = v.as_mut_ptr().add(t * stride + c);
                    let [d0, d1, d2, d3] = down;
                    for i in 0..4 {
                        let row = b_transpose([d0[i], d1[i], d2[i], d3[i]]);
                        for (j, value) in row.into_iter().enumerate() {
                            value.store(out.add((4 * i + j) * point));
                        }
                    }
                }
            }
        }
    }
}

/// `∂M[ξ, t, o] = (A·e·Aᵀ)[ξ]` of the 2x2 block `e` of output gradient under each tile of a
/// block, into `dm[(ξ·capacity + t)·outputs_padded + o]`.
struct GradientTransform<'a> {
    l: &'a Layout,
    gradient: &'a [f32],
    rows: usize,
    dm: &'a mut [f32],
}

impl VectorKernel for GradientTransform<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let GradientTransform {
            l,
            gradient,
            rows,
            dm,
        } = self;
        let stride = l.outputs_padded;
        let columns = 2 * l.tile_columns;
        let point = l.capacity * stride;
        let tiles = rows * l.tile_columns;
        assert!(gradient.len() >= 2 * rows * columns * stride);
        assert!(dm.len() >= (POINTS - 1) * point + tiles * stride);
        for t in 0..tiles {
            let (tr, tc) = (t / l.tile_columns, t % l.tile_columns);
            for o in (0..stride).step_by(V::LANES) {
                // SAFETY: as in `InputTransform`: positions (2·tr + i, 2·tc + j), i, j < 2, lie
                // within the `2·rows x columns` copy, `o + LANES <= stride`, and `dm` holds the
                // 16 points of `tiles` tiles (asserted above).
                unsafe {
                    let zero = V::zero();
                    macro_rules! at {
                        ($i:expr, $j:expr) => {
                            V::load(
                                gradient
                                    .as_ptr()
                                    .add(((2 * tr + $i) * columns + 2 * tc + $j) * stride + o),
                            )
                        };
                    }
                    // A·e down the columns, then ·Aᵀ along the rows.
                    let left = a_spread(at!(0, 0), at!(1, 0), zero);
                    let right = a_spread(at!(0, 1), at!(1, 1), zero);
                    let out = dm.as_mut_ptr().add(t * stride + o);
                    for i in 0..4 {
                        for (j, value) in a_spread(left[i], right[i], zero).into_iter().enumerate()
                        {
                            value.store(out.add((4 * i + j) * point));
                        }
                    }
                }
            }
        }
    }
}

/// `sums[ξ, o, c] += Σ_(t < tiles) ∂M[ξ, t, o] · V[ξ, t, c]` for `o < outputs`, every padded
/// `c`: register tiles of output rows (broadcast from `∂M`) by vectors of channels.
struct Products<'a> {
    l: &'a Layout,
    v: &'a [f32],
    dm: &'a [f32],
    tiles: usize,
    /// Whether to add to `sums` (or to write them: every one of them).
    accumulate: bool,
    sums: &'a mut [f32],
}

impl VectorKernel for Products<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        // AVX-512: 8 rows x 2 vectors (16 accumulators, 2 channel vectors, a broadcast);
        // AVX2's 16 registers: 6 rows x 2.
        if V::LANES >= 16 {
            self.points::<V, 8>()
        } else {
            self.points::<V, 6>()
        }
    }
}

impl Products<'_> {
    #[inline(always)]
    fn points<V: Vector, const ROWS: usize>(self) {
        let Products {
            l,
            v,
            dm,
            tiles,
            accumulate,
            sums,
        } = self;
        let (cs, os) = (l.channels_padded, l.outputs_padded);
        assert!(tiles <= l.capacity);
        assert!(v.len() >= POINTS * l.capacity * cs && dm.len() >= POINTS * l.capacity * os);
        assert!(sums.len() >= POINTS * l.outputs * cs);
        let vectors = cs / V::LANES;
        for p in 0..POINTS {
            for first in (0..l.outputs).step_by(ROWS) {
                let rows = ROWS.min(l.outputs - first);
                for block in (0..vectors).step_by(2) {
                    // SAFETY: `with_vector` runs this only with a vector type the CPU supports;
                    // rows `first..first + rows` of `∂M` (< outputs <= os) and channel vectors
                    // `block..block + 2` (<= vectors, or one at the end) of `V` and of `sums`, for
                    // `tiles <= capacity` tiles of point `p`, lie in the buffers (asserted above).
                    unsafe {
                        let v = v.as_ptr().add(p * l.capacity * cs + block * V::LANES);
                        let dm = dm.as_ptr().add(p * l.capacity * os + first);
                        let sums = sums
                            .as_mut_ptr()
                            .add((p * l.outputs + first) * cs + block * V::LANES);
                        macro_rules! tile {
                            ($vecs:literal) => {
                                match rows {
                                    8 => {
                                        tile::<V, 8, $vecs>(v, dm, sums, tiles, cs, os, accumulate)
                                    }
                                    7 => {
                                        tile::<V, 7, $vecs>(v, dm, sums, tiles, cs, os, accumulate)
                                    }
                                    6 => {
                                        tile::<V, 6, $vecs>(v, dm, sums, tiles, cs, os, accumulate)
                                    }
                                    5 => {
                                        tile::<V, 5, $vecs>(v, dm, sums, tiles, cs, os, accumulate)
                                    }
                                    4 => {
                                        tile::<V, 4, $vecs>(v, dm, sums, tiles, cs, os, accumulate)
                                    }
                                    3 => {
                                        tile::<V, 3, $vecs>(v, dm, sums, tiles, cs, os, accumulate)
                                    }
                                    2 => {
                                        tile::<V, 2, $vecs>(v, dm, sums, tiles, cs, os, accumulate)
                                    }
                                    _ => {
                                        tile::<V, 1, $vecs>(v, dm, sums, tiles, cs, os, accumulate)
                                    }
                                }
                            };
                        }
                        if block + 2 <= vectors {
                            tile!(2)
                        } else {
                            tile!(1)
                        }
                    }
                }
            }
        }
    }
}

/// One register tile: `ROWS` output rows by `VECS` vectors of channels, summed over `tiles`,
/// added to `sums` if `accumulate` (written over them otherwise).
///
/// # Safety
///
/// The CPU supports `V`'s instruction set; `v + t·cs` and `sums + r·cs` start `VECS` vectors,
/// `dm + t·os` starts `ROWS` floats, for `t < tiles`, `r < ROWS`.
#[inline(always)]
unsafe fn tile<V: Vector, const ROWS: usize, const VECS: usize>(
    v: *const f32,
    dm: *const f32,
    sums: *mut f32,
    tiles: usize,
    cs: usize,
    os: usize,
    accumulate: bool,
) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut acc = [[V::zero(); VECS]; ROWS];
        if accumulate {
            for (r, acc) in acc.iter_mut().enumerate() {
                for (q, a) in acc.iter_mut().enumerate() {
                    *a = V::load(sums.add(r * cs + q * V::LANES));
                }
            }
        }
        for t in 0..tiles {
            let mut x = [V::zero(); VECS];
            for (q, x) in x.iter_mut().enumerate() {
                *x = V::load(v.add(t * cs + q * V::LANES));
            }
            let w = dm.add(t * os);
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = V::splat(*w.add(r));
                for q in 0..VECS {
                    acc[q] = w.mul_add(x[q], acc[q]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (q, a) in acc.iter().enumerate() {
                a.store(sums.add(r * cs + q * V::LANES));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_copies_transpose_every_block_and_pad_with_zeros() {
        // 19 channels (a full block of 16 and a partial one), rows of 21 (one and a bit
        // vectors), a window starting above and left of the planes and reaching past them.
        let [channels, height, width] = [19, 5, 21];
        let planes: Vec<f32> = (0..channels * height * width)
            .map(|i| i as f32 + 1.0)
            .collect();
        let ([top, left], [rows, columns], stride) = ([-1, -2], [8, 26], 32);
        let mut out = vec![f32::NAN; rows * columns * stride];
        with_vector(ChannelsLast {
            planes: &planes,
            dims: [channels, height, width],
            origin: [top, left],
            size: [rows, columns],
            stride,
            out: &mut out,
        });
        for r in 0..rows {
            for j in 0..columns {
                for c in 0..stride {
                    let (h, w) = (r as isize + top, j as isize + left);
                    let inside = (0..height as isize).contains(&h)
                        && (0..width as isize).contains(&w)
                        && c < channels;
                    let want = if inside {
                        planes[(c * height + h as usize) * width + w as usize]
                    } else {
                        0.0
                    };
                    assert_eq!(out[(r * columns + j) * stride + c], want, "({r}, {j}, {c})");
                }
            }
        }
    }
}
