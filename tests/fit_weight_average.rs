//! `Fit` with a weight average: training itself is unchanged, validation measures the average,
//! the model ends with it, and a run split into several `Fit` calls equals one run.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use striate::Tensor;
use striate::data::{DataLoader, ImageDataset};
use striate::io::state_dict;
use striate::nn::{BatchNorm2d, Conv2dConfig, Dense, Flatten, MaxPool2d, Module, Relu, Sequential};
use striate::optim::{Momentum, Sgd, SgdConfig, WeightAverage};
use striate::train::{Fit, Progress, evaluate};

fn model() -> Sequential {
    let mut rng = StdRng::seed_from_u64(3);
    Sequential::new()
        .push(
            Conv2dConfig::new(1, 4, 3)
                .padding(1)
                .bias(false)
                .init(&mut rng),
        )
        .push(BatchNorm2d::new(4))
        .push(Relu)
        .push(MaxPool2d::new(2))
        .push(Flatten::new())
        .push(Dense::new(4 * 4 * 4, 3, &mut rng))
}

fn sgd() -> Sgd {
    Sgd::new(SgdConfig {
        learning_rate: 0.05,
        momentum: Some(Momentum::classic(0.9)),
        ..Default::default()
    })
}

/// 48 noisy 8×8 images of three classes (a bright row, column or diagonal).
fn loader() -> DataLoader {
    let mut rng = StdRng::seed_from_u64(11);
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for i in 0..48 {
        let class = i % 3;
        for y in 0..8 {
            for x in 0..8 {
                let on = match class {
                    0 => y == 3,
                    1 => x == 4,
                    _ => x == y,
                };
                let noise: u8 = rng.random_range(0..60);
                pixels.push(if on { 190 + noise } else { noise });
            }
        }
        labels.push(class);
    }
    let data = ImageDataset::from_u8(pixels, [1, 8, 8], labels).unwrap();
    DataLoader::new(data, 8).shuffle(5)
}

fn same_state(a: &dyn Module, b: &dyn Module) -> bool {
    let (a, b) = (state_dict(a), state_dict(b));
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|((na, ta), (nb, tb))| na == nb && ta.as_slice() == tb.as_slice())
}

fn fit<'a>(model: &'a mut Sequential, sgd: &'a mut Sgd, epochs: usize) -> Fit<'a> {
    Fit::new(model, sgd)
        .epochs(epochs)
        .progress(Progress::Silent)
        .seed(1)
}

#[test]
fn averaging_leaves_training_alone_and_ends_with_the_average() {
    let data = loader();
    let (mut plain, mut plain_sgd) = (model(), sgd());
    fit(&mut plain, &mut plain_sgd, 3).run(&data).unwrap();

    let (mut averaged, mut averaged_sgd) = (model(), sgd());
    let mut ema = WeightAverage::ema(0.8).start_step(2);
    let history = fit(&mut averaged, &mut averaged_sgd, 3)
        .validation(&data)
        .average_weights(&mut ema)
        .run(&data)
        .unwrap();
    assert_eq!(ema.n_averaged(), 3 * 6 - 2);
    assert!(ema.is_swapped());
    assert!(
        !same_state(&plain, &averaged),
        "the model should hold the average"
    );
    // The last validation measured the model as it is returned.
    let last = history.last().unwrap();
    let now = evaluate(&averaged, &data).unwrap();
    assert_eq!(last.val_loss, Some(now.loss));
    // Swapped back, the trained weights and statistics are those of a run without averaging.
    ema.swap(&mut averaged);
    assert!(same_state(&plain, &averaged));
}

#[test]
fn a_run_split_in_two_fit_calls_equals_one() {
    let data = loader();
    let (mut whole, mut whole_sgd) = (model(), sgd());
    let mut whole_ema = WeightAverage::ema(0.7);
    fit(&mut whole, &mut whole_sgd, 2)
        .average_weights(&mut whole_ema)
        .run(&data)
        .unwrap();

    let (mut split, mut split_sgd) = (model(), sgd());
    let mut split_ema = WeightAverage::ema(0.7);
    fit(&mut split, &mut split_sgd, 1)
        .average_weights(&mut split_ema)
        .run(&data)
        .unwrap();
    // Through a checkpoint of the average, with the model holding it.
    let saved: Vec<(String, Tensor)> = split_ema.state_dict();
    let mut resumed_ema = WeightAverage::ema(0.7);
    resumed_ema.load_state_dict(&split, &saved).unwrap();
    fit(&mut split, &mut split_sgd, 1)
        .start_epoch(1)
        .average_weights(&mut resumed_ema)
        .run(&data)
        .unwrap();
    assert!(same_state(&whole, &split));
    whole_ema.swap(&mut whole);
    resumed_ema.swap(&mut split);
    assert!(same_state(&whole, &split));
}

#[test]
fn fit_ema_averages_from_the_first_step() {
    let data = loader();
    let (mut owned, mut owned_sgd) = (model(), sgd());
    fit(&mut owned, &mut owned_sgd, 2)
        .ema(0.9)
        .run(&data)
        .unwrap();
    let (mut borrowed, mut borrowed_sgd) = (model(), sgd());
    let mut ema = WeightAverage::ema(0.9);
    fit(&mut borrowed, &mut borrowed_sgd, 2)
        .average_weights(&mut ema)
        .run(&data)
        .unwrap();
    assert!(same_state(&owned, &borrowed));
}
