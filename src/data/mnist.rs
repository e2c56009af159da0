//! MNIST and Fashion-MNIST: their published files, and reading them.

use std::path::Path;

use super::dataset::ImageDataset;
use super::download::Downloader;
use super::idx::read_idx;
use super::source::{Catalog, DataFile, DataSource, Layout, Split};
use crate::error::{Error, Result};

/// The side of an MNIST-family image, in pixels.
const SIDE: usize = 28;
/// MNIST-family datasets have ten classes.
const CLASSES: usize = 10;

const MNIST: Catalog = Catalog {
    title: "MNIST",
    folder: "mnist",
    layout: Layout::Idx([
        DataFile {
            name: "train-images-idx3-ubyte.gz",
            md5: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            size: 9912422,
        },
        DataFile {
            name: "train-labels-idx1-ubyte.gz",
            md5: "d53e105ee54ea40749a09fcbcd1e9432",
            size: 28881,
        },
        DataFile {
            name: "t10k-images-idx3-ubyte.gz",
            md5: "9fb629c4189551a2d022fa330f9573f3",
            size: 1648877,
        },
        DataFile {
            name: "t10k-labels-idx1-ubyte.gz",
            md5: "ec29112dd5afa0611ce80d1b7f02629c",
            size: 4542,
        },
    ]),
    // yann.lecun.com, the original home, answers 403 to scripted downloads nowadays.
    mirrors: &[
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ],
    system_dirs: &[],
};

const FASHION_MNIST: Catalog = Catalog {
    title: "Fashion-MNIST",
    folder: "fashion-mnist",
    layout: Layout::Idx([
        DataFile {
            name: "train-images-idx3-ubyte.gz",
            md5: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            size: 26421880,
        },
        DataFile {
            name: "train-labels-idx1-ubyte.gz",
            md5: "25c81989df183df01b3e8a0aad5dffbe",
            size: 29515,
        },
        DataFile {
            name: "t10k-images-idx3-ubyte.gz",
            md5: "bef4ecab320f06d8554ea6380940ec79",
            size: 4422102,
        },
        DataFile {
            name: "t10k-labels-idx1-ubyte.gz",
            md5: "bb300cfdad3c16e7a12a480ee83cd310",
            size: 5148,
        },
    ]),
    mirrors: &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    system_dirs: &["/usr/share/datasets/fashion-mnist"],
};

/// The four files of an IDX catalog.
const fn idx_files(catalog: &Catalog) -> [DataFile; 4] {
    match &catalog.layout {
        Layout::Idx(files) => *files,
        Layout::Cifar(_) => panic!("not an IDX catalog"),
    }
}

/// The MNIST handwritten digits (LeCun, Cortes, Burges): 28×28 grey images of the digits 0–9.
///
/// # Examples
///
/// ```no_run
/// use striate::data::{Dataset, Mnist, Split};
///
/// let test = Mnist::load(Split::Test)?;
/// assert_eq!(test.len(), 10_000);
/// assert_eq!(test.images().shape(), &[10_000, 1, 28, 28]);
/// // Or from a directory of your own, without looking anywhere else:
/// let train = Mnist::source().dir("data/mnist").search(false).load(Split::Train)?;
/// # Ok::<(), striate::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Mnist;

impl Mnist {
    /// The four published files, their MD5 sums and sizes.
    pub const FILES: [DataFile; 4] = idx_files(&MNIST);

    /// Loads a split from the first place that has it (in the order [`DataSource`] gives).
    ///
    /// Images are `[1, 28, 28]` in `[0, 1]` (byte / 255), labels `0..10`.
    ///
    /// # Errors
    ///
    /// [`Error::DatasetNotFound`] if no place has the files; [`Error::InvalidData`] naming the
    /// file if one is corrupt, truncated or does not match its partner; [`Error::Io`] if one
    /// cannot be read.
    pub fn load(split: Split) -> Result<ImageDataset> {
        Self::source().load(split)
    }

    /// Options for where to look: start here to give a directory.
    pub fn source() -> DataSource {
        DataSource::new(&MNIST)
    }

    /// The official mirrors, checksums and sizes.
    pub fn downloader() -> Downloader {
        MNIST.downloader()
    }
}

/// Fashion-MNIST (Zalando Research, MIT licence): 28×28 grey images of ten kinds of clothing,
/// a drop-in replacement for MNIST that is harder to classify.
///
/// # Examples
///
/// ```no_run
/// use striate::data::{Dataset, FashionMnist, Split};
///
/// let test = FashionMnist::load(Split::Test)?;
/// println!("first image: {}", FashionMnist::CLASSES[test.label(0)]);
/// # Ok::<(), striate::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FashionMnist;

impl FashionMnist {
    /// The four published files, their MD5 sums and sizes.
    pub const FILES: [DataFile; 4] = idx_files(&FASHION_MNIST);

    /// The class names, indexed by label.
    pub const CLASSES: [&'static str; 10] = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ];

    /// Loads a split from the first place that has it (in the order [`DataSource`] gives).
    ///
    /// Images are `[1, 28, 28]` in `[0, 1]` (byte / 255), labels `0..10`.
    ///
    /// # Errors
    ///
    /// As [`Mnist::load`].
    pub fn load(split: Split) -> Result<ImageDataset> {
        Self::source().load(split)
    }

    /// Options for where to look: start here to give a directory.
    pub fn source() -> DataSource {
        DataSource::new(&FASHION_MNIST)
    }

    /// The official mirror, checksums and sizes.
    pub fn downloader() -> Downloader {
        FASHION_MNIST.downloader()
    }
}

/// Reads an images file and its labels file and checks that they belong together.
pub(crate) fn load_pair(images_path: &Path, labels_path: &Path) -> Result<ImageDataset> {
    let images = read_idx(images_path, 3)?;
    let labels = read_idx(labels_path, 1)?;
    let images_origin = images_path.display().to_string();
    let labels_origin = labels_path.display().to_string();
    let n = images.dims[0];
    if images.dims[1..] != [SIDE, SIDE] || n == 0 {
        return Err(Error::invalid_data(
            images_origin,
            format!("images of {SIDE}×{SIDE} pixels, at least one"),
            format!("dimensions {:?}", images.dims),
        ));
    }
    if labels.dims[0] != n {
        return Err(Error::invalid_data(
            labels_origin,
            format!("{n} labels, one per image in {images_origin}"),
            format!("{} labels", labels.dims[0]),
        ));
    }
    if let Some(at) = labels.data.iter().position(|&l| usize::from(l) >= CLASSES) {
        return Err(Error::invalid_data(
            labels_origin,
            format!("labels in 0..{CLASSES}"),
            format!("label {} at index {at}", labels.data[at]),
        ));
    }
    let labels = labels.data.into_iter().map(usize::from).collect();
    ImageDataset::from_u8(images.data, [1, SIDE, SIDE], labels)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use std::path::PathBuf;

    use super::*;
    use crate::data::Dataset;
    use crate::data::source::Environment;

    /// A fresh, empty directory under the system temp dir.
    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("striate-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes a gzip IDX file of unsigned bytes.
    pub(crate) fn write_idx(path: &Path, dims: &[u32], data: &[u8]) {
        let mut bytes = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(data);
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(&bytes).unwrap();
        std::fs::write(path, encoder.finish().unwrap()).unwrap();
    }

    /// A miniature MNIST test split of `n` images: image `i` is filled with `i`, label `i % 10`.
    pub(crate) fn write_test_split(dir: &Path, n: u32) {
        let pixels: Vec<u8> = (0..n).flat_map(|i| [i as u8; 784]).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        write_idx(
            &dir.join("t10k-images-idx3-ubyte.gz"),
            &[n, 28, 28],
            &pixels,
        );
        write_idx(&dir.join("t10k-labels-idx1-ubyte.gz"), &[n], &labels);
    }

    fn env_with(data_root: Option<&Path>, home: Option<&Path>) -> Environment {
        Environment {
            data_root: data_root.map(Into::into),
            xdg_cache: None,
            home: home.map(Into::into),
        }
    }

    #[test]
    fn search_order() {
        let source = FashionMnist::source().dir("/given");
        let env = env_with(Some(Path::new("/data")), Some(Path::new("/home/u")));
        let dirs: Vec<PathBuf> = source.places(&env).into_iter().map(|p| p.dir).collect();
        let expected = [
            "/given/fashion-mnist",
            "/given",
            "/data/fashion-mnist",
            "/home/u/.cache/striate/fashion-mnist",
            "/usr/share/datasets/fashion-mnist",
        ];
        assert_eq!(dirs, expected.map(PathBuf::from));

        let xdg = Environment {
            xdg_cache: Some("/xdg".into()),
            ..env_with(None, Some(Path::new("/home/u")))
        };
        let places = Mnist::source().places(&xdg);
        assert_eq!(places[0].why, "STRIATE_DATA is not set");
        assert_eq!(places[1].dir, Path::new("/xdg/striate/mnist"));
        assert_eq!(places.len(), 2);
        assert!(Mnist::source().dir("/d").search(false).places(&xdg).len() == 2);
    }

    #[test]
    fn loads_from_the_first_place_that_has_the_split() {
        let root = temp_dir("mnist-find");
        std::fs::create_dir_all(root.join("mnist")).unwrap();
        write_test_split(&root.join("mnist"), 12);
        let env = env_with(Some(&root), None);
        let source = Mnist::source().dir(root.join("elsewhere"));
        assert_eq!(
            source.locate_in(Split::Test, &env).unwrap(),
            root.join("mnist")
        );

        let data = Mnist::source()
            .dir(&root)
            .search(false)
            .load(Split::Test)
            .unwrap();
        assert_eq!(data.len(), 12);
        assert_eq!(data.image_shape(), [1, 28, 28]);
        assert_eq!(data.label(11), 1);
        assert_eq!(data.image(3).as_slice()[100], 3.0 / 255.0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn not_found_lists_places_files_and_urls() {
        let root = temp_dir("mnist-missing");
        write_test_split(&root, 3);
        std::fs::remove_file(root.join("t10k-labels-idx1-ubyte.gz")).unwrap();
        let env = env_with(None, Some(Path::new("/nonexistent-home")));
        let err = Mnist::source()
            .dir(&root)
            .download(false)
            .locate_in(Split::Test, &env)
            .unwrap_err();
        let message = err.to_string();
        for needle in [
            "MNIST (test split) not found",
            &format!(
                "{} (given directory: missing t10k-labels-idx1-ubyte[.gz])",
                root.display()
            ),
            "STRIATE_DATA is not set",
            "/nonexistent-home/.cache/striate/mnist (cache: no such directory)",
            "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz",
            "https://storage.googleapis.com/cvdf-datasets/mnist/t10k-labels-idx1-ubyte.gz",
            "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
        ] {
            assert!(message.contains(needle), "{needle:?} not in:\n{message}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[cfg(not(feature = "download"))]
    #[test]
    fn without_the_download_feature_the_error_says_so() {
        let root = temp_dir("mnist-no-download");
        let err = Mnist::source()
            .dir(&root)
            .search(false)
            .load(Split::Test)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Download failed: striate was built without its `download` feature"),
            "{err}"
        );
        assert!(err.contains("https://storage.googleapis.com/cvdf-datasets/mnist/"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn mismatched_pairs_and_bad_labels_are_errors() {
        let root = temp_dir("mnist-bad");
        write_test_split(&root, 5);
        let labels = root.join("t10k-labels-idx1-ubyte.gz");
        let images = root.join("t10k-images-idx3-ubyte.gz");
        let load = || Mnist::source().dir(&root).search(false).load(Split::Test);

        write_idx(&labels, &[4], &[0, 1, 2, 3]);
        match load() {
            Err(Error::InvalidData {
                origin,
                expected,
                found,
            }) => {
                assert_eq!(origin, labels.display().to_string());
                assert!(expected.starts_with("5 labels, one per image"));
                assert_eq!(found, "4 labels");
            }
            other => panic!("expected InvalidData, got {other:?}"),
        }
        write_idx(&labels, &[5], &[0, 1, 2, 10, 3]);
        let err = load().unwrap_err().to_string();
        assert!(
            err.ends_with("expected labels in 0..10, found label 10 at index 3"),
            "{err}"
        );

        write_idx(&images, &[5, 28, 27], &[0; 5 * 28 * 27]);
        let err = load().unwrap_err().to_string();
        assert!(err.ends_with("found dimensions [5, 28, 27]"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn uncompressed_files_are_found_too() {
        let root = temp_dir("mnist-raw");
        write_test_split(&root, 2);
        for name in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
            let gz = root.join(format!("{name}.gz"));
            let raw =
                crate::data::read_idx(&gz, if name.contains("idx3") { 3 } else { 1 }).unwrap();
            let mut bytes = vec![0, 0, 8, raw.dims.len() as u8];
            for d in &raw.dims {
                bytes.extend_from_slice(&(*d as u32).to_be_bytes());
            }
            bytes.extend_from_slice(&raw.data);
            std::fs::write(root.join(name), bytes).unwrap();
            std::fs::remove_file(gz).unwrap();
        }
        let data = Mnist::source().dir(&root).search(false).load(Split::Test);
        assert_eq!(data.unwrap().labels(), &[0, 1]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
