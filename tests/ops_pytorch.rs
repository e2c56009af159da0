//! The activations (GELU exact and tanh, SiLU, Softplus, Hardswish, Mish), adaptive max
//! pooling, binary cross-entropy on probabilities and argmax against PyTorch: values and
//! gradients recorded by `scripts/ops_fixtures.py` in `tests/fixtures/ops_pytorch.txt` (no
//! Python needed here), on inputs holding NaN, ±Inf and the kinks.
//!
//! A NaN must be NaN where PyTorch's is, an infinity the same infinity, and every finite value
//! within 1e-6 relative (absolute below 1). Gradients are taken with `backward_with(seed)`, the
//! vector-Jacobian product PyTorch's `y.backward(seed)` computes.

use striate::{Tape, Tensor, Var};

mod common;

use common::{Case, assert_agrees};

fn cases() -> Vec<Case> {
    common::parse_cases(include_str!("fixtures/ops_pytorch.txt"))
}

/// striate's op for each differentiable fixture case.
fn apply<'t>(name: &str, x: Var<'t>, target: Option<Var<'t>>) -> Var<'t> {
    if let Some(size) = name.strip_prefix("adaptive_max_pool_") {
        let (h, w) = size.split_once('x').unwrap();
        return x.adaptive_max_pool2d([h.parse().unwrap(), w.parse().unwrap()]);
    }
    match name.trim_end_matches("_sweep") {
        "gelu" => x.gelu(),
        "gelu_tanh" => x.gelu_tanh(),
        "silu" => x.silu(),
        "softplus" => x.softplus(1.0, 20.0),
        "softplus_beta2_threshold5" => x.softplus(2.0, 5.0),
        "softplus_beta-1.5_threshold3" => x.softplus(-1.5, 3.0),
        "hardswish" => x.hardswish(),
        "mish" => x.mish(),
        "binary_cross_entropy" | "binary_cross_entropy_smooth" => {
            x.binary_cross_entropy(target.expect("targets"))
        }
        other => panic!("no striate op for fixture case {other}"),
    }
}

#[test]
fn values_and_gradients_match_pytorch() {
    let cases = cases();
    let mut checked = 0;
    for case in cases.iter().filter(|c| !c.name.starts_with("argmax")) {
        let tape = Tape::training();
        let x = tape.variable(Tensor::from_vec(case.input.clone(), &case.input_shape).unwrap());
        let t = case
            .target
            .as_ref()
            .map(|t| tape.variable(Tensor::from_vec(t.clone(), &case.input_shape).unwrap()));
        let y = apply(&case.name, x, t);
        let value = y.value();
        assert_eq!(value.shape(), &case.output_shape[..], "{} shape", case.name);
        let value_error = assert_agrees(&case.name, "output", value.as_slice(), &case.output);
        let seed = Tensor::from_vec(case.seed.clone(), &case.output_shape).unwrap();
        let grads = y.backward_with(&seed);
        let grad = grads.wrt(x).expect("input gradient");
        let mut grad_error = assert_agrees(&case.name, "gradient", grad.as_slice(), &case.grad);
        if let Some(t) = t {
            let target_grad = grads.wrt(t).expect("target gradient");
            grad_error = grad_error.max(assert_agrees(
                &case.name,
                "target gradient",
                target_grad.as_slice(),
                &case.target_grad,
            ));
        }
        println!(
            "{:<32} worst error: value {value_error:.2e}, gradient {grad_error:.2e}",
            case.name
        );
        checked += 1;
    }
    assert!(
        checked >= 20,
        "fixture holds {checked} differentiable cases"
    );
}

#[test]
fn argmax_matches_pytorch_on_every_axis() {
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.name.starts_with("argmax"))
        .collect();
    assert_eq!(cases.len(), 3);
    for case in &cases {
        let axis: usize = case.name.trim_start_matches("argmax_axis").parse().unwrap();
        let x = Tensor::from_vec(case.input.clone(), &case.input_shape).unwrap();
        let want: Vec<usize> = case.output.iter().map(|&v| v as usize).collect();
        assert_eq!(x.argmax(axis), want, "{}", case.name);
        // the same axis counted from the back
        assert_eq!(
            x.argmax(axis as i32 - 3),
            want,
            "{} from the back",
            case.name
        );
    }
}

#[test]
fn inference_tapes_give_the_same_values() {
    for case in cases().iter().filter(|c| !c.name.starts_with("argmax")) {
        let tape = Tape::inference();
        let x = tape.input(Tensor::from_vec(case.input.clone(), &case.input_shape).unwrap());
        let t = case
            .target
            .as_ref()
            .map(|t| tape.input(Tensor::from_vec(t.clone(), &case.input_shape).unwrap()));
        let y = apply(&case.name, x, t).value();
        assert_agrees(&case.name, "inference output", y.as_slice(), &case.output);
    }
}
