//! Weight initialisers: Kaiming/He, Xavier/Glorot, and PyTorch's defaults for linear and conv
//! layers. Each draws from an explicit `&mut impl Rng`, so a seed fixes the weights.
//!
//! Fans follow PyTorch's `_calculate_fan_in_and_fan_out`: for a weight `[out, in, k...]`,
//! `fan_in = in * prod(k)` and `fan_out = out * prod(k)`.

use rand::Rng;

use super::Tensor;
use super::check::{contract_violation, shape_str};

/// Which fan scales the variance: `FanIn` preserves activations' variance forward, `FanOut`
/// preserves gradients' variance backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    /// Scale by the number of inputs of each unit.
    FanIn,
    /// Scale by the number of outputs of each unit.
    FanOut,
}

/// The nonlinearity that follows a layer, which sets the recommended gain
/// (PyTorch's `torch.nn.init.calculate_gain`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Nonlinearity {
    /// Identity, convolution or sigmoid: gain 1.
    Linear,
    /// Sigmoid: gain 1.
    Sigmoid,
    /// Tanh: gain 5/3.
    Tanh,
    /// ReLU: gain √2.
    Relu,
    /// Leaky ReLU with this negative slope: gain √(2 / (1 + slope²)).
    LeakyRelu(f32),
}

impl Nonlinearity {
    /// The gain PyTorch recommends for this nonlinearity.
    pub fn gain(self) -> f32 {
        match self {
            Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
            Nonlinearity::Tanh => 5.0 / 3.0,
            Nonlinearity::Relu => 2f32.sqrt(),
            Nonlinearity::LeakyRelu(slope) => (2.0 / (1.0 + slope * slope)).sqrt(),
        }
    }
}

/// `(fan_in, fan_out)` of a weight shaped `[out, in, k...]`.
///
/// # Panics
///
/// If the shape has fewer than two axes.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    if shape.len() < 2 {
        contract_violation(
            "init",
            "fans need a weight with at least 2 axes [out, in, ...]",
            format_args!("shape {}", shape_str(shape)),
        );
    }
    let receptive: usize = shape[2..].iter().product();
    (shape[1] * receptive, shape[0] * receptive)
}

fn fan(shape: &[usize], mode: FanMode) -> f32 {
    let (fan_in, fan_out) = fans(shape);
    match mode {
        FanMode::FanIn => fan_in as f32,
        FanMode::FanOut => fan_out as f32,
    }
}

/// Kaiming/He uniform: `U(-b, b)` with `b = gain · √(3 / fan)`.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::tensor::init::{kaiming_uniform, FanMode, Nonlinearity};
///
/// let w = kaiming_uniform(&[64, 32, 3, 3], FanMode::FanIn, Nonlinearity::Relu, &mut StdRng::seed_from_u64(0));
/// let bound = 2f32.sqrt() * (3.0 / (32.0 * 9.0f32)).sqrt();
/// assert!(w.as_slice().iter().all(|x| x.abs() <= bound));
/// ```
pub fn kaiming_uniform<R: Rng + ?Sized>(
    shape: &[usize],
    mode: FanMode,
    nonlinearity: Nonlinearity,
    rng: &mut R,
) -> Tensor {
    let bound = nonlinearity.gain() * (3.0 / fan(shape, mode)).sqrt();
    Tensor::rand_uniform(shape, -bound, bound, rng)
}

/// Kaiming/He normal: `N(0, σ²)` with `σ = gain / √fan`.
pub fn kaiming_normal<R: Rng + ?Sized>(
    shape: &[usize],
    mode: FanMode,
    nonlinearity: Nonlinearity,
    rng: &mut R,
) -> Tensor {
    let std = nonlinearity.gain() / fan(shape, mode).sqrt();
    Tensor::rand_normal(shape, 0.0, std, rng)
}

/// Xavier/Glorot uniform: `U(-b, b)` with `b = gain · √(6 / (fan_in + fan_out))`.
pub fn xavier_uniform<R: Rng + ?Sized>(shape: &[usize], gain: f32, rng: &mut R) -> Tensor {
    let (fan_in, fan_out) = fans(shape);
    let bound = gain * (6.0 / (fan_in + fan_out) as f32).sqrt();
    Tensor::rand_uniform(shape, -bound, bound, rng)
}

/// Xavier/Glorot normal: `N(0, σ²)` with `σ = gain · √(2 / (fan_in + fan_out))`.
pub fn xavier_normal<R: Rng + ?Sized>(shape: &[usize], gain: f32, rng: &mut R) -> Tensor {
    let (fan_in, fan_out) = fans(shape);
    let std = gain * (2.0 / (fan_in + fan_out) as f32).sqrt();
    Tensor::rand_normal(shape, 0.0, std, rng)
}

/// PyTorch's default weight init for `nn.Linear` and `nn.Conv2d`:
/// `kaiming_uniform_(a = √5)`, which is `U(-1/√fan_in, 1/√fan_in)`.
pub fn pytorch_default_weight<R: Rng + ?Sized>(shape: &[usize], rng: &mut R) -> Tensor {
    kaiming_uniform(
        shape,
        FanMode::FanIn,
        Nonlinearity::LeakyRelu(5f32.sqrt()),
        rng,
    )
}

/// PyTorch's default bias init for `nn.Linear` and `nn.Conv2d`: `U(-1/√fan_in, 1/√fan_in)`,
/// where `fan_in` comes from the layer's weight shape.
pub fn pytorch_default_bias<R: Rng + ?Sized>(
    bias_len: usize,
    weight_shape: &[usize],
    rng: &mut R,
) -> Tensor {
    let (fan_in, _) = fans(weight_shape);
    let bound = if fan_in > 0 {
        1.0 / (fan_in as f32).sqrt()
    } else {
        0.0
    };
    if bound == 0.0 {
        return Tensor::zeros(&[bias_len]);
    }
    Tensor::rand_uniform(&[bias_len], -bound, bound, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn std_of(t: &Tensor) -> f32 {
        let mean = t.mean();
        t.map(|x| (x - mean) * (x - mean)).mean().sqrt()
    }

    #[test]
    fn fans_of_linear_and_conv() {
        assert_eq!(fans(&[10, 784]), (784, 10));
        assert_eq!(fans(&[64, 32, 3, 3]), (288, 576));
    }

    #[test]
    fn pytorch_default_bound_is_inverse_sqrt_fan_in() {
        let mut rng = StdRng::seed_from_u64(3);
        let w = pytorch_default_weight(&[128, 3136], &mut rng);
        let bound = 1.0 / 3136f32.sqrt();
        let max = w.as_slice().iter().fold(0f32, |m, &x| m.max(x.abs()));
        assert!(
            max <= bound * 1.0001 && max > bound * 0.99,
            "max {max} bound {bound}"
        );
        let b = pytorch_default_bias(128, &[128, 3136], &mut rng);
        assert!(b.as_slice().iter().all(|x| x.abs() <= bound));
    }

    #[test]
    fn standard_deviations_match_formulas() {
        let mut rng = StdRng::seed_from_u64(4);
        let shape = [256, 128, 3, 3];
        let kn = kaiming_normal(&shape, FanMode::FanIn, Nonlinearity::Relu, &mut rng);
        let expected = (2.0 / (128.0 * 9.0f32)).sqrt();
        assert!((std_of(&kn) / expected - 1.0).abs() < 0.01);
        let ku = kaiming_uniform(&shape, FanMode::FanOut, Nonlinearity::Relu, &mut rng);
        let expected = (2.0 / (256.0 * 9.0f32)).sqrt();
        assert!((std_of(&ku) / expected - 1.0).abs() < 0.01);
        let xu = xavier_uniform(&shape, 1.0, &mut rng);
        let expected = (2.0 / (384.0 * 9.0f32)).sqrt();
        assert!((std_of(&xu) / expected - 1.0).abs() < 0.01);
        let xn = xavier_normal(&shape, 2.0, &mut rng);
        assert!((std_of(&xn) / (2.0 * expected) - 1.0).abs() < 0.01);
    }
}
