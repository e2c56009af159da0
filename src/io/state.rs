//! A model's named state (parameters and buffers) and loading it back by name.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::error::{Error, Result};
use crate::nn::Module;
use crate::tensor::Tensor;
use crate::tensor::check::shape_str;

/// A model's state as `(name, tensor)` pairs: every parameter, then every buffer (batch norm's
/// `running_mean`, `running_var`, `num_batches_tracked`), under the hierarchical names of
/// [`Module::visit_params`] and [`Module::visit_buffers`] — PyTorch's `state_dict()` keys.
///
/// The tensors share their buffers with the model (copy-on-write), so taking the state is
/// cheap.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::io::state_dict;
/// use striate::nn::{BatchNorm1d, Dense, Sequential};
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let model = Sequential::new().push(Dense::new(4, 3, &mut rng)).push(BatchNorm1d::new(3));
/// let names: Vec<String> = state_dict(&model).into_iter().map(|(name, _)| name).collect();
/// assert_eq!(
///     names,
///     ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]
/// );
/// ```
pub fn state_dict(model: &dyn Module) -> Vec<(String, Tensor)> {
    let mut state = Vec::new();
    model.visit_params(&mut |name, param| state.push((name.to_string(), param.value().clone())));
    model.visit_buffers(&mut |name, buffer| state.push((name.to_string(), buffer.clone())));
    state
}

/// What a non-strict load ([`load_state_dict_partial`], [`crate::io::load_weights_partial`])
/// did: the keys it loaded and the ones it skipped, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Keys loaded into the model, in the model's order.
    pub loaded: Vec<String>,
    /// Keys the model has that the state lacks; they keep their current values.
    pub missing: Vec<String>,
    /// Keys in the state that the model has no place for.
    pub unexpected: Vec<String>,
    /// Keys whose tensor has another shape than the model's, each as
    /// `key: expected [..], found [..]`; the model keeps its values.
    pub mismatched: Vec<String>,
}

impl LoadReport {
    /// Whether every key of the model was loaded and every key of the state was used.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }

    /// The report as an [`Error::StateDict`] for `target`.
    pub(crate) fn into_error(self, target: String) -> Error {
        Error::StateDict {
            target,
            missing: self.missing,
            unexpected: self.unexpected,
            mismatched: self.mismatched,
        }
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loaded {} tensors", self.loaded.len())?;
        for (label, keys) in [
            ("missing", &self.missing),
            ("unexpected", &self.unexpected),
            ("mismatched", &self.mismatched),
        ] {
            if !keys.is_empty() {
                write!(f, "; {label}: {}", keys.join(", "))?;
            }
        }
        Ok(())
    }
}

/// Loads `state` into `model` by name; every parameter and buffer of the model must be present
/// with its shape, and every entry of `state` must be used (PyTorch's
/// `load_state_dict(strict=True)`). Parameters keep their identity ([`crate::ParamId`]), so an
/// optimizer's state stays attached.
///
/// # Errors
///
/// [`Error::StateDict`] listing every missing key, unexpected key and shape mismatch; nothing
/// is loaded then.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::io::{load_state_dict, state_dict};
/// use striate::nn::{Dense, Module};
/// use striate::Tensor;
///
/// let source = Dense::new(4, 3, &mut StdRng::seed_from_u64(0));
/// let mut target = Dense::new(4, 3, &mut StdRng::seed_from_u64(1));
/// load_state_dict(&mut target, &state_dict(&source)).unwrap();
/// assert_eq!(target.weight.value(), source.weight.value());
///
/// let mut wider = Dense::new(4, 5, &mut StdRng::seed_from_u64(1));
/// let err = load_state_dict(&mut wider, &state_dict(&source)).unwrap_err();
/// assert!(err.to_string().contains("weight: expected shape [5, 4], found shape [3, 4]"));
/// ```
pub fn load_state_dict(model: &mut dyn Module, state: &[(String, Tensor)]) -> Result<()> {
    let target = model.describe();
    let plan = LoadPlan::new(model, state);
    if !plan.report.is_complete() {
        return Err(plan.report.into_error(target));
    }
    plan.apply(model);
    Ok(())
}

/// Loads the entries of `state` that fit `model` and skips the rest (PyTorch's
/// `load_state_dict(strict=False)`, and like Keras's `skip_mismatch=True` it also skips
/// entries whose shape differs, such as a classifier head trained for another number of
/// classes). The report says what was loaded and what was skipped.
///
/// # Errors
///
/// [`Error::StateDict`] if `state` is not empty and not a single entry fits the model: that is
/// almost always a naming mismatch (a prefix too many or too few), not a partial load. Nothing
/// is loaded then.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::io::{load_state_dict_partial, state_dict};
/// use striate::nn::{Dense, Module, Relu, Sequential};
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let pretrained = Sequential::new().push(Dense::new(8, 16, &mut rng)).push(Relu).push(Dense::new(16, 1000, &mut rng));
/// let mut model = Sequential::new().push(Dense::new(8, 16, &mut rng)).push(Relu).push(Dense::new(16, 10, &mut rng));
/// let report = load_state_dict_partial(&mut model, &state_dict(&pretrained)).unwrap();
/// assert_eq!(report.loaded, ["0.weight", "0.bias"]);
/// assert_eq!(report.mismatched.len(), 2); // the 10-class head keeps its fresh initialisation
/// ```
pub fn load_state_dict_partial(
    model: &mut dyn Module,
    state: &[(String, Tensor)],
) -> Result<LoadReport> {
    let target = model.describe();
    let plan = LoadPlan::new(model, state);
    if plan.report.loaded.is_empty() && !state.is_empty() {
        return Err(plan.report.into_error(target));
    }
    Ok(plan.apply(model))
}

/// The outcome of matching a state against a model, computed before anything is written so
/// that a failed load leaves the model untouched.
pub(crate) struct LoadPlan<'s> {
    /// The tensors to load, by the model's key.
    values: HashMap<&'s str, &'s Tensor>,
    pub(crate) report: LoadReport,
}

impl<'s> LoadPlan<'s> {
    /// Matches `state` against the parameters and buffers of `model`.
    pub(crate) fn new(model: &dyn Module, state: &'s [(String, Tensor)]) -> LoadPlan<'s> {
        let mut by_name: HashMap<&str, &Tensor> = HashMap::with_capacity(state.len());
        let mut report = LoadReport::default();
        let mut repeated = HashSet::new();
        for (name, tensor) in state {
            if by_name.insert(name, tensor).is_some() && repeated.insert(name.as_str()) {
                report.unexpected.push(format!("{name} (repeated)"));
            }
        }
        let mut values = HashMap::new();
        let mut seen = HashSet::new();
        let mut check = |name: &str, shape: &[usize]| {
            seen.insert(name.to_string());
            match by_name.get_key_value(name) {
                None => report.missing.push(name.to_string()),
                Some((_, found)) if found.shape() != shape => report.mismatched.push(format!(
                    "{name}: expected shape {}, found shape {}",
                    shape_str(shape),
                    shape_str(found.shape())
                )),
                Some((&key, &found)) => {
                    report.loaded.push(name.to_string());
                    values.insert(key, found);
                }
            }
        };
        model.visit_params(&mut |name, param| check(name, param.shape()));
        model.visit_buffers(&mut |name, buffer| check(name, buffer.shape()));
        for (name, _) in state {
            if !seen.contains(name) && !repeated.contains(name.as_str()) {
                report.unexpected.push(name.clone());
            }
        }
        LoadPlan { values, report }
    }

    /// Writes the matched tensors into `model` and returns the report.
    pub(crate) fn apply(self, model: &mut dyn Module) -> LoadReport {
        let values = self.values;
        model.visit_params_mut(&mut |name, param| {
            if let Some(&value) = values.get(name) {
                param.set_value(value.clone());
            }
        });
        model.visit_buffers_mut(&mut |name, buffer| {
            if let Some(&value) = values.get(name) {
                *buffer = value.clone();
            }
        });
        self.report
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::nn::{BatchNorm2d, Conv2dConfig, Sequential};

    fn net(seed: u64, out: usize) -> Sequential {
        let mut rng = StdRng::seed_from_u64(seed);
        Sequential::new()
            .push(Conv2dConfig::new(2, out, 3).bias(false).init(&mut rng))
            .push(BatchNorm2d::new(out))
    }

    #[test]
    fn round_trip_includes_buffers() {
        let source = net(0, 4);
        let tape = crate::Tape::training();
        source.forward(tape.input(Tensor::ones(&[2, 2, 5, 5])));
        let mut target = net(1, 4);
        load_state_dict(&mut target, &state_dict(&source)).unwrap();
        for ((a, x), (b, y)) in state_dict(&source).iter().zip(&state_dict(&target)) {
            assert_eq!((a, x), (b, y));
        }
    }

    #[test]
    fn strict_load_lists_every_problem_and_loads_nothing() {
        let mut state = state_dict(&net(0, 4));
        state.retain(|(name, _)| name != "1.running_var");
        state.push(("extra.weight".into(), Tensor::zeros(&[1])));
        let mut target = net(1, 3);
        let before = state_dict(&target);
        let Err(Error::StateDict {
            missing,
            unexpected,
            mismatched,
            ..
        }) = load_state_dict(&mut target, &state)
        else {
            panic!("expected a state-dict error");
        };
        assert_eq!(missing, ["1.running_var"]);
        assert_eq!(unexpected, ["extra.weight"]);
        assert_eq!(mismatched.len(), 4); // conv weight, γ, β, running mean
        assert!(mismatched[0].starts_with("0.weight: expected shape [3, 2, 3, 3], found"));
        assert_eq!(state_dict(&target), before);
    }

    #[test]
    fn partial_load_skips_what_does_not_fit() {
        let mut state = state_dict(&net(0, 4));
        state.push(("extra".into(), Tensor::zeros(&[1])));
        state.retain(|(name, _)| name != "1.bias");
        let mut target = net(1, 4);
        let report = load_state_dict_partial(&mut target, &state).unwrap();
        assert_eq!(report.missing, ["1.bias"]);
        assert_eq!(report.unexpected, ["extra"]);
        assert_eq!(report.loaded.len(), 5);
        assert!(!report.is_complete());
        assert_eq!(
            report.to_string(),
            "loaded 5 tensors; missing: 1.bias; unexpected: extra"
        );
    }

    #[test]
    fn partial_load_that_matches_nothing_is_an_error() {
        let state: Vec<_> = state_dict(&net(0, 4))
            .into_iter()
            .map(|(name, t)| (format!("backbone.{name}"), t))
            .collect();
        let err = load_state_dict_partial(&mut net(1, 4), &state).unwrap_err();
        assert!(
            err.to_string()
                .contains("unexpected keys backbone.0.weight")
        );
    }
}
