//! A model that carries its preprocessing: [`Preprocessing`] (input size and per-channel
//! normalisation) and [`Classifier`], which turns 8-bit pixels into a class with the same
//! arithmetic the model was trained with. `io::save_classifier` keeps both in the weights
//! file's metadata.

use std::fmt;

use super::Module;
use crate::autograd::{Param, Var};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, shape_str};

/// How raw 8-bit pixels become a model's input: scaled to `[0, 1]` (`/ 255`, as torchvision's
/// `ToTensor`), then `(x - mean[c]) / std[c]` per channel (torchvision's `Normalize`), for
/// images of `input_shape = [channels, height, width]`.
///
/// # Examples
///
/// ```
/// use striate::nn::Preprocessing;
///
/// let mnist = Preprocessing::mnist();
/// let image = mnist.image_from_u8(&[0u8; 28 * 28])?;
/// assert_eq!(image.shape(), &[1, 1, 28, 28]);
/// assert!((image.as_slice()[0] - (0.0 - 0.1307) / 0.3081).abs() < 1e-6);
/// # Ok::<(), striate::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessing {
    input_shape: [usize; 3],
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Preprocessing {
    /// Images of `input_shape` `[channels, height, width]`, normalised with one `mean` and
    /// `std` per channel (or one for all).
    ///
    /// # Panics
    ///
    /// If `mean` and `std` differ in length, are empty, hold neither 1 nor `channels` values,
    /// a mean is not finite or a std is not positive and finite.
    #[track_caller]
    pub fn new(input_shape: [usize; 3], mean: &[f32], std: &[f32]) -> Preprocessing {
        crate::transforms::photometric::check_mean_std("Preprocessing::new", mean, std);
        if mean.len() != 1 && mean.len() != input_shape[0] {
            contract_violation(
                "Preprocessing::new",
                "one mean and std per channel, or one for all",
                format_args!(
                    "{} means for input shape {}",
                    mean.len(),
                    shape_str(&input_shape)
                ),
            );
        }
        Preprocessing {
            input_shape,
            mean: mean.to_vec(),
            std: std.to_vec(),
        }
    }

    /// MNIST digits: 1x28x28, mean 0.1307, std 0.3081 (the training pixels' statistics).
    pub fn mnist() -> Preprocessing {
        Preprocessing::new([1, 28, 28], &[0.1307], &[0.3081])
    }

    /// Fashion-MNIST: 1x28x28, mean 0.2860, std 0.3530.
    pub fn fashion_mnist() -> Preprocessing {
        Preprocessing::new([1, 28, 28], &[0.2860], &[0.3530])
    }

    /// ImageNet models (torchvision's weights): 3 x `size` x `size`, mean
    /// `[0.485, 0.456, 0.406]`, std `[0.229, 0.224, 0.225]`.
    pub fn imagenet(size: usize) -> Preprocessing {
        Preprocessing::new(
            [3, size, size],
            &[0.485, 0.456, 0.406],
            &[0.229, 0.224, 0.225],
        )
    }

    /// The image shape `[channels, height, width]` the model takes.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    /// The per-channel means (one value: every channel).
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// The per-channel standard deviations (one value: every channel).
    pub fn std(&self) -> &[f32] {
        &self.std
    }

    /// A batch of one image `[1, C, H, W]` from 8-bit pixels laid out as image decoders give
    /// them: `height × width × channels`, interleaved (for one channel, simply row-major).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidData`] if `pixels` does not hold `C·H·W` values.
    pub fn image_from_u8(&self, pixels: &[u8]) -> Result<Tensor> {
        let [channels, height, width] = self.input_shape;
        let plane = height * width;
        if pixels.len() != channels * plane {
            return Err(Error::invalid_data(
                "Preprocessing::image_from_u8",
                format!(
                    "{} pixels (height {height} x width {width} x channels {channels})",
                    channels * plane
                ),
                format!("{} pixels", pixels.len()),
            ));
        }
        let mut values = vec![0.0f32; pixels.len()];
        for (i, &p) in pixels.iter().enumerate() {
            // HWC in, CHW out.
            let (position, channel) = (i / channels, i % channels);
            values[channel * plane + position] = p as f32 / 255.0;
        }
        crate::transforms::photometric::normalize_planes(
            &mut values,
            channels,
            plane,
            &self.mean,
            &self.std,
        );
        Tensor::from_vec(values, &[1, channels, height, width])
    }

    /// The metadata form saved beside the weights: a small JSON object.
    pub(crate) fn to_json(&self) -> String {
        serde_json::json!({
            "input_shape": self.input_shape,
            "mean": self.mean,
            "std": self.std,
        })
        .to_string()
    }

    /// Reads [`Preprocessing::to_json`]'s form back; `origin` names the file in errors.
    pub(crate) fn from_json(origin: &str, text: &str) -> Result<Preprocessing> {
        let invalid = |found: String| {
            Error::invalid_data(
                origin,
                "preprocessing metadata {\"input_shape\": [c, h, w], \"mean\": [..], \"std\": [..]} \
                 with finite means and positive stds",
                found,
            )
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| invalid(format!("{e}")))?;
        let floats = |key: &str| -> Option<Vec<f32>> {
            value[key]
                .as_array()?
                .iter()
                .map(|v| v.as_f64().map(|f| f as f32))
                .collect()
        };
        let shape: Option<Vec<usize>> = value["input_shape"].as_array().and_then(|dims| {
            dims.iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect()
        });
        let (Some(shape), Some(mean), Some(std)) = (shape, floats("mean"), floats("std")) else {
            return Err(invalid(text.chars().take(200).collect()));
        };
        let plausible = shape.len() == 3
            && shape.iter().all(|&d| d > 0 && d <= 1 << 16)
            && !mean.is_empty()
            && mean.len() == std.len()
            && (mean.len() == 1 || mean.len() == shape[0])
            && mean.iter().all(|m| m.is_finite())
            && std.iter().all(|s| s.is_finite() && *s > 0.0);
        if !plausible {
            return Err(invalid(text.chars().take(200).collect()));
        }
        Ok(Preprocessing {
            input_shape: [shape[0], shape[1], shape[2]],
            mean,
            std,
        })
    }
}

/// A classifier's answer for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The predicted class (largest logit; NaN counts as largest, as `torch.argmax`).
    pub class: usize,
    /// The class's name, when the classifier has names.
    pub label: Option<String>,
    /// The softmax of the logits, one probability per class.
    pub probabilities: Vec<f32>,
}

/// A model together with the preprocessing it was trained with and, optionally, its class
/// names: `predict_image` takes raw 8-bit pixels and gives the class the model's test accuracy
/// speaks for, with no constants repeated by hand. It is a [`Module`] itself (the model's
/// parameter names, unchanged), so [`Fit`](crate::train::Fit) trains it and `io::save_weights`
/// saves it; `io::save_classifier` / `io::load_classifier` also keep the preprocessing and the
/// names in the file's metadata.
///
/// # Examples
///
/// ```
/// use striate::prelude::*;
/// use striate::nn::{Classifier, Preprocessing};
///
/// let model = mnist_cnn(10, &mut StdRng::seed_from_u64(0));
/// let classifier = Classifier::new(model, Preprocessing::mnist());
/// let prediction = classifier.predict_image(&[0u8; 28 * 28])?;
/// assert!(prediction.class < 10);
/// assert!((prediction.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);
/// # Ok::<(), striate::Error>(())
/// ```
pub struct Classifier<M> {
    model: M,
    preprocessing: Preprocessing,
    labels: Option<Vec<String>>,
}

impl<M: Module> Classifier<M> {
    /// Wraps `model`, whose inputs are made by `preprocessing`.
    pub fn new(model: M, preprocessing: Preprocessing) -> Classifier<M> {
        Classifier {
            model,
            preprocessing,
            labels: None,
        }
    }

    /// Names the classes (builder style), for [`Prediction::label`] and reports.
    pub fn with_labels<S: Into<String>>(mut self, labels: impl IntoIterator<Item = S>) -> Self {
        self.labels = Some(labels.into_iter().map(Into::into).collect());
        self
    }

    /// The wrapped model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The wrapped model, mutably (to fine-tune or freeze parts of it).
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// Unwraps the model.
    pub fn into_model(self) -> M {
        self.model
    }

    /// How pixels become the model's input.
    pub fn preprocessing(&self) -> &Preprocessing {
        &self.preprocessing
    }

    /// The class names, if given.
    pub fn labels(&self) -> Option<&[String]> {
        self.labels.as_deref()
    }

    /// Classifies one image of 8-bit pixels (`height × width × channels`, as decoders give
    /// them), preprocessed as the model was trained.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidData`] if `pixels` does not hold one image of the input shape.
    pub fn predict_image(&self, pixels: &[u8]) -> Result<Prediction> {
        let image = self.preprocessing.image_from_u8(pixels)?;
        let logits = self.model.predict(&image);
        let class = logits.argmax_last_axis()[0];
        let tape = crate::autograd::Tape::inference();
        let probabilities = tape.input(logits).softmax(1).value().to_vec();
        Ok(Prediction {
            class,
            label: self
                .labels
                .as_ref()
                .and_then(|labels| labels.get(class).cloned()),
            probabilities,
        })
    }
}

impl<M: Module> Module for Classifier<M> {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        self.model.forward(input)
    }
    fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
        self.model.visit_params(visitor)
    }
    fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
        self.model.visit_params_mut(visitor)
    }
    fn visit_buffers(&self, visitor: &mut dyn FnMut(&str, &Tensor)) {
        self.model.visit_buffers(visitor)
    }
    fn visit_buffers_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Tensor)) {
        self.model.visit_buffers_mut(visitor)
    }
    fn describe(&self) -> String {
        self.model.describe()
    }
    fn summarize<'t>(&self, input: Var<'t>, rows: &mut Vec<super::SummaryRow>) -> Var<'t> {
        self.model.summarize(input, rows)
    }
    fn build_graph(
        &self,
        graph: &mut super::Graph,
        input: super::ValueId,
    ) -> Result<super::ValueId> {
        self.model.build_graph(graph, input)
    }
}

impl<M: Module> fmt::Debug for Classifier<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("model", &self.model.describe())
            .field("preprocessing", &self.preprocessing)
            .field("labels", &self.labels)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_pixels_are_deinterleaved_and_normalised_per_channel() {
        let p = Preprocessing::new([3, 1, 2], &[0.0, 0.5, 1.0], &[1.0, 0.5, 0.25]);
        // Two pixels, RGB each.
        let image = p.image_from_u8(&[255, 0, 255, 0, 255, 0]).unwrap();
        assert_eq!(image.shape(), &[1, 3, 1, 2]);
        assert_eq!(image.as_slice(), &[1.0, 0.0, -1.0, 1.0, 0.0, -4.0]);
    }

    #[test]
    fn json_round_trips_and_bad_metadata_is_an_error() {
        let p = Preprocessing::imagenet(224);
        assert_eq!(Preprocessing::from_json("f", &p.to_json()).unwrap(), p);
        for bad in [
            "{}",
            "not json",
            r#"{"input_shape":[1,28],"mean":[0.1],"std":[0.3]}"#,
            r#"{"input_shape":[1,28,28],"mean":[0.1],"std":[0.0]}"#,
            r#"{"input_shape":[3,28,28],"mean":[0.1,0.2],"std":[0.3,0.3]}"#,
        ] {
            assert!(Preprocessing::from_json("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_wrong_pixel_count_is_an_error() {
        let err = Preprocessing::mnist().image_from_u8(&[0; 10]).unwrap_err();
        assert!(err.to_string().contains("784 pixels"), "{err}");
    }
}
