//! ONNX export checked by the real tools: every zoo model and a sequence of every layer kind are
//! exported, and `scripts/onnx_check.py` runs `onnx.checker.check_model` and compares ONNX
//! Runtime's logits with striate's `predict` on the same input (max |difference| <= 1e-4).
//! Without `onnx` and `onnxruntime` for `python3`, the comparison is reported as skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::Tensor;
use striate::models::{self, InceptionConfig, MiniXception, ResNetConfig, VggConfig};
use striate::nn::{
    AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm2d, Conv2dConfig, Dense, Dropout,
    Elu, Flatten, Gelu, GeluApproximation, GlobalAvgPool2d, GlobalMaxPool2d, Hardswish, LeakyRelu,
    LogSoftmax, MaxPool2d, Mish, Module, Padding, Relu, Residual, Sequential, Sigmoid, Silu,
    Softmax, Softplus, Tanh,
};

fn python_has_onnx() -> bool {
    Command::new("python3")
        .args(["-c", "import onnx, onnxruntime"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Gives every batch norm non-trivial running statistics and affine parameters, so the
/// inference form is really exercised. γ stays below 1 so that deep residual stacks keep their
/// logits near 1 (with γ up to 1.5, ResNet-50's reached 133, and f32 rounding alone came within
/// a factor 2 of the 1e-4 tolerance).
fn randomize_batch_norms(model: &mut dyn Module, rng: &mut StdRng) {
    model.visit_buffers_mut(&mut |name, b| {
        if name.ends_with("running_mean") {
            *b = Tensor::rand_uniform(b.shape(), -0.5, 0.5, rng);
        } else if name.ends_with("running_var") {
            *b = Tensor::rand_uniform(b.shape(), 0.5, 2.0, rng);
        }
    });
    model.visit_params_mut(&mut |name, p| {
        if p.shape().len() == 1 && !name.ends_with("fc.bias") {
            let shape = p.shape().to_vec();
            p.set_value(Tensor::rand_uniform(&shape, 0.2, 0.8, rng));
        }
    });
}

/// A sequence with every layer kind striate has (but those in [`every_new_layer`]), and the
/// convolution options.
fn every_layer(rng: &mut StdRng) -> Sequential {
    let body = Sequential::new()
        .push(Conv2dConfig::new(8, 8, 3).padding(1).groups(4).init(rng))
        .push(BatchNorm2d::new(8));
    Sequential::new()
        .push(
            Conv2dConfig::new(3, 8, 3)
                .stride(2)
                .padding(2)
                .dilation(2)
                .init(rng),
        )
        .push(BatchNorm2d::new(8))
        .push(LeakyRelu::new(0.1))
        .push(Residual::new(body))
        .push(
            Conv2dConfig::new(8, 8, [3, 1])
                .padding(Padding::Same)
                .bias(false)
                .init(rng),
        )
        .push(Elu::new(0.7))
        .push(MaxPool2d::new(3).stride(2).padding(1))
        .push(Sigmoid)
        .push(
            AvgPool2d::new(2)
                .stride(1)
                .padding(1)
                .count_include_pad(false),
        )
        .push(Tanh)
        .push(AvgPool2d::new(2).ceil_mode(true))
        .push(AdaptiveAvgPool2d::new(2))
        .push(Flatten::new())
        .push(Dropout::new(0.3))
        .push(Dense::new(32, 16, rng))
        .push(Softmax::new(1))
        .push(Dense::new(16, 10, rng))
        .push(LogSoftmax::new(1))
}

/// A sequence with every layer that opset 17 lacks or that is decomposed on export (GELU both
/// ways, SiLU, softplus with β = 1 and β ≠ 1, hard swish, Mish) and adaptive max pooling both
/// ways (`MaxPool` for even bins, `GlobalMaxPool` to 1x1), with a convolution before each
/// activation so each sees negative and positive inputs. Every `β·x` stays far below the
/// softplus threshold, which the export drops (as PyTorch's does).
fn every_new_layer(rng: &mut StdRng) -> Sequential {
    let conv = |rng: &mut StdRng, from: usize, kernel: usize| {
        Conv2dConfig::new(from, 8, kernel)
            .padding(kernel / 2)
            .init(rng)
    };
    Sequential::new()
        .push(conv(rng, 3, 3))
        .push(Gelu::default())
        .push(conv(rng, 8, 3))
        .push(Gelu::new(GeluApproximation::Tanh))
        .push(conv(rng, 8, 1))
        .push(Silu)
        .push(AdaptiveMaxPool2d::new([4, 2]))
        .push(conv(rng, 8, 1))
        .push(Hardswish)
        .push(conv(rng, 8, 1))
        .push(Softplus::new(2.0, 20.0))
        .push(conv(rng, 8, 1))
        .push(Mish)
        .push(conv(rng, 8, 1))
        .push(Softplus::default())
        .push(AdaptiveMaxPool2d::new(1))
        .push(Flatten::new())
        .push(Dense::new(8, 10, rng))
}

fn write_case(root: &Path, name: &str, model: &dyn Module, input: &Tensor) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    striate::onnx::export(model, input.shape(), dir.join("model.onnx")).unwrap();
    let logits = model.predict(input);
    let bytes =
        |t: &Tensor| -> Vec<u8> { t.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect() };
    std::fs::write(dir.join("input.bin"), bytes(input)).unwrap();
    std::fs::write(dir.join("logits.bin"), bytes(&logits)).unwrap();
    std::fs::write(
        dir.join("shapes.json"),
        format!(
            "{{\"input\": {:?}, \"logits\": {:?}}}",
            input.shape(),
            logits.shape()
        ),
    )
    .unwrap();
    dir
}

#[test]
fn exported_models_run_in_onnx_runtime_with_striates_logits() {
    let mut rng = StdRng::seed_from_u64(7);
    let mnist = |rng: &mut StdRng| Tensor::rand_uniform(&[3, 1, 28, 28], 0.0, 1.0, rng);
    let rgb32 = |rng: &mut StdRng| Tensor::rand_uniform(&[2, 3, 32, 32], -1.0, 1.0, rng);
    let mut cases: Vec<(&str, Box<dyn Module>, Tensor)> = vec![
        (
            "mnist_cnn",
            Box::new(models::mnist_cnn(10, &mut rng)),
            mnist(&mut rng),
        ),
        (
            "every_layer",
            Box::new(every_layer(&mut rng)),
            Tensor::rand_uniform(&[2, 3, 24, 24], -1.0, 1.0, &mut rng),
        ),
        (
            "vgg11_bn_small",
            Box::new(
                VggConfig::new(11)
                    .batch_norm(true)
                    .small_input()
                    .num_classes(10)
                    .init(&mut rng),
            ),
            rgb32(&mut rng),
        ),
        (
            "vgg16_small",
            Box::new(
                VggConfig::new(16)
                    .small_input()
                    .in_channels(1)
                    .num_classes(10)
                    .init(&mut rng),
            ),
            mnist(&mut rng),
        ),
        (
            "resnet18_small",
            Box::new(
                ResNetConfig::resnet18(10)
                    .small_input()
                    .width(16)
                    .init(&mut rng),
            ),
            rgb32(&mut rng),
        ),
        (
            "resnet50_small",
            Box::new(
                ResNetConfig::resnet50(10)
                    .small_input()
                    .in_channels(1)
                    .width(8)
                    .init(&mut rng),
            ),
            mnist(&mut rng),
        ),
        (
            "resnet18_imagenet_stem",
            Box::new(ResNetConfig::resnet18(10).width(8).init(&mut rng)),
            Tensor::rand_uniform(&[2, 3, 64, 64], -1.0, 1.0, &mut rng),
        ),
        (
            "inception_block",
            Box::new(InceptionConfig::new(8, 4, 4, 6, 2, 4, 4).init(&mut rng)),
            Tensor::rand_uniform(&[2, 8, 9, 9], -1.0, 1.0, &mut rng),
        ),
        (
            "inception_paper_5x5",
            Box::new(
                InceptionConfig::new(8, 4, 4, 6, 2, 4, 4)
                    .paper_5x5()
                    .init(&mut rng),
            ),
            Tensor::rand_uniform(&[2, 8, 9, 9], -1.0, 1.0, &mut rng),
        ),
        (
            "mini_xception",
            Box::new(MiniXception::new(1, 10, 8, &mut rng)),
            mnist(&mut rng),
        ),
        (
            "global_max_head",
            Box::new(
                Sequential::new()
                    .push(Conv2dConfig::new(1, 4, 3).init(&mut rng))
                    .push(Relu)
                    .push(GlobalMaxPool2d),
            ),
            mnist(&mut rng),
        ),
        (
            "global_avg_head",
            Box::new(
                Sequential::new()
                    .push(Conv2dConfig::new(1, 4, 3).init(&mut rng))
                    .push(GlobalAvgPool2d),
            ),
            mnist(&mut rng),
        ),
        (
            "every_new_layer",
            Box::new(every_new_layer(&mut rng)),
            Tensor::rand_uniform(&[2, 3, 16, 16], -4.0, 4.0, &mut rng),
        ),
    ];
    // Each new layer alone too, so its values are compared directly, with no later layer to
    // damp a difference (inputs up to ±6 reach hard swish's flat parts, βx stays below 20).
    let alone: [(&str, Box<dyn Module>); 9] = [
        ("gelu", Box::new(Gelu::default())),
        ("gelu_tanh", Box::new(Gelu::new(GeluApproximation::Tanh))),
        ("silu", Box::new(Silu)),
        ("softplus", Box::new(Softplus::default())),
        ("softplus_beta_2", Box::new(Softplus::new(2.0, 20.0))),
        ("hardswish", Box::new(Hardswish)),
        ("mish", Box::new(Mish)),
        (
            "adaptive_max_pool_4x2",
            Box::new(AdaptiveMaxPool2d::new([4, 2])),
        ),
        ("adaptive_max_pool_1", Box::new(AdaptiveMaxPool2d::new(1))),
    ];
    for (name, layer) in alone {
        let input = Tensor::rand_uniform(&[2, 3, 8, 8], -6.0, 6.0, &mut rng);
        cases.push((name, layer, input));
    }
    for (_, model, _) in &mut cases {
        randomize_batch_norms(model.as_mut(), &mut rng);
    }

    let root = std::env::temp_dir().join(format!("striate-onnx-{}", std::process::id()));
    let dirs: Vec<PathBuf> = cases
        .iter()
        .map(|(name, model, input)| write_case(&root, name, model.as_ref(), input))
        .collect();

    if !python_has_onnx() {
        println!(
            "skipped: python3 cannot import onnx and onnxruntime (pip install onnx onnxruntime)"
        );
        std::fs::remove_dir_all(&root).unwrap();
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/onnx_check.py");
    let out = Command::new("python3")
        .arg(script)
        .args(&dirs)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "onnx_check.py failed:\n{report}");
    assert_eq!(
        report.lines().filter(|l| l.ends_with(" ok")).count(),
        cases.len()
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn an_adaptive_pool_that_onnx_cannot_express_is_an_error() {
    let model = Sequential::new().push(AdaptiveAvgPool2d::new(3));
    let path = std::env::temp_dir().join(format!("striate-onnx-bad-{}.onnx", std::process::id()));
    let err = striate::onnx::export(&model, &[1, 1, 7, 7], &path).unwrap_err();
    assert!(err.to_string().contains("AdaptiveAvgPool2d"), "{err}");
    assert!(!path.exists());
}

#[test]
fn an_adaptive_max_pool_that_onnx_cannot_express_is_an_error() {
    let model = Sequential::new().push(AdaptiveMaxPool2d::new([2, 3]));
    let path =
        std::env::temp_dir().join(format!("striate-onnx-bad-max-{}.onnx", std::process::id()));
    let err = striate::onnx::export(&model, &[1, 1, 4, 7], &path).unwrap_err();
    assert!(err.to_string().contains("AdaptiveMaxPool2d"), "{err}");
    assert!(!path.exists());
}
