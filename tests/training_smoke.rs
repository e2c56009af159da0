//! End-to-end smoke tests of the tape: a two-layer MLP learns XOR.

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::tensor::init::{FanMode, Nonlinearity, kaiming_uniform};
use striate::{Param, Tape, Tensor};

/// Plain gradient descent on a list of parameters (the optimizers live in `striate::optim`;
/// this test exercises the tape alone).
fn descend(params: &mut [&mut Param], grads: &striate::Gradients, learning_rate: f32) {
    for param in params.iter_mut() {
        if let Some(grad) = grads.get(param).cloned() {
            for (p, g) in param
                .value_mut()
                .as_slice_mut()
                .iter_mut()
                .zip(grad.as_slice())
            {
                *p -= learning_rate * g;
            }
        }
    }
}

#[test]
fn two_layer_mlp_learns_xor() {
    let mut rng = StdRng::seed_from_u64(42);
    let mut w1 = Param::new(
        "w1",
        kaiming_uniform(&[2, 8], FanMode::FanOut, Nonlinearity::Tanh, &mut rng),
    );
    let mut b1 = Param::new("b1", Tensor::zeros(&[8]));
    let mut w2 = Param::new(
        "w2",
        kaiming_uniform(&[8, 1], FanMode::FanOut, Nonlinearity::Linear, &mut rng),
    );
    let mut b2 = Param::new("b2", Tensor::zeros(&[1]));
    let inputs = Tensor::from_vec(vec![0., 0., 0., 1., 1., 0., 1., 1.], &[4, 2]).unwrap();
    let targets = Tensor::from_vec(vec![0., 1., 1., 0.], &[4, 1]).unwrap();

    let mut last_loss = f32::INFINITY;
    for _ in 0..2000 {
        let tape = Tape::training();
        let x = tape.input(inputs.clone());
        let hidden = (x.matmul(tape.param(&w1)) + tape.param(&b1)).tanh();
        let logits = hidden.matmul(tape.param(&w2)) + tape.param(&b2);
        let loss = logits.binary_cross_entropy_with_logits(tape.input(targets.clone()));
        last_loss = loss.item();
        let grads = loss.backward();
        drop(tape);
        descend(&mut [&mut w1, &mut b1, &mut w2, &mut b2], &grads, 0.5);
    }
    assert!(last_loss < 0.05, "XOR loss stayed at {last_loss}");

    let tape = Tape::inference();
    let x = tape.input(inputs);
    let hidden = (x.matmul(tape.param(&w1)) + tape.param(&b1)).tanh();
    let probabilities = (hidden.matmul(tape.param(&w2)) + tape.param(&b2))
        .sigmoid()
        .value();
    let predicted: Vec<f32> = probabilities.as_slice().iter().map(|p| p.round()).collect();
    assert_eq!(predicted, targets.to_vec());
}
