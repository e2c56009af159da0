//! ONNX export: a model's inference graph as an `.onnx` file that ONNX Runtime, Netron or
//! any ONNX consumer can run.
//!
//! [`export`] traces the model into a [`Graph`] (each layer describes itself through
//! [`Module::build_graph`]) and writes it with opset 17, a dynamic batch dimension and the
//! model's parameter names as initializer names (torchvision's for zoo models, so
//! `features.0.weight` in striate is `features.0.weight` in the file). Batch norm is written in
//! its inference form (running statistics), dropout as `Identity`.
//!
//! The message types in [`proto`] are generated from the official `onnx.proto` by
//! `scripts/gen_protos.sh` (prost); nothing here writes protobuf by hand.
//!
//! | striate | ONNX |
//! |---|---|
//! | `Conv2d` (stride, padding, dilation, groups) | `Conv` |
//! | `Dense` | `Gemm` (`transB = 1`) |
//! | `BatchNorm` | `BatchNormalization` (inference) |
//! | `MaxPool2d`, `AvgPool2d` | `MaxPool`, `AveragePool` |
//! | `AdaptiveAvgPool2d` | `GlobalAveragePool` (output 1x1) or `AveragePool` (input a whole multiple of the output) |
//! | `AdaptiveMaxPool2d` | `GlobalMaxPool` (output 1x1) or `MaxPool` (input a whole multiple of the output) |
//! | `GlobalAvgPool2d`, `GlobalMaxPool2d` | `GlobalAveragePool` / `GlobalMaxPool`, then `Flatten` |
//! | `Flatten` | `Flatten` (from axis 1) or `Reshape` |
//! | `Relu`, `LeakyRelu`, `Elu`, `Sigmoid`, `Tanh`, `Softmax`, `LogSoftmax` | the same names |
//! | `Hardswish` | `HardSwish` |
//! | `Softplus` | `Softplus`, as `Softplus(β·x)/β` for β ≠ 1 (`threshold` dropped, as PyTorch does) |
//! | `Gelu` (opset 20 in ONNX) | `0.5·x·(1 + Erf(x/√2))`; tanh form `0.5·x·(1 + Tanh(√(2/π)·(x + 0.044715·x³)))` |
//! | `Silu` | `x·Sigmoid(x)` |
//! | `Mish` (opset 18 in ONNX) | `x·Tanh(Softplus(x))` |
//! | `Dropout` | `Identity` |
//! | residual sum, Inception concatenation | `Add`, `Concat` |

#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod proto;

use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};
use crate::nn::{GeluApproximation, Graph, Module, Node, Op, ValueId};
use proto::attribute_proto::AttributeType;
use proto::tensor_proto::DataType;
use proto::tensor_shape_proto::{Dimension, dimension};
use proto::type_proto;
use proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The opset the exported files declare.
pub const OPSET: i64 = 17;
/// The IR version that goes with [`OPSET`].
const IR_VERSION: i64 = 8;
/// The symbolic name of the leading (batch) dimension of the input and output.
pub const BATCH_DIM: &str = "batch";

/// Writes `model` as an ONNX file at `path`, traced for an input of `example_input_shape`
/// (the batch dimension, the first, is left dynamic in the file). The file is written
/// atomically: whole or not at all.
///
/// # Errors
///
/// [`Error::Unsupported`] naming the first layer that has no ONNX form (a custom module that
/// does not implement [`Module::build_graph`], say); [`Error::Io`] if the file cannot be
/// written.
///
/// # Panics
///
/// If the model rejects the example input shape (with the failing op's message).
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::mnist_cnn;
///
/// let model = mnist_cnn(10, &mut StdRng::seed_from_u64(0));
/// let path = std::env::temp_dir().join("striate-doc-mnist.onnx");
/// striate::onnx::export(&model, &[1, 1, 28, 28], &path)?;
/// assert!(std::fs::metadata(&path)?.len() > 1_000_000); // 421,642 parameters as f32
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export(
    model: &(impl Module + ?Sized),
    example_input_shape: &[usize],
    path: impl AsRef<Path>,
) -> Result<()> {
    let bytes = to_model(model, example_input_shape)?.encode_to_vec();
    crate::util::atomic_file::write_atomically(path.as_ref(), &bytes)
}

/// The ONNX model of `model` for an input of `example_input_shape`, as a message (encode it
/// with [`prost::Message::encode_to_vec`]); [`export`] writes it to a file.
///
/// # Errors
///
/// [`Error::Unsupported`] naming the first layer that has no ONNX form.
///
/// # Examples
///
/// ```
/// use striate::nn::{Relu, Sequential, Tanh};
///
/// let model = striate::onnx::to_model(&Sequential::new().push(Relu).push(Tanh), &[2, 3])?;
/// let graph = model.graph.unwrap();
/// let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type()).collect();
/// assert_eq!(ops, ["Relu", "Tanh"]);
/// # Ok::<(), striate::Error>(())
/// ```
pub fn to_model(
    model: &(impl Module + ?Sized),
    example_input_shape: &[usize],
) -> Result<ModelProto> {
    let graph = Graph::trace(model, example_input_shape).map_err(|e| match e {
        Error::Unsupported { what, .. } => Error::unsupported("ONNX export", what),
        other => other,
    })?;
    let mut writer = Writer {
        graph: &graph,
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    for (name, _, tensor) in graph.initializers() {
        let dims = tensor.shape().iter().map(|&d| d as i64).collect();
        writer
            .initializers
            .push(float_tensor(name, dims, tensor.as_slice()));
    }
    for node in graph.nodes() {
        writer.node(node)?;
    }
    let io = |value: ValueId| value_info(graph.value_name(value), graph.shape(value));
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("striate".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(model.describe()),
        graph: Some(GraphProto {
            name: Some(model.describe()),
            node: writer.nodes,
            initializer: writer.initializers,
            input: vec![io(graph.input())],
            output: vec![io(graph.output())],
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Translates graph nodes into ONNX nodes (sometimes two, sometimes with extra constants).
struct Writer<'g> {
    graph: &'g Graph,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Writer<'_> {
    fn node(&mut self, node: &Node) -> Result<()> {
        let inputs: Vec<String> = node
            .inputs
            .iter()
            .map(|&v| self.graph.value_name(v).to_string())
            .collect();
        let input_shape = self.graph.shape(node.inputs[0]).to_vec();
        let output = self.graph.value_name(node.output).to_string();
        let name = node.name.clone();
        let unsupported = |detail: String| {
            Err(Error::unsupported(
                "ONNX export",
                format!("{} at {name:?}: {detail}", node.op.name()),
            ))
        };
        let simple = |op: &str, attributes: Vec<AttributeProto>| NodeProto {
            name: Some(name.clone()),
            op_type: Some(op.into()),
            input: inputs.clone(),
            output: vec![output.clone()],
            attribute: attributes,
            ..Default::default()
        };
        let made = match &node.op {
            Op::Conv2d(spec) => {
                let weight = self.graph.shape(node.inputs[1]);
                let p = spec.padding;
                simple(
                    "Conv",
                    vec![
                        ints("kernel_shape", &weight[2..]),
                        ints("strides", &spec.stride),
                        ints("pads", &[p.top, p.left, p.bottom, p.right]),
                        ints("dilations", &spec.dilation),
                        int("group", spec.groups as i64),
                    ],
                )
            }
            Op::Dense => {
                if input_shape.len() != 2 {
                    return unsupported(format!(
                        "input of rank {} (Gemm needs 2)",
                        input_shape.len()
                    ));
                }
                simple("Gemm", vec![int("transB", 1)])
            }
            Op::BatchNorm { eps } => simple("BatchNormalization", vec![float("epsilon", *eps)]),
            Op::MaxPool2d(spec) => {
                let p = spec.padding;
                simple(
                    "MaxPool",
                    vec![
                        ints("kernel_shape", &spec.kernel),
                        ints("strides", &spec.stride),
                        ints("pads", &[p[0], p[1], p[0], p[1]]),
                        ints("dilations", &spec.dilation),
                        int("ceil_mode", spec.ceil_mode.into()),
                    ],
                )
            }
            Op::AvgPool2d(spec, divisor) => {
                if spec.dilation != [1, 1] {
                    return unsupported(format!("dilation {:?} (opset {OPSET})", spec.dilation));
                }
                let p = spec.padding;
                let include = matches!(divisor, crate::kernels::pool::AvgDivisor::IncludePadding);
                simple(
                    "AveragePool",
                    vec![
                        ints("kernel_shape", &spec.kernel),
                        ints("strides", &spec.stride),
                        ints("pads", &[p[0], p[1], p[0], p[1]]),
                        int("ceil_mode", spec.ceil_mode.into()),
                        int("count_include_pad", include.into()),
                    ],
                )
            }
            Op::AdaptiveAvgPool2d(size) => {
                let [h, w] = [input_shape[2], input_shape[3]];
                if *size == [1, 1] {
                    simple("GlobalAveragePool", vec![])
                } else if h % size[0] == 0 && w % size[1] == 0 {
                    let kernel = [h / size[0], w / size[1]];
                    simple(
                        "AveragePool",
                        vec![ints("kernel_shape", &kernel), ints("strides", &kernel)],
                    )
                } else {
                    return unsupported(format!(
                        "output {size:?} from input {h}x{w}, which is not a whole multiple"
                    ));
                }
            }
            Op::AdaptiveMaxPool2d(size) => {
                let [h, w] = [input_shape[2], input_shape[3]];
                if *size == [1, 1] {
                    simple("GlobalMaxPool", vec![])
                } else if h % size[0] == 0 && w % size[1] == 0 {
                    // Even bins: PyTorch's bins are then the windows of a plain max pool.
                    let kernel = [h / size[0], w / size[1]];
                    simple(
                        "MaxPool",
                        vec![ints("kernel_shape", &kernel), ints("strides", &kernel)],
                    )
                } else {
                    return unsupported(format!(
                        "output {size:?} from input {h}x{w}, which is not a whole multiple"
                    ));
                }
            }
            Op::GlobalAvgPool2d | Op::GlobalMaxPool2d => {
                let op = if node.op == Op::GlobalAvgPool2d {
                    "GlobalAveragePool"
                } else {
                    "GlobalMaxPool"
                };
                let pooled = format!("{output}.pooled");
                let mut pool = simple(op, vec![]);
                pool.output = vec![pooled.clone()];
                self.nodes.push(pool);
                let mut flatten = simple("Flatten", vec![int("axis", 1)]);
                flatten.name = Some(format!("{name}.flatten"));
                flatten.input = vec![pooled];
                flatten
            }
            Op::Flatten { start_axis: 1 } => simple("Flatten", vec![int("axis", 1)]),
            Op::Flatten { start_axis } => {
                // Reshape to [0, ..., 0, -1]: keep the leading axes (the batch stays
                // dynamic), merge the rest.
                let mut target = vec![0i64; *start_axis];
                target.push(-1);
                let shape_name = format!("{name}.shape");
                self.initializers.push(TensorProto {
                    name: Some(shape_name.clone()),
                    dims: vec![target.len() as i64],
                    data_type: Some(DataType::Int64 as i32),
                    int64_data: target,
                    ..Default::default()
                });
                let mut reshape = simple("Reshape", vec![]);
                reshape.input.push(shape_name);
                reshape
            }
            Op::Relu => simple("Relu", vec![]),
            Op::LeakyRelu(slope) => simple("LeakyRelu", vec![float("alpha", *slope)]),
            Op::Elu(alpha) => simple("Elu", vec![float("alpha", *alpha)]),
            Op::Sigmoid => simple("Sigmoid", vec![]),
            Op::Tanh => simple("Tanh", vec![]),
            Op::Softmax(axis) => simple("Softmax", vec![int("axis", *axis as i64)]),
            Op::LogSoftmax(axis) => simple("LogSoftmax", vec![int("axis", *axis as i64)]),
            // Opset 17 has no Gelu (opset 20) nor Mish (opset 18): these are decomposed into
            // standard ops as PyTorch's exporter does at opset 17.
            Op::Gelu(GeluApproximation::None) => {
                // 0.5 · x · (1 + Erf(x / √2))
                let x = &inputs[0];
                let sqrt2 = self.scalar(&name, "sqrt2", std::f32::consts::SQRT_2);
                let one = self.scalar(&name, "one", 1.0);
                let half = self.scalar(&name, "half", 0.5);
                let scaled = self.step(&name, "div", "Div", [x, &sqrt2]);
                let erf = self.step(&name, "erf", "Erf", [&scaled]);
                let plus_one = self.step(&name, "add", "Add", [&erf, &one]);
                let times_x = self.step(&name, "mul", "Mul", [x, &plus_one]);
                with_inputs(simple("Mul", vec![]), [&times_x, &half])
            }
            Op::Gelu(GeluApproximation::Tanh) => {
                // 0.5 · x · (1 + Tanh(√(2/π) · (x + 0.044715 · x³)))
                let x = &inputs[0];
                let beta = self.scalar(&name, "beta", (2.0 / std::f32::consts::PI).sqrt());
                let kappa = self.scalar(&name, "kappa", 0.044_715);
                let one = self.scalar(&name, "one", 1.0);
                let half = self.scalar(&name, "half", 0.5);
                let square = self.step(&name, "square", "Mul", [x, x]);
                let cube = self.step(&name, "cube", "Mul", [x, &square]);
                let kappa_cube = self.step(&name, "kappa_cube", "Mul", [&kappa, &cube]);
                let sum = self.step(&name, "sum", "Add", [x, &kappa_cube]);
                let inner = self.step(&name, "inner", "Mul", [&beta, &sum]);
                let tanh = self.step(&name, "tanh", "Tanh", [&inner]);
                let plus_one = self.step(&name, "add", "Add", [&one, &tanh]);
                let times_x = self.step(&name, "mul", "Mul", [x, &plus_one]);
                with_inputs(simple("Mul", vec![]), [&half, &times_x])
            }
            Op::Silu => {
                // x · Sigmoid(x)
                let x = &inputs[0];
                let sigmoid = self.step(&name, "sigmoid", "Sigmoid", [x]);
                with_inputs(simple("Mul", vec![]), [x, &sigmoid])
            }
            // As in PyTorch's exporter, `threshold` is dropped: ONNX's Softplus has none, and
            // above it PyTorch returns x where Softplus gives ln(1 + e^(βx))/β, which differs
            // by less than e^(-threshold)/β (2e-9 at the default 20).
            Op::Softplus { beta, .. } if *beta == 1.0 => simple("Softplus", vec![]),
            Op::Softplus { beta, .. } => {
                // Softplus(β · x) / β
                let beta = self.scalar(&name, "beta", *beta);
                let scaled = self.step(&name, "scaled", "Mul", [&inputs[0], &beta]);
                let softplus = self.step(&name, "softplus", "Softplus", [&scaled]);
                with_inputs(simple("Div", vec![]), [&softplus, &beta])
            }
            Op::Hardswish => simple("HardSwish", vec![]),
            Op::Mish => {
                // x · Tanh(Softplus(x))
                let x = &inputs[0];
                let softplus = self.step(&name, "softplus", "Softplus", [x]);
                let tanh = self.step(&name, "tanh", "Tanh", [&softplus]);
                with_inputs(simple("Mul", vec![]), [x, &tanh])
            }
            Op::Identity => simple("Identity", vec![]),
            Op::Add => simple("Add", vec![]),
            Op::Concat(axis) => simple("Concat", vec![int("axis", *axis as i64)]),
        };
        self.nodes.push(made);
        Ok(())
    }

    /// Adds the scalar f32 constant `<node>.<what>` and returns its name.
    fn scalar(&mut self, node: &str, what: &str, value: f32) -> String {
        let name = format!("{node}.{what}");
        self.initializers
            .push(float_tensor(&name, vec![], &[value]));
        name
    }

    /// Appends one step of a decomposed op: the node (and value) `<node>.<step>` computing
    /// `op_type` of `inputs`; returns the value's name.
    fn step<const N: usize>(
        &mut self,
        node: &str,
        step: &str,
        op_type: &str,
        inputs: [&String; N],
    ) -> String {
        let name = format!("{node}.{step}");
        self.nodes.push(NodeProto {
            name: Some(name.clone()),
            op_type: Some(op_type.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.clone()],
            ..Default::default()
        });
        name
    }
}

/// `node` with its inputs replaced (the last step of a decomposed op).
fn with_inputs<const N: usize>(mut node: NodeProto, inputs: [&String; N]) -> NodeProto {
    node.input = inputs.iter().map(|s| s.to_string()).collect();
    node
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(value),
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: Vec<i64>, values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims,
        data_type: Some(DataType::Float as i32),
        // ONNX stores raw data little-endian.
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

/// A float tensor's name, type and shape, with the first (batch) dimension symbolic.
fn value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    let dim = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| Dimension {
            value: Some(if i == 0 {
                dimension::Value::DimParam(BATCH_DIM.into())
            } else {
                dimension::Value::DimValue(d as i64)
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::autograd::Var;
    use crate::models::mnist_cnn;
    use crate::nn::Sequential;

    #[test]
    fn parameter_names_become_initializer_names_and_the_batch_is_dynamic() {
        let model = mnist_cnn(10, &mut StdRng::seed_from_u64(0));
        let onnx = to_model(&model, &[2, 1, 28, 28]).unwrap();
        let graph = onnx.graph.unwrap();
        let names: Vec<&str> = graph.initializer.iter().map(|t| t.name()).collect();
        let mut expected = Vec::new();
        model.visit_params(&mut |name, _| expected.push(name.to_string()));
        assert_eq!(names, expected);
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(
            ops,
            [
                "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu",
                "Gemm"
            ]
        );
        let output_dims = match &graph.output[0].r#type.as_ref().unwrap().value {
            Some(type_proto::Value::TensorType(t)) => t.shape.clone().unwrap().dim,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            output_dims[0].value,
            Some(dimension::Value::DimParam("batch".into()))
        );
        assert_eq!(output_dims[1].value, Some(dimension::Value::DimValue(10)));
        assert_eq!(onnx.opset_import[0].version(), OPSET);
    }

    #[test]
    fn layers_newer_than_opset_17_are_decomposed_into_its_ops() {
        use crate::nn::{Gelu, Hardswish, Mish, Silu, Softplus};
        let model = Sequential::new()
            .push(Gelu::default())
            .push(Gelu::new(GeluApproximation::Tanh))
            .push(Silu)
            .push(Softplus::new(2.0, 20.0))
            .push(Hardswish)
            .push(Mish);
        let graph = to_model(&model, &[1, 4]).unwrap().graph.unwrap();
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type()).collect();
        #[rustfmt::skip]
        let expected = [
            "Div", "Erf", "Add", "Mul", "Mul",
            "Mul", "Mul", "Mul", "Add", "Mul", "Tanh", "Add", "Mul", "Mul",
            "Sigmoid", "Mul",
            "Mul", "Softplus", "Div",
            "HardSwish",
            "Softplus", "Tanh", "Mul",
        ];
        assert_eq!(ops, expected);
        // the layers' own outputs keep their names, the last one is the graph's output
        assert_eq!(graph.node.last().unwrap().output, ["5"]);
        assert_eq!(graph.output[0].name(), "5");
    }

    #[test]
    fn an_unsupported_layer_is_an_error_naming_it() {
        struct Custom;
        impl Module for Custom {
            fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
                input
            }
            crate::nn::no_params!();
        }
        let err = to_model(
            &Sequential::new().push(crate::nn::Relu).push(Custom),
            &[1, 2],
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("ONNX export: unsupported layer"),
            "{message}"
        );
        assert!(message.contains("Custom"), "{message}");
    }
}
