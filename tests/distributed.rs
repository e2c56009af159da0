//! Data-parallel training over MPI, with 2 ranks on this machine:
//! `cargo test --features mpi --test distributed` (needs `mpirun`: Debian's `openmpi-bin`).
//!
//! Each test starts `mpirun -np 2` on this very test binary, whose `worker` test then runs
//! the part named by `STRIATE_MPI_WORKER` on each rank; run normally, `worker` does nothing.
//! The test checks what the ranks printed, wrote and exited with:
//!
//! - 2 ranks with batch 64 reproduce one process with batch 128 after 50 steps (losses,
//!   weights, validation), and hold bit-identical parameters after every step;
//! - a checkpoint written by rank 0 resumes on both ranks and matches an uninterrupted run,
//!   and a job of another size refuses it;
//! - ranks with different models stop with an error before training;
//! - a rank killed with SIGKILL, or stopped (SIGSTOP: alive but unreachable), ends the job
//!   within 10 s with a non-zero exit and a message naming it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use striate::Error;
use striate::autograd::ops::batch_norm::ReplicaSum;
use striate::data::{DataLoader, ImageDataset};
use striate::distributed::{self, DistributedOptions, World};
use striate::io::{TrainingProgress, load_weights, save_weights, state_dict};
use striate::nn::{BatchNorm2d, Conv2dConfig, Dense, Flatten, MaxPool2d, Module, Relu, Sequential};
use striate::optim::{Momentum, Sgd, SgdConfig};
use striate::train::{Fit, Progress, evaluate};

const WORKER: &str = "STRIATE_MPI_WORKER";
const OUT: &str = "STRIATE_MPI_OUT";

/// The ranks' entry point; a no-op unless `mpirun` started this binary for a worker.
#[test]
fn worker() {
    let Ok(name) = std::env::var(WORKER) else {
        return;
    };
    let out = PathBuf::from(std::env::var(OUT).expect("the output directory"));
    match name.as_str() {
        "equivalence" => equivalence_worker(&out, false),
        "equivalence_sync_bn" => equivalence_worker(&out, true),
        "checkpoint" => checkpoint_worker(&out),
        "checkpoint_other_size" => checkpoint_other_size_worker(&out),
        "mismatch" => mismatch_worker(),
        "kill" => fault_worker("KILL"),
        "stop" => fault_worker("STOP"),
        other => panic!("no worker {other}"),
    }
}

/// Runs `worker` on `ranks` ranks; kills the job (and fails) if it outlives `limit`.
fn mpirun(worker: &str, ranks: usize, out: &Path, limit: Duration) -> (Output, Instant) {
    let exe = std::env::current_exe().expect("the test binary");
    let child = Command::new("mpirun")
        .args(["-np", &ranks.to_string(), "--oversubscribe"])
        // Containers often forbid the single-copy (ptrace) path of shared memory.
        .args(["--mca", "btl_vader_single_copy_mechanism", "none"])
        .arg(exe)
        .args(["worker", "--exact", "--nocapture", "--test-threads=1"])
        .env(WORKER, worker)
        .env(OUT, out)
        .env("RAYON_NUM_THREADS", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun (Debian: apt-get install openmpi-bin libopenmpi-dev)");
    let pid = child.id();
    let started = Instant::now();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match result.recv_timeout(limit) {
        Ok(output) => (output.expect("mpirun's output"), Instant::now()),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the job `{worker}` hung: still running after {limit:?} (started {started:?})");
        }
    }
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("striate-mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small CNN without batch norm or dropout, so that 2 ranks can match one process exactly.
fn model(seed: u64) -> Sequential {
    model_with(seed, None)
}

/// [`model`], or with a synchronised batch norm after its first convolution: `Some(None)` for
/// a plain batch norm (one process), `Some(Some(sum))` synchronised over the ranks.
fn model_with(seed: u64, batch_norm: Option<Option<Arc<dyn ReplicaSum>>>) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Sequential::new().push(Conv2dConfig::new(1, 6, 3).padding(1).init(&mut rng));
    match batch_norm {
        Some(Some(replicas)) => model = model.push(BatchNorm2d::new(6).synchronized(replicas)),
        Some(None) => model = model.push(BatchNorm2d::new(6)),
        None => {}
    }
    model
        .push(Relu)
        .push(MaxPool2d::new(2))
        .push(Conv2dConfig::new(6, 12, 3).padding(1).init(&mut rng))
        .push(Relu)
        .push(MaxPool2d::new(2))
        .push(Flatten::new())
        .push(Dense::new(12 * 4 * 4, 10, &mut rng))
}

/// `n` 16x16 images whose class is where a bright blob sits, with noise.
fn images(n: usize, seed: u64) -> ImageDataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pixels = vec![0u8; n * 256];
    let labels: Vec<usize> = (0..n).map(|_| rng.random_range(0..10)).collect();
    for (image, &label) in pixels.chunks_mut(256).zip(&labels) {
        for p in image.iter_mut() {
            *p = rng.random_range(0..90);
        }
        let (row, col) = (2 + (label / 5) * 8, 1 + (label % 5) * 3);
        for r in row..row + 4 {
            for c in col..col + 3 {
                image[r * 16 + c] = 230;
            }
        }
    }
    ImageDataset::from_u8(pixels, [1, 16, 16], labels).unwrap()
}

fn sgd() -> Sgd {
    Sgd::new(SgdConfig {
        learning_rate: 0.05,
        momentum: Some(Momentum::classic(0.9)),
        ..Default::default()
    })
}

const STEPS: usize = 50;
const PER_RANK_BATCH: usize = 64;

fn train_loader(batch: usize) -> DataLoader {
    DataLoader::new(images(STEPS * 2 * PER_RANK_BATCH, 1), batch)
        .shuffle(3)
        .normalize(&[0.3], &[0.3])
}

fn validation_loader() -> DataLoader {
    // An odd size: the ranks' parts differ by one sample.
    DataLoader::new(images(999, 2), 100).normalize(&[0.3], &[0.3])
}

fn equivalence_worker(out: &Path, sync_batch_norm: bool) {
    let world = World::init().unwrap();
    // Rank 0's initial weights win.
    let seed = world.rank() as u64 + 10;
    let mut model = if sync_batch_norm {
        model_with(seed, Some(Some(world.replica_sum())))
    } else {
        model(seed)
    };
    let mut sgd = sgd();
    let validation = validation_loader();
    let options = DistributedOptions {
        check_replicas: true,
        bucket_bytes: 4096, // several buckets even for this small model
    };
    let history = Fit::new(&mut model, &mut sgd)
        .distributed_with(&world, options)
        .validation(&validation)
        .progress(Progress::Silent)
        .seed(5)
        .run(&train_loader(PER_RANK_BATCH))
        .unwrap();
    let record = history.last().unwrap();
    let matrix = distributed::confusion_matrix(&world, &model, &validation, 10).unwrap();
    if world.is_leader() {
        save_weights(&model, out.join("weights.safetensors")).unwrap();
        let line = format!(
            "{} {} {} {} {}\n",
            record.train_loss,
            record.train_accuracy,
            record.val_loss.unwrap(),
            record.val_accuracy.unwrap(),
            matrix.accuracy()
        );
        std::fs::write(out.join("record.txt"), line).unwrap();
    }
}

#[test]
fn two_ranks_reproduce_one_process_and_stay_identical() {
    two_ranks_reproduce_one_process("equivalence", None);
}

/// With a synchronised batch norm, 2 ranks reproduce one process with a plain batch norm on
/// the global batch: the same normalisation, gradients and running statistics.
#[test]
fn a_synchronised_batch_norm_reproduces_one_process() {
    two_ranks_reproduce_one_process("equivalence_sync_bn", Some(None));
}

fn two_ranks_reproduce_one_process(worker: &str, batch_norm: Option<Option<Arc<dyn ReplicaSum>>>) {
    let out = scratch(worker);
    let (output, _) = mpirun(worker, 2, &out, Duration::from_secs(300));
    assert!(output.status.success(), "{}", text(&output));

    // One process, the global batch (2 x 64), the same seeds: rank 0's initial weights.
    let has_batch_norm = batch_norm.is_some();
    let mut single = model_with(10, batch_norm);
    let mut optimizer = sgd();
    let validation = validation_loader();
    let history = Fit::new(&mut single, &mut optimizer)
        .validation(&validation)
        .progress(Progress::Silent)
        .seed(5)
        .run(&train_loader(2 * PER_RANK_BATCH))
        .unwrap();
    let expected = history.last().unwrap();
    assert_eq!(history.epochs.len(), 1);

    let record = std::fs::read_to_string(out.join("record.txt")).unwrap();
    let got: Vec<f32> = record
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let close = |a: f32, b: f32, what: &str| {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "{what}: 2 ranks {a}, one process {b}"
        );
    };
    close(got[0], expected.train_loss, "training loss");
    close(got[1], expected.train_accuracy, "training accuracy");
    close(got[2], expected.val_loss.unwrap(), "validation loss");
    close(
        got[3],
        expected.val_accuracy.unwrap(),
        "validation accuracy",
    );

    // The weights after 50 steps, within summation order.
    let mut distributed = model_with(99, has_batch_norm.then_some(None));
    load_weights(&mut distributed, out.join("weights.safetensors")).unwrap();
    let mut worst = 0.0f32;
    for ((name, a), (_, b)) in state_dict(&distributed).iter().zip(state_dict(&single)) {
        for (x, y) in a.as_slice().iter().zip(b.as_slice()) {
            let error = (x - y).abs() / y.abs().max(1e-2);
            assert!(error < 1e-3, "{name}: 2 ranks {x}, one process {y}");
            worst = worst.max(error);
        }
    }
    eprintln!(
        "{worker}: largest relative difference of weights and buffers after {STEPS} steps: {worst:e}"
    );

    // Merged evaluation counts every validation sample once: the same accuracy as one
    // process evaluating the same weights.
    let alone = evaluate(&distributed, &validation).unwrap();
    assert_eq!(alone.samples, 999);
    assert_eq!(got[3], alone.accuracy, "merged validation accuracy");
    assert!(
        (got[4] - alone.accuracy).abs() < 1e-6,
        "merged confusion matrix accuracy"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// [`model`] with batch norm: its running statistics, which each rank updates from its own
/// batches, must be rank 0's on every rank after each epoch for a checkpoint to resume.
fn model_with_batch_norm(seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .push(Conv2dConfig::new(1, 6, 3).padding(1).init(&mut rng))
        .push(BatchNorm2d::new(6))
        .push(Relu)
        .push(MaxPool2d::new(4))
        .push(Flatten::new())
        .push(Dense::new(6 * 4 * 4, 10, &mut rng))
}

/// Two epochs straight, and one epoch, a checkpoint, a fresh model and one more epoch.
fn checkpoint_worker(out: &Path) {
    let world = World::init().unwrap();
    let loader = DataLoader::new(images(512, 4), 32).shuffle(8);
    let run = |model: &mut Sequential, sgd: &mut Sgd, first: usize, epochs: usize| {
        Fit::new(model, sgd)
            .distributed(&world)
            .progress(Progress::Silent)
            .seed(1)
            .start_epoch(first)
            .epochs(epochs)
            .run(&loader)
            .unwrap();
    };
    let (mut straight, mut straight_sgd) = (model_with_batch_norm(1), sgd());
    run(&mut straight, &mut straight_sgd, 0, 2);

    let (mut first, mut first_sgd) = (model_with_batch_norm(1), sgd());
    run(&mut first, &mut first_sgd, 0, 1);
    let path = out.join("run.ckpt.safetensors");
    let progress = TrainingProgress {
        epoch: 1,
        step: loader.shard_len(world.size()) as u64,
        seed: 1,
    };
    distributed::save_checkpoint(&world, &path, &first, &first_sgd, progress).unwrap();

    let (mut resumed, mut resumed_sgd) = (model_with_batch_norm(77), sgd());
    let loaded =
        distributed::load_checkpoint(&world, &path, &mut resumed, &mut resumed_sgd).unwrap();
    assert_eq!(loaded, progress);
    run(&mut resumed, &mut resumed_sgd, loaded.epoch as usize, 1);
    for ((name, a), (_, b)) in state_dict(&resumed).iter().zip(state_dict(&straight)) {
        assert_eq!(a.as_slice(), b.as_slice(), "rank {}: {name}", world.rank());
    }
    println!("rank {} resumed bit-identically", world.rank());
}

fn checkpoint_other_size_worker(out: &Path) {
    let world = World::init().unwrap();
    let (mut model, mut sgd) = (model_with_batch_norm(1), sgd());
    let path = out.join("run.ckpt.safetensors");
    match distributed::load_checkpoint(&world, &path, &mut model, &mut sgd) {
        Err(Error::Distributed(message)) => println!("refused: {message}"),
        other => panic!("a checkpoint of 2 ranks loaded on 1: {other:?}"),
    }
}

#[test]
fn checkpoint_from_rank_0_resumes_everywhere() {
    let out = scratch("checkpoint");
    let (output, _) = mpirun("checkpoint", 2, &out, Duration::from_secs(300));
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for rank in 0..2 {
        assert!(
            stdout.contains(&format!("rank {rank} resumed bit-identically")),
            "{}",
            text(&output)
        );
    }
    // A job of another size refuses it.
    let (output, _) = mpirun("checkpoint_other_size", 1, &out, Duration::from_secs(120));
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("run on 2 ranks cannot resume on 1"),
        "{}",
        text(&output)
    );
    let _ = std::fs::remove_dir_all(&out);
}

fn mismatch_worker() {
    let world = World::init().unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    // Rank 1 has a wider layer: a different model.
    let hidden = if world.rank() == 0 { 16 } else { 32 };
    let mut model = Sequential::new()
        .push(Flatten::new())
        .push(Dense::new(256, hidden, &mut rng))
        .push(Relu)
        .push(Dense::new(hidden, 10, &mut rng));
    let mut sgd = sgd();
    let loader = DataLoader::new(images(64, 0), 8);
    let result = Fit::new(&mut model, &mut sgd)
        .distributed(&world)
        .progress(Progress::Silent)
        .run(&loader);
    match result {
        Err(Error::Distributed(message)) => {
            println!("rank {} refused to train: {message}", world.rank())
        }
        other => panic!("rank {} trained different models: {other:?}", world.rank()),
    }
}

#[test]
fn different_models_are_an_error_before_training() {
    let out = scratch("mismatch");
    let (output, _) = mpirun("mismatch", 2, &out, Duration::from_secs(120));
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for rank in 0..2 {
        let line = format!("rank {rank} refused to train: the ranks disagree on the model");
        assert!(stdout.contains(&line), "{}", text(&output));
    }
    let _ = std::fs::remove_dir_all(&out);
}

fn millis_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Trains for a long time; rank 1 sends itself `signal` after a few steps.
fn fault_worker(signal: &str) {
    let world = World::init().unwrap();
    let mut model = model(0);
    let mut sgd = sgd();
    let loader = DataLoader::new(images(256, 0), 16);
    struct Fault<'s> {
        rank: usize,
        signal: &'s str,
        epochs: usize,
    }
    impl striate::train::Callback for Fault<'_> {
        fn on_epoch_end(
            &mut self,
            _: &striate::train::EpochRecord,
            _: &mut dyn Module,
        ) -> striate::train::Control {
            self.epochs += 1;
            if self.rank == 1 && self.epochs == 2 {
                println!("FAULT_AT {}", millis_now());
                let pid = std::process::id().to_string();
                let _ = Command::new("kill")
                    .args([&format!("-{}", self.signal), &pid])
                    .status();
            }
            striate::train::Control::Continue
        }
    }
    let fault = Fault {
        rank: world.rank(),
        signal,
        epochs: 0,
    };
    Fit::new(&mut model, &mut sgd)
        .distributed(&world)
        .progress(Progress::Silent)
        .epochs(100_000)
        .callback(fault)
        .run(&loader)
        .unwrap();
    unreachable!("the job should have ended");
}

fn a_fault_ends_the_job(worker: &str, naming: &str) {
    let out = scratch(worker);
    let (output, ended) = mpirun(worker, 2, &out, Duration::from_secs(120));
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (_, after_marker) = stdout
        .split_once("FAULT_AT ")
        .unwrap_or_else(|| panic!("no fault happened: {all}"));
    let digits: String = after_marker
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let fault_at: u128 = digits.parse().unwrap();
    let after = millis_now() - fault_at - ended.elapsed().as_millis();
    assert!(
        after < 10_000,
        "the job ended {after} ms after the fault: {all}"
    );
    assert!(
        all.contains(naming),
        "no message naming rank 1 ({naming:?}): {all}"
    );
    eprintln!("{worker}: the job ended {after} ms after the fault");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_killed_rank_ends_the_job_naming_it() {
    a_fault_ends_the_job("kill", "rank 1");
}

#[test]
fn a_stopped_rank_ends_the_job_naming_it() {
    a_fault_ends_the_job("stop", "rank 1 has not answered");
}

/// Sharding needs no MPI: the shards of an epoch partition the single loader's batches.
#[test]
fn shards_deal_out_each_global_batch() {
    let loader = DataLoader::new(images(20, 0), 3).shuffle(1);
    let global = DataLoader::new(images(20, 0), 6).shuffle(1);
    for epoch in 0..2 {
        let shards: Vec<Vec<Vec<usize>>> = (0..2)
            .map(|r| {
                loader
                    .epoch_shard(epoch, striate::data::Shard::new(r, 2))
                    .map(|b| b.labels)
                    .collect()
            })
            .collect();
        for (b, batch) in global.epoch(epoch).enumerate() {
            let mut mine: Vec<usize> = shards[0][b].iter().chain(&shards[1][b]).copied().collect();
            let mut theirs = batch.labels.clone();
            mine.sort();
            theirs.sort();
            assert_eq!(mine, theirs, "epoch {epoch}, batch {b}");
        }
    }
}
