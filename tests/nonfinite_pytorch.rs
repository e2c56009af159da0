//! NaN and ±Inf through striate's ops, and log-softmax at large logits, against PyTorch:
//! values and gradients recorded by `scripts/nonfinite_fixtures.py` in
//! `tests/fixtures/nonfinite_pytorch.txt` (no Python needed here).
//!
//! A NaN must be NaN where PyTorch's is, an infinity the same infinity, and every finite value
//! within 1e-6 relative (absolute below 1): the bar the large-logit cases of log-softmax and
//! cross-entropy set.

use striate::nn::functional::Pool2dSpec;
use striate::{Tape, Tensor, Var};

mod common;

use common::{Case, assert_agrees};

fn cases() -> Vec<Case> {
    common::parse_cases(include_str!("fixtures/nonfinite_pytorch.txt"))
}

/// striate's op for each fixture case.
fn apply<'t>(name: &str, x: Var<'t>, labels: &[usize]) -> Var<'t> {
    match name {
        "relu" => x.relu(),
        "leaky_relu" => x.leaky_relu(0.1),
        "elu" => x.elu(1.0),
        "clamp" => x.clamp(-1.0, 1.0),
        "sigmoid" => x.sigmoid(),
        "tanh" => x.tanh(),
        "abs" => x.abs(),
        "max_all" => x.max(),
        "min_all" => x.min(),
        "max_axis1" => x.max_axes(&[1]),
        "min_axis1" => x.min_axes(&[1]),
        "max_axis0_ties" => x.max_axes(&[0]),
        "softmax" => x.softmax(1),
        "log_softmax" | "log_softmax_large" => x.log_softmax(1),
        "max_pool2x2" | "max_pool2x2_two_nans" => x.max_pool2d(Pool2dSpec::square(2)),
        "max_pool3x3_pad1" => x.max_pool2d(Pool2dSpec {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            ceil_mode: false,
        }),
        "cross_entropy_large" | "cross_entropy_nan" => x.cross_entropy(labels),
        other => panic!("no striate op for fixture case {other}"),
    }
}

#[test]
fn values_and_gradients_match_pytorch_with_nan_and_inf() {
    let cases = cases();
    assert!(cases.len() >= 20, "fixture holds {} cases", cases.len());
    for case in &cases {
        let tape = Tape::training();
        let x = tape.variable(Tensor::from_vec(case.input.clone(), &case.input_shape).unwrap());
        let y = apply(&case.name, x, &case.labels);
        let value = y.value();
        assert_eq!(value.shape(), &case.output_shape[..], "{} shape", case.name);
        assert_agrees(&case.name, "output", value.as_slice(), &case.output);
        // Jᵀ·seed through a weighted sum: d Σ(y ⊙ seed) / dx.
        let seed = tape.input(Tensor::from_vec(case.seed.clone(), &case.output_shape).unwrap());
        let grads = (y * seed).sum().backward();
        let grad = grads.wrt(x).expect("input gradient");
        assert_agrees(&case.name, "gradient", grad.as_slice(), &case.grad);
    }
}

#[test]
fn inference_tapes_give_the_same_values() {
    for case in &cases() {
        let tape = Tape::inference();
        let x = tape.input(Tensor::from_vec(case.input.clone(), &case.input_shape).unwrap());
        let y = apply(&case.name, x, &case.labels).value();
        assert_agrees(&case.name, "inference output", y.as_slice(), &case.output);
    }
}
