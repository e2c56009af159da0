//! Activation layers and `Flatten`: parameter-free modules wrapping one op each.

use super::{Graph, Module, Op, ValueId, no_params};
use crate::autograd::Var;
use crate::tensor::check::{contract_violation, expect_finite};

/// Rectified linear unit, `max(x, 0)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relu;

impl Module for Relu {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.relu()
    }

    fn is_relu(&self) -> bool {
        true
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::Relu, &[input]))
    }
}

/// Leaky ReLU: `x` for `x > 0`, `negative_slope · x` otherwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeakyRelu {
    /// Slope for negative inputs (PyTorch's default 0.01).
    pub negative_slope: f32,
}

impl LeakyRelu {
    /// A leaky ReLU with the given negative slope.
    ///
    /// # Panics
    ///
    /// If the slope is not finite.
    pub fn new(negative_slope: f32) -> LeakyRelu {
        expect_finite("LeakyRelu", "negative_slope", negative_slope);
        LeakyRelu { negative_slope }
    }
}

impl Default for LeakyRelu {
    fn default() -> Self {
        LeakyRelu {
            negative_slope: 0.01,
        }
    }
}

impl Module for LeakyRelu {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.leaky_relu(self.negative_slope)
    }

    fn describe(&self) -> String {
        format!("LeakyRelu(negative_slope={})", self.negative_slope)
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::LeakyRelu(self.negative_slope), &[input]))
    }
}

/// Exponential linear unit: `x` for `x > 0`, `alpha · (e^x − 1)` otherwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Elu {
    /// Scale of the negative part (PyTorch's default 1).
    pub alpha: f32,
}

impl Elu {
    /// An ELU with the given alpha.
    ///
    /// # Panics
    ///
    /// If alpha is not finite.
    pub fn new(alpha: f32) -> Elu {
        expect_finite("Elu", "alpha", alpha);
        Elu { alpha }
    }
}

impl Default for Elu {
    fn default() -> Self {
        Elu { alpha: 1.0 }
    }
}

impl Module for Elu {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.elu(self.alpha)
    }

    fn describe(&self) -> String {
        format!("Elu(alpha={})", self.alpha)
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::Elu(self.alpha), &[input]))
    }
}

/// The logistic sigmoid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sigmoid;

impl Module for Sigmoid {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.sigmoid()
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::Sigmoid, &[input]))
    }
}

/// Hyperbolic tangent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tanh;

impl Module for Tanh {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.tanh()
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::Tanh, &[input]))
    }
}

/// Softmax along an axis (PyTorch's `nn.Softmax(dim)`). For training, prefer feeding logits to
/// [`Var::cross_entropy`], which is exact for any logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Softmax {
    /// The axis that sums to one.
    pub axis: usize,
}

impl Softmax {
    /// Softmax along `axis`.
    pub fn new(axis: usize) -> Softmax {
        Softmax { axis }
    }
}

impl Module for Softmax {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.softmax(self.axis)
    }

    fn describe(&self) -> String {
        format!("Softmax(axis={})", self.axis)
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::Softmax(self.axis), &[input]))
    }
}

/// Log-softmax along an axis (PyTorch's `nn.LogSoftmax(dim)`), to pair with [`Var::nll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSoftmax {
    /// The axis normalised over.
    pub axis: usize,
}

impl LogSoftmax {
    /// Log-softmax along `axis`.
    pub fn new(axis: usize) -> LogSoftmax {
        LogSoftmax { axis }
    }
}

impl Module for LogSoftmax {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.log_softmax(self.axis)
    }

    fn describe(&self) -> String {
        format!("LogSoftmax(axis={})", self.axis)
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::LogSoftmax(self.axis), &[input]))
    }
}

/// Merges every axis from `start_axis` on: `[N, C, H, W] -> [N, C·H·W]` with the default
/// start axis 1 (PyTorch's `nn.Flatten`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flatten {
    /// The first axis merged.
    pub start_axis: usize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start_axis: 1 }
    }
}

impl Flatten {
    /// Flattens from axis 1, keeping the batch axis.
    pub fn new() -> Flatten {
        Flatten::default()
    }
}

impl Module for Flatten {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.flatten(self.start_axis)
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(
            self,
            Op::Flatten {
                start_axis: self.start_axis,
            },
            &[input],
        ))
    }
}

/// Which form of GELU a [`Gelu`] layer computes (PyTorch's `approximate` argument).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GeluApproximation {
    /// The exact `x·Φ(x)` with the error function ([`Var::gelu`]); PyTorch's `"none"`.
    #[default]
    None,
    /// The tanh approximation ([`Var::gelu_tanh`]); PyTorch's `"tanh"`.
    Tanh,
}

/// Gaussian error linear unit `x·Φ(x)` (PyTorch's `nn.GELU`), exact by default.
///
/// # Examples
///
/// ```
/// use striate::nn::{Gelu, GeluApproximation, Module};
/// use striate::Tensor;
///
/// let x = Tensor::from_vec(vec![0.0, 1.0], &[2]).unwrap();
/// assert_eq!(Gelu::default().predict(&x).as_slice()[0], 0.0);
/// let tanh = Gelu::new(GeluApproximation::Tanh);
/// assert!((tanh.predict(&x).as_slice()[1] - 0.841_192).abs() < 1e-6);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gelu {
    /// Exact or tanh-approximated.
    pub approximate: GeluApproximation,
}

impl Gelu {
    /// A GELU of the given form.
    pub fn new(approximate: GeluApproximation) -> Gelu {
        Gelu { approximate }
    }
}

impl Module for Gelu {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        match self.approximate {
            GeluApproximation::None => input.gelu(),
            GeluApproximation::Tanh => input.gelu_tanh(),
        }
    }

    fn describe(&self) -> String {
        match self.approximate {
            GeluApproximation::None => "Gelu".to_string(),
            GeluApproximation::Tanh => "Gelu(approximate=tanh)".to_string(),
        }
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::Gelu(self.approximate), &[input]))
    }
}

/// Sigmoid-weighted linear unit `x·σ(x)`, also called swish (PyTorch's `nn.SiLU`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Silu;

impl Module for Silu {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.silu()
    }

    fn describe(&self) -> String {
        "Silu".to_string()
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::Silu, &[input]))
    }
}

/// Softplus `ln(1 + e^(β·x)) / β`, linear where `β·x > threshold` (PyTorch's `nn.Softplus`).
///
/// # Examples
///
/// ```
/// use striate::nn::{Module, Softplus};
/// use striate::Tensor;
///
/// let x = Tensor::from_vec(vec![0.0, 25.0], &[2]).unwrap();
/// assert_eq!(Softplus::default().predict(&x).as_slice(), &[2f32.ln(), 25.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Softplus {
    /// Sharpness (PyTorch's default 1).
    pub beta: f32,
    /// Above `β·x > threshold` the output is `x` (PyTorch's default 20).
    pub threshold: f32,
}

impl Softplus {
    /// A softplus with the given `beta` and `threshold`.
    ///
    /// # Panics
    ///
    /// If `beta` is 0 or either argument is not finite.
    pub fn new(beta: f32, threshold: f32) -> Softplus {
        expect_finite("Softplus", "beta", beta);
        expect_finite("Softplus", "threshold", threshold);
        if beta == 0.0 {
            contract_violation(
                "Softplus",
                "beta must not be 0",
                format_args!("beta {beta}"),
            );
        }
        Softplus { beta, threshold }
    }
}

impl Default for Softplus {
    fn default() -> Self {
        Softplus {
            beta: 1.0,
            threshold: 20.0,
        }
    }
}

impl Module for Softplus {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.softplus(self.beta, self.threshold)
    }

    fn describe(&self) -> String {
        format!("Softplus(beta={}, threshold={})", self.beta, self.threshold)
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(
            self,
            Op::Softplus {
                beta: self.beta,
                threshold: self.threshold,
            },
            &[input],
        ))
    }
}

/// Hard swish `x · clamp(x + 3, 0, 6) / 6` (PyTorch's `nn.Hardswish`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hardswish;

impl Module for Hardswish {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.hardswish()
    }

    fn describe(&self) -> String {
        "Hardswish".to_string()
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::Hardswish, &[input]))
    }
}

/// Mish `x · tanh(softplus(x))` (PyTorch's `nn.Mish`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mish;

impl Module for Mish {
    no_params!();

    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input.mish()
    }

    fn describe(&self) -> String {
        "Mish".to_string()
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        Ok(graph.layer(self, Op::Mish, &[input]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    #[test]
    fn layers_apply_their_ops() {
        let x = Tensor::from_vec(vec![-2.0, 0.5], &[1, 2]).unwrap();
        assert_eq!(Relu.predict(&x).as_slice(), &[0.0, 0.5]);
        assert_eq!(LeakyRelu::new(0.5).predict(&x).as_slice(), &[-1.0, 0.5]);
        assert_eq!(Elu::default().predict(&x).as_slice()[0], (-2f32).exp_m1());
        assert_eq!(
            Sigmoid.predict(&x).as_slice()[1],
            1.0 / (1.0 + (-0.5f32).exp())
        );
        assert_eq!(Tanh.predict(&x).as_slice()[1], 0.5f32.tanh());
        assert!((Softmax::new(1).predict(&x).sum() - 1.0).abs() < 1e-6);
        assert!((LogSoftmax::new(1).predict(&x).map(f32::exp).sum() - 1.0).abs() < 1e-6);
        assert_eq!(
            Flatten::new().predict(&Tensor::zeros(&[2, 3, 4])).shape(),
            &[2, 12]
        );
        assert_eq!(
            Silu.predict(&x).as_slice()[1],
            0.5 / (1.0 + (-0.5f32).exp())
        );
        assert_eq!(
            Hardswish.predict(&x).as_slice(),
            &[-2.0 / 6.0, 0.5 * 3.5 / 6.0]
        );
        assert!((Mish.predict(&x).as_slice()[1] - 0.375_245_2).abs() < 1e-6);
        assert_eq!(
            Softplus::new(2.0, 20.0).predict(&x).as_slice()[1],
            1f32.exp().ln_1p() / 2.0
        );
        assert!((Gelu::default().predict(&x).as_slice()[1] - 0.345_731_1).abs() < 1e-6);
        assert_eq!(
            Gelu::new(GeluApproximation::Tanh).describe(),
            "Gelu(approximate=tanh)"
        );
    }
}
