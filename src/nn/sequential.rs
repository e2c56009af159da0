//! `Sequential`: modules applied one after another.

use super::{Module, join_name};
use crate::autograd::{Param, Var};
use crate::tensor::Tensor;

/// Modules applied in order, each to the output of the previous one. Children are named by
/// their index, as in PyTorch (`"0.weight"`, `"2.bias"`).
///
/// # Examples
///
/// ```
/// use striate::nn::{Module, Sequential};
/// use striate::{Param, Tensor, Var};
///
/// struct Double;
/// impl Module for Double {
///     fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
///         input * 2.0
///     }
///     // No parameters: both visitors are empty (neither has a default, so none is forgotten).
///     fn visit_params(&self, _: &mut dyn FnMut(&str, &Param)) {}
///     fn visit_params_mut(&mut self, _: &mut dyn FnMut(&str, &mut Param)) {}
/// }
///
/// let net = Sequential::new().push(Double).push(Double);
/// assert_eq!(net.predict(&Tensor::ones(&[1])).as_slice(), &[4.0]);
/// ```
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// An empty sequence (the identity).
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends a module (builder style).
    pub fn push(mut self, module: impl Module + 'static) -> Sequential {
        self.layers.push(Box::new(module));
        self
    }

    /// Appends a boxed module.
    pub fn push_boxed(&mut self, module: Box<dyn Module>) {
        self.layers.push(module);
    }

    /// The modules, in order.
    pub fn layers(&self) -> &[Box<dyn Module>] {
        &self.layers
    }

    /// The modules, mutably (to replace a head, say).
    pub fn layers_mut(&mut self) -> &mut Vec<Box<dyn Module>> {
        &mut self.layers
    }

    /// The number of modules.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no modules.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    /// Applies the layers in order. A layer followed by a [`BatchNorm`](super::BatchNorm) (and a
    /// [`Relu`](super::Relu)) may run fused with it ([`Module::forward_then_batch_norm`]: a
    /// convolution at inference folds the batch norm in), one followed by a ReLU too
    /// ([`Module::forward_then_relu`]), and with a [`MaxPool2d`](super::MaxPool2d) after that
    /// ([`Module::forward_then_relu_max_pool`]): same result up to rounding, fewer passes over
    /// the activations.
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        let layers: Vec<&dyn Module> = self.layers.iter().map(|l| l.as_ref()).collect();
        forward_layers(&layers, input)
    }

    fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
        for (i, layer) in self.layers.iter().enumerate() {
            layer.visit_params(&mut |name, p| visitor(&join_name(&i.to_string(), name), p));
        }
    }

    fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.visit_params_mut(&mut |name, p| visitor(&join_name(&i.to_string(), name), p));
        }
    }

    fn visit_buffers(&self, visitor: &mut dyn FnMut(&str, &Tensor)) {
        for (i, layer) in self.layers.iter().enumerate() {
            layer.visit_buffers(&mut |name, b| visitor(&join_name(&i.to_string(), name), b));
        }
    }

    fn visit_buffers_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Tensor)) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.visit_buffers_mut(&mut |name, b| visitor(&join_name(&i.to_string(), name), b));
        }
    }

    fn describe(&self) -> String {
        format!("Sequential({} layers)", self.layers.len())
    }

    fn summarize<'t>(&self, input: Var<'t>, rows: &mut Vec<super::SummaryRow>) -> Var<'t> {
        self.layers.iter().fold(input, |x, layer| {
            let output = layer.forward(x);
            let row = super::SummaryRow::traced(layer.as_ref(), &x.shape(), output.shape());
            rows.push(row);
            output
        })
    }

    fn build_graph(
        &self,
        graph: &mut super::Graph,
        input: super::ValueId,
    ) -> crate::Result<super::ValueId> {
        let mut x = input;
        for (i, layer) in self.layers.iter().enumerate() {
            x = graph.child(&i.to_string(), layer.as_ref(), x)?;
        }
        Ok(x)
    }
}

/// Applies `layers` in order, fusing where a layer can: one followed by a
/// [`BatchNorm`](super::BatchNorm) (and a [`Relu`](super::Relu)) through
/// [`Module::forward_then_batch_norm`] (a convolution at inference folds the batch norm in);
/// a batch norm followed by a ReLU through [`BatchNorm::forward_relu`](super::BatchNorm::forward_relu)
/// (one op in training); one followed by a ReLU through [`Module::forward_then_relu`], and by a
/// [`MaxPool2d`](super::MaxPool2d) after that through [`Module::forward_then_relu_max_pool`].
/// Same result up to rounding, fewer passes over the activations. The one loop of
/// [`Sequential`] and of the zoo's networks run as stages.
pub(crate) fn forward_layers<'t>(layers: &[&dyn Module], input: Var<'t>) -> Var<'t> {
    let mut x = input;
    let mut i = 0;
    while i < layers.len() {
        let is_relu = |j: usize| layers.get(j).is_some_and(|next| next.is_relu());
        if let Some(bn) = layers.get(i + 1).and_then(|next| next.as_batch_norm()) {
            let relu = is_relu(i + 2);
            if let Some(y) = layers[i].forward_then_batch_norm(x, bn, relu) {
                x = y;
                i += 2 + usize::from(relu);
                continue;
            }
        }
        if let Some(bn) = layers[i].as_batch_norm()
            && is_relu(i + 1)
        {
            x = bn.forward_relu(x);
            i += 2;
            continue;
        }
        let then_pool = layers.get(i + 2).and_then(|next| next.max_pool_window());
        if is_relu(i + 1)
            && let Some(pool) = then_pool
            && let Some(y) = layers[i].forward_then_relu_max_pool(x, pool)
        {
            x = y;
            i += 3;
            continue;
        }
        if is_relu(i + 1)
            && let Some(y) = layers[i].forward_then_relu(x)
        {
            x = y;
            i += 2;
            continue;
        }
        x = layers[i].forward(x);
        i += 1;
    }
    x
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::Tape;
    use crate::nn::{Conv2dConfig, MaxPool2d, Relu};

    #[test]
    fn conv_followed_by_relu_runs_fused_with_the_same_result() {
        let mut rng = StdRng::seed_from_u64(0);
        let conv = Conv2dConfig::new(2, 3, 3).padding(1).init(&mut rng);
        let net = Sequential::new().push(conv.clone()).push(Relu);
        let x = Tensor::rand_uniform(&[2, 2, 5, 5], -1.0, 1.0, &mut rng);

        let tape = Tape::training();
        let fused = net.forward(tape.input(x.clone()));
        // The fused pass records one node for conv + ReLU (input, weight, bias, output).
        assert_eq!(tape.len(), 4);
        let fused_grads = fused.sum().backward();

        let tape = Tape::training();
        let separate = conv.forward(tape.input(x)).relu();
        assert_eq!(fused.value(), separate.value());
        let separate_grads = separate.sum().backward();
        for p in [&conv.weight, conv.bias.as_ref().unwrap()] {
            assert!(fused_grads.get(p).unwrap().all_close(
                separate_grads.get(p).unwrap(),
                1e-6,
                1e-6
            ));
        }
    }

    #[test]
    fn conv_relu_max_pool_runs_fused_with_the_same_result() {
        let mut rng = StdRng::seed_from_u64(1);
        let conv = Conv2dConfig::new(3, 4, 3).padding(1).init(&mut rng);
        let net = Sequential::new()
            .push(conv.clone())
            .push(Relu)
            .push(MaxPool2d::new(2));
        let x = Tensor::rand_uniform(&[3, 3, 9, 8], -1.0, 1.0, &mut rng);

        let tape = Tape::inference();
        let fused = net.forward(tape.input(x.clone()));
        // One node for the whole block: input, weight, bias, output.
        assert_eq!(tape.len(), 4);
        assert_eq!(fused.shape(), vec![3, 4, 4, 4]);

        // Training records the same fused block (with each window's argmax); same values.
        let tape = Tape::training();
        let recorded = net.forward(tape.input(x.clone()));
        assert_eq!(tape.len(), 4);
        assert_eq!(fused.value(), recorded.value());
        let tape = Tape::inference();
        let separate = conv
            .forward(tape.input(x))
            .relu()
            .max_pool2d(MaxPool2d::new(2).spec);
        assert_eq!(fused.value(), separate.value());
        assert!(recorded.sum().backward().get(&conv.weight).is_some());
    }
}
