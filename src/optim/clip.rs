//! Gradient clipping before a step: by global norm and by value, as
//! `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.

use crate::autograd::{Gradients, ParamId};
use crate::error::{Error, Result};
use crate::tensor::check::contract_violation;

/// Scales every parameter gradient by one factor so that their global L2 norm (the norm of all
/// gradients taken as one vector) is at most `max_norm`, and returns the norm before clipping.
///
/// As in PyTorch, the factor is `max_norm / (norm + 1e-6)` when that is below 1; otherwise the
/// gradients are left as they are. The norm is accumulated in `f64`, in a fixed order, so it
/// does not depend on the order of `grads`.
///
/// # Errors
///
/// [`Error::NonFinite`] if the norm is NaN or infinite (a gradient overflowed or is NaN);
/// the gradients are then left untouched, so the caller can skip the step or stop
/// (PyTorch's `error_if_nonfinite=True`).
///
/// # Panics
///
/// If `max_norm` is negative or NaN.
///
/// # Examples
///
/// ```
/// use striate::optim::clip_grad_norm;
/// use striate::{Gradients, Param, Tensor};
///
/// let a = Param::new("a", Tensor::zeros(&[2]));
/// let b = Param::new("b", Tensor::zeros(&[1]));
/// let mut grads = Gradients::default();
/// grads.insert(a.id(), Tensor::from_vec(vec![3.0, 0.0], &[2]).unwrap());
/// grads.insert(b.id(), Tensor::from_vec(vec![4.0], &[1]).unwrap());
///
/// let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
/// assert_eq!(norm, 5.0);
/// let clipped = grads.get(&b).unwrap().item();
/// assert!((clipped - 0.8).abs() < 1e-6);
/// ```
#[track_caller]
pub fn clip_grad_norm(grads: &mut Gradients, max_norm: f32) -> Result<f32> {
    expect_bound("clip_grad_norm", "max_norm", max_norm);
    let mut ids: Vec<ParamId> = grads.iter().map(|(id, _)| id).collect();
    ids.sort_unstable();
    let sum_of_squares: f64 = ids
        .iter()
        .filter_map(|&id| grads.get_by_id(id))
        .flat_map(|g| g.as_slice())
        .map(|&x| f64::from(x) * f64::from(x))
        .sum();
    let norm = sum_of_squares.sqrt() as f32;
    if !norm.is_finite() {
        return Err(Error::NonFinite {
            what: "total gradient norm".into(),
            value: norm,
        });
    }
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        for (_, grad) in grads.iter_mut() {
            grad.as_slice_mut().iter_mut().for_each(|x| *x *= factor);
        }
    }
    Ok(norm)
}

/// Clamps every element of every parameter gradient to `[-clip_value, clip_value]`. NaN
/// elements stay NaN, as in PyTorch.
///
/// # Panics
///
/// If `clip_value` is negative or NaN.
///
/// # Examples
///
/// ```
/// use striate::optim::clip_grad_value;
/// use striate::{Gradients, Param, Tensor};
///
/// let w = Param::new("w", Tensor::zeros(&[3]));
/// let mut grads = Gradients::default();
/// grads.insert(w.id(), Tensor::from_vec(vec![-2.0, 0.5, 7.0], &[3]).unwrap());
/// clip_grad_value(&mut grads, 1.0);
/// assert_eq!(grads.get(&w).unwrap().as_slice(), &[-1.0, 0.5, 1.0]);
/// ```
#[track_caller]
pub fn clip_grad_value(grads: &mut Gradients, clip_value: f32) {
    expect_bound("clip_grad_value", "clip_value", clip_value);
    for (_, grad) in grads.iter_mut() {
        for x in grad.as_slice_mut() {
            *x = x.clamp(-clip_value, clip_value);
        }
    }
}

#[track_caller]
fn expect_bound(op: &str, name: &str, value: f32) {
    if value.is_nan() || value < 0.0 {
        contract_violation(
            op,
            format_args!("{name} must not be negative or NaN"),
            format_args!("{name} = {value}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_model::{TwoParams, grads_for};

    #[test]
    fn small_gradients_are_left_alone() {
        let model = TwoParams::new([0.0; 2], [0.0]);
        let mut grads = grads_for(&model, Some(&[0.6, 0.0]), Some(&[-0.8]));
        let before = grads.clone();
        assert_eq!(clip_grad_norm(&mut grads, 1.5).unwrap(), 1.0);
        assert_eq!(grads.get(&model.weight), before.get(&model.weight));
        assert_eq!(grads.get(&model.bias), before.get(&model.bias));
    }

    #[test]
    fn large_gradients_are_scaled_to_the_bound() {
        let model = TwoParams::new([0.0; 2], [0.0]);
        let mut grads = grads_for(&model, Some(&[6.0, 0.0]), Some(&[-8.0]));
        assert_eq!(clip_grad_norm(&mut grads, 2.0).unwrap(), 10.0);
        let factor = 2.0 / (10.0 + 1e-6);
        assert_eq!(
            grads.get(&model.weight).unwrap().as_slice(),
            &[6.0 * factor, 0.0]
        );
        assert_eq!(grads.get(&model.bias).unwrap().as_slice(), &[-8.0 * factor]);
        let norm_after = clip_grad_norm(&mut grads, 2.0).unwrap();
        assert!((norm_after - 2.0).abs() < 1e-5);
    }

    #[test]
    fn non_finite_norm_is_an_error_and_leaves_gradients_untouched() {
        let model = TwoParams::new([0.0; 2], [0.0]);
        let mut grads = grads_for(&model, Some(&[f32::NAN, 1.0]), Some(&[1.0]));
        let err = clip_grad_norm(&mut grads, 1.0).unwrap_err();
        assert_eq!(err.to_string(), "total gradient norm is not finite (NaN)");
        assert_eq!(grads.get(&model.bias).unwrap().as_slice(), &[1.0]);
        let mut grads = grads_for(&model, Some(&[f32::MAX, f32::MAX]), None);
        assert!(matches!(
            clip_grad_norm(&mut grads, 1.0),
            Err(Error::NonFinite { value, .. }) if value == f32::INFINITY
        ));
    }

    #[test]
    fn clip_by_value_keeps_nan() {
        let model = TwoParams::new([0.0; 2], [0.0]);
        let mut grads = grads_for(&model, Some(&[f32::NAN, -0.25]), Some(&[f32::INFINITY]));
        clip_grad_value(&mut grads, 0.5);
        let w = grads.get(&model.weight).unwrap().as_slice();
        assert!(w[0].is_nan() && w[1] == -0.25);
        assert_eq!(grads.get(&model.bias).unwrap().as_slice(), &[0.5]);
    }

    #[test]
    #[should_panic(
        expected = "clip_grad_norm: max_norm must not be negative or NaN (max_norm = -1)"
    )]
    fn negative_max_norm_panics() {
        let model = TwoParams::new([0.0; 2], [0.0]);
        clip_grad_norm(&mut grads_for(&model, None, None), -1.0).ok();
    }
}
