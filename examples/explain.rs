//! Where the MNIST CNN looks: Grad-CAM (at the second conv layer's ReLU, `--layer 4`) and
//! gradient saliency for a few test digits, written as PNG overlays (the digit in grey, the
//! map in colour on top).
//!
//! ```sh
//! cargo run --release --example explain -- --out-dir explain
//! ```
//!
//! Writes `digit<i>_true<t>_pred<p>_gradcam.png` and `..._saliency.png` for the first `--count`
//! test digits into `--out-dir`. MNIST is read from `--data-dir`, else `$STRIATE_DATA/mnist`,
//! else `../shared/data/mnist` beside the repository, else the usual places (see
//! `striate::data::Mnist`). The CNN's weights come from `--weights` (default
//! `mnist_cnn.safetensors`); if that file does not exist, the CNN is first trained for one
//! epoch and saved there.

mod common;

use std::error::Error;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use clap::Parser;
use common::cli::Common;
use striate::Tensor;
use striate::data::{DataLoader, Dataset, Split};
use striate::explain::{grad_cam, saliency};
use striate::io::{load_weights, save_weights};
use striate::models::mnist_cnn;
use striate::nn::Module;
use striate::optim::{Momentum, Sgd, SgdConfig};
use striate::prelude::{SeedableRng, StdRng};
use striate::train::{Fit, Progress};

const SCALE: usize = 8;

/// Where the MNIST CNN looks: Grad-CAM and saliency overlays for test digits.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Trained weights (from `mnist --save`); trained for one epoch and saved here if absent
    #[arg(long, default_value = "mnist_cnn.safetensors")]
    weights: PathBuf,
    /// Directory for the PNG files
    #[arg(long, default_value = "explain")]
    out_dir: PathBuf,
    /// How many test digits to explain
    #[arg(long, default_value_t = 6)]
    count: usize,
    /// The stage whose output Grad-CAM weighs; "4" is the second conv layer's ReLU (its
    /// pre-activation output "3" can have a negative weighted sum everywhere, which Grad-CAM's
    /// ReLU turns into an empty map)
    #[arg(long, default_value = "4")]
    layer: String,
}

/// A blue-to-red colour ramp for a value in [0, 1].
fn heat(v: f32) -> [f32; 3] {
    let v = v.clamp(0.0, 1.0);
    [
        (1.5 - (4.0 * v - 3.0).abs()).clamp(0.0, 1.0),
        (1.5 - (4.0 * v - 2.0).abs()).clamp(0.0, 1.0),
        (1.5 - (4.0 * v - 1.0).abs()).clamp(0.0, 1.0),
    ]
}

/// Writes the digit (grey, [0, 1]) with `map` ([0, 1]) blended on top, enlarged `SCALE` times.
fn write_overlay(
    path: &Path,
    digit: &[f32],
    map: &[f32],
    side: usize,
) -> Result<(), Box<dyn Error>> {
    let out = side * SCALE;
    let mut rgb = Vec::with_capacity(out * out * 3);
    for y in 0..out {
        for x in 0..out {
            let i = (y / SCALE) * side + x / SCALE;
            let colour = heat(map[i]);
            for c in colour {
                rgb.push(((0.5 * digit[i] + 0.5 * c) * 255.0).round() as u8);
            }
        }
    }
    let partial = path.with_extension("png.partial");
    {
        let mut encoder = png::Encoder::new(
            BufWriter::new(File::create(&partial)?),
            out as u32,
            out as u32,
        );
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&rgb)?;
        writer.finish()?;
    }
    std::fs::rename(&partial, path)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = Args::parse();
    args.common.start_threads()?;
    if args.common.data_dir.is_none() && std::env::var_os("STRIATE_DATA").is_none() {
        let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
        args.common.data_dir = Some(beside).filter(|d| d.exists());
    }
    let mut model = mnist_cnn(10, &mut StdRng::seed_from_u64(args.common.seed));
    if args.weights.exists() {
        load_weights(&mut model, &args.weights)?;
        println!("loaded {}", args.weights.display());
    } else {
        println!(
            "{} not found: training the CNN for one epoch first",
            args.weights.display()
        );
        let train = DataLoader::new(args.common.load(false, Split::Train)?, 64)
            .shuffle(args.common.seed)
            .normalize(&[0.1307], &[0.3081]);
        let mut sgd = Sgd::new(SgdConfig {
            learning_rate: 0.05,
            momentum: Some(Momentum::classic(0.9)),
            ..Default::default()
        });
        Fit::new(&mut model, &mut sgd)
            .progress(Progress::Lines)
            .run(&train)?;
        save_weights(&model, &args.weights)?;
        println!("saved {}", args.weights.display());
    }
    std::fs::create_dir_all(&args.out_dir)?;

    let test = args.common.load(false, Split::Test)?;
    for index in 0..args.count.min(test.len()) {
        let digit = test.image(index); // [1, 28, 28] in [0, 1]
        let label = test.label(index);
        let normalised = digit.map(|v| (v - 0.1307) / 0.3081);
        let predicted = model
            .predict(&normalised.reshape(&[1, 1, 28, 28]))
            .argmax_last_axis()[0];
        let cam = grad_cam(&model, &args.layer, &normalised, predicted);
        let gradient = saliency(&model, &normalised, predicted);
        let peak = gradient.as_slice().iter().copied().fold(1e-12, f32::max);
        let gradient: Tensor = gradient.map(|v| v / peak);
        for (kind, map) in [("gradcam", &cam), ("saliency", &gradient)] {
            let path = args.out_dir.join(format!(
                "digit{index}_true{label}_pred{predicted}_{kind}.png"
            ));
            write_overlay(&path, digit.as_slice(), map.as_slice(), 28)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
