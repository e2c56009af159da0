//! The zoo's networks against torchvision's: parameter counts, and the names and shapes of
//! every `state_dict()` entry (parameters and buffers), listed by
//! `scripts/torchvision_keys.py` in `tests/fixtures/torchvision/<model>.txt`.
//!
//! VGG-16 (138M parameters, 553 MB) is built once; the other VGGs are built with a narrow
//! classifier, whose names are torchvision's but whose two hidden widths are not, so their
//! `classifier.0`/`classifier.3` shapes are left out of the comparison.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::Tensor;
use striate::io::state_dict;
use striate::models::{self, FeatureExtraction, Vgg, VggConfig};
use striate::nn::{Module, summary};

/// `(parameter count, name → shape)` of a torchvision model.
fn torchvision(model: &str) -> (usize, BTreeMap<String, Vec<usize>>) {
    let path = format!(
        "{}/tests/fixtures/torchvision/{model}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let count = header.rsplit(": ").next().unwrap();
    let count: usize = count.trim_end_matches(" parameters").parse().unwrap();
    let entries = lines
        .map(|line| {
            let (name, shape) = line.split_once(' ').unwrap();
            let shape = shape.trim_matches(['[', ']']);
            let shape = shape
                .split(", ")
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            (name.to_string(), shape)
        })
        .collect();
    (count, entries)
}

fn striate_entries(model: &dyn Module) -> BTreeMap<String, Vec<usize>> {
    state_dict(model)
        .into_iter()
        .map(|(name, t)| (name, t.shape().to_vec()))
        .collect()
}

#[track_caller]
fn assert_same_entries(
    what: &str,
    ours: &BTreeMap<String, Vec<usize>>,
    theirs: &BTreeMap<String, Vec<usize>>,
) {
    let only_ours: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    let only_theirs: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "{what}: only in striate {only_ours:?}, only in torchvision {only_theirs:?}"
    );
    for (name, shape) in theirs {
        assert_eq!(&ours[name], shape, "{what}: shape of {name}");
    }
}

#[test]
fn resnets_match_torchvision_exactly() {
    let mut rng = StdRng::seed_from_u64(0);
    for (name, model) in [
        ("resnet18", models::resnet18(1000, &mut rng)),
        ("resnet34", models::resnet34(1000, &mut rng)),
        ("resnet50", models::resnet50(1000, &mut rng)),
    ] {
        let (count, entries) = torchvision(name);
        assert_eq!(model.num_params(), count, "{name} parameter count");
        assert_same_entries(name, &striate_entries(&model), &entries);
    }
}

#[test]
fn resnet_forward_shapes_and_summary() {
    let model = models::resnet50(1000, &mut StdRng::seed_from_u64(0));
    let x = Tensor::zeros(&[1, 3, 64, 64]);
    assert_eq!(model.features(&x, "layer1").shape(), &[1, 256, 16, 16]);
    assert_eq!(model.features(&x, "layer4").shape(), &[1, 2048, 2, 2]);
    assert_eq!(model.predict(&x).shape(), &[1, 1000]);
    let table = summary(&model, &[1, 3, 64, 64]);
    let names: Vec<&str> = table
        .rows
        .iter()
        .map(|r| r.layer.split(':').next().unwrap())
        .collect();
    assert_eq!(names[..5], ["conv1", "bn1", "relu", "maxpool", "layer1.0"]);
    assert_eq!(names[names.len() - 3..], ["avgpool", "flatten", "fc"]);
    assert_eq!(table.total_params, 25_557_032);
}

/// A VGG whose classifier is 16 wide instead of 4096, for comparing names cheaply.
fn narrow_vgg(depth: usize, batch_norm: bool) -> Vgg {
    let mut config = VggConfig::new(depth).batch_norm(batch_norm);
    config.hidden = 16;
    config.init(&mut StdRng::seed_from_u64(0))
}

#[test]
fn vgg_names_and_feature_shapes_match_torchvision() {
    for depth in [11, 13, 16, 19] {
        for batch_norm in [false, true] {
            let name = format!("vgg{depth}{}", if batch_norm { "_bn" } else { "" });
            let (_, mut entries) = torchvision(&name);
            let mut ours = striate_entries(&narrow_vgg(depth, batch_norm));
            for hidden in [
                "classifier.0.weight",
                "classifier.0.bias",
                "classifier.3.weight",
                "classifier.3.bias",
                "classifier.6.weight",
            ] {
                assert!(entries.remove(hidden).is_some(), "{name}: {hidden}");
                assert!(ours.remove(hidden).is_some(), "{name}: {hidden}");
            }
            assert_same_entries(&name, &ours, &entries);
        }
    }
}

#[test]
fn vgg16_has_torchvisions_parameter_count_and_shapes() {
    let model = models::vgg16(1000, &mut StdRng::seed_from_u64(0));
    let (count, entries) = torchvision("vgg16");
    assert_eq!(count, 138_357_544);
    assert_eq!(model.num_params(), count);
    assert_same_entries("vgg16", &striate_entries(&model), &entries);
    // the convolutional part at a size the debug build runs quickly; 224x224 is in examples/zoo.rs
    let x = Tensor::zeros(&[1, 3, 32, 32]);
    assert_eq!(model.features(&x, "features").shape(), &[1, 512, 1, 1]);
    assert_eq!(model.features(&x, "avgpool").shape(), &[1, 512, 7, 7]);
}

#[test]
fn small_input_variants_run_on_28_and_32_pixels() {
    let mut rng = StdRng::seed_from_u64(0);
    let nets: Vec<Box<dyn Module>> = vec![
        Box::new(
            VggConfig::new(16)
                .batch_norm(true)
                .small_input()
                .in_channels(1)
                .num_classes(10)
                .init(&mut rng),
        ),
        Box::new(
            models::ResNetConfig::resnet18(10)
                .small_input()
                .in_channels(1)
                .init(&mut rng),
        ),
        Box::new(
            models::ResNetConfig::resnet50(10)
                .small_input()
                .in_channels(1)
                .width(16)
                .init(&mut rng),
        ),
        Box::new(models::MiniXception::new(1, 10, 8, &mut rng)),
    ];
    for net in &nets {
        for side in [28, 32] {
            let out = net.predict(&Tensor::zeros(&[2, 1, side, side]));
            assert_eq!(out.shape(), &[2, 10], "{} at {side}x{side}", net.describe());
        }
    }
}

#[test]
fn inception_block_matches_googlenets() {
    let block = models::InceptionConfig::new(192, 64, 96, 128, 16, 32, 32)
        .init(&mut StdRng::seed_from_u64(0));
    let (count, entries) = torchvision("inception3a");
    assert_eq!(block.num_params(), count);
    assert_same_entries("inception3a", &striate_entries(&block), &entries);
}
