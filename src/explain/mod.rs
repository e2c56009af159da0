//! What a network looks at: [`grad_cam`] (class activation maps of a named conv layer) and
//! [`saliency`] (vanilla input gradients), computed on the tape.
//!
//! Both run the model in inference mode (dropout off, batch norm on running statistics) on a
//! tape that still records ([`Tape::inference_with_gradients`]), and differentiate the class
//! score, the raw logit, as pytorch-grad-cam's `ClassifierOutputTarget` does.

use crate::autograd::{Tape, Var};
use crate::models::FeatureExtraction;
use crate::nn::Module;
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, expect_rank};
use crate::tensor::reduce::{max_propagating_nan, min_propagating_nan};
use crate::transforms::functional::resize;

/// Grad-CAM (Selvaraju et al., 2017) of `class` for one `image` `[C, H, W]`, at the output of
/// the stage named `layer_name` (a conv layer, say `"3"` in a [`Sequential`](crate::nn::Sequential)
/// or `"layer4"` in a ResNet; see [`FeatureExtraction::stage_names`]).
///
/// With `A` the layer's output `[K, h, w]` and `G = ∂ score / ∂ A`, each channel's weight is
/// the mean of its gradient, `wₖ = mean(Gₖ)`; the map is `ReLU(Σₖ wₖ Aₖ)`, scaled to
/// `[0, 1]` by subtracting its minimum and dividing by its maximum (+1e-7), and upsampled to
/// `[H, W]` bilinearly (PyTorch's `align_corners=False`), as pytorch-grad-cam's `GradCAM`
/// does.
///
/// # Panics
///
/// If `image` is not `[C, H, W]`, no stage is named `layer_name`, the layer's output is not
/// `[1, K, h, w]`, or `class` is not below the number of outputs.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::explain::grad_cam;
/// use striate::models::mnist_cnn;
/// use striate::Tensor;
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let model = mnist_cnn(10, &mut rng);
/// let digit = Tensor::rand_uniform(&[1, 28, 28], 0.0, 1.0, &mut rng);
/// let map = grad_cam(&model, "3", &digit, 7); // the second conv layer
/// assert_eq!(map.shape(), &[28, 28]);
/// assert!(map.as_slice().iter().all(|&v| (0.0..=1.0).contains(&v)));
/// ```
pub fn grad_cam(
    model: &(impl FeatureExtraction + ?Sized),
    layer_name: &str,
    image: &Tensor,
    class: usize,
) -> Tensor {
    let [height, width] = image_size("grad_cam", image);
    let batch = image.reshape(&[1, image.shape()[0], height, width]);
    let activations = model.features(&batch, layer_name);
    let shape = activations.shape().to_vec();
    if shape.len() != 4 || shape[0] != 1 {
        contract_violation(
            "grad_cam",
            format_args!("layer {layer_name:?} must output [1, K, h, w] maps"),
            format_args!("output {shape:?}"),
        );
    }
    let tape = Tape::inference_with_gradients();
    let a = tape.variable(activations.clone());
    let score = class_score("grad_cam", model.forward_from(a, layer_name), class);
    let grads = score.backward();
    let plane = shape[2] * shape[3];
    let zeros = Tensor::zeros(&shape);
    let gradient = grads.wrt(a).unwrap_or(&zeros);
    let mut cam = vec![0.0f32; plane];
    for (maps, grads) in activations
        .as_slice()
        .chunks(plane)
        .zip(gradient.as_slice().chunks(plane))
    {
        let weight = grads.iter().sum::<f32>() / plane as f32;
        for (c, &m) in cam.iter_mut().zip(maps) {
            *c += weight * m;
        }
    }
    // ReLU that keeps NaN (as numpy's maximum in pytorch-grad-cam): a NaN map is not hidden.
    let cam: Vec<f32> = cam.into_iter().map(crate::kernels::relu).collect();
    // Scaled before upsampling, as pytorch-grad-cam does: the upsampled map may not reach the
    // extremes of the coarse one.
    let cam = scale_to_unit(&Tensor::from_vec(cam, &[1, shape[2], shape[3]]).expect("a plane"));
    resize(&cam, (height, width)).reshape(&[height, width])
}

/// Vanilla gradient saliency (Simonyan et al., 2013) of `class` for one `image` `[C, H, W]`:
/// `|∂ score / ∂ image|`, the maximum over channels, `[H, W]` (not rescaled).
///
/// # Panics
///
/// If `image` is not `[C, H, W]` or `class` is not below the number of outputs.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::explain::saliency;
/// use striate::models::mnist_cnn;
/// use striate::Tensor;
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let model = mnist_cnn(10, &mut rng);
/// let digit = Tensor::rand_uniform(&[1, 28, 28], 0.0, 1.0, &mut rng);
/// let map = saliency(&model, &digit, 3);
/// assert_eq!(map.shape(), &[28, 28]);
/// assert!(map.as_slice().iter().any(|&v| v > 0.0));
/// ```
pub fn saliency(model: &(impl Module + ?Sized), image: &Tensor, class: usize) -> Tensor {
    let [height, width] = image_size("saliency", image);
    let channels = image.shape()[0];
    let tape = Tape::inference_with_gradients();
    let x = tape.variable(image.reshape(&[1, channels, height, width]));
    let score = class_score("saliency", model.forward(x), class);
    let grads = score.backward();
    let plane = height * width;
    let mut map = vec![0.0f32; plane];
    if let Some(gradient) = grads.wrt(x) {
        for channel in gradient.as_slice().chunks(plane) {
            for (m, &g) in map.iter_mut().zip(channel) {
                // not f32::max, which would drop a NaN
                let g = g.abs();
                if g > *m || g.is_nan() {
                    *m = g;
                }
            }
        }
    }
    Tensor::from_vec(map, &[height, width]).expect("a plane of the image's size")
}

fn image_size(op: &str, image: &Tensor) -> [usize; 2] {
    expect_rank(op, "image", image.shape(), 3);
    [image.shape()[1], image.shape()[2]]
}

/// The logit of `class` in `[1, classes]` outputs, as a one-element loss.
fn class_score<'t>(op: &str, logits: Var<'t>, class: usize) -> Var<'t> {
    let shape = logits.shape();
    if shape.len() != 2 || class >= shape[1] {
        contract_violation(
            op,
            "class must index the model's [1, classes] output",
            format_args!("class {class}, output {shape:?}"),
        );
    }
    logits.narrow(1, class, 1).sum()
}

/// `(x - min) / (max - min + 1e-7)`: pytorch-grad-cam's `scale_cam_image` (numpy's min and
/// max, which propagate NaN).
fn scale_to_unit(map: &Tensor) -> Tensor {
    let min = map
        .as_slice()
        .iter()
        .copied()
        .fold(f32::INFINITY, min_propagating_nan);
    let shifted = map.map(|v| v - min);
    let max = shifted
        .as_slice()
        .iter()
        .copied()
        .fold(0.0, max_propagating_nan);
    shifted.map(|v| v / (max + 1e-7))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::nn::{Conv2dConfig, Dense, Flatten, Sequential};

    #[test]
    fn grad_cam_of_a_linear_head_is_the_weighted_activation() {
        // conv (1 -> 2 channels, 1x1) then flatten then dense: the gradient of the score with
        // respect to each map is the dense row, so the weights are its channel means.
        let mut rng = StdRng::seed_from_u64(0);
        let model = Sequential::new()
            .push(Conv2dConfig::new(1, 2, 1).init(&mut rng))
            .push(Flatten::new())
            .push(Dense::new(2 * 2 * 2, 3, &mut rng));
        let image = Tensor::rand_uniform(&[1, 2, 2], -1.0, 1.0, &mut rng);
        let map = grad_cam(&model, "0", &image, 1);
        let a = model.features(&image.reshape(&[1, 1, 2, 2]), "0");
        let mut w = Tensor::zeros(&[1]);
        model.layers()[2].visit_params(&mut |name, p| {
            if name == "weight" {
                w = p.value().clone();
            }
        });
        let row = &w.as_slice()[8..16];
        let weights = [
            row[..4].iter().sum::<f32>() / 4.0,
            row[4..].iter().sum::<f32>() / 4.0,
        ];
        let raw: Vec<f32> = (0..4)
            .map(|i| {
                crate::kernels::relu(
                    weights[0] * a.as_slice()[i] + weights[1] * a.as_slice()[4 + i],
                )
            })
            .collect();
        let expected = scale_to_unit(&Tensor::from_vec(raw, &[2, 2]).unwrap());
        assert!(
            map.all_close(&expected, 1e-5, 1e-5),
            "{map:?} vs {expected:?}"
        );
    }

    #[test]
    fn saliency_of_a_linear_model_is_its_weight_row() {
        let mut rng = StdRng::seed_from_u64(1);
        let model = Sequential::new()
            .push(Flatten::new())
            .push(Dense::new(2 * 3, 2, &mut rng));
        let map = saliency(&model, &Tensor::ones(&[2, 1, 3]), 0);
        let mut w = Tensor::zeros(&[1]);
        model.layers()[1].visit_params(&mut |name, p| {
            if name == "weight" {
                w = p.value().clone();
            }
        });
        let row = &w.as_slice()[..6];
        let expected: Vec<f32> = (0..3).map(|i| row[i].abs().max(row[3 + i].abs())).collect();
        assert_eq!(map.as_slice(), expected.as_slice());
    }

    #[test]
    fn batch_norm_networks_are_explained_in_inference_mode() {
        // A ResNet's batch norms must use (and keep) their running statistics.
        let mut rng = StdRng::seed_from_u64(2);
        let model = crate::models::ResNetConfig::resnet18(4)
            .small_input()
            .width(4)
            .init(&mut rng);
        let image = Tensor::rand_uniform(&[3, 16, 16], -1.0, 1.0, &mut rng);
        let map = grad_cam(&model, "layer3", &image, 2);
        assert_eq!(map.shape(), &[16, 16]);
        assert!(map.as_slice().iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(model.bn1.running_mean(), Tensor::zeros(&[4]));
        // the same map for the image alone as for any call: no batch statistics involved
        assert_eq!(grad_cam(&model, "layer3", &image, 2), map);
        let s = saliency(&model, &image, 2);
        assert_eq!(model.bn1.running_mean(), Tensor::zeros(&[4]));
        assert!(s.as_slice().iter().any(|&v| v > 0.0));
    }

    #[test]
    #[should_panic(expected = "grad_cam: class must index")]
    fn a_class_beyond_the_outputs_panics() {
        let model = Sequential::new()
            .push(Conv2dConfig::new(1, 1, 1).init(&mut StdRng::seed_from_u64(0)))
            .push(Flatten::new());
        grad_cam(&model, "0", &Tensor::ones(&[1, 2, 2]), 9);
    }
}
