//! How per-class rates become one number: [`Average`], [`ZeroDivision`] and the rules
//! scikit-learn applies when it averages them.

use super::confusion::{ClassCounts, ConfusionMatrix};
use crate::tensor::check::contract_violation;

/// How a per-class metric is reduced to one number (scikit-learn's `average=`).
///
/// Only classes that occur — as a target or as a prediction — take part in an average, as in
/// scikit-learn when `labels` is not given: a class that a `ConfusionMatrix` was sized for but
/// never saw does not pull a macro average down, nor add its true negatives to a micro
/// specificity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Average {
    /// The unweighted mean of the per-class values: every class counts the same.
    Macro,
    /// The metric of the summed counts `Σ_c tp_c`, `Σ_c fp_c`, ... over classes: every sample
    /// counts the same. For single-label problems micro precision, recall and F1 all equal
    /// accuracy.
    Micro,
    /// The mean of the per-class values weighted by support (the number of targets of each
    /// class).
    Weighted,
    /// The value for one class taken as positive, all others negative (one-vs-rest).
    Binary {
        /// The positive class.
        positive: usize,
    },
}

/// The value a ratio takes when its denominator is zero (scikit-learn's `zero_division=`).
///
/// This happens for precision of a class never predicted, recall of a class never present
/// in the targets, and similar. It is also the value of every rate metric (precision, recall,
/// F-beta, specificity, NPV, IoU) on a matrix that has counted nothing.
///
/// With [`ZeroDivision::Nan`], `Macro` and `Weighted` averages skip the undefined classes (and
/// are NaN only if all are undefined), as scikit-learn does for precision, recall and F-beta.
/// (scikit-learn's `jaccard_score` has no NaN policy; IoU follows the same rule here.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ZeroDivision {
    /// `0.0`; scikit-learn's default (`"warn"` also gives 0).
    #[default]
    Zero,
    /// `1.0`.
    One,
    /// `f64::NAN`.
    Nan,
}

impl ZeroDivision {
    /// The value this policy stands for.
    pub fn value(self) -> f64 {
        match self {
            ZeroDivision::Zero => 0.0,
            ZeroDivision::One => 1.0,
            ZeroDivision::Nan => f64::NAN,
        }
    }
}

/// A metric that is, per class, `numerator / denominator` of one-vs-rest counts.
pub(crate) type Ratio<'a> = &'a dyn Fn(&ClassCounts) -> (f64, f64);

/// `numerator / denominator`, or the zero-division value when the denominator is zero.
pub(crate) fn divide(numerator: f64, denominator: f64, zero_division: ZeroDivision) -> f64 {
    if denominator == 0.0 {
        zero_division.value()
    } else {
        numerator / denominator
    }
}

/// The ratio for every class, in class order.
pub(crate) fn per_class(
    cm: &ConfusionMatrix,
    zero_division: ZeroDivision,
    ratio: Ratio<'_>,
) -> Vec<f64> {
    cm.class_counts()
        .iter()
        .map(|counts| {
            let (numerator, denominator) = ratio(counts);
            divide(numerator, denominator, zero_division)
        })
        .collect()
}

/// The ratio reduced by `average`, following scikit-learn's rules.
pub(crate) fn averaged(
    cm: &ConfusionMatrix,
    average: Average,
    zero_division: ZeroDivision,
    ratio: Ratio<'_>,
) -> f64 {
    if let Average::Binary { positive } = average {
        cm.check_class("positive class", positive, None);
    }
    if cm.total() == 0 {
        return zero_division.value();
    }
    let counts = cm.class_counts();
    match average {
        Average::Binary { positive } => {
            let (numerator, denominator) = ratio(&counts[positive]);
            divide(numerator, denominator, zero_division)
        }
        Average::Micro => {
            let (numerator, denominator) = counts
                .iter()
                .filter(|c| occurs(c))
                .map(ratio)
                .fold((0.0, 0.0), |(n, d), (a, b)| (n + a, d + b));
            divide(numerator, denominator, zero_division)
        }
        Average::Macro | Average::Weighted => {
            let values_and_weights = counts.iter().filter(|c| occurs(c)).map(|c| {
                let (numerator, denominator) = ratio(c);
                let weight = match average {
                    Average::Weighted => c.support() as f64,
                    _ => 1.0,
                };
                (divide(numerator, denominator, zero_division), weight)
            });
            weighted_mean(values_and_weights)
        }
    }
}

/// Whether a class appears as a target or as a prediction.
fn occurs(counts: &ClassCounts) -> bool {
    counts.true_positives + counts.false_positives + counts.false_negatives > 0
}

/// The classes that appear as a target or as a prediction, in order: the rows of the
/// classification report and the classes `Macro` averages over.
pub(crate) fn occurring_classes(cm: &ConfusionMatrix) -> Vec<usize> {
    let counts = cm.class_counts();
    (0..counts.len()).filter(|&c| occurs(&counts[c])).collect()
}

/// `Σ w·v / Σ w` over the values that are not NaN; the plain mean when every weight is zero
/// (scikit-learn's fallback); NaN when nothing is left to average.
fn weighted_mean(values_and_weights: impl Iterator<Item = (f64, f64)>) -> f64 {
    let kept: Vec<(f64, f64)> = values_and_weights
        .filter(|(value, _)| !value.is_nan())
        .collect();
    if kept.is_empty() {
        return f64::NAN;
    }
    let weight_sum: f64 = kept.iter().map(|&(_, w)| w).sum();
    if weight_sum == 0.0 {
        kept.iter().map(|&(v, _)| v).sum::<f64>() / kept.len() as f64
    } else {
        kept.iter().map(|&(v, w)| v * w).sum::<f64>() / weight_sum
    }
}

/// Panics unless `beta` is a non-negative number (infinity allowed: F-∞ is recall).
#[track_caller]
pub(crate) fn check_beta(beta: f64) {
    if beta.is_nan() || beta < 0.0 {
        contract_violation("fbeta", "beta must be >= 0", format_args!("beta = {beta}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_mean_skips_nan() {
        let items = [(1.0, 1.0), (f64::NAN, 1.0), (0.0, 3.0)];
        assert_eq!(weighted_mean(items.into_iter()), 0.25);
    }

    #[test]
    fn zero_weights_fall_back_to_plain_mean() {
        let items = [(1.0, 0.0), (0.0, 0.0)];
        assert_eq!(weighted_mean(items.into_iter()), 0.5);
    }

    #[test]
    fn all_nan_is_nan() {
        assert!(weighted_mean([(f64::NAN, 1.0)].into_iter()).is_nan());
    }
}
