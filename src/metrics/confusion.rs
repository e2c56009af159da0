//! `ConfusionMatrix`: the streaming count every classification metric is derived from.

use ndarray::Array2;

use super::Metric;
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, shape_str};

/// The name confusion-matrix panics start with.
const OP: &str = "confusion_matrix";

/// Counts of (target, prediction) pairs over `num_classes` classes, accumulated batch by batch.
///
/// Entry `(i, j)` counts the samples of true class `i` predicted as class `j`: rows are targets,
/// columns predictions, as in scikit-learn's `confusion_matrix`. Every classification metric
/// (accuracy, precision, recall, F-beta, specificity, kappa, MCC, IoU, the classification
/// report) is a method computed from these counts, so one matrix serves them all and costs
/// `num_classes²` integers whatever the number of samples.
///
/// Optionally, one target value is ignored ([`with_ignore_index`](Self::with_ignore_index)):
/// samples with that target are skipped, as the void label (often 255) in segmentation.
///
/// On a matrix that has counted nothing, accuracy, balanced accuracy, Cohen's kappa and the
/// Matthews correlation are NaN, and the rates (precision, recall, F-beta, specificity, NPV,
/// IoU) are the [`ZeroDivision`](super::ZeroDivision) value asked for.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::metrics::{Average, ConfusionMatrix, ZeroDivision};
///
/// let mut cm = ConfusionMatrix::new(3);
/// cm.update(&[0, 2, 1, 1], &[0, 1, 1, 2]);
/// // Logits of a batch of 2 samples over 3 classes: predictions 2 and 0.
/// let logits = Tensor::from_vec(vec![0.1, 0.2, 3.0, 1.5, -1.0, 0.0], &[2, 3]).unwrap();
/// cm.update_from_scores(&logits, &[2, 0]);
///
/// assert_eq!(cm.get(1, 2), 1); // one sample of class 1 predicted as 2
/// assert_eq!(cm.total(), 6);
/// assert_eq!(cm.accuracy(), 4.0 / 6.0);
/// assert_eq!(cm.recall(Average::Micro, ZeroDivision::Zero), 4.0 / 6.0);
///
/// // Accumulate on several workers, then combine.
/// let mut other = ConfusionMatrix::new(3);
/// other.update(&[1], &[1]);
/// cm.merge(&other);
/// assert_eq!(cm.total(), 7);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    num_classes: usize,
    ignore_index: Option<usize>,
    /// Row-major `[target][prediction]`.
    counts: Vec<u64>,
}

/// How [`ConfusionMatrix::normalized`] scales the counts (scikit-learn's `normalize=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Normalize {
    /// Each row sums to 1: entry `(i, j)` is the fraction of class `i` predicted as `j`.
    Targets,
    /// Each column sums to 1: entry `(i, j)` is the fraction of predictions `j` that were `i`.
    Predictions,
    /// All entries sum to 1.
    All,
}

/// The one-vs-rest counts of one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClassCounts {
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
    pub true_negatives: u64,
}

impl ClassCounts {
    /// Samples whose target is this class.
    pub fn support(&self) -> u64 {
        self.true_positives + self.false_negatives
    }
}

impl ConfusionMatrix {
    /// An empty matrix for classes `0..num_classes`.
    ///
    /// # Panics
    ///
    /// If `num_classes` is 0.
    pub fn new(num_classes: usize) -> ConfusionMatrix {
        if num_classes == 0 {
            contract_violation(OP, "needs at least one class", "num_classes 0");
        }
        ConfusionMatrix {
            num_classes,
            ignore_index: None,
            counts: vec![0; num_classes * num_classes],
        }
    }

    /// Skips every sample whose target is `index`, with its prediction (torchmetrics'
    /// `ignore_index`; the void label of segmentation datasets, often 255).
    ///
    /// `index` may lie outside `0..num_classes`; then those targets are not range-checked.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::metrics::ConfusionMatrix;
    ///
    /// let mut cm = ConfusionMatrix::new(2).with_ignore_index(255);
    /// cm.update(&[0, 1, 1], &[0, 255, 1]);
    /// assert_eq!(cm.total(), 2);
    /// ```
    pub fn with_ignore_index(mut self, index: usize) -> ConfusionMatrix {
        self.ignore_index = Some(index);
        self
    }

    /// The number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The target value that is skipped, if any.
    pub fn ignore_index(&self) -> Option<usize> {
        self.ignore_index
    }

    /// Counts a batch of predicted class indices against the target class indices.
    ///
    /// # Panics
    ///
    /// If the two slices differ in length, or a prediction or a (not ignored) target is outside
    /// `0..num_classes`. Nothing is counted then.
    pub fn update(&mut self, predictions: &[usize], targets: &[usize]) {
        self.check_batch(predictions, targets);
        let n = self.num_classes;
        for (&prediction, &target) in predictions.iter().zip(targets) {
            if Some(target) != self.ignore_index {
                self.counts[target * n + prediction] += 1;
            }
        }
    }

    /// Counts a batch of scores (logits or probabilities): the prediction is the class of the
    /// largest score, the first one on ties.
    ///
    /// # Shapes
    ///
    /// `scores` is `[batch, num_classes]`, or `[batch, num_classes, d1, ...]` for dense
    /// prediction (segmentation logits `[N, C, H, W]`), the class on axis 1 as in PyTorch.
    /// `targets` then holds one class per position, `batch · d1 · ...` of them, in row-major
    /// order of `[batch, d1, ...]`.
    ///
    /// # Panics
    ///
    /// If `scores` has rank below 2 or its axis 1 is not `num_classes`, if the number of targets
    /// does not match, or a target is outside `0..num_classes` and not ignored.
    pub fn update_from_scores(&mut self, scores: &Tensor, targets: &[usize]) {
        let shape = scores.shape();
        if shape.len() < 2 || shape[1] != self.num_classes {
            contract_violation(
                OP,
                format_args!(
                    "scores must be [batch, {}, ...] with the classes on axis 1",
                    self.num_classes
                ),
                format_args!("scores {}", shape_str(shape)),
            );
        }
        let predictions = scores.argmax(1);
        self.update(&predictions, targets);
    }

    /// Counts a batch of binary scores: the prediction is class 1 where `score > threshold`,
    /// class 0 elsewhere. Use `0.5` for probabilities and `0.0` for logits.
    ///
    /// # Shapes
    ///
    /// `scores` may have any shape (`[batch]`, `[batch, 1]`, a mask `[N, 1, H, W]`); it is read
    /// in row-major order, one score per target.
    ///
    /// # Panics
    ///
    /// If the matrix does not have exactly 2 classes, if `scores` does not hold one value per
    /// target, or a target is outside `0..2` and not ignored.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::Tensor;
    /// use striate::metrics::{Average, ConfusionMatrix, ZeroDivision};
    ///
    /// let probabilities = Tensor::from_vec(vec![0.9, 0.2, 0.6, 0.4], &[4]).unwrap();
    /// let mut cm = ConfusionMatrix::new(2);
    /// cm.update_binary(&probabilities, 0.5, &[1, 0, 0, 1]);
    /// let positive = Average::Binary { positive: 1 };
    /// assert_eq!(cm.precision(positive, ZeroDivision::Zero), 0.5);
    /// ```
    pub fn update_binary(&mut self, scores: &Tensor, threshold: f32, targets: &[usize]) {
        if self.num_classes != 2 {
            contract_violation(
                OP,
                "update_binary needs a matrix of 2 classes",
                format_args!("num_classes {}", self.num_classes),
            );
        }
        let predictions: Vec<usize> = scores
            .as_slice()
            .iter()
            .map(|&score| usize::from(score > threshold))
            .collect();
        self.update(&predictions, targets);
    }

    /// Adds the counts of `other`, as if its batches had been given to `self`.
    ///
    /// # Panics
    ///
    /// If the two matrices differ in number of classes or ignored index.
    pub fn merge(&mut self, other: &ConfusionMatrix) {
        if (self.num_classes, self.ignore_index) != (other.num_classes, other.ignore_index) {
            contract_violation(
                OP,
                "cannot merge matrices configured differently",
                format_args!(
                    "num_classes {} and {}, ignore_index {:?} and {:?}",
                    self.num_classes, other.num_classes, self.ignore_index, other.ignore_index
                ),
            );
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
    }

    /// The counts, row-major (target, prediction), for merging across processes.
    #[cfg(feature = "mpi")]
    pub(crate) fn counts_mut(&mut self) -> &mut [u64] {
        &mut self.counts
    }

    /// Sets every count back to zero.
    pub fn reset(&mut self) {
        self.counts.fill(0);
    }

    /// The number of samples of true class `target` predicted as class `prediction`.
    ///
    /// # Panics
    ///
    /// If either index is outside `0..num_classes`.
    pub fn get(&self, target: usize, prediction: usize) -> u64 {
        for (what, class) in [("target", target), ("prediction", prediction)] {
            self.check_class(what, class, None);
        }
        self.counts[target * self.num_classes + prediction]
    }

    /// The number of samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The counts as a `[num_classes, num_classes]` array, targets on rows.
    pub fn to_array(&self) -> Array2<u64> {
        Array2::from_shape_vec((self.num_classes, self.num_classes), self.counts.clone())
            .expect("counts hold num_classes² entries")
    }

    /// The counts divided by row sums, column sums or the total, as scikit-learn's
    /// `confusion_matrix(normalize=...)`: `C[i, j] / Σ_j C[i, j]` for [`Normalize::Targets`],
    /// `C[i, j] / Σ_i C[i, j]` for [`Normalize::Predictions`], `C[i, j] / Σ C` for
    /// [`Normalize::All`]. A row or column (or matrix) that sums to zero gives zeros.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::metrics::{ConfusionMatrix, Normalize};
    ///
    /// let mut cm = ConfusionMatrix::new(2);
    /// cm.update(&[0, 1, 1, 1], &[0, 0, 1, 1]);
    /// let rates = cm.normalized(Normalize::Targets);
    /// assert_eq!(rates.row(0).to_vec(), vec![0.5, 0.5]);
    /// assert_eq!(rates.row(1).to_vec(), vec![0.0, 1.0]);
    /// ```
    pub fn normalized(&self, normalize: Normalize) -> Array2<f64> {
        let mut array = self.to_array().mapv(|c| c as f64);
        let divide =
            |value: &mut f64, sum: f64| *value = if sum == 0.0 { 0.0 } else { *value / sum };
        match normalize {
            Normalize::Targets => {
                for mut row in array.rows_mut() {
                    let sum = row.sum();
                    row.iter_mut().for_each(|v| divide(v, sum));
                }
            }
            Normalize::Predictions => {
                for mut column in array.columns_mut() {
                    let sum = column.sum();
                    column.iter_mut().for_each(|v| divide(v, sum));
                }
            }
            Normalize::All => {
                let sum = array.sum();
                array.iter_mut().for_each(|v| divide(v, sum));
            }
        }
        array
    }

    /// The one-vs-rest counts of every class.
    pub(crate) fn class_counts(&self) -> Vec<ClassCounts> {
        let n = self.num_classes;
        let total = self.total();
        (0..n)
            .map(|class| {
                let true_positives = self.counts[class * n + class];
                let row: u64 = self.counts[class * n..(class + 1) * n].iter().sum();
                let column: u64 = (0..n).map(|i| self.counts[i * n + class]).sum();
                ClassCounts {
                    true_positives,
                    false_positives: column - true_positives,
                    false_negatives: row - true_positives,
                    true_negatives: total + true_positives - row - column,
                }
            })
            .collect()
    }

    /// Panics through [`contract_violation`] unless `class` is in `0..num_classes`.
    #[track_caller]
    pub(crate) fn check_class(&self, what: &str, class: usize, position: Option<usize>) {
        if class >= self.num_classes {
            let at = position.map_or(String::new(), |p| format!(" at position {p}"));
            contract_violation(
                OP,
                format_args!("{what} {class}{at} is outside 0..{}", self.num_classes),
                format_args!("num_classes {}", self.num_classes),
            );
        }
    }

    #[track_caller]
    fn check_batch(&self, predictions: &[usize], targets: &[usize]) {
        if predictions.len() != targets.len() {
            contract_violation(
                OP,
                format_args!(
                    "{} predictions for {} targets",
                    predictions.len(),
                    targets.len()
                ),
                format_args!(
                    "predictions {}, targets {}",
                    shape_str(&[predictions.len()]),
                    shape_str(&[targets.len()])
                ),
            );
        }
        for (position, (&prediction, &target)) in predictions.iter().zip(targets).enumerate() {
            if Some(target) == self.ignore_index {
                continue;
            }
            self.check_class("target", target, Some(position));
            self.check_class("prediction", prediction, Some(position));
        }
    }
}

impl Metric for ConfusionMatrix {
    type Output = Array2<u64>;

    /// The counts, as [`ConfusionMatrix::to_array`].
    fn compute(&self) -> Array2<u64> {
        self.to_array()
    }

    fn reset(&mut self) {
        ConfusionMatrix::reset(self);
    }

    fn merge(&mut self, other: &Self) {
        ConfusionMatrix::merge(self, other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_targets_columns_predictions() {
        let mut cm = ConfusionMatrix::new(3);
        cm.update(&[2, 2, 0], &[1, 1, 0]);
        assert_eq!(cm.get(1, 2), 2);
        assert_eq!(cm.get(2, 1), 0);
        assert_eq!(cm.to_array()[[0, 0]], 1);
    }

    #[test]
    fn class_counts_one_vs_rest() {
        let mut cm = ConfusionMatrix::new(3);
        cm.update(&[0, 1, 1, 2, 2], &[0, 1, 2, 2, 0]);
        let c = cm.class_counts();
        assert_eq!(
            c[2],
            ClassCounts {
                true_positives: 1,
                false_positives: 1,
                false_negatives: 1,
                true_negatives: 2
            }
        );
        assert_eq!(c[0].support(), 2);
    }

    #[test]
    fn scores_argmax_on_axis_1_for_dense_predictions() {
        // [1, 2, 2, 1]: two classes over a 2x1 image; position 0 prefers class 1, position 1
        // class 0.
        let scores = Tensor::from_vec(vec![0.1, 0.9, 0.8, 0.2], &[1, 2, 2, 1]).unwrap();
        assert_eq!(scores.argmax(1), vec![1, 0]);
        let flat = Tensor::from_vec(vec![0.1, 0.9, 0.8, 0.2], &[2, 2]).unwrap();
        assert_eq!(flat.argmax(1), flat.argmax_last_axis());
    }

    #[test]
    fn ignored_targets_skip_range_check() {
        let mut cm = ConfusionMatrix::new(2).with_ignore_index(255);
        cm.update(&[1, 0], &[255, 0]);
        assert_eq!(cm.total(), 1);
    }

    #[test]
    #[should_panic(
        expected = "confusion_matrix: 5 predictions for 4 targets (predictions [5], targets [4])"
    )]
    fn length_mismatch_names_sizes() {
        ConfusionMatrix::new(4).update(&[0; 5], &[0; 4]);
    }

    #[test]
    #[should_panic(
        expected = "confusion_matrix: target 12 at position 3 is outside 0..10 (num_classes 10)"
    )]
    fn target_out_of_range_names_value() {
        ConfusionMatrix::new(10).update(&[0; 4], &[0, 1, 2, 12]);
    }

    #[test]
    #[should_panic(expected = "confusion_matrix: prediction 3 at position 0 is outside 0..3")]
    fn prediction_out_of_range_names_value() {
        ConfusionMatrix::new(3).update(&[3], &[0]);
    }

    #[test]
    #[should_panic(expected = "confusion_matrix: scores must be [batch, 3, ...]")]
    fn scores_with_wrong_class_count() {
        ConfusionMatrix::new(3).update_from_scores(&Tensor::zeros(&[2, 4]), &[0, 0]);
    }

    #[test]
    #[should_panic(expected = "confusion_matrix: cannot merge matrices configured differently")]
    fn merge_rejects_other_sizes() {
        ConfusionMatrix::new(3).merge(&ConfusionMatrix::new(4));
    }

    #[test]
    fn failed_update_counts_nothing() {
        let mut cm = ConfusionMatrix::new(2);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cm.update(&[0, 1, 5], &[0, 1, 1]);
        }));
        assert!(result.is_err());
        assert_eq!(cm.total(), 0);
    }
}
