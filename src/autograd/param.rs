//! `Param`: a trainable tensor owned by a layer, with a stable identity.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, shape_str};

/// The stable identity of a [`Param`]: optimizers and [`crate::Gradients`] key their state by it.
///
/// Cloning a `Param` keeps its id, so a clone and its original are the same parameter to an
/// optimizer; do not step two clones with one optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(u64);

impl ParamId {
    fn fresh() -> ParamId {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        ParamId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The id as a number (unique within this process).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// A trainable tensor: a value, a stable [`ParamId`], a local name (`"weight"`, `"bias"`), and a
/// `requires_grad` switch for freezing.
///
/// The value's buffer is shared with every tape that reads it ([`crate::Tape::param`] clones an
/// `Arc`, not the data); an optimizer writing through [`Param::value_mut`] copies only if a tape
/// still holds the old value.
///
/// # Examples
///
/// ```
/// use striate::{Param, Tape, Tensor};
///
/// let w = Param::new("weight", Tensor::from_vec(vec![2.0], &[1]).unwrap());
/// let tape = Tape::training();
/// let x = tape.input(Tensor::from_vec(vec![3.0], &[1]).unwrap());
/// let loss = (tape.param(&w) * x).sum();
/// let grads = loss.backward();
/// assert_eq!(grads.get(&w).unwrap().as_slice(), &[3.0]);
/// ```
#[derive(Clone, Debug)]
pub struct Param {
    id: ParamId,
    name: String,
    value: Tensor,
    requires_grad: bool,
    /// Changes whenever the value may change ([`Param::version`]).
    version: u64,
}

/// A number for a new value of some parameter (or of a batch norm's statistics, or of a weight
/// derived from both), never given twice in this process.
pub(crate) fn fresh_version() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Param {
    /// A new trainable parameter with a fresh id.
    pub fn new(name: impl Into<String>, value: Tensor) -> Param {
        Param {
            id: ParamId::fresh(),
            name: name.into(),
            value,
            requires_grad: true,
            version: fresh_version(),
        }
    }

    /// The stable identity.
    pub fn id(&self) -> ParamId {
        self.id
    }

    /// The local name given at construction (`"weight"`); containers prefix it into
    /// hierarchical names (`"features.0.weight"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current value.
    pub fn value(&self) -> &Tensor {
        &self.value
    }

    /// The value, mutably (copy-on-write if a tape still shares it).
    pub fn value_mut(&mut self) -> &mut Tensor {
        self.version = fresh_version();
        &mut self.value
    }

    /// A number that identifies the current value: a new one, never given before in this
    /// process, each time the value may change ([`Param::value_mut`], [`Param::set_value`]), and
    /// the same in a clone until either changes. The kernels key the weights they prepare (packed,
    /// transformed) by it, so a frozen or inference-time weight is prepared once.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Replaces the value, keeping the id.
    ///
    /// # Panics
    ///
    /// If the new value's shape differs from the current one.
    pub fn set_value(&mut self, value: Tensor) {
        if value.shape() != self.value.shape() {
            contract_violation(
                "Param::set_value",
                format_args!("new value must keep the shape of parameter `{}`", self.name),
                format_args!(
                    "current {}, new {}",
                    shape_str(self.value.shape()),
                    shape_str(value.shape())
                ),
            );
        }
        self.value = value;
        self.version = fresh_version();
    }

    /// The value's shape.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// The number of scalars in the parameter.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Whether the parameter holds no scalars.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Whether gradients are computed for this parameter (false once frozen).
    pub fn requires_grad(&self) -> bool {
        self.requires_grad
    }

    /// Freezes (`false`) or unfreezes (`true`) the parameter. A frozen parameter gets no
    /// gradient, and optimizers never touch it.
    pub fn set_requires_grad(&mut self, requires_grad: bool) {
        self.requires_grad = requires_grad;
    }
}
