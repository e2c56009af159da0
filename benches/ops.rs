//! Benchmarks of the foundation: GEMM (throughput in FLOP/s, shown by criterion as elem/s),
//! elementwise ops (elements/s), and the softmax cross-entropy loss forward and backward; and
//! `machine/fma_peak`, the multiply-add peak of this CPU on every thread (the fastest of several
//! loops, see `common/machine.rs`, which also prints the clock it implies), the ceiling the GEMM
//! and conv figures should be read against.

#[cfg(target_arch = "x86_64")]
#[path = "common/machine.rs"]
mod machine;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::kernels::gemm::{MatMut, MatRef, gemm};
use striate::{Tape, Tensor};

fn bench_matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    let mut rng = StdRng::seed_from_u64(0);
    for n in [256usize, 512, 1024, 2048] {
        let a = Tensor::rand_uniform(&[n, n], -1.0, 1.0, &mut rng);
        let b = Tensor::rand_uniform(&[n, n], -1.0, 1.0, &mut rng);
        let mut out = vec![0.0f32; n * n];
        group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        if n == 2048 {
            group.sample_size(20);
        }
        group.bench_with_input(BenchmarkId::new("square", n), &n, |bench, &n| {
            bench.iter(|| {
                gemm(
                    1.0,
                    MatRef::row_major(black_box(a.as_slice()), n, n),
                    MatRef::row_major(black_box(b.as_slice()), n, n),
                    0.0,
                    MatMut::row_major(&mut out, n, n),
                )
            })
        });
    }
    // The thin product of the MNIST net's second conv as im2col sees it.
    let (m, k, n) = (64, 288, 12544);
    let a = Tensor::rand_uniform(&[m, k], -1.0, 1.0, &mut rng);
    let b = Tensor::rand_uniform(&[k, n], -1.0, 1.0, &mut rng);
    let mut out = vec![0.0f32; m * n];
    group.throughput(Throughput::Elements(2 * (m * k * n) as u64));
    group.bench_function("thin_64x288x12544", |bench| {
        bench.iter(|| {
            gemm(
                1.0,
                MatRef::row_major(black_box(a.as_slice()), m, k),
                MatRef::row_major(black_box(b.as_slice()), k, n),
                0.0,
                MatMut::row_major(&mut out, m, n),
            )
        })
    });
    // The MNIST net's first dense layer: small output, deep inner dimension (split by depth).
    let (m, k, n) = (64, 3136, 128);
    let x = Tensor::rand_uniform(&[m, k], -1.0, 1.0, &mut rng);
    let w = Tensor::rand_uniform(&[n, k], -1.0, 1.0, &mut rng);
    let mut out = vec![0.0f32; m * n];
    group.throughput(Throughput::Elements(2 * (m * k * n) as u64));
    group.bench_function("dense_64x3136x128", |bench| {
        bench.iter(|| {
            gemm(
                1.0,
                MatRef::row_major(black_box(x.as_slice()), m, k),
                MatRef::row_major(black_box(w.as_slice()), n, k).t(),
                0.0,
                MatMut::row_major(&mut out, m, n),
            )
        })
    });
    group.finish();
}

fn bench_machine(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    {
        let Some((fastest, rate)) = machine::fastest_fma_loop() else {
            eprintln!(
                "machine/fma_peak skipped: the kernels run without FMA here ({})",
                striate::kernels::instruction_set()
            );
            return;
        };
        let threads = rayon::current_num_threads();
        let clock = machine::all_threads_clock();
        eprintln!(
            "machine: fastest multiply-add loop `{}` of the kernels' instruction set ({}) \
             ({:.0} GFLOP/s on {threads} threads); clock under load {:.2} GHz, so {:.1} FLOP \
             per cycle per core",
            fastest.name,
            striate::kernels::instruction_set(),
            rate / 1e9,
            clock / 1e9,
            rate / (threads as f64 * clock),
        );
        // Criterion then times the winner; the comparison script takes its fastest sample as
        // the ceiling (noise only slows a loop down) and prints the median beside it.
        let iterations = 200_000_000 / fastest.flops_per_iteration;
        let mut group = c.benchmark_group("machine");
        group.throughput(Throughput::Elements(
            (threads * iterations * fastest.flops_per_iteration) as u64,
        ));
        group.bench_function("fma_peak", |bench| {
            bench.iter(|| rayon::broadcast(|_| black_box((fastest.run)(black_box(iterations)))))
        });
        group.finish();
    }
}

fn bench_elementwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("elementwise");
    let mut rng = StdRng::seed_from_u64(1);
    let len = 1 << 20;
    let a = Tensor::rand_uniform(&[len], -1.0, 1.0, &mut rng);
    let b = Tensor::rand_uniform(&[len], -1.0, 1.0, &mut rng);
    group.throughput(Throughput::Elements(len as u64));
    group.bench_function("add_relu_1M", |bench| {
        bench.iter(|| {
            let tape = Tape::inference();
            let y = (tape.input(a.clone()) + tape.input(b.clone())).relu();
            black_box(y.value());
        })
    });
    group.finish();
}

fn bench_cross_entropy(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_entropy");
    let mut rng = StdRng::seed_from_u64(2);
    let logits = Tensor::rand_uniform(&[256, 10], -3.0, 3.0, &mut rng);
    let labels: Vec<usize> = (0..256).map(|i| (i * 7) % 10).collect();
    group.throughput(Throughput::Elements(logits.len() as u64));
    group.bench_function("forward_256x10", |bench| {
        bench.iter(|| {
            let tape = Tape::inference();
            black_box(tape.input(logits.clone()).cross_entropy(&labels).item());
        })
    });
    group.bench_function("forward_backward_256x10", |bench| {
        bench.iter(|| {
            let tape = Tape::training();
            let x = tape.variable(logits.clone());
            black_box(x.cross_entropy(&labels).backward());
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_machine,
    bench_matmul,
    bench_elementwise,
    bench_cross_entropy
);

fn main() {
    // The bench's thread joins striate's pool, as a training program's main thread does
    // (`striate::set_num_threads`), so kernels are timed as programs run them.
    striate::set_num_threads(0).expect("the first pool of this process");
    benches();
    Criterion::default().configure_from_args().final_summary();
}
