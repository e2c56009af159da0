//! The line-based fixture format written by `scripts/nonfinite_fixtures.py` and
//! `scripts/ops_fixtures.py`, and the one rule both tests compare with PyTorch by.
//!
//! ```text
//! case <name> <input shape, comma separated | scalar>
//! input <values...>
//! target <values...>             (losses with a target)
//! output <shape> <values...>
//! seed <values...>               (the gradient fed to the output)
//! grad <values...>               (Jᵀ · seed for the input)
//! target_grad <values...>
//! labels <ints...>               (class labels)
//! ```
// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

/// One fixture case.
#[derive(Default)]
pub struct Case {
    pub name: String,
    pub input_shape: Vec<usize>,
    pub input: Vec<f32>,
    pub target: Option<Vec<f32>>,
    pub output_shape: Vec<usize>,
    pub output: Vec<f32>,
    pub seed: Vec<f32>,
    pub grad: Vec<f32>,
    pub target_grad: Vec<f32>,
    pub labels: Vec<usize>,
}

fn parse_shape(text: &str) -> Vec<usize> {
    if text == "scalar" {
        return Vec::new();
    }
    text.split(',').map(|d| d.parse().unwrap()).collect()
}

fn parse_values<'a>(fields: impl Iterator<Item = &'a str>) -> Vec<f32> {
    fields.map(|v| v.parse::<f32>().unwrap()).collect()
}

/// Every case of a fixture file's text.
pub fn parse_cases(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut fields = line.split(' ');
        let kind = fields.next().unwrap();
        if kind == "case" {
            cases.push(Case {
                name: fields.next().unwrap().to_string(),
                input_shape: parse_shape(fields.next().unwrap()),
                ..Case::default()
            });
            continue;
        }
        let case = cases.last_mut().expect("a case line first");
        match kind {
            "input" => case.input = parse_values(fields),
            "target" => case.target = Some(parse_values(fields)),
            "output" => {
                case.output_shape = parse_shape(fields.next().unwrap());
                case.output = parse_values(fields);
            }
            "seed" => case.seed = parse_values(fields),
            "grad" => case.grad = parse_values(fields),
            "target_grad" => case.target_grad = parse_values(fields),
            "labels" => case.labels = fields.map(|v| v.parse().unwrap()).collect(),
            other => panic!("unknown fixture line {other}"),
        }
    }
    cases
}

/// The same NaN, the same infinity, or the error relative to the finite value (to 1 below 1);
/// `None` when they disagree in kind.
pub fn error(got: f32, want: f32) -> Option<f32> {
    if want.is_nan() {
        return got.is_nan().then_some(0.0);
    }
    if want.is_infinite() {
        return (got == want).then_some(0.0);
    }
    // Relative to the value, or to 1 for values below 1 (where f32 rounding of intermediate
    // terms, as in tanh's 1 − y², is absolute rather than relative).
    got.is_finite()
        .then(|| (got - want).abs() / want.abs().max(1.0))
}

/// Checks every element within 1e-6 of PyTorch's and returns the worst error.
#[track_caller]
pub fn assert_agrees(case: &str, what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{case} {what}: length");
    let mut worst = 0.0f32;
    let mut disagreements = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        match error(g, w) {
            Some(e) if e <= 1e-6 => worst = worst.max(e),
            _ => disagreements.push(format!("[{i}] striate {g}, PyTorch {w}")),
        }
    }
    assert!(
        disagreements.is_empty(),
        "{case} {what} differs from PyTorch: {}",
        disagreements.join("; ")
    );
    worst
}
