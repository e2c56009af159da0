//! The learning-rate range test (Smith, 2017; fastai's `lr_find`, Lightning's `lr_find`):
//! train for a few steps while the learning rate grows exponentially, watch the loss, and
//! suggest the rate where it falls fastest.

use std::path::Path;

use plotters::prelude::*;

use super::LossFn;
use crate::autograd::Tape;
use crate::data::DataLoader;
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::optim::Optimizer;
use crate::tensor::Tensor;
use crate::tensor::check::contract_violation;

/// The sweep of [`Fit::find_lr`](super::Fit::find_lr): from `min_lr` to `max_lr` over at
/// most `steps` optimizer steps, growing by a constant factor each step.
#[derive(Clone, Debug, PartialEq)]
pub struct LrRange {
    /// The first learning rate (default `1e-7`).
    pub min_lr: f64,
    /// The last learning rate (default `10`).
    pub max_lr: f64,
    /// The number of steps (default 100); batches are drawn from the loader's epochs in turn.
    pub steps: usize,
    /// The weight of the past in the exponentially smoothed loss (default 0.98, fastai's).
    pub smoothing: f64,
    /// Stop once the smoothed loss exceeds this multiple of its best value (default 4).
    pub divergence: f64,
}

impl Default for LrRange {
    fn default() -> Self {
        LrRange {
            min_lr: 1e-7,
            max_lr: 10.0,
            steps: 100,
            smoothing: 0.98,
            divergence: 4.0,
        }
    }
}

/// What a learning-rate range test measured.
#[derive(Clone, Debug, PartialEq)]
pub struct LrFinder {
    /// The learning rate of each step taken.
    pub learning_rates: Vec<f64>,
    /// The loss of each step's batch.
    pub losses: Vec<f32>,
    /// The exponentially smoothed loss, bias-corrected as in Adam:
    /// `avgᵢ = β·avgᵢ₋₁ + (1-β)·lossᵢ`, `smoothedᵢ = avgᵢ / (1-βⁱ⁺¹)`.
    pub smoothed: Vec<f32>,
    /// The learning rate at the steepest descent of the smoothed loss (the most negative
    /// slope against log learning rate, central differences), ignoring the first 10 and
    /// the last step as Lightning does; `None` with fewer than 3 usable steps.
    pub suggestion: Option<f64>,
    /// Whether the sweep stopped early because the loss diverged.
    pub diverged: bool,
}

impl LrFinder {
    /// Draws the smoothed loss against the learning rate (log scale), with the suggestion
    /// marked, as an SVG file (written atomically).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidData`] if there are no finite points to draw; [`Error::Io`] if the file
    /// cannot be written.
    pub fn save_plot(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let points: Vec<(f64, f64)> = self
            .learning_rates
            .iter()
            .zip(&self.smoothed)
            .filter(|(_, l)| l.is_finite())
            .map(|(&lr, &l)| (lr.log10(), f64::from(l)))
            .collect();
        if points.is_empty() {
            return Err(Error::invalid_data(
                path.display().to_string(),
                "at least one finite loss to plot",
                "none",
            ));
        }
        let mut svg = String::new();
        self.draw(&points, &mut svg).map_err(|e| {
            Error::invalid_data(
                path.display().to_string(),
                "a drawable sweep",
                e.to_string(),
            )
        })?;
        crate::util::atomic_file::write_atomically(path, svg.as_bytes())
    }

    fn draw(
        &self,
        points: &[(f64, f64)],
        svg: &mut String,
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(svg, (640, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let (x0, x1) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.0), b.max(p.0))
            });
        let (y0, y1) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.1), b.max(p.1))
            });
        let xm = ((x1 - x0) * 0.02).max(1e-3);
        let ym = ((y1 - y0) * 0.1).max(1e-3);
        let mut chart = ChartBuilder::on(&root)
            .caption("learning-rate range test", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d((x0 - xm)..(x1 + xm), (y0 - ym)..(y1 + ym))?;
        chart
            .configure_mesh()
            .x_desc("learning rate (log10)")
            .y_desc("smoothed loss")
            .draw()?;
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(2),
        ))?;
        if let Some(lr) = self.suggestion {
            let i = self
                .learning_rates
                .iter()
                .position(|&r| r == lr)
                .unwrap_or(0);
            let at = (lr.log10(), f64::from(self.smoothed[i]));
            chart
                .draw_series([Circle::new(at, 6, RED.filled())])?
                .label(format!("suggested {lr:.2e}"))
                .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
            chart.configure_series_labels().border_style(BLACK).draw()?;
        }
        root.present()?;
        Ok(())
    }
}

/// Everything the sweep changes, to put back afterwards.
struct Snapshot {
    params: Vec<Tensor>,
    buffers: Vec<Tensor>,
    optimizer_state: Vec<(String, Tensor)>,
    group_rates: Vec<f64>,
}

impl Snapshot {
    fn take(model: &dyn Module, optimizer: &dyn Optimizer) -> Snapshot {
        let mut params = Vec::new();
        model.visit_params(&mut |_, p| params.push(p.value().clone()));
        let mut buffers = Vec::new();
        model.visit_buffers(&mut |_, b| buffers.push(b.clone()));
        Snapshot {
            params,
            buffers,
            optimizer_state: optimizer.state_dict(model),
            group_rates: optimizer
                .param_groups()
                .iter()
                .map(|g| g.learning_rate())
                .collect(),
        }
    }

    fn restore(self, model: &mut dyn Module, optimizer: &mut dyn Optimizer) -> Result<()> {
        let mut params = self.params.into_iter();
        model.visit_params_mut(&mut |_, p| {
            if let Some(value) = params.next() {
                p.set_value(value);
            }
        });
        let mut buffers = self.buffers.into_iter();
        model.visit_buffers_mut(&mut |_, b| {
            if let Some(value) = buffers.next() {
                *b = value;
            }
        });
        optimizer.load_state_dict(model, &self.optimizer_state)?;
        for (group, rate) in optimizer
            .param_groups_mut()
            .iter_mut()
            .zip(self.group_rates)
        {
            group.set_learning_rate(rate);
        }
        Ok(())
    }
}

/// Runs the sweep; see [`Fit::find_lr`](super::Fit::find_lr).
pub(crate) fn find_lr(
    model: &mut dyn Module,
    optimizer: &mut dyn Optimizer,
    loss_fn: &LossFn<'_>,
    train: &DataLoader,
    range: &LrRange,
    seed: u64,
) -> Result<LrFinder> {
    if !(range.min_lr > 0.0 && range.max_lr > range.min_lr && range.max_lr.is_finite())
        || range.steps < 2
        || !(0.0..1.0).contains(&range.smoothing)
        || range.divergence.is_nan()
        || range.divergence <= 1.0
    {
        contract_violation(
            "find_lr",
            "needs 0 < min_lr < max_lr, steps >= 2, smoothing in [0, 1), divergence > 1",
            format_args!("{range:?}"),
        );
    }
    if train.is_empty() {
        return Err(Error::invalid_data(
            "find_lr",
            "a loader with at least one batch",
            "an empty loader",
        ));
    }
    let snapshot = Snapshot::take(model, optimizer);
    let growth = (range.max_lr / range.min_lr).powf(1.0 / (range.steps - 1) as f64);
    let mut found = LrFinder {
        learning_rates: Vec::new(),
        losses: Vec::new(),
        smoothed: Vec::new(),
        suggestion: None,
        diverged: false,
    };
    let (mut average, mut best) = (0.0f64, f64::INFINITY);
    let mut batches = (0u64..).flat_map(|epoch| train.try_epoch(epoch));
    for step in 0..range.steps {
        let Some(batch) = batches.next() else { break };
        let batch = batch?;
        let lr = range.min_lr * growth.powi(step as i32);
        optimizer.set_learning_rate(lr);
        let tape =
            Tape::training_with_seed(seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let logits = model.forward(tape.input(batch.images));
        let loss = loss_fn(logits, &batch.labels);
        let value = loss.item();
        found.learning_rates.push(lr);
        found.losses.push(value);
        average = range.smoothing * average + (1.0 - range.smoothing) * f64::from(value);
        let smoothed = average / (1.0 - range.smoothing.powi(step as i32 + 1));
        found.smoothed.push(smoothed as f32);
        if !smoothed.is_finite() || (step > 0 && smoothed > range.divergence * best) {
            found.diverged = true;
            break;
        }
        best = best.min(smoothed);
        let grads = loss.backward();
        optimizer.step(model, &grads);
    }
    found.suggestion = steepest_descent(&found.learning_rates, &found.smoothed);
    snapshot.restore(model, optimizer)?;
    Ok(found)
}

/// The rate where the loss falls fastest against log learning rate, skipping the first 10
/// points and the last (Lightning's defaults), or fewer when the sweep was short.
fn steepest_descent(rates: &[f64], losses: &[f32]) -> Option<f64> {
    let finite = losses.iter().take_while(|l| l.is_finite()).count();
    let skip_begin = if finite > 13 { 10 } else { 0 };
    let end = finite.saturating_sub(1);
    if end < skip_begin + 3 {
        return None;
    }
    let x: Vec<f64> = rates[skip_begin..end].iter().map(|r| r.ln()).collect();
    let y: Vec<f64> = losses[skip_begin..end]
        .iter()
        .map(|&l| f64::from(l))
        .collect();
    let n = x.len();
    // NumPy's `gradient`: one-sided at the ends, central inside.
    let slope = |i: usize| match i {
        0 => (y[1] - y[0]) / (x[1] - x[0]),
        i if i == n - 1 => (y[n - 1] - y[n - 2]) / (x[n - 1] - x[n - 2]),
        i => (y[i + 1] - y[i - 1]) / (x[i + 1] - x[i - 1]),
    };
    let steepest = (0..n).min_by(|&a, &b| slope(a).total_cmp(&slope(b)))?;
    Some(rates[skip_begin + steepest])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steepest_descent_finds_the_fastest_fall() {
        let rates: Vec<f64> = (0..20).map(|i| 10f64.powi(i - 10)).collect();
        // flat, then a steep fall around index 14, then a rise
        let losses: Vec<f32> = (0..20)
            .map(|i| match i {
                0..=12 => 2.0,
                13 => 1.95,
                14 => 1.0,
                15 => 0.5,
                _ => 0.5 + (i - 15) as f32,
            })
            .collect();
        assert_eq!(steepest_descent(&rates, &losses), Some(rates[14]));
        assert_eq!(steepest_descent(&rates[..3], &losses[..3]), None);
    }
}
