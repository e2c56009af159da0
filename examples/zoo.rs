//! The model zoo: the summaries of VGG-16 and ResNet-18 for 224x224 ImageNet images, and the
//! time of one forward pass of one image through each on an inference tape.
//!
//! Run: `cargo run --release --example zoo [-- --runs 5 --threads 2]` (`--help` lists the flags).

mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use common::cli::Common;
use striate::models::{resnet18, vgg16};
use striate::nn::{Module, summary};
use striate::prelude::{SeedableRng, StdRng};
use striate::{Tape, Tensor};

/// Forward passes of `image` through `model` on inference tapes: the fastest and the median.
fn time_forward(model: &dyn Module, image: &Tensor, runs: usize) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let tape = Tape::inference();
            let logits = model.forward(tape.input(image.clone()));
            assert_eq!(logits.shape(), vec![1, 1000]);
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[0], times[runs / 2])
}

/// Summaries of VGG-16 and ResNet-18 for 224x224 images, and the time of one forward pass.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Timed forward passes per model
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
}

fn main() -> striate::Result<()> {
    let args = Args::parse();
    args.common.start_threads()?;
    let runs = args.runs as usize;
    let mut rng = StdRng::seed_from_u64(args.common.seed);
    let image = Tensor::rand_uniform(&[1, 3, 224, 224], -2.0, 2.0, &mut rng);
    println!("striate on {} threads\n", striate::num_threads());
    let models: [(&str, Box<dyn Module>); 2] = [
        ("VGG-16", Box::new(vgg16(1000, &mut rng))),
        ("ResNet-18", Box::new(resnet18(1000, &mut rng))),
    ];
    for (name, model) in &models {
        // the summary runs one forward pass, which also warms up the kernels' buffers
        println!("{name}\n{}\n", summary(model.as_ref(), &[1, 3, 224, 224]));
        let (fastest, median) = time_forward(model.as_ref(), &image, runs);
        println!(
            "{name}: {} parameters; one 224x224 image forward (inference): fastest {:.1} ms, median {:.1} ms over {runs} runs\n",
            model.num_params(),
            fastest.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
