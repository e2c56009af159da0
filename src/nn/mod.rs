//! Layers: the [`Module`] trait, [`Sequential`], and one layer family per file.

mod activation;
mod batch_norm;
mod classifier;
mod conv;
mod dense;
mod dropout;
pub mod functional;
mod graph;
mod pool;
mod residual;
mod sequential;
mod summary;

pub use activation::{
    Elu, Flatten, Gelu, GeluApproximation, Hardswish, LeakyRelu, LogSoftmax, Mish, Relu, Sigmoid,
    Silu, Softmax, Softplus, Tanh,
};
pub use batch_norm::{BatchNorm, BatchNorm1d, BatchNorm2d, then_batch_norm};
pub use classifier::{Classifier, Prediction, Preprocessing};
pub use conv::{Conv2d, Conv2dConfig, Padding, Pair};
pub use dense::Dense;
pub use dropout::Dropout;
pub use graph::{Graph, Node, Op, ValueId};
pub use pool::{
    AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d, MaxPool2d,
};
pub use residual::Residual;
pub use sequential::Sequential;
pub(crate) use sequential::forward_layers;
pub use summary::{Summary, SummaryRow, summary};

use crate::autograd::{Param, Tape, Var};
use crate::tensor::Tensor;

/// A layer or a network: a function of one input that records onto the input's tape, plus the
/// parameters and buffers it owns.
///
/// Parameter names are hierarchical and follow PyTorch's `state_dict` keys: a layer reports
/// `"weight"`, and a container prefixes its children's names (`"features.0.weight"`), so
/// weights round-trip with PyTorch.
///
/// The trait is object safe: `Box<dyn Module>` composes.
///
/// # Examples
///
/// A hand-written module:
///
/// ```
/// use striate::nn::Module;
/// use striate::{Param, Tape, Tensor, Var};
///
/// struct Scale {
///     factor: Param,
/// }
///
/// impl Module for Scale {
///     fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
///         input * input.tape().param(&self.factor)
///     }
///     fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
///         visitor("factor", &self.factor);
///     }
///     fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
///         visitor("factor", &mut self.factor);
///     }
/// }
///
/// let scale = Scale { factor: Param::new("factor", Tensor::full(&[1], 3.0)) };
/// assert_eq!(scale.num_params(), 1);
/// assert_eq!(scale.predict(&Tensor::ones(&[2])).as_slice(), &[3.0, 3.0]);
/// ```
pub trait Module: Send + Sync {
    /// Applies the module, recording onto the input's tape. Mode-dependent layers (dropout,
    /// batch norm) read the mode from the tape.
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t>;

    /// Visits every parameter with its hierarchical name, in a stable order.
    ///
    /// There is deliberately no default: a module states its parameters in both visitors (a
    /// module without parameters writes two empty bodies), so forgetting one is a compile
    /// error rather than a model that silently never trains. Optimizers also check at every
    /// step that both visitors list the same parameters in the same order.
    fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param));

    /// Visits every parameter mutably with its hierarchical name, in the same order as
    /// [`Module::visit_params`]: optimizers update and loaders fill parameters through it.
    fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param));

    /// Visits every buffer (state that is saved but not trained, such as batch norm's running
    /// statistics) with its hierarchical name.
    fn visit_buffers(&self, _visitor: &mut dyn FnMut(&str, &Tensor)) {}

    /// Visits every buffer mutably, for loading saved state.
    fn visit_buffers_mut(&mut self, _visitor: &mut dyn FnMut(&str, &mut Tensor)) {}

    /// Applies the module followed by a ReLU in one fused pass, if it can (a convolution adds
    /// the activation to its output while it is in cache). [`Sequential`] calls this for a
    /// module followed by [`Relu`]; `None` (the default) means "run them separately".
    fn forward_then_relu<'t>(&self, _input: Var<'t>) -> Option<Var<'t>> {
        None
    }

    /// Whether this module is a plain ReLU, so a container may fuse it into the module before.
    fn is_relu(&self) -> bool {
        false
    }

    /// Applies the module, a ReLU and max pooling with window `pool` in one fused pass, if it
    /// can (a convolution pools each image's output while it is in cache, keeping only the pooled
    /// values and, in training, each window's argmax).
    /// [`Sequential`] calls this for a module followed by [`Relu`] and [`MaxPool2d`]; `None`
    /// (the default) means "run them separately".
    fn forward_then_relu_max_pool<'t>(
        &self,
        _input: Var<'t>,
        _pool: crate::kernels::pool::Pool2dSpec,
    ) -> Option<Var<'t>> {
        None
    }

    /// The window of this module if it is a plain max pooling, so a container may fuse it into
    /// the modules before.
    fn max_pool_window(&self) -> Option<crate::kernels::pool::Pool2dSpec> {
        None
    }

    /// Applies the module, batch norm `bn` and, when `relu`, a ReLU as one op, if it can: a
    /// [`Conv2d`] on an inference tape folds the batch norm into its weight and bias (as ONNX
    /// Runtime does when it loads a model) and adds the ReLU to its output in cache.
    /// [`Sequential`] calls this for a module followed by a [`BatchNorm`]; `None` (the
    /// default, and always when a gradient may be asked) means "run them separately".
    /// [`then_batch_norm`] runs either way.
    fn forward_then_batch_norm<'t>(
        &self,
        _input: Var<'t>,
        _bn: &BatchNorm,
        _relu: bool,
    ) -> Option<Var<'t>> {
        None
    }

    /// This module if it is a batch norm, so a container may fold it into the module before.
    fn as_batch_norm(&self) -> Option<&BatchNorm> {
        None
    }

    /// A one-line description for summaries, such as `Conv2d(1, 32, kernel_size=[3, 3])`.
    fn describe(&self) -> String {
        let full = std::any::type_name::<Self>();
        full.rsplit("::").next().unwrap_or(full).to_string()
    }

    /// The number of scalars in all parameters, trainable or frozen.
    fn num_params(&self) -> usize {
        let mut total = 0;
        self.visit_params(&mut |_, p| total += p.len());
        total
    }

    /// The number of scalars in parameters that are not frozen.
    fn num_trainable_params(&self) -> usize {
        let mut total = 0;
        self.visit_params(&mut |_, p| {
            if p.requires_grad() {
                total += p.len();
            }
        });
        total
    }

    /// Applies the module and appends its rows to a [`summary`]: one row for a layer; a
    /// container may override this to list its children instead.
    fn summarize<'t>(&self, input: Var<'t>, rows: &mut Vec<SummaryRow>) -> Var<'t> {
        let output = self.forward(input);
        rows.push(SummaryRow::traced(self, &input.shape(), output.shape()));
        output
    }

    /// Runs the module on an inference tape: no recording, dropout off, batch norm on running
    /// statistics.
    fn predict(&self, input: &Tensor) -> Tensor {
        let tape = Tape::inference();
        self.forward(tape.input(input.clone())).value()
    }

    /// Describes the module's inference computation on `input` as [`Graph`] nodes (for ONNX
    /// export and multiply-accumulate counts) and returns its output value. A layer adds its
    /// parameters with [`Graph::param`] and its op with [`Graph::layer`]; a container describes
    /// each child inside its name scope with [`Graph::child`].
    ///
    /// # Errors
    ///
    /// The default is [`crate::Error::Unsupported`] naming the module's type: a module that
    /// does not override it cannot be exported.
    fn build_graph(&self, _graph: &mut Graph, _input: ValueId) -> crate::Result<ValueId> {
        Err(crate::Error::unsupported(
            "graph export",
            format!("layer {}", std::any::type_name::<Self>()),
        ))
    }
}

impl<M: Module + ?Sized> Module for Box<M> {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        (**self).forward(input)
    }
    fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
        (**self).visit_params(visitor)
    }
    fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
        (**self).visit_params_mut(visitor)
    }
    fn visit_buffers(&self, visitor: &mut dyn FnMut(&str, &Tensor)) {
        (**self).visit_buffers(visitor)
    }
    fn visit_buffers_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Tensor)) {
        (**self).visit_buffers_mut(visitor)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn forward_then_relu<'t>(&self, input: Var<'t>) -> Option<Var<'t>> {
        (**self).forward_then_relu(input)
    }
    fn is_relu(&self) -> bool {
        (**self).is_relu()
    }
    fn forward_then_relu_max_pool<'t>(
        &self,
        input: Var<'t>,
        pool: crate::kernels::pool::Pool2dSpec,
    ) -> Option<Var<'t>> {
        (**self).forward_then_relu_max_pool(input, pool)
    }
    fn max_pool_window(&self) -> Option<crate::kernels::pool::Pool2dSpec> {
        (**self).max_pool_window()
    }
    fn forward_then_batch_norm<'t>(
        &self,
        input: Var<'t>,
        bn: &BatchNorm,
        relu: bool,
    ) -> Option<Var<'t>> {
        (**self).forward_then_batch_norm(input, bn, relu)
    }
    fn as_batch_norm(&self) -> Option<&BatchNorm> {
        (**self).as_batch_norm()
    }
    fn predict(&self, input: &Tensor) -> Tensor {
        (**self).predict(input)
    }
    fn summarize<'t>(&self, input: Var<'t>, rows: &mut Vec<SummaryRow>) -> Var<'t> {
        (**self).summarize(input, rows)
    }
    fn build_graph(&self, graph: &mut Graph, input: ValueId) -> crate::Result<ValueId> {
        (**self).build_graph(graph, input)
    }
}

/// Writes the two parameter visitors of a module that has no parameters, inside its
/// `impl Module` block.
macro_rules! no_params {
    () => {
        fn visit_params(&self, _: &mut dyn FnMut(&str, &$crate::Param)) {}
        fn visit_params_mut(&mut self, _: &mut dyn FnMut(&str, &mut $crate::Param)) {}
    };
}

pub(crate) use no_params;

/// Why `model`'s two parameter visitors disagree, if they do: [`Module::visit_params`] and
/// [`Module::visit_params_mut`] must list the same parameters (by id) in the same order, or an
/// optimizer would update a different set than the one saved, counted and checked.
///
/// Optimizers call it at every step, so the common case compares ids only.
pub(crate) fn visitor_disagreement(model: &mut dyn Module) -> Option<String> {
    let mut read = Vec::new();
    model.visit_params(&mut |_, p| read.push(p.id()));
    let (mut position, mut agree) = (0, true);
    model.visit_params_mut(&mut |_, p| {
        agree &= read.get(position) == Some(&p.id());
        position += 1;
    });
    if agree && position == read.len() {
        return None;
    }
    let describe = |names: Vec<String>| {
        let more = if names.len() > 4 { ", ..." } else { "" };
        format!(
            "{} [{}{more}]",
            names.len(),
            names[..names.len().min(4)].join(", ")
        )
    };
    let mut read_names = Vec::new();
    model.visit_params(&mut |name, _| read_names.push(name.to_string()));
    let mut written_names = Vec::new();
    model.visit_params_mut(&mut |name, _| written_names.push(name.to_string()));
    Some(format!(
        "visit_params lists {}, visit_params_mut lists {}",
        describe(read_names),
        describe(written_names)
    ))
}

/// Joins a container prefix and a child name: `join_name("features", "0.weight")` is
/// `"features.0.weight"`; an empty prefix adds nothing.
pub fn join_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Whether the hierarchical name `name` lies under `prefix`: the prefix must end at a name
/// boundary, so `"features"` and `"features."` select `"features.0.weight"`, `"1"` selects
/// `"1.weight"` but not `"10.weight"`, and the empty prefix selects every name. Parameter groups,
/// freezing and feature extraction all select names this way.
///
/// # Examples
///
/// ```
/// use striate::nn::name_has_prefix;
///
/// assert!(name_has_prefix("layer1.0.conv1.weight", "layer1"));
/// assert!(!name_has_prefix("layer10.weight", "layer1"));
/// assert!(name_has_prefix("fc.bias", ""));
/// ```
pub fn name_has_prefix(name: &str, prefix: &str) -> bool {
    match name.strip_prefix(prefix) {
        Some(rest) => {
            prefix.is_empty() || rest.is_empty() || prefix.ends_with('.') || rest.starts_with('.')
        }
        None => false,
    }
}
