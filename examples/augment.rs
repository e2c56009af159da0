//! Writes a PNG grid of augmented MNIST digits: each row is a test digit, then eight
//! augmentations of it by the typical MNIST pipeline (rotation ±15°, random crop with padding 2,
//! elastic deformation α = 34 σ = 4, Gaussian noise σ = 0.05). Each column is one epoch of
//! `apply_batch`, so every column draws fresh parameters for every digit.
//!
//! ```text
//! cargo run --release --example augment -- augment.png [--data-dir DIR] [--rows N] [--seed S] [--scale K]
//! ```
//!
//! The MNIST files are looked for in `--data-dir DIR` (and its `mnist/` subfolder), then in
//! `$STRIATE_DATA` and the usual places (see `striate::data::Mnist`).

mod common;

use std::error::Error;
use std::path::PathBuf;

use clap::Parser;
use common::cli::Common;
use striate::Tensor;
use striate::data::{Dataset, Split};
use striate::transforms::{
    Compose, ElasticTransform, GaussianNoise, Interpolation, RandomCrop, RandomRotation,
    apply_batch,
};

/// Augmented copies per digit.
const COLUMNS: usize = 8;
const SIDE: usize = 28;
/// Writes a PNG grid of augmented MNIST digits: each row a test digit, then eight
/// augmentations of it.
#[derive(Parser, Debug)]
struct Args {
    /// The PNG file to write
    output: PathBuf,
    #[command(flatten)]
    common: Common,
    /// Digits (rows) in the grid
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    rows: u32,
    /// Pixels per image pixel
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    scale: u32,
}

/// Test-set indices, one per row, cycling through the classes 0, 1, 2, ... so the grid shows
/// every digit.
fn pick_digits(labels: &[usize], rows: usize) -> Vec<usize> {
    let mut picks = Vec::with_capacity(rows);
    let mut next = [0usize; 10];
    for row in 0..rows {
        let class = row % 10;
        if let Some(offset) = labels[next[class]..].iter().position(|&l| l == class) {
            let index = next[class] + offset;
            picks.push(index);
            next[class] = index + 1;
        }
    }
    picks
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    args.common.start_threads()?;
    let test = args.common.load(false, Split::Test)?;
    let picks = pick_digits(test.labels(), args.rows as usize);
    let digits: Vec<Tensor> = picks.iter().map(|&i| test.image(i)).collect();
    let views: Vec<&Tensor> = digits.iter().collect();
    let originals = Tensor::concat(&views, 0).reshape(&[picks.len(), 1, SIDE, SIDE]);

    let pipeline = Compose::default()
        .then(RandomRotation::new(15.0).interpolation(Interpolation::Bilinear))
        .then(RandomCrop::new(SIDE).padding(2))
        .then(ElasticTransform::new(34.0, 4.0))
        .then(GaussianNoise::new(0.05));
    let columns: Vec<Tensor> = (0..COLUMNS as u64)
        .map(|epoch| apply_batch(&pipeline, &originals, args.common.seed, epoch, 0))
        .collect();

    // One row per digit: the original, then its augmentations.
    let image = |t: &Tensor, row: usize| -> Vec<f32> { t.select(0, row).to_vec() };
    let cells: Vec<Vec<f32>> = (0..picks.len())
        .flat_map(|row| {
            std::iter::once(image(&originals, row))
                .chain(columns.iter().map(move |c| image(c, row)))
                .collect::<Vec<_>>()
        })
        .collect();
    let cells: Vec<&[f32]> = cells.iter().map(|c| c.as_slice()).collect();
    let grid = common::Grid {
        rows: picks.len(),
        columns: 1 + COLUMNS,
        height: SIDE,
        width: SIDE,
        scale: args.scale as usize,
        shading: common::Shading::Unit,
        first_column_gap: 3 * args.scale as usize,
    };
    let (pixels, width, height) = grid.render(&cells);
    common::write_png(&args.output, &pixels, width, height)?;
    println!(
        "wrote {} ({width}x{height}): {} digits, each with {COLUMNS} augmentations",
        args.output.display(),
        picks.len()
    );
    Ok(())
}
