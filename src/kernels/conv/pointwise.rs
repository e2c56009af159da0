//! Pointwise (1x1, stride 1, unpadded) convolutions: the input planes of an image already are
//! the GEMM's operand `[C, H·W]`, so every pass is a plain GEMM with no copy at all.

use super::epilogue::Epilogue;
use super::gradient_gemm::{self, GradientRows, filter_gradient_gemm};
use super::parallel::parallel_over_images;
use super::shape::Conv2dShape;
use super::shifted::{self, Rows, shifted_gemm_reduce};
use crate::kernels::gemm::{MatMut, MatRef, gemm, gemm_with_epilogue};

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
                gemm.add_images(&offsets, plane, images.len(), image)
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
