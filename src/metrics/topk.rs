//! `TopKAccuracy`: how often the target is among the `k` highest-scored classes.

use super::Metric;
use crate::tensor::Tensor;
use crate::tensor::check::{check_class_targets, contract_violation};

/// The name top-k panics start with.
const OP: &str = "top_k_accuracy";

/// Top-k accuracy, streaming: the fraction of samples whose target class is among the `k`
/// classes with the highest scores, `(1/N) Σ_n [rank_n(target_n) < k]`, as scikit-learn's
/// `top_k_accuracy_score`.
///
/// Ties are broken as scikit-learn breaks them: among equal scores, the higher class index
/// ranks first. With `k = 1` this is accuracy of the argmax, except on ties. With
/// `k >= num_classes` every sample is a hit. NaN before any sample has been seen.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::metrics::TopKAccuracy;
///
/// let scores = Tensor::from_vec(
///     vec![0.5, 0.3, 0.2, // target 1 is second: a top-2 hit
///          0.1, 0.2, 0.7], // target 0 is third: a miss
///     &[2, 3],
/// )
/// .unwrap();
/// let mut top2 = TopKAccuracy::new(2);
/// top2.update(&scores, &[1, 0]);
/// assert_eq!(top2.compute(), 0.5);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopKAccuracy {
    k: usize,
    hits: u64,
    samples: u64,
}

impl TopKAccuracy {
    /// An empty top-`k` accuracy.
    ///
    /// # Panics
    ///
    /// If `k` is 0.
    pub fn new(k: usize) -> TopKAccuracy {
        if k == 0 {
            contract_violation(OP, "k must be at least 1", "k 0");
        }
        TopKAccuracy {
            k,
            hits: 0,
            samples: 0,
        }
    }

    /// The `k` this metric counts hits within.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Counts a batch of scores (logits or probabilities) against the target classes.
    ///
    /// # Shapes
    ///
    /// `scores` is `[batch, classes]`; `targets` holds `batch` class indices.
    ///
    /// # Panics
    ///
    /// If `scores` is not rank 2, the number of targets differs from the batch, or a target is
    /// outside `0..classes`. Nothing is counted then.
    pub fn update(&mut self, scores: &Tensor, targets: &[usize]) {
        let (batch, classes) = check_class_targets(OP, scores.shape(), targets);
        if batch == 0 {
            return;
        }
        for (row, &target) in scores.as_slice().chunks(classes).zip(targets) {
            let score = row[target];
            // scikit-learn sorts with a stable sort and reverses, so an equal score at a higher
            // index ranks ahead of the target.
            let ahead = row
                .iter()
                .enumerate()
                .filter(|&(class, &s)| s > score || (s == score && class > target))
                .count();
            self.hits += u64::from(ahead < self.k);
        }
        self.samples += batch as u64;
    }

    /// The fraction of hits so far; NaN before any sample.
    pub fn compute(&self) -> f64 {
        self.hits as f64 / self.samples as f64
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        self.hits = 0;
        self.samples = 0;
    }

    /// Adds the samples counted by `other`.
    ///
    /// # Panics
    ///
    /// If `other` has a different `k`.
    pub fn merge(&mut self, other: &TopKAccuracy) {
        if self.k != other.k {
            contract_violation(
                OP,
                "cannot merge metrics with different k",
                format_args!("k {} and {}", self.k, other.k),
            );
        }
        self.hits += other.hits;
        self.samples += other.samples;
    }
}

impl Metric for TopKAccuracy {
    type Output = f64;

    fn compute(&self) -> f64 {
        TopKAccuracy::compute(self)
    }

    fn reset(&mut self) {
        TopKAccuracy::reset(self);
    }

    fn merge(&mut self, other: &Self) {
        TopKAccuracy::merge(self, other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_rank_higher_index_first() {
        let scores = Tensor::from_vec(vec![0.5, 0.5, 0.0], &[1, 3]).unwrap();
        let mut top1 = TopKAccuracy::new(1);
        top1.update(&scores, &[0]);
        assert_eq!(top1.compute(), 0.0);
        top1.reset();
        top1.update(&scores, &[1]);
        assert_eq!(top1.compute(), 1.0);
    }

    #[test]
    fn empty_is_nan() {
        assert!(TopKAccuracy::new(3).compute().is_nan());
    }

    #[test]
    #[should_panic(expected = "top_k_accuracy: 3 targets for a batch of 2 (input [2, 4])")]
    fn length_mismatch_panics() {
        TopKAccuracy::new(1).update(&Tensor::zeros(&[2, 4]), &[0, 1, 2]);
    }

    #[test]
    #[should_panic(
        expected = "top_k_accuracy: target 4 out of range for 4 classes (sample 1, input [2, 4])"
    )]
    fn target_out_of_range_panics() {
        TopKAccuracy::new(1).update(&Tensor::zeros(&[2, 4]), &[0, 4]);
    }
}
