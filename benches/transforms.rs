//! Augmentation throughput in images per second (criterion's elem/s): the typical MNIST
//! pipeline (rotation ±15° bilinear, random crop with padding 2, elastic α = 34 σ = 4, Gaussian
//! noise σ = 0.1) over a batch of 256 images on 1 and 2 threads, then each stage alone on one
//! thread, to show where the time goes.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use striate::Tensor;
use striate::transforms::{
    Compose, ElasticTransform, GaussianNoise, Interpolation, RandomCrop, RandomRotation, Transform,
    apply_batch,
};

const BATCH: usize = 256;

/// Digit-like 28×28 images: a ring of random centre and radius, values in [0, 1].
fn mnist_like_batch() -> Tensor {
    let mut data = Vec::with_capacity(BATCH * 28 * 28);
    for n in 0..BATCH {
        let (cx, cy) = (11.0 + (n % 7) as f32, 11.0 + (n % 5) as f32);
        let radius = 5.0 + (n % 4) as f32;
        for i in 0..28 {
            for j in 0..28 {
                let d = ((j as f32 - cx).powi(2) + (i as f32 - cy).powi(2)).sqrt() - radius;
                data.push((-d * d / 3.0).exp());
            }
        }
    }
    Tensor::from_vec(data, &[BATCH, 1, 28, 28]).unwrap()
}

fn rotation() -> RandomRotation {
    RandomRotation::new(15.0).interpolation(Interpolation::Bilinear)
}

fn crop() -> RandomCrop {
    RandomCrop::new(28).padding(2)
}

fn elastic() -> ElasticTransform {
    ElasticTransform::new(34.0, 4.0)
}

fn noise() -> GaussianNoise {
    GaussianNoise::new(0.1)
}

fn mnist_pipeline() -> Compose {
    Compose::default()
        .then(rotation())
        .then(crop())
        .then(elastic())
        .then(noise())
}

fn run_batch(
    c: &mut Criterion,
    group_name: &str,
    cases: Vec<(&str, Box<dyn Transform>)>,
    threads: &[usize],
) {
    let images = mnist_like_batch();
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, transform) in &cases {
        for &t in threads {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap();
            let mut epoch = 0u64;
            group.bench_with_input(
                BenchmarkId::new(*name, format!("{t}-threads")),
                &t,
                |b, _| {
                    b.iter(|| {
                        epoch += 1;
                        pool.install(|| {
                            apply_batch(transform.as_ref(), black_box(&images), 7, epoch, 0)
                        })
                    })
                },
            );
        }
    }
    group.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    run_batch(
        c,
        "augment_mnist_batch256",
        vec![("pipeline", Box::new(mnist_pipeline()))],
        &[1, 2],
    );
}

fn bench_stages(c: &mut Criterion) {
    run_batch(
        c,
        "augment_stage_batch256",
        vec![
            ("rotation", Box::new(rotation())),
            ("crop_pad2", Box::new(crop())),
            ("elastic", Box::new(elastic())),
            ("noise", Box::new(noise())),
        ],
        &[1],
    );
}

criterion_group!(benches, bench_pipeline, bench_stages);
criterion_main!(benches);
