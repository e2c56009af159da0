//! Every metric against scikit-learn 1.9 (and torchvision for box IoU), on the committed
//! fixtures in `tests/fixtures/metrics/`, written by `scripts/metrics_fixtures.py`.
//!
//! The fixtures drive the test: every expected value in a file is compared, and a key this file
//! does not know fails the test, so a metric added to the script cannot go unchecked. Each input
//! is also fed in several batches and through `merge`, which must not change any result.
//! Run with `--nocapture` to see how many values were compared and the worst difference.

use std::fs;
use std::path::Path;

use striate::Tensor;
use striate::metrics::{
    Average, BoxFormat, ConfusionMatrix, KappaWeighting, Normalize, RegressionMetrics,
    TopKAccuracy, ZeroDivision, box_iou, mask_iou,
};

/// Largest difference allowed, absolute below 1 and relative above.
const TOLERANCE: f64 = 1e-6;

/// One `case` of a fixture file: its records, in order.
struct Case {
    name: String,
    records: Vec<(String, String)>,
}

impl Case {
    fn raw(&self, key: &str) -> Option<&str> {
        self.records
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn floats(&self, key: &str) -> Vec<f64> {
        let raw = self
            .raw(key)
            .unwrap_or_else(|| panic!("{}: no record {key}", self.name));
        raw.split(' ').map(parse_f64).collect()
    }

    fn f32s(&self, key: &str) -> Vec<f32> {
        let raw = self
            .raw(key)
            .unwrap_or_else(|| panic!("{}: no record {key}", self.name));
        raw.split(' ').map(|v| v.parse().unwrap()).collect()
    }

    fn usizes(&self, key: &str) -> Vec<usize> {
        self.floats(key).into_iter().map(|v| v as usize).collect()
    }

    fn tensor(&self, key: &str, shape_key: &str) -> Tensor {
        Tensor::from_vec(self.f32s(key), &self.usizes(shape_key)).unwrap()
    }
}

fn parse_f64(text: &str) -> f64 {
    match text {
        "nan" => f64::NAN,
        _ => text
            .parse()
            .unwrap_or_else(|e| panic!("bad number {text:?}: {e}")),
    }
}

fn load(file: &str) -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics")
        .join(file);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut cases: Vec<Case> = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        if key == "case" {
            cases.push(Case {
                name: rest.to_owned(),
                records: Vec::new(),
            });
        } else {
            let case = cases.last_mut().expect("a record before the first case");
            case.records.push((key.to_owned(), rest.to_owned()));
        }
    }
    cases
}

/// How many values were compared, and the worst difference seen.
#[derive(Default)]
struct Tally {
    values: usize,
    metrics: usize,
    worst: f64,
    worst_at: String,
}

impl Tally {
    fn compare(&mut self, case: &str, key: &str, actual: &[f64], expected: &[f64]) {
        assert_eq!(
            actual.len(),
            expected.len(),
            "{case} {key}: {} values, expected {}",
            actual.len(),
            expected.len()
        );
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            if e.is_nan() || a.is_nan() {
                assert!(
                    e.is_nan() && a.is_nan(),
                    "{case} {key}[{i}]: got {a}, expected {e}"
                );
                continue;
            }
            let difference = (a - e).abs() / e.abs().max(1.0);
            assert!(
                difference <= TOLERANCE,
                "{case} {key}[{i}]: got {a}, expected {e}"
            );
            if difference > self.worst {
                self.worst = difference;
                self.worst_at = format!("{case} {key}[{i}]");
            }
        }
        self.values += expected.len();
        self.metrics += 1;
    }

    fn report(&self, what: &str, cases: usize) {
        println!(
            "{what}: {} metric records ({} values) over {cases} cases; worst difference {:.3e} ({})",
            self.metrics, self.values, self.worst, self.worst_at
        );
    }
}

fn zero_division(name: &str) -> ZeroDivision {
    match name {
        "zero" => ZeroDivision::Zero,
        "one" => ZeroDivision::One,
        "nan" => ZeroDivision::Nan,
        _ => panic!("unknown zero_division {name}"),
    }
}

/// The matrix of a classification case fed in one batch, checked against every other way of
/// feeding it: small batches, merged halves, scores.
fn confusion_matrix(case: &Case) -> ConfusionMatrix {
    let num_classes = case.usizes("num_classes")[0];
    let fresh = || match case.raw("ignore_index") {
        Some(index) => ConfusionMatrix::new(num_classes).with_ignore_index(index.parse().unwrap()),
        None => ConfusionMatrix::new(num_classes),
    };
    let predictions = case.usizes("predictions");
    let targets = case.usizes("targets");

    let mut whole = fresh();
    whole.update(&predictions, &targets);

    let mut batched = fresh();
    for (p, t) in predictions.chunks(7).zip(targets.chunks(7)) {
        batched.update(p, t);
    }
    assert_eq!(batched, whole, "{}: batches of 7", case.name);

    let half = predictions.len() / 2;
    let mut merged = fresh();
    let mut second = fresh();
    merged.update(&predictions[..half], &targets[..half]);
    second.update(&predictions[half..], &targets[half..]);
    merged.merge(&second);
    assert_eq!(merged, whole, "{}: merged halves", case.name);

    if case.raw("scores").is_some() {
        let mut from_scores = fresh();
        from_scores.update_from_scores(&case.tensor("scores", "scores_shape"), &targets);
        assert_eq!(from_scores, whole, "{}: from scores", case.name);
    }
    if case.raw("binary_scores").is_some() {
        let scores = case.f32s("binary_scores");
        let scores = Tensor::from_vec(scores.clone(), &[scores.len()]).unwrap();
        let mut from_scores = fresh();
        from_scores.update_binary(&scores, 0.5, &targets);
        assert_eq!(from_scores, whole, "{}: from binary scores", case.name);
    }
    whole
}

/// Top-k accuracy of a case, checking that batches and merging agree with one pass.
fn top_k(case: &Case, k: usize) -> f64 {
    let scores = case.tensor("scores", "scores_shape");
    let classes = scores.shape()[1];
    let targets = case.usizes("targets");
    let mut whole = TopKAccuracy::new(k);
    whole.update(&scores, &targets);
    let mut batched = TopKAccuracy::new(k);
    for (rows, t) in scores.as_slice().chunks(7 * classes).zip(targets.chunks(7)) {
        let batch = Tensor::from_vec(rows.to_vec(), &[t.len(), classes]).unwrap();
        let mut part = TopKAccuracy::new(k);
        part.update(&batch, t);
        batched.merge(&part);
    }
    assert_eq!(batched, whole, "{}: top-{k} in batches", case.name);
    whole.compute()
}

/// The value of one `metric.average.zero_division` record.
fn rate(cm: &ConfusionMatrix, key: &str) -> Vec<f64> {
    let parts: Vec<&str> = key.split('.').collect();
    // "f0.5" splits in two; the last two parts are always average and policy.
    let (metric, average, zd) = (
        parts[..parts.len() - 2].join("."),
        parts[parts.len() - 2],
        zero_division(parts[parts.len() - 1]),
    );
    let beta = |m: &str| m.strip_prefix('f').and_then(|b| b.parse::<f64>().ok());
    if average == "per_class" {
        return match metric.as_str() {
            "precision" => cm.precision_per_class(zd),
            "recall" => cm.recall_per_class(zd),
            "specificity" => cm.specificity_per_class(zd),
            "npv" => cm.negative_predictive_value_per_class(zd),
            "iou" => cm.iou_per_class(zd),
            m => cm.fbeta_per_class(beta(m).expect(key), zd),
        };
    }
    let average = match average {
        "macro" => Average::Macro,
        "micro" => Average::Micro,
        "weighted" => Average::Weighted,
        a => Average::Binary {
            positive: a.strip_prefix("binary").expect(key).parse().unwrap(),
        },
    };
    vec![match metric.as_str() {
        "precision" => cm.precision(average, zd),
        "recall" => cm.recall(average, zd),
        "specificity" => cm.specificity(average, zd),
        "npv" => cm.negative_predictive_value(average, zd),
        "iou" => cm.iou(average, zd),
        "f1" => cm.f1(average, zd),
        m => cm.fbeta(beta(m).expect(key), average, zd),
    }]
}

#[test]
fn classification_matches_sklearn() {
    let cases = load("classification.txt");
    let mut tally = Tally::default();
    let mut reports = 0;
    for case in &cases {
        let cm = confusion_matrix(case);
        let names: Option<Vec<&str>> = case.raw("class_names").map(|n| n.split(' ').collect());
        for (key, raw) in &case.records {
            let actual: Vec<f64> = match key.as_str() {
                "num_classes" | "ignore_index" | "targets" | "predictions" | "scores"
                | "scores_shape" | "binary_scores" | "class_names" => continue,
                "accuracy" => vec![cm.accuracy()],
                "balanced_accuracy" => vec![cm.balanced_accuracy()],
                "mcc" => vec![cm.matthews_corrcoef()],
                "kappa.unweighted" => vec![cm.cohen_kappa(KappaWeighting::Unweighted)],
                "kappa.linear" => vec![cm.cohen_kappa(KappaWeighting::Linear)],
                "kappa.quadratic" => vec![cm.cohen_kappa(KappaWeighting::Quadratic)],
                "support" => cm.support().iter().map(|&s| s as f64).collect(),
                "confusion" => cm.to_array().iter().map(|&c| c as f64).collect(),
                "normalized.targets" => {
                    cm.normalized(Normalize::Targets)
                        .into_raw_vec_and_offset()
                        .0
                }
                "normalized.predictions" => {
                    cm.normalized(Normalize::Predictions)
                        .into_raw_vec_and_offset()
                        .0
                }
                "normalized.all" => cm.normalized(Normalize::All).into_raw_vec_and_offset().0,
                k if k.starts_with("top_k.") => vec![top_k(case, k[6..].parse().unwrap())],
                k if k.starts_with("report.") => {
                    let (zd, digits) = k[7..].split_once('.').unwrap();
                    let mut report = cm
                        .classification_report()
                        .with_zero_division(zero_division(zd))
                        .with_digits(digits.parse().unwrap());
                    if let Some(names) = &names {
                        report = report.with_class_names(names);
                    }
                    let expected = raw.replace("\\n", "\n");
                    assert_eq!(report.to_string(), expected, "{} {k}", case.name);
                    reports += 1;
                    continue;
                }
                k if k.split('.').count() >= 3 => rate(&cm, k),
                k => panic!("{}: unknown record {k}", case.name),
            };
            tally.compare(&case.name, key, &actual, &case.floats(key));
        }
    }
    tally.report("classification", cases.len());
    println!("classification: {reports} classification reports identical to scikit-learn's");
    assert!(cases.len() >= 12 && tally.metrics > 1000 && reports > 50);
}

fn vector(values: &[f32]) -> Tensor {
    Tensor::from_vec(values.to_vec(), &[values.len()]).unwrap()
}

#[test]
fn regression_matches_sklearn() {
    let cases = load("regression.txt");
    let mut tally = Tally::default();
    for case in &cases {
        let predictions = case.f32s("predictions");
        let targets = case.f32s("targets");
        let mut whole = RegressionMetrics::new();
        whole.update(&vector(&predictions), &vector(&targets));
        let mut batched = RegressionMetrics::new();
        for (p, t) in predictions.chunks(7).zip(targets.chunks(7)) {
            batched.update(&vector(p), &vector(t));
        }
        let half = predictions.len() / 2;
        let mut merged = RegressionMetrics::new();
        merged.update(&vector(&predictions[..half]), &vector(&targets[..half]));
        let mut second = RegressionMetrics::new();
        second.update(&vector(&predictions[half..]), &vector(&targets[half..]));
        merged.merge(&second);

        for (how, metrics) in [
            ("whole", &whole),
            ("batched", &batched),
            ("merged", &merged),
        ] {
            let scores = metrics.compute();
            for (key, _) in &case.records {
                let actual = match key.as_str() {
                    "predictions" | "targets" => continue,
                    "mae" => scores.mae,
                    "mse" => scores.mse,
                    "rmse" => scores.rmse,
                    "r2" => scores.r2,
                    "mape" => scores.mape,
                    k => panic!("{}: unknown record {k}", case.name),
                };
                let name = format!("{} ({how})", case.name);
                tally.compare(&name, key, &[actual], &case.floats(key));
            }
        }
    }
    tally.report("regression", cases.len());
    assert!(cases.len() >= 8);
}

#[test]
fn iou_matches_sklearn_and_torchvision() {
    let cases = load("iou.txt");
    let mut tally = Tally::default();
    for case in &cases {
        for (key, _) in &case.records {
            let actual: Vec<f64> = match key.as_str() {
                "iou" => {
                    let expected_shape = case.usizes("iou_shape");
                    for (name, format) in [
                        ("xyxy", BoxFormat::Xyxy),
                        ("xywh", BoxFormat::Xywh),
                        ("cxcywh", BoxFormat::Cxcywh),
                    ] {
                        let boxes = |which: &str| {
                            let values = case.f32s(&format!("{which}.{name}"));
                            Tensor::from_vec(values.clone(), &[values.len() / 4, 4]).unwrap()
                        };
                        let iou = box_iou(&boxes("boxes_a"), &boxes("boxes_b"), format);
                        assert_eq!(iou.shape(), expected_shape.as_slice());
                        let iou: Vec<f64> = iou.as_slice().iter().map(|&v| f64::from(v)).collect();
                        tally.compare(
                            &case.name,
                            &format!("iou ({name})"),
                            &iou,
                            &case.floats(key),
                        );
                    }
                    continue;
                }
                k if k.starts_with("mask_iou.") => {
                    let zd = zero_division(&k[9..]);
                    let prediction = case.tensor("mask_prediction", "mask_shape");
                    let target = case.tensor("mask_target", "mask_shape");
                    // The same number, accumulated as a two-class segmentation.
                    let mut cm = ConfusionMatrix::new(2);
                    let labels: Vec<usize> = target
                        .as_slice()
                        .iter()
                        .map(|&t| usize::from(t != 0.0))
                        .collect();
                    cm.update_binary(&prediction, 0.5, &labels);
                    let streamed = cm.iou(Average::Binary { positive: 1 }, zd);
                    tally.compare(
                        &case.name,
                        &format!("{k} (streamed)"),
                        &[streamed],
                        &case.floats(key),
                    );
                    vec![mask_iou(&prediction, &target, zd)]
                }
                "boxes_a.xyxy" | "boxes_a.xywh" | "boxes_a.cxcywh" | "boxes_b.xyxy"
                | "boxes_b.xywh" | "boxes_b.cxcywh" | "iou_shape" | "mask_prediction"
                | "mask_target" | "mask_shape" => continue,
                k => panic!("{}: unknown record {k}", case.name),
            };
            tally.compare(&case.name, key, &actual, &case.floats(key));
        }
    }
    tally.report("iou", cases.len());
    assert!(cases.len() >= 4);
}
