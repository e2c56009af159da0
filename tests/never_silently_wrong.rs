//! Regression tests for results that looked valid but were not: each test here failed (or
//! returned a plausible-looking `Ok`) before the fix it guards. RELIABILITY.md lists them.

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::data::{DataLoader, Dataset, ImageDataset};
use striate::models::mnist_cnn;
use striate::nn::{Dense, Flatten, Module, Relu, Sequential};
use striate::optim::{Optimizer, Sgd, SgdConfig};
use striate::train::{Fit, Progress, confusion_matrix, evaluate};
use striate::{Error, Param, Tape, Tensor, Var};

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

/// 128 MNIST-shaped images (two classes: dark and bright), as f32 in `[0, 1]`.
fn digits(n: usize) -> (Vec<f32>, Vec<usize>) {
    let pixels = (0..n)
        .flat_map(|i| {
            let level = if i % 2 == 0 { 0.1 } else { 0.8 };
            (0..28 * 28).map(move |p| level + 0.001 * ((p + i) % 7) as f32)
        })
        .collect();
    (pixels, (0..n).map(|i| i % 2).collect())
}

fn loader_with(pixels: Vec<f32>, labels: Vec<usize>, batch: usize) -> DataLoader {
    let images = Tensor::from_vec(pixels, &[labels.len(), 1, 28, 28]).unwrap();
    DataLoader::new(ImageDataset::from_tensor(&images, labels), batch)
}

fn sgd() -> Sgd {
    Sgd::new(SgdConfig {
        learning_rate: 0.01,
        ..Default::default()
    })
}

fn non_finite_message(result: striate::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(e @ Error::NonFinite { .. }) => e.to_string(),
        other => panic!("expected a NonFinite error, got {other:?}"),
    }
}

#[test]
fn one_nan_pixel_stops_training_naming_epoch_and_step() {
    // Before: relu(NaN) was 0, so Fit returned Ok (loss 2.29) with every conv1 weight NaN.
    let (mut pixels, labels) = digits(128);
    pixels[70 * 28 * 28 + 300] = f32::NAN; // image 70: batch 3 of 32-image batches
    let loader = loader_with(pixels, labels, 32);
    let mut model = mnist_cnn(10, &mut rng());
    let before = model.predict(&Tensor::zeros(&[1, 1, 28, 28]));
    let message = non_finite_message(
        Fit::new(&mut model, &mut sgd())
            .progress(Progress::Silent)
            .run(&loader),
    );
    assert!(message.contains("epoch 1, step 3"), "{message}");
    // The failing step was not applied: weights are those after step 2, all finite.
    let mut all_finite = true;
    model
        .visit_params(&mut |_, p| all_finite &= p.value().as_slice().iter().all(|v| v.is_finite()));
    assert!(all_finite);
    assert!(before.as_slice().iter().all(|v| v.is_finite()));
}

#[test]
fn one_infinite_pixel_stops_training_too() {
    let (mut pixels, labels) = digits(64);
    pixels[5] = f32::INFINITY;
    let loader = loader_with(pixels, labels, 32);
    let mut model = mnist_cnn(10, &mut rng());
    let message = non_finite_message(
        Fit::new(&mut model, &mut sgd())
            .progress(Progress::Silent)
            .run(&loader),
    );
    assert!(message.contains("epoch 1, step 1"), "{message}");
}

#[test]
fn predict_on_a_nan_image_gives_nan_logits() {
    // Before: finite logits, identical for every such image.
    let model = mnist_cnn(10, &mut rng());
    let logits = model.predict(&Tensor::full(&[1, 1, 28, 28], f32::NAN));
    assert!(logits.as_slice().iter().all(|v| v.is_nan()), "{logits:?}");
}

#[test]
fn anomaly_detection_names_the_input_when_the_data_holds_nan() {
    let (mut pixels, labels) = digits(64);
    pixels[40 * 28 * 28] = f32::NAN;
    let loader = loader_with(pixels, labels, 32);
    let mut model = mnist_cnn(10, &mut rng());
    let message = non_finite_message(
        Fit::new(&mut model, &mut sgd())
            .progress(Progress::Silent)
            .detect_anomaly(true)
            .run(&loader),
    );
    assert!(message.contains("op `input`"), "{message}");
    assert!(message.contains("input data"), "{message}");
    assert!(message.contains("epoch 1, step 2"), "{message}");
}

fn small_net(rng: &mut StdRng) -> Sequential {
    Sequential::new()
        .push(Flatten::new())
        .push(Dense::new(28 * 28, 8, rng))
        .push(Relu)
        .push(Dense::new(8, 2, rng))
}

#[test]
fn anomaly_detection_names_the_layer_where_nan_first_appears() {
    let (pixels, labels) = digits(64);
    let loader = loader_with(pixels, labels, 32);
    let mut model = small_net(&mut rng());
    // A NaN weight in the last layer (Sequential child "3"): its output is the first NaN.
    model.visit_params_mut(&mut |name, p| {
        if name == "3.weight" {
            p.value_mut().as_slice_mut()[0] = f32::NAN;
        }
    });
    let message = non_finite_message(
        Fit::new(&mut model, &mut sgd())
            .progress(Progress::Silent)
            .detect_anomaly(true)
            .run(&loader),
    );
    assert!(message.contains("layer `3`"), "{message}");
    assert!(message.contains("first non-finite output"), "{message}");
    assert!(message.contains("epoch 1, step 1"), "{message}");
}

/// Cross-entropy plus `0 · Σ sqrt(|logits|)`: finite forward, but at logits of exactly 0 the
/// gradient of sqrt is infinite and `0 · ∞` makes it NaN.
fn loss_with_nan_gradient<'t>(logits: Var<'t>, labels: &[usize]) -> Var<'t> {
    logits.cross_entropy(labels) + logits.abs().sqrt().sum() * 0.0
}

fn zeroed_net() -> Sequential {
    let mut model = small_net(&mut rng());
    model.visit_params_mut(&mut |name, p| {
        if name.starts_with('3') {
            let shape = p.shape().to_vec();
            p.set_value(Tensor::zeros(&shape));
        }
    });
    model
}

#[test]
fn anomaly_detection_finds_a_nan_gradient_in_the_backward_pass() {
    let (pixels, labels) = digits(32);
    let loader = loader_with(pixels, labels, 32);
    let mut model = zeroed_net();
    let message = non_finite_message(
        Fit::new(&mut model, &mut sgd())
            .progress(Progress::Silent)
            .loss(loss_with_nan_gradient)
            .detect_anomaly(true)
            .run(&loader),
    );
    assert!(
        message.contains("gradient from the backward of op `sqrt`"),
        "{message}"
    );
    assert!(message.contains("layer `3`"), "{message}");
}

#[test]
fn a_nan_gradient_stops_training_even_without_anomaly_detection() {
    let (pixels, labels) = digits(32);
    let loader = loader_with(pixels, labels, 32);
    let mut model = zeroed_net();
    let message = non_finite_message(
        Fit::new(&mut model, &mut sgd())
            .progress(Progress::Silent)
            .loss(loss_with_nan_gradient)
            .run(&loader),
    );
    assert!(message.contains("gradient of `"), "{message}");
    assert!(message.contains("epoch 1, step 1"), "{message}");
}

/// A user model that lists its parameter for reading but forgot it for updating.
struct Forgetful {
    inner: Dense,
}

impl Module for Forgetful {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        self.inner.forward(input.flatten(1))
    }
    fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
        self.inner.visit_params(visitor);
    }
    fn visit_params_mut(&mut self, _: &mut dyn FnMut(&str, &mut Param)) {}
}

#[test]
fn a_model_whose_visitors_disagree_is_an_error_before_training() {
    // Before: 5 epochs at a constant loss with unchanged weights, and Ok.
    let (pixels, labels) = digits(32);
    let loader = loader_with(pixels, labels, 16);
    let mut model = Forgetful {
        inner: Dense::new(28 * 28, 2, &mut rng()),
    };
    let error = Fit::new(&mut model, &mut sgd())
        .progress(Progress::Silent)
        .run(&loader)
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("visit_params_mut"), "{message}");
    assert!(
        message.contains("visit_params lists 2 [weight, bias]"),
        "{message}"
    );
}

#[test]
#[should_panic(expected = "Sgd::step: the model's visit_params and visit_params_mut must visit")]
fn an_optimizer_step_on_disagreeing_visitors_panics() {
    let mut model = Forgetful {
        inner: Dense::new(4, 2, &mut rng()),
    };
    let tape = Tape::training();
    let loss = model.forward(tape.input(Tensor::ones(&[1, 4]))).sum();
    let grads = loss.backward();
    sgd().step(&mut model, &grads);
}

#[test]
fn a_fully_frozen_model_is_an_error_before_training() {
    let (pixels, labels) = digits(32);
    let loader = loader_with(pixels, labels, 16);
    let mut model = small_net(&mut rng());
    model.visit_params_mut(&mut |_, p| p.set_requires_grad(false));
    let message = Fit::new(&mut model, &mut sgd())
        .progress(Progress::Silent)
        .run(&loader)
        .unwrap_err()
        .to_string();
    assert!(message.contains("no trainable parameter"), "{message}");
}

#[test]
#[should_panic(expected = "Sgd::step: the model must have at least one trainable parameter")]
fn an_optimizer_step_with_nothing_trainable_panics() {
    let mut model = small_net(&mut rng());
    let tape = Tape::training();
    let loss = model
        .forward(tape.input(Tensor::ones(&[1, 1, 28, 28])))
        .sum();
    let grads = loss.backward();
    model.visit_params_mut(&mut |_, p| p.set_requires_grad(false));
    sgd().step(&mut model, &grads);
}

#[test]
fn empty_data_is_an_error_not_a_result_of_zero() {
    // Before: Ok with loss 0.0 and accuracy 0.0; evaluate gave {loss: 0, accuracy: 0, samples: 0}.
    let mut model = small_net(&mut rng());
    let empty = loader_with(Vec::new(), Vec::new(), 16);
    let fit = Fit::new(&mut model, &mut sgd())
        .progress(Progress::Silent)
        .run(&empty);
    assert!(matches!(fit, Err(Error::EmptyData { .. })), "{fit:?}");
    let (pixels, labels) = digits(10);
    let short = loader_with(pixels, labels, 16).drop_last(true);
    let fit = Fit::new(&mut model, &mut sgd())
        .progress(Progress::Silent)
        .run(&short);
    let message = fit.unwrap_err().to_string();
    assert!(message.contains("10 samples, batch size 16"), "{message}");
    assert!(matches!(
        evaluate(&model, &empty),
        Err(Error::EmptyData { .. })
    ));
    assert!(matches!(
        confusion_matrix(&model, &empty, 2),
        Err(Error::EmptyData { .. })
    ));
    let (pixels, labels) = digits(16);
    let train = loader_with(pixels, labels, 16);
    let fit = Fit::new(&mut model, &mut sgd())
        .progress(Progress::Silent)
        .validation(&empty)
        .run(&train);
    assert!(matches!(fit, Err(Error::EmptyData { .. })), "{fit:?}");
}

#[test]
fn overflowing_shapes_are_errors_not_panics_inside_ndarray() {
    let error = Tensor::from_vec(vec![], &[1 << 32, 1 << 32]).unwrap_err();
    assert!(error.to_string().contains("fits in usize"), "{error}");
    // Before: Ok, and the first batch panicked.
    let error = ImageDataset::from_u8(vec![], [1 << 32, 1 << 32, 1], vec![0]).unwrap_err();
    assert!(error.to_string().contains("fits in usize"), "{error}");
}

#[test]
#[should_panic(expected = "ImageDataset::label: index must be below 2 (index 2, length 2)")]
fn a_label_past_the_end_names_the_rule() {
    let data = ImageDataset::from_u8(vec![0; 8], [1, 2, 2], vec![0, 1]).unwrap();
    data.label(2);
}

#[test]
fn dense_with_zero_input_features_returns_the_bias() {
    // PyTorch: nn.Linear(0, 3)(torch.zeros(2, 0)) is the bias on every row.
    let layer = Dense::new(0, 3, &mut rng());
    let bias = layer.bias.as_ref().unwrap().value().clone();
    let out = layer.predict(&Tensor::zeros(&[2, 0]));
    assert_eq!(out.shape(), &[2, 3]);
    assert_eq!(&out.as_slice()[..3], bias.as_slice());
    assert_eq!(&out.as_slice()[3..], bias.as_slice());
}

#[test]
#[should_panic(expected = "batch_norm: expected more than 1 value per channel when training")]
fn batch_norm_in_training_on_one_sample_panics_with_pytorchs_rule() {
    // Before: the output was exactly β for any input and the running variance moved to 0.
    let bn = striate::nn::BatchNorm1d::new(3);
    let tape = Tape::training();
    let _ = bn.forward(tape.input(Tensor::ones(&[1, 3])));
}

#[test]
fn dense_with_zero_input_features_trains_its_bias() {
    let tape = Tape::training();
    let layer = Dense::new(0, 3, &mut rng());
    let loss = layer.forward(tape.input(Tensor::zeros(&[2, 0]))).sum();
    let grads = loss.backward();
    let bias = grads.get(layer.bias.as_ref().unwrap()).unwrap();
    assert_eq!(bias.as_slice(), &[2.0, 2.0, 2.0]);
    assert_eq!(grads.get(&layer.weight).unwrap().shape(), &[3, 0]);
}

/// The learning rate of each epoch of a run whose loss never improves (a plateau every epoch).
fn rates_on_a_plateau(schedule: Option<striate::optim::StepLr>) -> Vec<f64> {
    use striate::optim::{PlateauConfig, ReduceLrOnPlateau};
    let (pixels, labels) = digits(16);
    let loader = loader_with(pixels, labels, 16);
    let mut model = small_net(&mut rng());
    let mut optimizer = Sgd::new(SgdConfig {
        learning_rate: 0.1,
        ..Default::default()
    });
    let mut fit = Fit::new(&mut model, &mut optimizer)
        .epochs(4)
        .progress(Progress::Silent)
        .loss(|logits, _| (logits * 0.0).sum() + 1.0)
        .reduce_on_plateau(ReduceLrOnPlateau::new(PlateauConfig {
            patience: 0,
            ..Default::default()
        }));
    if let Some(schedule) = schedule {
        fit = fit.schedule(schedule);
    }
    let history = fit.run(&loader).unwrap();
    history.epochs.iter().map(|e| e.learning_rate).collect()
}

#[test]
fn a_schedule_and_a_plateau_compose_instead_of_the_schedule_erasing_the_plateau() {
    // Before: with a StepLr added, the rate stayed 0.1 for every epoch.
    let close = |got: &[f64], want: &[f64]| {
        got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-12)
    };
    let alone = rates_on_a_plateau(None);
    // The first epoch sets the best loss; every later one is a plateau.
    assert!(close(&alone, &[0.1, 0.1, 0.01, 0.001]), "{alone:?}");
    let with_step = rates_on_a_plateau(Some(striate::optim::StepLr {
        step_size: 2,
        gamma: 0.5,
    }));
    // StepLr halves from epoch 2 on; each plateau multiplies by 0.1 on top.
    assert!(
        close(&with_step, &[0.1, 0.1, 0.005, 0.0005]),
        "{with_step:?}"
    );
}

/// The convolution of `conv`'s weights on `x` with the weights read as plain inputs, which the
/// kernels never cache: the reference for a layer whose prepared weights they keep.
fn convolved_as_inputs(conv: &striate::nn::Conv2d, x: &Tensor) -> Tensor {
    let tape = Tape::inference();
    let weight = tape.input(conv.weight.value().clone());
    let bias = conv.bias.as_ref().map(|b| tape.input(b.value().clone()));
    tape.input(x.clone())
        .conv2d(weight, bias, conv.config().spec())
        .value()
}

/// One layer's weights prepared for images of two sizes, used in turn: the channel-blocked
/// forward packs them for tiles of 32 output channels on rows of 14 pixels or more and of 64 on
/// shorter rows. With 40 output channels both packings have the same length, so only the key
/// of the prepared form tells them apart.
#[test]
fn prepared_weights_are_kept_per_layout() {
    use striate::nn::Conv2dConfig;
    let mut rng = rng();
    let conv = Conv2dConfig::new(16, 40, 3)
        .padding(1)
        .stride(2)
        .init(&mut rng);
    let wide = Tensor::rand_uniform(&[1, 16, 30, 30], -1.0, 1.0, &mut rng);
    let narrow = Tensor::rand_uniform(&[1, 16, 12, 12], -1.0, 1.0, &mut rng);
    for round in 0..2 {
        for x in [&wide, &narrow] {
            let got = conv.predict(x);
            assert!(
                got.as_slice() == convolved_as_inputs(&conv, x).as_slice(),
                "round {round}, input {:?}: not the convolution of the layer's weights",
                x.shape()
            );
        }
    }
}

/// Inference keeps a layer's prepared weights (packed for the shifted kernel, transformed for
/// Winograd) from one call to the next, keyed by the parameter's version: every way of
/// writing a weight (`value_mut`, `set_value`, an optimizer's step, loading a state dict) must
/// show in the next prediction, and a frozen layer inside a training step must use its own
/// current weights. Shapes for Winograd (one image split over the threads, and a batch) and for
/// the stride-2 forward (on channel blocks with AVX-512, the shifted kernel otherwise).
#[test]
fn prepared_weights_follow_every_write_to_a_parameter() {
    use striate::nn::Conv2dConfig;
    let mut rng = rng();
    for (input, out_channels, stride) in [
        ([1, 16, 14, 14], 24, 1),
        ([4, 16, 14, 14], 16, 1),
        ([2, 16, 15, 15], 16, 2),
    ] {
        let mut conv = Conv2dConfig::new(input[1], out_channels, 3)
            .padding(1)
            .stride(stride)
            .init(&mut rng);
        let x = Tensor::rand_uniform(&input, -1.0, 1.0, &mut rng);
        let case = format!("input {input:?}, stride {stride}");
        let check = |conv: &striate::nn::Conv2d, step: &str| {
            let want = convolved_as_inputs(conv, &x);
            for call in 0..2 {
                let got = conv.predict(&x);
                assert!(
                    got.as_slice() == want.as_slice(),
                    "{case}, {step}, call {call}: not the convolution of the current weights"
                );
            }
        };
        check(&conv, "fresh");
        let doubled = conv.weight.value().map(|v| 2.0 * v);
        *conv.weight.value_mut() = doubled;
        check(&conv, "after value_mut");
        conv.weight.value_mut().as_slice_mut()[5] += 1.0;
        check(&conv, "after a write through as_slice_mut");
        let halved = conv.weight.value().map(|v| 0.5 * v);
        conv.weight.set_value(halved);
        check(&conv, "after set_value");
        let grads = {
            let tape = Tape::training();
            conv.forward(tape.input(x.clone())).sum().backward()
        };
        let mut optimizer = sgd();
        optimizer.step(&mut conv, &grads);
        check(&conv, "after an optimizer step");
        let state = striate::io::state_dict(&conv);
        let mut other = Conv2dConfig::new(input[1], out_channels, 3)
            .padding(1)
            .stride(stride)
            .init(&mut rng);
        check(&other, "another layer");
        striate::io::load_state_dict(&mut other, &state).unwrap();
        check(&other, "after load_state_dict");
        // Frozen inside a training step: its weight is cached there too.
        conv.weight.set_requires_grad(false);
        let trained_input = {
            let tape = Tape::training();
            let input = tape.variable(x.clone());
            conv.forward(input).value()
        };
        assert!(
            trained_input.as_slice() == convolved_as_inputs(&conv, &x).as_slice(),
            "{case}, frozen in a training step: not the convolution of its weights"
        );
    }
}

#[test]
fn activations_kept_in_channel_blocks_give_the_same_predictions() {
    // On an inference tape, convolutions that run on channel blocks keep their outputs so, and
    // batch norm, ReLU and residual additions compute on them; anything else converts. The
    // predictions must equal, bit for bit, those of a tape that keeps NCHW throughout (anomaly
    // detection reads every value as a tensor, so it keeps none), including where an input
    // holds a NaN. (Both fold each batch norm into the convolution before it alike; the next
    // test holds the folding to the separate ops.)
    use striate::models::resnet18;
    use striate::nn::{BatchNorm2d, Conv2dConfig, MaxPool2d};
    let mut rng = rng();
    let bits = |t: &Tensor| t.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let stack = Sequential::new()
        .push(Conv2dConfig::new(3, 16, 3).padding(1).init(&mut rng))
        .push(Relu)
        .push(
            Conv2dConfig::new(16, 40, 3)
                .stride(2)
                .padding(1)
                .init(&mut rng),
        )
        .push(BatchNorm2d::new(40))
        .push(Relu)
        .push(Conv2dConfig::new(40, 24, 5).padding(2).init(&mut rng))
        .push(Conv2dConfig::new(24, 32, 1).init(&mut rng))
        .push(MaxPool2d::new(2))
        .push(Flatten::new())
        .push(Dense::new(32 * 4 * 4, 10, &mut rng));
    let mut resnet = resnet18(10, &mut rng);
    // Batch norms that do something: scales and shifts away from 1 and 0, and running
    // statistics moved by two training passes.
    let mut stack = stack;
    for model in [&mut stack as &mut dyn Module, &mut resnet] {
        model.visit_params_mut(&mut |_, param| {
            if param.value().ndim() == 1 {
                let len = param.value().len();
                let noise = Tensor::rand_uniform(&[len], 0.5, 1.5, &mut rng);
                param.set_value(noise);
            }
        });
        let shape = if model.num_params() > 1_000_000 {
            [2, 3, 64, 64]
        } else {
            [2, 3, 16, 16]
        };
        for _ in 0..2 {
            let tape = Tape::training();
            let x = Tensor::rand_uniform(&shape, -1.0, 2.0, &mut rng);
            let _ = model.forward(tape.input(x));
        }
    }
    let cases: [(&dyn Module, [usize; 4]); 2] =
        [(&stack, [2, 3, 16, 16]), (&resnet, [2, 3, 64, 64])];
    for (model, shape) in cases {
        let mut x = Tensor::rand_uniform(&shape, -1.0, 1.0, &mut rng);
        for with_nan in [false, true] {
            if with_nan {
                x.as_slice_mut()[7] = f32::NAN;
            }
            let kept = Tape::inference();
            let y = model.forward(kept.input(x.clone()));
            let nchw = Tape::inference();
            nchw.detect_anomaly(true);
            let expected = model.forward(nchw.input(x.clone())).value();
            assert_eq!(
                bits(&y.value()),
                bits(&expected),
                "{shape:?}, NaN {with_nan}"
            );
            assert_eq!(bits(&model.predict(&x)), bits(&expected));
        }
    }
    // The chain keeps its blocks: convolution, batch norm, ReLU and the residual addition.
    if striate::kernels::instruction_set() == "avx512"
        && std::env::var_os("STRIATE_CONV_BLOCKED").is_none()
    {
        let conv = Conv2dConfig::new(16, 32, 3).padding(1).init(&mut rng);
        let norm = BatchNorm2d::new(32);
        let tape = Tape::inference();
        let x = tape.input(Tensor::rand_uniform(&[1, 16, 10, 10], -1.0, 1.0, &mut rng));
        let y = norm.forward(conv.forward(x)).relu();
        let skip = tape.input(Tensor::ones(&[1, 32, 10, 10]));
        let sum = y + skip;
        assert!(y.in_channel_blocks() && sum.in_channel_blocks());
        let expected: Vec<f32> = y.value().as_slice().iter().map(|v| v + 1.0).collect();
        assert_eq!(sum.value().as_slice(), expected);
        // A pointwise convolution continues the chain; on planes it starts none (its GEMM
        // reads them in place, and blocks would cost a conversion).
        let pointwise = Conv2dConfig::new(32, 16, 1).init(&mut rng);
        assert!(pointwise.forward(sum).in_channel_blocks());
        let planes = tape.input(Tensor::rand_uniform(&[1, 32, 10, 10], -1.0, 1.0, &mut rng));
        assert!(!pointwise.forward(planes).in_channel_blocks());
    }
}

#[test]
fn batch_norms_folded_into_convolutions_at_inference_match_the_separate_ops() {
    // On an inference tape a convolution followed by a batch norm (and a ReLU) runs as one
    // convolution with the batch norm folded into its weight and bias, as ONNX Runtime runs
    // them. Against the separate ops (a tape that records a backward pass folds nothing): the
    // same values up to rounding, NaN where they give NaN; and the folded weights must follow
    // every change of a parameter or of the running statistics, never serve stale ones.
    use striate::models::resnet18;
    use striate::nn::{BatchNorm2d, Conv2dConfig};
    let mut rng = rng();
    let mut net = Sequential::new()
        .push(Conv2dConfig::new(6, 20, 3).padding(1).init(&mut rng))
        .push(BatchNorm2d::new(20))
        .push(Relu)
        .push(
            Conv2dConfig::new(20, 16, 1)
                .stride(2)
                .bias(false)
                .init(&mut rng),
        )
        .push(BatchNorm2d::new(16).without_affine());
    let mut resnet = resnet18(10, &mut rng);
    let scramble = |model: &mut dyn Module, rng: &mut StdRng, shape: &[usize]| {
        model.visit_params_mut(&mut |_, param| {
            if param.value().ndim() == 1 {
                let len = param.value().len();
                param.set_value(Tensor::rand_uniform(&[len], 0.5, 1.5, rng));
            }
        });
        let tape = Tape::training();
        let _ = model.forward(tape.input(Tensor::rand_uniform(shape, -1.0, 2.0, rng)));
    };
    scramble(&mut net, &mut rng, &[4, 6, 12, 12]);
    scramble(&mut resnet, &mut rng, &[2, 3, 64, 64]);
    let separate = |model: &dyn Module, x: &Tensor| {
        let tape = Tape::inference_with_gradients();
        model.forward(tape.input(x.clone())).value()
    };
    let agree = |folded: &Tensor, separate: &Tensor, what: &str| {
        assert_eq!(folded.shape(), separate.shape(), "{what}");
        for (i, (a, b)) in folded
            .as_slice()
            .iter()
            .zip(separate.as_slice())
            .enumerate()
        {
            let close = (a - b).abs() <= 1e-4 + 1e-4 * b.abs();
            assert!(
                close || a.is_nan() && b.is_nan(),
                "{what}: value {i} folded {a}, separate {b}"
            );
        }
    };
    let mut x = Tensor::rand_uniform(&[2, 6, 12, 12], -1.0, 1.0, &mut rng);
    // Folded: the input, then each convolution's folded weight, bias and output.
    let tape = Tape::inference();
    let folded = net.forward(tape.input(x.clone())).value();
    assert_eq!(tape.len(), 1 + 3 + 3, "both batch norms folded in");
    agree(&folded, &separate(&net, &x), "fresh");
    let image = Tensor::rand_uniform(&[2, 3, 64, 64], -1.0, 1.0, &mut rng);
    agree(
        &resnet.predict(&image),
        &separate(&resnet, &image),
        "ResNet-18",
    );
    x.as_slice_mut()[30] = f32::NAN;
    agree(&net.predict(&x), &separate(&net, &x), "NaN input");
    x.as_slice_mut()[30] = 0.5;
    // Each change is seen: statistics moved by training, a convolution's weight and bias, a
    // batch norm's scale.
    let mut before = net.predict(&x);
    type Change<'a> = (&'a str, &'a dyn Fn(&mut Sequential));
    let changes: [Change; 4] = [
        ("statistics", &|net| {
            let tape = Tape::training();
            let x = Tensor::rand_uniform(&[4, 6, 12, 12], 0.0, 3.0, &mut StdRng::seed_from_u64(1));
            let _ = net.forward(tape.input(x));
        }),
        ("conv weight", &|net| {
            net.visit_params_mut(&mut |name, p| {
                if name == "3.weight" {
                    let scaled = p.value().map(|v| v * 1.5);
                    p.set_value(scaled);
                }
            })
        }),
        ("conv bias", &|net| {
            net.visit_params_mut(&mut |name, p| {
                if name == "0.bias" {
                    let shifted = p.value().map(|v| v + 0.25);
                    p.set_value(shifted);
                }
            })
        }),
        ("bn scale", &|net| {
            net.visit_params_mut(&mut |name, p| {
                if name == "1.weight" {
                    let scaled = p.value().map(|v| v * 0.5);
                    p.set_value(scaled);
                }
            })
        }),
    ];
    for (what, change) in changes {
        change(&mut net);
        let after = net.predict(&x);
        assert_ne!(after, before, "{what}: the prediction did not move");
        agree(&after, &separate(&net, &x), what);
        before = after;
    }
}
