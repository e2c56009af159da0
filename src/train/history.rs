//! `History`: what a training run measured, epoch by epoch, and its curves as an SVG.

use std::fmt;
use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};

/// One plotted curve: the value of an epoch, if it was measured.
type Series = fn(&EpochRecord) -> Option<f32>;

/// One half of the figure.
type Panel<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// The measurements of one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    /// The epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's samples.
    pub train_loss: f32,
    /// Training accuracy over the epoch (predictions made while the weights moved).
    pub train_accuracy: f32,
    /// Mean validation loss, if a validation set was given.
    pub val_loss: Option<f32>,
    /// Validation accuracy, if a validation set was given.
    pub val_accuracy: Option<f32>,
    /// The learning rate of the default parameter group during the epoch.
    pub learning_rate: f64,
    /// Wall-clock seconds for the epoch's training (validation excluded).
    pub train_seconds: f64,
    /// Wall-clock seconds for the validation pass.
    pub val_seconds: f64,
    /// Training samples per second.
    pub samples_per_second: f64,
}

impl fmt::Display for EpochRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "epoch {:>3}  loss {:.4}  acc {:6.2}%",
            self.epoch,
            self.train_loss,
            100.0 * self.train_accuracy
        )?;
        if let (Some(loss), Some(accuracy)) = (self.val_loss, self.val_accuracy) {
            write!(f, "  val_loss {loss:.4}  val_acc {:6.2}%", 100.0 * accuracy)?;
        }
        write!(
            f,
            "  lr {:.3e}  {:.1} s ({:.0} samples/s)",
            self.learning_rate, self.train_seconds, self.samples_per_second
        )
    }
}

/// Every epoch's measurements, in order; what [`Fit::run`](super::Fit::run) returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// One record per completed epoch.
    pub epochs: Vec<EpochRecord>,
    /// Why training stopped before the requested number of epochs, if it did.
    pub stopped_early: Option<String>,
}

impl History {
    /// The last epoch's record.
    pub fn last(&self) -> Option<&EpochRecord> {
        self.epochs.last()
    }

    /// The best validation accuracy reached, if validation ran.
    pub fn best_val_accuracy(&self) -> Option<f32> {
        self.epochs
            .iter()
            .filter_map(|e| e.val_accuracy)
            .reduce(f32::max)
    }

    /// Writes the loss and accuracy curves (training and validation) as an SVG: loss on the
    /// left, accuracy on the right, one point per epoch. The file appears whole or not at all
    /// (written to a temporary file, then renamed).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be written, or [`Error::InvalidData`] if there is no
    /// epoch to plot.
    pub fn save_plot(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if self.epochs.is_empty() {
            return Err(Error::invalid_data(
                path.display().to_string(),
                "at least one epoch to plot",
                "none",
            ));
        }
        let mut svg = String::new();
        self.draw(&mut svg).map_err(|e| {
            Error::invalid_data(
                path.display().to_string(),
                "a drawable history",
                e.to_string(),
            )
        })?;
        crate::util::atomic_file::write_atomically(path, svg.as_bytes())
    }

    fn draw(&self, svg: &mut String) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(svg, (1000, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(500);
        let last = self.epochs.len() as f32 + 0.5;
        let loss_of = |f: fn(&EpochRecord) -> Option<f32>| -> Vec<(f32, f32)> {
            self.epochs
                .iter()
                .filter_map(|e| f(e).map(|v| (e.epoch as f32, v)))
                .collect()
        };
        let panels: [(&Panel<'_>, &str, [Series; 2]); 2] = [
            (&left, "loss", [|e| Some(e.train_loss), |e| e.val_loss]),
            (
                &right,
                "accuracy",
                [|e| Some(e.train_accuracy), |e| e.val_accuracy],
            ),
        ];
        for (area, title, series) in panels {
            let points: Vec<Vec<(f32, f32)>> = series.iter().map(|&f| loss_of(f)).collect();
            let values = points
                .iter()
                .flatten()
                .map(|p| p.1)
                .filter(|v| v.is_finite());
            let (low, high) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| {
                (l.min(v), h.max(v))
            });
            let margin = ((high - low) * 0.1).max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(0.5f32..last, (low - margin)..(high + margin))?;
            chart.configure_mesh().x_desc("epoch").draw()?;
            for (points, (label, color)) in points
                .into_iter()
                .zip([("train", BLUE), ("validation", RED)])
            {
                if points.is_empty() {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        color.stroke_width(2),
                    ))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            chart.configure_series_labels().border_style(BLACK).draw()?;
        }
        root.present()?;
        Ok(())
    }
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for epoch in &self.epochs {
            writeln!(f, "{epoch}")?;
        }
        if let Some(reason) = &self.stopped_early {
            writeln!(f, "stopped early: {reason}")?;
        }
        Ok(())
    }
}
