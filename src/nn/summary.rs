//! `summary`: a table of layers, output shapes, parameter counts and multiply-accumulates,
//! like Keras's `model.summary()` and torchinfo.

use std::fmt;

use super::{Graph, Module};
use crate::autograd::Tape;
use crate::tensor::Tensor;

/// One line of a [`Summary`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryRow {
    /// The layer's [`Module::describe`] text.
    pub layer: String,
    /// The shape the layer produced.
    pub output_shape: Vec<usize>,
    /// Its number of parameter scalars.
    pub params: usize,
    /// Of which trainable (not frozen).
    pub trainable: usize,
    /// The multiply-accumulates for the traced input, counted as torchinfo does (see
    /// [`Graph::node_macs`]); 0 for a row made with [`SummaryRow::of`], or for a layer that
    /// cannot describe itself as a [`Graph`].
    pub macs: u64,
}

impl SummaryRow {
    /// The row of `module` for an output of `output_shape`.
    pub fn of(module: &(impl Module + ?Sized), output_shape: Vec<usize>) -> SummaryRow {
        SummaryRow {
            layer: module.describe(),
            output_shape,
            params: module.num_params(),
            trainable: module.num_trainable_params(),
            macs: 0,
        }
    }

    /// The row of `module` for an input of `input_shape` and an output of `output_shape`,
    /// with its multiply-accumulates.
    pub fn traced(
        module: &(impl Module + ?Sized),
        input_shape: &[usize],
        output_shape: Vec<usize>,
    ) -> SummaryRow {
        let mut row = SummaryRow::of(module, output_shape);
        row.macs = Graph::trace(module, input_shape).map_or(0, |g| g.macs());
        row
    }
}

/// The table printed by [`summary`]: one row per top-level layer, then totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The input shape the model was traced with.
    pub input_shape: Vec<usize>,
    /// The layers, in execution order.
    pub rows: Vec<SummaryRow>,
    /// All parameter scalars of the model.
    pub total_params: usize,
    /// The trainable ones.
    pub trainable_params: usize,
    /// The multiply-accumulates of the rows, summed (torchinfo's "mult-adds").
    pub total_macs: u64,
}

/// Runs `model` once on zeros of `input_shape` (an inference tape) and lists each top-level
/// layer with its output shape, parameter count and multiply-accumulates (counted as
/// torchinfo counts its "mult-adds": see [`Graph::node_macs`]; VGG-16 at 1x3x224x224 has
/// 15,483,821,032, ResNet-18 1,814,083,944, as in torchinfo).
///
/// # Panics
///
/// If the model rejects the input shape (with the failing op's message).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::nn::{summary, Dense, Module, Relu, Sequential};
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let mlp = Sequential::new().push(Dense::new(4, 8, &mut rng)).push(Relu).push(Dense::new(8, 2, &mut rng));
/// let table = summary(&mlp, &[1, 4]);
/// assert_eq!(table.total_params, 4 * 8 + 8 + 8 * 2 + 2);
/// assert_eq!(table.rows[2].output_shape, vec![1, 2]);
/// assert_eq!(table.total_macs, 4 * 8 + 8 + 8 * 2 + 2); // one sample through two dense layers
/// println!("{table}");
/// ```
pub fn summary(model: &dyn Module, input_shape: &[usize]) -> Summary {
    let tape = Tape::inference();
    let mut rows = Vec::new();
    model.summarize(tape.input(Tensor::zeros(input_shape)), &mut rows);
    Summary {
        input_shape: input_shape.to_vec(),
        total_macs: rows.iter().map(|r| r.macs).sum(),
        rows,
        total_params: model.num_params(),
        trainable_params: model.num_trainable_params(),
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shapes: Vec<String> = self
            .rows
            .iter()
            .map(|r| format!("{:?}", r.output_shape))
            .collect();
        let layer_width = self
            .rows
            .iter()
            .map(|r| r.layer.len())
            .chain([12])
            .max()
            .unwrap_or(12)
            + 2;
        let shape_width = shapes
            .iter()
            .map(|s| s.len())
            .chain([12])
            .max()
            .unwrap_or(12)
            + 2;
        let width = layer_width + shape_width + 12 + 16;
        writeln!(f, "Input shape: {:?}", self.input_shape)?;
        writeln!(
            f,
            "{:<layer_width$}{:<shape_width$}{:>12}{:>16}",
            "Layer", "Output Shape", "Param #", "Mult-Adds"
        )?;
        writeln!(f, "{}", "=".repeat(width))?;
        for (row, shape) in self.rows.iter().zip(&shapes) {
            writeln!(
                f,
                "{:<layer_width$}{:<shape_width$}{:>12}{:>16}",
                row.layer,
                shape,
                grouped(row.params),
                grouped(row.macs as usize)
            )?;
        }
        writeln!(f, "{}", "=".repeat(width))?;
        writeln!(f, "Total params: {}", grouped(self.total_params))?;
        writeln!(f, "Trainable params: {}", grouped(self.trainable_params))?;
        writeln!(
            f,
            "Non-trainable params: {}",
            grouped(self.total_params - self.trainable_params)
        )?;
        write!(
            f,
            "Total mult-adds (G): {:.2}",
            self.total_macs as f64 / 1e9
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(138_357_544), "138,357,544");
    }
}
