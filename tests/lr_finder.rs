//! `Fit::find_lr`: the sweep stops on divergence, suggests a rate inside the sweep, plots it,
//! and leaves the model and the optimizer exactly as they were.

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::Tensor;
use striate::data::{DataLoader, ImageDataset};
use striate::nn::{BatchNorm1d, Dense, Flatten, Module, Relu, Sequential};
use striate::optim::{Adam, AdamConfig, GroupOptions, Optimizer};
use striate::train::{Fit, LrRange, Progress};

fn bits(t: &Tensor) -> Vec<u32> {
    t.as_slice().iter().map(|v| v.to_bits()).collect()
}

fn model_state(model: &dyn Module) -> Vec<(String, Vec<u32>)> {
    let mut state = Vec::new();
    model.visit_params(&mut |name, p| state.push((name.to_string(), bits(p.value()))));
    model.visit_buffers(&mut |name, b| state.push((name.to_string(), bits(b))));
    state
}

fn optimizer_state(optimizer: &dyn Optimizer, model: &dyn Module) -> Vec<(String, Vec<u32>)> {
    let mut state: Vec<_> = optimizer
        .state_dict(model)
        .iter()
        .map(|(k, t)| (k.clone(), bits(t)))
        .collect();
    for group in optimizer.param_groups() {
        state.push((
            "lr".into(),
            vec![
                group.learning_rate().to_bits() as u32,
                (group.learning_rate().to_bits() >> 32) as u32,
            ],
        ));
    }
    state
}

fn loader() -> DataLoader {
    let mut rng = StdRng::seed_from_u64(3);
    let images = Tensor::rand_uniform(&[96, 1, 2, 4], 0.0, 1.0, &mut rng);
    let labels: Vec<usize> = (0..96).map(|i| i % 3).collect();
    let pixels: Vec<u8> = images
        .as_slice()
        .chunks(8)
        .zip(&labels)
        .flat_map(|(row, &l)| {
            row.iter()
                .map(move |v| (v * 80.0) as u8 + 60 * l as u8)
                .collect::<Vec<_>>()
        })
        .collect();
    DataLoader::new(
        ImageDataset::from_u8(pixels, [1, 2, 4], labels).unwrap(),
        16,
    )
    .shuffle(0)
}

#[test]
fn find_lr_suggests_a_rate_and_restores_everything_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = Sequential::new()
        .push(Flatten::new())
        .push(Dense::new(8, 16, &mut rng))
        .push(BatchNorm1d::new(16))
        .push(Relu)
        .push(Dense::new(16, 3, &mut rng));
    let mut adam = Adam::new(AdamConfig {
        learning_rate: 1e-3,
        ..Default::default()
    })
    .with_group(
        "4",
        GroupOptions {
            learning_rate: Some(5e-4),
            ..Default::default()
        },
    );
    let data = loader();
    // one epoch first, so the optimizer has moments and step counts to restore
    Fit::new(&mut model, &mut adam)
        .progress(Progress::Silent)
        .run(&data)
        .unwrap();
    let model_before = model_state(&model);
    let optimizer_before = optimizer_state(&adam, &model);
    assert!(optimizer_before.len() > 10);

    let plot = std::env::temp_dir().join(format!("striate-lr-find-{}.svg", std::process::id()));
    let found = {
        let mut fit = Fit::new(&mut model, &mut adam).progress(Progress::Silent);
        fit.find_lr(
            &data,
            &LrRange {
                min_lr: 1e-5,
                max_lr: 10.0,
                steps: 60,
                ..Default::default()
            },
        )
        .unwrap()
    };
    assert_eq!(model_state(&model), model_before, "model changed");
    assert_eq!(
        optimizer_state(&adam, &model),
        optimizer_before,
        "optimizer changed"
    );

    let n = found.learning_rates.len();
    assert!(n > 13 && n <= 60, "{n} steps");
    assert_eq!(found.losses.len(), n);
    assert_eq!(found.learning_rates[0], 1e-5);
    let ratio = found.learning_rates[1] / found.learning_rates[0];
    assert!((ratio - (1e6f64).powf(1.0 / 59.0)).abs() < 1e-9);
    let suggestion = found.suggestion.expect("a suggestion");
    assert!((1e-5..=10.0).contains(&suggestion));
    println!(
        "{n} steps, diverged {}, suggested learning rate {suggestion:.3e}",
        found.diverged
    );
    found.save_plot(&plot).unwrap();
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("suggested"));
    std::fs::remove_file(&plot).unwrap();
}

#[test]
fn a_diverging_sweep_stops_early() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut model = Sequential::new()
        .push(Flatten::new())
        .push(Dense::new(8, 3, &mut rng));
    let mut sgd = striate::optim::Sgd::new(striate::optim::SgdConfig {
        learning_rate: 0.1,
        ..Default::default()
    });
    let mut fit = Fit::new(&mut model, &mut sgd);
    let found = fit
        .find_lr(
            &loader(),
            &LrRange {
                min_lr: 1e-2,
                max_lr: 1e6,
                steps: 100,
                smoothing: 0.5,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(found.diverged);
    assert!(found.learning_rates.len() < 100);
    let last = *found.smoothed.last().unwrap();
    let best = found.smoothed[..found.smoothed.len() - 1]
        .iter()
        .copied()
        .fold(f32::INFINITY, f32::min);
    assert!(!last.is_finite() || last > 4.0 * best);
}
