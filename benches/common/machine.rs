//! The machine's floating-point ceiling, measured rather than assumed: the fastest of several
//! multiply-add loops (AVX-512 and AVX2, with 8 to 24 independent accumulators) on every thread
//! at once, and the core clock under the same all-thread load, from a chain of dependent integer
//! adds (one per cycle on every x86-64 core). Their quotient, FLOP per cycle per core, says
//! whether the loop reached the hardware's limit: 32 on a core with two 256-bit FMA pipes (AVX2
//! parts, AMD Zen 4's double-pumped AVX-512), 64 on one with two 512-bit pipes (most Xeons).
//!
//! A single fixed loop understated the limit on one Intel Xeon (212 GFLOP/s while oneDNN ran a
//! convolution at 250 in the same sitting): trying the variants and keeping the best removes the
//! guess about which form this core runs fastest.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::hint::black_box;
use std::time::Instant;

/// One multiply-add loop: `run(iterations)` performs `flops_per_iteration` FLOP per iteration.
#[derive(Clone, Copy)]
pub struct FmaLoop {
    pub name: &'static str,
    pub flops_per_iteration: usize,
    pub run: fn(usize) -> f32,
    pub available: fn() -> bool,
}

macro_rules! fma_variant {
    ($name:ident, $features:literal, $vector:ty, $lanes:literal, $accumulators:literal,
     $set1:ident, $fmadd:ident, $add:ident, $store:ident) => {
        #[target_feature(enable = $features)]
        fn $name(iterations: usize) -> f32 {
            let mut acc = [$set1(0.0); $accumulators];
            let (a, b) = ($set1(0.999_999), $set1(1e-6));
            for _ in 0..iterations {
                for x in acc.iter_mut() {
                    *x = $fmadd(a, *x, b);
                }
            }
            let total: $vector = acc.iter().fold($set1(0.0), |s, &x| $add(s, x));
            let mut lanes = [0.0f32; $lanes];
            // SAFETY: `lanes` holds exactly one vector of f32; the store is unaligned.
            unsafe { $store(lanes.as_mut_ptr(), total) };
            lanes.iter().sum()
        }
    };
}

fma_variant!(
    avx512_x8,
    "avx512f",
    __m512,
    16,
    8,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_storeu_ps
);
fma_variant!(
    avx512_x12,
    "avx512f",
    __m512,
    16,
    12,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_storeu_ps
);
fma_variant!(
    avx512_x16,
    "avx512f",
    __m512,
    16,
    16,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_storeu_ps
);
fma_variant!(
    avx512_x24,
    "avx512f",
    __m512,
    16,
    24,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_storeu_ps
);
fma_variant!(
    avx2_x8,
    "avx2,fma",
    __m256,
    8,
    8,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    _mm256_storeu_ps
);
fma_variant!(
    avx2_x12,
    "avx2,fma",
    __m256,
    8,
    12,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    _mm256_storeu_ps
);

fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f")
}

fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

macro_rules! safe_wrapper {
    ($wrapper:ident, $inner:ident) => {
        fn $wrapper(iterations: usize) -> f32 {
            // SAFETY: called only after its `available` check (see `FmaLoop::available`).
            unsafe { $inner(iterations) }
        }
    };
}

safe_wrapper!(run_avx512_x8, avx512_x8);
safe_wrapper!(run_avx512_x12, avx512_x12);
safe_wrapper!(run_avx512_x16, avx512_x16);
safe_wrapper!(run_avx512_x24, avx512_x24);
safe_wrapper!(run_avx2_x8, avx2_x8);
safe_wrapper!(run_avx2_x12, avx2_x12);

/// Every loop, widest first.
pub const FMA_LOOPS: [FmaLoop; 6] = [
    FmaLoop {
        name: "avx512 x8",
        flops_per_iteration: 8 * 32,
        run: run_avx512_x8,
        available: has_avx512,
    },
    FmaLoop {
        name: "avx512 x12",
        flops_per_iteration: 12 * 32,
        run: run_avx512_x12,
        available: has_avx512,
    },
    FmaLoop {
        name: "avx512 x16",
        flops_per_iteration: 16 * 32,
        run: run_avx512_x16,
        available: has_avx512,
    },
    FmaLoop {
        name: "avx512 x24",
        flops_per_iteration: 24 * 32,
        run: run_avx512_x24,
        available: has_avx512,
    },
    FmaLoop {
        name: "avx2 x8",
        flops_per_iteration: 8 * 16,
        run: run_avx2_x8,
        available: has_avx2,
    },
    FmaLoop {
        name: "avx2 x12",
        flops_per_iteration: 12 * 16,
        run: run_avx2_x12,
        available: has_avx2,
    },
];

/// FLOP/s of `variant` on every thread of rayon's pool at once, best of `repeats`.
pub fn all_threads_rate(variant: FmaLoop, iterations: usize, repeats: usize) -> f64 {
    let threads = rayon::current_num_threads();
    (0..repeats)
        .map(|_| {
            let start = Instant::now();
            rayon::broadcast(|_| black_box((variant.run)(black_box(iterations))));
            (threads * iterations * variant.flops_per_iteration) as f64
                / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Whether the kernels may use `variant`'s instructions: the CPU has them and `STRIATE_ISA`
/// does not cap the kernels below them (a sitting capped at AVX2 is held to AVX2's ceiling,
/// which on a core with 512-bit FMA pipes is half the AVX-512 one).
fn allowed(variant: &FmaLoop) -> bool {
    let allowed_prefixes: &[&str] = match striate::kernels::instruction_set() {
        "avx512" => &["avx512", "avx2"],
        "avx2" => &["avx2"],
        _ => &[],
    };
    (variant.available)()
        && allowed_prefixes
            .iter()
            .any(|prefix| variant.name.starts_with(prefix))
}

/// The fastest loop the kernels' instruction set allows, timed for a few tens of milliseconds
/// each.
pub fn fastest_fma_loop() -> Option<(FmaLoop, f64)> {
    FMA_LOOPS
        .iter()
        .filter(|variant| allowed(variant))
        .map(|&variant| {
            // About 500 M FLOP per thread per repeat (a few milliseconds: much longer than the
            // wake of a sleeping thread of the pool).
            let iterations = 500_000_000 / variant.flops_per_iteration;
            (variant, all_threads_rate(variant, iterations, 5))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Eight dependent adds per iteration: the loop's own counter runs beside the chain, so an
/// iteration takes eight cycles on every x86-64 core. The adds take their operand from a
/// register: Intel's cores since Golden Cove fold chains of adds of a small immediate at
/// register renaming, several per cycle, and the clock this measured read 17-19 GHz on a
/// Sapphire Rapids.
fn add_chain(iterations: u64) -> u64 {
    let mut x: u64 = 0;
    // SAFETY: register-only arithmetic on the three operands; no memory, no stack, flags
    // clobbered (asm! assumes that by default).
    unsafe {
        std::arch::asm!(
            "2:",
            "add {x}, {one}", "add {x}, {one}", "add {x}, {one}", "add {x}, {one}",
            "add {x}, {one}", "add {x}, {one}", "add {x}, {one}", "add {x}, {one}",
            "dec {n}",
            "jnz 2b",
            x = inout(reg) x,
            one = in(reg) black_box(1u64),
            n = inout(reg) iterations => _,
            options(nomem, nostack),
        );
    }
    x
}

/// The core clock in Hz with every thread of the pool busy (best of five).
pub fn all_threads_clock() -> f64 {
    let iterations: u64 = 20_000_000;
    (0..5)
        .map(|_| {
            let seconds = rayon::broadcast(|_| {
                let start = Instant::now();
                black_box(add_chain(black_box(iterations)));
                start.elapsed().as_secs_f64()
            });
            let slowest = seconds.into_iter().fold(0.0, f64::max);
            (iterations * 8) as f64 / slowest
        })
        .fold(0.0, f64::max)
}
