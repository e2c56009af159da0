//! Pointwise (1x1, stride 1, unpadded) convolutions: the input planes of an image already are
//! the GEMM's operand `[C, H·W]`, so every pass is a plain GEMM with no copy at all. The
//! forward of a 1x1 convolution at a larger stride (ResNet's projection shortcuts) gathers the
//! pixels it reads into such planes first ([`subsampled`]).

use super::epilogue::Epilogue;
use super::gradient_gemm::{self, ColumnSource, GradientRows, SourceRuns, filter_gradient_gemm};
use super::parallel::parallel_over_images;
use super::shape::Conv2dShape;
use super::shape::{Conv2dSpec, ConvPath};
use super::shifted::{self, Rows, shifted_gemm_reduce};
use crate::kernels::gemm::{MatMut, MatRef, gemm, gemm_with_epilogue};
use crate::kernels::scratch::with_scratch;
use crate::kernels::vector::{Vector, VectorKernel, split_pairs, with_vector};

/// The weight of group `g` as `[O/groups, C/groups]`.
fn group_weight<'a>(weight: &'a [f32], s: &Conv2dShape, g: usize) -> MatRef<'a> {
    let (cg, og) = (s.group_in(), s.group_out());
    MatRef::row_major(&weight[g * og * cg..(g + 1) * og * cg], og, cg)
}

/// `Y_g = epilogue(W_g · X_g)` for each group of one image: the bias and activation applied as
/// the GEMM stores each tile.
pub(super) fn forward_image(
    x: &[f32],
    weight: &[f32],
    s: &Conv2dShape,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) {
    let (cg, og, plane) = (s.group_in(), s.group_out(), s.in_plane());
    for g in 0..s.spec.groups {
        let x_g = MatRef::row_major(&x[g * cg * plane..(g + 1) * cg * plane], cg, plane);
        let y_g = MatMut::row_major(&mut out[g * og * plane..(g + 1) * og * plane], og, plane);
        let epilogue = epilogue.rows(g * og, og).for_gemm();
        gemm_with_epilogue(1.0, group_weight(weight, s, g), x_g, 0.0, y_g, epilogue);
    }
}

/// For a 1x1 convolution at a stride above 1, unpadded, the pointwise convolution of the
/// pixels it reads (one in `sh·sw`, gathered into `[C, OH, OW]` planes by
/// [`forward_image_subsampled`]); `None` for other shapes.
///
/// On ResNet-18's shortcuts (2 threads, Intel Xeon model 207, weights packed per call both
/// ways, alternated in one process, medians) the GEMM on the gathered planes ran 92-96 GFLOP/s
/// for one image where the shifted kernel on the stride-2 phase planes ran 62-76 (it splits
/// the whole input into four phase planes to read one), and 117-119 against 90-104 at batch 8.
pub(super) fn subsampled(s: &Conv2dShape) -> Option<Conv2dShape> {
    let strided_1x1 = s.kernel_height == 1
        && s.kernel_width == 1
        && s.spec.stride != [1, 1]
        && s.spec.padding == Default::default();
    strided_1x1.then_some(Conv2dShape {
        in_height: s.out_height,
        in_width: s.out_width,
        spec: Conv2dSpec {
            stride: [1, 1],
            ..s.spec
        },
        path: ConvPath::Pointwise,
        ..*s
    })
}

/// The forward of one image of `s` (a shape [`subsampled`] gives `sub` for): the pixels it
/// reads gathered into planes, then the pointwise GEMM on them.
pub(super) fn forward_image_subsampled(
    x: &[f32],
    weight: &[f32],
    s: &Conv2dShape,
    sub: &Conv2dShape,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
) {
    assert_eq!(x.len(), s.in_channels * s.in_plane());
    with_scratch(s.in_channels * s.out_plane(), |gathered| {
        if s.out_width > 0 {
            with_vector(Subsample {
                x,
                s,
                out: &mut *gathered,
            });
        }
        forward_image(gathered, weight, sub, epilogue, out)
    })
}

/// The pixels a 1x1 convolution of stride `[sh, sw]` reads of one image `x` `[C, H, W]`:
/// `out[c][oh][ow] = x[c][oh·sh][ow·sw]`, `[C, OH, OW]`.
struct Subsample<'a> {
    x: &'a [f32],
    s: &'a Conv2dShape,
    out: &'a mut [f32],
}

impl VectorKernel for Subsample<'_> {
    type Output = ();

    #[inline(always)]
    fn run<V: Vector>(self) {
        let Subsample { x, s, out } = self;
        let [sh, sw] = s.spec.stride;
        let (w, ow) = (s.in_width, s.out_width);
        for (i, out_row) in out.chunks_exact_mut(ow).enumerate() {
            let (c, oh) = (i / s.out_height, i % s.out_height);
            let row = &x[(c * s.in_height + oh * sh) * w..][..w];
            if sw != 2 {
                for (o, &v) in out_row.iter_mut().zip(row.iter().step_by(sw)) {
                    *o = v;
                }
                continue;
            }
            // Even columns a vector pair at a time; an odd width's last column after them.
            let pairs = (w / 2).min(ow);
            let evens = &row[..2 * pairs];
            for at in (0..2 * pairs).step_by(2 * V::LANES) {
                let count = ((2 * pairs - at) / 2).min(V::LANES);
                // SAFETY: `with_vector` runs this with a type the CPU supports; `split_pairs`
                // reads within `evens` (`at < 2·pairs`), and `count` floats from `at / 2`
                // end by `pairs <= OW`, inside `out_row`.
                unsafe {
                    let (even, _) = split_pairs::<V>(evens, at);
                    even.store_first(out_row.as_mut_ptr().add(at / 2), count);
                }
            }
            if pairs < ow {
                out_row[pairs] = row[2 * pairs];
            }
        }
    }
}

/// `dX_g = W_gᵀ · dY_g` for each group of one image.
pub(super) fn backward_data_image(gy: &[f32], weight: &[f32], s: &Conv2dShape, gx: &mut [f32]) {
    let (cg, og, plane) = (s.group_in(), s.group_out(), s.in_plane());
    for g in 0..s.spec.groups {
        let gy_g = MatRef::row_major(&gy[g * og * plane..(g + 1) * og * plane], og, plane);
        let gx_g = MatMut::row_major(&mut gx[g * cg * plane..(g + 1) * cg * plane], cg, plane);
        gemm(1.0, group_weight(weight, s, g).t(), gy_g, 0.0, gx_g);
    }
}

/// Adds `Σ_{n in images} dY_g,n · X_g,nᵀ` into each group's `grad_weight`.
///
/// With AVX-512 or AVX2 and the images split over threads, `X`'s planes are read in place (they
/// are the column matrix): with many input channels by [`filter_gradient_gemm`] (`dY`
/// transposed into a panel a chunk of positions at a time), with few as dot products of the
/// two operands ([`shifted_gemm_reduce`], one image per call: a thread's images in one call
/// measured half as fast, each tile then streaming every image). Both measured ahead of a
/// packed GEMM, which transposes both operands (packing the 3136-deep planes of a 56x56 image
/// took as long as the product). With fewer images than threads the packed GEMM, which
/// parallelises inside.
pub(super) fn accumulate_filter_gradient(
    input: &[f32],
    grad_output: &[f32],
    s: &Conv2dShape,
    images: std::ops::Range<usize>,
    grad_weight: &mut [f32],
) {
    let (cg, og, plane) = (s.group_in(), s.group_out(), s.in_plane());
    let in_place = shifted::reduce_available()
        && (parallel_over_images(s.batch) || rayon::current_num_threads() == 1);
    let offsets: Vec<usize> = (0..cg).map(|c| c * plane).collect();
    let runs = SourceRuns::contiguous(plane);
    let sources: Vec<ColumnSource> = offsets
        .iter()
        .map(|&offset| ColumnSource::everywhere(offset, runs))
        .collect();
    for g in 0..s.spec.groups {
        let x_g = |n: usize| &input[(n * s.in_channels + g * cg) * plane..][..cg * plane];
        let gy_g = |n: usize| &grad_output[(n * s.out_channels + g * og) * plane..][..og * plane];
        let gw = &mut grad_weight[g * og * cg..(g + 1) * og * cg];
        if in_place && gradient_gemm::pays(cg) {
            let first = images.start;
            let image = |n: usize| {
                let gy = GradientRows {
                    data: gy_g(first + n),
                    rows: og,
                    row_stride: plane,
                };
                (gy, x_g(first + n))
            };
            filter_gradient_gemm(og, cg, gw, |gemm| {
                gemm.add_images(&sources, runs, images.len(), image)
            });
            continue;
        }
        for n in images.clone() {
            if in_place {
                let rows = Rows {
                    data: gy_g(n),
                    rows: og,
                    row_stride: plane,
                    image_stride: 0,
                };
                shifted_gemm_reduce(rows, x_g(n), &offsets, 0, 1, plane, &mut *gw);
            } else {
                gemm(
                    1.0,
                    MatRef::row_major(gy_g(n), og, plane),
                    MatRef::row_major(x_g(n), cg, plane).t(),
                    1.0,
                    MatMut::row_major(&mut *gw, og, cg),
                );
            }
        }
    }
}
