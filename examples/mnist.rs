//! Trains the MNIST CNN and reports test accuracy, per epoch and per class.
//!
//! ```sh
//! cargo run --release --example mnist                      # MNIST, 8 epochs
//! cargo run --release --example mnist -- --dataset fashion --epochs 10
//! ```
//!
//! Flags: `--data-dir DIR`, `--dataset mnist|fashion`, `--epochs N`, `--batch-size N`,
//! `--lr X`, `--seed N`, `--threads N`, `--plot FILE.svg`, `--save WEIGHTS.safetensors` (for
//! `examples/visualize.rs`).
//! Data is found in `--data-dir`, then `$STRIATE_DATA`, then `~/.cache/striate`, else downloaded.

use std::process::ExitCode;

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::data::{DataLoader, FashionMnist, ImageDataset, Mnist, Split};
use striate::models::mnist_cnn;
use striate::nn::Module;
use striate::optim::{CosineAnnealingLr, Momentum, Sgd, SgdConfig};
use striate::train::{Fit, Progress, confusion_matrix};

struct Options {
    data_dir: Option<String>,
    fashion: bool,
    epochs: usize,
    batch_size: usize,
    learning_rate: f64,
    seed: u64,
    threads: Option<usize>,
    plot: Option<String>,
    save: Option<String>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        data_dir: None,
        fashion: false,
        epochs: 8,
        batch_size: 64,
        learning_rate: 0.05,
        seed: 0,
        threads: None,
        plot: None,
        save: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--data-dir" => options.data_dir = Some(value()?),
            "--dataset" => {
                options.fashion = match value()?.as_str() {
                    "mnist" => false,
                    "fashion" => true,
                    other => {
                        return Err(format!("--dataset: expected mnist or fashion, got {other}"));
                    }
                }
            }
            "--epochs" => options.epochs = number(value()?)? as usize,
            "--batch-size" => options.batch_size = number(value()?)? as usize,
            "--lr" => options.learning_rate = number(value()?)?,
            "--seed" => options.seed = number(value()?)? as u64,
            "--threads" => options.threads = Some(number(value()?)? as usize),
            "--plot" => options.plot = Some(value()?),
            "--save" => options.save = Some(value()?),
            "--help" | "-h" => {
                return Err(
                    "usage: mnist [--data-dir DIR] [--dataset mnist|fashion] [--epochs N] \
                            [--batch-size N] [--lr X] [--seed N] [--threads N] [--plot FILE.svg] \
                            [--save WEIGHTS.safetensors]"
                        .into(),
                );
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    Ok(options)
}

fn load(options: &Options, split: Split) -> striate::Result<ImageDataset> {
    let mut source = if options.fashion {
        FashionMnist::source()
    } else {
        Mnist::source()
    };
    if let Some(dir) = &options.data_dir {
        source = source.dir(dir);
    }
    source.load(split)
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if let Some(threads) = options.threads
        && let Err(e) = striate::set_num_threads(threads)
    {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> striate::Result<()> {
    let name = if options.fashion {
        "Fashion-MNIST"
    } else {
        "MNIST"
    };
    let (train, test) = (load(options, Split::Train)?, load(options, Split::Test)?);
    println!("striate on {} threads", striate::num_threads());
    println!(
        "{name}: {} training images, {} test images",
        train.labels().len(),
        test.labels().len()
    );

    // The usual MNIST normalisation (mean and std of the training pixels).
    let (mean, std) = if options.fashion {
        (0.2860, 0.3530)
    } else {
        (0.1307, 0.3081)
    };
    let train_loader = DataLoader::new(train, options.batch_size)
        .shuffle(options.seed)
        .normalize(&[mean], &[std]);
    let test_loader = DataLoader::new(test, 256).normalize(&[mean], &[std]);

    let mut model = mnist_cnn(10, &mut StdRng::seed_from_u64(options.seed));
    println!("model: {} parameters", model.num_params());
    let mut sgd = Sgd::new(SgdConfig {
        learning_rate: options.learning_rate,
        momentum: Some(Momentum::classic(0.9)),
        ..Default::default()
    });
    let mut fit = Fit::new(&mut model, &mut sgd)
        .epochs(options.epochs)
        .validation(&test_loader)
        .schedule(CosineAnnealingLr {
            t_max: options.epochs,
            eta_min: 0.0,
        })
        .progress(Progress::Auto)
        .seed(options.seed);
    if let Some(path) = &options.plot {
        fit = fit.plot(path);
    }
    let history = fit.run(&train_loader)?;
    let last = history.last().expect("at least one epoch");
    println!(
        "test accuracy {:.2}% after {} epochs ({:.1} s of training)",
        100.0 * last.val_accuracy.unwrap_or(0.0),
        history.epochs.len(),
        history.epochs.iter().map(|e| e.train_seconds).sum::<f64>()
    );

    let matrix = confusion_matrix(&model, &test_loader, 10)?;
    let names: Vec<String> = if options.fashion {
        FashionMnist::CLASSES
            .iter()
            .map(|c| c.to_string())
            .collect()
    } else {
        (0..10).map(|d| d.to_string()).collect()
    };
    println!(
        "\n{}",
        matrix.classification_report().with_class_names(&names)
    );
    if let Some(path) = &options.plot {
        println!("training curves written to {path}");
    }
    if let Some(path) = &options.save {
        striate::io::save_weights(&model, path)?;
        println!("weights saved to {path}");
    }
    Ok(())
}
