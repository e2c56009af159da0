//! Classification metrics derived from a [`ConfusionMatrix`]: accuracy, balanced accuracy,
//! precision, recall, F-beta, specificity, negative predictive value, support, Cohen's kappa and
//! Matthews correlation.
//!
//! Notation, for class `c` taken as positive and all others as negative: `tp`, `fp`, `fn`, `tn`
//! are its true positives, false positives, false negatives and true negatives; `N` is the
//! number of samples and `C[i, j]` the matrix entry (target `i`, prediction `j`).

use ndarray::Axis;

use super::average::{Average, Ratio, ZeroDivision, averaged, check_beta, per_class};
use super::confusion::{ClassCounts, ConfusionMatrix};

/// How Cohen's kappa weighs a disagreement between classes `i` and `j` (scikit-learn's
/// `weights=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KappaWeighting {
    /// Every disagreement weighs 1: plain Cohen's kappa.
    #[default]
    Unweighted,
    /// A disagreement weighs `|i - j|`, for ordered classes.
    Linear,
    /// A disagreement weighs `(i - j)²`, for ordered classes (the "quadratic weighted kappa").
    Quadratic,
}

fn precision_ratio(c: &ClassCounts) -> (f64, f64) {
    let tp = c.true_positives as f64;
    (tp, tp + c.false_positives as f64)
}

fn recall_ratio(c: &ClassCounts) -> (f64, f64) {
    let tp = c.true_positives as f64;
    (tp, tp + c.false_negatives as f64)
}

fn specificity_ratio(c: &ClassCounts) -> (f64, f64) {
    let tn = c.true_negatives as f64;
    (tn, tn + c.false_positives as f64)
}

fn npv_ratio(c: &ClassCounts) -> (f64, f64) {
    let tn = c.true_negatives as f64;
    (tn, tn + c.false_negatives as f64)
}

/// F-beta as one ratio of counts, `(1 + β²)·tp / ((1 + β²)·tp + β²·fn + fp)`, which is how
/// scikit-learn computes it (so a class with `tp = 0` but some `fp` or `fn` scores 0, not the
/// zero-division value). β = ∞ is recall.
fn fbeta_ratio(beta: f64) -> impl Fn(&ClassCounts) -> (f64, f64) {
    move |c| {
        if beta.is_infinite() {
            return recall_ratio(c);
        }
        let beta2 = beta * beta;
        let tp = c.true_positives as f64;
        let numerator = (1.0 + beta2) * tp;
        (
            numerator,
            numerator + beta2 * c.false_negatives as f64 + c.false_positives as f64,
        )
    }
}

impl ConfusionMatrix {
    /// The fraction of samples predicted correctly: `Σ_c C[c, c] / N`.
    ///
    /// NaN on an empty matrix.
    pub fn accuracy(&self) -> f64 {
        let n = self.num_classes();
        let correct: u64 = (0..n).map(|c| self.get(c, c)).sum();
        correct as f64 / self.total() as f64
    }

    /// The mean recall over the classes present in the targets:
    /// `mean_{c : support_c > 0} tp_c / (tp_c + fn_c)` (scikit-learn's
    /// `balanced_accuracy_score`, not adjusted).
    ///
    /// Classes absent from the targets are left out, as scikit-learn does. NaN on an empty
    /// matrix.
    pub fn balanced_accuracy(&self) -> f64 {
        let recalls: Vec<f64> = self
            .class_counts()
            .iter()
            .filter(|c| c.support() > 0)
            .map(|c| c.true_positives as f64 / c.support() as f64)
            .collect();
        recalls.iter().sum::<f64>() / recalls.len() as f64
    }

    /// Precision, `tp / (tp + fp)`: of the samples predicted as a class, the fraction that
    /// belong to it. Averaged by `average`; `zero_division` when a class is never predicted.
    ///
    /// # Panics
    ///
    /// If `average` is [`Average::Binary`] with a positive class outside `0..num_classes`.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::metrics::{Average, ConfusionMatrix, ZeroDivision};
    ///
    /// let mut cm = ConfusionMatrix::new(3);
    /// cm.update(&[0, 0, 1, 1], &[0, 1, 1, 2]);
    /// // Class 0: 1 of 2 predictions right; class 1: 1 of 2; class 2: never predicted.
    /// assert_eq!(cm.precision_per_class(ZeroDivision::Zero), vec![0.5, 0.5, 0.0]);
    /// assert_eq!(cm.precision(Average::Macro, ZeroDivision::Zero), 1.0 / 3.0);
    /// assert_eq!(cm.precision(Average::Macro, ZeroDivision::Nan), 0.5);
    /// assert_eq!(cm.precision(Average::Micro, ZeroDivision::Zero), 0.5);
    /// ```
    pub fn precision(&self, average: Average, zero_division: ZeroDivision) -> f64 {
        self.rate(average, zero_division, &precision_ratio)
    }

    /// Precision `tp / (tp + fp)` of every class, in class order.
    pub fn precision_per_class(&self, zero_division: ZeroDivision) -> Vec<f64> {
        per_class(self, zero_division, &precision_ratio)
    }

    /// Recall (sensitivity, true positive rate), `tp / (tp + fn)`: of the samples of a class,
    /// the fraction predicted as it. Averaged by `average`; `zero_division` when a class is
    /// absent from the targets.
    ///
    /// # Panics
    ///
    /// If `average` is [`Average::Binary`] with a positive class outside `0..num_classes`.
    #[doc(alias = "sensitivity")]
    #[doc(alias = "true_positive_rate")]
    pub fn recall(&self, average: Average, zero_division: ZeroDivision) -> f64 {
        self.rate(average, zero_division, &recall_ratio)
    }

    /// Recall `tp / (tp + fn)` of every class, in class order.
    pub fn recall_per_class(&self, zero_division: ZeroDivision) -> Vec<f64> {
        per_class(self, zero_division, &recall_ratio)
    }

    /// F1, the harmonic mean of precision and recall: `2·tp / (2·tp + fp + fn)` per class.
    /// See [`fbeta`](Self::fbeta).
    ///
    /// # Panics
    ///
    /// If `average` is [`Average::Binary`] with a positive class outside `0..num_classes`.
    pub fn f1(&self, average: Average, zero_division: ZeroDivision) -> f64 {
        self.fbeta(1.0, average, zero_division)
    }

    /// F1 `2·tp / (2·tp + fp + fn)` of every class, in class order.
    pub fn f1_per_class(&self, zero_division: ZeroDivision) -> Vec<f64> {
        self.fbeta_per_class(1.0, zero_division)
    }

    /// F-beta, `(1 + β²)·P·R / (β²·P + R)` per class, computed from counts as
    /// `(1 + β²)·tp / ((1 + β²)·tp + β²·fn + fp)`: recall weighs β times as much as precision.
    /// β = 0 is precision, β = ∞ recall. `zero_division` when `tp + fp + fn = 0`.
    ///
    /// # Panics
    ///
    /// If `beta` is negative or NaN, or `average` is [`Average::Binary`] with a positive class
    /// outside `0..num_classes`.
    pub fn fbeta(&self, beta: f64, average: Average, zero_division: ZeroDivision) -> f64 {
        check_beta(beta);
        self.rate(average, zero_division, &fbeta_ratio(beta))
    }

    /// F-beta of every class, in class order. See [`fbeta`](Self::fbeta).
    ///
    /// # Panics
    ///
    /// If `beta` is negative or NaN.
    pub fn fbeta_per_class(&self, beta: f64, zero_division: ZeroDivision) -> Vec<f64> {
        check_beta(beta);
        per_class(self, zero_division, &fbeta_ratio(beta))
    }

    /// Specificity (true negative rate, selectivity), `tn / (tn + fp)`: of the samples not of a
    /// class, the fraction not predicted as it. Averaged by `average` (`Weighted` weighs by
    /// support, as for recall, and `Micro` is `Σ tn / Σ (tn + fp)`, as torchmetrics);
    /// `zero_division` when every sample belongs to the class.
    ///
    /// # Panics
    ///
    /// If `average` is [`Average::Binary`] with a positive class outside `0..num_classes`.
    #[doc(alias = "true_negative_rate")]
    #[doc(alias = "selectivity")]
    pub fn specificity(&self, average: Average, zero_division: ZeroDivision) -> f64 {
        self.rate(average, zero_division, &specificity_ratio)
    }

    /// Specificity `tn / (tn + fp)` of every class, in class order.
    pub fn specificity_per_class(&self, zero_division: ZeroDivision) -> Vec<f64> {
        per_class(self, zero_division, &specificity_ratio)
    }

    /// Negative predictive value, `tn / (tn + fn)`: of the samples not predicted as a class, the
    /// fraction that are not of it. Averaged as [`specificity`](Self::specificity);
    /// `zero_division` when every sample is predicted as the class.
    ///
    /// # Panics
    ///
    /// If `average` is [`Average::Binary`] with a positive class outside `0..num_classes`.
    #[doc(alias = "npv")]
    pub fn negative_predictive_value(&self, average: Average, zero_division: ZeroDivision) -> f64 {
        self.rate(average, zero_division, &npv_ratio)
    }

    /// Negative predictive value `tn / (tn + fn)` of every class, in class order.
    pub fn negative_predictive_value_per_class(&self, zero_division: ZeroDivision) -> Vec<f64> {
        per_class(self, zero_division, &npv_ratio)
    }

    /// The number of targets of every class, `tp + fn` (the row sums).
    pub fn support(&self) -> Vec<u64> {
        self.class_counts()
            .iter()
            .map(ClassCounts::support)
            .collect()
    }

    /// Cohen's kappa, the agreement between targets and predictions beyond chance:
    /// `κ = 1 - Σ w_ij·C[i, j] / Σ w_ij·E[i, j]` with `E[i, j] = (Σ_k C[i, k])·(Σ_k C[k, j]) / N`
    /// the counts expected by chance and `w_ij` the disagreement weight (1 off the diagonal,
    /// `|i - j|` or `(i - j)²`). As scikit-learn's `cohen_kappa_score`; 1 is perfect agreement,
    /// 0 chance level.
    ///
    /// The weights use the class indices `0..num_classes`, as scikit-learn with
    /// `labels=range(num_classes)`. NaN when undefined: on an empty matrix, or when chance
    /// agreement is perfect (`Σ w·E = 0`, e.g. one class only).
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::metrics::{ConfusionMatrix, KappaWeighting};
    ///
    /// let mut cm = ConfusionMatrix::new(3);
    /// cm.update(&[0, 1, 2, 2], &[0, 1, 1, 2]);
    /// let kappa = cm.cohen_kappa(KappaWeighting::Unweighted);
    /// assert!((kappa - 0.6364).abs() < 1e-4);
    /// ```
    pub fn cohen_kappa(&self, weighting: KappaWeighting) -> f64 {
        let counts = self.to_array().mapv(|c| c as f64);
        let total = counts.sum();
        let rows = counts.sum_axis(Axis(1));
        let columns = counts.sum_axis(Axis(0));
        let weight = |i: usize, j: usize| {
            let distance = i.abs_diff(j) as f64;
            match weighting {
                KappaWeighting::Unweighted => f64::from(u8::from(i != j)),
                KappaWeighting::Linear => distance,
                KappaWeighting::Quadratic => distance * distance,
            }
        };
        let mut observed = 0.0;
        let mut expected = 0.0;
        for ((i, j), &count) in counts.indexed_iter() {
            observed += weight(i, j) * count;
            expected += weight(i, j) * rows[i] * columns[j] / total;
        }
        if total == 0.0 || expected == 0.0 {
            return f64::NAN;
        }
        1.0 - observed / expected
    }

    /// The Matthews correlation coefficient (multiclass R_K statistic), as scikit-learn's
    /// `matthews_corrcoef`:
    /// `(c·N - Σ_k p_k·t_k) / sqrt((N² - Σ_k p_k²)·(N² - Σ_k t_k²))` with `c` the correct
    /// predictions, `t_k` the targets and `p_k` the predictions of class `k`.
    ///
    /// 1 is perfect, 0 no better than chance, -1 total disagreement (binary). 0 when the
    /// denominator is zero (all targets or all predictions one class), as scikit-learn; NaN on
    /// an empty matrix.
    #[doc(alias = "mcc")]
    pub fn matthews_corrcoef(&self) -> f64 {
        if self.total() == 0 {
            return f64::NAN;
        }
        let counts = self.class_counts();
        let samples = self.total() as f64;
        let correct: f64 = counts.iter().map(|c| c.true_positives as f64).sum();
        let targets = counts.iter().map(|c| c.support() as f64);
        let predictions = counts
            .iter()
            .map(|c| (c.true_positives + c.false_positives) as f64);
        let dot_tp: f64 = targets
            .clone()
            .zip(predictions.clone())
            .map(|(t, p)| t * p)
            .sum();
        let dot_tt: f64 = targets.map(|t| t * t).sum();
        let dot_pp: f64 = predictions.map(|p| p * p).sum();
        let covariance = correct * samples - dot_tp;
        let denominator = (samples * samples - dot_pp) * (samples * samples - dot_tt);
        if denominator == 0.0 {
            return 0.0;
        }
        covariance / denominator.sqrt()
    }

    /// A precision-like rate, reduced as scikit-learn reduces precision and recall.
    fn rate(&self, average: Average, zero_division: ZeroDivision, ratio: Ratio<'_>) -> f64 {
        averaged(self, average, zero_division, ratio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> ConfusionMatrix {
        let mut cm = ConfusionMatrix::new(3);
        cm.update(&[0, 0, 1, 1, 2, 2, 2], &[0, 1, 1, 1, 2, 0, 2]);
        cm
    }

    #[test]
    fn micro_precision_recall_f1_equal_accuracy() {
        let cm = example();
        let zd = ZeroDivision::Zero;
        let accuracy = cm.accuracy();
        assert!((accuracy - 5.0 / 7.0).abs() < 1e-12);
        for value in [
            cm.precision(Average::Micro, zd),
            cm.recall(Average::Micro, zd),
            cm.f1(Average::Micro, zd),
        ] {
            assert!((value - accuracy).abs() < 1e-12);
        }
    }

    #[test]
    fn fbeta_limits_are_precision_and_recall() {
        let cm = example();
        let zd = ZeroDivision::Zero;
        assert_eq!(cm.fbeta_per_class(0.0, zd), cm.precision_per_class(zd));
        assert_eq!(
            cm.fbeta_per_class(f64::INFINITY, zd),
            cm.recall_per_class(zd)
        );
    }

    #[test]
    fn empty_matrix_gives_documented_values() {
        let cm = ConfusionMatrix::new(4);
        assert!(cm.accuracy().is_nan());
        assert!(cm.balanced_accuracy().is_nan());
        assert!(cm.cohen_kappa(KappaWeighting::Unweighted).is_nan());
        assert!(cm.matthews_corrcoef().is_nan());
        for zd in [ZeroDivision::Zero, ZeroDivision::One] {
            for average in [Average::Macro, Average::Micro, Average::Weighted] {
                assert_eq!(cm.precision(average, zd), zd.value());
                assert_eq!(cm.recall(average, zd), zd.value());
                assert_eq!(cm.f1(average, zd), zd.value());
                assert_eq!(cm.specificity(average, zd), zd.value());
            }
        }
        assert!(cm.precision(Average::Macro, ZeroDivision::Nan).is_nan());
    }

    #[test]
    fn matthews_is_zero_when_one_class_is_always_predicted() {
        let mut cm = ConfusionMatrix::new(2);
        cm.update(&[1, 1, 1], &[0, 1, 0]);
        assert_eq!(cm.matthews_corrcoef(), 0.0);
    }

    #[test]
    #[should_panic(expected = "fbeta: beta must be >= 0 (beta = -1)")]
    fn negative_beta_panics() {
        example().fbeta(-1.0, Average::Macro, ZeroDivision::Zero);
    }

    #[test]
    #[should_panic(expected = "confusion_matrix: positive class 3 is outside 0..3")]
    fn binary_positive_out_of_range_panics() {
        example().precision(Average::Binary { positive: 3 }, ZeroDivision::Zero);
    }
}
