//! Finite-difference gradient checking, public so users can test their own ops.

use std::fmt;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::tape::Tape;
use super::var::Var;
use crate::tensor::Tensor;

/// Settings of [`gradcheck_with`].
#[derive(Clone, Copy, Debug)]
pub struct GradcheckOptions {
    /// Step of the central difference `(f(x + eps) - f(x - eps)) / 2eps`. In f32, 1e-2 balances
    /// rounding noise against truncation error for smooth functions; keep inputs further than
    /// `eps` from kinks (ReLU at 0, ties of max).
    pub eps: f32,
    /// Largest accepted error, `|analytic - numeric| / max(|analytic|, |numeric|, floor)`.
    pub tolerance: f32,
    /// Gradients smaller than this are compared absolutely (relative error of near-zero values
    /// is noise).
    pub floor: f32,
    /// Seed of the random projection that reduces a non-scalar output to a scalar, and of each
    /// tape's rng (so dropout masks repeat across evaluations).
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-2,
            tolerance: 1e-2,
            floor: 1e-2,
            seed: 0,
        }
    }
}

/// The element whose analytic and numeric derivatives disagree the most.
#[derive(Clone, Debug, PartialEq)]
pub struct WorstElement {
    /// Which input (position in the `inputs` slice).
    pub input: usize,
    /// Row-major index of the element within that input.
    pub index: Vec<usize>,
    /// The derivative computed by the backward pass.
    pub analytic: f32,
    /// The central-difference estimate.
    pub numeric: f32,
    /// Their error, as defined in [`GradcheckOptions::tolerance`].
    pub error: f32,
}

/// The outcome of a gradient check.
#[derive(Clone, Debug)]
pub struct GradcheckReport {
    /// The element with the largest error, if any element was checked.
    pub worst: Option<WorstElement>,
    /// How many elements were compared.
    pub checked: usize,
    /// The tolerance the check was run with.
    pub tolerance: f32,
}

impl GradcheckReport {
    /// Whether every element is within tolerance.
    pub fn passed(&self) -> bool {
        self.worst
            .as_ref()
            .is_none_or(|w| w.error <= self.tolerance)
    }

    /// Panics with the report unless the check passed.
    #[track_caller]
    pub fn assert_passed(&self) {
        if !self.passed() {
            panic!("{self}");
        }
    }
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.worst {
            None => write!(f, "gradcheck: nothing to check"),
            Some(w) => write!(
                f,
                "gradcheck: {} over {} elements: worst error {:.3e} (tolerance {:.1e}) at input {} index {:?}: analytic {}, numeric {}",
                if self.passed() { "passed" } else { "FAILED" },
                self.checked,
                w.error,
                self.tolerance,
                w.input,
                w.index,
                w.analytic,
                w.numeric
            ),
        }
    }
}

/// [`gradcheck_with`] with default options.
///
/// # Examples
///
/// ```
/// use striate::{gradcheck, Tensor};
///
/// let x = Tensor::from_vec(vec![0.3, -1.2, 2.0], &[3]).unwrap();
/// let report = gradcheck(&[x], |v| v[0].tanh() * v[0]);
/// report.assert_passed();
/// ```
pub fn gradcheck<F>(inputs: &[Tensor], f: F) -> GradcheckReport
where
    F: for<'t> Fn(&[Var<'t>]) -> Var<'t>,
{
    gradcheck_with(inputs, f, GradcheckOptions::default())
}

/// Compares the backward pass of `f` with central differences, element by element.
///
/// A non-scalar output is reduced to `Σ output ⊙ r` with a fixed random `r`, so every output
/// element contributes with its own weight. Each evaluation runs on a training tape seeded with
/// `options.seed`, so random ops repeat exactly.
pub fn gradcheck_with<F>(inputs: &[Tensor], f: F, options: GradcheckOptions) -> GradcheckReport
where
    F: for<'t> Fn(&[Var<'t>]) -> Var<'t>,
{
    let (analytic, projection) = {
        let tape = Tape::training_with_seed(options.seed);
        let vars: Vec<Var<'_>> = inputs.iter().map(|t| tape.variable(t.clone())).collect();
        let output = f(&vars);
        let r = Tensor::rand_uniform(
            &output.shape(),
            -1.0,
            1.0,
            &mut StdRng::seed_from_u64(options.seed ^ 0x9e37_79b9_7f4a_7c15),
        );
        let grads = (output * tape.input(r.clone())).sum().backward();
        let analytic: Vec<Tensor> = vars
            .iter()
            .zip(inputs)
            .map(|(&v, t)| {
                grads
                    .wrt(v)
                    .cloned()
                    .unwrap_or_else(|| Tensor::zeros(t.shape()))
            })
            .collect();
        (analytic, r)
    };
    let project = |inputs: &[Tensor]| -> f64 {
        let tape = Tape::training_with_seed(options.seed);
        let vars: Vec<Var<'_>> = inputs.iter().map(|t| tape.input(t.clone())).collect();
        let out = f(&vars).value();
        out.as_slice()
            .iter()
            .zip(projection.as_slice())
            .map(|(&o, &r)| o as f64 * r as f64)
            .sum()
    };

    let mut worst: Option<WorstElement> = None;
    let mut checked = 0;
    let mut perturbed: Vec<Tensor> = inputs.to_vec();
    for (input, analytic) in analytic.iter().enumerate() {
        let shape = inputs[input].shape().to_vec();
        for flat in 0..inputs[input].len() {
            let original = inputs[input].as_slice()[flat];
            perturbed[input].as_slice_mut()[flat] = original + options.eps;
            let plus = project(&perturbed);
            perturbed[input].as_slice_mut()[flat] = original - options.eps;
            let minus = project(&perturbed);
            perturbed[input].as_slice_mut()[flat] = original;

            let numeric = ((plus - minus) / (2.0 * options.eps as f64)) as f32;
            let a = analytic.as_slice()[flat];
            let scale = a.abs().max(numeric.abs()).max(options.floor);
            let error = if a.is_finite() && numeric.is_finite() {
                (a - numeric).abs() / scale
            } else {
                f32::INFINITY
            };
            checked += 1;
            if worst.as_ref().is_none_or(|w| error > w.error) {
                worst = Some(WorstElement {
                    input,
                    index: unravel(flat, &shape),
                    analytic: a,
                    numeric,
                    error,
                });
            }
        }
    }
    GradcheckReport {
        worst,
        checked,
        tolerance: options.tolerance,
    }
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for axis in (0..shape.len()).rev() {
        index[axis] = flat % shape[axis];
        flat /= shape[axis];
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::tape::Backward;

    /// An op with a deliberately wrong derivative, to see the check fail loudly.
    #[derive(Debug)]
    struct WrongSquare;

    impl Backward for WrongSquare {
        fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
            // d x² / dx is 2x, not 1
            vec![Some(grad_output)]
        }
    }

    #[test]
    fn catches_a_wrong_backward() {
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
        let report = gradcheck(&[x], |v| {
            let value = v[0].value().map(|x| x * x);
            v[0].tape().record(value, &[v[0]], WrongSquare)
        });
        assert!(!report.passed());
        let worst = report.worst.clone().unwrap();
        assert_eq!(worst.input, 0);
        assert!(report.to_string().contains("FAILED"), "{report}");
    }

    #[test]
    fn unravel_is_row_major() {
        assert_eq!(unravel(5, &[2, 3]), vec![1, 2]);
        assert_eq!(unravel(0, &[]), Vec::<usize>::new());
    }
}
