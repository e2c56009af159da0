//! Data augmentation: seeded, composable transforms of one image `[C, H, W]`.
//!
//! Every transform draws from an explicit rng. Batched application gives each sample its own
//! stream, derived from `(seed, epoch, index)` by [`sample_rng`], so the same seed produces the
//! same images on any number of threads.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

use crate::tensor::Tensor;

/// A random (or deterministic) transformation of one image `[C, H, W]`.
///
/// Closures `Fn(&Tensor, &mut dyn Rng) -> Tensor` are transforms too.
pub trait Transform: Send + Sync {
    /// Transforms one image `[channels, height, width]`, drawing randomness from `rng`.
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor;
}

impl<F> Transform for F
where
    F: Fn(&Tensor, &mut dyn Rng) -> Tensor + Send + Sync,
{
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        self(image, rng)
    }
}

/// The random stream of one sample: a function of `(seed, epoch, index)` alone, so parallel
/// augmentation is reproducible whatever the thread count or scheduling.
///
/// # Examples
///
/// ```
/// use rand::RngExt;
/// use striate::transforms::sample_rng;
///
/// let a: u64 = sample_rng(7, 0, 42).random();
/// let b: u64 = sample_rng(7, 0, 42).random();
/// let c: u64 = sample_rng(7, 1, 42).random();
/// assert_eq!(a, b);
/// assert_ne!(a, c);
/// ```
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> Xoshiro256PlusPlus {
    // SplitMix64 finalisers decorrelate neighbouring (epoch, index) pairs before seeding.
    let mixed = splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ index);
    Xoshiro256PlusPlus::seed_from_u64(mixed)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
