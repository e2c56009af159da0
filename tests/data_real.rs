//! MNIST and Fashion-MNIST from real files, found through `STRIATE_DATA` (a directory holding
//! `mnist/` and `fashion-mnist/`). Without it, each test says it was skipped and passes.

use std::path::{Path, PathBuf};

use striate::Error;
use striate::data::{DATA_ENV, DataSource, Dataset, FashionMnist, ImageDataset, Mnist, Split};

fn data_root(test: &str) -> Option<PathBuf> {
    match std::env::var_os(DATA_ENV) {
        Some(root) if !root.is_empty() => Some(PathBuf::from(root)),
        _ => {
            println!(
                "{test}: skipped, {DATA_ENV} is not set (point it at a directory holding mnist/ and fashion-mnist/)"
            );
            None
        }
    }
}

/// Loads from `root` alone, so a cache or system copy cannot stand in for the files under test.
fn load(source: DataSource, root: &Path, split: Split) -> ImageDataset {
    source
        .dir(root)
        .search(false)
        .load(split)
        .unwrap_or_else(|e| panic!("loading {split:?} from {}: {e}", root.display()))
}

fn check(data: &ImageDataset, expected_len: usize) {
    assert_eq!(data.len(), expected_len);
    assert_eq!(data.image_shape(), [1, 28, 28]);
    let mut counts = [0usize; 10];
    for &label in data.labels() {
        counts[label] += 1;
    }
    // Every class is present in real numbers (no class below 5% of the set).
    assert!(
        counts.iter().all(|&c| c * 20 > expected_len),
        "class counts {counts:?}"
    );
    assert_eq!(data.num_classes(), 10);
    let images = data.images();
    let pixels = images.as_slice();
    assert!(pixels.iter().all(|&p| (0.0..=1.0).contains(&p)));
    // Both ink and paper appear, and a digit covers a minority of its image.
    assert_eq!(pixels.iter().cloned().fold(f32::MIN, f32::max), 1.0);
    let mean = images.mean();
    assert!((0.05..0.5).contains(&mean), "mean pixel {mean}");
}

#[test]
fn mnist_counts_labels_and_pixels() {
    let Some(root) = data_root("mnist_counts_labels_and_pixels") else {
        return;
    };
    let train = load(Mnist::source(), &root, Split::Train);
    let test = load(Mnist::source(), &root, Split::Test);
    // The copy here holds a 10,000-digit subset of the training set.
    check(
        &train,
        if train.len() == 60_000 {
            60_000
        } else {
            10_000
        },
    );
    check(&test, 10_000);
    // The official test set starts 7, 2, 1, 0, 4.
    assert_eq!(&test.labels()[..5], &[7, 2, 1, 0, 4]);
    // MNIST's usual normalisation constants come from its training pixels.
    let mean = test.images().mean();
    assert!((mean - 0.1325).abs() < 0.002, "test mean {mean}");
}

#[test]
fn fashion_mnist_counts_labels_and_pixels() {
    let Some(root) = data_root("fashion_mnist_counts_labels_and_pixels") else {
        return;
    };
    check(&load(FashionMnist::source(), &root, Split::Train), 60_000);
    let test = load(FashionMnist::source(), &root, Split::Test);
    check(&test, 10_000);
    // The official test set starts with an ankle boot, a pullover and two trousers.
    assert_eq!(&test.labels()[..4], &[9, 2, 1, 1]);
}

#[test]
fn truncated_and_corrupt_copies_are_errors_naming_the_file() {
    let Some(root) = data_root("truncated_and_corrupt_copies_are_errors_naming_the_file") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("striate-data-real-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let images = std::fs::read(root.join("mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    let labels = root.join("mnist/t10k-labels-idx1-ubyte.gz");
    std::fs::copy(&labels, dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let target = dir.join("t10k-images-idx3-ubyte.gz");
    let load = || Mnist::source().dir(&dir).search(false).load(Split::Test);

    // Cut in the middle: the gzip stream ends early, whether the decoder or the length check
    // notices first.
    std::fs::write(&target, &images[..images.len() / 2]).unwrap();
    let err = load().unwrap_err();
    assert_invalid_names(&err, &target);

    // Bytes flipped inside the compressed data.
    let mut corrupt = images.clone();
    let middle = corrupt.len() / 2;
    for b in &mut corrupt[middle..middle + 64] {
        *b = !*b;
    }
    std::fs::write(&target, &corrupt).unwrap();
    assert_invalid_names(&load().unwrap_err(), &target);

    // Uncompressed and one byte short: the count of missing pixels is exact.
    let mut raw = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&images[..])
        .read_to_end(&mut raw)
        .unwrap();
    std::fs::remove_file(&target).unwrap();
    let raw_target = dir.join("t10k-images-idx3-ubyte");
    std::fs::write(&raw_target, &raw[..raw.len() - 1]).unwrap();
    let err = load().unwrap_err();
    assert_invalid_names(&err, &raw_target);
    assert!(err.to_string().ends_with(
        "expected 7840000 data bytes for dimensions [10000, 28, 28], found 7839999 (truncated)"
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn assert_invalid_names(err: &Error, file: &Path) {
    match err {
        Error::InvalidData {
            origin,
            expected,
            found,
        } => {
            assert_eq!(origin, &file.display().to_string());
            assert!(!expected.is_empty() && !found.is_empty());
        }
        other => panic!(
            "expected InvalidData naming {}, got {other:?}",
            file.display()
        ),
    }
}
