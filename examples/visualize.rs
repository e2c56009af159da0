//! Pictures of what a trained MNIST CNN sees: its first-layer filters, and the feature maps of
//! each conv layer for one test digit.
//!
//! ```sh
//! cargo run --release --example mnist -- --save mnist_cnn.safetensors
//! cargo run --release --example visualize -- --weights mnist_cnn.safetensors --out-dir viz
//! ```
//!
//! Writes `digit.png`, `conv1_filters.png` (32 filters, 3x3), `conv1_features.png` (32 maps,
//! 28x28) and `conv2_features.png` (64 maps, 14x14) into `--out-dir`. Without `--weights`, or if
//! the file does not exist yet, it first trains the CNN for one epoch and saves it there.
//! `--help` lists the flags.

mod common;

use std::error::Error;
use std::path::{Path, PathBuf};

use clap::Parser;
use common::cli::Common;
use common::{Grid, Shading, write_png};
use striate::data::{DataLoader, Dataset, Split};
use striate::io::{load_weights, save_weights};
use striate::models::mnist_cnn;
use striate::nn::{Module, Sequential};
use striate::optim::{Momentum, Sgd, SgdConfig};
use striate::prelude::{SeedableRng, StdRng};
use striate::train::{Fit, Progress};
use striate::{Tape, Tensor};

/// Pictures of what a trained MNIST CNN sees: first-layer filters and feature maps.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Trained weights (from `mnist --save`); trained for one epoch and saved here if absent
    #[arg(long, default_value = "mnist_cnn.safetensors")]
    weights: PathBuf,
    /// Directory for the PNG files
    #[arg(long, default_value = "visualize")]
    out_dir: PathBuf,
    /// Index of the test image whose feature maps are drawn
    #[arg(long, default_value_t = 0)]
    digit: usize,
}

/// Trains the CNN for one epoch and saves it, for a first run without a checkpoint.
fn train_and_save(model: &mut Sequential, common: &Common, path: &Path) -> striate::Result<()> {
    println!(
        "{} not found: training the CNN for one epoch first",
        path.display()
    );
    let train = DataLoader::new(common.load(false, Split::Train)?, 64)
        .shuffle(common.seed)
        .normalize(&[0.1307], &[0.3081]);
    let mut sgd = Sgd::new(SgdConfig {
        learning_rate: 0.05,
        momentum: Some(Momentum::classic(0.9)),
        ..Default::default()
    });
    Fit::new(model, &mut sgd)
        .epochs(1)
        .progress(Progress::Lines)
        .run(&train)?;
    save_weights(model, path)?;
    println!("saved {}", path.display());
    Ok(())
}

/// Writes `maps` `[count, h, w]` as a grid of `columns` cells, each shaded from its own range.
fn save_maps(
    path: &Path,
    maps: &Tensor,
    columns: usize,
    scale: usize,
) -> Result<(), Box<dyn Error>> {
    let [count, height, width] = maps.shape() else {
        return Err(format!("expected [count, h, w] maps, got {:?}", maps.shape()).into());
    };
    let cells: Vec<&[f32]> = maps.as_slice().chunks(height * width).collect();
    let grid = Grid {
        rows: count.div_ceil(columns),
        columns,
        height: *height,
        width: *width,
        scale,
        shading: Shading::PerCell,
        first_column_gap: 0,
    };
    let (pixels, w, h) = grid.render(&cells);
    write_png(path, &pixels, w, h)?;
    println!(
        "wrote {} ({count} maps of {height}x{width})",
        path.display()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    args.common.start_threads()?;
    let mut model = mnist_cnn(10, &mut StdRng::seed_from_u64(args.common.seed));
    if args.weights.exists() {
        load_weights(&mut model, &args.weights)?;
        println!("loaded {}", args.weights.display());
    } else {
        train_and_save(&mut model, &args.common, &args.weights)?;
    }
    std::fs::create_dir_all(&args.out_dir)?;

    let test = args.common.load(false, Split::Test)?;
    if args.digit >= test.len() {
        return Err(format!(
            "--digit {}: the test set has {} images",
            args.digit,
            test.len()
        )
        .into());
    }
    let digit = test.image(args.digit);
    let label = test.label(args.digit);
    save_maps(&args.out_dir.join("digit.png"), &digit, 1, 8)?;

    // conv1's weight [32, 1, 3, 3] as 32 little 3x3 images.
    let filters = model.layers()[0].as_ref();
    let mut weight = None;
    filters.visit_params(&mut |name, p| {
        if name == "weight" {
            weight = Some(p.value().reshape(&[32, 3, 3]));
        }
    });
    save_maps(
        &args.out_dir.join("conv1_filters.png"),
        &weight.expect("conv1 has a weight"),
        8,
        16,
    )?;

    // Feature maps after each conv + ReLU (layers 1 and 4 of the CNN), for the normalised digit.
    let normalised = digit
        .map(|v| (v - 0.1307) / 0.3081)
        .reshape(&[1, 1, 28, 28]);
    let tape = Tape::inference();
    let mut x = tape.input(normalised.clone());
    for (index, layer) in model.layers().iter().enumerate().take(5) {
        x = layer.forward(x);
        let name = match index {
            1 => "conv1",
            4 => "conv2",
            _ => continue,
        };
        let maps = x.value();
        let shape = maps.shape()[1..].to_vec();
        save_maps(
            &args.out_dir.join(format!("{name}_features.png")),
            &maps.reshape(&shape),
            8,
            6,
        )?;
    }
    let logits = model.predict(&normalised);
    println!(
        "test digit {} is a {label}; the model says {}",
        args.digit,
        logits.argmax_last_axis()[0]
    );
    Ok(())
}
