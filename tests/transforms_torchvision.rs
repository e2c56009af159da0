//! Agreement with torchvision's functional transforms on committed fixtures.
//!
//! `scripts/transform_fixtures.py` (and, for an explicit `fill`, `scripts/transform_fill_fixtures.py`)
//! wrote the inputs, the torchvision outputs and a manifest
//! (`tests/fixtures/transforms/`); this test reads only those files. Each op has a stated
//! tolerance on the largest absolute difference, for images with values in `[0, 1]`:
//!
//! | op | tolerance | why not exact |
//! |---|---|---|
//! | rotate, affine (bilinear) | 5e-6 | torchvision builds its grid in f32 through normalised coordinates: about 1 ulp (1e-6 px) of position error at 14 px from the centre, times the image's slope |
//! | rotate, affine (nearest) | exact | the same pixel is picked |
//! | resize (bilinear, no antialias) | 1e-6 | same taps; summation order |
//! | center_crop | exact | a copy |
//! | brightness, saturation | 1e-6 | same formula; fused vs separate rounding |
//! | contrast | 1e-6 | the image mean is summed in f64 here |
//! | hue | 1e-6 | the HSV round trip, in the same formulas (exact on these fixtures) |
//!
//! Run with `--nocapture` to see the worst difference of each case.

#[path = "common/stf1.rs"]
mod stf1;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use striate::Tensor;
use striate::transforms::functional::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, affine, center_crop, resize,
    rotate,
};
use striate::transforms::{Affine, Fill, Interpolation};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transforms")
}

/// Reads a fixture tensor by name.
fn read_tensor(name: &str) -> Tensor {
    stf1::read_tensor(&fixture_dir().join(format!("{name}.f32")))
}

struct Case {
    name: String,
    op: String,
    input: String,
    params: HashMap<String, String>,
}

impl Case {
    fn f32(&self, key: &str) -> f32 {
        self.params[key].parse().unwrap()
    }

    fn usize(&self, key: &str) -> usize {
        self.params[key].parse().unwrap()
    }

    fn interpolation(&self) -> Interpolation {
        match self.params["interpolation"].as_str() {
            "nearest" => Interpolation::Nearest,
            "bilinear" => Interpolation::Bilinear,
            other => panic!("{}: unknown interpolation {other}", self.name),
        }
    }

    /// torchvision's explicit `fill=[v]` (the mask blend) when the case names one, else
    /// `fill=None` (taps outside read 0).
    fn fill(&self) -> Fill {
        match self.params.get("fill") {
            Some(v) => Fill::torchvision(v.parse().unwrap()),
            None => Fill::from(0.0),
        }
    }

    /// The op's key in the tolerance table: nearest resampling is held to exactness.
    fn kind(&self) -> String {
        match self.params.get("interpolation") {
            Some(mode) => format!("{} ({mode})", self.op),
            None => self.op.clone(),
        }
    }

    fn run(&self, image: &Tensor) -> Tensor {
        match self.op.as_str() {
            "rotate" => rotate(image, self.f32("angle"), self.interpolation(), self.fill()),
            "affine" => {
                let params = Affine {
                    angle: self.f32("angle"),
                    translate: (self.f32("tx"), self.f32("ty")),
                    scale: self.f32("scale"),
                    shear: (self.f32("shear_x"), self.f32("shear_y")),
                };
                affine(image, &params, self.interpolation(), self.fill())
            }
            "resize" => resize(image, (self.usize("height"), self.usize("width"))),
            "center_crop" => center_crop(image, (self.usize("height"), self.usize("width"))),
            "brightness" => adjust_brightness(image, self.f32("factor")),
            "contrast" => adjust_contrast(image, self.f32("factor")),
            "saturation" => adjust_saturation(image, self.f32("factor")),
            "hue" => adjust_hue(image, self.f32("shift")),
            other => panic!("{}: unknown op {other}", self.name),
        }
    }
}

/// The cases of `manifest.txt` and of `fill_manifest.txt` (torchvision's explicit fill, from
/// `scripts/transform_fill_fixtures.py`).
fn read_manifest() -> Vec<Case> {
    let mut text = std::fs::read_to_string(fixture_dir().join("manifest.txt")).unwrap();
    text += &std::fs::read_to_string(fixture_dir().join("fill_manifest.txt")).unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let mut words = line.split_whitespace();
            let mut next = || words.next().expect("case op input").to_string();
            let (name, op, input) = (next(), next(), next());
            let params = words
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("key=value");
                    (k.to_string(), v.to_string())
                })
                .collect();
            Case {
                name,
                op,
                input,
                params,
            }
        })
        .collect()
}

fn tolerance(kind: &str) -> f32 {
    match kind {
        "rotate (bilinear)" | "affine (bilinear)" => 5e-6,
        "rotate (nearest)" | "affine (nearest)" | "center_crop" => 0.0,
        "resize" | "brightness" | "contrast" | "saturation" | "hue" => 1e-6,
        other => panic!("no tolerance stated for {other}"),
    }
}

#[test]
fn functional_transforms_agree_with_torchvision() {
    let cases = read_manifest();
    assert!(cases.len() >= 30, "manifest has {} cases", cases.len());
    let mut worst_by_kind: HashMap<String, (f32, String)> = HashMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let input = read_tensor(&case.input);
        let expected = read_tensor(&case.name);
        let actual = case.run(&input);
        assert_eq!(actual.shape(), expected.shape(), "{}: shape", case.name);
        let (worst, at) = actual
            .as_slice()
            .iter()
            .zip(expected.as_slice())
            .map(|(a, e)| (a - e).abs())
            .enumerate()
            .fold(
                (0.0f32, 0),
                |(m, at), (k, d)| {
                    if d > m { (d, k) } else { (m, at) }
                },
            );
        let kind = case.kind();
        println!(
            "{:<32} {:<20} max |diff| {worst:.3e} at {at}",
            case.name, kind
        );
        if worst > tolerance(&kind) {
            failures.push(format!(
                "{}: max |diff| {worst:e} at index {at} (ours {}, torchvision {}) exceeds {:e}",
                case.name,
                actual.as_slice()[at],
                expected.as_slice()[at],
                tolerance(&kind)
            ));
        }
        let entry = worst_by_kind.entry(kind).or_insert((0.0, String::new()));
        if worst >= entry.0 {
            *entry = (worst, case.name.clone());
        }
    }
    let mut kinds: Vec<_> = worst_by_kind.into_iter().collect();
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    for (kind, (worst, case)) in kinds {
        println!(
            "worst {kind:<20} {worst:.3e} ({case}), tolerance {:e}",
            tolerance(&kind)
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
