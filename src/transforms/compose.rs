//! Composition: sequences, random application and random choice of transforms.

use std::fmt;

use rand::{Rng, RngExt};

use super::{Transform, expect_probability};
use crate::tensor::Tensor;
use crate::tensor::check::contract_violation;

/// Applies transforms in order, each drawing from the same rng (torchvision's `Compose`).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{CenterCrop, Compose, Normalize, Transform};
///
/// let pipeline = Compose::new(vec![
///     Box::new(CenterCrop::new(24)),
///     Box::new(Normalize::new(&[0.5], &[0.5])),
/// ])
/// .then(CenterCrop::new(20));
/// let out = pipeline.apply(&Tensor::ones(&[1, 28, 28]), &mut StdRng::seed_from_u64(0));
/// assert_eq!(out, Tensor::ones(&[1, 20, 20]));
/// ```
#[derive(Default)]
pub struct Compose {
    transforms: Vec<Box<dyn Transform>>,
}

impl Compose {
    /// Applies `transforms` first to last; an empty list is the identity.
    pub fn new(transforms: Vec<Box<dyn Transform>>) -> Self {
        Compose { transforms }
    }

    /// Appends a transform to the end of the sequence.
    pub fn then(mut self, transform: impl Transform + 'static) -> Self {
        self.transforms.push(Box::new(transform));
        self
    }

    /// The number of transforms in the sequence.
    pub fn len(&self) -> usize {
        self.transforms.len()
    }

    /// Whether the sequence is empty (the identity).
    pub fn is_empty(&self) -> bool {
        self.transforms.is_empty()
    }
}

impl fmt::Debug for Compose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Compose({} transforms)", self.transforms.len())
    }
}

impl Transform for Compose {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        self.transforms
            .iter()
            .fold(image.clone(), |current, t| t.apply(&current, rng))
    }
}

/// Applies a transform with probability `p`, otherwise returns the image unchanged
/// (torchvision's `RandomApply`; wrap several transforms in a [`Compose`]).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{ElasticTransform, RandomApply, Transform};
///
/// let sometimes = RandomApply::new(ElasticTransform::new(34.0, 4.0), 0.3);
/// let out = sometimes.apply(&Tensor::zeros(&[1, 28, 28]), &mut StdRng::seed_from_u64(0));
/// assert_eq!(out.shape(), &[1, 28, 28]);
/// ```
pub struct RandomApply {
    transform: Box<dyn Transform>,
    p: f32,
}

impl RandomApply {
    /// Applies `transform` with probability `p`.
    ///
    /// # Panics
    ///
    /// If `p` is not in `[0, 1]`.
    pub fn new(transform: impl Transform + 'static, p: f32) -> Self {
        expect_probability("RandomApply", "p", p);
        RandomApply {
            transform: Box::new(transform),
            p,
        }
    }
}

impl fmt::Debug for RandomApply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RandomApply(p = {})", self.p)
    }
}

impl Transform for RandomApply {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        if rng.random::<f32>() < self.p {
            self.transform.apply(image, rng)
        } else {
            image.clone()
        }
    }
}

/// Applies one transform picked at random, uniformly or with given weights (torchvision's
/// `RandomChoice`).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::Tensor;
/// use striate::transforms::{RandomChoice, RandomHorizontalFlip, RandomVerticalFlip, Transform};
///
/// let one_flip = RandomChoice::new(vec![
///     Box::new(RandomHorizontalFlip::new(1.0)),
///     Box::new(RandomVerticalFlip::new(1.0)),
/// ])
/// .weights(&[3.0, 1.0]);
/// let out = one_flip.apply(&Tensor::ones(&[1, 4, 4]), &mut StdRng::seed_from_u64(0));
/// assert_eq!(out, Tensor::ones(&[1, 4, 4]));
/// ```
pub struct RandomChoice {
    transforms: Vec<Box<dyn Transform>>,
    /// Running sums of the normalised weights; the last is 1.
    cumulative: Vec<f32>,
}

impl RandomChoice {
    /// Picks one of `transforms` uniformly.
    ///
    /// # Panics
    ///
    /// If `transforms` is empty.
    pub fn new(transforms: Vec<Box<dyn Transform>>) -> Self {
        if transforms.is_empty() {
            contract_violation("RandomChoice", "needs at least one transform", "0 given");
        }
        let weights = vec![1.0; transforms.len()];
        RandomChoice {
            cumulative: cumulative(&weights),
            transforms,
        }
    }

    /// Picks transform `i` with probability proportional to `weights[i]`.
    ///
    /// # Panics
    ///
    /// If there is not one weight per transform, a weight is negative or not finite, or all
    /// are zero.
    pub fn weights(mut self, weights: &[f32]) -> Self {
        if weights.len() != self.transforms.len() {
            contract_violation(
                "RandomChoice",
                "needs one weight per transform",
                format_args!(
                    "{} weights, {} transforms",
                    weights.len(),
                    self.transforms.len()
                ),
            );
        }
        let valid = weights.iter().all(|w| w.is_finite() && *w >= 0.0);
        if !valid || weights.iter().sum::<f32>() <= 0.0 {
            contract_violation(
                "RandomChoice",
                "weights must be finite, >= 0 and not all zero",
                format_args!("weights = {weights:?}"),
            );
        }
        self.cumulative = cumulative(weights);
        self
    }
}

fn cumulative(weights: &[f32]) -> Vec<f32> {
    let total: f32 = weights.iter().sum();
    let mut sum = 0.0;
    let mut out: Vec<f32> = weights
        .iter()
        .map(|w| {
            sum += w / total;
            sum
        })
        .collect();
    // Rounding could leave the last sum just below 1, and a draw above it unassigned.
    if let Some(last) = out.last_mut() {
        *last = 1.0;
    }
    out
}

impl fmt::Debug for RandomChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RandomChoice({} transforms)", self.transforms.len())
    }
}

impl Transform for RandomChoice {
    fn apply(&self, image: &Tensor, rng: &mut dyn Rng) -> Tensor {
        let u = rng.random::<f32>();
        // The first transform whose running weight exceeds u; zero weights are never picked.
        let pick = self.cumulative.partition_point(|&c| c <= u);
        self.transforms[pick.min(self.transforms.len() - 1)].apply(image, rng)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn add(value: f32) -> impl Fn(&Tensor, &mut dyn Rng) -> Tensor {
        move |image: &Tensor, _: &mut dyn Rng| image.map(|v| v + value)
    }

    #[test]
    fn compose_applies_in_order() {
        let double = |image: &Tensor, _: &mut dyn Rng| image.map(|v| 2.0 * v);
        let pipeline = Compose::default().then(add(1.0)).then(double);
        let out = pipeline.apply(&Tensor::zeros(&[1, 1, 1]), &mut StdRng::seed_from_u64(0));
        assert_eq!(out.as_slice(), &[2.0]);
        assert_eq!(pipeline.len(), 2);
        let empty = Compose::default();
        let image = Tensor::ones(&[1, 2, 2]);
        assert_eq!(empty.apply(&image, &mut StdRng::seed_from_u64(0)), image);
    }

    #[test]
    fn random_apply_frequency() {
        let sometimes = RandomApply::new(add(1.0), 0.25);
        let mut rng = StdRng::seed_from_u64(2);
        let image = Tensor::zeros(&[1, 1, 1]);
        let applied: usize = (0..4000)
            .map(|_| sometimes.apply(&image, &mut rng).as_slice()[0] as usize)
            .sum();
        // Binomial(4000, 0.25): standard deviation 27.
        assert!((applied as i64 - 1000).abs() < 140, "{applied}");
    }

    #[test]
    fn random_choice_follows_the_weights() {
        let choice = RandomChoice::new(vec![
            Box::new(add(0.0)),
            Box::new(add(1.0)),
            Box::new(add(2.0)),
        ])
        .weights(&[1.0, 0.0, 3.0]);
        let mut rng = StdRng::seed_from_u64(3);
        let image = Tensor::zeros(&[1, 1, 1]);
        let mut counts = [0usize; 3];
        for _ in 0..4000 {
            counts[choice.apply(&image, &mut rng).as_slice()[0] as usize] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((counts[2] as i64 - 3000).abs() < 140, "{counts:?}");
    }

    #[test]
    #[should_panic(expected = "RandomApply: p must be in [0, 1] (p = -0.1)")]
    fn random_apply_rejects_negative_probability() {
        RandomApply::new(add(1.0), -0.1);
    }

    #[test]
    #[should_panic(
        expected = "RandomChoice: needs one weight per transform (1 weights, 2 transforms)"
    )]
    fn random_choice_rejects_mismatched_weights() {
        RandomChoice::new(vec![Box::new(add(0.0)), Box::new(add(1.0))]).weights(&[1.0]);
    }
}
