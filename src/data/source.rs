//! Where dataset files are looked for — a given directory, `$STRIATE_DATA`, the cache, system
//! directories — and downloading them when no place has them: one machinery for every
//! dataset of published files (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::cifar::CifarLayout;
use super::dataset::ImageDataset;
use super::download::Downloader;
use crate::error::{Error, Result};

/// The environment variable naming a directory that holds the datasets' folders (`mnist/`,
/// `fashion-mnist/`, `cifar-10-batches-bin/`, ...).
pub const DATA_ENV: &str = "STRIATE_DATA";

/// Which part of a dataset to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training set (60,000 images in the official releases of MNIST, 50,000 in CIFAR's).
    Train,
    /// The test set (10,000 images).
    Test,
}

/// One published file of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFile {
    /// The file name, as published (`.gz`, `.tar.gz`).
    pub name: &'static str,
    /// The MD5 of the published file, in hex.
    pub md5: &'static str,
    /// The size of the published file in bytes: a download stops as soon as it exceeds it.
    pub size: u64,
}

/// How a dataset's files are published and laid out.
#[derive(Debug)]
pub(crate) enum Layout {
    /// Four IDX files, each published on its own: train images, train labels, test images,
    /// test labels (MNIST, Fashion-MNIST).
    Idx([DataFile; 4]),
    /// One archive holding a folder of binary record files (CIFAR), unpacked flat into the
    /// dataset's folder.
    Cifar(&'static CifarLayout),
}

/// Everything that differs between datasets found and fetched the same way.
#[derive(Debug)]
pub(crate) struct Catalog {
    pub(crate) title: &'static str,
    pub(crate) folder: &'static str,
    pub(crate) layout: Layout,
    pub(crate) mirrors: &'static [&'static str],
    pub(crate) system_dirs: &'static [&'static str],
}

impl Catalog {
    /// The files a directory must hold for `split`.
    fn needed(&self, split: Split) -> Vec<&'static str> {
        match &self.layout {
            Layout::Idx(files) => match split {
                Split::Train => vec![files[0].name, files[1].name],
                Split::Test => vec![files[2].name, files[3].name],
            },
            Layout::Cifar(cifar) => cifar.files(split).to_vec(),
        }
    }

    /// The published files, downloaded as they are.
    fn published(&self) -> Vec<&DataFile> {
        match &self.layout {
            Layout::Idx(files) => files.iter().collect(),
            Layout::Cifar(cifar) => vec![&cifar.archive],
        }
    }

    pub(crate) fn downloader(&self) -> Downloader {
        self.published()
            .into_iter()
            .fold(Downloader::new(self.mirrors.iter().copied()), |d, file| {
                d.expected(file.name, file.md5, file.size)
            })
    }

    fn load(&self, dir: &Path, split: Split) -> Result<ImageDataset> {
        // A file deleted since `locate` saw it makes the reader report it missing.
        let path = |name| existing_file(dir, name).unwrap_or_else(|| dir.join(name));
        match &self.layout {
            Layout::Idx(_) => {
                let [images, labels] = self.needed(split)[..] else {
                    unreachable!("an IDX split has two files")
                };
                super::mnist::load_pair(&path(images), &path(labels))
            }
            Layout::Cifar(cifar) => {
                let files: Vec<PathBuf> = cifar.files(split).iter().map(|n| path(n)).collect();
                cifar.load(&files)
            }
        }
    }

    #[cfg(feature = "download")]
    fn fetch(&self, downloader: &Downloader, split: Split, dir: &Path) -> Result<()> {
        match &self.layout {
            Layout::Idx(_) => {
                for name in self.needed(split) {
                    if existing_file(dir, name).is_none() {
                        downloader.fetch(name, dir)?;
                    }
                }
                Ok(())
            }
            Layout::Cifar(cifar) => {
                let archive = downloader.fetch(cifar.archive.name, dir)?;
                let unpacked = cifar.unpack(&archive, dir);
                // The archive is verified and unpacked (or unusable): either way it goes.
                let removed = std::fs::remove_file(&archive).map_err(|e| Error::io_at(&archive, e));
                unpacked.and(removed)
            }
        }
    }
}

/// Where a dataset is looked for; made by [`Mnist::source`](super::Mnist::source),
/// [`FashionMnist::source`](super::FashionMnist::source),
/// [`Cifar10::source`](super::Cifar10::source) or [`Cifar100::source`](super::Cifar100::source).
///
/// A split is loaded from the first directory holding all of its files (for MNIST, `.gz` or
/// uncompressed), searched in this order, with `<folder>` the dataset's folder name (`mnist`,
/// `fashion-mnist`, `cifar-10-batches-bin`, `cifar-100-binary`):
///
/// 1. the directory given to [`dir`](Self::dir): its `<folder>/` subfolder, then the
///    directory itself;
/// 2. `$STRIATE_DATA/<folder>`;
/// 3. the cache, `$XDG_CACHE_HOME/striate/<folder>` or else `~/.cache/striate/<folder>`;
/// 4. for Fashion-MNIST, Debian's `/usr/share/datasets/fashion-mnist` (package
///    `dataset-fashion-mnist`).
///
/// When none has them, the files of the split are downloaded (with the `download` feature,
/// on by default) into the given directory, or else into the cache, from the mirrors in order,
/// each checked against its published size and MD5; CIFAR's one archive is then unpacked there
/// (its files only, flat) and removed. If that fails too, the error lists every place
/// searched, why the download failed, the file names and the URLs.
///
/// # Examples
///
/// ```no_run
/// use striate::data::{FashionMnist, Split};
///
/// let train = FashionMnist::source().dir("/data/fashion").load(Split::Train)?;
/// # Ok::<(), striate::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DataSource {
    catalog: &'static Catalog,
    dir: Option<PathBuf>,
    search: bool,
    download: bool,
    downloader: Downloader,
}

/// One directory that may hold the files, and why it was looked at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Place {
    pub(crate) dir: PathBuf,
    pub(crate) why: String,
}

/// The parts of the process environment the search reads, separate so tests can set them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Environment {
    pub(crate) data_root: Option<OsString>,
    pub(crate) xdg_cache: Option<OsString>,
    pub(crate) home: Option<OsString>,
}

impl Environment {
    fn from_process() -> Self {
        let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        Environment {
            data_root: non_empty(DATA_ENV),
            xdg_cache: non_empty("XDG_CACHE_HOME"),
            home: non_empty("HOME").or_else(|| non_empty("USERPROFILE")),
        }
    }

    fn cache_root(&self) -> Option<PathBuf> {
        let base = match (&self.xdg_cache, &self.home) {
            (Some(cache), _) => PathBuf::from(cache),
            (None, Some(home)) => Path::new(home).join(".cache"),
            (None, None) => return None,
        };
        Some(base.join("striate"))
    }
}

impl DataSource {
    pub(crate) fn new(catalog: &'static Catalog) -> Self {
        DataSource {
            catalog,
            dir: None,
            search: true,
            download: true,
            downloader: catalog.downloader(),
        }
    }

    /// Looks in `dir` first: in the dataset's subfolder (`mnist/`, `cifar-10-batches-bin/`,
    /// ...), then in `dir` itself.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Whether to look beyond [`dir`](Self::dir): `$STRIATE_DATA`, the cache and system
    /// directories. On by default.
    pub fn search(mut self, search: bool) -> Self {
        self.search = search;
        self
    }

    /// Whether to download the files when no place has them. On by default; without the
    /// `download` feature nothing is ever downloaded.
    pub fn download(mut self, download: bool) -> Self {
        self.download = download;
        self
    }

    /// Replaces the mirrors and checksums used to download (and shown when the files are not
    /// found).
    pub fn downloader(mut self, downloader: Downloader) -> Self {
        self.downloader = downloader;
        self
    }

    /// The directory holding the files of `split`, downloading them if no place has them.
    ///
    /// # Errors
    ///
    /// [`Error::DatasetNotFound`], listing the places searched, why the download failed, the
    /// file names and the URLs.
    pub fn locate(&self, split: Split) -> Result<PathBuf> {
        self.locate_in(split, &Environment::from_process())
    }

    /// Loads `split`: images in `[0, 1]` (kept as bytes until read), `[n, 1, 28, 28]` for
    /// MNIST and Fashion-MNIST, `[n, 3, 32, 32]` for CIFAR.
    ///
    /// # Errors
    ///
    /// As [`Mnist::load`](super::Mnist::load).
    pub fn load(&self, split: Split) -> Result<ImageDataset> {
        let dir = self.locate(split)?;
        self.catalog.load(&dir, split)
    }

    pub(crate) fn places(&self, env: &Environment) -> Vec<Place> {
        let folder = self.catalog.folder;
        let mut places = Vec::new();
        if let Some(dir) = &self.dir {
            for candidate in [dir.join(folder), dir.clone()] {
                places.push(Place {
                    dir: candidate,
                    why: "given directory".into(),
                });
            }
        }
        if !self.search {
            return places;
        }
        match &env.data_root {
            Some(root) => places.push(Place {
                dir: Path::new(root).join(folder),
                why: format!("${DATA_ENV}/{folder}"),
            }),
            None => places.push(Place {
                dir: PathBuf::from(format!("${DATA_ENV}/{folder}")),
                why: format!("{DATA_ENV} is not set"),
            }),
        }
        if let Some(cache) = env.cache_root() {
            places.push(Place {
                dir: cache.join(folder),
                why: "cache".into(),
            });
        }
        for dir in self.catalog.system_dirs {
            places.push(Place {
                dir: PathBuf::from(dir),
                why: "system directory".into(),
            });
        }
        places
    }

    pub(crate) fn locate_in(&self, split: Split, env: &Environment) -> Result<PathBuf> {
        let needed = self.catalog.needed(split);
        let mut searched = Vec::new();
        for place in self.places(env) {
            let missing: Vec<String> = needed
                .iter()
                .filter(|name| existing_file(&place.dir, name).is_none())
                .map(|name| match name.strip_suffix(".gz") {
                    Some(stem) => format!("{stem}[.gz]"),
                    None => name.to_string(),
                })
                .collect();
            if missing.is_empty() {
                return Ok(place.dir);
            }
            let why = if place.dir.is_dir() {
                format!("missing {}", missing.join(", "))
            } else {
                "no such directory".into()
            };
            searched.push(format!("{} ({}: {why})", place.dir.display(), place.why));
        }
        if !self.download {
            return Err(self.not_found(split, searched, None));
        }
        let target = match (&self.dir, env.cache_root()) {
            (Some(dir), _) => dir.clone(),
            (None, Some(cache)) => cache.join(self.catalog.folder),
            (None, None) => {
                let reason = Error::Config(
                    "no directory to download into: give one, or set HOME or XDG_CACHE_HOME".into(),
                );
                return Err(self.not_found(split, searched, Some(reason)));
            }
        };
        match self.fetch_split(split, &target) {
            Ok(()) => Ok(target),
            Err(e) => Err(self.not_found(split, searched, Some(e))),
        }
    }

    #[cfg(feature = "download")]
    fn fetch_split(&self, split: Split, dir: &Path) -> Result<()> {
        self.catalog.fetch(&self.downloader, split, dir)
    }

    #[cfg(not(feature = "download"))]
    fn fetch_split(&self, _split: Split, _dir: &Path) -> Result<()> {
        Err(Error::Config(
            "striate was built without its `download` feature".into(),
        ))
    }

    fn not_found(&self, split: Split, searched: Vec<String>, download: Option<Error>) -> Error {
        let split = match split {
            Split::Train => "train",
            Split::Test => "test",
        };
        let files: Vec<String> = self
            .catalog
            .published()
            .iter()
            .map(|f| f.name.into())
            .collect();
        // Grouped by mirror, so the first lines are a complete set to fetch.
        let per_file: Vec<Vec<String>> = files.iter().map(|f| self.downloader.urls(f)).collect();
        let urls = (0..self.downloader.mirrors().len())
            .flat_map(|m| per_file.iter().map(move |urls| urls[m].clone()))
            .collect();
        Error::DatasetNotFound {
            dataset: format!("{} ({split} split)", self.catalog.title),
            searched,
            files,
            urls,
            download: download.map(Box::new),
        }
    }
}

/// `dir/name` if it exists, else `dir/name` without its `.gz` (the uncompressed file).
pub(crate) fn existing_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [name, name.trim_end_matches(".gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}
