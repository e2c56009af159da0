//! Fine-tuning a zoo network: a frozen backbone keeps its weights and its batch-norm
//! statistics (Keras's rule), the unfrozen part and the new head train, and features can be
//! taken at any stage.

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::io::state_dict;
use striate::models::{FeatureExtraction, ResNetConfig, VggConfig, freeze, unfreeze};
use striate::nn::{Module, summary};
use striate::optim::{GroupOptions, Momentum, Optimizer, Sgd, SgdConfig};
use striate::{Tape, Tensor};

#[test]
fn a_frozen_resnet_backbone_keeps_weights_and_batch_norm_statistics() {
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = ResNetConfig::resnet18(100)
        .small_input()
        .width(8)
        .init(&mut rng);
    let old_head = model.replace_head(4, &mut rng);
    assert_eq!(old_head.out_features(), 100);
    let all = freeze(&mut model, "");
    assert_eq!(unfreeze(&mut model, "layer4"), 15);
    assert_eq!(unfreeze(&mut model, "fc"), 2);
    assert_eq!(all, 62);
    let table = summary(&model, &[1, 3, 16, 16]);
    let head = 64 * 4 + 4;
    assert!(table.trainable_params > head && table.trainable_params < table.total_params);

    let before: Vec<_> = state_dict(&model);
    let mut optimizer = Sgd::new(SgdConfig {
        learning_rate: 0.1,
        momentum: Some(Momentum::classic(0.9)),
        ..Default::default()
    })
    .with_group(
        "layer4",
        GroupOptions {
            learning_rate: Some(1e-3),
            ..Default::default()
        },
    );
    let x = Tensor::rand_uniform(&[6, 3, 16, 16], 0.0, 3.0, &mut rng);
    for _ in 0..2 {
        let tape = Tape::training();
        let loss = model
            .forward(tape.input(x.clone()))
            .cross_entropy(&[0, 1, 2, 3, 0, 1]);
        let grads = loss.backward();
        assert!(
            grads.get(&model.conv1.weight).is_none(),
            "a frozen parameter got a gradient"
        );
        optimizer.step(&mut model, &grads);
    }
    let after = state_dict(&model);
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        let trainable = name.starts_with("layer4") || name.starts_with("fc");
        assert_eq!(old != new, trainable, "{name}: changed = {}", old != new);
    }
}

#[test]
fn features_at_named_stages_of_a_vgg() {
    let model = VggConfig::new(11)
        .batch_norm(true)
        .small_input()
        .num_classes(10)
        .init(&mut StdRng::seed_from_u64(0));
    let names = model.stage_names();
    assert_eq!(
        names[..4],
        ["features.0", "features.1", "features.2", "features.3"]
    );
    assert_eq!(names[names.len() - 1], "classifier.6");
    let x = Tensor::zeros(&[2, 3, 32, 32]);
    assert_eq!(model.features(&x, "features.3").shape(), &[2, 64, 16, 16]);
    assert_eq!(model.features(&x, "features").shape(), &[2, 512, 1, 1]);
    assert_eq!(model.features(&x, "flatten").shape(), &[2, 512]);
    // the last stage is the whole network
    assert_eq!(model.features(&x, "classifier"), model.predict(&x));
    // forward_until records on a training tape like forward, so features can be fine-tuned
    let tape = Tape::training();
    let features = model.forward_until(tape.input(x), "features.7");
    assert_eq!(features.shape(), vec![2, 128, 8, 8]);
    let grads = features.sum().backward();
    assert!(grads.get(&first_weight(&model)).is_some());
}

/// A clone of `features.0.weight` (same id, so gradients can be looked up with it).
fn first_weight(model: &striate::models::Vgg) -> striate::Param {
    let mut first = None;
    model.visit_params(&mut |name, p| {
        if name == "features.0.weight" {
            first = Some(p.clone());
        }
    });
    first.unwrap()
}
