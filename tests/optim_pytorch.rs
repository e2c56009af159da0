//! Replays `tests/fixtures/optim_pytorch.txt`, written by `scripts/optim_fixtures.py` from
//! PyTorch's optimizers and schedulers, and checks that striate's take the same steps.

use striate::nn::Module;
use striate::optim::{
    Adam, AdamConfig, AdamW, AdamWConfig, CosineAnnealingLr, ExponentialLr, GroupOptions,
    LinearWarmup, LrSchedule, Momentum, MultiStepLr, Optimizer, PlateauConfig, PlateauMode,
    ReduceLrOnPlateau, RmsProp, RmsPropConfig, Sgd, SgdConfig, StepLr, ThresholdMode,
};
use striate::{Gradients, Param, Tensor, Var};

const FIXTURE: &str = include_str!("fixtures/optim_pytorch.txt");

/// Parameters with hierarchical names, as the fixture lists them.
struct Named(Vec<(String, Param)>);

impl Module for Named {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input
    }
    fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
        self.0.iter().for_each(|(name, p)| visitor(name, p));
    }
    fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
        self.0.iter_mut().for_each(|(name, p)| visitor(name, p));
    }
}

/// The optimizer configurations of `scripts/optim_fixtures.py`, by case name.
fn optimizer(case: &str) -> Box<dyn Optimizer> {
    let sgd = |learning_rate, momentum, weight_decay| {
        Sgd::new(SgdConfig {
            learning_rate,
            momentum,
            weight_decay,
        })
    };
    match case {
        "sgd" => Box::new(sgd(0.1, None, 0.0)),
        "sgd_momentum" => Box::new(sgd(0.1, Some(Momentum::classic(0.9)), 0.0)),
        "sgd_dampening_weight_decay" => Box::new(sgd(
            0.1,
            Some(Momentum::Classic {
                momentum: 0.9,
                dampening: 0.3,
            }),
            0.01,
        )),
        "sgd_nesterov_weight_decay" => Box::new(sgd(0.1, Some(Momentum::nesterov(0.9)), 0.01)),
        "adam" => Box::new(Adam::new(AdamConfig {
            learning_rate: 0.01,
            ..Default::default()
        })),
        "adam_weight_decay_amsgrad" => Box::new(Adam::new(AdamConfig {
            learning_rate: 0.01,
            betas: (0.8, 0.99),
            weight_decay: 0.1,
            amsgrad: true,
            ..Default::default()
        })),
        "adamw" => Box::new(AdamW::new(AdamWConfig {
            learning_rate: 0.01,
            weight_decay: 0.1,
            ..Default::default()
        })),
        "rmsprop" => Box::new(RmsProp::new(RmsPropConfig {
            learning_rate: 0.01,
            ..Default::default()
        })),
        "rmsprop_centered_momentum" => Box::new(RmsProp::new(RmsPropConfig {
            learning_rate: 0.01,
            alpha: 0.9,
            eps: 1e-6,
            weight_decay: 0.01,
            momentum: 0.9,
            centered: true,
        })),
        "groups_sgd" => Box::new(sgd(0.1, Some(Momentum::classic(0.9)), 0.0).with_group(
            "backbone",
            GroupOptions {
                learning_rate: Some(0.01),
                weight_decay: Some(0.1),
            },
        )),
        "groups_adamw" => Box::new(
            AdamW::new(AdamWConfig {
                learning_rate: 1e-2,
                weight_decay: 0.05,
                ..Default::default()
            })
            .with_group(
                "backbone",
                GroupOptions {
                    learning_rate: Some(1e-3),
                    ..Default::default()
                },
            ),
        ),
        _ => panic!("fixture case {case} has no configuration here"),
    }
}

/// The schedules of `scripts/optim_fixtures.py`, by name.
fn schedule(name: &str) -> Box<dyn LrSchedule> {
    match name {
        "step_lr" => Box::new(StepLr {
            step_size: 3,
            gamma: 0.5,
        }),
        "multi_step_lr" => Box::new(MultiStepLr {
            milestones: vec![2, 5, 9],
            gamma: 0.1,
        }),
        "exponential_lr" => Box::new(ExponentialLr { gamma: 0.8 }),
        "cosine_annealing_lr" => Box::new(CosineAnnealingLr {
            t_max: 10,
            eta_min: 0.001,
        }),
        "warmup_then_cosine" => Box::new(LinearWarmup {
            warmup_epochs: 3,
            start_factor: 0.25,
            then: CosineAnnealingLr {
                t_max: 6,
                eta_min: 0.01,
            },
        }),
        _ => panic!("fixture schedule {name} has no configuration here"),
    }
}

fn plateau(name: &str) -> ReduceLrOnPlateau {
    ReduceLrOnPlateau::new(match name {
        "plateau_min" => PlateauConfig {
            factor: 0.5,
            patience: 1,
            threshold: 0.01,
            cooldown: 1,
            min_lr: 0.02,
            ..Default::default()
        },
        "plateau_max_abs" => PlateauConfig {
            mode: PlateauMode::Max,
            factor: 0.1,
            patience: 2,
            threshold: 0.005,
            threshold_mode: ThresholdMode::Abs,
            ..Default::default()
        },
        _ => panic!("fixture plateau {name} has no configuration here"),
    })
}

fn numbers<T: std::str::FromStr>(fields: &[&str]) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    fields.iter().map(|f| f.parse().unwrap()).collect()
}

/// Values of some parameters at one step, by parameter name.
type Values = Vec<(String, Vec<f32>)>;

/// The fixture, parsed.
#[derive(Default)]
struct Fixture {
    /// Initial parameters: name, shape, values.
    params: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Per step, the gradients fed.
    grads: Vec<Values>,
    /// Per case: its name, then per step the parameters expected after it.
    cases: Vec<(String, Vec<Values>)>,
    /// Schedule name, metrics fed (plateaus only), learning rates.
    schedules: Vec<(String, Option<Vec<f64>>, Vec<f64>)>,
}

fn parse() -> Fixture {
    let mut fixture = Fixture::default();
    let mut metrics = None;
    for line in FIXTURE.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields[0] {
            "param" => {
                let shape = numbers(&fields[2].split(',').collect::<Vec<_>>());
                fixture
                    .params
                    .push((fields[1].into(), shape, numbers(&fields[3..])));
            }
            "grad" | "after" => {
                let step: usize = fields[1].parse().unwrap();
                let entry = (fields[2].to_string(), numbers(&fields[3..]));
                let steps = match fields[0] {
                    "grad" => &mut fixture.grads,
                    _ => &mut fixture.cases.last_mut().unwrap().1,
                };
                if steps.len() <= step {
                    steps.resize(step + 1, Vec::new());
                }
                steps[step].push(entry);
            }
            "case" => fixture.cases.push((fields[1].into(), Vec::new())),
            "metrics" => metrics = Some(numbers(&fields[2..])),
            "schedule" => {
                let rates = numbers(&fields[2..]);
                fixture
                    .schedules
                    .push((fields[1].into(), metrics.take(), rates));
            }
            other => panic!("unknown fixture record {other}"),
        }
    }
    fixture
}

/// The largest `|actual − expected| / (1 + |expected|)`.
fn worst_difference(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs() / (1.0 + e.abs()))
        .fold(0.0, f32::max)
}

#[test]
fn optimizers_match_pytorch_step_for_step() {
    let fixture = parse();
    assert_eq!(fixture.cases.len(), 11, "every optimizer case is replayed");
    let mut worst = (0.0f32, String::new());
    for (case, expected_steps) in &fixture.cases {
        let mut model = Named(
            fixture
                .params
                .iter()
                .map(|(name, shape, values)| {
                    let value = Tensor::from_vec(values.clone(), shape).unwrap();
                    (name.clone(), Param::new(name.clone(), value))
                })
                .collect(),
        );
        let mut optimizer = optimizer(case);
        for (step, expected) in expected_steps.iter().enumerate() {
            let mut grads = Gradients::default();
            for (name, values) in &fixture.grads[step] {
                let (_, param) = model.0.iter().find(|(n, _)| n == name).unwrap();
                let grad = Tensor::from_vec(values.clone(), param.shape()).unwrap();
                grads.insert(param.id(), grad);
            }
            optimizer.step(&mut model, &grads);
            for ((name, param), (expected_name, values)) in model.0.iter().zip(expected) {
                assert_eq!(name, expected_name);
                let difference = worst_difference(param.value().as_slice(), values);
                if difference > worst.0 {
                    worst = (difference, format!("{case}, step {step}, {name}"));
                }
            }
        }
    }
    println!(
        "worst relative difference from PyTorch: {:e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 < 2e-6,
        "worst difference {:e} at {}",
        worst.0,
        worst.1
    );
}

#[test]
fn schedules_match_pytorch() {
    let fixture = parse();
    assert_eq!(fixture.schedules.len(), 7, "every schedule is replayed");
    for (name, metrics, expected) in &fixture.schedules {
        let rates: Vec<f64> = match metrics {
            None => {
                let schedule = schedule(name);
                (0..expected.len())
                    .map(|e| schedule.learning_rate(e, 0.1))
                    .collect()
            }
            Some(metrics) => {
                let mut sgd = Sgd::new(SgdConfig {
                    learning_rate: 0.1,
                    ..Default::default()
                });
                let mut plateau = plateau(name);
                let mut rates = vec![sgd.learning_rate()];
                for &metric in metrics {
                    plateau.step(metric, &mut sgd);
                    rates.push(sgd.learning_rate());
                }
                rates
            }
        };
        assert_eq!(rates.len(), expected.len(), "{name}");
        for (epoch, (r, e)) in rates.iter().zip(expected).enumerate() {
            // The fixture prints 9 significant digits; PyTorch steps most schedules
            // recursively, which drifts from the closed form by rounding only.
            assert!(
                (r - e).abs() <= 1e-8 * e.abs(),
                "{name} epoch {epoch}: {r} vs {e}"
            );
        }
    }
}
