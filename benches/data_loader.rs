//! What the DataLoader costs per MNIST batch, and whether preparing the next batch on a
//! background thread (`prefetch`) hides that cost behind a training step.
//!
//! The training step is simulated by a fixed amount of arithmetic, either on the caller's thread
//! alone (a step that leaves the other cores idle) or split over rayon's pool (a step that keeps
//! every core busy, as striate's kernels do).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, RngExt, SeedableRng, rngs::StdRng};
use rayon::prelude::*;
use striate::Tensor;
use striate::data::{DataLoader, ImageDataset};

const BATCH: usize = 64;
const BATCHES_PER_EPOCH: usize = 16;

fn mnist_like(n: usize) -> ImageDataset {
    let mut rng = StdRng::seed_from_u64(0);
    let pixels = (0..n * 784).map(|_| rng.random::<u8>()).collect();
    ImageDataset::from_u8(pixels, [1, 28, 28], (0..n).map(|i| i % 10).collect()).unwrap()
}

/// A cheap augmentation: a random shift of up to 2 pixels with zero fill.
fn shift(image: &Tensor, rng: &mut dyn Rng) -> Tensor {
    let (dy, dx) = (rng.random_range(-2i32..=2), rng.random_range(-2i32..=2));
    let src = image.as_slice();
    let mut out = vec![0.0; src.len()];
    for y in 0..28i32 {
        for x in 0..28i32 {
            let (sy, sx) = (y - dy, x - dx);
            if (0..28).contains(&sy) && (0..28).contains(&sx) {
                out[(y * 28 + x) as usize] = src[(sy * 28 + sx) as usize];
            }
        }
    }
    Tensor::from_vec(out, &[1, 28, 28]).unwrap()
}

/// A costly augmentation in the manner of an elastic deformation: a random displacement field,
/// smoothed by a 9×9 box filter, then bilinear resampling.
fn elastic_like(image: &Tensor, rng: &mut dyn Rng) -> Tensor {
    let n = 28usize;
    let field: Vec<[f32; 2]> = (0..n * n)
        .map(|_| {
            [
                rng.random_range(-1.0f32..1.0),
                rng.random_range(-1.0f32..1.0),
            ]
        })
        .collect();
    let mut smooth = vec![[0.0f32; 2]; n * n];
    for y in 0..n {
        for x in 0..n {
            let mut acc = [0.0f32; 2];
            for yy in y.saturating_sub(4)..(y + 5).min(n) {
                for xx in x.saturating_sub(4)..(x + 5).min(n) {
                    acc[0] += field[yy * n + xx][0];
                    acc[1] += field[yy * n + xx][1];
                }
            }
            smooth[y * n + x] = [acc[0] * 3.0 / 81.0, acc[1] * 3.0 / 81.0];
        }
    }
    let src = image.as_slice();
    let at = |y: isize, x: isize| -> f32 {
        if (0..n as isize).contains(&y) && (0..n as isize).contains(&x) {
            src[y as usize * n + x as usize]
        } else {
            0.0
        }
    };
    let mut out = vec![0.0; n * n];
    for y in 0..n {
        for x in 0..n {
            let [dy, dx] = smooth[y * n + x];
            let (fy, fx) = (y as f32 + dy, x as f32 + dx);
            let (y0, x0) = (fy.floor(), fx.floor());
            let (ty, tx) = (fy - y0, fx - x0);
            let (y0, x0) = (y0 as isize, x0 as isize);
            out[y * n + x] = (1.0 - ty) * ((1.0 - tx) * at(y0, x0) + tx * at(y0, x0 + 1))
                + ty * ((1.0 - tx) * at(y0 + 1, x0) + tx * at(y0 + 1, x0 + 1));
        }
    }
    Tensor::from_vec(out, &[1, 28, 28]).unwrap()
}

/// A fixed amount of arithmetic: the same work whoever else is running.
fn work(iterations: u64) -> f64 {
    let mut x = 1.000_000_1f64;
    for _ in 0..iterations {
        x = black_box(x * 1.000_000_1 + 1e-9);
    }
    x
}

/// About 7 ms of arithmetic on one core of the 2-core machine this was written on.
const STEP_ITERATIONS: u64 = 1_700_000;

fn step_on_one_core() {
    black_box(work(STEP_ITERATIONS));
}

fn step_on_every_core() {
    let threads = rayon::current_num_threads() as u64;
    (0..threads).into_par_iter().for_each(|_| {
        black_box(work(STEP_ITERATIONS / threads));
    });
}

fn batch_assembly(c: &mut Criterion) {
    let data = mnist_like(BATCH * BATCHES_PER_EPOCH);
    let mut group = c.benchmark_group("mnist_batch_64");
    let plain = DataLoader::new(data.clone(), BATCH).shuffle(1);
    group.bench_function("plain", |b| b.iter(|| plain.epoch(0).next()));
    let normalised = DataLoader::new(data.clone(), BATCH)
        .shuffle(1)
        .normalize(&[0.1307], &[0.3081]);
    group.bench_function("normalised", |b| b.iter(|| normalised.epoch(0).next()));
    let shifted = DataLoader::new(data.clone(), BATCH)
        .shuffle(1)
        .augment(shift);
    group.bench_function("shift", |b| b.iter(|| shifted.epoch(0).next()));
    let elastic = DataLoader::new(data, BATCH)
        .shuffle(1)
        .augment(elastic_like);
    group.bench_function("elastic_like", |b| b.iter(|| elastic.epoch(0).next()));
    group.finish();
}

fn prefetch_overlap(c: &mut Criterion) {
    let data = mnist_like(BATCH * BATCHES_PER_EPOCH);
    let mut group = c.benchmark_group("epoch_16_batches");
    group.sample_size(10);
    let steps: [(&str, fn()); 2] = [
        ("step_one_core", step_on_one_core),
        ("step_all_cores", step_on_every_core),
    ];
    group.bench_function("step_alone", |b| {
        b.iter(|| (0..BATCHES_PER_EPOCH).for_each(|_| step_on_one_core()))
    });
    for (augmentation, transform) in [
        ("shift", shift as fn(&Tensor, &mut dyn Rng) -> Tensor),
        ("elastic_like", elastic_like),
    ] {
        for (step_name, step) in steps {
            for prefetch in [false, true] {
                let loader = DataLoader::new(data.clone(), BATCH)
                    .shuffle(1)
                    .augment(transform)
                    .prefetch(prefetch);
                let name = format!(
                    "{augmentation}/{step_name}/{}",
                    if prefetch { "prefetch" } else { "inline" }
                );
                group.bench_function(name, |b| {
                    b.iter(|| {
                        for batch in loader.epoch(0) {
                            black_box(&batch);
                            step();
                        }
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, batch_assembly, prefetch_overlap);
criterion_main!(benches);
