//! CIFAR-10 and CIFAR-100 (Krizhevsky, 2009), the binary versions: their published archives,
//! unpacking them, and reading their records.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::dataset::ImageDataset;
use super::download::Downloader;
use super::source::{Catalog, DataFile, DataSource, Layout, Split};
use crate::error::{Error, Result};
use crate::util::atomic_file::AtomicFile;

/// Pixel bytes of one CIFAR image: 1024 red, then 1024 green, then 1024 blue, each plane 32×32
/// row by row — already `[3, 32, 32]`.
const PIXELS: usize = 3 * 32 * 32;

/// The site that publishes both datasets.
const MIRRORS: &[&str] = &["https://www.cs.toronto.edu/~kriz/"];

/// Everything that differs between CIFAR-10 and CIFAR-100's binary versions.
#[derive(Debug)]
pub(crate) struct CifarLayout {
    /// The published archive.
    pub(crate) archive: DataFile,
    /// The folder the archive holds its files in.
    inner: &'static str,
    train: &'static [&'static str],
    test: &'static [&'static str],
    /// Other files unpacked with them (class names).
    extra: &'static [&'static str],
    /// Label bytes before each image's pixels.
    label_bytes: usize,
    /// Which of them is the class label.
    label_at: usize,
    classes: usize,
}

impl CifarLayout {
    pub(crate) fn files(&self, split: Split) -> &'static [&'static str] {
        match split {
            Split::Train => self.train,
            Split::Test => self.test,
        }
    }

    /// Reads the records of `files`, in order, into one dataset.
    pub(crate) fn load(&self, files: &[PathBuf]) -> Result<ImageDataset> {
        let record = self.label_bytes + PIXELS;
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for path in files {
            let bytes = std::fs::read(path).map_err(|e| Error::io_at(path, e))?;
            if bytes.is_empty() || bytes.len() % record != 0 {
                return Err(Error::invalid_data(
                    path.display().to_string(),
                    format!(
                        "a whole number of {record}-byte records ({} label byte(s), then \
                         {PIXELS} pixel bytes), at least one",
                        self.label_bytes
                    ),
                    format!("{} bytes", bytes.len()),
                ));
            }
            pixels.reserve(bytes.len() / record * PIXELS);
            for (at, chunk) in bytes.chunks_exact(record).enumerate() {
                let label = usize::from(chunk[self.label_at]);
                if label >= self.classes {
                    return Err(Error::invalid_data(
                        path.display().to_string(),
                        format!("labels in 0..{}", self.classes),
                        format!("label {label} in record {at}"),
                    ));
                }
                labels.push(label);
                pixels.extend_from_slice(&chunk[self.label_bytes..]);
            }
        }
        ImageDataset::from_u8(pixels, [3, 32, 32], labels)
    }

    /// Unpacks the dataset's files from `archive` (a `.tar.gz`) into `dir`, flat; nothing else
    /// in the archive is written, whatever its paths. Each file appears whole or not at all.
    pub(crate) fn unpack(&self, archive: &Path, dir: &Path) -> Result<()> {
        let file = File::open(archive).map_err(|e| Error::io_at(archive, e))?;
        let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
        let corrupt = |e: io::Error| {
            Error::invalid_data(
                archive.display().to_string(),
                "a .tar.gz archive",
                e.to_string(),
            )
        };
        let wanted: Vec<&str> = [self.train, self.test, self.extra].concat();
        let mut found = Vec::new();
        for entry in tar.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path().map_err(corrupt)?.into_owned();
            let name = match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) if parent == Path::new(self.inner) => name,
                _ => continue,
            };
            let Some(&name) = wanted.iter().find(|&&w| name == w) else {
                continue;
            };
            let target = dir.join(name);
            let mut out = AtomicFile::create(&target)?;
            io::copy(&mut entry, &mut out).map_err(corrupt)?;
            out.commit()?;
            found.push(name);
        }
        let missing: Vec<String> = wanted
            .iter()
            .filter(|w| !found.contains(w))
            .map(|w| format!("{}/{w}", self.inner))
            .collect();
        if !missing.is_empty() {
            return Err(Error::invalid_data(
                archive.display().to_string(),
                format!(
                    "an archive holding {}/ with the dataset's files",
                    self.inner
                ),
                format!("no {}", missing.join(", ")),
            ));
        }
        Ok(())
    }
}

const CIFAR10_LAYOUT: CifarLayout = CifarLayout {
    archive: DataFile {
        name: "cifar-10-binary.tar.gz",
        md5: "c32a1d4ab5d03f1284b67883e8d87530",
        size: 170052171,
    },
    inner: "cifar-10-batches-bin",
    train: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
    ],
    test: &["test_batch.bin"],
    extra: &["batches.meta.txt"],
    label_bytes: 1,
    label_at: 0,
    classes: 10,
};

const CIFAR100_LAYOUT: CifarLayout = CifarLayout {
    archive: DataFile {
        name: "cifar-100-binary.tar.gz",
        md5: "03b5dce01913d631647c71ecec9e9cb8",
        size: 168513733,
    },
    inner: "cifar-100-binary",
    train: &["train.bin"],
    test: &["test.bin"],
    extra: &["coarse_label_names.txt", "fine_label_names.txt"],
    // A coarse (superclass) label, then the fine one, which is the class.
    label_bytes: 2,
    label_at: 1,
    classes: 100,
};

static CIFAR10: Catalog = Catalog {
    title: "CIFAR-10",
    folder: "cifar-10-batches-bin",
    layout: Layout::Cifar(&CIFAR10_LAYOUT),
    mirrors: MIRRORS,
    system_dirs: &[],
};

static CIFAR100: Catalog = Catalog {
    title: "CIFAR-100",
    folder: "cifar-100-binary",
    layout: Layout::Cifar(&CIFAR100_LAYOUT),
    mirrors: MIRRORS,
    system_dirs: &[],
};

/// CIFAR-10 (Krizhevsky, 2009): 32×32 colour photographs of ten classes, 50,000 for training
/// (five files of 10,000) and 10,000 for testing, from the binary version
/// (`cifar-10-binary.tar.gz`).
///
/// Found and downloaded as [`DataSource`] describes, in a folder named
/// `cifar-10-batches-bin` (the archive's own): `$STRIATE_DATA/cifar-10-batches-bin`, then
/// `~/.cache/striate/cifar-10-batches-bin`, else downloaded (170 MB, MD5-checked) and unpacked
/// there.
///
/// # Examples
///
/// ```no_run
/// use striate::data::{Cifar10, DataLoader, Dataset, Split};
///
/// let train = Cifar10::load(Split::Train)?;
/// assert_eq!((train.len(), train.image_shape()), (50_000, [3, 32, 32]));
/// println!("first image: {}", Cifar10::CLASSES[train.label(0)]);
/// let loader = DataLoader::new(train, 128)
///     .shuffle(0)
///     .normalize(&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616]);
/// # Ok::<(), striate::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Cifar10;

impl Cifar10 {
    /// The class names, indexed by label.
    pub const CLASSES: [&'static str; 10] = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ];

    /// The published archive, its MD5 and size.
    pub const ARCHIVE: DataFile = CIFAR10_LAYOUT.archive;

    /// Loads a split from the first place that has it: images `[3, 32, 32]` in `[0, 1]`,
    /// labels `0..10`.
    ///
    /// # Errors
    ///
    /// [`Error::DatasetNotFound`] if no place has the files and the download fails;
    /// [`Error::InvalidData`] naming the file if one is not a whole number of records or holds
    /// a label out of range; [`Error::Io`] if one cannot be read.
    pub fn load(split: Split) -> Result<ImageDataset> {
        Self::source().load(split)
    }

    /// Options for where to look: start here to give a directory.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use striate::data::{Cifar10, Split};
    ///
    /// // data/cifar-10-batches-bin/*.bin, and nowhere else.
    /// let test = Cifar10::source().dir("data").search(false).download(false).load(Split::Test)?;
    /// # Ok::<(), striate::Error>(())
    /// ```
    pub fn source() -> DataSource {
        DataSource::new(&CIFAR10)
    }

    /// The official site, checksum and size.
    pub fn downloader() -> Downloader {
        CIFAR10.downloader()
    }
}

/// CIFAR-100 (Krizhevsky, 2009): 32×32 colour photographs of 100 classes, 50,000 for training
/// and 10,000 for testing, from the binary version (`cifar-100-binary.tar.gz`); the labels are
/// the fine classes (torchvision's `CIFAR100` labels).
///
/// Found and downloaded as [`Cifar10`] is, in a folder named `cifar-100-binary`.
///
/// # Examples
///
/// ```no_run
/// use striate::data::{Cifar100, Dataset, Split};
///
/// let test = Cifar100::load(Split::Test)?;
/// println!("{} test images, the first a {}", test.len(), Cifar100::CLASSES[test.label(0)]);
/// # Ok::<(), striate::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Cifar100;

impl Cifar100 {
    /// The fine class names, indexed by label (the order of `fine_label_names.txt`).
    pub const CLASSES: [&'static str; 100] = [
        "apple",
        "aquarium_fish",
        "baby",
        "bear",
        "beaver",
        "bed",
        "bee",
        "beetle",
        "bicycle",
        "bottle",
        "bowl",
        "boy",
        "bridge",
        "bus",
        "butterfly",
        "camel",
        "can",
        "castle",
        "caterpillar",
        "cattle",
        "chair",
        "chimpanzee",
        "clock",
        "cloud",
        "cockroach",
        "couch",
        "crab",
        "crocodile",
        "cup",
        "dinosaur",
        "dolphin",
        "elephant",
        "flatfish",
        "forest",
        "fox",
        "girl",
        "hamster",
        "house",
        "kangaroo",
        "keyboard",
        "lamp",
        "lawn_mower",
        "leopard",
        "lion",
        "lizard",
        "lobster",
        "man",
        "maple_tree",
        "motorcycle",
        "mountain",
        "mouse",
        "mushroom",
        "oak_tree",
        "orange",
        "orchid",
        "otter",
        "palm_tree",
        "pear",
        "pickup_truck",
        "pine_tree",
        "plain",
        "plate",
        "poppy",
        "porcupine",
        "possum",
        "rabbit",
        "raccoon",
        "ray",
        "road",
        "rocket",
        "rose",
        "sea",
        "seal",
        "shark",
        "shrew",
        "skunk",
        "skyscraper",
        "snail",
        "snake",
        "spider",
        "squirrel",
        "streetcar",
        "sunflower",
        "sweet_pepper",
        "table",
        "tank",
        "telephone",
        "television",
        "tiger",
        "tractor",
        "train",
        "trout",
        "tulip",
        "turtle",
        "wardrobe",
        "whale",
        "willow_tree",
        "wolf",
        "woman",
        "worm",
    ];

    /// The published archive, its MD5 and size.
    pub const ARCHIVE: DataFile = CIFAR100_LAYOUT.archive;

    /// Loads a split from the first place that has it: images `[3, 32, 32]` in `[0, 1]`, fine
    /// labels `0..100`.
    ///
    /// # Errors
    ///
    /// As [`Cifar10::load`].
    pub fn load(split: Split) -> Result<ImageDataset> {
        Self::source().load(split)
    }

    /// Options for where to look: start here to give a directory.
    pub fn source() -> DataSource {
        DataSource::new(&CIFAR100)
    }

    /// The official site, checksum and size.
    pub fn downloader() -> Downloader {
        CIFAR100.downloader()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::data::mnist::tests::temp_dir;

    /// `n` CIFAR-100 records: record `i` has coarse label 99 - i, fine label i, and pixels
    /// equal to i in red, 2i in green, 3i in blue.
    fn records(n: usize, label_bytes: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for i in 0..n {
            if label_bytes == 2 {
                bytes.push((99 - i) as u8);
            }
            bytes.push(i as u8);
            for plane in 1..=3 {
                bytes.extend(std::iter::repeat_n((plane * i) as u8, 1024));
            }
        }
        bytes
    }

    #[test]
    fn records_load_as_chw_images_with_the_fine_label() {
        let dir = temp_dir("cifar-records");
        std::fs::write(dir.join("test.bin"), records(5, 2)).unwrap();
        let data = Cifar100::source()
            .dir(&dir)
            .search(false)
            .download(false)
            .load(Split::Test)
            .unwrap();
        assert_eq!((data.len(), data.image_shape()), (5, [3, 32, 32]));
        assert_eq!(data.labels(), &[0, 1, 2, 3, 4]);
        let image = data.image(4);
        let x = image.as_slice();
        assert_eq!(
            (x[0], x[1024], x[3071]),
            (4.0 / 255.0, 8.0 / 255.0, 12.0 / 255.0)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn train_is_the_five_batches_in_order_and_files_are_checked() {
        let dir = temp_dir("cifar10-batches").join("cifar-10-batches-bin");
        std::fs::create_dir_all(&dir).unwrap();
        for k in 1..=5 {
            std::fs::write(dir.join(format!("data_batch_{k}.bin")), records(k, 1)).unwrap();
        }
        let source = Cifar10::source()
            .dir(dir.parent().unwrap())
            .search(false)
            .download(false);
        let train = source.load(Split::Train).unwrap();
        assert_eq!(train.len(), 15);
        assert_eq!(&train.labels()[..4], &[0, 0, 1, 0]);
        // A test split is missing: the error names the file.
        let err = source.load(Split::Test).unwrap_err().to_string();
        assert!(err.contains("CIFAR-10 (test split) not found"), "{err}");
        assert!(err.contains("missing test_batch.bin"), "{err}");
        assert!(err.contains("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"));
        // A file cut mid-record, and a label out of range.
        let mut cut = records(2, 1);
        cut.pop();
        std::fs::write(dir.join("test_batch.bin"), &cut).unwrap();
        let err = source.load(Split::Test).unwrap_err().to_string();
        assert!(err.ends_with("at least one, found 6145 bytes"), "{err}");
        let mut bad = records(10, 1);
        bad[9 * 3073] = 11;
        std::fs::write(dir.join("test_batch.bin"), &bad).unwrap();
        let err = source.load(Split::Test).unwrap_err().to_string();
        assert!(
            err.ends_with("expected labels in 0..10, found label 11 in record 9"),
            "{err}"
        );
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn unpacking_writes_only_the_datasets_files() {
        let dir = temp_dir("cifar-unpack");
        let archive = dir.join("cifar-100-binary.tar.gz");
        {
            let gz = flate2::write::GzEncoder::new(
                File::create(&archive).unwrap(),
                flate2::Compression::fast(),
            );
            let mut tar = tar::Builder::new(gz);
            let mut add = |path: &str, bytes: &[u8]| {
                let mut header = tar::Header::new_gnu();
                header.set_size(bytes.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                tar.append_data(&mut header, path, bytes).unwrap();
            };
            add("cifar-100-binary/train.bin", &records(3, 2));
            add("cifar-100-binary/test.bin", &records(2, 2));
            add(
                "cifar-100-binary/coarse_label_names.txt",
                b"aquatic_mammals\n",
            );
            add("cifar-100-binary/fine_label_names.txt", b"apple\n");
            add("elsewhere/train.bin", b"not this one");
            tar.into_inner().unwrap().finish().unwrap();
        }
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        CIFAR100_LAYOUT.unpack(&archive, &out).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "coarse_label_names.txt",
                "fine_label_names.txt",
                "test.bin",
                "train.bin"
            ]
        );
        assert_eq!(std::fs::read(out.join("train.bin")).unwrap(), records(3, 2));
        // An archive without the dataset's folder is refused, naming what is missing.
        let err = CIFAR10_LAYOUT
            .unpack(&archive, &out)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no cifar-10-batches-bin/data_batch_1.bin"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
