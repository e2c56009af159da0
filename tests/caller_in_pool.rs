//! `set_num_threads` called from the program's main thread makes that thread the pool's worker 0
//! (so parallel regions start without a sleep and a wake of the caller). Kernels must then
//! decide exactly as when called from a thread outside the pool: split their work at the top,
//! run alone inside a split. The results, summed in an order that depends on those decisions
//! (the dense GEMM's split over depth, the filter gradient's partial sums per thread), are
//! compared bit for bit.
//!
//! A test without the usual harness, since only a program's main thread joins the pool.

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::kernels::gemm::{MatMut, MatRef, gemm};
use striate::models::mnist_cnn;
use striate::nn::Module;
use striate::{Tape, Tensor};

/// The bits of every parameter gradient of one MNIST CNN step (convs split per image, the
/// filter gradient's sums per thread, dense GEMMs).
fn step_gradients() -> Vec<Vec<u32>> {
    let mut rng = StdRng::seed_from_u64(7);
    let model = mnist_cnn(10, &mut rng);
    let images = Tensor::rand_uniform(&[16, 1, 28, 28], 0.0, 1.0, &mut rng);
    let labels: Vec<usize> = (0..16).map(|i| i % 10).collect();
    let tape = Tape::training();
    let loss = model.forward(tape.input(images)).cross_entropy(&labels);
    let grads = loss.backward();
    let mut bits = Vec::new();
    model.visit_params(&mut |_, param| {
        let grad = grads.get(param).expect("every parameter has a gradient");
        bits.push(grad.as_slice().iter().map(|v| v.to_bits()).collect());
    });
    bits
}

/// The bits of a product small in output and deep (split over depth between threads at the
/// top, one sum per element inside a split).
fn deep_product() -> Vec<u32> {
    let (m, n, k) = (64, 64, 2048);
    let lhs: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919) % 1000) as f32 / 997.0 - 0.5)
        .collect();
    let rhs: Vec<f32> = (0..k * n)
        .map(|i| ((i * 104_729) % 1000) as f32 / 991.0 - 0.5)
        .collect();
    let mut dst = vec![0.0f32; m * n];
    gemm(
        1.0,
        MatRef::row_major(&lhs, m, k),
        MatRef::row_major(&rhs, k, n),
        0.0,
        MatMut::row_major(&mut dst, m, n),
    );
    dst.iter().map(|v| v.to_bits()).collect()
}

fn main() {
    striate::set_num_threads(2).expect("the first pool of this process");
    assert_eq!(
        rayon::current_thread_index(),
        Some(0),
        "set_num_threads from main makes main the pool's worker 0"
    );
    let on_main = (step_gradients(), deep_product());
    let outside = std::thread::spawn(|| (step_gradients(), deep_product()))
        .join()
        .expect("the same work on a thread outside the pool");
    assert!(
        on_main.0 == outside.0,
        "the step's gradients differ between main in the pool and a thread outside it"
    );
    assert!(
        on_main.1 == outside.1,
        "the deep product differs between main in the pool and a thread outside it"
    );
    println!("test caller_in_pool ... ok");
}
