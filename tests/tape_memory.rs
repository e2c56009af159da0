//! 10,000 training steps in one process must not grow memory: each tape, with its whole graph,
//! is dropped with its step. Measured with a counting global allocator (live bytes), not time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::{Param, Tape, Tensor};

struct CountingAllocator;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn ten_thousand_steps_do_not_grow_memory() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut w1 = Param::new("w1", Tensor::rand_uniform(&[16, 32], -0.2, 0.2, &mut rng));
    let mut w2 = Param::new("w2", Tensor::rand_uniform(&[32, 4], -0.2, 0.2, &mut rng));
    let x = Tensor::rand_uniform(&[8, 16], -1.0, 1.0, &mut rng);
    let labels = [0, 1, 2, 3, 0, 1, 2, 3];

    let step = |w1: &mut Param, w2: &mut Param| {
        let grads = {
            let tape = Tape::training();
            let h = tape.input(x.clone()).matmul(tape.param(w1)).relu();
            let loss = h.matmul(tape.param(w2)).cross_entropy(&labels);
            let grads = loss.backward();
            // The graph of one step: input, two params, matmul, relu, matmul, loss.
            assert_eq!(tape.len(), 7);
            grads
        };
        for param in [w1, w2] {
            let grad = grads.get(param).unwrap().clone();
            for (p, g) in param
                .value_mut()
                .as_slice_mut()
                .iter_mut()
                .zip(grad.as_slice())
            {
                *p -= 0.01 * g;
            }
        }
    };

    // Warm up (lazy statics, rayon, first-use buffers), then measure.
    for _ in 0..100 {
        step(&mut w1, &mut w2);
    }
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for _ in 0..10_000 {
        step(&mut w1, &mut w2);
    }
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    // One step's graph is a few KiB; a leak of even one tensor per step would add > 300 KiB.
    assert!(
        after - before < 16 * 1024,
        "live heap grew by {} bytes over 10,000 steps",
        after - before
    );
}
