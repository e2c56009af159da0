//! A run interrupted by a checkpoint resumes exactly: 6 steps straight and 3 steps, a
//! checkpoint on disk, a fresh model and optimizer, a load and 3 more steps end with
//! bit-identical parameters and buffers — with dropout drawing from the step's seed, batch
//! norm updating its running statistics, and optimizers carrying momentum and moments.

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::io::{TrainingProgress, load_checkpoint, save_checkpoint, save_weights, state_dict};
use striate::nn::{
    BatchNorm2d, Conv2dConfig, Dense, Dropout, Flatten, MaxPool2d, Module, Relu, Sequential,
};
use striate::optim::{Adam, AdamConfig, GroupOptions, Momentum, Optimizer, Sgd, SgdConfig};
use striate::{Error, Tape, Tensor};

const BATCHES: u64 = 4;

fn model(seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .push(
            Conv2dConfig::new(1, 4, 3)
                .padding(1)
                .bias(false)
                .init(&mut rng),
        )
        .push(BatchNorm2d::new(4))
        .push(Relu)
        .push(MaxPool2d::new(2))
        .push(Flatten::new())
        .push(Dropout::new(0.3))
        .push(Dense::new(4 * 4 * 4, 3, &mut rng))
}

fn data() -> Vec<(Tensor, Vec<usize>)> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..BATCHES)
        .map(|i| {
            let x = Tensor::rand_uniform(&[8, 1, 8, 8], -1.0, 1.0, &mut rng);
            let labels = (0..8).map(|j| (i as usize + j) % 3).collect();
            (x, labels)
        })
        .collect()
}

/// Trains until `progress.step == until`: each step's randomness comes from its seed.
fn train(
    model: &mut Sequential,
    optimizer: &mut dyn Optimizer,
    progress: &mut TrainingProgress,
    until: u64,
) {
    let data = data();
    while progress.step < until {
        let (x, labels) = &data[(progress.step % BATCHES) as usize];
        let tape = Tape::training_with_seed(progress.step_seed());
        let loss = model.forward(tape.input(x.clone())).cross_entropy(labels);
        let grads = loss.backward();
        optimizer.step(model, &grads);
        progress.step += 1;
        if progress.step.is_multiple_of(BATCHES) {
            progress.epoch += 1;
        }
    }
}

fn bits(model: &dyn Module) -> Vec<(String, Vec<u32>)> {
    state_dict(model)
        .into_iter()
        .map(|(name, t)| (name, t.as_slice().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

fn resume_matches_uninterrupted_run(make_optimizer: fn() -> Box<dyn Optimizer>, tag: &str) {
    let start = TrainingProgress {
        seed: 2024,
        ..Default::default()
    };
    let (mut straight, mut optimizer) = (model(0), make_optimizer());
    let mut progress = start;
    train(&mut straight, optimizer.as_mut(), &mut progress, 6);

    let path = std::env::temp_dir().join(format!(
        "striate-ckpt-{tag}-{}.safetensors",
        std::process::id()
    ));
    {
        let (mut first, mut optimizer) = (model(0), make_optimizer());
        let mut progress = start;
        train(&mut first, optimizer.as_mut(), &mut progress, 3);
        save_checkpoint(&path, &first, optimizer.as_ref(), progress).unwrap();
    } // the first half's model, optimizer and progress are gone
    let (mut resumed, mut optimizer) = (model(99), make_optimizer());
    let mut progress = load_checkpoint(&path, &mut resumed, optimizer.as_mut()).unwrap();
    assert_eq!(
        progress,
        TrainingProgress {
            epoch: 0,
            step: 3,
            seed: 2024
        }
    );
    train(&mut resumed, optimizer.as_mut(), &mut progress, 6);
    std::fs::remove_file(&path).unwrap();

    assert_eq!(progress.epoch, 1);
    assert_eq!(
        bits(&resumed),
        bits(&straight),
        "{tag}: resumed run differs"
    );
    assert_ne!(
        bits(&resumed),
        bits(&model(0)),
        "{tag}: training changed nothing"
    );
}

#[test]
fn sgd_with_momentum_resumes_bit_for_bit() {
    resume_matches_uninterrupted_run(
        || {
            Box::new(
                Sgd::new(SgdConfig {
                    learning_rate: 0.1,
                    momentum: Some(Momentum::nesterov(0.9)),
                    weight_decay: 1e-3,
                })
                .with_group(
                    "6",
                    GroupOptions {
                        learning_rate: Some(0.02),
                        ..Default::default()
                    },
                ),
            )
        },
        "sgd",
    );
}

#[test]
fn adam_resumes_bit_for_bit() {
    resume_matches_uninterrupted_run(
        || {
            Box::new(Adam::new(AdamConfig {
                learning_rate: 1e-2,
                ..Default::default()
            }))
        },
        "adam",
    );
}

#[test]
fn a_checkpoint_that_does_not_fit_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("striate-ckpt-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.safetensors");
    let mut trained = model(0);
    let mut optimizer = Adam::new(AdamConfig::default());
    let mut progress = TrainingProgress::default();
    train(&mut trained, &mut optimizer, &mut progress, 2);
    save_checkpoint(&path, &trained, &optimizer, progress).unwrap();

    // another architecture: the model part does not fit
    let mut rng = StdRng::seed_from_u64(1);
    let mut other = Sequential::new().push(Dense::new(2, 2, &mut rng));
    let mut fresh = Adam::new(AdamConfig::default());
    let err = load_checkpoint(&path, &mut other, &mut fresh).unwrap_err();
    assert!(matches!(err, Error::StateDict { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(
        fresh
            .state_dict(&other)
            .iter()
            .all(|(key, _)| key.starts_with("param_groups"))
    );

    // weights alone are not a checkpoint
    let weights = dir.join("weights.safetensors");
    save_weights(&trained, &weights).unwrap();
    let mut target = model(5);
    let before = bits(&target);
    let err = load_checkpoint(&weights, &mut target, &mut fresh)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("without a format entry (saved weights?)"),
        "{err}"
    );
    assert_eq!(bits(&target), before);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A model and an Adam whose every parameter has state at step `count`, set through the exact
/// counts (no one runs 2^24 steps in a test).
fn adam_at_step(count: u64) -> (Sequential, Adam) {
    let mut net = model(0);
    let mut adam = Adam::new(AdamConfig::default());
    let mut progress = TrainingProgress::default();
    train(&mut net, &mut adam, &mut progress, 1);
    let state = adam.state_dict(&net);
    let counts: Vec<(String, u64)> = adam
        .state_counts(&net)
        .into_iter()
        .map(|(key, _)| (key, count))
        .collect();
    assert!(!counts.is_empty());
    adam.load_state_dict_with_counts(&net, &state, &counts)
        .unwrap();
    (net, adam)
}

#[test]
fn step_counts_beyond_f32_precision_survive_a_checkpoint_exactly() {
    let dir = std::env::temp_dir().join(format!("striate-exact-counts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("exact.safetensors");
    // 2^24 + 1 is the first integer f32 cannot hold; 2^24 + 2 is its neighbour that it can.
    for count in [(1 << 24) + 1, (1 << 24) + 2, 1 << 40, i64::MAX as u64] {
        let (net, adam) = adam_at_step(count);
        let progress = TrainingProgress {
            epoch: (1 << 53) + 1,
            step: u64::MAX,
            seed: u64::MAX - 1,
        };
        save_checkpoint(&path, &net, &adam, progress).unwrap();
        let (mut fresh, mut restored) = (model(1), Adam::new(AdamConfig::default()));
        assert_eq!(
            load_checkpoint(&path, &mut fresh, &mut restored).unwrap(),
            progress
        );
        let counts = restored.state_counts(&fresh);
        assert_eq!(counts, adam.state_counts(&net));
        assert!(
            counts.iter().all(|(_, c)| *c == count),
            "{count}: {counts:?}"
        );
        // Stored as I64 in the file.
        let tensors = striate::io::read_safetensors(&path).unwrap();
        let step = tensors.iter().find(|(k, _)| k.ends_with(".step")).unwrap();
        assert_eq!(step.1.shape(), &[] as &[usize]);
        let header_len = u64::from_le_bytes(std::fs::read(&path).unwrap()[..8].try_into().unwrap());
        let header = &std::fs::read(&path).unwrap()[8..8 + header_len as usize];
        let header = String::from_utf8_lossy(header);
        assert!(
            header.contains(&format!("\"{}\":{{\"dtype\":\"I64\"", step.0)),
            "{header}"
        );
    }
    // A count beyond i64 cannot be stored: an error naming the file, not a wrapped count.
    let (net, adam) = adam_at_step(u64::MAX);
    let err = save_checkpoint(&path, &net, &adam, TrainingProgress::default()).unwrap_err();
    assert!(
        err.to_string().starts_with(&path.display().to_string()),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoints_with_f32_step_counts_still_load() {
    // The layout before counts were I64: every optimizer entry an F32 tensor, counts included.
    let dir = std::env::temp_dir().join(format!("striate-old-counts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("old.safetensors");
    let (net, adam) = adam_at_step(12_345);
    let mut tensors: Vec<(String, Tensor)> = state_dict(&net)
        .into_iter()
        .map(|(k, t)| (format!("model.{k}"), t))
        .collect();
    tensors.extend(
        adam.state_dict(&net)
            .into_iter()
            .map(|(k, t)| (format!("optimizer.{k}"), t)),
    );
    let metadata = [
        ("format", "striate.checkpoint"),
        ("version", "1"),
        ("epoch", "3"),
        ("step", "12345"),
        ("seed", "9"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    striate::io::write_safetensors(&path, &tensors, metadata).unwrap();
    let (mut fresh, mut restored) = (model(1), Adam::new(AdamConfig::default()));
    let progress = load_checkpoint(&path, &mut fresh, &mut restored).unwrap();
    assert_eq!(
        (progress.epoch, progress.step, progress.seed),
        (3, 12_345, 9)
    );
    assert_eq!(restored.state_counts(&fresh), adam.state_counts(&net));
    assert_eq!(bits(&fresh), bits(&net));
    std::fs::remove_dir_all(&dir).unwrap();
}
