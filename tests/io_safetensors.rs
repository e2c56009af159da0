//! Weights files: round trips, dtype conversion, partial loads, and errors — never panics —
//! for corrupt, truncated, mistyped and mismatched files, each naming the file and the problem.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use striate::io::{load_weights, load_weights_partial, read_safetensors, save_weights, state_dict};
use striate::models::{ResNet, ResNetConfig};
use striate::nn::Module;
use striate::{Error, Tape, Tensor};

/// A fresh directory for one test.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("striate-io-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn small_resnet(classes: usize, seed: u64) -> ResNet {
    ResNetConfig::resnet18(classes)
        .small_input()
        .width(4)
        .init(&mut StdRng::seed_from_u64(seed))
}

/// A model whose batch norms have seen a batch, so buffers differ from their defaults.
fn trained_resnet() -> ResNet {
    let model = small_resnet(10, 0);
    let tape = Tape::training();
    let x = Tensor::rand_uniform(&[4, 3, 8, 8], -1.0, 1.0, &mut StdRng::seed_from_u64(9));
    model.forward(tape.input(x));
    model
}

fn write_raw(path: &Path, tensors: Vec<(&str, TensorView<'_>)>) {
    std::fs::write(path, safetensors::serialize(tensors, None).unwrap()).unwrap();
}

#[test]
fn weights_round_trip_exactly_and_leave_no_temporary_file() {
    let dir = scratch("round-trip");
    let path = dir.join("model.safetensors");
    let model = trained_resnet();
    save_weights(&model, &path).unwrap();
    save_weights(&model, &path).unwrap(); // overwriting an existing file
    let mut copy = small_resnet(10, 1);
    load_weights(&mut copy, &path).unwrap();
    assert_eq!(state_dict(&copy), state_dict(&model));
    let x = Tensor::rand_uniform(&[2, 3, 8, 8], -1.0, 1.0, &mut StdRng::seed_from_u64(3));
    assert_eq!(copy.predict(&x), model.predict(&x));
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["model.safetensors"]);
}

#[test]
fn saving_into_a_missing_directory_is_an_error_naming_the_path() {
    let path = scratch("missing-dir").join("no/such/dir/model.safetensors");
    let err = save_weights(&small_resnet(10, 0), &path).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[test]
fn f64_f16_bf16_and_i64_are_converted() {
    let path = scratch("dtypes").join("mixed.safetensors");
    let f64s: Vec<u8> = [0.1f64, -2.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let f16s: Vec<u8> = [0x3c00u16, 0xb800]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect(); // 1, -0.5
    let bf16s: Vec<u8> = [0x4049u16, 0xc000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect(); // 3.140625, -2
    let i64s: Vec<u8> = 7i64.to_le_bytes().to_vec();
    write_raw(
        &path,
        vec![
            ("a", TensorView::new(Dtype::F64, vec![2], &f64s).unwrap()),
            ("b", TensorView::new(Dtype::F16, vec![2], &f16s).unwrap()),
            (
                "c",
                TensorView::new(Dtype::BF16, vec![1, 2], &bf16s).unwrap(),
            ),
            ("d", TensorView::new(Dtype::I64, vec![], &i64s).unwrap()),
        ],
    );
    let tensors = read_safetensors(&path).unwrap();
    let get = |name: &str| tensors.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(get("a").as_slice(), &[0.1f32, -2.5]);
    assert_eq!(get("b").as_slice(), &[1.0, -0.5]);
    assert_eq!(get("c").as_slice(), &[3.140625, -2.0]);
    assert_eq!(get("c").shape(), &[1, 2]);
    assert_eq!(get("d").shape(), &[] as &[usize]);
    assert_eq!(get("d").item(), 7.0);
}

#[test]
fn an_unsupported_dtype_names_the_file_and_the_tensor() {
    let path = scratch("dtype").join("bytes.safetensors");
    let bytes = [1u8, 2, 3];
    write_raw(
        &path,
        vec![("mask", TensorView::new(Dtype::U8, vec![3], &bytes).unwrap())],
    );
    let err = read_safetensors(&path).unwrap_err().to_string();
    assert!(err.starts_with(&path.display().to_string()), "{err}");
    assert!(
        err.ends_with("expected dtype F32, F64, F16, BF16 or I64, found tensor `mask` of dtype U8"),
        "{err}"
    );
}

#[test]
fn a_truncated_file_says_how_long_it_should_be() {
    let dir = scratch("truncated");
    let path = dir.join("model.safetensors");
    save_weights(&trained_resnet(), &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let mut model = small_resnet(10, 1);
    let before = state_dict(&model);
    let err = load_weights(&mut model, &path).unwrap_err();
    assert!(matches!(err, Error::InvalidData { .. }));
    let message = err.to_string();
    assert!(
        message.starts_with(&path.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("{} bytes in all", bytes.len()))
            && message.contains(&format!(
                "found {} bytes (file truncated?)",
                bytes.len() - 100
            )),
        "{message}"
    );
    assert_eq!(
        state_dict(&model),
        before,
        "nothing is loaded from a bad file"
    );
    // cut inside the header too
    std::fs::write(&path, &bytes[..20]).unwrap();
    let message = load_weights(&mut model, &path).unwrap_err().to_string();
    assert!(
        message.contains("header after the length prefix (file truncated?)"),
        "{message}"
    );
    std::fs::write(&path, &bytes[..3]).unwrap();
    let message = load_weights(&mut model, &path).unwrap_err().to_string();
    assert!(message.contains("expected a safetensors file"), "{message}");
}

#[test]
fn a_corrupt_header_is_an_error_not_a_panic() {
    let dir = scratch("corrupt");
    let path = dir.join("model.safetensors");
    save_weights(&trained_resnet(), &path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[8] = b'['; // the JSON header no longer starts an object
    std::fs::write(&path, &bad).unwrap();
    let message = read_safetensors(&path).unwrap_err().to_string();
    assert!(
        message.starts_with(&path.display().to_string()),
        "{message}"
    );
    assert!(message.contains("expected a JSON header"), "{message}");
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &huge).unwrap();
    let message = read_safetensors(&path).unwrap_err().to_string();
    assert!(message.contains("is this a safetensors file?"), "{message}");
    std::fs::write(&path, b"PK\x03\x04 a zip archive, as torch.save writes").unwrap();
    assert!(read_safetensors(&path).is_err());
}

#[test]
fn a_mismatched_file_lists_every_key_and_names_the_file() {
    let dir = scratch("mismatch");
    let path = dir.join("resnet.safetensors");
    save_weights(&trained_resnet(), &path).unwrap();
    let mut other = small_resnet(7, 0); // another head
    let err = load_weights(&mut other, &path).unwrap_err();
    let Error::StateDict {
        target,
        missing,
        unexpected,
        mismatched,
    } = &err
    else {
        panic!("expected a state-dict error, got {err}");
    };
    assert!(
        target.ends_with(&format!("from {}", path.display())),
        "{target}"
    );
    assert!(target.starts_with("ResNet-18-small"), "{target}");
    assert!(missing.is_empty() && unexpected.is_empty());
    assert_eq!(
        mismatched,
        &[
            "fc.weight: expected shape [7, 32], found shape [10, 32]",
            "fc.bias: expected shape [7], found shape [10]"
        ]
    );
    // non-strict: everything but the head loads
    let report = load_weights_partial(&mut other, &path).unwrap();
    assert_eq!(report.mismatched.len(), 2);
    assert_eq!(report.loaded.len(), state_dict(&other).len() - 2);
    assert_eq!(
        other.conv1.weight.value(),
        trained_resnet().conv1.weight.value()
    );
}
