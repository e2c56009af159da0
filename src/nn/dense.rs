//! `Dense`: a fully connected layer, `y = x · Wᵀ + b`.

use rand::Rng;

use super::{Graph, Module, Op, ValueId};
use crate::autograd::{Param, Var};
use crate::tensor::init::{pytorch_default_bias, pytorch_default_weight};

/// A fully connected layer (PyTorch's `nn.Linear`, Keras's `Dense`): `y = x · Wᵀ + b` with
/// weight `[out_features, in_features]`, initialised as PyTorch does
/// (`U(−1/√in, 1/√in)` for weight and bias).
///
/// # Shapes
///
/// Input `[..., in_features]`, output `[..., out_features]`.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::nn::{Dense, Module};
/// use striate::Tensor;
///
/// let layer = Dense::new(784, 10, &mut StdRng::seed_from_u64(0));
/// assert_eq!(layer.num_params(), 784 * 10 + 10);
/// assert_eq!(layer.predict(&Tensor::zeros(&[32, 784])).shape(), &[32, 10]);
/// ```
#[doc(alias = "Linear")]
#[derive(Clone, Debug)]
pub struct Dense {
    /// `[out_features, in_features]`.
    pub weight: Param,
    /// `[out_features]`, absent for a layer built without bias.
    pub bias: Option<Param>,
}

impl Dense {
    /// A layer with bias.
    pub fn new<R: Rng + ?Sized>(in_features: usize, out_features: usize, rng: &mut R) -> Dense {
        let shape = [out_features, in_features];
        Dense {
            weight: Param::new("weight", pytorch_default_weight(&shape, rng)),
            bias: Some(Param::new(
                "bias",
                pytorch_default_bias(out_features, &shape, rng),
            )),
        }
    }

    /// A layer without bias (before a batch norm, say).
    pub fn without_bias<R: Rng + ?Sized>(
        in_features: usize,
        out_features: usize,
        rng: &mut R,
    ) -> Dense {
        Dense {
            weight: Param::new(
                "weight",
                pytorch_default_weight(&[out_features, in_features], rng),
            ),
            bias: None,
        }
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl Module for Dense {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        let tape = input.tape();
        input.linear(
            tape.param(&self.weight),
            self.bias.as_ref().map(|b| tape.param(b)),
        )
    }

    fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
        visitor("weight", &self.weight);
        if let Some(bias) = &self.bias {
            visitor("bias", bias);
        }
    }

    fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
        visitor("weight", &mut self.weight);
        if let Some(bias) = &mut self.bias {
            visitor("bias", bias);
        }
    }

    fn describe(&self) -> String {
        format!(
            "Dense({}, {}{})",
            self.in_features(),
            self.out_features(),
            if self.bias.is_some() {
                ""
            } else {
                ", bias=false"
            }
        )
    }

    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        let mut inputs = vec![input, graph.param("weight", &self.weight)];
        if let Some(bias) = &self.bias {
            inputs.push(graph.param("bias", bias));
        }
        Ok(graph.layer(self, Op::Dense, &inputs))
    }
}
