//! What every optimizer shares: its parameter groups, its per-parameter state keyed by
//! [`ParamId`], the walk over the parameters a step updates, and the export and import of the
//! state by hierarchical parameter name.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::groups::{GroupOptions, ParamGroup, ParamGroups};
use crate::autograd::{Gradients, ParamId};
use crate::error::{Error, Result};
use crate::nn::{Module, visitor_disagreement};
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, shape_str};

/// Steps are f32 scalars in the tensors of a state dict, and f32 holds every integer up to 2^24
/// exactly: a count tensor is accepted up to there. Exact counts of any size travel beside the
/// tensors ([`OptimizerState::counts`]), which is how checkpoints store them, as I64.
const MAX_EXACT_COUNT: f32 = 16_777_216.0;

/// How a field of a parameter's state is stored in a state dict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldKind {
    /// A tensor with the parameter's shape (a momentum buffer, a moment estimate).
    Buffer,
    /// A step count: a rank-0 tensor holding a whole number in state-dict tensors, and an
    /// exact `u64` beside them.
    Count,
}

/// One field of a parameter's state: its name in state-dict keys and its kind.
pub(crate) type Field = (&'static str, FieldKind);

/// A parameter's optimizer state, convertible to and from named tensors.
pub(crate) trait ParamState: Sized {
    /// The state's tensors with their field names, in the optimizer's layout order.
    fn to_fields(&self) -> Vec<(&'static str, Tensor)>;

    /// The state's counts, exactly, with their field names (each also in
    /// [`to_fields`](Self::to_fields), rounded to f32). None by default.
    fn counts(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Rebuilds a state from tensors already checked against the optimizer's layout.
    fn from_fields(fields: &mut Fields) -> Self;
}

/// Checked tensors of one parameter's state, taken by field name.
pub(crate) struct Fields {
    fields: Vec<(&'static str, Tensor)>,
    counts: Vec<(&'static str, u64)>,
}

impl Fields {
    /// The field named `name`, if the layout has it.
    pub(crate) fn take(&mut self, name: &str) -> Option<Tensor> {
        let at = self.fields.iter().position(|(n, _)| *n == name)?;
        Some(self.fields.swap_remove(at).1)
    }

    /// The buffer named `name`, which the layout must have.
    pub(crate) fn buffer(&mut self, name: &str) -> Tensor {
        self.take(name)
            .unwrap_or_else(|| panic!("optimizer layout has no field {name}"))
    }

    /// The count named `name`, which the layout must have.
    pub(crate) fn count(&mut self, name: &str) -> u64 {
        let at = self
            .counts
            .iter()
            .position(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("optimizer layout has no count {name}"));
        self.counts.swap_remove(at).1
    }
}

/// A step count as a rank-0 tensor, for the tensors of a state dict: exact up to 2^24, rounded
/// to the nearest f32 beyond (the exact value is in [`ParamState::counts`]).
pub(crate) fn count_tensor(count: u64) -> Tensor {
    Tensor::scalar(count as f32)
}

/// What fills one field of a parameter's state while a state dict is checked.
#[derive(Clone, Debug)]
enum Slot {
    Buffer(Tensor),
    Count(u64),
}

/// One parameter to update: its group's settings, its value, its gradient and its state.
pub(crate) struct ParamUpdate<'a, S> {
    /// The learning rate of the parameter's group.
    pub(crate) learning_rate: f64,
    /// The weight decay of the parameter's group.
    pub(crate) weight_decay: f64,
    /// The parameter's shape, for creating state.
    pub(crate) shape: &'a [usize],
    /// The parameter's value, written in place.
    pub(crate) param: &'a mut [f32],
    /// The gradient, with the parameter's shape.
    pub(crate) grad: &'a [f32],
    /// The parameter's state: vacant before its first update.
    pub(crate) state: Entry<'a, ParamId, S>,
}

/// The part every optimizer shares: groups, per-parameter state, the walk over the parameters
/// a step updates, and state-dict export and import.
#[derive(Clone, Debug)]
pub(crate) struct OptimizerState<S> {
    /// The optimizer's type name, for messages (`"Sgd"`).
    name: &'static str,
    groups: ParamGroups,
    states: HashMap<ParamId, S>,
}

impl<S: ParamState> OptimizerState<S> {
    /// No state yet; one default group with the optimizer's learning rate and weight decay.
    pub(crate) fn new(name: &'static str, learning_rate: f64, weight_decay: f64) -> Self {
        OptimizerState {
            name,
            groups: ParamGroups::new(name, learning_rate, weight_decay),
            states: HashMap::new(),
        }
    }

    #[track_caller]
    pub(crate) fn add_group(&mut self, prefix: &str, options: GroupOptions) {
        self.groups.add(self.name, prefix, options);
    }

    pub(crate) fn groups(&self) -> &[ParamGroup] {
        self.groups.as_slice()
    }

    pub(crate) fn groups_mut(&mut self) -> &mut [ParamGroup] {
        self.groups.as_mut_slice()
    }

    /// The number of parameters with state.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    /// Calls `update` for every parameter of `model` that is trainable and has a gradient in
    /// `grads`; the others are skipped and get no state.
    ///
    /// The parameter is written in place (copied first only if a tape still shares it).
    ///
    /// # Panics
    ///
    /// If a gradient's shape differs from its parameter's, an added group selects no
    /// parameter of `model` (a mistyped prefix would otherwise train at the default rate),
    /// `model`'s two parameter visitors disagree, or `model` has no trainable parameter (a
    /// step would change nothing, and training would report losses of a model that never
    /// learns).
    #[track_caller]
    pub(crate) fn for_each_update(
        &mut self,
        model: &mut dyn Module,
        grads: &Gradients,
        mut update: impl FnMut(ParamUpdate<'_, S>),
    ) {
        let op = self.name;
        if let Some(disagreement) = visitor_disagreement(model) {
            contract_violation(
                &format!("{op}::step"),
                "the model's visit_params and visit_params_mut must visit the same parameters",
                disagreement,
            );
        }
        let (mut params, mut trainable) = (0usize, 0usize);
        model.visit_params(&mut |_, p| {
            params += 1;
            trainable += usize::from(p.requires_grad());
        });
        if trainable == 0 {
            contract_violation(
                &format!("{op}::step"),
                "the model must have at least one trainable parameter",
                format_args!("{params} parameters visited, {trainable} trainable"),
            );
        }
        let param_groups = &self.groups;
        let groups = param_groups.as_slice();
        let states = &mut self.states;
        let mut selected = vec![0usize; groups.len()];
        model.visit_params_mut(&mut |name, param| {
            let index = param_groups.index_of(name);
            selected[index] += 1;
            if !param.requires_grad() {
                return;
            }
            let Some(grad) = grads.get(param) else {
                return;
            };
            if grad.shape() != param.shape() {
                contract_violation(
                    &format!("{op}::step"),
                    format_args!("gradient of `{name}` must have the parameter's shape"),
                    format_args!(
                        "parameter {}, gradient {}",
                        shape_str(param.shape()),
                        shape_str(grad.shape())
                    ),
                );
            }
            let group = &groups[index];
            let id = param.id();
            update(ParamUpdate {
                learning_rate: group.learning_rate(),
                weight_decay: group.weight_decay(),
                shape: grad.shape(),
                param: param.value_mut().as_slice_mut(),
                grad: grad.as_slice(),
                state: states.entry(id),
            });
        });
        if let Some(unused) = (1..groups.len()).find(|&i| selected[i] == 0) {
            contract_violation(
                &format!("{op}::step"),
                "every parameter group must select at least one parameter",
                format_args!(
                    "prefix {:?} matches no parameter name of the model",
                    groups[unused].prefix().unwrap_or_default()
                ),
            );
        }
    }

    /// The state as `(key, tensor)` pairs: `state.<parameter name>.<field>` for every
    /// parameter of `model` with state, in `model`'s order, then
    /// `param_groups.<index>.learning_rate` for every group.
    pub(crate) fn state_dict(&self, model: &dyn Module) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        model.visit_params(&mut |name, param| {
            if let Some(state) = self.states.get(&param.id()) {
                for (field, tensor) in state.to_fields() {
                    out.push((format!("state.{name}.{field}"), tensor));
                }
            }
        });
        for (i, group) in self.groups().iter().enumerate() {
            out.push((group_key(i), Tensor::scalar(group.learning_rate() as f32)));
        }
        out
    }

    /// The exact counts of the state as `(key, count)` pairs, under the keys
    /// [`OptimizerState::state_dict`] gives their (rounded) tensors, in the same order.
    pub(crate) fn counts(&self, model: &dyn Module) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        model.visit_params(&mut |name, param| {
            if let Some(state) = self.states.get(&param.id()) {
                for (field, count) in state.counts() {
                    out.push((format!("state.{name}.{field}"), count));
                }
            }
        });
        out
    }

    /// Replaces the state and the groups' learning rates with those in `entries` (as made by
    /// [`OptimizerState::state_dict`]), matching parameters of `model` by name. `layout` lists
    /// the fields the optimizer keeps for each parameter with state. Either everything loads or
    /// nothing does.
    ///
    /// Exact counts (as made by [`OptimizerState::counts`], empty for a plain state dict) take
    /// the place of the tensor of the same key in `entries`, which may then be absent or hold
    /// its f32 rounding. A count only in `entries` must be a whole number up to 2^24, the range
    /// f32 holds exactly.
    pub(crate) fn load_state_dict_with_counts(
        &mut self,
        model: &dyn Module,
        layout: &[Field],
        entries: &[(String, Tensor)],
        counts: &[(String, u64)],
    ) -> Result<()> {
        let exact: HashMap<&str, u64> = counts.iter().map(|(k, c)| (k.as_str(), *c)).collect();
        // Keys of exact counts without a tensor are checked like the others, as scalars.
        let with_tensor: std::collections::HashSet<&str> =
            entries.iter().map(|(k, _)| k.as_str()).collect();
        let placeholders: Vec<(String, Tensor)> = counts
            .iter()
            .filter(|(k, _)| !with_tensor.contains(k.as_str()))
            .map(|(k, c)| (k.clone(), count_tensor(*c)))
            .collect();
        let mut params: HashMap<String, (ParamId, Vec<usize>)> = HashMap::new();
        model.visit_params(&mut |name, param| {
            params.insert(name.to_string(), (param.id(), param.shape().to_vec()));
        });
        let mut found: HashMap<&str, Vec<Option<Slot>>> = HashMap::new();
        let mut rates: Vec<Option<f32>> = vec![None; self.groups().len()];
        let (mut unexpected, mut mismatched) = (Vec::new(), Vec::new());
        for (key, tensor) in entries.iter().chain(&placeholders) {
            let mut mismatch = |expected: String| {
                mismatched.push(format!(
                    "{key}: expected {expected}, found {}",
                    describe(tensor)
                ));
            };
            if let Some(index) = parse_group_key(key).filter(|&i| i < rates.len()) {
                match scalar_value(tensor) {
                    Some(rate) if rate >= 0.0 && rate.is_finite() => rates[index] = Some(rate),
                    _ => mismatch("a finite, non-negative scalar".into()),
                }
                continue;
            }
            let slot = key
                .strip_prefix("state.")
                .and_then(|rest| rest.rsplit_once('.'))
                .and_then(|(name, field)| {
                    let (name, (_, shape)) = params.get_key_value(name)?;
                    let at = layout.iter().position(|(f, _)| *f == field)?;
                    Some((name.as_str(), shape, at))
                });
            let Some((name, shape, at)) = slot else {
                unexpected.push(key.clone());
                continue;
            };
            let slot = match layout[at].1 {
                FieldKind::Buffer => (tensor.shape() == shape.as_slice()
                    && !exact.contains_key(key.as_str()))
                .then(|| Slot::Buffer(tensor.clone())),
                FieldKind::Count => match exact.get(key.as_str()) {
                    Some(&count) if tensor.ndim() == 0 => Some(Slot::Count(count)),
                    _ => scalar_value(tensor)
                        .filter(|c| (0.0..=MAX_EXACT_COUNT).contains(c) && c.fract() == 0.0)
                        .map(|c| Slot::Count(c as u64)),
                },
            };
            let Some(slot) = slot else {
                mismatch(match layout[at].1 {
                    FieldKind::Buffer => format!("shape {}", shape_str(shape)),
                    FieldKind::Count => "a scalar holding a whole number".into(),
                });
                continue;
            };
            let slots = found
                .entry(name)
                .or_insert_with(|| vec![None; layout.len()]);
            if slots[at].replace(slot).is_some() {
                unexpected.push(format!("{key} (repeated)"));
            }
        }
        let mut missing = Vec::new();
        for (name, slots) in &found {
            for (slot, (field, _)) in slots.iter().zip(layout) {
                if slot.is_none() {
                    missing.push(format!("state.{name}.{field}"));
                }
            }
        }
        for (i, rate) in rates.iter().enumerate() {
            if rate.is_none() {
                missing.push(group_key(i));
            }
        }
        if !(missing.is_empty() && unexpected.is_empty() && mismatched.is_empty()) {
            missing.sort();
            return Err(Error::StateDict {
                target: self.name.to_string(),
                missing,
                unexpected,
                mismatched,
            });
        }
        self.states = found
            .into_iter()
            .map(|(name, slots)| {
                let mut fields = Fields {
                    fields: Vec::new(),
                    counts: Vec::new(),
                };
                for ((field, _), slot) in layout.iter().zip(slots) {
                    match slot.expect("every slot was checked for presence above") {
                        Slot::Buffer(tensor) => fields.fields.push((*field, tensor)),
                        Slot::Count(count) => fields.counts.push((*field, count)),
                    }
                }
                (params[name].0, S::from_fields(&mut fields))
            })
            .collect();
        for (group, rate) in self.groups.as_mut_slice().iter_mut().zip(rates) {
            let rate = rate.expect("every rate was checked for presence above");
            // Rates are stored in f32: keep the exact f64 rate when the stored one is its
            // rounding, so an unchanged rate survives the round trip bit for bit.
            if group.learning_rate() as f32 != rate {
                group.set_learning_rate(f64::from(rate));
            }
        }
        Ok(())
    }
}

fn group_key(index: usize) -> String {
    format!("param_groups.{index}.learning_rate")
}

fn parse_group_key(key: &str) -> Option<usize> {
    let index = key
        .strip_prefix("param_groups.")?
        .strip_suffix(".learning_rate")?;
    index.parse().ok()
}

/// The value of a rank-0 tensor.
fn scalar_value(tensor: &Tensor) -> Option<f32> {
    (tensor.ndim() == 0).then(|| tensor.item())
}

/// A tensor as an error message shows it: a scalar by its value, anything else by its shape.
fn describe(tensor: &Tensor) -> String {
    match scalar_value(tensor) {
        Some(value) => format!("scalar {value}"),
        None => format!("shape {}", shape_str(tensor.shape())),
    }
}
