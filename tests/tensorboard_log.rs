//! `Fit::log_dir` writes TensorBoard event files that an independent reader (below: TFRecord
//! framing and checksums checked here, messages decoded with prost) and TensorBoard's own
//! `EventAccumulator` (when `python3` has the `tensorboard` package) read back with every
//! scalar at the right step.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use prost::Message;
use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::data::{DataLoader, ImageDataset};
use striate::nn::{Dense, Flatten, Relu, Sequential};
use striate::optim::{GroupOptions, Sgd, SgdConfig};
use striate::train::tensorboard::proto::{Event, event, summary};
use striate::train::{Fit, History, Progress};

/// (tag, step) -> value for scalars, and the tags of histograms, read from a file.
struct Read {
    scalars: BTreeMap<(String, i64), f32>,
    histograms: BTreeMap<(String, i64), f64>,
    file_version: String,
}

fn masked(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Reads a TFRecord file: u64 length, masked CRC-32C of the length, data, masked CRC-32C of
/// the data, checking both checksums.
fn read_events(path: &Path) -> Read {
    let bytes = std::fs::read(path).unwrap();
    let mut read = Read {
        scalars: BTreeMap::new(),
        histograms: BTreeMap::new(),
        file_version: String::new(),
    };
    let mut at = 0;
    while at < bytes.len() {
        let header = &bytes[at..at + 8];
        let length = u64::from_le_bytes(header.try_into().unwrap()) as usize;
        let length_crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        assert_eq!(
            length_crc,
            masked(crc32c::crc32c(header)),
            "length checksum"
        );
        let data = &bytes[at + 12..at + 12 + length];
        let data_crc = u32::from_le_bytes(
            bytes[at + 12 + length..at + 16 + length]
                .try_into()
                .unwrap(),
        );
        assert_eq!(data_crc, masked(crc32c::crc32c(data)), "data checksum");
        at += 16 + length;
        let event = Event::decode(data).unwrap();
        match event.what {
            Some(event::What::FileVersion(v)) => read.file_version = v,
            Some(event::What::Summary(s)) => {
                for value in s.value {
                    match value.value {
                        Some(summary::value::Value::SimpleValue(v)) => {
                            read.scalars.insert((value.tag, event.step), v);
                        }
                        Some(summary::value::Value::Histo(h)) => {
                            read.histograms.insert((value.tag, event.step), h.num);
                        }
                        other => panic!("unexpected summary {other:?}"),
                    }
                }
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    read
}

fn train(dir: &Path) -> History {
    let mut rng = StdRng::seed_from_u64(0);
    let pixels: Vec<u8> = (0..40)
        .flat_map(|i| vec![if i % 2 == 0 { 20 } else { 230 }; 4])
        .collect();
    let labels = (0..40).map(|i| i % 2).collect();
    let data = ImageDataset::from_u8(pixels, [1, 2, 2], labels).unwrap();
    let train = DataLoader::new(data.clone(), 8).shuffle(1); // 5 steps per epoch
    let validation = DataLoader::new(data, 16);
    let mut model = Sequential::new()
        .push(Flatten::new())
        .push(Dense::new(4, 6, &mut rng))
        .push(Relu)
        .push(Dense::new(6, 2, &mut rng));
    let mut sgd = Sgd::new(SgdConfig {
        learning_rate: 0.1,
        ..Default::default()
    })
    .with_group(
        "3",
        GroupOptions {
            learning_rate: Some(0.05),
            ..Default::default()
        },
    );
    Fit::new(&mut model, &mut sgd)
        .epochs(3)
        .validation(&validation)
        .progress(Progress::Silent)
        .log_dir(dir)
        .histograms_every(5)
        .run(&train)
        .unwrap()
}

#[test]
fn every_scalar_is_read_back_at_its_step() {
    let dir = std::env::temp_dir().join(format!("striate-tb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let history = train(&dir);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(files[0].to_string_lossy().contains("tfevents"));
    let read = read_events(&files[0]);
    assert_eq!(read.file_version, "brain.Event:2");

    // per epoch, at the epoch number
    for record in &history.epochs {
        let step = record.epoch as i64;
        let at = |tag: &str| read.scalars[&(tag.to_string(), step)];
        assert_eq!(at("epoch/train_loss"), record.train_loss);
        assert_eq!(at("epoch/train_accuracy"), record.train_accuracy);
        assert_eq!(at("epoch/val_loss"), record.val_loss.unwrap());
        assert_eq!(at("epoch/val_accuracy"), record.val_accuracy.unwrap());
        assert_eq!(at("epoch/learning_rate"), record.learning_rate as f32);
    }
    // per step, at the global step 1..=15
    for step in 1..=15 {
        let at = |tag: &str| {
            *read
                .scalars
                .get(&(tag.to_string(), step))
                .unwrap_or_else(|| panic!("{tag} at step {step}"))
        };
        assert!(at("train/batch_loss").is_finite());
        assert!(at("time/step_seconds") >= 0.0);
        assert_eq!(at("learning_rate/group0"), 0.1);
        assert_eq!(at("learning_rate/group1"), 0.05);
    }
    let step_tags = read
        .scalars
        .keys()
        .filter(|(t, _)| t == "train/batch_loss")
        .count();
    assert_eq!(step_tags, 15);
    // the mean of an epoch's batch losses (equal batches) is the epoch's training loss
    let first_epoch: f32 = (1..=5)
        .map(|s| read.scalars[&("train/batch_loss".to_string(), s)])
        .sum::<f32>()
        / 5.0;
    assert!((first_epoch - history.epochs[0].train_loss).abs() < 1e-5);
    // histograms every 5 steps: weights and gradients of each of the 4 parameters
    for step in [5, 10, 15] {
        for name in ["1.weight", "1.bias", "3.weight", "3.bias"] {
            let weights = read.histograms[&(format!("weights/{name}"), step)];
            let grads = read.histograms[&(format!("gradients/{name}"), step)];
            assert!(weights > 0.0 && weights == grads, "{name}");
        }
    }
    assert_eq!(read.histograms.len(), 3 * 8);

    tensorboard_reads_the_same(&dir, &read);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// TensorBoard's `EventAccumulator` finds the same scalars at the same steps.
fn tensorboard_reads_the_same(dir: &Path, read: &Read) {
    let has_tensorboard = Command::new("python3")
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_tensorboard {
        println!("skipped: python3 cannot import tensorboard (pip install tensorboard)");
        return;
    }
    let script = r#"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "histograms": 0})
acc.Reload()
for tag in acc.Tags()["scalars"]:
    for e in acc.Scalars(tag):
        print(f"scalar {tag} {e.step} {e.value!r}")
for tag in acc.Tags()["histograms"]:
    for e in acc.Histograms(tag):
        print(f"histogram {tag} {e.step} {e.histogram_value.num!r}")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut scalars = BTreeMap::new();
    let mut histograms = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let key = (fields[1].to_string(), fields[2].parse::<i64>().unwrap());
        let value: f64 = fields[3].parse().unwrap();
        match fields[0] {
            "scalar" => scalars.insert(key, value as f32),
            _ => histograms.insert(key, value).map(|v| v as f32),
        };
    }
    assert_eq!(scalars, read.scalars);
    assert_eq!(histograms, read.histograms);
    println!(
        "EventAccumulator read {} scalars and {} histograms, all equal",
        scalars.len(),
        histograms.len()
    );
}
