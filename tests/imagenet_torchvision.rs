//! The ImageNet-style pipeline on real photographs against torchvision, on committed fixtures
//! written by `scripts/imagenet_fixtures.py` (`tests/fixtures/imagenet/`): a JPEG and a PNG
//! crop of scikit-learn's sample photographs, Pillow's decoding of them (torchvision's
//! `ImageFolder` loader; Pillow with libjpeg-turbo, versions in the manifest), and torchvision's
//! outputs.
//!
//! | what | tolerance | why not exact |
//! |---|---|---|
//! | decoding the PNG | exact | lossless |
//! | decoding the JPEG | 4 levels (of 255), 99.5% of values within 2, mean under 0.5 | the `image` crate's decoder (zune-jpeg) and libjpeg-turbo 3.2 round their IDCT and chroma upsampling differently (measured: 73% equal, 99.9% within 2 levels, worst 4 on an edge) |
//! | shorter-side resize + centre crop + normalise, from Pillow's pixels | 1e-5 | same taps (antialiased bilinear); summation order, and values scaled by 1/std up to 4.4 (measured: 5.4e-6) |
//! | resized crop (antialiased) + flip + normalise | 1e-5 | the same |
//! | the whole pipeline from the file against the classic Pillow pipeline | 3 levels after the resize (of 255, before normalising) | Pillow resizes in 8 bits, rounding twice; plus the JPEG decoders' difference |
//!
//! Run with `--nocapture` to see the worst difference of each case.

#[path = "common/stf1.rs"]
mod stf1;

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::Tensor;
use striate::data::{ColorMode, read_image};
use striate::transforms::functional::{crop, hflip, normalize, resize_antialiased};
use striate::transforms::{
    CenterCrop, Compose, IMAGENET_MEAN, IMAGENET_STD, Normalize, PaddingMode, Resize, Transform,
};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imagenet")
}

/// Reads a fixture tensor by name.
fn read_tensor(name: &str) -> Tensor {
    stf1::read_tensor(&fixture_dir().join(format!("{name}.f32")))
}

struct Case {
    name: String,
    file: String,
    window: [usize; 4],
}

fn cases() -> Vec<Case> {
    let manifest = std::fs::read_to_string(fixture_dir().join("manifest.txt")).unwrap();
    manifest
        .lines()
        .filter(|l| !l.starts_with("decoder"))
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let n = |k: usize| f[k].parse::<usize>().unwrap();
            Case {
                name: f[0].into(),
                file: f[1].into(),
                window: [n(2), n(3), n(4), n(5)],
            }
        })
        .collect()
}

/// The largest and the mean absolute difference.
fn differences(a: &Tensor, b: &Tensor) -> (f32, f32) {
    assert_eq!(a.shape(), b.shape());
    let (mut worst, mut total) = (0.0f32, 0.0f64);
    for (x, y) in a.as_slice().iter().zip(b.as_slice()) {
        let d = (x - y).abs();
        worst = worst.max(d);
        total += f64::from(d);
    }
    (worst, (total / a.len() as f64) as f32)
}

fn eval_pipeline() -> Compose {
    Compose::new(vec![
        Box::new(Resize::shorter_side(48)),
        Box::new(CenterCrop::new(40)),
        Box::new(Normalize::imagenet()),
    ])
}

#[test]
fn decoding_matches_pillow() {
    for case in cases() {
        let ours = read_image(fixture_dir().join(&case.file), ColorMode::Rgb).unwrap();
        let pillow = read_tensor(&format!("{}_decoded", case.name));
        let (worst, mean) = differences(&ours, &pillow);
        let (worst, mean) = (worst * 255.0, mean * 255.0);
        let mut histogram = [0usize; 6];
        for (a, b) in ours.as_slice().iter().zip(pillow.as_slice()) {
            histogram[(((a - b).abs() * 255.0).round() as usize).min(5)] += 1;
        }
        println!(
            "{}: pixels differing by 0, 1, 2, 3, 4, 5+ levels: {histogram:?}",
            case.file
        );
        println!(
            "{}: decoding differs from Pillow by {worst:.0} levels at most, {mean:.3} on average",
            case.file
        );
        if case.file.ends_with(".png") {
            // Every byte equal (torchvision divides by 255 in another order: 1 ulp apart).
            assert_eq!(histogram[0], ours.len(), "{}", case.file);
        } else {
            let within_two = histogram[..3].iter().sum::<usize>() as f64 / ours.len() as f64;
            assert!(
                worst <= 4.0 + 1e-3 && within_two >= 0.995 && mean < 0.5,
                "{}: {worst} {within_two} {mean}",
                case.file
            );
        }
    }
}

#[test]
fn resize_crop_flip_normalise_match_torchvision() {
    let mut rng = StdRng::seed_from_u64(0);
    for case in cases() {
        let decoded = read_tensor(&format!("{}_decoded", case.name));
        let ours = eval_pipeline().apply(&decoded, &mut rng);
        let (worst, _) = differences(&ours, &read_tensor(&format!("{}_eval", case.name)));
        println!(
            "{}: Resize(48) + CenterCrop(40) + Normalize: worst {worst:.2e}",
            case.name
        );
        assert!(worst <= 1e-5, "{}: {worst}", case.name);

        let [top, left, height, width] = case.window;
        let window = crop(
            &decoded,
            top as isize,
            left as isize,
            (height, width),
            PaddingMode::default(),
        );
        let flipped = hflip(&resize_antialiased(&window, 32));
        let ours = normalize(&flipped, &IMAGENET_MEAN, &IMAGENET_STD);
        let (worst, _) = differences(&ours, &read_tensor(&format!("{}_crop", case.name)));
        println!(
            "{}: resized crop + flip + Normalize: worst {worst:.2e}",
            case.name
        );
        assert!(worst <= 1e-5, "{}: {worst}", case.name);
    }
}

#[test]
fn the_pipeline_from_the_file_is_within_rounding_of_the_classic_pillow_one() {
    let mut rng = StdRng::seed_from_u64(0);
    for case in cases() {
        let image = read_image(fixture_dir().join(&case.file), ColorMode::Rgb).unwrap();
        let ours = eval_pipeline().apply(&image, &mut rng);
        let theirs = read_tensor(&format!("{}_pil_eval", case.name));
        // Back to levels of 255 before normalisation: the largest std is 0.229.
        let (worst, mean) = differences(&ours, &theirs);
        let (worst, mean) = (worst * 0.229 * 255.0, mean * 0.229 * 255.0);
        println!(
            "{}: file -> pipeline against Pillow's 8-bit one: worst {worst:.2}, mean {mean:.3} levels",
            case.file
        );
        assert!(worst <= 3.0 && mean < 0.6, "{}: {worst} {mean}", case.file);
    }
}
