//! `ImageFolder`: a folder per class of image files (JPEG, PNG, BMP, GIF, WebP), decoded from
//! disk as batches are assembled.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat, ImageReader};
use rayon::prelude::*;

use super::dataset::Dataset;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, expect_index};
use crate::transforms::Size;
use crate::transforms::functional::{resize_antialiased, to_tensor};
use crate::transforms::photometric::hwc_bytes_to_chw;

/// The extensions of the files an [`ImageFolder`] takes as images, lower case: torchvision's
/// `IMG_EXTENSIONS` that striate decodes, and `.gif`.
pub const IMAGE_EXTENSIONS: [&str; 6] = [".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"];

/// Extensions torchvision's `ImageFolder` loads that striate does not decode: a folder holding
/// such files is refused rather than silently read without them.
const UNDECODED_EXTENSIONS: [&str; 4] = [".ppm", ".pgm", ".tif", ".tiff"];

/// The colour of the decoded images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColorMode {
    /// Three channels, red, green, blue (Pillow's `convert("RGB")`: alpha is dropped, grey
    /// is repeated).
    Rgb,
    /// One channel of luma, `(19595 R + 38470 G + 7471 B + 32768) >> 16` from colour images,
    /// as Pillow's `convert("L")` (ITU-R 601-2); grey images are taken as they are.
    Grayscale,
}

impl ColorMode {
    fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Grayscale => 1,
        }
    }
}

/// What to do with a file that cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OnUndecodable {
    /// Fail: the batch holding it is an error naming the file (the default).
    Fail,
    /// Decode every file once when the folder is opened, leave out those that fail, and list
    /// them in [`ImageFolder::skipped`].
    Skip,
}

/// A file left out of an [`ImageFolder`] under [`OnUndecodable::Skip`], and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// The decoding error.
    pub reason: String,
}

/// How to open an [`ImageFolder`]; made by [`ImageFolder::options`].
#[derive(Debug, Clone)]
pub struct ImageFolderOptions {
    color: ColorMode,
    resize: Option<Size>,
    on_undecodable: OnUndecodable,
}

impl ImageFolderOptions {
    /// Decodes to one channel of luma (default: RGB).
    pub fn grayscale(mut self) -> Self {
        self.color = ColorMode::Grayscale;
        self
    }

    /// Decodes to `color`.
    pub fn color(mut self, color: ColorMode) -> Self {
        self.color = color;
        self
    }

    /// Resizes every image to `size` as it is loaded (bilinear, antialiased as torchvision's
    /// `Resize`), so images of any size batch together.
    ///
    /// # Panics
    ///
    /// If either side is zero.
    pub fn resize(mut self, size: impl Into<Size>) -> Self {
        let size = size.into();
        if size.height == 0 || size.width == 0 {
            contract_violation(
                "ImageFolderOptions::resize",
                "size must be positive",
                format_args!("size [{}, {}]", size.height, size.width),
            );
        }
        self.resize = Some(size);
        self
    }

    /// What to do with files that cannot be decoded (default [`OnUndecodable::Fail`]).
    pub fn on_undecodable(mut self, policy: OnUndecodable) -> Self {
        self.on_undecodable = policy;
        self
    }

    /// Lists the classes and files under `root`; see [`ImageFolder`] for the rules.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `root` or a folder in it cannot be read; [`Error::InvalidData`] if
    /// `root` has no class folder, a class folder holds no image, a file is empty, a file is
    /// in a format striate does not decode (`.tif`, `.ppm`, `.pgm`), or (under
    /// [`OnUndecodable::Fail`]) the first image's header cannot be read; under
    /// [`OnUndecodable::Skip`], also if no image of a class decodes.
    pub fn open(self, root: impl AsRef<Path>) -> Result<ImageFolder> {
        ImageFolder::open_with(root.as_ref(), self)
    }
}

/// Labelled images from a folder per class, as torchvision's `ImageFolder` and Keras'
/// `image_dataset_from_directory` read them: `root/<class>/<file>`, at any depth below the
/// class folder.
///
/// The rules are torchvision's, so class indices and sample order agree with it:
///
/// - every sub-folder of `root` is a class; classes are sorted by name (by code point, as
///   Python's `sorted`), and class `i` is the `i`-th;
/// - files are taken class by class, each class's folders in the order of their sorted paths
///   and each folder's files sorted by name (`sorted(os.walk(...))`);
/// - a file is an image if its name ends, in any case, with one of [`IMAGE_EXTENSIONS`]
///   (torchvision's, with `.gif` added); other files are ignored. Names starting with `.`
///   are ignored too, where torchvision would take a `.ipynb_checkpoints` folder as a class
///   and try to decode macOS's `._photo.jpg` files.
///
/// Decoding (JPEG, PNG, BMP, GIF, WebP, by the `image` crate) happens when a sample is read,
/// so only paths stay in memory; a [`DataLoader`](super::DataLoader) decodes the images of each
/// batch in parallel, ahead of time with [`prefetch`](super::DataLoader::prefetch). Images are
/// `[3, H, W]` (RGB) or `[1, H, W]` (grey), bytes divided by 255.
///
/// Every image must have one size to batch: give [`resize`](ImageFolderOptions::resize), or
/// an augmentation that ends in one size (`RandomResizedCrop`, `Resize` then `CenterCrop`).
/// Without either, [`image_shape`](Dataset::image_shape) is the first image's, and an image of
/// another size is an error naming it.
///
/// # Errors
///
/// A file that does not decode makes the batch holding it an [`Error::InvalidData`] naming the
/// file, through [`DataLoader::try_epoch`](super::DataLoader::try_epoch) and `Fit::run`; or
/// [`OnUndecodable::Skip`] leaves such files out when the folder is opened.
///
/// # Examples
///
/// ```
/// use striate::data::{DataLoader, Dataset, ImageFolder};
/// use striate::transforms::{Compose, Normalize, RandomHorizontalFlip, RandomResizedCrop};
///
/// # let root = std::env::temp_dir().join(format!("striate-doc-folder-{}", std::process::id()));
/// # for (class, shade) in [("cat", 40u8), ("dog", 200)] {
/// #     std::fs::create_dir_all(root.join(class)).unwrap();
/// #     for k in 0..3u8 {
/// #         image::RgbImage::from_pixel(48, 40, image::Rgb([shade, k, 0]))
/// #             .save(root.join(class).join(format!("{k}.png"))).unwrap();
/// #     }
/// # }
/// // root/cat/*.png, root/dog/*.png
/// let folder = ImageFolder::open(&root)?;
/// assert_eq!(folder.classes(), ["cat", "dog"]);
/// assert_eq!(folder.class_counts(), [3, 3]);
/// assert_eq!(folder.image_shape(), [3, 40, 48]);
///
/// let augment = Compose::new(vec![
///     Box::new(RandomResizedCrop::new(32)),
///     Box::new(RandomHorizontalFlip::new(0.5)),
///     Box::new(Normalize::imagenet()),
/// ]);
/// let loader = DataLoader::new(folder, 4).shuffle(0).augment(augment).prefetch(true);
/// for batch in loader.try_epoch(0) {
///     assert_eq!(&batch?.images.shape()[1..], &[3, 32, 32]);
/// }
/// # std::fs::remove_dir_all(&root).unwrap();
/// # Ok::<(), striate::Error>(())
/// ```
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, usize)>,
    color: ColorMode,
    resize: Option<Size>,
    shape: [usize; 3],
    skipped: Vec<SkippedFile>,
}

impl ImageFolder {
    /// Opens `root` with the defaults: RGB, no resize, an undecodable file is an error.
    ///
    /// # Errors
    ///
    /// As [`ImageFolderOptions::open`].
    pub fn open(root: impl AsRef<Path>) -> Result<ImageFolder> {
        ImageFolder::options().open(root)
    }

    /// Options to set before opening: colour, resize, what to do with undecodable files.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use striate::data::{ImageFolder, OnUndecodable};
    ///
    /// let folder = ImageFolder::options()
    ///     .grayscale()
    ///     .resize((64, 64))
    ///     .on_undecodable(OnUndecodable::Skip)
    ///     .open("photos")?;
    /// for skipped in folder.skipped() {
    ///     eprintln!("left out {}: {}", skipped.path.display(), skipped.reason);
    /// }
    /// # Ok::<(), striate::Error>(())
    /// ```
    pub fn options() -> ImageFolderOptions {
        ImageFolderOptions {
            color: ColorMode::Rgb,
            resize: None,
            on_undecodable: OnUndecodable::Fail,
        }
    }

    fn open_with(root: &Path, options: ImageFolderOptions) -> Result<ImageFolder> {
        let classes = class_folders(root)?;
        let mut samples = Vec::new();
        let mut counts = vec![0usize; classes.len()];
        let mut undecoded = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let mut files = Vec::new();
            collect_files(&root.join(class), &mut files, &mut undecoded)?;
            counts[label] = files.len();
            samples.extend(files.into_iter().map(|path| (path, label)));
        }
        if let Some(first) = undecoded.first() {
            return Err(Error::invalid_data(
                root.display().to_string(),
                "images in formats striate decodes (JPEG, PNG, BMP, GIF, WebP)",
                format!(
                    "{} file(s) in a format torchvision reads but striate does not, such as \
                     {}: convert them, or move them out of the folder",
                    undecoded.len(),
                    first.display()
                ),
            ));
        }
        expect_every_class_has_images(root, &classes, &counts, "")?;
        for (path, _) in &samples {
            let length = std::fs::metadata(path)
                .map_err(|e| Error::io_at(path, e))?
                .len();
            if length == 0 {
                return Err(Error::invalid_data(
                    path.display().to_string(),
                    "an image file",
                    "an empty file (0 bytes)",
                ));
            }
        }
        let mut skipped = Vec::new();
        if options.on_undecodable == OnUndecodable::Skip {
            let results: Vec<Option<String>> = samples
                .par_iter()
                .map(|(path, _)| decode(path, options.color).err().map(|e| e.to_string()))
                .collect();
            let mut kept = Vec::with_capacity(samples.len());
            for ((path, label), failure) in samples.into_iter().zip(results) {
                match failure {
                    Some(reason) => {
                        counts[label] -= 1;
                        skipped.push(SkippedFile { path, reason });
                    }
                    None => kept.push((path, label)),
                }
            }
            samples = kept;
            expect_every_class_has_images(root, &classes, &counts, " that decodes")?;
        }
        let channels = options.color.channels();
        let shape = match options.resize {
            Some(size) => [channels, size.height, size.width],
            None => {
                let (height, width) = dimensions(&samples[0].0)?;
                [channels, height, width]
            }
        };
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes,
            samples,
            color: options.color,
            resize: options.resize,
            shape,
            skipped,
        })
    }

    /// The folder the images were found in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The class names, sorted; class `i` is `classes()[i]`.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Each class name with its index (torchvision's `class_to_idx`).
    pub fn class_to_idx(&self) -> HashMap<String, usize> {
        self.classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect()
    }

    /// The number of images of each class, indexed by class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &(_, label) in &self.samples {
            counts[label] += 1;
        }
        counts
    }

    /// Every sample's file and class, in sample order (torchvision's `samples`).
    pub fn samples(&self) -> &[(PathBuf, usize)] {
        &self.samples
    }

    /// The file of sample `index`.
    ///
    /// # Panics
    ///
    /// If `index >= self.len()`.
    pub fn path(&self, index: usize) -> &Path {
        expect_index("ImageFolder::path", "index", index, self.len());
        &self.samples[index].0
    }

    /// The files left out under [`OnUndecodable::Skip`], with why.
    pub fn skipped(&self) -> &[SkippedFile] {
        &self.skipped
    }

    /// The colour the images are decoded to.
    pub fn color(&self) -> ColorMode {
        self.color
    }

    /// Decodes sample `index` to a tensor at its own size, or at the resize if one was given.
    fn load(&self, index: usize) -> Result<Tensor> {
        expect_index("ImageFolder::try_image", "index", index, self.len());
        let path = &self.samples[index].0;
        let (pixels, height, width) = decode(path, self.color)?;
        let image = to_tensor(&pixels, height, width, self.color.channels());
        Ok(match self.resize {
            Some(size) if (size.height, size.width) != (height, width) => {
                resize_antialiased(&image, size)
            }
            _ => image,
        })
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn image_shape(&self) -> [usize; 3] {
        self.shape
    }

    fn label(&self, index: usize) -> usize {
        expect_index("ImageFolder::label", "index", index, self.len());
        self.samples[index].1
    }

    /// Decodes image `index` into `out`.
    ///
    /// # Panics
    ///
    /// If the file cannot be decoded or has another size than
    /// [`image_shape`](Dataset::image_shape); [`try_write_image`](Dataset::try_write_image)
    /// returns that as an error.
    fn write_image(&self, index: usize, out: &mut [f32]) {
        if let Err(error) = self.try_write_image(index, out) {
            panic!("{error}");
        }
    }

    fn try_write_image(&self, index: usize, out: &mut [f32]) -> Result<()> {
        expect_index("ImageFolder::try_write_image", "index", index, self.len());
        let size: usize = self.shape.iter().product();
        if out.len() != size {
            contract_violation(
                "ImageFolder::try_write_image",
                format_args!("output length {} != image size {size}", out.len()),
                format_args!("image shape {:?}", self.shape),
            );
        }
        if self.resize.is_some() {
            out.copy_from_slice(self.load(index)?.as_slice());
            return Ok(());
        }
        let path = &self.samples[index].0;
        let (pixels, height, width) = decode(path, self.color)?;
        let [channels, h, w] = self.shape;
        if (height, width) != (h, w) {
            return Err(Error::invalid_data(
                path.display().to_string(),
                format!(
                    "an image of {w}×{h} pixels like {} (images of several sizes need \
                     ImageFolder::options().resize(..) or an augmentation that ends in one \
                     size)",
                    self.samples[0].0.display()
                ),
                format!("{width}×{height} pixels"),
            ));
        }
        hwc_bytes_to_chw(&pixels, height, width, channels, out);
        Ok(())
    }

    /// Decodes image `index`.
    ///
    /// # Panics
    ///
    /// If the file cannot be decoded; [`try_image`](Dataset::try_image) returns that as an
    /// error.
    fn image(&self, index: usize) -> Tensor {
        self.try_image(index)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn try_image(&self, index: usize) -> Result<Tensor> {
        self.load(index)
    }

    fn costly_reads(&self) -> bool {
        true
    }
}

impl fmt::Debug for ImageFolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageFolder")
            .field("root", &self.root)
            .field("classes", &self.classes)
            .field("len", &self.samples.len())
            .field("image_shape", &self.shape)
            .field("color", &self.color)
            .field("skipped", &self.skipped.len())
            .finish()
    }
}

fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

fn ends_with_any(name: &OsStr, extensions: &[&str]) -> bool {
    let lower = name.to_string_lossy().to_lowercase();
    extensions.iter().any(|e| lower.ends_with(e))
}

/// The entries of `dir`, sorted by name (byte order, which for UTF-8 is code-point order).
fn sorted_entries(dir: &Path) -> Result<Vec<(std::ffi::OsString, PathBuf, bool)>> {
    let io = |e| Error::io_at(dir, e);
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        // `is_dir` follows symbolic links, as torchvision's `os.walk(followlinks=True)`.
        let is_dir = path.is_dir();
        entries.push((entry.file_name(), path, is_dir));
    }
    entries.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
    Ok(entries)
}

/// The class folders of `root`, sorted.
fn class_folders(root: &Path) -> Result<Vec<String>> {
    let mut classes = Vec::new();
    for (name, _, is_dir) in sorted_entries(root)? {
        if !is_dir || is_hidden(&name) {
            continue;
        }
        let class = name.into_string().map_err(|name| {
            Error::invalid_data(
                root.display().to_string(),
                "class folder names in UTF-8",
                format!("{name:?}"),
            )
        })?;
        classes.push(class);
    }
    if classes.is_empty() {
        return Err(Error::invalid_data(
            root.display().to_string(),
            "one sub-folder per class, holding that class's images (root/<class>/<image>)",
            "no class folder",
        ));
    }
    Ok(classes)
}

/// The image files under `dir` in torchvision's order: folders by sorted path, each folder's
/// files by sorted name. Files in formats striate does not decode go to `undecoded`.
fn collect_files(dir: &Path, files: &mut Vec<PathBuf>, undecoded: &mut Vec<PathBuf>) -> Result<()> {
    // Every folder below the class folder, then sorted by path as `sorted(os.walk())` sorts.
    let mut folders = vec![dir.to_path_buf()];
    let mut next = 0;
    while next < folders.len() {
        let current = folders[next].clone();
        next += 1;
        for (name, path, is_dir) in sorted_entries(&current)? {
            if is_dir && !is_hidden(&name) {
                folders.push(path);
            }
        }
    }
    folders.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    for folder in &folders {
        for (name, path, is_dir) in sorted_entries(folder)? {
            if is_dir || is_hidden(&name) {
                continue;
            }
            if ends_with_any(&name, &IMAGE_EXTENSIONS) {
                files.push(path);
            } else if ends_with_any(&name, &UNDECODED_EXTENSIONS) {
                undecoded.push(path);
            }
        }
    }
    Ok(())
}

fn expect_every_class_has_images(
    root: &Path,
    classes: &[String],
    counts: &[usize],
    which: &str,
) -> Result<()> {
    let empty: Vec<&str> = classes
        .iter()
        .zip(counts)
        .filter(|&(_, &n)| n == 0)
        .map(|(c, _)| c.as_str())
        .collect();
    if empty.is_empty() {
        return Ok(());
    }
    Err(Error::invalid_data(
        root.display().to_string(),
        format!(
            "at least one image{which} ({}) in every class folder",
            IMAGE_EXTENSIONS.join(", ")
        ),
        format!("none in {}", empty.join(", ")),
    ))
}

fn decode_error(path: &Path, found: impl fmt::Display) -> Error {
    Error::invalid_data(
        path.display().to_string(),
        "an image striate decodes (JPEG, PNG, BMP, GIF or WebP)",
        found.to_string(),
    )
}

/// The `(height, width)` of the image in `path`, from its header.
fn dimensions(path: &Path) -> Result<(usize, usize)> {
    let (width, height) = ImageReader::open(path)
        .map_err(|e| Error::io_at(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io_at(path, e))?
        .into_dimensions()
        .map_err(|e| decode_error(path, e))?;
    Ok((height as usize, width as usize))
}

/// Reads one image file (JPEG, PNG, BMP, GIF or WebP) as `[channels, height, width]` in
/// `[0, 1]`, decoded as an [`ImageFolder`] decodes its files: the file to predict on, say.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be read; [`Error::InvalidData`] naming it if it does not
/// decode (a JPEG cut short included).
///
/// # Examples
///
/// ```
/// use striate::data::{ColorMode, read_image};
///
/// # let path = std::env::temp_dir().join(format!("striate-doc-read-{}.png", std::process::id()));
/// # image::RgbImage::from_pixel(4, 3, image::Rgb([255, 0, 51])).save(&path).unwrap();
/// let image = read_image(&path, ColorMode::Rgb)?;
/// assert_eq!(image.shape(), &[3, 3, 4]);
/// assert_eq!(image.as_slice()[24], 0.2); // blue: 51 / 255
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), striate::Error>(())
/// ```
pub fn read_image(path: impl AsRef<Path>, color: ColorMode) -> Result<Tensor> {
    let (pixels, height, width) = decode(path.as_ref(), color)?;
    Ok(to_tensor(&pixels, height, width, color.channels()))
}

/// Decodes `path` to 8-bit pixels `[height, width, channels]`; returns them with the height
/// and width.
pub(crate) fn decode(path: &Path, color: ColorMode) -> Result<(Vec<u8>, usize, usize)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io_at(path, e))?;
    let reader = ImageReader::new(Cursor::new(&bytes[..]))
        .with_guessed_format()
        .map_err(|e| Error::io_at(path, e))?;
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(&bytes) {
        // The decoder fills what is missing with grey and reports success; Pillow (and so
        // torchvision) refuses such a file, and so do we.
        return Err(decode_error(
            path,
            "a JPEG cut short (no end-of-image marker after the image data)",
        ));
    }
    let image = reader.decode().map_err(|e| decode_error(path, e))?;
    let (width, height) = (image.width() as usize, image.height() as usize);
    let pixels = match color {
        ColorMode::Rgb => image.into_rgb8().into_raw(),
        ColorMode::Grayscale => luma(image),
    };
    Ok((pixels, height, width))
}

/// Whether a JPEG's image data is followed by its end-of-image marker (`FF D9`). Inside the
/// entropy-coded data a `FF` byte is always followed by `00` or a restart marker, so the first
/// `FF D9` after the first start-of-scan (`FF DA`) is the end of the image; a file cut short
/// has none. (An EXIF thumbnail's own markers come before the start of scan.)
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let Some(scan) = bytes.windows(2).position(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes[scan..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Pillow's `convert("L")`: grey images as they are (16-bit ones scaled to 8), colour ones by
/// ITU-R 601-2 luma in Pillow's fixed point. (The `image` crate's own conversion uses
/// Rec. 709 weights, which differ by a few levels.)
fn luma(image: DynamicImage) -> Vec<u8> {
    match image {
        DynamicImage::ImageLuma8(grey) => grey.into_raw(),
        DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_) => image.into_luma8().into_raw(),
        colour => colour
            .into_rgb8()
            .into_raw()
            .chunks_exact(3)
            .map(|p| {
                let weighted =
                    19595 * u32::from(p[0]) + 38470 * u32::from(p[1]) + 7471 * u32::from(p[2]);
                ((weighted + 0x8000) >> 16) as u8
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::mnist::tests::temp_dir;

    fn write_png(path: &Path, width: u32, height: u32, value: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::GrayImage::from_pixel(width, height, image::Luma([value]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn classes_and_files_follow_torchvisions_order() {
        let root = temp_dir("folder-order");
        for (class, file) in [
            ("b", "z.png"),
            ("b", "a.PNG"),
            ("a", "sub/x.png"),
            ("a", "sub-x/y.png"),
            ("a", "sub/deeper/w.png"),
            ("a", "m.jpeg.png"),
            ("B", "k.png"),
        ] {
            write_png(&root.join(class).join(file), 2, 2, 7);
        }
        std::fs::write(root.join("a/notes.txt"), "not an image").unwrap();
        std::fs::write(root.join("a/.DS_Store"), "x").unwrap();
        std::fs::create_dir_all(root.join(".ipynb_checkpoints")).unwrap();
        std::fs::write(root.join("stray.png"), "x").unwrap();
        let folder = ImageFolder::options().grayscale().open(&root).unwrap();
        assert_eq!(folder.classes(), ["B", "a", "b"]);
        assert_eq!(folder.class_to_idx()["a"], 1);
        let names: Vec<String> = folder
            .samples()
            .iter()
            .map(|(p, l)| format!("{l}:{}", p.strip_prefix(&root).unwrap().display()))
            .collect();
        // os.walk sorted by path: "a" < "a/sub" < "a/sub-x" < "a/sub/deeper" ('-' sorts
        // before '/'). torchvision's ImageFolder gives this order for this tree.
        assert_eq!(
            names,
            [
                "0:B/k.png",
                "1:a/m.jpeg.png",
                "1:a/sub/x.png",
                "1:a/sub-x/y.png",
                "1:a/sub/deeper/w.png",
                "2:b/a.PNG",
                "2:b/z.png"
            ]
        );
        assert_eq!(folder.class_counts(), [1, 4, 2]);
        assert_eq!(folder.image_shape(), [1, 2, 2]);
        assert_eq!(folder.image(0).as_slice(), &[7.0 / 255.0; 4]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn unsupported_formats_are_refused_not_skipped() {
        let root = temp_dir("folder-tiff");
        write_png(&root.join("a/1.png"), 2, 2, 0);
        std::fs::write(root.join("a/2.TIF"), "II*").unwrap();
        let err = ImageFolder::open(&root).unwrap_err().to_string();
        assert!(
            err.contains("1 file(s) in a format torchvision reads"),
            "{err}"
        );
        assert!(err.contains("2.TIF"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn sizes_must_agree_without_a_resize() {
        let root = temp_dir("folder-sizes");
        write_png(&root.join("a/1.png"), 4, 3, 10);
        write_png(&root.join("a/2.png"), 5, 3, 20);
        let folder = ImageFolder::options().grayscale().open(&root).unwrap();
        let mut out = vec![0.0; 12];
        folder.try_write_image(0, &mut out).unwrap();
        let err = folder.try_write_image(1, &mut out).unwrap_err().to_string();
        assert!(
            err.contains("2.png: expected an image of 4×3 pixels"),
            "{err}"
        );
        assert!(err.ends_with("found 5×3 pixels"), "{err}");
        // Natural sizes through try_image; a resize makes them agree.
        assert_eq!(folder.try_image(1).unwrap().shape(), &[1, 3, 5]);
        let resized = ImageFolder::options().resize((6, 6)).open(&root).unwrap();
        assert_eq!(resized.image_shape(), [3, 6, 6]);
        let mut out = vec![0.0; 108];
        resized.try_write_image(1, &mut out).unwrap();
        assert!(out.iter().all(|&v| (v - 20.0 / 255.0).abs() < 1e-6));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn skip_policy_leaves_out_and_reports_undecodable_files() {
        let root = temp_dir("folder-skip");
        write_png(&root.join("a/1.png"), 2, 2, 1);
        write_png(&root.join("b/1.png"), 2, 2, 2);
        std::fs::write(root.join("b/2.jpg"), b"\xff\xd8\xff\xe0 not really").unwrap();
        let folder = ImageFolder::options()
            .on_undecodable(OnUndecodable::Skip)
            .open(&root)
            .unwrap();
        assert_eq!(folder.len(), 2);
        assert_eq!(folder.skipped().len(), 1);
        assert!(folder.skipped()[0].path.ends_with("b/2.jpg"));
        // Without the policy the file fails when read, naming it.
        let strict = ImageFolder::open(&root).unwrap();
        let err = strict.try_image(2).unwrap_err().to_string();
        assert!(
            err.contains("2.jpg: expected an image striate decodes"),
            "{err}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn luma_follows_pillow() {
        let colour = DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(3, 1, vec![255, 0, 0, 0, 255, 0, 10, 20, 200]).unwrap(),
        );
        // Pillow: Image.new("RGB", ...).convert("L") gives 76, 150 and 38 for these.
        assert_eq!(luma(colour), [76, 150, 38]);
    }
}
