//! Intersection over union (Jaccard index): of boxes, of binary masks, and per class for
//! segmentation from a [`ConfusionMatrix`].

use super::average::{Average, ZeroDivision, averaged, divide, per_class};
use super::confusion::{ClassCounts, ConfusionMatrix};
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, expect_same_shape, shape_str};
use crate::tensor::reduce::{max_propagating_nan, min_propagating_nan};

/// How the four numbers of a box are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoxFormat {
    /// `[x1, y1, x2, y2]`: top-left and bottom-right corners (torchvision's `xyxy`).
    Xyxy,
    /// `[x, y, width, height]`: top-left corner and size (torchvision's `xywh`, COCO's).
    Xywh,
    /// `[cx, cy, width, height]`: centre and size (torchvision's `cxcywh`, YOLO's).
    Cxcywh,
}

impl BoxFormat {
    /// The corners `[x1, y1, x2, y2]` of a box in this format.
    fn corners(self, b: &[f32]) -> [f64; 4] {
        let [a, b, c, d] = [b[0], b[1], b[2], b[3]].map(f64::from);
        match self {
            BoxFormat::Xyxy => [a, b, c, d],
            BoxFormat::Xywh => [a, b, a + c, b + d],
            BoxFormat::Cxcywh => [a - c / 2.0, b - d / 2.0, a + c / 2.0, b + d / 2.0],
        }
    }
}

/// The IoU of every box in `boxes_a` with every box in `boxes_b`:
/// `IoU(A, B) = |A ∩ B| / |A ∪ B| = |A ∩ B| / (|A| + |B| - |A ∩ B|)`, as torchvision's
/// `box_iou`.
///
/// Boxes are expected well formed (`x1 <= x2`, `y1 <= y2`, or non-negative sizes). Two boxes
/// whose union has zero area (degenerate boxes) have IoU 0.
///
/// # Shapes
///
/// `boxes_a` is `[N, 4]`, `boxes_b` is `[M, 4]`; the result is `[N, M]`.
///
/// # Panics
///
/// If either tensor is not `[_, 4]`.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::metrics::{BoxFormat, box_iou};
///
/// let a = Tensor::from_vec(vec![0.0, 0.0, 2.0, 2.0], &[1, 4]).unwrap();
/// let b = Tensor::from_vec(vec![1.0, 1.0, 3.0, 3.0, 0.0, 0.0, 2.0, 2.0], &[2, 4]).unwrap();
/// let iou = box_iou(&a, &b, BoxFormat::Xyxy);
/// assert_eq!(iou.shape(), &[1, 2]);
/// assert_eq!(iou.as_slice(), &[1.0 / 7.0, 1.0]);
/// ```
pub fn box_iou(boxes_a: &Tensor, boxes_b: &Tensor, format: BoxFormat) -> Tensor {
    for (name, boxes) in [("boxes_a", boxes_a), ("boxes_b", boxes_b)] {
        let shape = boxes.shape();
        if shape.len() != 2 || shape[1] != 4 {
            contract_violation(
                "box_iou",
                format_args!("{name} must be [count, 4]"),
                format_args!("{name} {}", shape_str(shape)),
            );
        }
    }
    let corners = |boxes: &Tensor| -> Vec<[f64; 4]> {
        boxes
            .as_slice()
            .chunks(4)
            .map(|b| format.corners(b))
            .collect()
    };
    let (a, b) = (corners(boxes_a), corners(boxes_b));
    let area = |[x1, y1, x2, y2]: [f64; 4]| (x2 - x1) * (y2 - y1);
    let mut out = Vec::with_capacity(a.len() * b.len());
    for &box_a in &a {
        for &box_b in &b {
            // NaN coordinates give a NaN IoU, as torchvision's box_iou (f64::max would hide it).
            let overlap = |lo: usize, hi: usize| {
                let extent = min_propagating_nan(box_a[hi], box_b[hi])
                    - max_propagating_nan(box_a[lo], box_b[lo]);
                max_propagating_nan(extent, 0.0)
            };
            let (width, height) = (overlap(0, 2), overlap(1, 3));
            let intersection = width * height;
            let union = area(box_a) + area(box_b) - intersection;
            out.push(divide(intersection, union, ZeroDivision::Zero) as f32);
        }
    }
    Tensor::from_vec(out, &[a.len(), b.len()]).expect("N·M values for [N, M]")
}

/// The IoU of two binary masks: `|P ∩ T| / |P ∪ T|`, a nonzero element being inside the mask.
/// As scikit-learn's `jaccard_score` of the flattened masks (binary average).
///
/// `zero_division` when both masks are empty. Threshold probabilities first (or use a
/// two-class [`ConfusionMatrix::update_binary`] and [`ConfusionMatrix::iou`] to accumulate
/// over a data set).
///
/// # Panics
///
/// If the masks differ in shape.
///
/// # Examples
///
/// ```
/// use striate::Tensor;
/// use striate::metrics::{ZeroDivision, mask_iou};
///
/// let prediction = Tensor::from_vec(vec![1.0, 1.0, 0.0, 0.0], &[2, 2]).unwrap();
/// let target = Tensor::from_vec(vec![1.0, 0.0, 1.0, 0.0], &[2, 2]).unwrap();
/// assert_eq!(mask_iou(&prediction, &target, ZeroDivision::Zero), 1.0 / 3.0);
/// ```
pub fn mask_iou(prediction: &Tensor, target: &Tensor, zero_division: ZeroDivision) -> f64 {
    expect_same_shape(
        "mask_iou",
        "prediction",
        prediction.shape(),
        "target",
        target.shape(),
    );
    let (mut intersection, mut union) = (0u64, 0u64);
    for (&p, &t) in prediction.as_slice().iter().zip(target.as_slice()) {
        let (p, t) = (p != 0.0, t != 0.0);
        intersection += u64::from(p && t);
        union += u64::from(p || t);
    }
    divide(intersection as f64, union as f64, zero_division)
}

fn iou_ratio(c: &ClassCounts) -> (f64, f64) {
    let tp = c.true_positives as f64;
    (tp, tp + (c.false_positives + c.false_negatives) as f64)
}

impl ConfusionMatrix {
    /// IoU (Jaccard index) `tp / (tp + fp + fn)` averaged by `average`, as scikit-learn's
    /// `jaccard_score`: for segmentation, the overlap of the predicted and true regions of
    /// each class. `zero_division` for a class neither present nor predicted.
    ///
    /// With [`ZeroDivision::Nan`], `Macro` and `Weighted` skip the undefined classes, as for
    /// precision (scikit-learn's `jaccard_score` offers no NaN policy).
    ///
    /// # Panics
    ///
    /// If `average` is [`Average::Binary`] with a positive class outside `0..num_classes`.
    #[doc(alias = "jaccard")]
    pub fn iou(&self, average: Average, zero_division: ZeroDivision) -> f64 {
        averaged(self, average, zero_division, &iou_ratio)
    }

    /// IoU `tp / (tp + fp + fn)` of every class, in class order.
    #[doc(alias = "jaccard")]
    pub fn iou_per_class(&self, zero_division: ZeroDivision) -> Vec<f64> {
        per_class(self, zero_division, &iou_ratio)
    }

    /// Mean IoU (mIoU) for segmentation: the [`Macro`](Average::Macro) average of
    /// [`iou_per_class`](Self::iou_per_class) over the classes that occur, with the ignored
    /// label (see [`with_ignore_index`](Self::with_ignore_index)) left out.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::Tensor;
    /// use striate::metrics::{ConfusionMatrix, ZeroDivision};
    ///
    /// // Logits [batch 1, classes 2, height 2, width 2]; target 255 marks a void pixel.
    /// let logits = Tensor::from_vec(vec![0.9, 0.8, 0.1, 0.3, 0.1, 0.2, 0.9, 0.7], &[1, 2, 2, 2])
    ///     .unwrap();
    /// let mut cm = ConfusionMatrix::new(2).with_ignore_index(255);
    /// cm.update_from_scores(&logits, &[0, 1, 255, 1]);
    /// // Class 0: predicted at pixels 0, 1, true at 0 -> 1/2. Class 1: predicted at 3, true
    /// // at 1, 3 -> 1/2.
    /// assert_eq!(cm.iou_per_class(ZeroDivision::Zero), vec![0.5, 0.5]);
    /// assert_eq!(cm.mean_iou(ZeroDivision::Zero), 0.5);
    /// ```
    pub fn mean_iou(&self, zero_division: ZeroDivision) -> f64 {
        self.iou(Average::Macro, zero_division)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nan_coordinate_gives_a_nan_iou() {
        let a = Tensor::from_vec(vec![0.0, 0.0, f32::NAN, 2.0], &[1, 4]).unwrap();
        let b = Tensor::from_vec(vec![1.0, 1.0, 3.0, 3.0], &[1, 4]).unwrap();
        assert!(box_iou(&a, &b, BoxFormat::Xyxy).as_slice()[0].is_nan());
        assert!(box_iou(&b, &a, BoxFormat::Xyxy).as_slice()[0].is_nan());
    }

    #[test]
    fn formats_agree() {
        let xyxy = Tensor::from_vec(vec![1.0, 2.0, 4.0, 6.0, 0.0, 0.0, 3.0, 3.0], &[2, 4]).unwrap();
        let xywh = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 3.0, 3.0], &[2, 4]).unwrap();
        let cxcywh =
            Tensor::from_vec(vec![2.5, 4.0, 3.0, 4.0, 1.5, 1.5, 3.0, 3.0], &[2, 4]).unwrap();
        let reference = box_iou(&xyxy, &xyxy, BoxFormat::Xyxy);
        assert_eq!(box_iou(&xywh, &xywh, BoxFormat::Xywh), reference);
        assert_eq!(box_iou(&cxcywh, &cxcywh, BoxFormat::Cxcywh), reference);
        // [1,2]-[3,3] overlap: 2 x 1 = 2; areas 12 and 9.
        assert!((reference.as_slice()[1] - 2.0 / 19.0).abs() < 1e-7);
    }

    #[test]
    fn degenerate_boxes_have_zero_iou() {
        let point = Tensor::from_vec(vec![1.0, 1.0, 1.0, 1.0], &[1, 4]).unwrap();
        assert_eq!(box_iou(&point, &point, BoxFormat::Xyxy).as_slice(), &[0.0]);
    }

    #[test]
    fn empty_masks_use_zero_division() {
        let empty = Tensor::zeros(&[3, 3]);
        assert_eq!(mask_iou(&empty, &empty, ZeroDivision::One), 1.0);
    }

    #[test]
    #[should_panic(expected = "box_iou: boxes_b must be [count, 4] (boxes_b [2, 5])")]
    fn wrong_box_shape_panics() {
        box_iou(
            &Tensor::zeros(&[1, 4]),
            &Tensor::zeros(&[2, 5]),
            BoxFormat::Xyxy,
        );
    }
}
