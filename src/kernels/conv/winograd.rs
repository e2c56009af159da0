//! Winograd's minimal filtering F(2x2, 3x3) and F(4x4, 3x3) for 3x3 convolutions at stride 1
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each `m x m` block
//! of outputs (`m` = 2 or 4) is computed from the `(m + 2)²` inputs under it with `(m + 2)²`
//! multiplications per channel pair instead of `9·m²`: 16 instead of 36 (2.25x fewer) for
//! F(2x2, 3x3), 36 instead of 144 (4x fewer) for F(4x4, 3x3). It serves the forward pass and the
//! backward-data (the forward of the output gradient with the filters turned round); the filter
//! gradient (the transpose, laid out channels innermost: `winograd_gradient.rs`) keeps F(2x2,
//! 3x3). [`output_tile`] picks `m` per shape.
//!
//! For tiles `t` of `m x m` outputs, channels `c` in and `o` out, and the points `ξ` of the
//! transformed `(m + 2) x (m + 2)` domain:
//! 1. **input transform**, `V[ξ, c, t] = (Bᵀ·d·B)[ξ]` of the input block `d` of tile `t`;
//! 2. **filter transform**, once per call, `U[ξ, o, c] = (G·g·Gᵀ)[ξ]` of each 3x3 filter `g`;
//! 3. **one product per point** `M[ξ] = U[ξ] · V[ξ]`, `[O, C] x [C, T]`, by the shifted kernel's
//!    register tile ([`shifted_gemm_block_batch`]) reading `V` in place;
//! 4. **output transform**, `Y = Aᵀ·M·A` per tile, with the bias and activation, written out.
//!
//! F(2x2, 3x3)'s `Bᵀ` and `Aᵀ` hold only 0 and ±1 and its `G` only 0, ±½ and 1, so its
//! transforms add and subtract. F(4x4, 3x3)'s (points 0, ±1, ±2) scale by up to 8 and its `G`
//! by sixths and twenty-fourths, so its rounding is a few times larger; both stay within the
//! tolerance the reference tests hold direct convolutions to. F(4x4, 3x3) does 1.8x fewer multiply-adds than F(2x2,
//! 3x3) for the same outputs, and its transforms move fewer values per output (2.25 points per
//! output against 4).
//!
//! Layout (written for F(2x2, 3x3); F(4x4, 3x3) is the same with four columns per tile, split
//! into four phases). The padded image is read on a grid of `2·grid_columns` columns, one tile more per
//! row than the output needs: the input transform then runs over whole flattened rows of tiles
//! with full vectors, and drops the spare tile of each row (which reads into the next row) as
//! it stores `V` ([`Vector::compress`]), so the products and the output transform see only the
//! tiles of the output. The transforms are separable and vectorised along the grid: the input's
//! column combinations (`Bᵀ·d`) over vectors of columns, its row combinations (`·B`) over
//! vectors of tiles after splitting the columns into even and odd ([`Vector::deinterleave`]),
//! and the output's the same way backwards ([`Vector::interleave`]). Large images go a block of tile
//! rows at a time, so that a block's `V` stays in L2 while the 16 products read it, and each
//! block of eight output channels is transformed out while its `M` is in L1. With fewer images
//! than threads (a single image's inference), each thread takes a run of those blocks of output
//! channels for the whole image, transforming the input itself.
//!
//! Infinities and NaN: the transforms mix the inputs of a tile, so an infinity would spill
//! into outputs a direct convolution computes finite (`∞ − ∞`). Filters with a non-finite
//! value do not use this path ([`Filter::forward`] returns `None`), and an image with one
//! reports it ([`convolve_image`] returns `false`) for the caller to compute it directly.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::parallel::parallel_over_images;
use super::shape::{Conv2dShape, ConvActivation};

use super::shifted::{self, PackedLayout, PackedRows, shifted_gemm_block_batch};
use crate::kernels::gemm::Caches;
use crate::kernels::pool::Max2x2;
use crate::kernels::scratch::with_scratch_parts;
use crate::kernels::vector::{
    Vector, VectorKernel, load, split_pairs, transpose_block, with_vector,
};

/// Points of the transformed domain per tile of F(2x2, 3x3) (4x4), the filter gradient's tiles
/// (`winograd_gradient.rs`); the forward and backward-data take theirs from [`Geometry`].
pub(super) const POINTS: usize = 16;

/// The environment variable that fixes the output tile of the forward and backward-data
/// products: `2` for F(2x2, 3x3), `4` for F(4x4, 3x3) (otherwise chosen per shape by
/// [`output_tile`]). The two round differently: for runs that must repeat another's bits.
pub const TILE_VARIABLE: &str = "STRIATE_WINOGRAD_TILE";

/// Output sides from which the forward and backward-data take F(4x4, 3x3). Against F(2x2, 3x3)
/// in one binary, call by call (Zen 4, 2 threads): 28x28 with 64 channels in and out measured
/// +22% forward and +29% backward-data, VGG's 56x56 with 256 +24% and +14%, 112x112 with 64
/// +10-40%. On small images it depends on the depth: 7x7 with 128 channels +13% forward and
/// level backward-data, but MNIST's 14x14 with 32 to 64 -11% forward and level backward-data
/// (small images go several to a product, where F(4x4, 3x3)'s 16 tiles of a 14x14 image fill the
/// 48-column register tile worse than F(2x2, 3x3)'s 49, and its 36 products a block, against 16,
/// each pay a register tile's start and end on that shallow depth); they keep F(2x2, 3x3).
const TILE_4_MIN_SIDE: usize = 28;

/// The output tile (2 or 4) of the forward and backward-data products for an output of
/// `height x width`: F(4x4, 3x3) (36 points per 16 outputs, 2.25 per output against 4) from
/// [`TILE_4_MIN_SIDE`] on both sides. [`TILE_VARIABLE`] overrides the choice.
pub(super) fn output_tile(height: usize, width: usize) -> usize {
    static FORCED: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let forced = *FORCED.get_or_init(|| {
        let value = std::env::var(TILE_VARIABLE).ok()?;
        match value.trim() {
            "2" => Some(2),
            "4" => Some(4),
            other => {
                eprintln!("striate: {TILE_VARIABLE}={other} is neither 2 nor 4; ignored");
                None
            }
        }
    });
    forced.unwrap_or(if height.min(width) >= TILE_4_MIN_SIDE {
        4
    } else {
        2
    })
}

/// Floats of slack after the work buffers that tails of vectors may touch (the widest vector).
const SLACK: usize = 16;

/// The 3x3 filters transformed, `U[ξ] = (G·g·Gᵀ)[ξ]`: one `[rows, depth]` matrix per point,
/// packed for the shifted kernel.
pub(super) struct Filter {
    points: Vec<PackedRows>,
    /// The output tile the points are for (2 or 4).
    tile: usize,
}

impl Filter {
    /// The forward's filters: rows are output channels, depth input channels. `None` if a
    /// weight (or its transform) is not finite.
    pub fn forward(weight: &[f32], s: &Conv2dShape, g: &Geometry) -> Option<Filter> {
        let c = s.in_channels;
        let taps = FilterTaps {
            weight,
            row_stride: c * 9,
            k_stride: 9,
            turned: false,
        };
        Filter::new(s.out_channels, c, g.tile, taps)
    }

    /// Backward-data's filters: rows are input channels, depth output channels, each filter
    /// turned by 180°, so that the input gradient is the forward of the output gradient.
    pub fn backward_data(weight: &[f32], s: &Conv2dShape, g: &Geometry) -> Option<Filter> {
        let c = s.in_channels;
        let taps = FilterTaps {
            weight,
            row_stride: 9,
            k_stride: c * 9,
            turned: true,
        };
        Filter::new(c, s.out_channels, g.tile, taps)
    }

    /// Transforms the filter of every (row, depth) pair (where `taps` says it lies) for output
    /// tiles of `tile` (2 or 4): point `ξ = kh'·n + kw'` of `n = tile + 2` per side.
    ///
    /// The transform writes each point's values where its packing puts them, a vector of
    /// packed positions at a time, and splits the positions over threads when called alone.
    /// Transformed into a point-major array, then packed, it was 7-8% of the samples of VGG's
    /// 56x56 forward and backward-data with F(4x4, 3x3) on two threads (Zen 4), the transform
    /// on one thread; now 3.5%, on both.
    fn new(rows: usize, depth: usize, tile: usize, taps: FilterTaps<'_>) -> Option<Filter> {
        assert!(
            rows == 0
                || depth == 0
                || (rows - 1) * taps.row_stride + (depth - 1) * taps.k_stride + 9
                    <= taps.weight.len(),
            "winograd: filters past the weights"
        );
        /// Packed values per task: below this a split costs more than it saves.
        const CHUNK: usize = 4096;
        let points = (tile + 2) * (tile + 2);
        let layout = PackedLayout::new(rows, depth);
        let len = layout.len();
        let mut packed: Vec<Vec<f32>> = (0..points).map(|_| Vec::with_capacity(len)).collect();
        // Task `c` fills positions `c·CHUNK..` of every point.
        let mut tasks: Vec<Vec<&mut [MaybeUninit<f32>]>> =
            (0..len.div_ceil(CHUNK)).map(|_| Vec::new()).collect();
        for point in &mut packed {
            let chunks = point.spare_capacity_mut()[..len].chunks_mut(CHUNK);
            for (task, chunk) in tasks.iter_mut().zip(chunks) {
                task.push(chunk);
            }
        }
        let transform = |(c, points): (usize, Vec<&mut [MaybeUninit<f32>]>)| {
            with_vector(FilterTransform {
                layout,
                first: c * CHUNK,
                tile,
                taps,
                points,
            })
        };
        let finite = if tasks.len() > 1 && !crate::util::threads::inside_split() {
            use rayon::prelude::*;
            tasks.into_par_iter().enumerate().all(transform)
        } else {
            tasks.into_iter().enumerate().all(transform)
        };
        if !finite {
            return None;
        }
        let points = packed
            .into_iter()
            .map(|mut data| {
                // SAFETY: every task ran (all returned `true`), and they wrote each of the
                // `len` positions of every point.
                unsafe { data.set_len(len) };
                PackedRows::from_packed(data, layout)
            })
            .collect();
        Some(Filter { points, tile })
    }
}

/// Where the 3x3 filter of each (row, k) pair lies: nine floats from
/// `weight[row·row_stride + k·k_stride]`, in `kh·3 + kw` order, or reversed when `turned` (the
/// filter turned by 180°).
#[derive(Clone, Copy)]
struct FilterTaps<'a> {
    weight: &'a [f32],
    row_stride: usize,
    k_stride: usize,
    turned: bool,
}

/// `U = G·g·Gᵀ` of the 3x3 filter `g` (`taps`) of each (row, k) pair that packed
/// positions `first..` hold, a vector of positions at a time, into `points[ξ]` (as many
/// positions as each holds, each written; padding rows zero). Returns whether every value is
/// finite. In f64 pair by pair, then packed from every `n²`-th value, this was 13% of VGG's
/// 256-channel 56x56 forward with F(4x4, 3x3) (Zen 4, 2 threads); in f32 the values round a
/// few times instead of once, far below Winograd's own rounding.
struct FilterTransform<'a> {
    layout: PackedLayout,
    first: usize,
    tile: usize,
    taps: FilterTaps<'a>,
    points: Vec<&'a mut [MaybeUninit<f32>]>,
}

impl VectorKernel for FilterTransform<'_> {
    type Output = bool;

    #[inline(always)]
    fn run<V: Vector>(self) -> bool {
        // G of F(2x2, 3x3), and of F(4x4, 3x3) (Lavin & Gray's, points 0, ±1, ±2, ∞).
        const G2: [[f32; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        const G4: [[f32; 3]; 6] = [
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        let FilterTransform {
            layout,
            first,
            tile,
            taps: source,
            mut points,
        } = self;
        let g: &[[f32; 3]] = if tile == 4 { &G4 } else { &G2 };
        let n = g.len();
        let len = points.first().map_or(0, |point| point.len());
        assert!(
            points.len() == n * n && points.iter().all(|point| point.len() == len),
            "winograd: filter points"
        );
        // SAFETY (the whole body): `with_vector` runs this only with a vector type the CPU
        // supports; each store writes `count <= len - at` floats from `at` of a point's `len`.
        unsafe {
            let zero = V::zero();
            let mut check = zero;
            // A vector's lanes of each tap (16: the widest vector's).
            let mut taps = [[0.0f32; 16]; 9];
            let padding = [0.0f32; 9];
            let mut walk = layout.walk_from(first);
            for at in (0..len).step_by(V::LANES) {
                let count = (len - at).min(V::LANES);
                // The nine taps of the pairs at `count` positions, a vector per tap, zero for
                // padding rows: each pair's nine floats transposed into the lanes, a block of
                // a vector's width at a time. (Written lane by lane, each vector's load waited
                // on its lanes' scalar stores: the transform was 5-6% of a ResNet-18 training
                // step on an Intel Xeon model 207.)
                let mut starts = [padding.as_ptr(); 16];
                for start in starts.iter_mut().take(count) {
                    let (row, k) = walk.element();
                    if row < layout.rows {
                        // In bounds: `Filter::new` asserted the last pair's taps are.
                        *start = source
                            .weight
                            .as_ptr()
                            .add(row * source.row_stride + k * source.k_stride);
                    }
                    walk.advance();
                }
                let tap_rows = taps.as_mut_ptr();
                for t0 in (0..9).step_by(V::LANES) {
                    // Lane `r` reads taps `t0..` of its pair (nine floats from its start, or
                    // the nine zeros); tap `t`'s row of `taps` holds 16 floats, `LANES` at most.
                    transpose_block::<V>(
                        count,
                        (9 - t0).min(V::LANES),
                        V::LANES,
                        |lane| starts[lane].add(t0),
                        |m| {
                            let t = t0 + m;
                            tap_rows.add(if source.turned { 8 - t } else { t }).cast()
                        },
                    );
                }
                let mut g_taps = [zero; 9];
                for (t, vector) in g_taps.iter_mut().enumerate() {
                    *vector = load::<V>(taps[t].as_ptr(), count);
                }
                for (row, gr) in g.iter().enumerate() {
                    // Row `row` of G·g, then its products with each row of G (·Gᵀ).
                    let mut left = [zero; 3];
                    for (col, left) in left.iter_mut().enumerate() {
                        for (a, &coefficient) in gr.iter().enumerate() {
                            *left = V::splat(coefficient).mul_add(g_taps[3 * a + col], *left);
                        }
                    }
                    for (l, gl) in g.iter().enumerate() {
                        let mut u = zero;
                        for (j, &coefficient) in gl.iter().enumerate() {
                            u = V::splat(coefficient).mul_add(left[j], u);
                        }
                        check = u.mul_add(zero, check);
                        let point = points[row * n + l].as_mut_ptr().cast::<f32>();
                        u.store_first(point.add(at), count);
                    }
                }
            }
            !check.sum().is_nan()
        }
    }
}

/// The sizes of one Winograd convolution: `depth` channels in, `rows` channels out.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    depth: usize,
    rows: usize,
    in_height: usize,
    in_width: usize,
    /// Zero padding above and to the left (below and to the right follow from the output).
    top: usize,
    left: usize,
    out_height: usize,
    out_width: usize,
    /// The side of the output tiles: 2 for F(2x2, 3x3), 4 for F(4x4, 3x3).
    tile: usize,
    /// Rows of output tiles.
    tile_rows: usize,
    /// Tiles per row of the grid: one more than the output needs (see [`Geometry::row_tiles`]).
    grid_columns: usize,
    /// Tile rows transformed and multiplied at a time.
    block_rows: usize,
    /// Images [`convolve_images`] takes at a time (a divisor of the batch).
    pub images: usize,
    /// Whether [`convolve_images`] splits an image's output channels over the threads: when
    /// the caller cannot give every thread images of its own (fewer images than threads, as in
    /// a single image's inference).
    split_channels: bool,
}

impl Geometry {
    /// The forward of `s` (3x3, stride 1, no dilation, one group).
    pub fn forward(s: &Conv2dShape) -> Geometry {
        let p = s.spec.padding;
        Geometry::new(
            [s.in_channels, s.out_channels],
            [s.in_height, s.in_width],
            [p.top, p.left],
            [s.out_height, s.out_width],
            s.batch,
        )
    }

    /// Backward-data of `s` as the forward of the output gradient: padded by `2 − padding`
    /// (the caller checked that no side is padded by more than 2).
    pub fn backward_data(s: &Conv2dShape) -> Geometry {
        let p = s.spec.padding;
        Geometry::new(
            [s.out_channels, s.in_channels],
            [s.out_height, s.out_width],
            [2 - p.top, 2 - p.left],
            [s.in_height, s.in_width],
            s.batch,
        )
    }

    fn new(
        [depth, rows]: [usize; 2],
        [in_height, in_width]: [usize; 2],
        [top, left]: [usize; 2],
        [out_height, out_width]: [usize; 2],
        batch: usize,
    ) -> Geometry {
        let tile = output_tile(out_height, out_width);
        let tile_rows = out_height.div_ceil(tile);
        let row_tiles = out_width.div_ceil(tile);
        let grid_columns = row_tiles + 1;
        // A block's transformed input gets half of L2; the other half is for the filters'
        // blocks and the products' outputs streaming past.
        let budget = Caches::of_this_cpu().l2 / 2;
        let per_tile_row = (tile + 2) * (tile + 2) * depth * row_tiles * size_of::<f32>();
        let block_rows = (budget / per_tile_row).clamp(1, tile_rows);
        // Small images side by side, so that the products' rows fill whole register tiles:
        // MNIST's 14x14 has 49 tiles, about a register tile of 48 columns: 4 images side by
        // side fill 4 of them and a sliver.
        let tiles = tile_rows * row_tiles;
        let width = shifted::tile_columns();
        let waste = |k: usize| (k * tiles).next_multiple_of(width) as f64 / (k * tiles) as f64;
        let threads = rayon::current_num_threads();
        let images = (1..=4)
            .filter(|&k| {
                k == 1
                    || (block_rows == tile_rows
                        && batch.is_multiple_of(k)
                        && batch / k >= threads
                        && k * tile_rows * per_tile_row <= budget)
            })
            .fold(1, |best, k| {
                if waste(k) < waste(best) - 0.01 {
                    k
                } else {
                    best
                }
            });
        Geometry {
            depth,
            rows,
            in_height,
            in_width,
            top,
            left,
            out_height,
            out_width,
            tile,
            tile_rows,
            grid_columns,
            block_rows,
            images,
            split_channels: threads > 1 && !parallel_over_images(batch),
        }
    }

    /// The side of the output tiles (2 or 4).
    pub fn tile(&self) -> usize {
        self.tile
    }

    /// Columns of the padded grid.
    fn width(&self) -> usize {
        self.tile * self.grid_columns
    }

    /// Points of the transformed domain per tile: `(tile + 2)²`.
    pub fn points(&self) -> usize {
        (self.tile + 2) * (self.tile + 2)
    }

    /// The name of the algorithm, for the kernels' log.
    pub fn name(&self) -> &'static str {
        if self.tile == 4 {
            "Winograd F(4x4, 3x3)"
        } else {
            "Winograd F(2x2, 3x3)"
        }
    }

    /// Tiles per row of the output, as `V` and `M` hold them: the grid's without its spare.
    fn row_tiles(&self) -> usize {
        self.grid_columns - 1
    }
}

/// Where [`convolve_images`] puts its results.
pub(super) enum Destination<'a> {
    /// The output planes, `[images, rows, out_height, out_width]`.
    Planes(&'a mut [f32]),
    /// Their 2x2 max pooling (stride 2, no padding, rounded down), `[images, rows,
    /// out_height / 2, out_width / 2]`, with the argmax of each window within its output plane
    /// in `indices` if asked: the values and indices [`max_pool_planes`] takes from the planes,
    /// bit for bit. Each 2x2 tile of outputs is one window, pooled in registers, so the planes
    /// are never written out nor read back.
    ///
    /// [`max_pool_planes`]: crate::kernels::pool::max_pool_planes
    Pooled {
        out: &'a mut [f32],
        indices: Option<&'a mut [u32]>,
    },
}

impl<'a> Destination<'a> {
    /// Floats per image.
    fn image_len(&self, g: &Geometry) -> usize {
        match self {
            Destination::Planes(_) => g.rows * g.out_height * g.out_width,
            Destination::Pooled { .. } => g.rows * (g.out_height / 2) * (g.out_width / 2),
        }
    }

    fn len(&self) -> usize {
        match self {
            Destination::Planes(out) | Destination::Pooled { out, .. } => out.len(),
        }
    }

    /// One image's destination as the destinations of its groups of `rows` output channels
    /// (the last group may be smaller).
    fn split_channels(self, g: &Geometry, rows: usize) -> Vec<Destination<'a>> {
        match self {
            Destination::Planes(out) => out
                .chunks_mut((rows * g.out_height * g.out_width).max(1))
                .map(Destination::Planes)
                .collect(),
            Destination::Pooled { out, indices } => {
                let group = (rows * (g.out_height / 2) * (g.out_width / 2)).max(1);
                match indices {
                    None => out
                        .chunks_mut(group)
                        .map(|out| Destination::Pooled { out, indices: None })
                        .collect(),
                    Some(indices) => out
                        .chunks_mut(group)
                        .zip(indices.chunks_mut(group))
                        .map(|(out, indices)| Destination::Pooled {
                            out,
                            indices: Some(indices),
                        })
                        .collect(),
                }
            }
        }
    }
}

/// Images side by side (as many as `x` holds, at most [`Geometry::images`]): `out[n, o]` =
/// `activation(Σ_c x[n, c] ⋆ g[o, c] + bias[o])` for the `rows` output planes, from the
/// `depth` input planes of each image, or their pooling ([`Destination`]). Returns `false`,
/// with the destination partly written, if an image holds an infinity or NaN, or a pooling
/// window met a NaN: the caller must then compute them another way.
pub(super) fn convolve_images(
    x: &[f32],
    filter: &Filter,
    g: &Geometry,
    bias: Option<&[f32]>,
    activation: ConvActivation,
    destination: Destination<'_>,
) -> bool {
    let image_in = g.depth * g.in_height * g.in_width;
    let image_out = destination.image_len(g);
    let images = x.len() / image_in.max(1);
    assert!(
        x.len() == images * image_in && images <= g.images,
        "winograd: input of {} floats for images of {image_in}, at most {}",
        x.len(),
        g.images
    );
    assert_eq!(destination.len(), images * image_out, "winograd: output");
    if let Destination::Pooled { out, indices } = &destination {
        assert!(
            indices
                .as_ref()
                .is_none_or(|indices| indices.len() == out.len()),
            "winograd: one index per pooled output"
        );
    }
    assert!(
        filter.tile == g.tile && filter.points.len() == g.points(),
        "winograd: a filter for tiles of {}, a geometry for tiles of {}",
        filter.tile,
        g.tile
    );
    let blocks = filter.points[0].blocks();
    assert_eq!(blocks, g.rows.div_ceil(filter.points[0].block_rows()));
    if images == 1 && g.split_channels && blocks > 1 {
        // One image on several threads: each takes a run of blocks of output channels, their
        // planes and their bias, and transforms the whole input itself (in parallel with the
        // others: no thread waits on a shared transform).
        let block_rows = filter.points[0].block_rows();
        let per_part = blocks.div_ceil(rayon::current_num_threads().min(blocks));
        let parts = destination.split_channels(g, per_part * block_rows);
        return parts
            .into_par_iter()
            .enumerate()
            .map(|(part, destination)| {
                let run = part * per_part..((part + 1) * per_part).min(blocks);
                let rows = run.start * block_rows..(run.end * block_rows).min(g.rows);
                let bias = bias.map(|bias| &bias[rows]);
                convolve_blocks(x, filter, g, run, bias, activation, destination)
            })
            .collect::<Vec<bool>>()
            .into_iter()
            .all(|finite| finite);
    }
    convolve_blocks(x, filter, g, 0..blocks, bias, activation, destination)
}

/// [`convolve_images`] for the output channels of the filter's blocks `blocks`, whose planes (or
/// pooled planes) `destination` holds for each image and whose bias `bias` holds.
fn convolve_blocks(
    x: &[f32],
    filter: &Filter,
    g: &Geometry,
    blocks: Range<usize>,
    bias: Option<&[f32]>,
    activation: ConvActivation,
    mut destination: Destination<'_>,
) -> bool {
    let image_in = g.depth * g.in_height * g.in_width;
    let images = x.len() / image_in.max(1);
    let image_out = destination.len() / images.max(1);
    let points = g.points();
    let block_rows = filter.points[0].block_rows();
    let first_row = blocks.start * block_rows;
    let rows_here = (blocks.end * block_rows).min(g.rows) - first_row;
    assert!(
        bias.is_none_or(|bias| bias.len() == rows_here),
        "winograd: a bias for {rows_here} output channels"
    );
    let wp = g.width();
    let grid_tiles = g.block_rows * g.grid_columns;
    let most_tiles = g.block_rows * g.row_tiles();
    let lens = [
        (g.tile * g.block_rows + 2) * wp + SLACK, // padded input rows of one channel
        (g.tile + 2) * g.tile * grid_tiles + SLACK, // its column combinations
        points * spread(g.depth * lines(images * most_tiles)) + SLACK, // V
        points * spread(block_rows * lines(images * most_tiles)) + SLACK, // M of a block of outputs
        g.tile * (g.tile * most_tiles + SLACK),   // the output rows of each tile row
    ];
    with_scratch_parts(lens, |[padded, columns, v, m, rows]| {
        for first in (0..g.tile_rows).step_by(g.block_rows) {
            let count = (g.tile_rows - first).min(g.block_rows);
            let tiles = count * g.row_tiles();
            // The images' tiles side by side along each row of `V` and `M`, rows whole lines
            // apart.
            let (row, row_stride) = (images * tiles, lines(images * tiles));
            let (v_point, m_point) = (
                spread(g.depth * row_stride),
                spread(block_rows * row_stride),
            );
            for n in 0..images {
                let finite = with_vector(InputTransform {
                    x: &x[n * image_in..(n + 1) * image_in],
                    g,
                    first,
                    count,
                    padded,
                    columns,
                    v: &mut v[n * tiles..],
                    row_stride,
                    point_stride: v_point,
                });
                if !finite {
                    return false;
                }
            }
            let offsets: Vec<usize> = (0..g.depth).map(|c| c * row_stride).collect();
            for block in blocks.clone() {
                shifted_gemm_block_batch(
                    &filter.points,
                    block,
                    &offsets,
                    v,
                    v_point,
                    row,
                    m,
                    m_point,
                    row_stride,
                );
                let o_first = block * block_rows - first_row;
                for n in 0..images {
                    let finite = with_vector(OutputTransform {
                        m: &m[n * tiles..],
                        row_stride,
                        point_stride: m_point,
                        g,
                        first,
                        count,
                        channels: o_first..(o_first + block_rows).min(rows_here),
                        block_rows,
                        bias,
                        activation,
                        rows,
                        destination: &mut destination,
                        image: n * image_out..(n + 1) * image_out,
                    });
                    if !finite {
                        return false;
                    }
                }
            }
        }
        true
    })
}

/// Step 1 for tile rows `first..first + count`, every channel: `V[ξ, c, t]` for the
/// `count·row_tiles` tiles `t` of the output, laid out as `v[ξ·point_stride + c·row_stride + t]`
/// (`row_stride >= tiles`, `point_stride >= depth·row_stride`). Returns whether every input it
/// read was finite.
///
/// On Zen 4 a third of this transform's time sat on the copy of the image's rows into
/// `padded`, waiting on their first read; reading the image with masked loads instead of the
/// copy, and prefetching the next channel's rows, measured level there.
struct InputTransform<'a> {
    x: &'a [f32],
    g: &'a Geometry,
    first: usize,
    count: usize,
    padded: &'a mut [f32],
    columns: &'a mut [f32],
    v: &'a mut [f32],
    row_stride: usize,
    point_stride: usize,
}

impl VectorKernel for InputTransform<'_> {
    type Output = bool;

    #[inline(always)]
    fn run<V: Vector>(self) -> bool {
        let InputTransform {
            x,
            g,
            first,
            count,
            padded,
            columns,
            v,
            row_stride,
            point_stride,
        } = self;
        let wp = g.width();
        // The grid's tiles, spare ones included, and the output's.
        let (grid, tiles) = (count * g.grid_columns, count * g.row_tiles());
        assert!(
            row_stride >= tiles
                && point_stride >= g.depth * row_stride
                && v.len() >= (g.points() - 1) * point_stride + (g.depth - 1) * row_stride + tiles
        );
        let plane = g.in_height * g.in_width;
        let rows_read = g.tile * count + 2;
        let left = g.left.min(wp);
        let width = g.in_width.min(wp - left);
        padded[..rows_read * wp].fill(0.0);
        // SAFETY: `with_vector` runs this only with a vector type the CPU supports.
        let mut check = unsafe { V::zero() };
        let zero = check;
        for c in 0..g.depth {
            // The padded rows this block reads, zero outside the image (cropped where the grid
            // ends before the image does); the rows of padding were zeroed once for every
            // channel. An image row is written as whole vectors on the grid the column
            // combinations read (the image shifted by `left` in a masked load, zeros around
            // it), so that each read finds one store to forward from: a copy to `left` floats
            // further stalled every read on a store forwarding that fails.
            let x = &x[c * plane..(c + 1) * plane];
            for i in 0..rows_read {
                let Some(r) = (g.tile * first + i)
                    .checked_sub(g.top)
                    .filter(|&r| r < g.in_height)
                else {
                    continue;
                };
                let source = x[r * g.in_width..][..width].as_ptr();
                for col in (0..wp).step_by(V::LANES) {
                    // Lanes `l` with `0 <= col + l - left < width` hold the image.
                    let image = zero.lanes_between(
                        left.saturating_sub(col),
                        (left + width).saturating_sub(col),
                    );
                    // SAFETY: `with_vector` runs this only with a vector type the CPU
                    // supports; the lanes of `image` read `source[col + l - left]`, inside
                    // the row's `width` floats (the others are not read, so the pointer may
                    // lie before the row); `padded` holds `rows_read·wp + SLACK` floats, and
                    // a vector past the row's end writes zeros into the next row before that
                    // row is written, or into the zeros of padding.
                    unsafe {
                        let p = source.wrapping_add(col).wrapping_sub(left);
                        V::load_masked(p, image).store(padded.as_mut_ptr().add(i * wp + col));
                    }
                }
            }
            if g.tile == 4 {
                // SAFETY: `with_vector` runs this only with a vector type the CPU supports;
                // the sizes were asserted above.
                unsafe {
                    let target = &mut v[c * row_stride..];
                    check =
                        transform_4x4::<V>(padded, columns, target, g, count, point_stride, check);
                }
                continue;
            }
            // Column combinations Bᵀ·d of each tile row: four rows of `wp` per tile row, as
            // `columns[k·2·grid + i·wp + col]`.
            for i in 0..count {
                for col in (0..wp).step_by(V::LANES) {
                    let n = (wp - col).min(V::LANES);
                    // SAFETY: rows `2i..2i + 4 <= rows_read` of `padded` and row `i < count` of
                    // each combination hold `wp` floats from `col`, of which `n` are touched.
                    unsafe {
                        let row = padded.as_ptr().add(2 * i * wp + col);
                        let d0 = load::<V>(row, n);
                        let d1 = load::<V>(row.add(wp), n);
                        let d2 = load::<V>(row.add(2 * wp), n);
                        let d3 = load::<V>(row.add(3 * wp), n);
                        let out = columns.as_mut_ptr().add(i * wp + col);
                        let k0 = d0.sub(d2);
                        let k1 = d1.add(d2);
                        let k3 = d1.sub(d3);
                        k0.store_first(out, n);
                        k1.store_first(out.add(2 * grid), n);
                        d2.sub(d1).store_first(out.add(4 * grid), n);
                        k3.store_first(out.add(6 * grid), n);
                        // Every input reaches k0, k1 or k3: an infinity or NaN there makes
                        // `check` NaN (a finite value times zero is zero).
                        check = k0.add(k1).add(k3).mul_add(zero, check);
                    }
                }
            }
            // Row combinations ·B: with `e`, `o` the even and odd columns of a row, tile `t`
            // reads e[t], o[t], e[t + 1], o[t + 1]. All in registers: the columns split by
            // shuffles, the window one tile along slid in from the next vector. (Reloading
            // split columns one float off from where they were just stored stalled on the
            // failed store forwarding: half of this transform's time on a Sapphire Rapids.)
            // The spare tile of each row is dropped on the way to `V`: grid tile `t` of a
            // vector is stored at `t − ⌊t / grid_columns⌋`, its spare ones not at all.
            let gc = g.grid_columns;
            for k in 0..4 {
                let row = &columns[k * 2 * grid..(k + 1) * 2 * grid];
                // The even and odd columns of tiles `t..t + LANES`, zero past the row's end
                // (where the spare tile of the last tile row reads one past). A function, not
                // a closure: a closure left uninlined ran without the target features, each
                // shuffle a call (S2's forward lost a quarter).
                // SAFETY: `with_vector` runs this only with a vector type the CPU supports.
                let (mut e0, mut o0) = unsafe { split_pairs::<V>(row, 0) };
                for t in (0..grid).step_by(V::LANES) {
                    let n = (grid - t).min(V::LANES);
                    // SAFETY: as above; the start is clamped to the row.
                    let (e_next, o_next) =
                        unsafe { split_pairs::<V>(row, (2 * (t + V::LANES)).min(row.len())) };
                    let (e1, o1) = (e0.slide_one(e_next), o0.slide_one(o_next));
                    let keep = zero.lanes_skipping(gc - 1 - t % gc, gc);
                    let at = t - t / gc;
                    let kept = (t + n - (t + n) / gc) - at;
                    // SAFETY: `v` holds `tiles` floats from each (point, channel)'s row start,
                    // points `point_stride` and channels `row_stride` apart (asserted above);
                    // the `kept` tiles of the output among grid tiles `t..t + n` go to
                    // `at..at + kept`, within `tiles`.
                    unsafe {
                        let point = v
                            .as_mut_ptr()
                            .add(4 * k * point_stride + c * row_stride + at);
                        let next = point_stride;
                        e0.sub(e1).compress(keep).store_first(point, kept);
                        o0.add(e1).compress(keep).store_first(point.add(next), kept);
                        e1.sub(o0)
                            .compress(keep)
                            .store_first(point.add(2 * next), kept);
                        o0.sub(o1)
                            .compress(keep)
                            .store_first(point.add(3 * next), kept);
                    }
                    (e0, o0) = (e_next, o_next);
                }
            }
        }
        !check.sum().is_nan()
    }
}

/// The constants of [`b4`]: 2, 4, −2, −4, −5.
#[derive(Clone, Copy)]
struct B4Constants<V>([V; 5]);

impl<V: Vector> B4Constants<V> {
    /// # Safety
    ///
    /// The CPU supports `V`'s instruction set.
    #[inline(always)]
    unsafe fn new() -> Self {
        // SAFETY: the caller's contract.
        unsafe {
            B4Constants([
                V::splat(2.0),
                V::splat(4.0),
                V::splat(-2.0),
                V::splat(-4.0),
                V::splat(-5.0),
            ])
        }
    }
}

/// `Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0;
/// 0 4 0 −5 0 1]` of F(4x4, 3x3) applied to six vectors.
#[inline(always)]
fn b4<V: Vector>([d0, d1, d2, d3, d4, d5]: [V; 6], constants: B4Constants<V>) -> [V; 6] {
    let [two, four, minus_two, minus_four, minus_five] = constants.0;
    let (d42, d13) = (d4.sub(d2), d1.sub(d3));
    [
        minus_five.mul_add(d2, four.mul_add(d0, d4)),
        minus_four.mul_add(d1.add(d2), d3.add(d4)),
        four.mul_add(d1.sub(d2), d4.sub(d3)),
        minus_two.mul_add(d13, d42),
        two.mul_add(d13, d42),
        minus_five.mul_add(d3, four.mul_add(d1, d5)),
    ]
}

/// The four phases of the columns of `row[at..at + 4·LANES]` (column `4t + q` in lane `t` of
/// phase `q`), zero past the row's end (`at` at most the row's length).
///
/// # Safety
///
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn split_quads<V: Vector>(row: &[f32], at: usize) -> [V; 4] {
    // SAFETY: the caller's contract; `split_pairs` reads within the row.
    unsafe {
        let (e01, o01) = split_pairs::<V>(row, at);
        let (e23, o23) = split_pairs::<V>(row, (at + 2 * V::LANES).min(row.len()));
        let (q0, q2) = e01.deinterleave(e23);
        let (q1, q3) = o01.deinterleave(o23);
        [q0, q1, q2, q3]
    }
}

/// The input transform of F(4x4, 3x3) for one channel whose padded rows are in `padded`:
/// `V[ξ = 6k + l, t]` into `v[ξ·point_stride + t]` for the `count` tile rows' tiles, as
/// [`InputTransform`] does for F(2x2, 3x3). Returns `check` made NaN if a value of `V` is not
/// finite (an input's infinity or NaN, or an overflow).
///
/// # Safety
///
/// The CPU supports `V`'s instruction set; `padded` holds the `4·count + 2` padded rows of
/// `g.width()` floats (plus [`SLACK`]), `columns` six rows of `4·count·grid_columns` (plus
/// [`SLACK`]), and `v` the `count·row_tiles` tiles of each of the 36 points.
#[inline(always)]
unsafe fn transform_4x4<V: Vector>(
    padded: &[f32],
    columns: &mut [f32],
    v: &mut [f32],
    g: &Geometry,
    count: usize,
    point_stride: usize,
    mut check: V,
) -> V {
    let wp = g.width();
    let grid = count * g.grid_columns;
    let len = 4 * grid;
    // SAFETY (the whole body): the caller's contract; every access is within the sizes it
    // promises, as noted at each.
    unsafe {
        let zero = V::zero();
        let constants = B4Constants::<V>::new();
        // Column combinations Bᵀ·d of each tile row: rows `4i..4i + 6` of `padded` give six
        // rows of `wp`, as `columns[k·len + i·wp + col]`.
        for i in 0..count {
            for col in (0..wp).step_by(V::LANES) {
                let n = (wp - col).min(V::LANES);
                let row = padded.as_ptr().add(4 * i * wp + col);
                // Plain loops, not `array::from_fn` or iterator adapters: their closures are
                // compiled apart, without this kernel's target features, every intrinsic a
                // call (this transform ran 3x slower).
                let mut d = [zero; 6];
                for (r, d) in d.iter_mut().enumerate() {
                    *d = load::<V>(row.add(r * wp), n);
                }
                let out = columns.as_mut_ptr().add(i * wp + col);
                for (k, combination) in b4(d, constants).iter().enumerate() {
                    combination.store_first(out.add(k * len), n);
                }
            }
        }
        // Row combinations ·B: tile `t` reads columns `4t..4t + 6`, phases 0 to 3 of its own
        // and 0 and 1 of the next tile, slid in from the next vector. The spare tile of each
        // row is dropped on the way to `V`, as in F(2x2, 3x3).
        let gc = g.grid_columns;
        for k in 0..6 {
            let row = &columns[k * len..(k + 1) * len];
            let mut quads = split_quads::<V>(row, 0);
            for t in (0..grid).step_by(V::LANES) {
                let n = (grid - t).min(V::LANES);
                let next = split_quads::<V>(row, (4 * (t + V::LANES)).min(len));
                let [q0, q1, q2, q3] = quads;
                let d = [q0, q1, q2, q3, q0.slide_one(next[0]), q1.slide_one(next[1])];
                let points = b4(d, constants);
                let mut sum = points[0];
                for &p in &points[1..] {
                    sum = sum.add(p);
                }
                check = sum.mul_add(zero, check);
                let keep = zero.lanes_skipping(gc - 1 - t % gc, gc);
                let at = t - t / gc;
                let kept = (t + n - (t + n) / gc) - at;
                // `v` holds `count·row_tiles` tiles from each point's row start; the `kept`
                // tiles of the output among grid tiles `t..t + n` go to `at..at + kept`.
                let point = v.as_mut_ptr().add(6 * k * point_stride + at);
                for (l, value) in points.iter().enumerate() {
                    value
                        .compress(keep)
                        .store_first(point.add(l * point_stride), kept);
                }
                quads = next;
            }
        }
    }
    check
}

/// A row of at least `len` floats that is whole 64-byte lines: the products' vectors of `V` and
/// `M` then never straddle two lines (MNIST's 4 x 49 tiles, 196 floats a row unpadded, measured
/// 6% slower on the Sapphire Rapids).
fn lines(len: usize) -> usize {
    len.next_multiple_of(16)
}

/// A stride of at least `len` floats that is an odd number of 64-byte lines. The 16 points of
/// `V` and `M` are read and written together; at a multiple of 4 KiB apart they all fall in
/// one set of the L1 cache and evict each other (MNIST's conv2: 32 channels of 224 tiles, 7 x
/// 4 KiB; its backward-data twice that), an odd number of lines spreads them over 16 sets.
fn spread(len: usize) -> usize {
    (len.div_ceil(16) | 1) * 16
}

/// Copies `src` into `dst` (equal lengths) a vector at a time: the rows here are short, where
/// a call to `memcpy` or a scalar tail would cost more than the copy.
///
/// # Safety
///
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn copy<V: Vector>(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    let len = src.len();
    // SAFETY (the whole body): the caller's contract; every vector read and written lies in
    // both slices.
    unsafe {
        if len < V::LANES {
            load::<V>(src.as_ptr(), len).store_first(dst.as_mut_ptr(), len);
            return;
        }
        // Whole vectors, the last one ending at `len` (overlapping the one before it rewrites
        // the same values): no partial load or store.
        for at in (0..len - V::LANES)
            .step_by(V::LANES)
            .chain([len - V::LANES])
        {
            V::load(src.as_ptr().add(at)).store(dst.as_mut_ptr().add(at));
        }
    }
}

/// `Aᵀ = [1 1 1 0; 0 1 −1 −1]` applied to column `l` of a tile's `M`, whose four points are
/// `stride` apart from `m` (`n` tiles of them).
///
/// # Safety
///
/// As [`load`] for each of the four.
#[inline(always)]
unsafe fn combine_column<V: Vector>(m: *const f32, stride: usize, n: usize) -> (V, V) {
    // SAFETY: the caller's contract.
    unsafe {
        let m0 = load::<V>(m, n);
        let m1 = load::<V>(m.add(4 * stride), n);
        let m2 = load::<V>(m.add(8 * stride), n);
        let m3 = load::<V>(m.add(12 * stride), n);
        (m0.add(m1).add(m2), m1.sub(m2).sub(m3))
    }
}

/// `y + bias`, then ReLU if asked.
#[inline(always)]
fn finish<V: Vector>(y: V, bias: V, relu: bool) -> V {
    let y = y.add(bias);
    if relu { y.relu() } else { y }
}

/// Step 4 for one block of output channels over tile rows `first..first + count`: from
/// `m[ξ·point_stride + i·row_stride + t]`, `Y = Aᵀ·M·A`, bias, activation, into the
/// destination's range `image` (one image's). Returns `false` if a pooling window met a NaN.
struct OutputTransform<'a, 'b> {
    m: &'a [f32],
    row_stride: usize,
    point_stride: usize,
    g: &'a Geometry,
    first: usize,
    count: usize,
    channels: std::ops::Range<usize>,
    block_rows: usize,
    bias: Option<&'a [f32]>,
    activation: ConvActivation,
    rows: &'a mut [f32],
    destination: &'a mut Destination<'b>,
    image: std::ops::Range<usize>,
}

impl VectorKernel for OutputTransform<'_, '_> {
    type Output = bool;

    #[inline(always)]
    fn run<V: Vector>(self) -> bool {
        let OutputTransform {
            m,
            row_stride,
            point_stride,
            g,
            first,
            count,
            channels,
            block_rows,
            bias,
            activation,
            rows,
            destination,
            image,
        } = self;
        let tiles = count * g.row_tiles();
        let out_plane = g.out_height * g.out_width;
        assert!(
            row_stride >= tiles
                && point_stride >= block_rows * row_stride
                && m.len()
                    >= (g.points() - 1) * point_stride + (block_rows - 1) * row_stride + tiles
        );
        if g.tile == 4 {
            let m = Points {
                m,
                row_stride,
                point_stride,
            };
            // SAFETY: `with_vector` runs this only with a vector type the CPU supports; the
            // sizes of `m` were asserted above, those of `rows` set by `convolve_images`.
            return unsafe {
                output_4x4::<V>(
                    m,
                    g,
                    first,
                    count,
                    channels,
                    bias,
                    activation,
                    rows,
                    destination,
                    image,
                )
            };
        }
        let (upper, lower) = rows.split_at_mut(2 * tiles + SLACK);
        let pooled = matches!(destination, Destination::Pooled { .. });
        let indexed = matches!(
            destination,
            Destination::Pooled {
                indices: Some(_),
                ..
            }
        );
        // SAFETY: `with_vector` runs this only with a vector type the CPU supports.
        let (zero, window) = unsafe { (V::zero(), Max2x2::<V>::new(g.out_width)) };
        let mut check = zero;
        for (i, o) in channels.enumerate() {
            // SAFETY: `with_vector` runs this only with a vector type the CPU supports.
            let b = unsafe { V::splat(bias.map_or(0.0, |bias| bias[o])) };
            let relu = activation == ConvActivation::Relu;
            // With an even width, the pooled plane's rows are the rows of tiles: the maxima
            // go straight to it (`direct`: where this block's first tile lands, and how many
            // tiles of the block have a whole window), without the copy through `upper`.
            let direct = match destination {
                Destination::Pooled { out, .. } if g.out_width % 2 == 0 => {
                    let (height, width) = (g.out_height / 2, g.out_width / 2);
                    let start = image.start + o * height * width + first * width;
                    let len = height.saturating_sub(first).min(count) * width;
                    Some((out[start..start + len].as_mut_ptr(), len))
                }
                _ => None,
            };
            for t in (0..tiles).step_by(V::LANES) {
                let n = (tiles - t).min(V::LANES);
                // SAFETY: `m` holds `tiles` floats from each (point, row of the block)'s start
                // (asserted above), `n` of them from `t`; `upper` and `lower` hold `2·tiles`,
                // `2n` of them from `2t`.
                unsafe {
                    let m = m.as_ptr().add(i * row_stride + t);
                    let stride = point_stride;
                    let c0 = combine_column::<V>(m, stride, n);
                    let c1 = combine_column::<V>(m.add(stride), stride, n);
                    let c2 = combine_column::<V>(m.add(2 * stride), stride, n);
                    let c3 = combine_column::<V>(m.add(3 * stride), stride, n);
                    let y00 = finish(c0.0.add(c1.0).add(c2.0), b, relu);
                    let y01 = finish(c1.0.sub(c2.0).sub(c3.0), b, relu);
                    let y10 = finish(c0.1.add(c1.1).add(c2.1), b, relu);
                    let y11 = finish(c1.1.sub(c2.1).sub(c3.1), b, relu);
                    if pooled {
                        // The pool's rule on the window [y00 y01; y10 y11]: the maximum, and
                        // the first input equal to it. A NaN makes the caller redo the images
                        // through the planes and the pool's exact rule.
                        check = y00.add(y01).add(y10).add(y11).mul_add(zero, check);
                        let best = if indexed {
                            let (best, at) = window.window([y00, y01, y10, y11]);
                            at.store_first(lower.as_mut_ptr().add(t), n);
                            best
                        } else {
                            // Inference: the maxima alone.
                            Max2x2::maximum([y00, y01, y10, y11])
                        };
                        match direct {
                            // `wrapping_add`: past `len`, no lane is written.
                            Some((out, len)) => {
                                best.store_first(out.wrapping_add(t), len.saturating_sub(t).min(n))
                            }
                            None => best.store_first(upper.as_mut_ptr().add(t), n),
                        }
                        continue;
                    }
                    let (lo_count, hi_count) =
                        ((2 * n).min(V::LANES), (2 * n).saturating_sub(V::LANES));
                    for (row, (left, right)) in
                        [(&mut *upper, (y00, y01)), (&mut *lower, (y10, y11))]
                    {
                        let (lo, hi) = left.interleave(right);
                        let p = row.as_mut_ptr().add(2 * t);
                        lo.store_first(p, lo_count);
                        if hi_count > 0 {
                            hi.store_first(p.add(V::LANES), hi_count);
                        }
                    }
                }
            }
            if let Destination::Pooled { out, indices } = destination {
                // Each whole window's row of the tile row.
                let (height, width) = (g.out_height / 2, g.out_width / 2);
                let plane = image.start + o * height * width;
                for ir in (0..count).take_while(|ir| first + ir < height) {
                    let r = first + ir;
                    let row = plane + r * width..plane + (r + 1) * width;
                    let tiles = ir * g.row_tiles()..ir * g.row_tiles() + width;
                    if direct.is_none() {
                        // SAFETY: `with_vector` runs this only with a vector type the CPU
                        // supports.
                        unsafe { copy::<V>(&mut out[row.clone()], &upper[tiles.clone()]) };
                    }
                    if let Some(indices) = indices {
                        for (j, (index, &at)) in
                            indices[row].iter_mut().zip(&lower[tiles]).enumerate()
                        {
                            *index = (2 * (r * g.out_width + j)) as u32 + at as u32;
                        }
                    }
                }
                continue;
            }
            let Destination::Planes(out) = destination else {
                unreachable!("pooled above")
            };
            // Each tile row's two output rows (without the odd last column of an odd width).
            let row_len = 2 * g.row_tiles();
            let plane = &mut out[image.clone()][o * out_plane..(o + 1) * out_plane];
            for ir in 0..count {
                for (half, source) in [&*upper, &*lower].into_iter().enumerate() {
                    let r = 2 * (first + ir) + half;
                    if r < g.out_height {
                        let row = &mut plane[r * g.out_width..(r + 1) * g.out_width];
                        // SAFETY: `with_vector` runs this only with a vector type the CPU
                        // supports.
                        unsafe { copy::<V>(row, &source[ir * row_len..][..g.out_width]) };
                    }
                }
            }
        }
        !check.sum().is_nan()
    }
}

/// A block's products `M`: point `ξ` of tile `t` of output row `i` at
/// `m[ξ·point_stride + i·row_stride + t]`.
struct Points<'a> {
    m: &'a [f32],
    row_stride: usize,
    point_stride: usize,
}

/// `Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]` of F(4x4, 3x3) applied to
/// six vectors; `constants` are 2, 4 and 8.
#[inline(always)]
fn a4<V: Vector>([m0, m1, m2, m3, m4, m5]: [V; 6], [two, four, eight]: [V; 3]) -> [V; 4] {
    let (sum12, diff12, sum34, diff34) = (m1.add(m2), m1.sub(m2), m3.add(m4), m3.sub(m4));
    [
        m0.add(sum12).add(sum34),
        two.mul_add(diff34, diff12),
        four.mul_add(sum34, sum12),
        eight.mul_add(diff34, diff12).add(m5),
    ]
}

/// Stores the first `count` floats of `vectors` laid end to end from `p`.
///
/// # Safety
///
/// The CPU supports `V`'s instruction set, and `count` floats from `p` are writable.
#[inline(always)]
unsafe fn store_run<V: Vector>(vectors: &[V], p: *mut f32, count: usize) {
    for (q, vector) in vectors.iter().enumerate() {
        let n = count.saturating_sub(q * V::LANES).min(V::LANES);
        if n > 0 {
            // SAFETY: the caller's contract; `n` floats from `q·LANES < count`.
            unsafe { vector.store_first(p.add(q * V::LANES), n) };
        }
    }
}

/// Step 4 of F(4x4, 3x3), as [`OutputTransform`] for F(2x2, 3x3): `Y = Aᵀ·M·A` per tile,
/// with the bias and activation, each tile's 4x4 outputs as four output rows (or, pooled,
/// its four 2x2 windows as two pooled rows); then the rows inside the output to the
/// destination. Returns `false` if a pooling window met a NaN.
///
/// # Safety
///
/// The CPU supports `V`'s instruction set; `m` holds the 36 points of `count·row_tiles` tiles
/// for each of `channels.len()` rows, and `rows` four rows of `4·count·row_tiles + SLACK`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn output_4x4<V: Vector>(
    m: Points<'_>,
    g: &Geometry,
    first: usize,
    count: usize,
    channels: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    activation: ConvActivation,
    rows: &mut [f32],
    destination: &mut Destination<'_>,
    image: std::ops::Range<usize>,
) -> bool {
    let row_tiles = g.row_tiles();
    let tiles = count * row_tiles;
    let row_len = rows.len() / 4;
    assert!(row_len >= 4 * tiles + SLACK, "winograd: output rows");
    let pooled = matches!(destination, Destination::Pooled { .. });
    let indexed = matches!(
        destination,
        Destination::Pooled {
            indices: Some(_),
            ..
        }
    );
    let relu = activation == ConvActivation::Relu;
    // SAFETY (the whole body): the caller's contract; each access is within the sizes it
    // promises, as noted at each.
    unsafe {
        let (zero, window) = (V::zero(), Max2x2::<V>::new(g.out_width));
        let constants = [V::splat(2.0), V::splat(4.0), V::splat(8.0)];
        let mut check = zero;
        for (i, o) in channels.enumerate() {
            let b = V::splat(bias.map_or(0.0, |bias| bias[o]));
            for t in (0..tiles).step_by(V::LANES) {
                let n = (tiles - t).min(V::LANES);
                // `n` tiles from `t` of each point of output row `i`.
                let base = m.m.as_ptr().add(i * m.row_stride + t);
                // Aᵀ·M: for each column `l` of the tiles' points, their four rows. (Plain loops:
                // see `transform_4x4`.)
                let mut columns = [[zero; 4]; 6];
                for (l, column) in columns.iter_mut().enumerate() {
                    let mut p = [zero; 6];
                    for (k, p) in p.iter_mut().enumerate() {
                        *p = load::<V>(base.add((6 * k + l) * m.point_stride), n);
                    }
                    *column = a4(p, constants);
                }
                // ·A: each row's four outputs.
                let mut y = [[zero; 4]; 4];
                for (r, y) in y.iter_mut().enumerate() {
                    let mut row = [zero; 6];
                    for (l, value) in row.iter_mut().enumerate() {
                        *value = columns[l][r];
                    }
                    *y = a4(row, constants);
                    for value in y.iter_mut() {
                        *value = finish(*value, b, relu);
                    }
                }
                if pooled {
                    // Each of the tile's four windows by the pool's rule, as in F(2x2, 3x3);
                    // pooled row `a` of the tile row gets the windows' maxima (and offsets)
                    // of columns `2t`, `2t + 1`.
                    for a in 0..2 {
                        let mut best = [zero; 2];
                        let mut at = [zero; 2];
                        for side in 0..2 {
                            let (top, bottom) = (y[2 * a], y[2 * a + 1]);
                            let w = [
                                top[2 * side],
                                top[2 * side + 1],
                                bottom[2 * side],
                                bottom[2 * side + 1],
                            ];
                            check = w[0].add(w[1]).add(w[2]).add(w[3]).mul_add(zero, check);
                            if indexed {
                                (best[side], at[side]) = window.window(w);
                            } else {
                                best[side] = Max2x2::maximum(w);
                            }
                        }
                        // Rows `a` (maxima) and `2 + a` (offsets) hold `2·tiles` floats.
                        let (lo, hi) = best[0].interleave(best[1]);
                        store_run(&[lo, hi], rows.as_mut_ptr().add(a * row_len + 2 * t), 2 * n);
                        if indexed {
                            let (lo, hi) = at[0].interleave(at[1]);
                            let p = rows.as_mut_ptr().add((2 + a) * row_len + 2 * t);
                            store_run(&[lo, hi], p, 2 * n);
                        }
                    }
                    continue;
                }
                for (r, &[y0, y1, y2, y3]) in y.iter().enumerate() {
                    // Row `r` of the tiles, `4·tiles` floats: the four columns of each tile
                    // in turn.
                    let (a_lo, a_hi) = y0.interleave(y2);
                    let (b_lo, b_hi) = y1.interleave(y3);
                    let (q0, q1) = a_lo.interleave(b_lo);
                    let (q2, q3) = a_hi.interleave(b_hi);
                    store_run(
                        &[q0, q1, q2, q3],
                        rows.as_mut_ptr().add(r * row_len + 4 * t),
                        4 * n,
                    );
                }
            }
            if let Destination::Pooled { out, indices } = destination {
                let (height, width) = (g.out_height / 2, g.out_width / 2);
                let plane = image.start + o * height * width;
                for ir in 0..count {
                    for a in 0..2 {
                        let r = 2 * (first + ir) + a;
                        if r >= height {
                            break;
                        }
                        let row = plane + r * width..plane + (r + 1) * width;
                        let source = ir * 2 * row_tiles;
                        // The pooled row's `width <= 2·row_tiles` windows of this tile row.
                        let maxima = &rows[a * row_len + source..][..width];
                        copy::<V>(&mut out[row.clone()], maxima);
                        if let Some(indices) = indices {
                            let offsets = &rows[(2 + a) * row_len + source..][..width];
                            for (j, (index, &at)) in
                                indices[row].iter_mut().zip(offsets).enumerate()
                            {
                                *index = (2 * (r * g.out_width + j)) as u32 + at as u32;
                            }
                        }
                    }
                }
                continue;
            }
            let Destination::Planes(out) = destination else {
                unreachable!("pooled above")
            };
            let out_plane = g.out_height * g.out_width;
            let plane = &mut out[image.clone()][o * out_plane..(o + 1) * out_plane];
            for ir in 0..count {
                for part in 0..4 {
                    let r = 4 * (first + ir) + part;
                    if r < g.out_height {
                        let source = &rows[part * row_len + ir * 4 * row_tiles..][..g.out_width];
                        copy::<V>(&mut plane[r * g.out_width..(r + 1) * g.out_width], source);
                    }
                }
            }
        }
        !check.sum().is_nan()
    }
}
