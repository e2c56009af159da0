//! `Residual`: `activation(shortcut(x) + body(x))`.

use super::{Module, Sequential, join_name};
use crate::autograd::{Param, Var};
use crate::tensor::Tensor;

/// A residual block: `output = activation(shortcut(x) + body(x))`, where the shortcut is the
/// identity unless a projection is given (a 1x1 strided conv and batch norm when the body
/// changes the shape, as in ResNet). The activation defaults to ReLU.
///
/// Parameters are named `body.<i>.*` and `shortcut.<i>.*`.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::nn::{BatchNorm2d, Conv2dConfig, Module, Relu, Residual, Sequential};
/// use striate::Tensor;
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let body = Sequential::new()
///     .push(Conv2dConfig::new(8, 16, 3).stride(2).padding(1).bias(false).init(&mut rng))
///     .push(BatchNorm2d::new(16))
///     .push(Relu)
///     .push(Conv2dConfig::new(16, 16, 3).padding(1).bias(false).init(&mut rng))
///     .push(BatchNorm2d::new(16));
/// let projection = Sequential::new()
///     .push(Conv2dConfig::new(8, 16, 1).stride(2).bias(false).init(&mut rng))
///     .push(BatchNorm2d::new(16));
/// let block = Residual::new(body).with_shortcut(projection);
/// assert_eq!(block.predict(&Tensor::zeros(&[2, 8, 10, 10])).shape(), &[2, 16, 5, 5]);
/// ```
pub struct Residual {
    /// The residual function f.
    pub body: Sequential,
    /// The projection shortcut, if the body changes the shape.
    pub shortcut: Option<Sequential>,
    /// Applied to the sum; `None` leaves it linear.
    pub activation: Option<Box<dyn Module>>,
}

impl Residual {
    /// `relu(x + body(x))`.
    pub fn new(body: Sequential) -> Residual {
        Residual {
            body,
            shortcut: None,
            activation: Some(Box::new(super::Relu)),
        }
    }

    /// Replaces the identity shortcut with a projection.
    pub fn with_shortcut(mut self, shortcut: Sequential) -> Residual {
        self.shortcut = Some(shortcut);
        self
    }

    /// Replaces the activation applied to the sum (`None` for none).
    pub fn with_activation(mut self, activation: Option<Box<dyn Module>>) -> Residual {
        self.activation = activation;
        self
    }
}

impl Module for Residual {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        let skip = match &self.shortcut {
            Some(shortcut) => shortcut.forward(input),
            None => input,
        };
        let sum = self.body.forward(input) + skip;
        match &self.activation {
            Some(activation) => activation.forward(sum),
            None => sum,
        }
    }

    fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
        self.body
            .visit_params(&mut |name, p| visitor(&join_name("body", name), p));
        if let Some(shortcut) = &self.shortcut {
            shortcut.visit_params(&mut |name, p| visitor(&join_name("shortcut", name), p));
        }
    }

    fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
        self.body
            .visit_params_mut(&mut |name, p| visitor(&join_name("body", name), p));
        if let Some(shortcut) = &mut self.shortcut {
            shortcut.visit_params_mut(&mut |name, p| visitor(&join_name("shortcut", name), p));
        }
    }

    fn visit_buffers(&self, visitor: &mut dyn FnMut(&str, &Tensor)) {
        self.body
            .visit_buffers(&mut |name, b| visitor(&join_name("body", name), b));
        if let Some(shortcut) = &self.shortcut {
            shortcut.visit_buffers(&mut |name, b| visitor(&join_name("shortcut", name), b));
        }
    }

    fn visit_buffers_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Tensor)) {
        self.body
            .visit_buffers_mut(&mut |name, b| visitor(&join_name("body", name), b));
        if let Some(shortcut) = &mut self.shortcut {
            shortcut.visit_buffers_mut(&mut |name, b| visitor(&join_name("shortcut", name), b));
        }
    }

    fn describe(&self) -> String {
        format!(
            "Residual({} layers{})",
            self.body.len(),
            if self.shortcut.is_some() {
                ", projection"
            } else {
                ""
            }
        )
    }

    fn build_graph(
        &self,
        graph: &mut super::Graph,
        input: super::ValueId,
    ) -> crate::Result<super::ValueId> {
        let skip = match &self.shortcut {
            Some(shortcut) => graph.child("shortcut", shortcut, input)?,
            None => input,
        };
        let body = graph.child("body", &self.body, input)?;
        let sum = graph.apply(super::Op::Add, &[body, skip]);
        match &self.activation {
            Some(activation) => graph.child("activation", activation, sum),
            None => Ok(sum),
        }
    }
}
