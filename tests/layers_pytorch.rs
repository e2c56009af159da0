//! striate's layers against PyTorch: outputs and gradients recorded by
//! `scripts/layer_fixtures.py` in `tests/fixtures/layers.safetensors` (no Python needed here).

use std::collections::HashMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::io::read_safetensors;
use striate::nn::{
    AvgPool2d, BatchNorm, Conv2dConfig, Dense, Elu, LeakyRelu, LogSoftmax, MaxPool2d, Module,
    Padding, Softmax,
};
use striate::{Tape, Tensor};

fn fixtures() -> HashMap<String, Tensor> {
    read_safetensors(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/layers.safetensors"
    ))
    .unwrap()
    .into_iter()
    .collect()
}

#[track_caller]
fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let scale = want.as_slice().iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let worst = got
        .as_slice()
        .iter()
        .zip(want.as_slice())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        worst / scale < 1e-5,
        "{what}: max difference {worst} (scale {scale})"
    );
}

/// Loads the case's parameters into `layer`, runs it on a training (or inference) tape, and
/// compares output, input gradient, parameter gradients and buffers with PyTorch's.
fn check_case(case: &str, mut layer: impl Module, training: bool, data: &HashMap<String, Tensor>) {
    let get = |name: &str| {
        data.get(&format!("{case}.{name}"))
            .unwrap_or_else(|| panic!("missing {case}.{name}"))
            .clone()
    };
    let mut loaded = 0;
    layer.visit_params_mut(&mut |name, p| {
        p.set_value(get(&format!("param.{name}")));
        loaded += 1;
    });
    layer.visit_buffers_mut(&mut |name, b| {
        if let Some(value) = data.get(&format!("{case}.param_buffer.{name}")) {
            *b = value.clone();
        }
    });
    let tape = if training {
        Tape::training()
    } else {
        Tape::inference()
    };
    let x = tape.variable(get("input"));
    let y = layer.forward(x);
    assert_close(&format!("{case} output"), &y.value(), &get("output"));
    let grads = (y * tape.input(get("r"))).sum().backward();
    assert_close(
        &format!("{case} input gradient"),
        grads.wrt(x).unwrap(),
        &get("grad.input"),
    );
    let mut checked = 0;
    layer.visit_params(&mut |name, p| {
        assert_close(
            &format!("{case} gradient of {name}"),
            grads.get(p).unwrap(),
            &get(&format!("grad.param.{name}")),
        );
        checked += 1;
    });
    assert_eq!(checked, loaded);
    layer.visit_buffers(&mut |name, b| {
        if let Some(want) = data.get(&format!("{case}.buffer.{name}")) {
            assert_close(&format!("{case} buffer {name}"), b, want);
        }
    });
}

#[test]
fn conv2d_matches_pytorch() {
    let data = fixtures();
    let mut rng = StdRng::seed_from_u64(0);
    check_case(
        "conv_basic",
        Conv2dConfig::new(3, 4, 3).padding(1).init(&mut rng),
        true,
        &data,
    );
    let grouped = Conv2dConfig::new(4, 6, [3, 2])
        .stride([2, 1])
        .padding([1, 0])
        .dilation([1, 2])
        .groups(2);
    check_case("conv_grouped", grouped.init(&mut rng), true, &data);
    let depthwise = Conv2dConfig::new(3, 6, 3)
        .padding(Padding::Same)
        .groups(3)
        .bias(false);
    check_case("conv_depthwise", depthwise.init(&mut rng), true, &data);
    check_case(
        "conv_same_even",
        Conv2dConfig::new(2, 2, 4)
            .padding(Padding::Same)
            .init(&mut rng),
        true,
        &data,
    );
    check_case(
        "conv_pointwise",
        Conv2dConfig::new(5, 3, 1).init(&mut rng),
        true,
        &data,
    );
}

#[test]
fn dense_matches_pytorch() {
    check_case(
        "dense",
        Dense::new(5, 3, &mut StdRng::seed_from_u64(0)),
        true,
        &fixtures(),
    );
}

#[test]
fn batch_norm_matches_pytorch() {
    let data = fixtures();
    check_case("bn_train", BatchNorm::new(3), true, &data);
    check_case("bn1d_train", BatchNorm::new(4), true, &data);
    // Inference with PyTorch's running statistics loaded as buffers.
    let mut bn = BatchNorm::new(3);
    bn.visit_params_mut(&mut |name, p| p.set_value(data[&format!("bn_eval.param.{name}")].clone()));
    bn.visit_buffers_mut(&mut |name, b| {
        if let Some(v) = data.get(&format!("bn_eval.buffer.{name}")) {
            *b = v.clone();
        }
    });
    assert_close(
        "bn_eval output",
        &bn.predict(&data["bn_eval.input"]),
        &data["bn_eval.output"],
    );
    let tape = Tape::inference();
    let y = bn
        .forward(tape.input(data["bn_eval.input"].clone()))
        .value();
    assert_close(
        "bn_eval output on an inference tape",
        &y,
        &data["bn_eval.output"],
    );
}

#[test]
fn pooling_matches_pytorch() {
    let data = fixtures();
    check_case(
        "maxpool",
        MaxPool2d::new(3).stride(2).padding(1).ceil_mode(true),
        true,
        &data,
    );
    let exclude = AvgPool2d::new(3)
        .stride(2)
        .padding(1)
        .ceil_mode(true)
        .count_include_pad(false);
    check_case("avgpool_exclude", exclude, true, &data);
    check_case(
        "avgpool_include",
        AvgPool2d::new([2, 3]).stride([1, 2]).padding([1, 1]),
        true,
        &data,
    );
}

#[test]
fn activations_match_pytorch() {
    let data = fixtures();
    check_case("leaky_relu", LeakyRelu::new(0.2), true, &data);
    check_case("elu", Elu::new(0.7), true, &data);
    check_case("softmax", Softmax::new(1), true, &data);
    check_case("log_softmax", LogSoftmax::new(1), true, &data);
}

#[test]
fn cross_entropy_with_label_smoothing_matches_pytorch() {
    let data = fixtures();
    let targets: Vec<usize> = data["cross_entropy.targets"]
        .as_slice()
        .iter()
        .map(|&t| t as usize)
        .collect();
    let tape = Tape::training();
    let logits = tape.variable(data["cross_entropy.input"].clone());
    let loss = logits.cross_entropy_with_label_smoothing(&targets, 0.15);
    assert!((loss.item() - data["cross_entropy.output"].item()).abs() < 1e-6);
    let grads = loss.backward();
    assert_close(
        "cross_entropy gradient",
        grads.wrt(logits).unwrap(),
        &data["cross_entropy.grad.input"],
    );
}
