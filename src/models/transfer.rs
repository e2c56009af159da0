//! Transfer learning: freezing and unfreezing parameters by name prefix.

use crate::nn::{Module, name_has_prefix};
use crate::tensor::check::contract_violation;

/// Freezes every parameter whose hierarchical name lies under `prefix` (by
/// [`name_has_prefix`]: `"features"` selects `"features.0.weight"`, `"layer1"` does not
/// select `"layer10.weight"`, `""` selects everything) and returns how many it froze. Frozen
/// parameters get no gradient and optimizers skip them; batch norm layers whose γ is frozen
/// stay in inference mode (see the [module docs](super#transfer-learning)).
///
/// # Panics
///
/// If no parameter lies under `prefix`: a prefix in the code that selects nothing is a typo,
/// and silently training a network meant to be frozen would waste the run. The message lists
/// the model's top-level names.
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::{freeze, resnet18, unfreeze};
/// use striate::nn::Module;
///
/// let mut model = resnet18(10, &mut StdRng::seed_from_u64(0));
/// let frozen = freeze(&mut model, "");
/// unfreeze(&mut model, "fc"); // train the head only
/// assert_eq!(model.num_trainable_params(), 512 * 10 + 10);
/// assert_eq!(frozen, 62); // every weight, bias, γ and β
/// ```
#[track_caller]
pub fn freeze(model: &mut dyn Module, prefix: &str) -> usize {
    set_requires_grad("freeze", model, prefix, false)
}

/// Unfreezes every parameter under `prefix` (see [`freeze`]) and returns how many it
/// selected, frozen or not. Unfreezing a backbone for a second, slower fine-tuning phase is
/// usually paired with a parameter group of lower learning rate (see the
/// [module docs](super#transfer-learning)).
///
/// # Panics
///
/// If no parameter lies under `prefix`.
#[track_caller]
pub fn unfreeze(model: &mut dyn Module, prefix: &str) -> usize {
    set_requires_grad("unfreeze", model, prefix, true)
}

#[track_caller]
fn set_requires_grad(op: &str, model: &mut dyn Module, prefix: &str, requires_grad: bool) -> usize {
    let mut selected = 0;
    model.visit_params_mut(&mut |name, param| {
        if name_has_prefix(name, prefix) {
            param.set_requires_grad(requires_grad);
            selected += 1;
        }
    });
    if selected == 0 {
        let mut top_level: Vec<String> = Vec::new();
        model.visit_params(&mut |name, _| {
            let head = name.split('.').next().unwrap_or(name);
            if top_level.last().map(String::as_str) != Some(head) {
                top_level.push(head.to_string());
            }
        });
        contract_violation(
            op,
            format_args!(
                "prefix {prefix:?} selects no parameter of {}",
                model.describe()
            ),
            format_args!("top-level names: {}", top_level.join(", ")),
        );
    }
    selected
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::models::mnist_cnn;

    #[test]
    fn prefixes_stop_at_name_boundaries() {
        let mut model = mnist_cnn(10, &mut StdRng::seed_from_u64(0));
        assert_eq!(freeze(&mut model, "0"), 2);
        assert_eq!(freeze(&mut model, "7."), 2);
        assert_eq!(
            model.num_trainable_params(),
            64 * 32 * 9 + 64 + 128 * 10 + 10
        );
        assert_eq!(unfreeze(&mut model, ""), 8);
        assert_eq!(model.num_trainable_params(), model.num_params());
    }

    #[test]
    #[should_panic(
        expected = "freeze: prefix \"featurs\" selects no parameter of Sequential(10 layers) (top-level names: 0, 3, 7, 9)"
    )]
    fn a_prefix_that_selects_nothing_panics() {
        let mut model = mnist_cnn(10, &mut StdRng::seed_from_u64(0));
        freeze(&mut model, "featurs");
    }
}
