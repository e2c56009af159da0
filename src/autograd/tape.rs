//! `Tape`: the arena (Wengert list) that records one step's operations, and `Mode`.

use std::cell::{Cell, OnceCell, RefCell, RefMut};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::anomaly::{Anomaly, Pass, first_non_finite, op_name};
use super::param::{Param, ParamId};
use super::var::Var;
use crate::kernels::blocks::ChannelBlocks;
use crate::tensor::Tensor;
use crate::tensor::check::contract_violation;

/// Whether a tape records for training or only evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Records every op for a backward pass; dropout drops and batch norm uses batch statistics.
    Train,
    /// Stores values only; dropout is the identity and batch norm uses running statistics.
    Eval,
}

/// Called with each parameter's gradient as soon as backward has completed it.
pub(crate) type GradientReady<'h> = dyn FnMut(ParamId, &Tensor) + 'h;

/// The local derivative rule of one recorded op.
///
/// An op saves what its backward needs (inputs, outputs, indices) in a struct implementing this
/// trait and hands it to [`Tape::record`]. The engine calls [`Backward::backward`] once with the
/// gradient of the op's output and receives the gradient of each input; it alone accumulates,
/// and it sums over broadcast axes when a returned gradient has the output's shape rather than
/// the input's.
pub trait Backward: fmt::Debug {
    /// Returns one entry per input, in the order given to [`Tape::record`]: the gradient of the
    /// loss with respect to that input, or `None` where `needs_grad[i]` is false (the op may skip
    /// that work, as conv2d does for its first layer's input).
    fn backward(&self, grad_output: Tensor, needs_grad: &[bool]) -> Vec<Option<Tensor>>;
}

/// What a node is when nothing produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaf {
    /// Produced by an op, or a constant input.
    No,
    /// A trainable parameter read with [`Tape::param`], and the version of the value read
    /// ([`Param::version`]).
    Param(ParamId, u64),
    /// A leaf whose gradient the caller asked for with [`Tape::variable`].
    Variable,
}

/// A node's value: a tensor, or (inference only) activations kept in channel blocks between
/// layers that compute on them, converted to NCHW the first time anything else reads them.
enum Value {
    Tensor(Tensor),
    Blocks {
        blocks: Arc<ChannelBlocks>,
        planes: OnceCell<Tensor>,
    },
}

impl Value {
    /// The value as a tensor (NCHW for blocks), converted once.
    fn tensor(&self) -> &Tensor {
        match self {
            Value::Tensor(tensor) => tensor,
            Value::Blocks { blocks, planes } => planes.get_or_init(|| {
                Tensor::from_vec(blocks.to_planes(), &blocks.shape()).expect("blocks' shape")
            }),
        }
    }

    fn shape(&self) -> Vec<usize> {
        match self {
            Value::Tensor(tensor) => tensor.shape().to_vec(),
            Value::Blocks { blocks, .. } => blocks.shape().to_vec(),
        }
    }
}

struct Node {
    value: Value,
    parents: Box<[usize]>,
    backward: Option<Box<dyn Backward>>,
    requires_grad: bool,
    leaf: Leaf,
}

/// One step's record of operations: values, and how to differentiate them.
///
/// Nodes are appended in execution order, so walking the tape backwards is already a
/// topological order. Dropping the tape frees the whole graph: make one per step.
///
/// # Examples
///
/// ```
/// use striate::{Tape, Tensor};
///
/// let tape = Tape::training();
/// let x = tape.variable(Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap());
/// let y = (x * x).sum(); // y = Σ x²
/// let grads = y.backward();
/// assert_eq!(grads.wrt(x).unwrap().as_slice(), &[2.0, 4.0, 6.0]); // dy/dx = 2x
/// ```
///
/// A `Var` cannot outlive its tape:
///
/// ```compile_fail
/// use striate::{Tape, Tensor, Var};
///
/// let escaped: Var;
/// {
///     let tape = Tape::training();
///     escaped = tape.input(Tensor::ones(&[2]));
/// } // `tape` dropped here while still borrowed
/// let _ = escaped.value();
/// ```
pub struct Tape {
    nodes: RefCell<Vec<Node>>,
    mode: Mode,
    id: u64,
    consumed: Cell<bool>,
    rng: RefCell<StdRng>,
    anomaly: RefCell<AnomalyDetection>,
    /// Whether ops record their backward rules: always in training mode, and in inference
    /// mode for [`Tape::inference_with_gradients`].
    records: bool,
}

/// What anomaly detection keeps while it is on.
#[derive(Default)]
struct AnomalyDetection {
    enabled: bool,
    /// For each node, the nearest parameter upstream (see [`Anomaly::param`]).
    nearest_param: Vec<Option<ParamId>>,
    first: Option<Anomaly>,
}

impl Tape {
    fn new(mode: Mode, seed: Option<u64>) -> Tape {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        Tape {
            nodes: RefCell::new(Vec::new()),
            mode,
            id,
            consumed: Cell::new(false),
            rng: RefCell::new(StdRng::seed_from_u64(seed.unwrap_or(id))),
            records: mode == Mode::Train,
            anomaly: RefCell::new(AnomalyDetection::default()),
        }
    }

    /// Turns anomaly detection on or off, like PyTorch's `torch.autograd.detect_anomaly`:
    /// while on, every value recorded and every gradient computed is checked, and the first
    /// NaN or infinity is kept for [`Tape::anomaly`]. Turn it on before recording the step.
    ///
    /// It costs one extra read of every activation and gradient (see the README's figures).
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::autograd::Pass;
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::training();
    /// tape.detect_anomaly(true);
    /// let x = tape.variable(Tensor::from_vec(vec![4.0, -1.0], &[2]).unwrap());
    /// let y = x.sqrt().sum(); // sqrt(-1) is NaN
    /// let anomaly = tape.anomaly().unwrap();
    /// assert_eq!((anomaly.pass, anomaly.op.as_str()), (Pass::Forward, "sqrt"));
    /// assert!(y.item().is_nan());
    /// ```
    pub fn detect_anomaly(&self, enabled: bool) {
        let mut detection = self.anomaly.borrow_mut();
        detection.enabled = enabled;
        let len = self.nodes.borrow().len();
        detection.nearest_param.resize(len, None);
    }

    /// The first NaN or infinity met while [`Tape::detect_anomaly`] was on, if any.
    pub fn anomaly(&self) -> Option<Anomaly> {
        self.anomaly.borrow().first.clone()
    }

    /// Anomaly detection's bookkeeping for a node about to be pushed at index `node`.
    fn watch_forward(
        &self,
        node: usize,
        value: &Tensor,
        parents: &[usize],
        leaf: Leaf,
        op: impl FnOnce() -> String,
    ) {
        let mut detection = self.anomaly.borrow_mut();
        if !detection.enabled {
            return;
        }
        let nearest = match leaf {
            Leaf::Param(id, _) => Some(id),
            _ => parents
                .iter()
                .rev()
                .filter_map(|&p| detection.nearest_param.get(p).copied().flatten())
                .next(),
        };
        detection.nearest_param.resize(node, None);
        detection.nearest_param.push(nearest);
        if detection.first.is_none()
            && let Some(value) = first_non_finite(value.as_slice())
        {
            detection.first = Some(Anomaly {
                pass: Pass::Forward,
                op: op(),
                node,
                param: nearest,
                value,
            });
        }
    }

    /// Anomaly detection's check of a gradient that `rule` (node `node`) returned.
    fn watch_backward(&self, node: usize, gradient: &Tensor, rule: &dyn Backward) {
        let mut detection = self.anomaly.borrow_mut();
        if !detection.enabled || detection.first.is_some() {
            return;
        }
        if let Some(value) = first_non_finite(gradient.as_slice()) {
            let param = detection.nearest_param.get(node).copied().flatten();
            detection.first = Some(Anomaly {
                pass: Pass::Backward,
                op: op_name(rule),
                node,
                param,
                value,
            });
        }
    }

    /// A tape that records for a backward pass, in training mode. Its rng (used by dropout) is
    /// seeded from a process-wide counter; use [`Tape::training_with_seed`] to fix it.
    pub fn training() -> Tape {
        Tape::new(Mode::Train, None)
    }

    /// A training tape whose rng starts from `seed`, so random ops (dropout) repeat exactly.
    pub fn training_with_seed(seed: u64) -> Tape {
        Tape::new(Mode::Train, Some(seed))
    }

    /// A tape that only evaluates: nothing is recorded for backward, and mode-dependent layers
    /// (dropout, batch norm) behave as at inference.
    pub fn inference() -> Tape {
        Tape::new(Mode::Eval, None)
    }

    /// The tape's random number generator, for ops that draw (dropout masks).
    ///
    /// # Panics
    ///
    /// If it is already borrowed (an op must release it before recording).
    pub fn rng(&self) -> RefMut<'_, StdRng> {
        self.rng.borrow_mut()
    }

    /// A tape in inference mode (dropout off, batch norm on running statistics) that still
    /// records for a backward pass: for gradients of a trained model's outputs with respect
    /// to its input or inner activations, as saliency maps and Grad-CAM need.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::nn::{Dropout, Module};
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference_with_gradients();
    /// let x = tape.variable(Tensor::ones(&[4]));
    /// let y = Dropout::new(0.9).forward(x).sum(); // dropout is the identity here
    /// assert_eq!(y.backward().wrt(x).unwrap().as_slice(), &[1.0; 4]);
    /// ```
    pub fn inference_with_gradients() -> Tape {
        let mut tape = Tape::new(Mode::Eval, None);
        tape.records = true;
        tape
    }

    /// The tape's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the tape records for training.
    pub fn is_training(&self) -> bool {
        self.mode == Mode::Train
    }

    /// A process-unique id, used to catch vars mixed across tapes.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The number of nodes recorded so far.
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&self, node: Node) -> Var<'_> {
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(node);
        Var::new(self, nodes.len() - 1)
    }

    fn leaf(&self, value: Tensor, requires_grad: bool, leaf: Leaf) -> Var<'_> {
        self.watch_forward(self.len(), &value, &[], leaf, || {
            match leaf {
                Leaf::No => "input",
                Leaf::Param(..) => "param",
                Leaf::Variable => "variable",
            }
            .to_string()
        });
        self.push(Node {
            value: Value::Tensor(value),
            parents: Box::new([]),
            backward: None,
            requires_grad: requires_grad && self.records,
            leaf,
        })
    }

    /// A constant input (data, labels): no gradient flows into it.
    pub fn input(&self, value: Tensor) -> Var<'_> {
        self.leaf(value, false, Leaf::No)
    }

    /// A leaf whose gradient the backward pass reports through [`crate::Gradients::wrt`].
    pub fn variable(&self, value: Tensor) -> Var<'_> {
        self.leaf(value, true, Leaf::Variable)
    }

    /// A parameter's current value as a leaf. Shares the parameter's buffer; the gradient is
    /// reported under the parameter's id unless the parameter is frozen.
    pub fn param(&self, param: &Param) -> Var<'_> {
        self.leaf(
            param.value().clone(),
            param.requires_grad(),
            Leaf::Param(param.id(), param.version()),
        )
    }

    /// A value derived from a parameter's (a convolution's weight with a batch norm folded in)
    /// as a leaf that gets no gradient, identified as parameter `id` at `version`: a number
    /// given to that derived value alone, so that kernels keep what they prepare from it
    /// across calls, as for a frozen parameter.
    pub(crate) fn derived_param(&self, id: ParamId, version: u64, value: Tensor) -> Var<'_> {
        self.leaf(value, false, Leaf::Param(id, version))
    }

    /// Appends the result of an op: its value, its inputs, and its derivative rule.
    ///
    /// On an inference tape, or when no input requires a gradient, the rule is dropped at once
    /// (with whatever it saved) and only the value is kept.
    ///
    /// # Panics
    ///
    /// If an input belongs to another tape.
    pub fn record<'t>(
        &'t self,
        value: Tensor,
        inputs: &[Var<'t>],
        backward: impl Backward + 'static,
    ) -> Var<'t> {
        for input in inputs {
            if !std::ptr::eq(input.tape(), self) {
                contract_violation(
                    "record",
                    format_args!("inputs of {backward:?} come from different tapes"),
                    format_args!("tape {}, input's tape {}", self.id, input.tape().id()),
                );
            }
        }
        let input_nodes: Vec<usize> = inputs.iter().map(|v| v.node()).collect();
        self.watch_forward(self.len(), &value, &input_nodes, Leaf::No, || {
            op_name(&backward)
        });
        let requires_grad = self.will_record(inputs);
        let (parents, backward): (Box<[usize]>, Option<Box<dyn Backward>>) = if requires_grad {
            (input_nodes.into_boxed_slice(), Some(Box::new(backward)))
        } else {
            (Box::new([]), None)
        };
        self.push(Node {
            value: Value::Tensor(value),
            parents,
            backward,
            requires_grad,
            leaf: Leaf::No,
        })
    }

    /// Appends the result of an inference op kept in channel blocks (see
    /// [`Tape::keeps_blocks`]): no backward rule, since none will run.
    pub(crate) fn record_blocks<'t>(&'t self, blocks: ChannelBlocks) -> Var<'t> {
        debug_assert!(self.keeps_blocks());
        self.push(Node {
            value: Value::Blocks {
                blocks: Arc::new(blocks),
                planes: OnceCell::new(),
            },
            parents: Box::new([]),
            backward: None,
            requires_grad: false,
            leaf: Leaf::No,
        })
    }

    /// Whether ops may keep their results in channel blocks: on a tape that records no
    /// backward pass and checks no values (anomaly detection reads every value as a tensor).
    /// Training keeps NCHW: the filter gradient and the elementwise backward rules read it.
    pub(crate) fn keeps_blocks(&self) -> bool {
        !self.records && !self.anomaly.borrow().enabled
    }

    /// Whether layers may fuse in ways only inference allows (a batch norm folded into the
    /// convolution before it): an inference-mode tape that records no backward pass, so no
    /// gradient will be asked of the ops fused away. (Anomaly detection then checks the fused
    /// op's values and names it.)
    pub(crate) fn fuses_for_inference(&self) -> bool {
        !self.is_training() && !self.records
    }

    /// The node's value if it is kept in channel blocks.
    pub(crate) fn blocks(&self, node: usize) -> Option<Arc<ChannelBlocks>> {
        match &self.nodes.borrow()[node].value {
            Value::Blocks { blocks, .. } => Some(Arc::clone(blocks)),
            Value::Tensor(_) => None,
        }
    }

    /// Whether an op of these inputs will be recorded for a backward pass: the tape records
    /// and one of them needs a gradient. An op tests this before saving costly intermediates
    /// for a backward pass that will not run.
    pub(crate) fn will_record(&self, inputs: &[Var<'_>]) -> bool {
        self.records && self.any_requires_grad(inputs)
    }

    /// Whether any of these vars needs a gradient; an op can test this before saving costly
    /// intermediates for a backward pass that will not run.
    pub fn any_requires_grad(&self, vars: &[Var<'_>]) -> bool {
        let nodes = self.nodes.borrow();
        vars.iter().any(|v| nodes[v.node()].requires_grad)
    }

    pub(crate) fn value(&self, node: usize) -> Tensor {
        self.nodes.borrow()[node].value.tensor().clone()
    }

    pub(crate) fn shape(&self, node: usize) -> Vec<usize> {
        self.nodes.borrow()[node].value.shape()
    }

    /// For a parameter's leaf that gets no gradient (on an inference tape, or frozen): its
    /// identity and the version of its value, by which derived forms of it can be cached.
    pub(crate) fn frozen_param(&self, node: usize) -> Option<(ParamId, u64)> {
        let nodes = self.nodes.borrow();
        match nodes[node].leaf {
            Leaf::Param(id, version) if !nodes[node].requires_grad => Some((id, version)),
            _ => None,
        }
    }

    pub(crate) fn requires_grad(&self, node: usize) -> bool {
        self.nodes.borrow()[node].requires_grad
    }

    /// The backward engine: walks the tape once from `root` down, accumulating each node's
    /// gradient from its consumers, freeing it once passed on, and collecting leaf gradients.
    /// `seed` is the gradient of `root` (`Jᵀ·seed` is what flows down); `None` seeds a
    /// one-element loss with 1.
    ///
    /// `on_ready`, if given, is called once for each parameter the loss depends on, as soon as
    /// its gradient is complete (at its earliest leaf on the tape, the last one walked), while
    /// the rest of the pass still runs: data-parallel training starts reducing it there.
    pub(crate) fn backward_from(
        &self,
        root: usize,
        seed: Option<&Tensor>,
        mut on_ready: Option<&mut GradientReady<'_>>,
    ) -> super::Gradients {
        if !self.records {
            contract_violation(
                "backward",
                "an inference tape records nothing to differentiate",
                "build the step on Tape::training()",
            );
        }
        if self.consumed.replace(true) {
            contract_violation(
                "backward",
                "this tape's graph was consumed by an earlier backward",
                "record the step again on a fresh tape",
            );
        }
        let mut nodes = self.nodes.borrow_mut();
        let root_shape = nodes[root].value.shape();
        let seed = match seed {
            Some(seed) => {
                if seed.shape() != root_shape.as_slice() {
                    contract_violation(
                        "backward_with",
                        "the gradient must have the output's shape",
                        format_args!(
                            "gradient {}, output {}",
                            crate::tensor::check::shape_str(seed.shape()),
                            crate::tensor::check::shape_str(&root_shape)
                        ),
                    );
                }
                seed.clone()
            }
            None => {
                if nodes[root].value.tensor().len() != 1 {
                    contract_violation(
                        "backward",
                        "the loss must hold exactly one element",
                        format_args!("loss {}", crate::tensor::check::shape_str(&root_shape)),
                    );
                }
                Tensor::ones(&root_shape)
            }
        };
        // A parameter read more than once has several leaves; its gradient is complete at the
        // first of them, which the reverse walk reaches last.
        let mut earliest_leaf = std::collections::HashMap::new();
        if on_ready.is_some() {
            for (index, node) in nodes[..=root].iter().enumerate().rev() {
                if let Leaf::Param(id, _) = node.leaf {
                    earliest_leaf.insert(id, index);
                }
            }
        }
        let mut gradients = super::Gradients::new(self.id);
        let mut grads: Vec<Option<Tensor>> = vec![None; root + 1];
        if nodes[root].requires_grad {
            grads[root] = Some(seed);
        }
        for index in (0..=root).rev() {
            let Some(grad) = grads[index].take() else {
                continue;
            };
            match nodes[index].leaf {
                Leaf::Param(id, _) => {
                    gradients.accumulate_param(id, grad);
                    if let Some(on_ready) = on_ready.as_mut()
                        && earliest_leaf.get(&id) == Some(&index)
                        && let Some(complete) = gradients.get_by_id(id)
                    {
                        on_ready(id, complete);
                    }
                }
                Leaf::Variable => gradients.insert_variable(index, grad),
                Leaf::No => {
                    // Taking the rule frees what it saved as soon as it has run.
                    let Some(rule) = nodes[index].backward.take() else {
                        continue;
                    };
                    let parents = nodes[index].parents.clone();
                    let needs: Vec<bool> =
                        parents.iter().map(|&p| nodes[p].requires_grad).collect();
                    let local = rule.backward(grad, &needs);
                    debug_assert_eq!(
                        local.len(),
                        parents.len(),
                        "{rule:?} returned a wrong number of gradients"
                    );
                    for gradient in local.iter().flatten() {
                        self.watch_backward(index, gradient, rule.as_ref());
                    }
                    drop(rule);
                    for ((&parent, needed), local) in parents.iter().zip(needs).zip(local) {
                        let Some(local) = local.filter(|_| needed) else {
                            continue;
                        };
                        let local = crate::tensor::broadcast::sum_to_shape(
                            &local,
                            &nodes[parent].value.shape(),
                        );
                        match &mut grads[parent] {
                            Some(existing) => existing.add_assign(&local),
                            slot @ None => *slot = Some(local),
                        }
                    }
                }
            }
        }
        gradients
    }

    /// Prints one line per node: index, op, shape, parents (for debugging a graph).
    pub fn dump(&self) -> String {
        let nodes = self.nodes.borrow();
        let mut out = String::new();
        for (i, node) in nodes.iter().enumerate() {
            let op = match (&node.backward, node.leaf) {
                (_, Leaf::Param(id, _)) => format!("param#{}", id.as_u64()),
                (_, Leaf::Variable) => "variable".to_string(),
                (Some(rule), _) => format!("{rule:?}")
                    .split([' ', '{', '('])
                    .next()
                    .unwrap_or("")
                    .to_string(),
                (None, _) => "value".to_string(),
            };
            out.push_str(&format!(
                "%{i} = {op} {:?} <- {:?}\n",
                &node.value.shape(),
                node.parents
            ));
        }
        out
    }
}

impl fmt::Debug for Tape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tape")
            .field("mode", &self.mode)
            .field("nodes", &self.len())
            .finish()
    }
}
