//! `Graph`: a module's computation written out as named operations on named values, for
//! exporters ([`crate::onnx`]) and analyses (multiply-accumulates in [`super::summary`]).
//!
//! A module describes itself with [`Module::build_graph`](super::Module::build_graph): it adds
//! its parameters as named initializers and appends one [`Op`] per layer, inside the name scope
//! its container opened for it, so initializer names are the module's parameter names
//! (`features.0.weight`). Shapes are tracked for one example input: a layer's output shape is
//! the one striate itself produces for it.

use super::{GeluApproximation, Module};
use crate::autograd::{Param, Tape};
use crate::kernels::conv::Conv2dSpec;
use crate::kernels::pool::{AvgDivisor, Pool2dSpec};
use crate::tensor::Tensor;

/// A value (tensor) in a [`Graph`]: the graph input, an initializer or a node's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ValueId(usize);

/// One operation of a [`Graph`], with its attributes. Inputs are listed on the [`Node`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Op {
    /// 2-D convolution; inputs `x, weight[, bias]`.
    Conv2d(Conv2dSpec),
    /// `x · Wᵀ + b` on a 2-D input; inputs `x, weight[, bias]`.
    Dense,
    /// Batch normalisation with running statistics (inference form); inputs
    /// `x, scale, bias, running_mean, running_var`.
    BatchNorm {
        /// Added to the variance.
        eps: f32,
    },
    /// Max pooling.
    MaxPool2d(Pool2dSpec),
    /// Average pooling.
    AvgPool2d(Pool2dSpec, AvgDivisor),
    /// Adaptive average pooling to a fixed output size.
    AdaptiveAvgPool2d([usize; 2]),
    /// Adaptive max pooling to a fixed output size.
    AdaptiveMaxPool2d([usize; 2]),
    /// Mean over each channel's plane: `[N, C, H, W] -> [N, C]`.
    GlobalAvgPool2d,
    /// Maximum over each channel's plane: `[N, C, H, W] -> [N, C]`.
    GlobalMaxPool2d,
    /// Merges the axes from `start_axis` on into one.
    Flatten {
        /// The first merged axis.
        start_axis: usize,
    },
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x >= 0`, else `negative_slope · x`.
    LeakyRelu(f32),
    /// `x` for `x > 0`, else `alpha · (eˣ - 1)`.
    Elu(f32),
    /// `1 / (1 + e⁻ˣ)`.
    Sigmoid,
    /// `tanh x`.
    Tanh,
    /// Softmax along an axis.
    Softmax(usize),
    /// Log-softmax along an axis.
    LogSoftmax(usize),
    /// `x·Φ(x)`, exact or in its tanh approximation.
    Gelu(GeluApproximation),
    /// `x·σ(x)`.
    Silu,
    /// `ln(1 + e^(β·x)) / β`, and `x` where `β·x > threshold`.
    Softplus {
        /// Sharpness.
        beta: f32,
        /// Above `β·x > threshold` the output is `x`.
        threshold: f32,
    },
    /// `x · clamp(x + 3, 0, 6) / 6`.
    Hardswish,
    /// `x · tanh(softplus(x))`.
    Mish,
    /// The input unchanged (dropout at inference).
    Identity,
    /// Elementwise sum of two inputs of the same shape.
    Add,
    /// Concatenation of the inputs along an axis.
    Concat(usize),
}

impl Op {
    /// The operation's name, as used for node names (`Conv2d`, `Relu`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "Conv2d",
            Op::Dense => "Dense",
            Op::BatchNorm { .. } => "BatchNorm",
            Op::MaxPool2d(_) => "MaxPool2d",
            Op::AvgPool2d(..) => "AvgPool2d",
            Op::AdaptiveAvgPool2d(_) => "AdaptiveAvgPool2d",
            Op::AdaptiveMaxPool2d(_) => "AdaptiveMaxPool2d",
            Op::GlobalAvgPool2d => "GlobalAvgPool2d",
            Op::GlobalMaxPool2d => "GlobalMaxPool2d",
            Op::Flatten { .. } => "Flatten",
            Op::Relu => "Relu",
            Op::LeakyRelu(_) => "LeakyRelu",
            Op::Elu(_) => "Elu",
            Op::Sigmoid => "Sigmoid",
            Op::Tanh => "Tanh",
            Op::Softmax(_) => "Softmax",
            Op::LogSoftmax(_) => "LogSoftmax",
            Op::Gelu(_) => "Gelu",
            Op::Silu => "Silu",
            Op::Softplus { .. } => "Softplus",
            Op::Hardswish => "Hardswish",
            Op::Mish => "Mish",
            Op::Identity => "Identity",
            Op::Add => "Add",
            Op::Concat(_) => "Concat",
        }
    }
}

/// One operation applied to values of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// What is computed.
    pub op: Op,
    /// A unique hierarchical name: the module's scope (`layer1.0.conv1`), or the scope and the
    /// op for an op a block applies itself (`layer1.0.relu`).
    pub name: String,
    /// The operands, in the order [`Op`] documents.
    pub inputs: Vec<ValueId>,
    /// The result.
    pub output: ValueId,
}

/// A module's computation as a list of [`Node`]s in execution order, with its parameters and
/// buffers as named initializers and the shape of every value for one example input.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::nn::{Dense, Graph, Module, Op, Relu, Sequential};
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let mlp = Sequential::new().push(Dense::new(4, 8, &mut rng)).push(Relu);
/// let graph = Graph::trace(&mlp, &[2, 4]).unwrap();
/// let ops: Vec<&Op> = graph.nodes().iter().map(|n| &n.op).collect();
/// assert_eq!(ops, [&Op::Dense, &Op::Relu]);
/// assert_eq!(graph.initializers()[0].0, "0.weight");
/// assert_eq!(graph.shape(graph.output()), &[2, 8]);
/// ```
pub struct Graph {
    shapes: Vec<Vec<usize>>,
    value_names: Vec<String>,
    nodes: Vec<Node>,
    initializers: Vec<(String, ValueId, Tensor)>,
    /// The initializers that are parameters (not buffers or constants).
    params: std::collections::HashSet<ValueId>,
    scope: Vec<String>,
    input: ValueId,
    output: Option<ValueId>,
    used_names: std::collections::HashSet<String>,
}

impl Graph {
    /// A graph with one input of `input_shape`, ready for [`Module::build_graph`]; most
    /// callers want [`Graph::trace`].
    pub fn new(input_shape: &[usize]) -> Graph {
        let mut graph = Graph {
            shapes: Vec::new(),
            value_names: Vec::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            params: Default::default(),
            scope: Vec::new(),
            input: ValueId(0),
            output: None,
            used_names: Default::default(),
        };
        graph.input = graph.new_value("input".into(), input_shape.to_vec());
        graph
    }

    /// Describes `model` applied to an input of `input_shape`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Unsupported`] naming the first layer that cannot describe itself.
    ///
    /// # Panics
    ///
    /// If the model rejects the input shape (with the failing op's message).
    pub fn trace(model: &(impl Module + ?Sized), input_shape: &[usize]) -> crate::Result<Graph> {
        let mut graph = Graph::new(input_shape);
        let input = graph.input;
        let output = model.build_graph(&mut graph, input)?;
        graph.output = Some(output);
        Ok(graph)
    }

    /// The graph's input.
    pub fn input(&self) -> ValueId {
        self.input
    }

    /// The graph's output (the input until a model was traced).
    pub fn output(&self) -> ValueId {
        self.output.unwrap_or(self.input)
    }

    /// The nodes, in execution order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The parameters and buffers: full name, value id and tensor, in the order first used.
    pub fn initializers(&self) -> Vec<(&str, ValueId, &Tensor)> {
        self.initializers
            .iter()
            .map(|(name, id, t)| (name.as_str(), *id, t))
            .collect()
    }

    /// The shape of a value for the example input.
    pub fn shape(&self, value: ValueId) -> &[usize] {
        &self.shapes[value.0]
    }

    /// The unique name of a value: an initializer's parameter name, a node's name for its
    /// output, `"input"` for the input.
    pub fn value_name(&self, value: ValueId) -> &str {
        &self.value_names[value.0]
    }

    /// The current name scope joined with `name` (the scope alone for an empty `name`).
    pub fn scoped_name(&self, name: &str) -> String {
        let mut parts: Vec<&str> = self.scope.iter().map(String::as_str).collect();
        if !name.is_empty() {
            parts.push(name);
        }
        parts.join(".")
    }

    /// Describes a child module inside the name scope `name`, as containers do for each child:
    /// its parameters are named `name.<param>`.
    ///
    /// # Errors
    ///
    /// The child's [`Module::build_graph`] error.
    pub fn child(
        &mut self,
        name: &str,
        module: &(impl Module + ?Sized),
        input: ValueId,
    ) -> crate::Result<ValueId> {
        let pushed = !name.is_empty();
        if pushed {
            self.scope.push(name.to_string());
        }
        let result = module.build_graph(self, input);
        if pushed {
            self.scope.pop();
        }
        result
    }

    /// Adds a parameter as an initializer named by the current scope and `name`.
    pub fn param(&mut self, name: &str, param: &Param) -> ValueId {
        let id = self.constant(name, param.value().clone());
        self.params.insert(id);
        id
    }

    /// Whether a value is a parameter (added with [`Graph::param`]).
    pub fn is_param(&self, value: ValueId) -> bool {
        self.params.contains(&value)
    }

    /// The multiply-accumulates of one node, counted as torchinfo counts them: for a
    /// convolution, its parameter scalars (weight and bias) times the output positions
    /// (batch × height × width); for any other layer with parameters (dense, batch norm),
    /// its parameter scalars times the batch size; nothing for layers without parameters.
    pub fn node_macs(&self, node: &Node) -> u64 {
        let params: u64 = node
            .inputs
            .iter()
            .filter(|&&v| self.is_param(v))
            .map(|&v| self.shape(v).iter().product::<usize>() as u64)
            .sum();
        let output = self.shape(node.output);
        let positions = match node.op {
            Op::Conv2d(_) => output[0] * output[2..].iter().product::<usize>(),
            _ => output[0],
        };
        params * positions as u64
    }

    /// The multiply-accumulates of the whole graph ([`Graph::node_macs`] summed).
    pub fn macs(&self) -> u64 {
        self.nodes.iter().map(|n| self.node_macs(n)).sum()
    }

    /// Adds a constant (a buffer, or a tensor an op needs) as an initializer named by the
    /// current scope and `name`.
    pub fn constant(&mut self, name: &str, value: Tensor) -> ValueId {
        let full = self.scoped_name(name);
        if let Some((_, id, _)) = self.initializers.iter().find(|(n, _, _)| *n == full) {
            return *id;
        }
        let id = self.new_value(full.clone(), value.shape().to_vec());
        self.initializers.push((full, id, value));
        id
    }

    /// Appends a layer's operation. Its output shape is the one `module` produces for the
    /// shape of the first input (run once on zeros, in inference mode).
    pub fn layer(
        &mut self,
        module: &(impl Module + ?Sized),
        op: Op,
        inputs: &[ValueId],
    ) -> ValueId {
        let tape = Tape::inference();
        let output = module.forward(tape.input(Tensor::zeros(self.shape(inputs[0]))));
        let shape = output.shape();
        self.node(op, inputs, shape, "")
    }

    /// Appends an operation a block applies itself (`x.relu()`, `a + b`, concatenation),
    /// named `<scope>.<op name>`; the output shape follows from the op.
    ///
    /// # Panics
    ///
    /// If `op` is a layer's op (use [`Graph::layer`]), or the inputs do not fit it.
    pub fn apply(&mut self, op: Op, inputs: &[ValueId]) -> ValueId {
        let first = self.shape(inputs[0]).to_vec();
        let shape = match &op {
            Op::Relu
            | Op::LeakyRelu(_)
            | Op::Elu(_)
            | Op::Sigmoid
            | Op::Tanh
            | Op::Softmax(_)
            | Op::LogSoftmax(_)
            | Op::Gelu(_)
            | Op::Silu
            | Op::Softplus { .. }
            | Op::Hardswish
            | Op::Mish
            | Op::Identity => first,
            Op::Add => {
                let second = self.shape(inputs[1]);
                if second != first.as_slice() {
                    crate::tensor::check::contract_violation(
                        "Graph::apply",
                        "Add needs equal shapes",
                        format_args!("{first:?} and {second:?}"),
                    );
                }
                first
            }
            Op::Concat(axis) => {
                let mut shape = first;
                shape[*axis] = inputs.iter().map(|&v| self.shape(v)[*axis]).sum();
                shape
            }
            Op::Flatten { start_axis } => {
                let mut shape = first[..*start_axis].to_vec();
                shape.push(first[*start_axis..].iter().product());
                shape
            }
            other => crate::tensor::check::contract_violation(
                "Graph::apply",
                "only activations, Identity, Add, Concat and Flatten have implied shapes",
                format_args!("{}", other.name()),
            ),
        };
        let suffix = op.name().to_lowercase();
        self.node(op, inputs, shape, &suffix)
    }

    fn node(&mut self, op: Op, inputs: &[ValueId], shape: Vec<usize>, suffix: &str) -> ValueId {
        let mut name = self.scoped_name(suffix);
        if name.is_empty() {
            name = op.name().to_lowercase();
        }
        let name = self.unique(name);
        let output = self.new_value(name.clone(), shape);
        self.nodes.push(Node {
            op,
            name,
            inputs: inputs.to_vec(),
            output,
        });
        output
    }

    fn unique(&mut self, name: String) -> String {
        if self.used_names.insert(name.clone()) {
            return name;
        }
        (1..)
            .map(|i| format!("{name}_{i}"))
            .find(|candidate| self.used_names.insert(candidate.clone()))
            .expect("an unused name")
    }

    fn new_value(&mut self, name: String, shape: Vec<usize>) -> ValueId {
        self.used_names.insert(name.clone());
        self.value_names.push(name);
        self.shapes.push(shape);
        ValueId(self.shapes.len() - 1)
    }
}
