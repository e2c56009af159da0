//! `ImageFolder` on real pictures: Fashion-MNIST and MNIST images written by the test as PNG and
//! JPEG files load to the pixels of the IDX files, in torchvision's class order; broken folders
//! are clear errors; and training from a folder of PNGs is training from the IDX files.
//!
//! The real images come through `STRIATE_DATA` (a directory holding `mnist/` and
//! `fashion-mnist/`); without it those tests say they were skipped and pass.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::codecs::jpeg::JpegEncoder;
use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::Error;
use striate::data::{
    DATA_ENV, DataLoader, Dataset, FashionMnist, ImageDataset, ImageFolder, Mnist, Split, Subset,
};
use striate::models::mnist_cnn;
use striate::optim::{Adam, AdamConfig};
use striate::train::{Fit, Progress, evaluate};

/// A fresh, empty directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("striate-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn real(test: &str, source: striate::data::DataSource, split: Split) -> Option<ImageDataset> {
    match std::env::var_os(DATA_ENV) {
        Some(root) if !root.is_empty() => Some(
            source
                .dir(PathBuf::from(root))
                .search(false)
                .download(false)
                .load(split)
                .unwrap_or_else(|e| panic!("{test}: {e}")),
        ),
        _ => {
            println!(
                "{test}: skipped, {DATA_ENV} is not set (a directory holding mnist/ and fashion-mnist/)"
            );
            None
        }
    }
}

/// Image `index` of an IDX dataset as its original bytes.
fn bytes_of(data: &ImageDataset, index: usize) -> Vec<u8> {
    data.image(index)
        .as_slice()
        .iter()
        .map(|&v| (v * 255.0).round() as u8)
        .collect()
}

enum Format {
    Png,
    Jpeg(u8),
}

fn write_image(path: &Path, pixels: Vec<u8>, format: &Format) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let image = image::GrayImage::from_raw(28, 28, pixels).unwrap();
    match format {
        Format::Png => image.save(path).unwrap(),
        Format::Jpeg(quality) => {
            let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
            image
                .write_with_encoder(JpegEncoder::new_with_quality(file, *quality))
                .unwrap();
        }
    }
}

/// Fashion-MNIST's class names as folder names ('/' cannot be in one).
fn folder_name(label: usize) -> String {
    FashionMnist::CLASSES[label].replace('/', "_")
}

/// Writes the first `n` images of `data` as `root/<class>/<index>.<ext>`; the file name keeps
/// the IDX index.
fn write_folder(root: &Path, data: &ImageDataset, n: usize, format: &Format) {
    let ext = match format {
        Format::Png => "png",
        Format::Jpeg(_) => "jpg",
    };
    for i in 0..n {
        let path = root
            .join(folder_name(data.label(i)))
            .join(format!("{i:05}.{ext}"));
        write_image(&path, bytes_of(data, i), format);
    }
}

/// The IDX index a sample of the folder was written from.
fn idx_index(folder: &ImageFolder, sample: usize) -> usize {
    let stem = folder.path(sample).file_stem().unwrap().to_str().unwrap();
    stem.parse().unwrap()
}

#[test]
fn fashion_mnist_as_png_and_jpeg_loads_to_the_idx_pixels_in_torchvisions_class_order() {
    let test = "fashion_mnist_as_png_and_jpeg";
    let Some(idx) = real(test, FashionMnist::source(), Split::Test) else {
        return;
    };
    let root = temp_dir("fashion-folder");
    let n = 300;
    write_folder(&root.join("png"), &idx, n, &Format::Png);
    write_folder(&root.join("jpeg"), &idx, n, &Format::Jpeg(95));

    // torchvision's rule: classes sorted by name, by code point (upper case first).
    let expected_classes = [
        "Ankle boot",
        "Bag",
        "Coat",
        "Dress",
        "Pullover",
        "Sandal",
        "Shirt",
        "Sneaker",
        "T-shirt_top",
        "Trouser",
    ];
    for format in ["png", "jpeg"] {
        let folder = ImageFolder::options()
            .grayscale()
            .open(root.join(format))
            .unwrap();
        assert_eq!(folder.classes(), expected_classes);
        assert_eq!(folder.len(), n);
        assert_eq!(folder.image_shape(), [1, 28, 28]);
        let mut previous = (0, 0);
        let (mut worst, mut total) = (0u8, 0u64);
        for sample in 0..n {
            let i = idx_index(&folder, sample);
            let label = folder.label(sample);
            // The label is the class folder's index, and samples go class by class, files
            // sorted by name within each.
            assert_eq!(folder.classes()[label], folder_name(idx.label(i)));
            assert!((label, i) > previous || sample == 0);
            previous = (label, i);
            let loaded: Vec<u8> = folder
                .try_image(sample)
                .unwrap()
                .as_slice()
                .iter()
                .map(|&v| (v * 255.0).round() as u8)
                .collect();
            let original = bytes_of(&idx, i);
            if format == "png" {
                assert_eq!(
                    loaded,
                    original,
                    "sample {sample} ({})",
                    folder.path(sample).display()
                );
            } else {
                for (a, b) in loaded.iter().zip(&original) {
                    worst = worst.max(a.abs_diff(*b));
                    total += u64::from(a.abs_diff(*b));
                }
            }
        }
        if format == "jpeg" {
            let mean = total as f64 / (n * 784) as f64;
            println!("JPEG quality 95 against the IDX bytes: mean {mean:.3}, worst {worst} levels");
            // Quality 95 keeps a grey 28×28 image within a level on average (measured: mean
            // 0.94, worst 9 levels, on a sharp edge).
            assert!(mean < 1.5, "mean difference {mean} levels");
            assert!(worst <= 16, "worst difference {worst} levels");
        }
        // Through a loader, batches match the per-sample reads.
        let loader = DataLoader::new(folder, 64).prefetch(true);
        let first = loader.try_epoch(0).next().unwrap().unwrap();
        assert_eq!(first.images.shape(), &[64, 1, 28, 28]);
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// A real JPEG, cut short or with its entropy-coded data overwritten.
fn broken_jpegs(dir: &Path) -> [PathBuf; 2] {
    let pixels: Vec<u8> = (0..28 * 28).map(|i| ((i * 7) % 256) as u8).collect();
    let good = dir.join("good.jpg");
    write_image(&good, pixels, &Format::Jpeg(90));
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.join("truncated.jpg");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbled = dir.join("garbled.jpg");
    let mut scrambled = bytes.clone();
    // Keep the SOI marker and the first header bytes; ruin everything after.
    for b in scrambled[20..].iter_mut() {
        *b = 0xFF;
    }
    std::fs::write(&garbled, &scrambled).unwrap();
    std::fs::remove_file(&good).unwrap();
    [truncated, garbled]
}

#[test]
fn broken_folders_and_files_are_clear_errors() {
    let root = temp_dir("broken-folders");
    let pixels = vec![128u8; 28 * 28];

    // A folder with no class folder.
    let no_classes = root.join("no-classes");
    std::fs::create_dir_all(&no_classes).unwrap();
    write_image(&no_classes.join("loose.png"), pixels.clone(), &Format::Png);
    let err = ImageFolder::open(&no_classes).unwrap_err().to_string();
    assert!(
        err.contains("no-classes: expected one sub-folder per class"),
        "{err}"
    );
    assert!(err.ends_with("found no class folder"), "{err}");

    // A missing folder.
    let err = ImageFolder::open(root.join("absent")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("absent"), "{err}");

    // An empty class folder, and one holding only non-images.
    let empty_class = root.join("empty-class");
    write_image(&empty_class.join("a/1.png"), pixels.clone(), &Format::Png);
    std::fs::create_dir_all(empty_class.join("b")).unwrap();
    std::fs::create_dir_all(empty_class.join("c")).unwrap();
    std::fs::write(empty_class.join("c/readme.txt"), "no images here").unwrap();
    let err = ImageFolder::open(&empty_class).unwrap_err().to_string();
    assert!(err.contains("expected at least one image"), "{err}");
    assert!(err.ends_with("found none in b, c"), "{err}");

    // A zero-byte image file: refused when the folder is opened.
    let zero = root.join("zero-byte");
    write_image(&zero.join("a/1.png"), pixels.clone(), &Format::Png);
    std::fs::create_dir_all(zero.join("b")).unwrap();
    std::fs::write(zero.join("b/2.jpg"), b"").unwrap();
    let err = ImageFolder::open(&zero).unwrap_err().to_string();
    assert!(
        err.contains("2.jpg: expected an image file, found an empty file"),
        "{err}"
    );

    // Corrupt JPEGs: the batch that holds one is an error naming it, never a panic or a
    // zero image; with the skip policy they are left out and listed.
    let corrupt = root.join("corrupt");
    write_image(&corrupt.join("a/1.png"), pixels.clone(), &Format::Png);
    std::fs::create_dir_all(corrupt.join("b")).unwrap();
    write_image(&corrupt.join("b/0.png"), pixels.clone(), &Format::Png);
    let broken = broken_jpegs(&corrupt.join("b"));
    let folder = ImageFolder::options().grayscale().open(&corrupt).unwrap();
    assert_eq!(folder.len(), 4);
    for (index, path) in [(3, &broken[0]), (2, &broken[1])] {
        assert_eq!(folder.path(index), path);
        let err = folder.try_image(index).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: expected an image striate decodes",
                path.display()
            )),
            "{err}"
        );
    }
    let loader = DataLoader::new(folder, 2);
    let results: Vec<_> = loader.try_epoch(0).collect();
    assert_eq!(results.len(), 2, "the epoch ends at the error");
    assert!(results[0].is_ok());
    let err = results[1].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("garbled.jpg") || err.contains("truncated.jpg"),
        "{err}"
    );
    // Training reports it as an error too.
    let mut model = mnist_cnn(2, &mut StdRng::seed_from_u64(0));
    let mut adam = Adam::new(AdamConfig::default());
    let outcome = Fit::new(&mut model, &mut adam)
        .progress(Progress::Silent)
        .run(&loader);
    assert!(
        outcome
            .unwrap_err()
            .to_string()
            .contains(".jpg: expected an image")
    );
    let skipping = ImageFolder::options()
        .grayscale()
        .on_undecodable(striate::data::OnUndecodable::Skip)
        .open(&corrupt)
        .unwrap();
    assert_eq!(skipping.len(), 2);
    assert_eq!(skipping.skipped().len(), 2);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn one_epoch_from_a_png_folder_equals_one_epoch_from_idx() {
    let test = "one_epoch_from_a_png_folder_equals_one_epoch_from_idx";
    let (Some(train), Some(test_set)) = (
        real(test, Mnist::source(), Split::Train),
        real(test, Mnist::source(), Split::Test),
    ) else {
        return;
    };
    let root = temp_dir("mnist-png-folder");
    let n = 2000;
    for i in 0..n {
        let path = root
            .join(train.label(i).to_string())
            .join(format!("{i:05}.png"));
        write_image(&path, bytes_of(&train, i), &Format::Png);
    }
    let folder = ImageFolder::options().grayscale().open(&root).unwrap();
    assert_eq!(folder.len(), n);
    // The IDX samples in the folder's order, so both datasets give sample k the same image
    // and the same shuffles, augmentation streams and batches follow.
    let order: Vec<usize> = (0..n).map(|k| idx_index(&folder, k)).collect();
    for (k, &i) in order.iter().enumerate() {
        assert_eq!(folder.label(k), train.label(i));
    }
    let from_idx = Subset::new(Arc::new(train), order);
    let test_loader = DataLoader::new(Subset::new(Arc::new(test_set), (0..1000).collect()), 250)
        .normalize(&[0.1307], &[0.3081]);

    let run = |loader: &DataLoader| -> (f32, Vec<f32>) {
        let mut model = mnist_cnn(10, &mut StdRng::seed_from_u64(7));
        let mut adam = Adam::new(AdamConfig {
            learning_rate: 1e-3,
            ..Default::default()
        });
        let history = Fit::new(&mut model, &mut adam)
            .epochs(1)
            .progress(Progress::Silent)
            .run(loader)
            .unwrap();
        let accuracy = evaluate(&model, &test_loader).unwrap().accuracy;
        (
            accuracy,
            history.epochs.iter().map(|e| e.train_loss).collect(),
        )
    };
    let (folder_accuracy, folder_loss) = run(&DataLoader::new(folder, 8)
        .shuffle(7)
        .normalize(&[0.1307], &[0.3081])
        .prefetch(true));
    let (idx_accuracy, idx_loss) = run(&DataLoader::new(from_idx, 8)
        .shuffle(7)
        .normalize(&[0.1307], &[0.3081]));
    println!(
        "one epoch on 2,000 digits: {folder_accuracy} from PNG files, {idx_accuracy} from IDX"
    );
    assert_eq!(folder_loss, idx_loss);
    assert_eq!(folder_accuracy, idx_accuracy);
    assert!(folder_accuracy >= 0.85, "accuracy {folder_accuracy}");
    std::fs::remove_dir_all(&root).unwrap();
}
