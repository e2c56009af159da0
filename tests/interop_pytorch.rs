//! A network trained in PyTorch runs in striate: `scripts/interop_fixture.py` saves a narrow
//! torchvision-style ResNet (random weights, running statistics from three training batches)
//! as safetensors, with an input and PyTorch's eval-mode logits; striate builds the same
//! network from its zoo, loads the file strictly, and must reproduce the logits.

use std::collections::HashMap;
use std::path::PathBuf;

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::Tensor;
use striate::io::{load_weights, read_safetensors, save_weights, state_dict};
use striate::models::{BlockKind, FeatureExtraction, ResNet, ResNetConfig};
use striate::nn::Module;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/interop")
        .join(name)
}

fn tiny_resnet() -> ResNet {
    ResNetConfig::new(BlockKind::Basic, [1, 1, 1, 1], 5)
        .width(4)
        .init(&mut StdRng::seed_from_u64(0))
}

fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.as_slice()
        .iter()
        .zip(b.as_slice())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn pytorch_weights_reproduce_pytorch_logits() {
    let mut model = tiny_resnet();
    load_weights(&mut model, fixture("tiny_resnet.safetensors")).unwrap();
    let io: HashMap<String, Tensor> = read_safetensors(fixture("tiny_resnet_io.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    let logits = model.predict(&io["input"]);
    let difference = max_difference(&logits, &io["logits"]);
    println!("max |striate − PyTorch| over the logits: {difference:e}");
    assert!(difference < 1e-4, "logits differ by {difference}");
    let layer3 = model.features(&io["input"], "layer3");
    let difference = max_difference(&layer3, &io["layer3"]);
    println!("max |striate − PyTorch| over layer3's output: {difference:e}");
    assert!(difference < 1e-4, "layer3 features differ by {difference}");
}

#[test]
fn running_statistics_and_counts_are_loaded() {
    let mut model = tiny_resnet();
    load_weights(&mut model, fixture("tiny_resnet.safetensors")).unwrap();
    let state: HashMap<String, Tensor> = state_dict(&model).into_iter().collect();
    assert_eq!(state["bn1.num_batches_tracked"].item(), 3.0);
    assert_ne!(
        state["layer2.0.downsample.1.running_var"],
        Tensor::ones(&[8])
    );
}

#[test]
fn a_torchvision_format_file_round_trips() {
    let mut model = tiny_resnet();
    let original = fixture("tiny_resnet.safetensors");
    load_weights(&mut model, &original).unwrap();
    let copy = std::env::temp_dir().join(format!(
        "striate-interop-{}.safetensors",
        std::process::id()
    ));
    save_weights(&model, &copy).unwrap();
    let mut written = read_safetensors(&copy).unwrap();
    let mut source = read_safetensors(&original).unwrap();
    written.sort_by(|a, b| a.0.cmp(&b.0));
    source.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(written, source);
    // counts are written as I64, as PyTorch stores them
    let bytes = std::fs::read(&copy).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        file.tensor("bn1.num_batches_tracked").unwrap().dtype(),
        safetensors::Dtype::I64
    );
    assert_eq!(
        file.tensor("bn1.running_mean").unwrap().dtype(),
        safetensors::Dtype::F32
    );
    std::fs::remove_file(copy).unwrap();
}
