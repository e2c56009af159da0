//! striate's kernels behind a C ABI for `scripts/paired_ratios.py`, which times them alternated
//! with PyTorch's, call batch by call batch, in one process.
//!
//! Each function runs `iters` calls of one workload and returns the seconds they took (the
//! operands are made once per shape and kept, as a benchmark keeps them), or a negative value
//! when the workload does not exist on this CPU (the forward on channel blocks, which runs only
//! where the blocked kernels do). Outputs are written into buffers kept from call to call, as a
//! training loop's are.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::Tensor;
use striate::kernels::blocks::ChannelBlocks;
use striate::kernels::conv::{
    Conv2dShape, Conv2dSpec, ConvActivation, ConvInput, Padding2d, conv2d_backward_data,
    conv2d_backward_filter, conv2d_forward, conv2d_forward_blocks, forward_runs_on_blocks,
};
use striate::kernels::gemm::{MatMut, MatRef, gemm};

#[path = "../../../benches/common/machine.rs"]
#[allow(dead_code)]
mod machine;
#[path = "../../../benches/common/workloads.rs"]
mod workloads;

use workloads::{MnistWorkload, ResNetWorkload};

/// The settings the benches run under, made on the work thread (`on_main_thread`): freed
/// buffers kept, and this thread joined to the pool as its worker 0.
fn start() {
    striate::keep_freed_memory();
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    // The pool may exist already (a second load of the library); then it is kept.
    let _ = striate::set_num_threads(threads);
}

/// Runs `work` on the thread that plays the benches' main thread, and returns its result.
///
/// The benches' main thread joins striate's pool as its worker 0 (`striate::set_num_threads`
/// from the thread Rust names `main`), so a kernel's parallel regions start from a thread of
/// the pool. Python's thread, which calls this library, is not Rust's main thread and would
/// stay outside the pool, handing every parallel region to it and waiting; running the work on
/// a pool worker instead would make every kernel single-threaded (a worker is inside a split).
/// So one thread named `main`, started here and kept for the life of the process, joins the
/// pool and runs every call's work, as the benches do. (Against calls from Python's thread,
/// alternated in one process: ResNet-18's single image and the MNIST step +1%, within noise.)
fn on_main_thread<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    type Job = Box<dyn FnOnce() + Send>;
    static JOBS: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let jobs = JOBS.get_or_init(|| {
        let (send, receive) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("main".into())
            .spawn(move || {
                start();
                for job in receive {
                    job();
                }
            })
            .expect("a thread for the benches' work");
        Mutex::new(send)
    });
    let (done, result) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = done.send(work());
    });
    jobs.lock()
        .unwrap()
        .send(job)
        .expect("the work thread lives");
    result.recv().expect("the work thread answers")
}

/// FLOP/s of the fastest multiply-add loop the kernels' instruction set allows, on every thread
/// of the pool, over `iterations` trips of the loop per thread (0 if the CPU lacks FMA).
#[unsafe(no_mangle)]
pub extern "C" fn striate_paired_fma_peak(iterations: usize) -> f64 {
    on_main_thread(move || fma_peak_here(iterations))
}

fn fma_peak_here(iterations: usize) -> f64 {
    static FASTEST: OnceLock<Option<machine::FmaLoop>> = OnceLock::new();
    let fastest = FASTEST.get_or_init(|| machine::fastest_fma_loop().map(|(variant, _)| variant));
    match fastest {
        Some(variant) => machine::all_threads_rate(*variant, iterations, 1),
        None => 0.0,
    }
}

struct Square {
    a: Tensor,
    b: Tensor,
    out: Vec<f32>,
}

/// Seconds of `iters` products of two `n x n` matrices (`benches/ops.rs`'s `matmul/square`).
#[unsafe(no_mangle)]
pub extern "C" fn striate_paired_sgemm(n: usize, iters: usize) -> f64 {
    on_main_thread(move || sgemm_here(n, iters))
}

fn sgemm_here(n: usize, iters: usize) -> f64 {
    static CASES: OnceLock<Mutex<HashMap<usize, Square>>> = OnceLock::new();
    let mut cases = CASES.get_or_init(Default::default).lock().unwrap();
    let case = cases.entry(n).or_insert_with(|| {
        let mut rng = StdRng::seed_from_u64(0);
        Square {
            a: Tensor::rand_uniform(&[n, n], -1.0, 1.0, &mut rng),
            b: Tensor::rand_uniform(&[n, n], -1.0, 1.0, &mut rng),
            out: vec![0.0; n * n],
        }
    });
    let started = Instant::now();
    for _ in 0..iters {
        let lhs = MatRef::row_major(case.a.as_slice(), n, n);
        let rhs = MatRef::row_major(case.b.as_slice(), n, n);
        gemm(1.0, lhs, rhs, 0.0, MatMut::row_major(&mut case.out, n, n));
    }
    started.elapsed().as_secs_f64()
}

struct Conv {
    shape: Conv2dShape,
    x: Tensor,
    w: Tensor,
    b: Tensor,
    gy: Tensor,
    blocks: ChannelBlocks,
    y: Vec<f32>,
    gx: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
}

/// Seconds of `iters` calls of one pass of a square-kernel convolution (`benches/conv.rs`'s
/// operands): `pass` 0 the forward, 1 the backward-data, 2 the backward-filter (and bias), 3 the
/// forward on channel blocks in and out (negative where it does not run on them).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn striate_paired_conv(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    out_channels: usize,
    kernel: usize,
    padding: usize,
    stride: usize,
    groups: usize,
    pass: usize,
    iters: usize,
) -> f64 {
    let key = [n, c, h, w, out_channels, kernel, padding, stride, groups];
    on_main_thread(move || conv_here(key, pass, iters))
}

fn conv_here(key: [usize; 9], pass: usize, iters: usize) -> f64 {
    let [n, c, h, w, out_channels, kernel, padding, stride, groups] = key;
    static CASES: OnceLock<Mutex<HashMap<[usize; 9], Conv>>> = OnceLock::new();
    let mut cases = CASES.get_or_init(Default::default).lock().unwrap();
    let case = cases.entry(key).or_insert_with(|| {
        let spec = Conv2dSpec {
            stride: [stride, stride],
            padding: Padding2d::symmetric(padding, padding),
            dilation: [1, 1],
            groups,
        };
        let input = [n, c, h, w];
        let weight_shape = [out_channels, c / groups, kernel, kernel];
        let shape = Conv2dShape::new(&input, &weight_shape, spec);
        let mut rng = StdRng::seed_from_u64(0);
        let x = Tensor::rand_uniform(&input, -1.0, 1.0, &mut rng);
        let gy = Tensor::rand_uniform(&shape.output_shape(), -1.0, 1.0, &mut rng);
        Conv {
            shape,
            w: Tensor::rand_uniform(&weight_shape, -0.1, 0.1, &mut rng),
            b: Tensor::rand_uniform(&[out_channels], -0.1, 0.1, &mut rng),
            blocks: ChannelBlocks::from_planes(x.as_slice(), input, 1),
            y: vec![0.0; gy.len()],
            gx: vec![0.0; x.len()],
            gw: vec![0.0; weight_shape.iter().product()],
            gb: vec![0.0; out_channels],
            x,
            gy,
        }
    });
    if pass == 3 && !forward_runs_on_blocks(&case.shape) {
        return -1.0;
    }
    let Conv {
        shape,
        x,
        w,
        b,
        gy,
        blocks,
        y,
        gx,
        gw,
        gb,
    } = case;
    let started = Instant::now();
    for _ in 0..iters {
        match pass {
            0 => conv2d_forward(x.as_slice(), w.as_slice(), Some(b.as_slice()), shape, y),
            1 => conv2d_backward_data(gy.as_slice(), w.as_slice(), shape, gx),
            2 => conv2d_backward_filter(x.as_slice(), gy.as_slice(), shape, gw, Some(gb)),
            _ => {
                std::hint::black_box(conv2d_forward_blocks(
                    ConvInput::Blocks(blocks),
                    w.as_slice(),
                    Some(b.as_slice()),
                    ConvActivation::Identity,
                    shape,
                    1,
                ));
            }
        }
    }
    started.elapsed().as_secs_f64()
}

/// Seconds of `iters` runs of a model workload (`benches/train_step.rs`'s): `model` 0 the MNIST
/// CNN, 1 ResNet-18; `pass` 0 an SGD step (batch 64; ResNet-18 batch 8), 1 inference (batch
/// 256; ResNet-18 one image). The MNIST model starts again from its initial state every
/// `MnistWorkload::RESTART` steps, untimed, as the bench does. Negative for an unknown pair.
#[unsafe(no_mangle)]
pub extern "C" fn striate_paired_model(model: usize, pass: usize, iters: usize) -> f64 {
    on_main_thread(move || model_here(model, pass, iters))
}

fn model_here(model: usize, pass: usize, iters: usize) -> f64 {
    static MNIST: OnceLock<Mutex<MnistWorkload>> = OnceLock::new();
    static RESNET: OnceLock<Mutex<ResNetWorkload>> = OnceLock::new();
    match (model, pass) {
        (0, 0 | 1) => {
            let mut mnist = MNIST
                .get_or_init(|| Mutex::new(MnistWorkload::new()))
                .lock()
                .unwrap();
            let mut seconds = 0.0;
            for _ in 0..iters {
                if pass == 0 {
                    mnist.restart_if_due();
                }
                let started = Instant::now();
                if pass == 0 {
                    mnist.step(false);
                } else {
                    std::hint::black_box(mnist.infer());
                }
                seconds += started.elapsed().as_secs_f64();
            }
            seconds
        }
        (1, 0 | 1) => {
            let mut resnet = RESNET
                .get_or_init(|| Mutex::new(ResNetWorkload::new()))
                .lock()
                .unwrap();
            let started = Instant::now();
            for _ in 0..iters {
                if pass == 0 {
                    resnet.step();
                } else {
                    std::hint::black_box(resnet.infer());
                }
            }
            started.elapsed().as_secs_f64()
        }
        _ => -1.0,
    }
}
