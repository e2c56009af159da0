//! `RegressionMetrics`: MAE, MSE, RMSE, R² and MAPE from running sums.

use super::Metric;
use crate::tensor::Tensor;
use crate::tensor::check::expect_same_shape;

/// The name regression panics start with.
const OP: &str = "regression_metrics";

/// MAE, MSE, RMSE, R² and MAPE, accumulated batch by batch.
///
/// Every element of the prediction tensor is one prediction of the element at the same place
/// in the target tensor; all elements form one output (a multi-output problem is scored as if
/// flattened). With `e_i = y_i - ŷ_i` over `N` elements, as scikit-learn defines them:
///
/// | metric | formula | scikit-learn |
/// |---|---|---|
/// | [`mae`](Self::mae) | `Σ \|e_i\| / N` | `mean_absolute_error` |
/// | [`mse`](Self::mse) | `Σ e_i² / N` | `mean_squared_error` |
/// | [`rmse`](Self::rmse) | `sqrt(MSE)` | `root_mean_squared_error` |
/// | [`r2`](Self::r2) | `1 - Σ e_i² / Σ (y_i - ȳ)²` | `r2_score` |
/// | [`mape`](Self::mape) | `Σ (\|e_i\| / max(\|y_i\|, ε)) / N`, ε = `f64::EPSILON` | `mean_absolute_percentage_error` |
///
/// Sums are kept in f64; the target variance is merged with Chan's parallel update, so the
/// result does not depend on how the data is split into batches, up to rounding.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::metrics::RegressionMetrics;
///
/// let mut metrics = RegressionMetrics::new();
/// for (pred, target) in [([2.5, 0.0], [3.0, -0.5]), ([2.0, 8.0], [2.0, 7.0])] {
///     let pred = Tensor::from_vec(pred.to_vec(), &[2]).unwrap();
///     let target = Tensor::from_vec(target.to_vec(), &[2]).unwrap();
///     metrics.update(&pred, &target);
/// }
/// let scores = metrics.compute();
/// assert_eq!(scores.mae, 0.5);
/// assert_eq!(scores.mse, 0.375);
/// assert!((scores.r2 - 0.948_608).abs() < 1e-6);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegressionMetrics {
    count: u64,
    sum_absolute_error: f64,
    sum_squared_error: f64,
    sum_absolute_percentage_error: f64,
    target_mean: f64,
    /// `Σ (y_i - ȳ)²`, the target's sum of squared deviations.
    target_deviation: f64,
}

/// Every score of a [`RegressionMetrics`] at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RegressionScores {
    /// Mean absolute error.
    pub mae: f64,
    /// Mean squared error.
    pub mse: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Coefficient of determination R².
    pub r2: f64,
    /// Mean absolute percentage error, as a fraction (not multiplied by 100).
    pub mape: f64,
}

impl RegressionMetrics {
    /// Metrics that have seen nothing.
    pub fn new() -> RegressionMetrics {
        RegressionMetrics::default()
    }

    /// Folds in a batch of predictions and their targets.
    ///
    /// # Shapes
    ///
    /// `predictions` and `targets` have the same shape, any rank.
    ///
    /// # Panics
    ///
    /// If the shapes differ.
    pub fn update(&mut self, predictions: &Tensor, targets: &Tensor) {
        expect_same_shape(
            OP,
            "predictions",
            predictions.shape(),
            "targets",
            targets.shape(),
        );
        if targets.is_empty() {
            return;
        }
        let mut batch = RegressionMetrics {
            count: targets.len() as u64,
            ..RegressionMetrics::default()
        };
        let mut target_sum = 0.0;
        for (&p, &y) in predictions.as_slice().iter().zip(targets.as_slice()) {
            let (p, y) = (f64::from(p), f64::from(y));
            let error = (y - p).abs();
            batch.sum_absolute_error += error;
            batch.sum_squared_error += error * error;
            batch.sum_absolute_percentage_error += error / y.abs().max(f64::EPSILON);
            target_sum += y;
        }
        // Two passes over the batch keep the deviation accurate when the mean is large.
        batch.target_mean = target_sum / batch.count as f64;
        batch.target_deviation = targets
            .as_slice()
            .iter()
            .map(|&y| (f64::from(y) - batch.target_mean).powi(2))
            .sum();
        self.merge(&batch);
    }

    /// Adds everything `other` has seen (Chan et al.'s pairwise update for the variance).
    pub fn merge(&mut self, other: &RegressionMetrics) {
        if other.count == 0 {
            return;
        }
        let count = self.count + other.count;
        let delta = other.target_mean - self.target_mean;
        let (n_self, n_other) = (self.count as f64, other.count as f64);
        self.target_deviation +=
            other.target_deviation + delta * delta * n_self * n_other / count as f64;
        self.target_mean += delta * n_other / count as f64;
        self.count = count;
        self.sum_absolute_error += other.sum_absolute_error;
        self.sum_squared_error += other.sum_squared_error;
        self.sum_absolute_percentage_error += other.sum_absolute_percentage_error;
    }

    /// Every score at once.
    pub fn compute(&self) -> RegressionScores {
        RegressionScores {
            mae: self.mae(),
            mse: self.mse(),
            rmse: self.rmse(),
            r2: self.r2(),
            mape: self.mape(),
        }
    }

    /// Forgets everything seen.
    pub fn reset(&mut self) {
        *self = RegressionMetrics::default();
    }

    /// The number of elements seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean absolute error `Σ |y_i - ŷ_i| / N`; NaN before any sample.
    pub fn mae(&self) -> f64 {
        self.sum_absolute_error / self.count as f64
    }

    /// Mean squared error `Σ (y_i - ŷ_i)² / N`; NaN before any sample.
    pub fn mse(&self) -> f64 {
        self.sum_squared_error / self.count as f64
    }

    /// Root mean squared error `sqrt(Σ (y_i - ŷ_i)² / N)`; NaN before any sample.
    pub fn rmse(&self) -> f64 {
        self.mse().sqrt()
    }

    /// Coefficient of determination `R² = 1 - Σ (y_i - ŷ_i)² / Σ (y_i - ȳ)²`.
    ///
    /// As scikit-learn's `r2_score` (with `force_finite=True`): NaN with fewer than two
    /// samples; when the targets are constant, 1 for perfect predictions and 0 otherwise.
    pub fn r2(&self) -> f64 {
        if self.count < 2 {
            return f64::NAN;
        }
        if self.target_deviation == 0.0 {
            return if self.sum_squared_error == 0.0 {
                1.0
            } else {
                0.0
            };
        }
        1.0 - self.sum_squared_error / self.target_deviation
    }

    /// Mean absolute percentage error `Σ (|y_i - ŷ_i| / max(|y_i|, ε)) / N` with
    /// ε = `f64::EPSILON`, as a fraction (0.1 is 10 %); NaN before any sample.
    ///
    /// A target of zero with a wrong prediction gives a huge value, on purpose (as
    /// scikit-learn): MAPE is meaningless there.
    pub fn mape(&self) -> f64 {
        self.sum_absolute_percentage_error / self.count as f64
    }
}

impl Metric for RegressionMetrics {
    type Output = RegressionScores;

    fn compute(&self) -> RegressionScores {
        RegressionMetrics::compute(self)
    }

    fn reset(&mut self) {
        RegressionMetrics::reset(self);
    }

    fn merge(&mut self, other: &Self) {
        RegressionMetrics::merge(self, other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: &[f32]) -> Tensor {
        Tensor::from_vec(values.to_vec(), &[values.len()]).unwrap()
    }

    #[test]
    fn batches_give_the_same_result_as_one() {
        let predictions = [1.0, 2.5, -3.0, 4.0, 10.0, 0.5, 7.0];
        let targets = [1.5, 2.0, -2.0, 5.0, 9.0, 0.0, 6.5];
        let mut whole = RegressionMetrics::new();
        whole.update(&tensor(&predictions), &tensor(&targets));
        let mut parts = RegressionMetrics::new();
        for (p, t) in predictions.chunks(3).zip(targets.chunks(3)) {
            parts.update(&tensor(p), &tensor(t));
        }
        let (a, b) = (whole.compute(), parts.compute());
        for (x, y) in [
            (a.mae, b.mae),
            (a.mse, b.mse),
            (a.r2, b.r2),
            (a.mape, b.mape),
        ] {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
    }

    #[test]
    fn nothing_seen_is_nan() {
        let scores = RegressionMetrics::new().compute();
        assert!(scores.mae.is_nan() && scores.mse.is_nan() && scores.rmse.is_nan());
        assert!(scores.r2.is_nan() && scores.mape.is_nan());
    }

    #[test]
    fn constant_targets_r2_is_one_or_zero() {
        let mut metrics = RegressionMetrics::new();
        metrics.update(&tensor(&[2.0, 2.0]), &tensor(&[2.0, 2.0]));
        assert_eq!(metrics.r2(), 1.0);
        metrics.update(&tensor(&[3.0]), &tensor(&[2.0]));
        assert_eq!(metrics.r2(), 0.0);
    }

    #[test]
    #[should_panic(
        expected = "regression_metrics: predictions and targets must have the same shape (predictions [3], targets [2])"
    )]
    fn shape_mismatch_panics() {
        RegressionMetrics::new().update(&tensor(&[1.0, 2.0, 3.0]), &tensor(&[1.0, 2.0]));
    }
}
