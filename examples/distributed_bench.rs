//! Training throughput of the MNIST CNN, in one process or data-parallel over MPI: the striate
//! half of `scripts/bench_distributed.sh`.
//!
//! ```sh
//! cargo run --release --features mpi --example distributed_bench -- --threads 1
//! mpirun -np 2 target/release/examples/distributed_bench --threads 1 --distributed
//! ```
//!
//! Each rank trains `--steps` steps of `--batch-size` MNIST images twice (the first pass warms
//! up caches and allocations), and rank 0 prints the second pass's throughput over all ranks
//! and what the gradient all-reduce cost and hid behind backward.

mod common;

use clap::Parser;
use common::cli::Common;
use striate::data::{DataLoader, Split, Subset};
use striate::distributed::World;
use striate::models::mnist_cnn;
use striate::optim::{Momentum, Sgd, SgdConfig};
use striate::prelude::*;

/// MNIST CNN training throughput, one process or data-parallel.
#[derive(Parser, Debug)]
struct Options {
    #[command(flatten)]
    common: Common,
    /// Timed steps (after as many warm-up steps)
    #[arg(long, default_value_t = 60)]
    steps: usize,
    /// Samples per step on each rank
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Train data-parallel over MPI (start with `mpirun -np N`)
    #[arg(long)]
    distributed: bool,
    /// Gradient bucket size in KiB (with --distributed)
    #[arg(long, default_value_t = 1024)]
    bucket_kib: usize,
    /// Instead of training, time the all-reduce of 1 KiB to 16 MiB (with --distributed): the
    /// calibration of docs/distributed.md's cost model
    #[arg(long)]
    calibrate: bool,
}

/// Times `World::sum_f32` for sizes from 1 KiB to 16 MiB; rank 0 prints one line per size.
fn calibrate(world: &World) -> striate::Result<()> {
    for kib in [1usize, 4, 16, 64, 256, 1024, 4096, 16384] {
        let len = kib * 1024 / 4;
        let reps = (256 * 1024 / kib).clamp(10, 2000);
        let mut data = vec![1.0f32; len];
        for _ in 0..3 {
            data = world.sum_f32(data)?;
        }
        world.barrier()?;
        let started = std::time::Instant::now();
        for _ in 0..reps {
            data = world.sum_f32(data)?;
        }
        let seconds = started.elapsed().as_secs_f64() / reps as f64;
        if world.is_leader() {
            println!(
                "allreduce ranks {} bytes {} seconds {seconds:.9} ({:.3} GB/s of data)",
                world.size(),
                len * 4,
                (len * 4) as f64 / seconds / 1e9
            );
        }
    }
    Ok(())
}

fn main() -> striate::Result<()> {
    let options = Options::parse();
    options.common.start_threads()?;
    let world = if options.distributed {
        Some(World::init()?)
    } else {
        None
    };
    if options.calibrate {
        let world = world.as_ref().ok_or_else(|| {
            striate::Error::Config("--calibrate needs --distributed (and mpirun)".into())
        })?;
        return calibrate(world);
    }
    let ranks = world.as_ref().map_or(1, World::size);
    let train = options.common.load(false, Split::Train)?;
    let samples = options.steps * options.batch_size * ranks;
    let subset = Subset::new(std::sync::Arc::new(train), (0..samples).collect());
    let loader = DataLoader::new(subset, options.batch_size)
        .shuffle(options.common.seed)
        .normalize(&[0.1307], &[0.3081]);
    let mut model = mnist_cnn(10, &mut StdRng::seed_from_u64(options.common.seed));
    let mut sgd = Sgd::new(SgdConfig {
        learning_rate: 0.01,
        momentum: Some(Momentum::classic(0.9)),
        ..Default::default()
    });
    let mut fit = Fit::new(&mut model, &mut sgd)
        .epochs(1)
        .progress(Progress::Silent);
    let distributed = striate::distributed::DistributedOptions {
        bucket_bytes: options.bucket_kib * 1024,
        ..Default::default()
    };
    if let Some(world) = &world {
        fit = fit.distributed_with(world, distributed);
    }
    fit.run(&loader)?; // warm-up
    if let Some(world) = &world {
        world.reset_stats();
    }
    let mut fit = Fit::new(&mut model, &mut sgd)
        .start_epoch(1)
        .epochs(1)
        .progress(Progress::Silent);
    if let Some(world) = &world {
        fit = fit.distributed_with(world, distributed);
    }
    let history = fit.run(&loader)?;
    let record = history.last().expect("one epoch");
    if world.as_ref().is_none_or(World::is_leader) {
        println!(
            "striate: {ranks} rank(s) x {} thread(s), batch {} per rank: {:.1} samples/s \
             ({:.1} ms per step)",
            striate::num_threads(),
            options.batch_size,
            record.samples_per_second,
            1e3 * record.train_seconds / options.steps as f64
        );
        if let Some(world) = &world {
            let stats = world.stats();
            let per_step = |seconds: f64| 1e3 * seconds / options.steps as f64;
            println!(
                "all-reduce: {} buckets, {:.2} MB per step; {:.2} ms per step from hand-over to \
                 result (waiting for the peers included), {:.2} ms of it after backward \
                 ({:.0}% overlapped)",
                stats.buckets / options.steps as u64,
                stats.bytes as f64 / options.steps as f64 / 1e6,
                per_step(stats.reduce_seconds),
                per_step(stats.exposed_seconds),
                100.0 * (1.0 - stats.exposed_seconds / stats.reduce_seconds.max(1e-12))
            );
        }
    }
    Ok(())
}
