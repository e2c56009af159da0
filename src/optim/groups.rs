//! Parameter groups: parameters selected by name prefix, each group with its own learning rate
//! and weight decay (for fine-tuning a backbone slower than a new head).

use super::expect_non_negative;
use crate::nn::name_has_prefix;
use crate::tensor::check::contract_violation;

/// Overrides for one parameter group; a `None` field inherits the optimizer's setting.
///
/// # Examples
///
/// ```
/// use striate::optim::{GroupOptions, Sgd, SgdConfig};
///
/// // The backbone learns 100 times slower than the rest, without weight decay.
/// let sgd = Sgd::new(SgdConfig { learning_rate: 1e-2, weight_decay: 5e-4, ..Default::default() })
///     .with_group(
///         "features",
///         GroupOptions { learning_rate: Some(1e-4), weight_decay: Some(0.0) },
///     );
/// # let _ = sgd;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GroupOptions {
    /// The group's learning rate (PyTorch's per-group `lr`).
    pub learning_rate: Option<f64>,
    /// The group's weight decay (PyTorch's per-group `weight_decay`).
    pub weight_decay: Option<f64>,
}

/// One parameter group as an optimizer holds it: the parameters it selects, its current and
/// initial learning rate, and its weight decay.
///
/// Group 0 of every optimizer is the default group: it selects every parameter no other group
/// claims, and its settings are the optimizer's config.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGroup {
    prefix: Option<String>,
    initial_learning_rate: f64,
    learning_rate: f64,
    weight_decay: f64,
}

impl ParamGroup {
    fn new(op: &str, prefix: Option<String>, learning_rate: f64, weight_decay: f64) -> Self {
        expect_non_negative(op, "learning_rate", learning_rate);
        expect_non_negative(op, "weight_decay", weight_decay);
        ParamGroup {
            prefix,
            initial_learning_rate: learning_rate,
            learning_rate,
            weight_decay,
        }
    }

    /// The name prefix that selects the group's parameters; `None` for the default group.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// The learning rate used by the next step.
    pub fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    /// The learning rate the group was configured with, which schedules scale from (PyTorch's
    /// `initial_lr`).
    pub fn initial_learning_rate(&self) -> f64 {
        self.initial_learning_rate
    }

    /// The weight decay.
    pub fn weight_decay(&self) -> f64 {
        self.weight_decay
    }

    /// Sets the learning rate used from the next step on.
    ///
    /// # Panics
    ///
    /// If `learning_rate` is negative or not finite.
    pub fn set_learning_rate(&mut self, learning_rate: f64) {
        expect_non_negative(
            "ParamGroup::set_learning_rate",
            "learning_rate",
            learning_rate,
        );
        self.learning_rate = learning_rate;
    }

    /// Whether the group selects the parameter with this hierarchical name, by
    /// [`name_has_prefix`]'s rule.
    fn selects(&self, name: &str) -> bool {
        self.prefix
            .as_deref()
            .is_none_or(|prefix| name_has_prefix(name, prefix))
    }
}

/// The groups of one optimizer: the default group first, then the added groups in the order
/// they were added.
#[derive(Clone, Debug)]
pub(crate) struct ParamGroups {
    groups: Vec<ParamGroup>,
}

impl ParamGroups {
    /// Only the default group, with the optimizer's settings.
    pub(crate) fn new(op: &str, learning_rate: f64, weight_decay: f64) -> Self {
        ParamGroups {
            groups: vec![ParamGroup::new(op, None, learning_rate, weight_decay)],
        }
    }

    /// Adds a group selecting the parameters whose name starts with `prefix`.
    #[track_caller]
    pub(crate) fn add(&mut self, op: &str, prefix: &str, options: GroupOptions) {
        let prefix = prefix.to_string();
        if prefix.is_empty() || prefix == "." {
            contract_violation(
                op,
                "a parameter group needs a non-empty prefix (the default group takes the rest)",
                format_args!("prefix {prefix:?}"),
            );
        }
        if self
            .groups
            .iter()
            .any(|g| g.prefix.as_ref() == Some(&prefix))
        {
            contract_violation(
                op,
                "parameter group prefixes must be distinct",
                format_args!("prefix {prefix:?} added twice"),
            );
        }
        let default = &self.groups[0];
        let group = ParamGroup::new(
            op,
            Some(prefix),
            options
                .learning_rate
                .unwrap_or(default.initial_learning_rate),
            options.weight_decay.unwrap_or(default.weight_decay),
        );
        self.groups.push(group);
    }

    /// The index of the group that takes the parameter named `name`: the first added group
    /// whose prefix selects it, else the default group (0).
    pub(crate) fn index_of(&self, name: &str) -> usize {
        self.groups[1..]
            .iter()
            .position(|g| g.selects(name))
            .map_or(0, |i| i + 1)
    }

    pub(crate) fn as_slice(&self) -> &[ParamGroup] {
        &self.groups
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [ParamGroup] {
        &mut self.groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> ParamGroups {
        let mut groups = ParamGroups::new("test", 0.1, 0.01);
        groups.add(
            "test",
            "features.",
            GroupOptions {
                learning_rate: Some(1e-3),
                ..Default::default()
            },
        );
        groups.add("test", "1", GroupOptions::default());
        groups.add("test", "features.0", GroupOptions::default());
        groups
    }

    #[test]
    fn first_matching_group_wins_and_default_takes_the_rest() {
        let groups = groups();
        assert_eq!(groups.index_of("features.0.weight"), 1);
        assert_eq!(groups.index_of("features.3.bias"), 1);
        assert_eq!(groups.index_of("1.weight"), 2);
        assert_eq!(groups.index_of("1"), 2);
        assert_eq!(groups.index_of("10.weight"), 0);
        assert_eq!(groups.index_of("featuresx.weight"), 0);
        assert_eq!(groups.index_of("classifier.weight"), 0);
    }

    #[test]
    fn unset_options_inherit_the_defaults() {
        let groups = groups();
        let g = &groups.as_slice()[1];
        assert_eq!(g.prefix(), Some("features."));
        assert_eq!((g.learning_rate(), g.weight_decay()), (1e-3, 0.01));
        let g = &groups.as_slice()[2];
        assert_eq!((g.initial_learning_rate(), g.weight_decay()), (0.1, 0.01));
        assert_eq!(groups.as_slice()[0].prefix(), None);
    }

    #[test]
    #[should_panic(expected = "prefixes must be distinct")]
    fn duplicate_prefix_panics() {
        let mut groups = groups();
        groups.add("test", "1", GroupOptions::default());
    }

    #[test]
    #[should_panic(expected = "test: learning_rate must be finite and not negative")]
    fn negative_group_learning_rate_panics() {
        let mut groups = groups();
        groups.add(
            "test",
            "head",
            GroupOptions {
                learning_rate: Some(-1.0),
                ..Default::default()
            },
        );
    }

    #[test]
    #[should_panic(expected = "learning_rate = NaN")]
    fn nan_learning_rate_panics() {
        groups().as_mut_slice()[0].set_learning_rate(f64::NAN);
    }
}
