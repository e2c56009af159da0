//! Metrics: every usual way to score a model, exact to scikit-learn's definitions, accumulated
//! batch by batch.
//!
//! Each metric is a small accumulator with `update` (fold in a batch), `compute` (the score so
//! far), `reset` (start over) and `merge` (combine two accumulators, for parallel or distributed
//! evaluation). Whether the data arrives in one batch or in many, the result is the same, up to
//! floating-point summation order.
//!
//! | striate | scikit-learn | torchmetrics |
//! |---|---|---|
//! | [`ConfusionMatrix`] and its methods: [`accuracy`](ConfusionMatrix::accuracy), [`precision`](ConfusionMatrix::precision), [`recall`](ConfusionMatrix::recall), [`f1`](ConfusionMatrix::f1), [`fbeta`](ConfusionMatrix::fbeta), [`specificity`](ConfusionMatrix::specificity), [`cohen_kappa`](ConfusionMatrix::cohen_kappa), [`matthews_corrcoef`](ConfusionMatrix::matthews_corrcoef), … | `confusion_matrix`, `accuracy_score`, `precision_score`, … | `MulticlassConfusionMatrix`, `MulticlassPrecision`, … |
//! | [`Average`], [`ZeroDivision`] | `average=`, `zero_division=` | `average=`, `zero_division=` |
//! | [`ConfusionMatrix::classification_report`] | `classification_report` | — |
//! | [`TopKAccuracy`] | `top_k_accuracy_score` | `MulticlassAccuracy(top_k=)` |
//! | [`RegressionMetrics`] | `mean_absolute_error`, `mean_squared_error`, `root_mean_squared_error`, `r2_score`, `mean_absolute_percentage_error` | `MeanAbsoluteError`, … |
//! | [`box_iou`], [`mask_iou`], [`ConfusionMatrix::iou`], [`ConfusionMatrix::mean_iou`] | `jaccard_score` (torchvision `box_iou`) | `MeanIoU`, `JaccardIndex` |
//!
//! Classification metrics take class indices as `&[usize]`, the same targets the losses take,
//! and predictions either as class indices or as scores (logits or probabilities) to take the
//! argmax of.
//!
//! # Examples
//!
//! ```
//! use striate::Tensor;
//! use striate::metrics::{Average, ConfusionMatrix, ZeroDivision};
//!
//! let mut cm = ConfusionMatrix::new(3);
//! // Batch 1: class indices.
//! cm.update(&[0, 1, 2, 2], &[0, 1, 1, 2]);
//! // Batch 2: logits [batch, classes]; the prediction is the argmax of each row.
//! let logits = Tensor::from_vec(vec![2.0, 0.1, -1.0, 0.3, 0.2, 0.9], &[2, 3]).unwrap();
//! cm.update_from_scores(&logits, &[0, 0]);
//!
//! assert_eq!(cm.accuracy(), 4.0 / 6.0);
//! let f1 = cm.f1(Average::Macro, ZeroDivision::Zero);
//! assert!((f1 - 0.6556).abs() < 1e-4);
//! print!("{}", cm.classification_report().with_class_names(&["cat", "dog", "bird"]));
//! ```

mod average;
mod classification;
mod confusion;
mod iou;
mod regression;
mod report;
mod topk;

pub use average::{Average, ZeroDivision};
pub use classification::KappaWeighting;
pub use confusion::{ConfusionMatrix, Normalize};
pub use iou::{BoxFormat, box_iou, mask_iou};
pub use regression::{RegressionMetrics, RegressionScores};
pub use report::{ClassificationReport, ConfusionMatrixDisplay, ReportRow};
pub use topk::TopKAccuracy;

/// A metric accumulated over batches: what every metric in this module has in common.
///
/// `update` is not part of the trait because each metric takes its own kind of batch (class
/// indices, scores, regression values); every implementor has an inherent `update`. The trait
/// lets a training loop reset, merge and report a set of metrics without knowing which they are.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::metrics::{Metric, RegressionMetrics, TopKAccuracy};
///
/// // What an epoch loop does with any metric: report, then start over.
/// fn end_of_epoch<M: Metric>(metric: &mut M) -> M::Output {
///     let value = metric.compute();
///     metric.reset();
///     value
/// }
///
/// let mut top1 = TopKAccuracy::new(1);
/// top1.update(&Tensor::from_vec(vec![0.2, 0.8], &[1, 2]).unwrap(), &[1]);
/// assert_eq!(end_of_epoch(&mut top1), 1.0);
/// assert!(top1.compute().is_nan());
///
/// let mut regression = RegressionMetrics::new();
/// regression.update(&Tensor::scalar(1.0), &Tensor::scalar(3.0));
/// assert_eq!(end_of_epoch(&mut regression).mae, 2.0);
/// ```
pub trait Metric {
    /// What [`compute`](Metric::compute) reports.
    type Output;

    /// The metric over everything seen since creation or the last [`reset`](Metric::reset).
    fn compute(&self) -> Self::Output;

    /// Forgets everything seen, keeping the configuration (number of classes, `k`, ...).
    fn reset(&mut self);

    /// Adds everything `other` has seen, as if its batches had been given to `self`.
    ///
    /// # Panics
    ///
    /// If the two metrics are configured differently (number of classes, `k`, ...).
    fn merge(&mut self, other: &Self);
}
