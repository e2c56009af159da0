//! One SGD step of the MNIST CNN at batch 64 (forward, backward, momentum update) and
//! inference at batch 256: the figures a user of `examples/mnist.rs` feels. Then the same for
//! ResNet-18 on 224x224 images (a step at batch 8, inference of a single image): the figures of
//! a user of the model zoo, where batch norm, residual adds, strided and 1x1 convolutions and
//! a single image's parallelism count beside the 3x3 kernels.

#[path = "common/workloads.rs"]
mod workloads;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use workloads::{MnistWorkload, ResNetWorkload};

fn bench_train_step(c: &mut Criterion) {
    // As a training program would: keep freed buffers for the next iteration.
    striate::keep_freed_memory();
    let mut mnist = MnistWorkload::new();
    let mut group = c.benchmark_group("mnist_cnn");
    group.throughput(Throughput::Elements(64));
    // The same step with anomaly detection off (the default) and on (every activation and
    // gradient checked for NaN and infinity): the difference is the mode's cost. Every
    // `MnistWorkload::RESTART` steps the model starts again, untimed (see there why).
    for (name, detect) in [
        ("train_step_batch64", false),
        ("train_step_batch64_detect_anomaly", true),
    ] {
        group.bench_function(name, |bench| {
            bench.iter_custom(|iterations| {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    mnist.restart_if_due();
                    let start = Instant::now();
                    mnist.step(detect);
                    timed += start.elapsed();
                }
                timed
            })
        });
    }
    group.throughput(Throughput::Elements(256));
    group.bench_function("inference_batch256", |bench| {
        bench.iter(|| black_box(mnist.infer()))
    });
    group.finish();
}

fn bench_resnet18(c: &mut Criterion) {
    striate::keep_freed_memory();
    let mut resnet = ResNetWorkload::new();
    let mut group = c.benchmark_group("resnet18");
    group.sample_size(10);
    group.throughput(Throughput::Elements(8));
    group.bench_function("train_step_batch8", |bench| bench.iter(|| resnet.step()));
    group.throughput(Throughput::Elements(1));
    group.bench_function("inference_batch1", |bench| {
        bench.iter(|| black_box(resnet.infer()))
    });
    group.finish();
}

criterion_group!(benches, bench_train_step, bench_resnet18);

fn main() {
    // The bench's thread joins striate's pool, as a training program's main thread does
    // (`striate::set_num_threads`), so kernels are timed as programs run them.
    striate::set_num_threads(0).expect("the first pool of this process");
    benches();
    Criterion::default().configure_from_args().final_summary();
}
