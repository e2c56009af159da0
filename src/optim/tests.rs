//! Behaviour every optimizer shares: skipping, groups, state export and import.

use super::test_model::{TwoParams, assert_slice_eq, step, tensor};
use super::*;
use crate::Error;
use crate::autograd::{Param, Var};

/// One optimizer of each kind and configuration with per-parameter state.
fn every_optimizer() -> Vec<(&'static str, Box<dyn Optimizer>)> {
    vec![
        ("sgd", Box::new(Sgd::new(SgdConfig::default()))),
        (
            "sgd_nesterov",
            Box::new(Sgd::new(SgdConfig {
                learning_rate: 0.1,
                momentum: Some(Momentum::nesterov(0.9)),
                weight_decay: 0.01,
            })),
        ),
        (
            "adam_amsgrad",
            Box::new(Adam::new(AdamConfig {
                amsgrad: true,
                weight_decay: 0.1,
                ..Default::default()
            })),
        ),
        ("adamw", Box::new(AdamW::new(AdamWConfig::default()))),
        (
            "rmsprop_full",
            Box::new(RmsProp::new(RmsPropConfig {
                momentum: 0.9,
                centered: true,
                ..Default::default()
            })),
        ),
    ]
}

const WEIGHT_GRADS: [[f32; 2]; 5] = [
    [0.5, -1.0],
    [0.25, 2.0],
    [-0.75, 0.125],
    [1.5, -0.5],
    [0.0, 3.0],
];

#[test]
fn frozen_and_gradient_less_parameters_are_untouched_and_get_no_state() {
    for (name, mut optimizer) in every_optimizer() {
        let mut model = TwoParams::new([1.0, 2.0], [3.0]);
        model.bias.set_requires_grad(false);
        let bias_before = model.bias.value().clone();
        // The bias has a gradient but is frozen; the weight has none.
        step(&mut *optimizer, &mut model, None, Some(&[1.0]));
        assert_eq!(model.bias.value(), &bias_before, "{name}");
        assert_eq!(model.weight.value().as_slice(), &[1.0, 2.0], "{name}");
        let state = optimizer.state_dict(&model);
        assert!(
            state.iter().all(|(k, _)| !k.starts_with("state.")),
            "{name}"
        );
    }
}

#[test]
fn adam_counts_steps_per_parameter() {
    let mut model = TwoParams::new([1.0, 2.0], [3.0]);
    let mut adam = Adam::new(AdamConfig::default());
    step(&mut adam, &mut model, Some(&[1.0, 1.0]), Some(&[1.0]));
    step(&mut adam, &mut model, Some(&[1.0, 1.0]), None);
    let state = adam.state_dict(&model);
    let count = |key: &str| state.iter().find(|(k, _)| k == key).map(|(_, t)| t.item());
    assert_eq!(count("state.body.weight.step"), Some(2.0));
    assert_eq!(count("state.head.bias.step"), Some(1.0));
}

#[test]
fn a_step_writes_in_place_unless_a_tape_shares_the_value() {
    let mut model = TwoParams::new([1.0, 2.0], [3.0]);
    let mut sgd = Sgd::new(SgdConfig::default());
    let before = model.weight.value().as_slice().as_ptr();
    step(&mut sgd, &mut model, Some(&[1.0, 1.0]), None);
    assert_eq!(model.weight.value().as_slice().as_ptr(), before);
    let held_by_a_tape = model.weight.value().clone();
    step(&mut sgd, &mut model, Some(&[1.0, 1.0]), None);
    assert_slice_eq(held_by_a_tape.as_slice(), &[0.999, 1.999]);
    assert!(!model.weight.value().shares_buffer_with(&held_by_a_tape));
}

#[test]
fn groups_have_their_own_learning_rate_and_weight_decay() {
    let mut model = TwoParams::new([1.0, 2.0], [3.0]);
    let mut sgd = Sgd::new(SgdConfig {
        learning_rate: 0.1,
        weight_decay: 0.5,
        ..Default::default()
    })
    .with_group(
        "head",
        GroupOptions {
            learning_rate: Some(0.01),
            weight_decay: Some(0.0),
        },
    );
    step(&mut sgd, &mut model, Some(&[1.0, 1.0]), Some(&[1.0]));
    // body: p − 0.1·(1 + 0.5·p); head: 3 − 0.01·1.
    assert_slice_eq(model.weight.value().as_slice(), &[0.85, 1.8]);
    assert_slice_eq(model.bias.value().as_slice(), &[2.99]);
}

#[test]
#[should_panic(
    expected = "Adam::step: every parameter group must select at least one parameter (prefix \"haed\" matches no parameter name of the model)"
)]
fn a_group_selecting_nothing_panics() {
    let mut model = TwoParams::new([1.0, 2.0], [3.0]);
    let mut adam = Adam::new(AdamConfig::default()).with_group("haed", GroupOptions::default());
    step(&mut adam, &mut model, Some(&[1.0, 1.0]), None);
}

#[test]
#[should_panic(
    expected = "RmsProp::step: gradient of `body.weight` must have the parameter's shape \
                           (parameter [2], gradient [3])"
)]
fn a_gradient_of_the_wrong_shape_panics() {
    let mut model = TwoParams::new([1.0, 2.0], [3.0]);
    let mut rmsprop = RmsProp::new(RmsPropConfig::default());
    step(&mut rmsprop, &mut model, Some(&[1.0, 1.0, 1.0]), None);
}

#[test]
fn set_learning_rate_keeps_group_ratios() {
    let mut adamw = AdamW::new(AdamWConfig {
        learning_rate: 1e-2,
        ..Default::default()
    })
    .with_group(
        "body",
        GroupOptions {
            learning_rate: Some(1e-4),
            ..Default::default()
        },
    );
    adamw.set_learning_rate(5e-3);
    assert_eq!(adamw.learning_rate(), 5e-3);
    assert!((adamw.param_groups()[1].learning_rate() - 5e-5).abs() < 1e-15);
    assert_eq!(adamw.param_groups()[1].initial_learning_rate(), 1e-4);
}

/// Steps `optimizer` on `model` with `WEIGHT_GRADS[range]` for the weight and a constant
/// gradient for the bias.
fn run(optimizer: &mut dyn Optimizer, model: &mut TwoParams, range: std::ops::Range<usize>) {
    for g in &WEIGHT_GRADS[range] {
        step(optimizer, model, Some(g), Some(&[0.25]));
    }
}

/// A model with the same names and values but fresh parameter ids.
fn copy_of(model: &TwoParams) -> TwoParams {
    let w = model.weight.value().as_slice();
    TwoParams::new([w[0], w[1]], [model.bias.value().item()])
}

#[test]
fn resuming_from_a_state_dict_matches_an_uninterrupted_run() {
    for ((name, mut uninterrupted), (_, mut first_half)) in
        every_optimizer().into_iter().zip(every_optimizer())
    {
        let mut reference = TwoParams::new([1.0, -2.0], [0.5]);
        run(&mut *uninterrupted, &mut reference, 0..5);

        let mut model = TwoParams::new([1.0, -2.0], [0.5]);
        run(&mut *first_half, &mut model, 0..2);
        let mut state = first_half.state_dict(&model);
        // Reorder, as a file format might, and resume into new parameters matched by name.
        state.reverse();
        let mut model = copy_of(&model);
        let (_, mut resumed) = every_optimizer()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap();
        resumed.load_state_dict(&model, &state).unwrap();
        run(&mut *resumed, &mut model, 2..5);

        assert_eq!(model.weight.value(), reference.weight.value(), "{name}");
        assert_eq!(model.bias.value(), reference.bias.value(), "{name}");
    }
}

#[test]
fn loaded_learning_rates_replace_the_current_ones() {
    let model = TwoParams::new([1.0, 2.0], [3.0]);
    let mut sgd = Sgd::new(SgdConfig::default());
    sgd.set_learning_rate(0.25);
    let state = sgd.state_dict(&model);
    assert_eq!(state.len(), 1);
    let mut fresh = Sgd::new(SgdConfig::default());
    fresh.load_state_dict(&model, &state).unwrap();
    assert_eq!(fresh.learning_rate(), 0.25);
}

#[test]
fn loading_reports_every_problem_and_loads_nothing() {
    let mut model = TwoParams::new([1.0, 2.0], [3.0]);
    let mut adam = Adam::new(AdamConfig::default());
    step(&mut adam, &mut model, Some(&[1.0, 1.0]), Some(&[1.0]));
    let good = adam.state_dict(&model);
    let mut bad: Vec<(String, Tensor)> = good
        .iter()
        .filter(|(k, _)| k != "state.head.bias.exp_avg_sq" && !k.starts_with("param_groups"))
        .cloned()
        .collect();
    for (key, tensor) in &mut bad {
        if key == "state.body.weight.exp_avg" {
            *tensor = tensor.reshape(&[1, 2]);
        }
        if key == "state.head.bias.step" {
            *tensor = Tensor::scalar(1.5);
        }
    }
    bad.push((
        "state.body.weight.momentum_buffer".into(),
        tensor(&[0.0, 0.0]),
    ));
    bad.push(("state.tail.weight.exp_avg".into(), tensor(&[0.0])));

    let mut fresh = Adam::new(AdamConfig::default());
    let err = fresh.load_state_dict(&model, &bad).unwrap_err();
    let Error::StateDict {
        target,
        missing,
        unexpected,
        mismatched,
    } = &err
    else {
        panic!("expected Error::StateDict, got {err}");
    };
    assert_eq!(target, "Adam");
    assert_eq!(
        missing,
        &[
            "param_groups.0.learning_rate",
            "state.body.weight.exp_avg",
            "state.head.bias.exp_avg_sq",
            "state.head.bias.step",
        ]
    );
    assert_eq!(
        unexpected,
        &[
            "state.body.weight.momentum_buffer",
            "state.tail.weight.exp_avg"
        ]
    );
    assert_eq!(
        mismatched,
        &[
            "state.body.weight.exp_avg: expected shape [2], found shape [1, 2]",
            "state.head.bias.step: expected a scalar holding a whole number, found scalar 1.5",
        ]
    );
    assert!(
        fresh
            .state_dict(&model)
            .iter()
            .all(|(k, _)| !k.starts_with("state."))
    );

    // The good state still loads.
    fresh.load_state_dict(&model, &good).unwrap();
    assert_eq!(fresh.state_dict(&model).len(), good.len());
}

#[test]
fn schedules_and_plateaus_drive_any_optimizer() {
    for (name, mut optimizer) in every_optimizer() {
        let initial = optimizer.learning_rate();
        ExponentialLr { gamma: 0.5 }.apply(&mut *optimizer, 2);
        assert_eq!(optimizer.learning_rate(), initial * 0.25, "{name}");
        let mut plateau = ReduceLrOnPlateau::new(PlateauConfig {
            patience: 0,
            ..Default::default()
        });
        plateau.step(1.0, &mut *optimizer);
        assert!(plateau.step(1.0, &mut *optimizer));
        assert!(
            (optimizer.learning_rate() - initial * 0.025).abs() < 1e-12,
            "{name}"
        );
    }
}

#[test]
fn gradients_from_a_backward_pass_drive_a_step() {
    use crate::Tape;
    let mut model = TwoParams::new([1.0, 2.0], [3.0]);
    let grads = {
        let tape = Tape::training();
        let w = tape.param(&model.weight);
        (w * w).sum().backward()
    };
    let mut sgd = Sgd::new(SgdConfig {
        learning_rate: 0.5,
        ..Default::default()
    });
    sgd.step(&mut model, &grads);
    // d(w²)/dw = 2w, so w − 0.5·2w = 0.
    assert_eq!(model.weight.value().as_slice(), &[0.0, 0.0]);
}

/// A module of one parameter, `p`.
struct OneParam(Param);

impl Module for OneParam {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input
    }

    fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
        visitor("p", &self.0);
    }

    fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
        visitor("p", &mut self.0);
    }
}

#[test]
fn a_large_parameter_updates_each_element_as_if_alone() {
    // More elements than the chunks a large update is split into across threads (4 x 16,384),
    // and not a multiple of them.
    let n = 70_001;
    let value = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
    let grad = |i: usize, step: usize| (((i + 31 * step) * 104_729) % 997) as f32 / 498.5 - 1.0;
    let run = |name: &str, indices: &[usize]| {
        let mut optimizer = every_optimizer()
            .into_iter()
            .find(|(n, _)| *n == name)
            .expect("the optimizer")
            .1;
        let values: Vec<f32> = indices.iter().map(|&i| value(i)).collect();
        let mut model = OneParam(Param::new("p", tensor(&values)));
        for step in 0..3 {
            let mut grads = Gradients::default();
            let g: Vec<f32> = indices.iter().map(|&i| grad(i, step)).collect();
            grads.insert(model.0.id(), tensor(&g));
            optimizer.step(&mut model, &grads);
        }
        model.0.value().to_vec()
    };
    let all: Vec<usize> = (0..n).collect();
    for (name, _) in every_optimizer() {
        let large = run(name, &all);
        for i in (0..n).step_by(4_999).chain([16_383, 16_384, n - 1]) {
            let alone = run(name, &[i]);
            assert_eq!(large[i].to_bits(), alone[0].to_bits(), "{name} element {i}");
        }
    }
}
