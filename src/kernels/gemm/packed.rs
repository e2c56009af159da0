//! The packed product (the BLIS scheme): for each depth block of `KC`, the left operand is
//! packed into `MR`-row panels and, `NC` columns at a time, the right operand into `NR`-column
//! panels, both laid out so the micro-kernel reads them sequentially; the micro-kernel then runs
//! over every (left panel, right panel) pair. Packing makes the kernel independent of the
//! operands' strides (a transpose costs nothing extra) and lets edge tiles read zero padding
//! instead of branching.

use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::blocking::{Blocking, Caches};
use super::micro::{self, LeftPanel, MicroKernel, Prefetch, RightPanel, TileDst};
use super::{Epilogue, MatMut, MatRef};
use crate::kernels::log_choice;
use crate::kernels::scratch::LINE;
use crate::kernels::vector::{TransposeIntoPanel, with_vector};
use crate::util::simd;

/// The kernels for this CPU (and the `STRIATE_ISA` cap), each with its blocking, found once.
fn plans() -> &'static [(MicroKernel, Blocking)] {
    static PLANS: OnceLock<Vec<(MicroKernel, Blocking)>> = OnceLock::new();
    PLANS.get_or_init(|| {
        let caches = Caches::of_this_cpu();
        micro::kernels(simd::level())
            .into_iter()
            .map(|kernel| {
                let blocking = Blocking::for_caches(&kernel, caches);
                log_choice(|| {
                    format!(
                        "gemm: {} micro-kernel, KC {} NC {} (L1d {} KiB, L2 {} KiB)",
                        kernel.name,
                        blocking.kc,
                        blocking.nc,
                        caches.l1d / 1024,
                        caches.l2 / 1024
                    )
                });
                (kernel, blocking)
            })
            .collect()
    })
}

/// `dst = epilogue(alpha · lhs · rhs + beta · dst)` on `threads` threads (1: the calling thread
/// alone). Shapes are checked by the caller; `m, n, k > 0`.
pub(super) fn gemm(
    alpha: f32,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    beta: f32,
    dst: MatMut<'_>,
    epilogue: Epilogue<'_>,
    threads: usize,
) {
    if threads <= 1 {
        return oriented_product(plans(), alpha, lhs, rhs, beta, dst, epilogue, 1);
    }
    // The whole product runs on a worker of the pool: the fork-joins inside it (several per
    // depth block) are then joined by a worker that steals while it waits, not by the calling
    // thread sleeping and waking at each one (13-21 us a time on a 2-vCPU VM, against under
    // 1 us from a worker). Alternated call by call on a Sapphire Rapids, 2 threads: the MNIST
    // step, whose dense layers call here, 10.0-10.3 against 10.8-11.0 ms; sgemm 2048 +1%.
    // (Where the caller is a worker already, `set_num_threads` from main, this runs in place.)
    rayon::scope(|_| {
        // A row-major destination of many rows (or, transposed, a column-major one of many
        // columns) goes in bands of rows, one independent product per thread: no fork-join
        // at all inside, at the cost of each band packing the whole right operand again.
        // sgemm 2048, 2 threads: +5% (medians 283.5-286.7 against 271.6-276.5 GFLOP/s for
        // the product shared block by block, three alternated runs).
        if dst.col_stride == 1 && dst.rows >= threads * BAND_MIN_ROWS {
            row_bands(alpha, lhs, rhs, beta, dst, epilogue, threads);
        } else if dst.row_stride == 1 && dst.cols >= threads * BAND_MIN_ROWS {
            row_bands(
                alpha,
                rhs.t(),
                lhs.t(),
                beta,
                dst.t(),
                epilogue.t(),
                threads,
            );
        } else {
            oriented_product(plans(), alpha, lhs, rhs, beta, dst, epilogue, threads);
        }
    });
}

/// The fewest rows per band for [`row_bands`]: each band packs the whole right operand, a
/// cost of about 100 rows' multiply-adds per packed element (packing took 4.8% of a 2048-row
/// product on one thread), so a band of 512 rows spends a fifth of that on its own copy.
const BAND_MIN_ROWS: usize = 512;

/// `dst = epilogue(alpha · lhs · rhs + beta · dst)` as `threads` independent products on bands
/// of rows of a row-major destination (`col_stride == 1`), in parallel. Every band takes the
/// kernel the undivided product would, so every element is summed exactly as by it: the same
/// depth blocks in the same order.
#[allow(clippy::too_many_arguments)]
fn row_bands(
    alpha: f32,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    beta: f32,
    dst: MatMut<'_>,
    epilogue: Epilogue<'_>,
    threads: usize,
) {
    // Bands whose rows are a multiple of every kernel's `MR` (4, 6, 8, 12), so only the last
    // has a partial panel.
    const UNIT: usize = 24;
    let per_band = dst.rows.div_ceil(threads).next_multiple_of(UNIT);
    let (index, _) = best_plan(plans(), lhs.rows, rhs.cols, &dst);
    let plan = &plans()[index..=index];
    let MatMut {
        data,
        rows,
        cols,
        row_stride,
        ..
    } = dst;
    let mut bands = Vec::with_capacity(threads);
    let mut rest = data;
    for first in (0..rows).step_by(per_band) {
        let count = per_band.min(rows - first);
        // A band's rows are whole strides but for its last row; rows start a stride apart.
        let (band, next) = if first + count < rows {
            rest.split_at_mut(count * row_stride)
        } else {
            rest.split_at_mut((count - 1) * row_stride + cols)
        };
        rest = next;
        let lhs = MatRef {
            data: &lhs.data[first * lhs.row_stride..],
            rows: count,
            ..lhs
        };
        let dst = MatMut {
            data: band,
            rows: count,
            cols,
            row_stride,
            col_stride: 1,
        };
        bands.push((lhs, dst, epilogue.rows_from(first)));
    }
    bands.into_par_iter().for_each(|(lhs, dst, epilogue)| {
        oriented_product(plan, alpha, lhs, rhs, beta, dst, epilogue, 1)
    });
}

/// The product with the kernel and orientation whose tiles waste least, with the columns before
/// the destination's first line boundary apart (see [`misaligned_columns`]).
#[allow(clippy::too_many_arguments)]
fn oriented_product(
    plans: &[(MicroKernel, Blocking)],
    alpha: f32,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    beta: f32,
    dst: MatMut<'_>,
    epilogue: Epilogue<'_>,
    threads: usize,
) {
    let (index, transposed) = best_plan(plans, lhs.rows, rhs.cols, &dst);
    let (kernel, blocking) = (&plans[index].0, plans[index].1);
    let (lhs, rhs, mut dst, epilogue) = if transposed {
        (rhs.t(), lhs.t(), dst.t(), epilogue.t())
    } else {
        (lhs, rhs, dst, epilogue)
    };
    let n = rhs.cols;
    // The first columns apart, so the stores of every other tile start on a cache line.
    let head = misaligned_columns(kernel, lhs.cols, &dst);
    let run = |dst: MatMut<'_>, columns| {
        product(
            kernel, blocking, alpha, lhs, rhs, beta, dst, epilogue, columns, threads,
        )
    };
    if head > 0 {
        run(dst.reborrow(), 0..head);
    }
    run(dst, head..n);
}

/// The plan (an index into `plans`) and orientation whose tiles waste least on an `m x n`
/// product into `dst`: `C = A·B` and `Cᵀ = Bᵀ·Aᵀ` are the same product, and a column-major
/// destination is better computed transposed. The first kernel wins ties.
fn best_plan(
    plans: &[(MicroKernel, Blocking)],
    m: usize,
    n: usize,
    dst: &MatMut<'_>,
) -> (usize, bool) {
    let mut best = (0.0, 0, false);
    for (index, (kernel, _)) in plans.iter().enumerate() {
        for transposed in [false, true] {
            let efficiency = if transposed {
                tile_efficiency(kernel, n, m, dst.row_stride == 1)
            } else {
                tile_efficiency(kernel, m, n, dst.col_stride == 1)
            };
            if efficiency > best.0 {
                best = (efficiency, index, transposed);
            }
        }
    }
    (best.1, best.2)
}

/// How many leading columns to compute apart so that the tiles after them store whole cache
/// lines: the columns before the first line boundary of a row, when every row starts at the
/// same offset within a line (contiguous rows whose stride is a multiple of a line) and the
/// product is wide enough for one extra column of tiles to be cheap and shallow enough
/// (`depth`) for its stores to matter; else 0. A destination off a line boundary (as the
/// allocator returns three times in four) cost the pointwise convolution's backward-data,
/// whose depth is 64, 17% (S5: 188 -> 157 GFLOP/s on a Zen 4; split, 188 at every offset) and
/// its forward (depth 256) 6%. A deep product stores rarely, and the split's second pass over
/// the left operand's packing and its narrow strip of tiles would cost more than it saves.
/// The split changes no result: every element's sum runs the same depth blocks in the same
/// order.
fn misaligned_columns(kernel: &MicroKernel, depth: usize, dst: &MatMut<'_>) -> usize {
    /// The deepest product split (a few depth blocks at most).
    const MAX_DEPTH: usize = 512;
    let same_offset = dst.rows == 1 || dst.row_stride.is_multiple_of(LINE);
    if dst.col_stride != 1 || !same_offset || dst.cols < 8 * kernel.nr || depth > MAX_DEPTH {
        return 0;
    }
    let offset = dst.data.as_ptr() as usize / size_of::<f32>() % LINE;
    (LINE - offset) % LINE
}

/// The share of the kernel's work that lands in real elements for an `m x n` output, halved for
/// a strided destination: its tiles are stored element by element, and transposing the product
/// also turns operands that could be read in place into ones that must be packed (measured on
/// a 64 x 288 x 196 product: 80 GFLOP/s as given against 74 transposed, although the transposed
/// tiles fit better).
fn tile_efficiency(kernel: &MicroKernel, m: usize, n: usize, unit_columns: bool) -> f64 {
    let padded = |extent: usize, tile: usize| extent.div_ceil(tile) * tile;
    let fill = (m * n) as f64 / (padded(m, kernel.mr) * padded(n, kernel.nr)) as f64;
    if unit_columns { fill } else { fill * 0.5 }
}

#[allow(clippy::too_many_arguments)]
fn product(
    kernel: &MicroKernel,
    blocking: Blocking,
    alpha: f32,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    beta: f32,
    dst: MatMut<'_>,
    epilogue: Epilogue<'_>,
    columns: std::ops::Range<usize>,
    threads: usize,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let (mr, nr) = (kernel.mr, kernel.nr);
    let panels_m = m.div_ceil(mr);
    let kc_max = blocking.kc.min(k);
    let nc_max = blocking.nc.min(n.div_ceil(nr) * nr);
    let destination = SharedDst {
        ptr: dst.data.as_mut_ptr(),
        row_stride: dst.row_stride,
        col_stride: dst.col_stride,
    };
    // With few row panels, each right panel serves only a few tiles: reading a row-major right
    // operand in place beats copying it first (a 64 x 288 x 196 product spent a fifth of its
    // time packing).
    let direct_rhs = rhs.col_stride == 1 && panels_m <= DIRECT_MAX_PANELS;
    // A right operand read in place with far rows is walked a panel at a time, every left
    // panel reading it in turn (`Block::tiles`): in blocks deep enough to fill it, the panel
    // spills from L1 between them. Blocks of about half of L1 each (deeper products only:
    // a block much shallower than that stores its tiles too often) measured, on an Intel Xeon
    // model 207 against one block of the whole depth, alternated in one process: the pointwise
    // forward 512 -> 128 channels at 28x28 +10%, 256 -> 64 at 56x56 (S5) +3-6%, 256 -> 256 at
    // 28x28 +3.5%, 160 -> 64 (one block) level; a quarter of L1 0.96 on S5.
    let kc_max = if direct_rhs && rhs.row_stride >= FAR_ROWS {
        let half_l1 = (Caches::of_this_cpu().l1d / 2 / (nr * size_of::<f32>())).max(16);
        let blocks = (k / half_l1).max(1);
        k.div_ceil(blocks).next_multiple_of(16).min(kc_max)
    } else {
        kc_max
    };
    // Likewise a left operand that meets only a few right panels is read in place (any
    // strides: the kernel takes them).
    let direct_lhs = n.div_ceil(nr) <= DIRECT_MAX_PANELS;
    // Such a product split into depth blocks adds each block onto the destination. Where the
    // destination and one depth block of the right operand outgrow half of L2, the next block
    // would read the destination back from L3: the product then goes a column block at a time
    // through every depth block (the same blocks in the same order for every element, so the
    // same sums), each column block's part of the destination staying in L2 between them.
    // Alternated in one process (Intel Xeon model 167, 2 MiB L2, 2 threads, batch 8, four
    // runs): the pointwise forward 256 -> 64 channels at 56x56 (S5, 2.4 MB) +2.8-4.7%, 256 ->
    // 256 at 28x28 (1.2 MB) +0.8-3.3%; 512 -> 128 at 28x28 (0.8 MB) read 0.95 with it and
    // keeps the depth outer.
    let columns_outer = direct_rhs
        && rhs.row_stride >= FAR_ROWS
        && k > kc_max
        && (m + kc_max) * n * size_of::<f32>() > Caches::of_this_cpu().l2 / 2;
    let lhs_block_len = panels_m * mr * kc_max;
    let lhs_len = if columns_outer {
        k.div_ceil(kc_max) * lhs_block_len
    } else {
        lhs_block_len
    };
    with_pack_buffers(lhs_len, kc_max * nc_max, |packed_a, packed_b| {
        let mut run_block = |pc: usize, lhs_panels: LhsPanels<'_>, jc: usize, next: usize| {
            let kc = kc_max.min(k - pc);
            let nc = nc_max.min(columns.end - jc);
            let panels_n = nc.div_ceil(nr);
            let rhs_panels = if direct_rhs {
                let full = nc / nr;
                if full < panels_n {
                    let (start, rest) = (jc + full * nr, nc - full * nr);
                    pack_rhs(rhs, pc, kc, start, rest, nr, &mut packed_b[..nr * kc], 1);
                }
                RhsPanels::InPlace {
                    data: &rhs.data[pc * rhs.row_stride + jc..],
                    row_stride: rhs.row_stride,
                    full,
                    edge: &packed_b[..nr * kc],
                }
            } else {
                let packed = &mut packed_b[..panels_n * nr * kc];
                pack_rhs(rhs, pc, kc, jc, nc, nr, packed, threads);
                RhsPanels::Packed(packed)
            };
            let block = Block {
                kernel,
                kc,
                m,
                jc,
                nc,
                alpha,
                // Later depth blocks add onto what the first wrote; the last
                // finishes the elements.
                beta: if pc == 0 { beta } else { 1.0 },
                epilogue: if pc + kc == k {
                    epilogue
                } else {
                    Epilogue::default()
                },
                lhs: &lhs_panels,
                rhs: rhs_panels,
                next: rhs.data.as_ptr().wrapping_add(next) as usize,
                dst: destination,
            };
            block.run(threads);
        };
        if columns_outer {
            let lhs_blocks: Vec<(usize, LhsPanels<'_>)> = packed_a
                .chunks_mut(lhs_block_len)
                .zip((0..k).step_by(kc_max))
                .map(|(region, pc)| {
                    let kc = kc_max.min(k - pc);
                    (pc, left_block(lhs, pc, kc, mr, direct_lhs, region, threads))
                })
                .collect();
            for jc in columns.clone().step_by(nc_max) {
                for &(pc, panels) in &lhs_blocks {
                    let (next_pc, next_jc) = match pc + kc_max {
                        next if next < k => (next, jc),
                        _ => (0, jc + nc_max),
                    };
                    run_block(pc, panels, jc, next_pc * rhs.row_stride + next_jc);
                }
            }
        } else {
            for pc in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - pc);
                let panels = left_block(lhs, pc, kc, mr, direct_lhs, &mut *packed_a, threads);
                for jc in columns.clone().step_by(nc_max) {
                    run_block(pc, panels, jc, pc * rhs.row_stride + jc + nc_max);
                }
            }
        }
    });
}

/// Rows of an in-place right operand at least this many floats apart (2 KiB) are prefetched
/// by the tiles: at most two share a page.
const FAR_ROWS: usize = 512;

/// How far ahead of the panel being computed the in-place right operand is prefetched: two
/// panels, ~6000 cycles of a 12 x 32 tile's work times the left panels, measured better than
/// one (the next panel) and no worse than three or four on a Zen 4 (S5 forward).
const PREFETCH_PANELS_AHEAD: usize = 2;

/// How many depth steps ahead a right panel in L2 is prefetched: 8 steps of a 12 x 32 tile are
/// about 100 cycles of its multiply-adds, beyond L2's latency (4 and 8 measured alike, both
/// ahead of none, on sgemm 2048 on a Sapphire Rapids; 16 no better).
const PREFETCH_STEPS_AHEAD: usize = 8;

/// An operand that meets at most this many panels of the other is read in place. A right panel
/// read in place is walked by every left panel while it sits in L1 (`Block::tiles`), so copying
/// it first only adds a pass; 24 rather than 8 (Zen 3, 2 threads, best of 3 alternations):
/// the dense layer's `dX = dY · W` at batch 64 (11 left panels) 815 -> 625 us, S5 forward
/// 112-119 -> 132-142 GFLOP/s, S3 and S4 level. Beyond it, on the pointwise backward-data (S5:
/// 256 rows, 32 panels of the 8 x 48 kernel, depth 64, its copy of `dY` 8% of the time), the
/// right operand in place measured level with the copy, and the 12 x 32 kernel, whose 22
/// panels read it in place, between 3% slower and 4% faster (Zen 4, call by call, in three
/// alternations each): the copy stays.
const DIRECT_MAX_PANELS: usize = 24;

/// The left panels of depth block `pc..pc + kc`, packed into `region`: every panel, or, for
/// a left operand read in place, only a partial last one.
fn left_block<'a>(
    lhs: MatRef<'a>,
    pc: usize,
    kc: usize,
    mr: usize,
    in_place: bool,
    region: &'a mut [f32],
    threads: usize,
) -> LhsPanels<'a> {
    let panels_m = lhs.rows.div_ceil(mr);
    if in_place {
        let full = lhs.rows / mr;
        let edge = &mut region[..mr * kc];
        if full < panels_m {
            pack_lhs(lhs, full * mr, pc, kc, mr, edge, 1);
        }
        LhsPanels::InPlace {
            data: &lhs.data[pc * lhs.col_stride..],
            row_stride: lhs.row_stride,
            col_stride: lhs.col_stride,
            full,
            edge,
        }
    } else {
        let packed = &mut region[..panels_m * mr * kc];
        pack_lhs(lhs, 0, pc, kc, mr, packed, threads);
        LhsPanels::Packed(packed)
    }
}

/// Where the micro-kernels find the left operand's `MR`-row panels of one depth block.
#[derive(Clone, Copy)]
enum LhsPanels<'a> {
    /// Packed: panel `ir` is `kc` steps of `MR` consecutive values.
    Packed(&'a [f32]),
    /// In the caller's slice (starting at the block's first depth step): the `full` whole
    /// panels are read there with the view's strides; a partial last one was packed into
    /// `edge`.
    InPlace {
        data: &'a [f32],
        row_stride: usize,
        col_stride: usize,
        full: usize,
        edge: &'a [f32],
    },
}

impl LhsPanels<'_> {
    /// Panel `ir`: its first value, the distance between its rows and between its depth steps.
    fn panel(&self, ir: usize, mr: usize, kc: usize) -> LeftPanel {
        let packed = |panel: &[f32]| LeftPanel {
            ptr: panel.as_ptr(),
            row: 1,
            step: mr,
        };
        match *self {
            LhsPanels::Packed(all) => packed(&all[ir * mr * kc..(ir + 1) * mr * kc]),
            LhsPanels::InPlace { edge, full, .. } if ir == full => packed(edge),
            LhsPanels::InPlace {
                data,
                row_stride,
                col_stride,
                ..
            } => {
                // The view covers at least `(ir + 1)·mr` rows and `kc` depth steps: its
                // elements (ir·mr + i, p) for i < mr, p < kc lie in the slice.
                let first = ir * mr * row_stride;
                let last = first + (mr - 1) * row_stride + (kc - 1) * col_stride;
                LeftPanel {
                    ptr: data[first..=last].as_ptr(),
                    row: row_stride,
                    step: col_stride,
                }
            }
        }
    }
}

/// Where the micro-kernels find the right operand's `NR`-column panels of one block.
enum RhsPanels<'a> {
    /// Packed: panel `jr` is `kc` steps of `NR` consecutive values.
    Packed(&'a [f32]),
    /// Row-major in the caller's slice (starting at the block's first element): the `full`
    /// whole panels are read there, row by row; a partial last one was packed into `edge`.
    InPlace {
        data: &'a [f32],
        row_stride: usize,
        full: usize,
        edge: &'a [f32],
    },
}

impl RhsPanels<'_> {
    /// Panel `jr`'s first value and the distance between its depth steps.
    fn panel(&self, jr: usize, nr: usize, kc: usize) -> (*const f32, usize) {
        match *self {
            RhsPanels::Packed(packed) => (packed[jr * nr * kc..(jr + 1) * nr * kc].as_ptr(), nr),
            RhsPanels::InPlace { edge, full, .. } if jr == full => (edge.as_ptr(), nr),
            RhsPanels::InPlace {
                data, row_stride, ..
            } => {
                // The panel's last value, (kc - 1, jr·nr + nr - 1), lies in the slice: the view
                // covers `kc` rows of at least `(jr + 1)·nr` columns.
                let last = (kc - 1) * row_stride + (jr + 1) * nr - 1;
                (data[jr * nr..=last].as_ptr(), row_stride)
            }
        }
    }
}

/// The destination as a raw pointer the tasks of one block share: each writes its own tiles.
#[derive(Clone, Copy)]
struct SharedDst {
    ptr: *mut f32,
    row_stride: usize,
    col_stride: usize,
}

// SAFETY: tasks write disjoint tiles of the destination (see `Block::run`), which the caller
// borrowed mutably for the whole product.
unsafe impl Send for SharedDst {}
// SAFETY: as above.
unsafe impl Sync for SharedDst {}

/// One depth block of one column block, packed and ready for the micro-kernels.
struct Block<'a> {
    kernel: &'a MicroKernel,
    kc: usize,
    m: usize,
    jc: usize,
    nc: usize,
    alpha: f32,
    beta: f32,
    epilogue: Epilogue<'a>,
    lhs: &'a LhsPanels<'a>,
    rhs: RhsPanels<'a>,
    /// The address where the walk of an in-place right operand goes after this block's
    /// columns, the next block's first element (the target of the prefetches near the block's
    /// end; an address, not a pointer, as it is never read).
    next: usize,
    dst: SharedDst,
}

impl Block<'_> {
    /// Runs every tile, split into rectangles of panels over `threads` threads: along the rows
    /// when there are enough row panels, else along the columns too.
    fn run(&self, threads: usize) {
        let panels_m = self.m.div_ceil(self.kernel.mr);
        let panels_n = self.nc.div_ceil(self.kernel.nr);
        if threads <= 1 {
            self.tiles(0..panels_m, 0..panels_n);
            return;
        }
        let target = 2 * threads;
        let split_m = panels_m.min(target);
        let split_n = panels_n.min(target.div_ceil(split_m));
        (0..split_m * split_n).into_par_iter().for_each(|task| {
            let (tm, tn) = (task / split_n, task % split_n);
            let rows = tm * panels_m / split_m..(tm + 1) * panels_m / split_m;
            let cols = tn * panels_n / split_n..(tn + 1) * panels_n / split_n;
            self.tiles(rows, cols);
        });
    }

    /// The tiles of row panels `rows` and column panels `cols`. A right block that is packed,
    /// or read in place with rows close together, sits in L2: a left panel stays in L1 while
    /// the right panels stream past it. A right operand read in place with rows a page or so
    /// apart (the planes of a pointwise convolution) is instead walked a panel at a time, each
    /// serving every left panel while it is in L2, and a panel further on is prefetched from
    /// memory meanwhile: no hardware prefetcher follows rows that far apart, and a burst of
    /// prefetches up front only waits for memory itself (S5 forward +20-30% on a Zen 4 against
    /// a burst). That fetch is shared by the first tiles of the panel, a column of lines each:
    /// all of it in the first tile (three lines a step) left that tile's own loads queued
    /// behind the memory requests (S5 forward +3-8% on a Zen 4, one thread or two). Where
    /// there are left panels enough, twice as many tiles share it, each fetching at every
    /// other step (a column of lines of the even or the odd rows): at one line a step, the
    /// fetches outstanding from L3 (a line every 13 cycles, for a few hundred cycles each)
    /// would outnumber the core's fill buffers, which the tile's own loads from L2 wait for
    /// too (the likely cause; this VM has no counters to show it).
    /// Alternated in one process (Intel Xeon model 167, 2 threads): S5 forward +12.8% and
    /// +11.8%, 256 -> 256 at 28x28 +3%, 512 -> 128 at 28x28 +1%. The other tiles prefetch
    /// their own steps a few ahead: the panel was not all in L1 when they came to it.
    fn tiles(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        let nr = self.kernel.nr;
        if let RhsPanels::InPlace {
            data, row_stride, ..
        } = self.rhs
            && row_stride >= FAR_ROWS
        {
            let lines = nr.div_ceil(LINE);
            // Too few left panels to share the fetch: the first takes every line.
            let shared = rows.len() >= lines;
            let alternate = rows.len() >= 2 * lines;
            let panels_n = self.nc.div_ceil(nr);
            for jr in cols {
                let far = match jr + PREFETCH_PANELS_AHEAD {
                    ahead if ahead < panels_n => data.as_ptr().wrapping_add(ahead * nr),
                    ahead => (self.next as *const f32).wrapping_add((ahead - panels_n) * nr),
                };
                for (index, ir) in rows.clone().enumerate() {
                    let ahead = if alternate && index < 2 * lines {
                        let (odd, line) = (index / lines, index % lines);
                        Prefetch::AlternateLines(far.wrapping_add(odd * row_stride + line * LINE))
                    } else if shared && index < lines {
                        Prefetch::Line(far.wrapping_add(index * LINE))
                    } else if !shared && index == 0 {
                        Prefetch::Steps(far)
                    } else {
                        // With no prefetch they waited on L2 (S5 forward +7% on a Sapphire
                        // Rapids).
                        self.own_steps_ahead(jr)
                    };
                    self.tile(ir, jr, ahead);
                }
            }
        } else {
            for ir in rows {
                for jr in cols.clone() {
                    // The panel's own steps a few ahead (and, near its end, the next panel's
                    // first ones, which follow it in a packed block): L2's hardware prefetcher
                    // alone left the loads waiting (sgemm 2048 +3-5% on a Sapphire Rapids).
                    self.tile(ir, jr, self.own_steps_ahead(jr));
                }
            }
        }
    }

    /// Right panel `jr`'s own steps [`PREFETCH_STEPS_AHEAD`] ahead of those being read.
    fn own_steps_ahead(&self, jr: usize) -> Prefetch {
        let (b, step) = self.rhs.panel(jr, self.kernel.nr, self.kc);
        Prefetch::Steps(b.wrapping_add(PREFETCH_STEPS_AHEAD * step))
    }

    /// One micro-kernel call: row panel `ir` times column panel `jr`.
    fn tile(&self, ir: usize, jr: usize, ahead: Prefetch) {
        let (mr, nr, kc) = (self.kernel.mr, self.kernel.nr, self.kc);
        let a = self.lhs.panel(ir, mr, kc);
        let (b, b_step) = self.rhs.panel(jr, nr, kc);
        let (i, j) = (ir * mr, self.jc + jr * nr);
        let tile = TileDst {
            // SAFETY: (i, j) is an element of the destination (i < m, j < n), whose extent the
            // views' constructors checked.
            ptr: unsafe {
                self.dst
                    .ptr
                    .add(i * self.dst.row_stride + j * self.dst.col_stride)
            },
            row_stride: self.dst.row_stride,
            col_stride: self.dst.col_stride,
            rows: mr.min(self.m - i),
            cols: nr.min(self.jc + self.nc - j),
            alpha: self.alpha,
            beta: self.beta,
            epilogue: self.epilogue.for_tile(i, j),
        };
        // SAFETY: `a` holds `kc` steps of `mr` values at its strides and `b` `kc` rows of `nr`
        // values `b_step` apart (`LhsPanels::panel` and `RhsPanels::panel` checked the
        // extents); the tile lies in the destination and belongs to this task alone (tasks get
        // disjoint panel ranges); `ahead` is only prefetched; the kernel matches this CPU
        // (`micro::for_level`).
        unsafe {
            (self.kernel.run)(
                kc,
                a,
                RightPanel {
                    ptr: b,
                    step: b_step,
                    ahead,
                },
                tile,
            )
        };
    }
}

/// Packs rows `row0..`, depth `pc..pc + kc` of `lhs` into `MR`-row panels (`MR` values per
/// depth step, as many panels as `out` holds), padding the last panel with zero rows.
fn pack_lhs(
    lhs: MatRef<'_>,
    row0: usize,
    pc: usize,
    kc: usize,
    mr: usize,
    out: &mut [f32],
    threads: usize,
) {
    let pack_panel = |panel: usize, out: &mut [f32]| {
        let first = row0 + panel * mr;
        let rows = mr.min(lhs.rows - first);
        let at = |i: usize, p: usize| (first + i) * lhs.row_stride + (pc + p) * lhs.col_stride;
        // Walk the operand along its contiguous axis: a column-major operand (a transpose)
        // gives whole runs of a depth step.
        if lhs.row_stride == 1 {
            for p in 0..kc {
                let step = &mut out[p * mr..(p + 1) * mr];
                simd::copy_row(&mut step[..rows], &lhs.data[at(0, p)..at(0, p) + rows]);
                step[rows..].fill(0.0);
            }
        } else if lhs.col_stride == 1 {
            with_vector(TransposeIntoPanel {
                src: &lhs.data[at(0, 0)..],
                stride: lhs.row_stride,
                lines: rows,
                depth: kc,
                width: mr,
                out,
            });
        } else {
            for i in 0..rows {
                for p in 0..kc {
                    out[p * mr + i] = lhs.data[at(i, p)];
                }
            }
            for i in rows..mr {
                (0..kc).for_each(|p| out[p * mr + i] = 0.0);
            }
        }
    };
    for_each_panel(out, mr * kc, threads, pack_panel);
}

/// Packs depth `pc..pc + kc`, columns `jc..jc + nc` of `rhs` into `NR`-column panels (`NR`
/// values per depth step), padding the last panel with zero columns.
#[allow(clippy::too_many_arguments)]
fn pack_rhs(
    rhs: MatRef<'_>,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    nr: usize,
    out: &mut [f32],
    threads: usize,
) {
    let panel_len = nr * kc;
    if rhs.col_stride == 1 {
        // Row-major: walk each row once across all the panels of a group, so the operand is read
        // as long contiguous runs (a panel at a time would read `kc` rows a panel's width at a
        // time, one page per row: the same pattern that starves the kernel reading in place).
        let pack_group = |first_panel: usize, out: &mut [f32]| {
            let panels = out.len() / panel_len;
            for p in 0..kc {
                let row = &rhs.data[(pc + p) * rhs.row_stride..];
                for panel in 0..panels {
                    let first = jc + (first_panel + panel) * nr;
                    let cols = nr.min(jc + nc - first);
                    let step = &mut out[panel * panel_len + p * nr..][..nr];
                    simd::copy_row(&mut step[..cols], &row[first..first + cols]);
                    step[cols..].fill(0.0);
                }
            }
        };
        let panels = out.len() / panel_len;
        let per_group = if threads > 1 && out.len() >= PARALLEL_PACK {
            panels.div_ceil(threads)
        } else {
            panels
        };
        for_each_panel(out, panel_len * per_group, threads, |group, chunk| {
            pack_group(group * per_group, chunk)
        });
        return;
    }
    let pack_panel = |panel: usize, out: &mut [f32]| {
        let first = jc + panel * nr;
        let cols = nr.min(jc + nc - first);
        let at = |p: usize, j: usize| (pc + p) * rhs.row_stride + (first + j) * rhs.col_stride;
        if rhs.row_stride != 1 {
            for p in 0..kc {
                let step = &mut out[p * nr..(p + 1) * nr];
                for (j, slot) in step[..cols].iter_mut().enumerate() {
                    *slot = rhs.data[at(p, j)];
                }
                step[cols..].fill(0.0);
            }
        } else {
            // Column-major (a transpose): each column is a contiguous run along the depth,
            // transposed by vector blocks (element by element, the strided stores made the pack
            // of a dense layer's input 4% of MNIST inference).
            with_vector(TransposeIntoPanel {
                src: &rhs.data[at(0, 0)..],
                stride: rhs.col_stride,
                lines: cols,
                depth: kc,
                width: nr,
                out,
            });
        }
    };
    for_each_panel(out, nr * kc, threads, pack_panel);
}

/// Below this many floats the fork costs more than the copy.
const PARALLEL_PACK: usize = 64 * 1024;

/// Runs `pack(panel, chunk)` over the `panel_len`-sized chunks of `out`, in parallel when the
/// product is.
fn for_each_panel(
    out: &mut [f32],
    panel_len: usize,
    threads: usize,
    pack: impl Fn(usize, &mut [f32]) + Sync,
) {
    if threads > 1 && out.len() >= PARALLEL_PACK {
        out.par_chunks_mut(panel_len)
            .enumerate()
            .for_each(|(panel, chunk)| pack(panel, chunk));
    } else {
        out.chunks_mut(panel_len)
            .enumerate()
            .for_each(|(panel, chunk)| pack(panel, chunk));
    }
}

thread_local! {
    static PACK_BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with two 64-byte-aligned buffers of `a_len` and `b_len` floats (contents
/// unspecified: packing writes every element), kept per thread across calls so a training step
/// allocates nothing. A re-entrant call (rayon can run another product on a thread that waits)
/// gets fresh buffers.
fn with_pack_buffers<R>(
    a_len: usize,
    b_len: usize,
    f: impl FnOnce(&mut [f32], &mut [f32]) -> R,
) -> R {
    fn aligned(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
        // 16 floats are 64 bytes: room to move the start to a cache-line boundary.
        if buffer.len() < len + 16 {
            // Fresh (the contents are unspecified), so that it can take huge pages.
            *buffer = crate::util::memory::vec_filled(len + 16, 0.0);
        }
        let offset = buffer.as_ptr().align_offset(64).min(16);
        &mut buffer[offset..offset + len]
    }
    PACK_BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => {
            let (a, b) = &mut *buffers;
            f(aligned(a, a_len), aligned(b, b_len))
        }
        Err(_) => {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            f(aligned(&mut a, a_len), aligned(&mut b, b_len))
        }
    })
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::kernels::gemm::{Bias, naive_gemm};
    use crate::util::simd::Level;

    /// Every kernel of the levels this CPU can run, so each is checked wherever its
    /// instructions exist, whatever `STRIATE_ISA` says.
    fn runnable_kernels() -> Vec<MicroKernel> {
        let mut levels = vec![Level::Baseline];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                levels.push(Level::Avx2);
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                levels.push(Level::Avx512);
            }
        }
        levels.into_iter().flat_map(micro::kernels).collect()
    }

    #[test]
    fn every_kernel_matches_the_naive_product_across_blocks_edges_and_strides() {
        let mut rng = StdRng::seed_from_u64(11);
        // Small blocks so that modest shapes cross several depth and column blocks.
        let blocking = Blocking { kc: 32, nc: 64 };
        for kernel in runnable_kernels() {
            let blocking = Blocking {
                nc: blocking.nc / kernel.nr * kernel.nr,
                ..blocking
            };
            // Few row panels read a row-major right operand in place (rows 530 floats apart
            // are walked a panel at a time and prefetched, by the first row panel, by as many
            // as a panel has lines, or, 60 rows, by twice as many at every other step); 130
            // rows pack it.
            for &(m, k, n) in &[
                (1, 1, 1),
                (13, 70, 33),
                (25, 64, 130),
                (20, 45, 530),
                (60, 45, 530),
                (7, 100, 5),
                (130, 40, 70),
            ] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let start: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let lhs = MatRef::row_major(&a, m, k);
                for (rhs, threads) in [
                    (MatRef::row_major(&b, n, k).t(), 1),
                    (MatRef::row_major(&b, n, k).t(), 2),
                    (MatRef::row_major(&b, k, n), 1),
                    (MatRef::row_major(&b, k, n), 2),
                ] {
                    let product_ab = naive_gemm(lhs, rhs);
                    for transposed_dst in [false, true] {
                        let mut got = start.clone();
                        let dst = if transposed_dst {
                            // The same matrix stored column-major.
                            got = (0..m * n).map(|t| start[(t % m) * n + t / m]).collect();
                            MatMut::row_major(&mut got, n, m).t()
                        } else {
                            MatMut::row_major(&mut got, m, n)
                        };
                        let none = Epilogue::default();
                        product(
                            &kernel,
                            blocking,
                            0.5,
                            lhs,
                            rhs,
                            2.0,
                            dst,
                            none,
                            0..n,
                            threads,
                        );
                        for i in 0..m {
                            for j in 0..n {
                                let at = if transposed_dst { j * m + i } else { i * n + j };
                                let want = 0.5 * product_ab[i * n + j] + 2.0 * start[i * n + j];
                                let tol = 1e-5 * (k as f32).sqrt() * (1.0 + want.abs());
                                assert!(
                                    (got[at] - want).abs() <= tol,
                                    "{} m {m} k {k} n {n} threads {threads} transposed \
                                     {transposed_dst}: ({i}, {j}) {} vs {want}",
                                    kernel.name,
                                    got[at]
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn beta_zero_never_reads_the_destination() {
        for kernel in runnable_kernels() {
            let (m, k, n) = (kernel.mr + 1, 3, kernel.nr + 1);
            let a = vec![1.0; m * k];
            let b = vec![1.0; k * n];
            let mut out = vec![f32::NAN; m * n];
            let blocking = Blocking {
                kc: 64,
                nc: kernel.nr * 4,
            };
            let lhs = MatRef::row_major(&a, m, k);
            let rhs = MatRef::row_major(&b, k, n);
            product(
                &kernel,
                blocking,
                1.0,
                lhs,
                rhs,
                0.0,
                MatMut::row_major(&mut out, m, n),
                Epilogue::default(),
                0..n,
                1,
            );
            assert!(out.iter().all(|&x| x == 3.0), "{}", kernel.name);
        }
    }

    #[test]
    fn destinations_off_a_line_boundary_match_the_naive_product() {
        let mut rng = StdRng::seed_from_u64(12);
        for kernel in runnable_kernels() {
            let blocking = Blocking {
                kc: 32,
                nc: 4 * kernel.nr,
            };
            // Wide enough for the leading columns to be computed apart; rows a whole number of
            // lines long, so every row starts at the same offset within a line.
            let (m, k, n) = (kernel.mr + 3, 40, 8 * kernel.nr + 16);
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let start: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let (lhs, rhs) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
            let product_ab = naive_gemm(lhs, rhs);
            let mut buffer = vec![0.0f32; m * n + 32];
            let line = buffer.as_ptr().align_offset(64);
            for offset in [0, 1, 5, 8, 15] {
                for threads in [1, 2] {
                    let got = &mut buffer[line + offset..][..m * n];
                    got.copy_from_slice(&start);
                    let dst = MatMut::row_major(got, m, n);
                    let head = misaligned_columns(&kernel, k, &dst);
                    assert_eq!(head, (16 - offset) % 16, "{}", kernel.name);
                    let plans = [(kernel, blocking)];
                    let none = Epilogue::default();
                    oriented_product(&plans, 0.5, lhs, rhs, 2.0, dst, none, threads);
                    for (at, (&got, &start)) in got.iter().zip(&start).enumerate() {
                        let want = 0.5 * product_ab[at] + 2.0 * start;
                        let tol = 1e-5 * (k as f32).sqrt() * (1.0 + want.abs());
                        assert!(
                            (got - want).abs() <= tol,
                            "{} offset {offset} threads {threads}: element {at} {got} vs {want}",
                            kernel.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bands_of_rows_sum_every_element_as_the_undivided_product() {
        let mut rng = StdRng::seed_from_u64(13);
        // Three bands of 528 rows and a partial one; strides wider than the rows; the depth
        // crosses several blocks.
        let (m, k, n, stride) = (3 * BAND_MIN_ROWS + 50, 700, 45, 48);
        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let start: Vec<f32> = (0..m * stride)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let row_bias: Vec<f32> = (0..m).map(|_| rng.random_range(-1.0..1.0)).collect();
        let column_bias: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (lhs, rhs) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
        for bias in [
            Bias::None,
            Bias::PerRow(&row_bias),
            Bias::PerColumn(&column_bias),
        ] {
            let epilogue = Epilogue { bias, relu: true };
            fn view(data: &mut [f32], (m, n, stride): (usize, usize, usize)) -> MatMut<'_> {
                MatMut::strided(data, m, n, stride, 1)
            }
            let shape = (m, n, stride);
            let mut whole = start.clone();
            oriented_product(
                plans(),
                0.5,
                lhs,
                rhs,
                2.0,
                view(&mut whole, shape),
                epilogue,
                1,
            );
            let mut banded = start.clone();
            row_bands(0.5, lhs, rhs, 2.0, view(&mut banded, shape), epilogue, 4);
            assert!(
                whole
                    .iter()
                    .zip(&banded)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{bias:?}"
            );
            // The same product into a column-major destination, through the public path.
            let mut transposed = vec![0.0f32; m * n];
            gemm(
                0.5,
                rhs.t(),
                lhs.t(),
                0.0,
                MatMut::row_major(&mut transposed, m, n).t(),
                epilogue.t(),
                2,
            );
            let mut fresh = vec![0.0f32; m * n];
            let dst = MatMut::row_major(&mut fresh, m, n);
            oriented_product(plans(), 0.5, lhs, rhs, 0.0, dst, epilogue, 1);
            assert!(
                fresh
                    .iter()
                    .zip(&transposed)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{bias:?} transposed"
            );
        }
    }

    #[test]
    fn non_finite_inputs_propagate_as_in_ieee_arithmetic() {
        for kernel in runnable_kernels() {
            let a = [f32::NAN, 1.0, f32::INFINITY, 0.0];
            let b = [1.0, 2.0];
            let mut out = [0.0; 2];
            let blocking = Blocking {
                kc: 64,
                nc: kernel.nr,
            };
            let lhs = MatRef::row_major(&a, 2, 2);
            let rhs = MatRef::row_major(&b, 2, 1);
            product(
                &kernel,
                blocking,
                1.0,
                lhs,
                rhs,
                0.0,
                MatMut::row_major(&mut out, 2, 1),
                Epilogue::default(),
                0..1,
                1,
            );
            // NaN·1 + 1·2 = NaN; ∞·1 + 0·2 = ∞.
            assert!(
                out[0].is_nan() && out[1] == f32::INFINITY,
                "{}: {out:?}",
                kernel.name
            );
        }
    }

    #[test]
    fn every_kernel_applies_the_epilogue_as_the_scalar_pass_would() {
        // The bias and ReLU applied as each tile is stored equal, to the bit, the product
        // stored plainly and then finished element by element: full and edge tiles, several
        // depth blocks (applied after the last only), a bias per row or per column, either
        // orientation of the product (a column-major destination turns it around), with NaN,
        // −0 and negative values for ReLU to keep or clear.
        let mut rng = StdRng::seed_from_u64(13);
        for kernel in runnable_kernels() {
            let blocking = Blocking {
                kc: 32,
                nc: 2 * kernel.nr,
            };
            let plans = [(kernel, blocking)];
            // 530 columns: rows of the right operand far apart, read in place a column block
            // at a time through all three depth blocks (`product`'s `columns_outer`).
            for &(m, k, n) in &[
                (2 * kernel.mr + 3, 70, 3 * kernel.nr + 5),
                (5, 9, 200),
                (2 * kernel.mr + 3, 70, 530),
            ] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let mut row_bias: Vec<f32> = (0..m).map(|_| rng.random_range(-2.0..2.0)).collect();
                let mut col_bias: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
                row_bias[1] = f32::NAN;
                col_bias[2] = -0.0;
                let (lhs, rhs) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
                for bias in [
                    Bias::None,
                    Bias::PerRow(&row_bias),
                    Bias::PerColumn(&col_bias),
                ] {
                    for relu in [false, true] {
                        let epilogue = Epilogue { bias, relu };
                        for column_major in [false, true] {
                            let run = |epilogue: Epilogue<'_>| {
                                let mut out = vec![0.0f32; m * n];
                                let dst = if column_major {
                                    MatMut::row_major(&mut out, n, m).t()
                                } else {
                                    MatMut::row_major(&mut out, m, n)
                                };
                                oriented_product(&plans, 1.0, lhs, rhs, 0.0, dst, epilogue, 1);
                                out
                            };
                            let (plain, fused) = (run(Epilogue::default()), run(epilogue));
                            for (at, (&plain, &fused)) in plain.iter().zip(&fused).enumerate() {
                                let (i, j) = if column_major {
                                    (at % m, at / m)
                                } else {
                                    (at / n, at % n)
                                };
                                let want = epilogue.finish(plain, i, j);
                                assert!(
                                    want.to_bits() == fused.to_bits()
                                        || (want.is_nan() && fused.is_nan()),
                                    "{} m {m} k {k} n {n} {epilogue:?} column-major \
                                     {column_major}: ({i}, {j}) {fused} vs {want}",
                                    kernel.name
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
