//! Convolution + bias + ReLU + 2x2 max pooling in registers, for layers with few input
//! channels (a network's first layer: MNIST's one channel, an RGB image's three).
//!
//! With a depth of `C·KH·KW` = 9 to 27 a GEMM does little work per output it stores, and the
//! separate pooling then reads every output again. Here a register tile holds two output rows
//! (one pooling row) of `2·LANES` columns for a few output channels: each tap loads the four
//! input vectors once for all of the tile's channels, and the finished tile is pooled in
//! registers (the two rows' maximum, then each pair of columns), so only the pooled plane is
//! stored. The image is first copied into zero-bordered planes whose rows leave room for every
//! tap and every vector, so no load is masked.
//!
//! Results are bit for bit those of the shifted kernel's convolution followed by
//! [`max_pool_planes`](crate::kernels::pool::max_pool_planes): the same multiply-adds in the
//! same order (from the bias, over depth `(c, kh, kw)`), then ReLU, then the maximum. Vector maxima
//! do not propagate NaN as pooling must, so an image whose sums could be NaN or infinite (an
//! input that is not finite, or one large enough to overflow) is left to the caller, which
//! takes the separate passes.

use super::shape::{Conv2dShape, ConvPath};
use crate::kernels::pool::{Max2x2, Pool2dShape, Pool2dSpec};
use crate::kernels::scratch::with_scratch;
use crate::kernels::vector::{Vector, VectorKernel, with_vector};
use crate::util::simd::{self, Level, copy_row, dispatch};

/// Input channels up to which this kernel beats the wide path's GEMM (whose depth grows with
/// them while this kernel's register tile does not).
const MAX_IN_CHANNELS: usize = 4;

/// Output channels per register tile: 16 accumulators (two rows of two vectors for each), with
/// the four input vectors and a weight 21 of AVX-512's 32 registers.
const BLOCK: usize = 4;

/// AVX-512's floats per vector. Only AVX-512 takes this kernel: with AVX2's 16 registers (two
/// channels per tile, twice the tiles) it measured 5% slower than the shifted kernel and the
/// separate pooling (MNIST conv1, one thread, 2.74-2.96 against 2.61-2.72 ms).
const LANES: usize = 16;

/// The weights, bias and geometry of one fused layer, checked once per call.
pub(super) struct PooledRows {
    /// The weights in blocks of [`BLOCK`] output channels, `[blocks][C·KH·KW][BLOCK]` (the
    /// channels past the last zero): a tap's weights for the tile's channels are adjacent.
    packed: Vec<f32>,
    /// The bias, zero without one and past the last channel (sums start from it).
    bias: Vec<f32>,
    /// Where the image's planes are copied.
    layout: Bordered,
    shape: Conv2dShape,
    pooled: Pool2dShape,
    /// The largest `Σ_k |w_ok|` over output channels and the largest `|b_o|`: with the
    /// image's largest `|x|`, a bound on every sum.
    weight_norm: f64,
    bias_norm: f64,
}

impl PooledRows {
    /// The kernel for `shape` followed by the pooling `pooled`, or `None` when it does not
    /// apply: not a 2x2 pooling at stride 2, more than a few input channels, groups, strides or
    /// dilations, no AVX-512, weights or bias not finite, or a shape the
    /// shifted kernel does not compute (the results must be its bits).
    pub fn new(
        weight: &[f32],
        bias: Option<&[f32]>,
        shape: &Conv2dShape,
        pooled: &Pool2dShape,
    ) -> Option<PooledRows> {
        let s = shape;
        // The shifted kernel's forward is the one whose sums these repeat.
        let shifted = matches!(
            s.path,
            ConvPath::Wide { shifted, winograd, blocked }
                if shifted.forward && !winograd.forward && !blocked.forward
        );
        let fits = shifted
            && pooled.spec == Pool2dSpec::square(2)
            && s.spec.groups == 1
            && s.spec.stride == [1, 1]
            && s.spec.dilation == [1, 1]
            && s.in_channels <= MAX_IN_CHANNELS
            && pooled.out_height > 0
            && pooled.out_width > 0
            && s.out_height * s.out_width < 1 << 24
            && simd::level() == Level::Avx512
            && simd::all_finite(weight)
            && bias.is_none_or(simd::all_finite);
        if !fits {
            return None;
        }
        let depth = s.in_channels * s.kernel_height * s.kernel_width;
        let weight_norm = weight
            .chunks_exact(depth)
            .map(|row| row.iter().map(|w| f64::from(w.abs())).sum::<f64>())
            .fold(0.0, f64::max);
        let bias_norm = bias.map_or(0.0, |b| {
            b.iter().map(|b| f64::from(b.abs())).fold(0.0, f64::max)
        });
        let out_channels = s.out_channels.next_multiple_of(BLOCK);
        let mut packed = vec![0.0; out_channels * depth];
        for (o, row) in weight.chunks_exact(depth).enumerate() {
            let (blk, b) = (o / BLOCK, o % BLOCK);
            for (tap, &w) in row.iter().enumerate() {
                packed[(blk * depth + tap) * BLOCK + b] = w;
            }
        }
        let mut padded_bias = vec![0.0; out_channels];
        if let Some(bias) = bias {
            padded_bias[..bias.len()].copy_from_slice(bias);
        }
        Some(PooledRows {
            packed,
            bias: padded_bias,
            layout: Bordered::new(s, pooled, LANES),
            shape: *s,
            pooled: *pooled,
            weight_norm,
            bias_norm,
        })
    }

    /// Pools one image `x` (`[C, H, W]`) into `out` (`[O, OH/2, OW/2]`) and, when given,
    /// `indices` (each window's argmax within its convolution output plane). Returns `false`,
    /// having written nothing, when the image's sums could overflow or meet a NaN: the caller
    /// computes it by the separate passes.
    pub fn image(&self, x: &[f32], out: &mut [f32], indices: Option<&mut [u32]>) -> bool {
        let s = &self.shape;
        let layout = &self.layout;
        with_scratch(layout.len(), |planes| {
            let Some(largest) = layout.fill(s, x, planes) else {
                return false;
            };
            // Every partial sum is at most this in magnitude (rounding aside): far below the
            // largest float, no sum overflows, so none is NaN.
            let bound = self.weight_norm * f64::from(largest) + self.bias_norm;
            if bound >= f64::from(f32::MAX) / 4.0 {
                return false;
            }
            let tiles = Tiles {
                kernel: self,
                layout,
                planes,
                out,
                indices,
            };
            with_vector(tiles);
            true
        })
    }
}

/// The image's planes copied into zero-bordered rows: plane `c`'s row `r` holds input row
/// `r − top`, from column `left` on. Rows leave room for the taps of every vector of the
/// last column tile, and there are as many rows as the pooled rows read.
struct Bordered {
    channels: usize,
    rows: usize,
    row_len: usize,
    /// Column tiles per pooled row, each `2·lanes` convolution columns (`lanes` pooled ones).
    tiles: usize,
    /// Where each tap `(c, kh, kw)` reads, from an output row's first input row.
    taps: Vec<usize>,
}

impl Bordered {
    fn new(s: &Conv2dShape, pooled: &Pool2dShape, lanes: usize) -> Bordered {
        let tiles = pooled.out_width.div_ceil(lanes);
        let rows = 2 * pooled.out_height + s.kernel_height - 1;
        let row_len = tiles * 2 * lanes + s.kernel_width - 1;
        let taps = (0..s.in_channels)
            .flat_map(|c| {
                (0..s.kernel_height).flat_map(move |i| {
                    (0..s.kernel_width).map(move |j| (c * rows + i) * row_len + j)
                })
            })
            .collect();
        Bordered {
            channels: s.in_channels,
            rows,
            row_len,
            tiles,
            taps,
        }
    }

    fn plane_len(&self) -> usize {
        self.rows * self.row_len
    }

    fn len(&self) -> usize {
        self.channels * self.plane_len()
    }

    /// Copies image `x` in, zeroing the borders; returns the largest `|x|`, or `None` if some
    /// value is not finite.
    fn fill(&self, s: &Conv2dShape, x: &[f32], planes: &mut [f32]) -> Option<f32> {
        let (top, left) = (s.spec.padding.top, s.spec.padding.left);
        // Input rows and columns past the last the outputs read are not copied.
        let (height, width) = (
            s.in_height.min(self.rows.saturating_sub(top)),
            s.in_width.min(self.row_len.saturating_sub(left)),
        );
        for (c, plane) in planes.chunks_exact_mut(self.plane_len()).enumerate() {
            plane.fill(0.0);
            let image = &x[c * s.in_height * s.in_width..][..s.in_height * s.in_width];
            for r in 0..height {
                let src = &image[r * s.in_width..][..width];
                copy_row(&mut plane[(top + r) * self.row_len + left..][..width], src);
            }
        }
        // Finite floats order as their bit patterns without the sign. Every input counts,
        // also those no output reads: a NaN anywhere sends the image to the separate passes.
        let largest = dispatch(
            #[inline(always)]
            || x.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff)),
        );
        (largest < 0x7f80_0000).then(|| f32::from_bits(largest))
    }
}

/// The register tiles of one image, run by [`with_vector`].
struct Tiles<'k, 'o> {
    kernel: &'k PooledRows,
    layout: &'k Bordered,
    planes: &'k [f32],
    out: &'o mut [f32],
    indices: Option<&'o mut [u32]>,
}

impl VectorKernel for Tiles<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        // `new` took AVX-512 only, whose vectors `with_vector` then runs.
        assert_eq!(V::LANES, LANES, "pooled_rows: tiles laid out for AVX-512");
        self.all::<V>()
    }
}

impl Tiles<'_, '_> {
    /// Every tile, a pooled row at a time.
    #[inline(always)]
    fn all<V: Vector>(mut self) {
        let blocks = self.kernel.shape.out_channels.div_ceil(BLOCK);
        for py in 0..self.kernel.pooled.out_height {
            for t in 0..self.layout.tiles {
                for block in 0..blocks {
                    self.tile::<V>(block, py, t);
                }
            }
        }
    }

    /// Output channels `BLOCK·block..BLOCK·(block + 1)` (those that exist) of pooled row `py`,
    /// column tile `t`.
    #[inline(always)]
    fn tile<V: Vector>(&mut self, block: usize, py: usize, t: usize) {
        let (k, layout) = (self.kernel, self.layout);
        let s = &k.shape;
        let lanes = V::LANES;
        let (kh, kw) = (s.kernel_height, s.kernel_width);
        let depth = s.in_channels * kh * kw;
        let column = t * 2 * lanes;
        let weights = &k.packed[block * depth * BLOCK..(block + 1) * depth * BLOCK];
        let bias = &k.bias[block * BLOCK..(block + 1) * BLOCK];
        // The tile's first input row: its taps read at `layout.taps` from there.
        let first = 2 * py * layout.row_len + column;
        // Within the planes: the furthest tap's loads end at its next row's second vector.
        let last_tap = layout.taps.last().copied().unwrap_or(0);
        let rows = &self.planes[first..first + last_tap + layout.row_len + 2 * lanes];
        // SAFETY: `with_vector` runs this with a vector type the CPU supports.
        let mut acc = [[[unsafe { V::zero() }; 2]; 2]; BLOCK];
        // (A loop, not `array::from_fn`: its closure would not inherit the instruction set.)
        for (acc, &b) in acc.iter_mut().zip(bias) {
            // SAFETY: as above.
            *acc = [[unsafe { V::splat(b) }; 2]; 2];
        }
        for (&offset, w) in layout.taps.iter().zip(weights.chunks_exact(BLOCK)) {
            // SAFETY: the loads end `offset + row_len + 2·lanes` floats from the start of
            // `rows` (the taps ascend), within it; `w` holds `BLOCK` floats.
            unsafe {
                let p = rows.as_ptr().add(offset);
                let q = p.add(layout.row_len);
                let x = [
                    [V::load(p), V::load(p.add(lanes))],
                    [V::load(q), V::load(q.add(lanes))],
                ];
                for (b, acc) in acc.iter_mut().enumerate() {
                    let w = V::splat(*w.get_unchecked(b));
                    for (acc, x) in acc.iter_mut().zip(&x) {
                        acc[0] = x[0].mul_add(w, acc[0]);
                        acc[1] = x[1].mul_add(w, acc[1]);
                    }
                }
            }
        }
        let pooled = &k.pooled;
        let plane = pooled.out_plane();
        let at = py * pooled.out_width + t * lanes;
        let n = (pooled.out_width - t * lanes).min(lanes);
        let channels = (s.out_channels - block * BLOCK).min(BLOCK);
        for (b, [top, bottom]) in acc.into_iter().enumerate().take(channels) {
            let o = block * BLOCK + b;
            let dst = &mut self.out[o * plane + at..][..n];
            match self.indices.as_deref_mut() {
                None => {
                    // The maximum before the ReLU: it is monotonic, so these are its bits.
                    let best = Max2x2::of(top, bottom).relu();
                    // SAFETY: `dst` holds `n` floats.
                    unsafe { best.store_first(dst.as_mut_ptr(), n) };
                }
                Some(indices) => {
                    let (top, bottom) = (
                        [top[0].relu(), top[1].relu()],
                        [bottom[0].relu(), bottom[1].relu()],
                    );
                    // SAFETY: as `acc`.
                    let window = unsafe { Max2x2::<V>::new(s.out_width) };
                    let first_input = 2 * py * s.out_width + 2 * t * lanes;
                    let (best, index) = window.with_index(top, bottom, first_input);
                    let idx = &mut indices[o * plane + at..][..n];
                    // SAFETY: `dst` and `idx` hold `n` values each; `index` holds whole
                    // numbers below 2^24 (`PooledRows::new` checked the plane's size).
                    unsafe {
                        best.store_first(dst.as_mut_ptr(), n);
                        index.store_first(idx.as_mut_ptr() as *mut f32, n);
                    }
                }
            }
        }
    }
}
