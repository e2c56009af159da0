//! Replays `tests/fixtures/averaging_pytorch.txt`, written by `scripts/averaging_fixtures.py`
//! from PyTorch's `AveragedModel` (EMA and equal averaging, `use_buffers=True`), and checks that
//! `WeightAverage` holds the same averaged parameters and buffers after every update.

use std::collections::BTreeMap;

use striate::nn::Module;
use striate::optim::WeightAverage;
use striate::{Param, Tensor, Var};

const FIXTURE: &str = include_str!("fixtures/averaging_pytorch.txt");

/// Named parameters and buffers, as the fixture lists them.
struct Named {
    params: Vec<(String, Param)>,
    buffers: Vec<(String, Tensor)>,
}

impl Module for Named {
    fn forward<'t>(&self, input: Var<'t>) -> Var<'t> {
        input
    }
    fn visit_params(&self, visitor: &mut dyn FnMut(&str, &Param)) {
        self.params.iter().for_each(|(name, p)| visitor(name, p));
    }
    fn visit_params_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Param)) {
        self.params
            .iter_mut()
            .for_each(|(name, p)| visitor(name, p));
    }
    fn visit_buffers(&self, visitor: &mut dyn FnMut(&str, &Tensor)) {
        self.buffers.iter().for_each(|(name, b)| visitor(name, b));
    }
    fn visit_buffers_mut(&mut self, visitor: &mut dyn FnMut(&str, &mut Tensor)) {
        self.buffers
            .iter_mut()
            .for_each(|(name, b)| visitor(name, b));
    }
}

impl Named {
    fn set(&mut self, values: &BTreeMap<String, Tensor>) {
        for (name, p) in &mut self.params {
            p.set_value(values[name.as_str()].clone());
        }
        for (name, b) in &mut self.buffers {
            *b = values[name.as_str()].clone();
        }
    }

    fn values(&self) -> BTreeMap<String, Tensor> {
        let params = self
            .params
            .iter()
            .map(|(n, p)| (n.clone(), p.value().clone()));
        let buffers = self.buffers.iter().map(|(n, b)| (n.clone(), b.clone()));
        params.chain(buffers).collect()
    }
}

/// A case's averages: update → tensor name → value.
type Averages = BTreeMap<usize, BTreeMap<String, Tensor>>;

/// The fixture, parsed.
struct Fixture {
    /// (kind, name, shape)
    tensors: Vec<(String, String, Vec<usize>)>,
    /// The model state fed at each update.
    states: Vec<BTreeMap<String, Tensor>>,
    /// Each case's name and averages.
    cases: Vec<(String, Averages)>,
}

fn parse() -> Fixture {
    let mut fixture = Fixture {
        tensors: Vec::new(),
        states: Vec::new(),
        cases: Vec::new(),
    };
    let shape_of = |tensors: &[(String, String, Vec<usize>)], name: &str| {
        tensors
            .iter()
            .find(|(_, n, _)| n == name)
            .unwrap_or_else(|| panic!("unknown tensor {name}"))
            .2
            .clone()
    };
    for line in FIXTURE.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(' ').collect();
        let values = |from: usize| -> Vec<f32> {
            fields[from..].iter().map(|v| v.parse().unwrap()).collect()
        };
        match fields[0] {
            "tensor" => {
                let shape = fields[3].split(',').map(|d| d.parse().unwrap()).collect();
                fixture
                    .tensors
                    .push((fields[1].into(), fields[2].into(), shape));
            }
            "state" => {
                let update: usize = fields[1].parse().unwrap();
                if fixture.states.len() <= update {
                    fixture.states.resize(update + 1, BTreeMap::new());
                }
                let shape = shape_of(&fixture.tensors, fields[2]);
                let tensor = Tensor::from_vec(values(3), &shape).unwrap();
                fixture.states[update].insert(fields[2].into(), tensor);
            }
            "case" => fixture.cases.push((fields[1].into(), BTreeMap::new())),
            "average" => {
                let update: usize = fields[1].parse().unwrap();
                let shape = shape_of(&fixture.tensors, fields[2]);
                let tensor = Tensor::from_vec(values(3), &shape).unwrap();
                let case = &mut fixture.cases.last_mut().expect("a case first").1;
                case.entry(update)
                    .or_default()
                    .insert(fields[2].into(), tensor);
            }
            other => panic!("unknown record {other}"),
        }
    }
    fixture
}

/// The averaging configurations of `scripts/averaging_fixtures.py`, by case name.
fn average(case: &str) -> WeightAverage {
    match case {
        "ema_0.999" => WeightAverage::ema(0.999),
        "ema_0.9" => WeightAverage::ema(0.9),
        "ema_0.3" => WeightAverage::ema(0.3),
        "ema_0.9_from_update_3" => WeightAverage::ema(0.9).start_step(3),
        "equal" => WeightAverage::equal(),
        "equal_from_update_2" => WeightAverage::equal().start_step(2),
        other => panic!("no configuration for case {other}"),
    }
}

#[test]
fn weight_averages_match_pytorch_averaged_model() {
    let fixture = parse();
    assert_eq!(fixture.cases.len(), 6);
    for (case, expected) in &fixture.cases {
        let mut model = Named {
            params: Vec::new(),
            buffers: Vec::new(),
        };
        for (kind, name, shape) in &fixture.tensors {
            match kind.as_str() {
                "param" => model
                    .params
                    .push((name.clone(), Param::new(name.clone(), Tensor::zeros(shape)))),
                _ => model.buffers.push((name.clone(), Tensor::zeros(shape))),
            }
        }
        let mut averaged = average(case);
        for (update, state) in fixture.states.iter().enumerate() {
            model.set(state);
            averaged.update(&model);
            let Some(expected) = expected.get(&update) else {
                assert!(averaged.is_empty(), "{case}: update {update} was skipped");
                continue;
            };
            averaged.swap(&mut model);
            let actual = model.values();
            averaged.swap(&mut model);
            for (name, want) in expected {
                for (i, (a, e)) in actual[name]
                    .as_slice()
                    .iter()
                    .zip(want.as_slice())
                    .enumerate()
                {
                    // PyTorch's lerp, reproduced: equal up to the last bit or two.
                    let tolerance = 2.0 * f32::EPSILON * e.abs().max(1.0);
                    assert!(
                        (a - e).abs() <= tolerance,
                        "{case}, update {update}, {name}[{i}]: {a} != {e}"
                    );
                }
            }
        }
        assert_eq!(averaged.n_averaged() as usize, expected.len(), "{case}");
    }
}
