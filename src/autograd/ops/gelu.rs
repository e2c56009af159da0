//! `gelu` and `gelu_tanh`: the Gaussian error linear unit, exact and in its tanh approximation.

use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI};

use super::unary::unary;
use crate::autograd::var::Var;
use crate::kernels::special::erfc;

/// `√(2/π)`, the scale inside the tanh approximation.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
const KAPPA: f32 = 0.044_715;

/// `x·Φ(x)` in f64, `Φ(x) = erfc(-x/√2)/2` so the negative tail keeps its relative accuracy.
/// `+∞` gives NaN, as PyTorch's vectorised kernel does for every tensor of more than one
/// element (`-∞` gives `-∞·0 = NaN` anyway).
fn gelu_exact(x: f32) -> f32 {
    if x == f32::INFINITY {
        return f32::NAN;
    }
    let x = x as f64;
    (0.5 * x * erfc(-x * FRAC_1_SQRT_2)) as f32
}

/// `Φ(x) + x·φ(x)`, in f64; NaN at `±∞` (`∞·0`), as PyTorch's `gelu_backward`.
fn gelu_exact_derivative(x: f32) -> f32 {
    let x = x as f64;
    let pdf = (-0.5 * x * x).exp() * FRAC_2_SQRT_PI * FRAC_1_SQRT_2 * 0.5;
    (0.5 * erfc(-x * FRAC_1_SQRT_2) + x * pdf) as f32
}

/// `x/2 · (1 + tanh(√(2/π)(x + κx³)))`, in f32 in PyTorch's order of operations.
fn gelu_tanh_value(x: f32) -> f32 {
    let inner = SQRT_2_OVER_PI * (x + KAPPA * x * x * x);
    0.5 * x * (1.0 + inner.tanh())
}

/// The derivative of [`gelu_tanh_value`], PyTorch's `gelu_backward(approximate="tanh")`
/// evaluated in f64: in f32 `1 + tanh u` and `1 - tanh² u` cancel to nothing near the saturated
/// tails (an absolute error of 1e-6 at `x = -5`). Where PyTorch's f32 `x²` overflows
/// (`|x| > 1.8e19`, and at `±∞`) its gradient is `∞·0 = NaN`, and so is this one.
fn gelu_tanh_derivative(x: f32) -> f32 {
    if !(x * x).is_finite() {
        return f32::NAN;
    }
    let (x, beta, kappa) = (x as f64, SQRT_2_OVER_PI as f64, KAPPA as f64);
    let x_sq = x * x;
    let tanh_inner = (beta * (x + kappa * x_sq * x)).tanh();
    let left_derivative = 0.5 * (1.0 + tanh_inner);
    let inner_derivative = beta * (1.0 + 3.0 * kappa * x_sq);
    (left_derivative + 0.5 * x * (1.0 - tanh_inner * tanh_inner) * inner_derivative) as f32
}

impl<'t> Var<'t> {
    /// The Gaussian error linear unit `x·Φ(x) = x/2 · (1 + erf(x/√2))`, elementwise
    /// (PyTorch's `gelu(x)`, `approximate="none"`). `erf` is computed in f64 (see
    /// [`crate::kernels::special`]), so values agree with PyTorch's to f32 rounding.
    ///
    /// `+∞` gives NaN, as PyTorch does for any tensor of more than one element (its
    /// one-element path returns `+∞`); `-∞` gives NaN (`-∞·0`).
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let y = tape.input(Tensor::from_vec(vec![-1.0, 0.0, 1.0], &[3]).unwrap()).gelu();
    /// let expected = [-0.158_655_26, 0.0, 0.841_344_7];
    /// assert!(y.value().as_slice().iter().zip(expected).all(|(y, e)| (y - e).abs() < 1e-7));
    /// ```
    pub fn gelu(self) -> Var<'t> {
        // d/dx x·Φ(x) = Φ(x) + x·φ(x)
        unary(self, "gelu", gelu_exact, |x, _| gelu_exact_derivative(x))
    }

    /// GELU in its tanh approximation `x/2 · (1 + tanh(√(2/π)(x + 0.044715·x³)))`, elementwise
    /// (PyTorch's `gelu(x, approximate="tanh")`), computed in f32 as PyTorch does.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let y = tape.input(Tensor::from_vec(vec![-1.0, 0.0, 1.0], &[3]).unwrap()).gelu_tanh();
    /// let expected = [-0.158_808, 0.0, 0.841_192];
    /// assert!(y.value().as_slice().iter().zip(expected).all(|(y, e)| (y - e).abs() < 1e-6));
    /// ```
    pub fn gelu_tanh(self) -> Var<'t> {
        // d/dx = (1 + tanh u)/2 + x/2 · (1 - tanh² u) · √(2/π)(1 + 3κx²), u = √(2/π)(x + κx³)
        unary(self, "gelu_tanh", gelu_tanh_value, |x, _| {
            gelu_tanh_derivative(x)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{grad_of, t};
    use crate::gradcheck;

    #[test]
    fn value_and_gradient_by_hand() {
        // Φ(1) = 0.841344746, φ(1) = 0.241970725
        let (y, g) = grad_of(t(&[1.0, -1.0, 0.0]), |x| x.gelu());
        let (phi, pdf) = (
            0.841_344_746_068_542_9_f64 as f32,
            0.241_970_724_519_143_37_f64 as f32,
        );
        assert!((y.as_slice()[0] - phi).abs() < 1e-7);
        assert!((y.as_slice()[1] + (1.0 - phi)).abs() < 1e-7);
        assert_eq!(y.as_slice()[2], 0.0);
        assert!((g.as_slice()[0] - (phi + pdf)).abs() < 1e-7);
        assert!((g.as_slice()[1] - (1.0 - phi - pdf)).abs() < 1e-7);
        assert_eq!(g.as_slice()[2], 0.5);
    }

    #[test]
    fn tanh_form_by_hand() {
        // u(1) = √(2/π)·1.044715, tanh u = 0.6823836
        let (y, g) = grad_of(t(&[1.0, 0.0]), |x| x.gelu_tanh());
        let u = (2.0f32 / std::f32::consts::PI).sqrt() * 1.044_715;
        assert!((y.as_slice()[0] - 0.5 * (1.0 + u.tanh())).abs() < 1e-7);
        let expected = 0.5 * (1.0 + u.tanh())
            + 0.5 * (1.0 - u.tanh().powi(2)) * (2.0f32 / std::f32::consts::PI).sqrt() * 1.134_145;
        assert!((g.as_slice()[0] - expected).abs() < 1e-6);
        assert_eq!((y.as_slice()[1], g.as_slice()[1]), (0.0, 0.5));
    }

    #[test]
    fn far_negative_tail_keeps_its_relative_accuracy() {
        // x·Φ(x) at x = -10: -10 · 7.6198530e-24
        let (y, _) = grad_of(t(&[-10.0]), |x| x.gelu());
        assert!((y.as_slice()[0] / -7.619_853e-23 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn gradcheck_gelu() {
        let x = t(&[-3.0, -1.2, -0.3, 0.2, 0.9, 2.5]);
        gradcheck(std::slice::from_ref(&x), |v| v[0].gelu()).assert_passed();
        gradcheck(&[x], |v| v[0].gelu_tanh()).assert_passed();
    }
}
