//! Grad-CAM and saliency of the MNIST CNN against PyTorch (pytorch-grad-cam's definition), on
//! the maps `scripts/gradcam_fixture.py` stored in `tests/fixtures/explain/gradcam.safetensors`.

use std::collections::HashMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::Tensor;
use striate::explain::{grad_cam, saliency};
use striate::io::read_safetensors;
use striate::models::mnist_cnn;
use striate::nn::{Module, Sequential};

/// The fixture script's generator: a 64-bit LCG, the top 24 bits of the state as a fraction
/// mapped to [-1, 1) and scaled by 1/sqrt(fan_in), in f64, rounded to f32.
fn fixed_weights(model: &mut Sequential) {
    let mut state: u64 = 2024;
    model.visit_params_mut(&mut |name, p| {
        let fan_in = match name {
            "0.weight" | "0.bias" => 9.0,
            "3.weight" | "3.bias" => 288.0,
            "7.weight" | "7.bias" => 3136.0,
            _ => 128.0,
        };
        let bound = 1.0 / f64::sqrt(fan_in);
        let shape = p.shape().to_vec();
        let values = (0..p.len())
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (((state >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) * bound) as f32
            })
            .collect();
        p.set_value(Tensor::from_vec(values, &shape).unwrap());
    });
}

fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let (ma, mb) = (mean(a), mean(b));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64 - ma, y as f64 - mb);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa * bb).sqrt()
}

#[test]
fn grad_cam_and_saliency_match_pytorch() {
    let fixture: HashMap<String, Tensor> = read_safetensors(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/explain/gradcam.safetensors"
    ))
    .unwrap()
    .into_iter()
    .collect();
    let mut model = mnist_cnn(10, &mut StdRng::seed_from_u64(0));
    fixed_weights(&mut model);

    let input = &fixture["input"];
    let logits = model.predict(input);
    assert!(
        logits.all_close(&fixture["logits"], 1e-4, 1e-4),
        "the fixed weights differ from the fixture's"
    );
    let classes = fixture["class"].as_slice();
    let mut worst = 1.0f64;
    for (i, &class) in classes.iter().enumerate() {
        let image = input.narrow(0, i, 1).reshape(&[1, 28, 28]);
        for layer in ["0", "3"] {
            let ours = grad_cam(&model, layer, &image, class as usize);
            let theirs = fixture[&format!("gradcam.{layer}")].narrow(0, i, 1);
            let r = correlation(ours.as_slice(), theirs.as_slice());
            let max_diff = ours
                .as_slice()
                .iter()
                .zip(theirs.as_slice())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            println!(
                "digit {i}, layer {layer}: Grad-CAM correlation {r:.6}, max |diff| {max_diff:.2e}"
            );
            assert!(r >= 0.999, "digit {i}, layer {layer}: correlation {r}");
            assert!(
                max_diff < 1e-4,
                "digit {i}, layer {layer}: max |diff| {max_diff}"
            );
            worst = worst.min(r);
        }
        let ours = saliency(&model, &image, class as usize);
        let theirs = fixture["saliency"].narrow(0, i, 1);
        let r = correlation(ours.as_slice(), theirs.as_slice());
        println!("digit {i}: saliency correlation {r:.6}");
        assert!(r >= 0.999, "digit {i}: saliency correlation {r}");
        assert!(ours.reshape(&[1, 28, 28]).all_close(&theirs, 1e-4, 1e-3));
    }
    println!("lowest Grad-CAM correlation: {worst:.6}");
}
