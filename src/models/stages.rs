//! Networks as named stages: one list per network gives its forward pass, its parameter and
//! buffer names, its summary rows and its feature-extraction points, so they cannot disagree.

use rand::Rng;

use crate::autograd::{Param, Var};
use crate::nn::{Conv2d, Conv2dConfig, Module, Sequential, SummaryRow, join_name, name_has_prefix};
use crate::tensor::Tensor;
use crate::tensor::check::contract_violation;
use crate::tensor::init::{FanMode, Nonlinearity, kaiming_normal};

/// A network run as a sequence of named stages, whose intermediate outputs can be taken: the
/// zoo's networks implement it, so a pretrained backbone can serve as a feature extractor.
///
/// Stage names are the prefixes of the parameter names (`"layer3.1"` owns
/// `"layer3.1.conv1.weight"`) and the rows of [`crate::nn::summary`]. A stage is selected by
/// the prefix rule of [`name_has_prefix`], so `"layer3"` stands for all of
/// `"layer3.0"`, `"layer3.1"`, ….
///
/// # Examples
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::{FeatureExtraction, ResNetConfig};
/// use striate::Tensor;
///
/// let model = ResNetConfig::resnet18(10).small_input().init(&mut StdRng::seed_from_u64(0));
/// assert_eq!(model.stage_names()[..4], ["conv1", "bn1", "relu", "layer1.0"]);
/// let features = model.features(&Tensor::zeros(&[2, 3, 32, 32]), "layer3");
/// assert_eq!(features.shape(), &[2, 256, 8, 8]);
/// ```
pub trait FeatureExtraction: Module {
    /// The stages in execution order, each with its name.
    fn stages(&self) -> Vec<(String, &dyn Module)>;

    /// The names of the stages, in execution order.
    fn stage_names(&self) -> Vec<String> {
        self.stages().into_iter().map(|(name, _)| name).collect()
    }

    /// Runs the network up to and including the last stage selected by `stage` (a stage name
    /// or a prefix of stage names, such as `"layer3"` or `"features"`), and returns that
    /// stage's output.
    ///
    /// # Panics
    ///
    /// If no stage name lies under `stage`; the message lists the stage names.
    fn forward_until<'t>(&self, input: Var<'t>, stage: &str) -> Var<'t> {
        let stages = self.stages();
        let last = last_stage_under("forward_until", &stages, stage, || self.describe());
        forward_stages(&stages[..=last], input)
    }

    /// [`FeatureExtraction::forward_until`] on an inference tape: the features of `input` at
    /// `stage`, with batch norm on its running statistics and dropout off.
    ///
    /// # Panics
    ///
    /// As [`FeatureExtraction::forward_until`].
    fn features(&self, input: &Tensor, stage: &str) -> Tensor {
        let tape = crate::Tape::inference();
        self.forward_until(tape.input(input.clone()), stage).value()
    }

    /// Runs the rest of the network on `input`, the output of the last stage selected by
    /// `stage`: `forward_from(forward_until(x, s), s)` is `forward(x)`. Splitting a forward pass
    /// there lets a caller see (and differentiate with respect to) a stage's output, as
    /// Grad-CAM does.
    ///
    /// # Panics
    ///
    /// If no stage name lies under `stage`; the message lists the stage names.
    fn forward_from<'t>(&self, input: Var<'t>, stage: &str) -> Var<'t> {
        let stages = self.stages();
        let last = last_stage_under("forward_from", &stages, stage, || self.describe());
        forward_stages(&stages[last + 1..], input)
    }
}

/// The index of the last stage whose name lies under `stage`; panics, naming `op`, the network
/// (`describe`, only formatted then) and every stage name, if there is none.
#[track_caller]
fn last_stage_under<S>(
    op: &str,
    stages: &[(String, S)],
    stage: &str,
    describe: impl FnOnce() -> String,
) -> usize {
    let Some(last) = stages
        .iter()
        .rposition(|(name, _)| name_has_prefix(name, stage))
    else {
        let names: Vec<&str> = stages.iter().map(|(name, _)| name.as_str()).collect();
        contract_violation(
            op,
            format_args!("no stage of {} is named {stage:?}", describe()),
            format_args!("stages: {}", names.join(", ")),
        );
    };
    last
}

/// A [`Sequential`]'s stages are its layers, named by index (`"0"`, `"1"`, ...), as their
/// parameter names are.
impl FeatureExtraction for Sequential {
    fn stages(&self) -> Vec<(String, &dyn Module)> {
        self.layers()
            .iter()
            .enumerate()
            .map(|(i, layer)| (i.to_string(), layer.as_ref()))
            .collect()
    }
}

/// The stages of a `Sequential` field named `prefix`, one per child: `"prefix.<i>"`.
pub(crate) fn sequential_stages<'a>(
    prefix: &str,
    layers: &'a [Box<dyn Module>],
) -> impl Iterator<Item = (String, &'a dyn Module)> {
    layers
        .iter()
        .enumerate()
        .map(move |(i, layer)| (format!("{prefix}.{i}"), layer.as_ref()))
}

/// The mutable stages of a `Sequential` field named `prefix`.
pub(crate) fn sequential_stages_mut<'a>(
    prefix: &str,
    layers: &'a mut [Box<dyn Module>],
) -> impl Iterator<Item = (String, &'a mut dyn Module)> {
    layers
        .iter_mut()
        .enumerate()
        .map(move |(i, layer)| (format!("{prefix}.{i}"), layer.as_mut() as &mut dyn Module))
}

/// Runs the stages in order.
pub(crate) fn forward_stages<'t>(stages: &[(String, &dyn Module)], input: Var<'t>) -> Var<'t> {
    let layers: Vec<&dyn Module> = stages.iter().map(|(_, stage)| *stage).collect();
    crate::nn::forward_layers(&layers, input)
}

/// Runs the stages in order, one summary row each, named by the stage.
pub(crate) fn summarize_stages<'t>(
    stages: &[(String, &dyn Module)],
    input: Var<'t>,
    rows: &mut Vec<SummaryRow>,
) -> Var<'t> {
    stages.iter().fold(input, |x, (name, stage)| {
        let output = stage.forward(x);
        let mut row = SummaryRow::traced(*stage, &x.shape(), output.shape());
        row.layer = format!("{name}: {}", row.layer);
        rows.push(row);
        output
    })
}

/// Visits the parameters of every stage under the stage's name.
pub(crate) fn visit_stage_params(
    stages: &[(String, &dyn Module)],
    visitor: &mut dyn FnMut(&str, &Param),
) {
    for (prefix, stage) in stages {
        stage.visit_params(&mut |name, p| visitor(&join_name(prefix, name), p));
    }
}

/// Visits the parameters of every stage mutably under the stage's name.
pub(crate) fn visit_stage_params_mut(
    stages: Vec<(String, &mut dyn Module)>,
    visitor: &mut dyn FnMut(&str, &mut Param),
) {
    for (prefix, stage) in stages {
        stage.visit_params_mut(&mut |name, p| visitor(&join_name(&prefix, name), p));
    }
}

/// Visits the buffers of every stage under the stage's name.
pub(crate) fn visit_stage_buffers(
    stages: &[(String, &dyn Module)],
    visitor: &mut dyn FnMut(&str, &Tensor),
) {
    for (prefix, stage) in stages {
        stage.visit_buffers(&mut |name, b| visitor(&join_name(prefix, name), b));
    }
}

/// Visits the buffers of every stage mutably under the stage's name.
pub(crate) fn visit_stage_buffers_mut(
    stages: Vec<(String, &mut dyn Module)>,
    visitor: &mut dyn FnMut(&str, &mut Tensor),
) {
    for (prefix, stage) in stages {
        stage.visit_buffers_mut(&mut |name, b| visitor(&join_name(&prefix, name), b));
    }
}

/// A convolution initialised as torchvision initialises VGG's and ResNet's:
/// `kaiming_normal_(mode="fan_out", nonlinearity="relu")` and a zero bias.
pub(crate) fn kaiming_conv<R: Rng + ?Sized>(config: Conv2dConfig, rng: &mut R) -> Conv2d {
    let mut conv = config.init(rng);
    let shape = conv.weight.shape().to_vec();
    conv.weight.set_value(kaiming_normal(
        &shape,
        FanMode::FanOut,
        Nonlinearity::Relu,
        rng,
    ));
    if let Some(bias) = &mut conv.bias {
        bias.set_value(Tensor::zeros(bias.shape()));
    }
    conv
}

/// Implements [`Module`] for a network from its `stages()` (of [`FeatureExtraction`]) and an
/// inherent `stages_mut()`, plus a `describe` expression.
macro_rules! module_from_stages {
    ($network:ty) => {
        impl $crate::nn::Module for $network {
            fn forward<'t>(&self, input: $crate::Var<'t>) -> $crate::Var<'t> {
                $crate::models::stages::forward_stages(&self.stages(), input)
            }
            fn visit_params(&self, visitor: &mut dyn FnMut(&str, &$crate::Param)) {
                $crate::models::stages::visit_stage_params(&self.stages(), visitor)
            }
            fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut $crate::Param)) {
                $crate::models::stages::visit_stage_params_mut(self.stages_mut(), visitor)
            }
            fn visit_buffers(&self, visitor: &mut dyn FnMut(&str, &$crate::Tensor)) {
                $crate::models::stages::visit_stage_buffers(&self.stages(), visitor)
            }
            fn visit_buffers_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut $crate::Tensor)) {
                $crate::models::stages::visit_stage_buffers_mut(self.stages_mut(), visitor)
            }
            fn describe(&self) -> String {
                self.description()
            }
            fn summarize<'t>(
                &self,
                input: $crate::Var<'t>,
                rows: &mut Vec<$crate::nn::SummaryRow>,
            ) -> $crate::Var<'t> {
                $crate::models::stages::summarize_stages(&self.stages(), input, rows)
            }
            fn build_graph(
                &self,
                graph: &mut $crate::nn::Graph,
                input: $crate::nn::ValueId,
            ) -> $crate::Result<$crate::nn::ValueId> {
                self.stages()
                    .into_iter()
                    .try_fold(input, |x, (name, stage)| graph.child(&name, stage, x))
            }
        }
    };
}

pub(crate) use module_from_stages;

/// Writes the four visiting methods of [`Module`] for a block whose children are its fields,
/// each named after its field (`conv1.weight`, `downsample.0.weight`): the fields listed
/// first always exist, those after the `;` are `Option`s. Used inside an `impl Module` block.
macro_rules! visit_fields {
    ($($field:ident),* $(; $($optional:ident),*)?) => {
        fn visit_params(&self, visitor: &mut dyn FnMut(&str, &$crate::Param)) {
            $(self.$field.visit_params(&mut |name, p| {
                visitor(&$crate::nn::join_name(stringify!($field), name), p)
            });)*
            $($(if let Some(child) = &self.$optional {
                child.visit_params(&mut |name, p| {
                    visitor(&$crate::nn::join_name(stringify!($optional), name), p)
                });
            })*)?
        }

        fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut $crate::Param)) {
            $(self.$field.visit_params_mut(&mut |name, p| {
                visitor(&$crate::nn::join_name(stringify!($field), name), p)
            });)*
            $($(if let Some(child) = &mut self.$optional {
                child.visit_params_mut(&mut |name, p| {
                    visitor(&$crate::nn::join_name(stringify!($optional), name), p)
                });
            })*)?
        }

        fn visit_buffers(&self, visitor: &mut dyn FnMut(&str, &$crate::Tensor)) {
            $(self.$field.visit_buffers(&mut |name, b| {
                visitor(&$crate::nn::join_name(stringify!($field), name), b)
            });)*
            $($(if let Some(child) = &self.$optional {
                child.visit_buffers(&mut |name, b| {
                    visitor(&$crate::nn::join_name(stringify!($optional), name), b)
                });
            })*)?
        }

        fn visit_buffers_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut $crate::Tensor)) {
            $(self.$field.visit_buffers_mut(&mut |name, b| {
                visitor(&$crate::nn::join_name(stringify!($field), name), b)
            });)*
            $($(if let Some(child) = &mut self.$optional {
                child.visit_buffers_mut(&mut |name, b| {
                    visitor(&$crate::nn::join_name(stringify!($optional), name), b)
                });
            })*)?
        }
    };
}

pub(crate) use visit_fields;
