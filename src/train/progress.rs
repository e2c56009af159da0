//! How a training run reports progress: a live bar on a terminal, one line per epoch otherwise.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::history::EpochRecord;

/// How [`Fit`](super::Fit) shows progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Progress {
    /// A bar when standard error is a terminal, else one line per epoch.
    #[default]
    Auto,
    /// A live bar per epoch (loss, accuracy, samples/s, ETA), then the epoch's line.
    Bar,
    /// One line per epoch on standard output.
    Lines,
    /// Nothing.
    Silent,
}

/// The display of one epoch.
pub(crate) struct EpochProgress {
    bar: Option<ProgressBar>,
    print_lines: bool,
    started: Instant,
    samples: usize,
}

impl EpochProgress {
    pub(crate) fn start(
        mode: Progress,
        epoch: usize,
        epochs: usize,
        batches: usize,
    ) -> EpochProgress {
        let use_bar = match mode {
            Progress::Auto => std::io::stderr().is_terminal(),
            Progress::Bar => true,
            Progress::Lines | Progress::Silent => false,
        };
        let bar = use_bar.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(format!("{epoch}/{epochs}"));
            bar
        });
        EpochProgress {
            bar,
            print_lines: mode != Progress::Silent,
            started: Instant::now(),
            samples: 0,
        }
    }

    /// Records a finished batch with the running loss and accuracy of the epoch.
    pub(crate) fn batch(&mut self, batch_size: usize, loss: f64, accuracy: f64) {
        self.samples += batch_size;
        if let Some(bar) = &self.bar {
            let rate = self.samples as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {loss:.4} acc {:5.2}% {rate:.0} samples/s",
                100.0 * accuracy
            ));
            bar.inc(1);
        }
    }

    /// Clears the bar and prints the epoch's line.
    pub(crate) fn finish(self, record: &EpochRecord) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        if self.print_lines {
            println!("{record}");
        }
    }
}
