//! Safetensors files: reading every tensor (converting F64, F16, BF16 and I64 to f32),
//! writing atomically, and saving and loading a model's weights.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::path::Path;

use safetensors::tensor::Metadata;
use safetensors::{Dtype, View};

use super::state::{LoadPlan, LoadReport, state_dict};
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::tensor::Tensor;
use crate::util::atomic_file::write_atomically;

/// The length prefix of a safetensors file: a little-endian `u64` giving the header's size.
const LENGTH_PREFIX: usize = 8;

/// The largest header the safetensors crate accepts (100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// The dtypes [`read_safetensors`] converts to f32.
const ACCEPTED_DTYPES: &str = "dtype F32, F64, F16, BF16 or I64";

/// The last component of the names of buffers that count rather than measure: written as I64
/// as PyTorch stores them, so files round-trip with `torch.load_state_dict`.
const COUNT_BUFFER: &str = "num_batches_tracked";

/// The contents of a safetensors file: its tensors in file order and its `__metadata__`.
pub(crate) struct SafetensorsContents {
    pub(crate) tensors: Vec<(String, Tensor)>,
    /// The exact values of the rank-0 I64 tensors (also in `tensors`, as f32).
    pub(crate) integers: HashMap<String, i64>,
    pub(crate) metadata: HashMap<String, String>,
}

/// Reads every tensor of a safetensors file, in file order, as f32 tensors. F32 is read
/// as is; F64, F16 and BF16 are converted (rounding F64 to nearest); I64 (PyTorch's
/// `num_batches_tracked`) is converted exactly up to 2^24 and rounded beyond.
///
/// The whole file is checked before anything is returned: a file that is not safetensors, a
/// header that is not valid JSON or whose offsets do not tile the data, a file shorter or
/// longer than its header says, and a tensor of another dtype are errors, never panics.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be read; [`Error::InvalidData`] naming the file, what was
/// expected and what was found, for anything malformed.
///
/// # Examples
///
/// ```no_run
/// let tensors = striate::io::read_safetensors("resnet18.safetensors")?;
/// for (name, tensor) in &tensors {
///     println!("{name} {:?}", tensor.shape());
/// }
/// # Ok::<(), striate::Error>(())
/// ```
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    Ok(read_contents(path.as_ref())?.tensors)
}

/// Reads a safetensors file with its metadata.
pub(crate) fn read_contents(path: &Path) -> Result<SafetensorsContents> {
    let bytes = fs::read(path).map_err(|e| Error::io_at(path, e))?;
    parse(&bytes).map_err(|(expected, found)| {
        Error::invalid_data(path.display().to_string(), expected, found)
    })
}

/// Parses a whole safetensors file; an error is `(expected, found)`.
fn parse(bytes: &[u8]) -> std::result::Result<SafetensorsContents, (String, String)> {
    let Some(prefix) = bytes.first_chunk::<LENGTH_PREFIX>() else {
        return Err((
            "a safetensors file (an 8-byte header length, a JSON header, tensor data)".into(),
            format!("{} bytes", bytes.len()),
        ));
    };
    let header_len = u64::from_le_bytes(*prefix);
    if header_len > MAX_HEADER {
        return Err((
            format!("a header length of at most {MAX_HEADER} bytes (is this a safetensors file?)"),
            format!("{header_len}"),
        ));
    }
    let data_start = LENGTH_PREFIX + header_len as usize;
    let Some(header) = bytes.get(LENGTH_PREFIX..data_start) else {
        return Err((
            format!("a {header_len}-byte header after the length prefix (file truncated?)"),
            format!("{} bytes in the whole file", bytes.len()),
        ));
    };
    let header = std::str::from_utf8(header)
        .map_err(|e| ("a UTF-8 JSON header".to_string(), format!("{e}")))?;
    let metadata: Metadata = serde_json::from_str(header.trim_end()).map_err(|e| {
        (
            "a JSON header listing tensors with dtype, shape and contiguous data_offsets"
                .to_string(),
            format!("{e}"),
        )
    })?;
    let data = &bytes[data_start..];
    if data.len() != metadata.data_len() {
        let what = if data.len() < metadata.data_len() {
            "file truncated?"
        } else {
            "trailing bytes"
        };
        return Err((
            format!(
                "{} bytes in all ({} of tensor data, as the header describes)",
                data_start + metadata.data_len(),
                metadata.data_len()
            ),
            format!("{} bytes ({what})", bytes.len()),
        ));
    }
    let mut tensors = Vec::with_capacity(metadata.tensors().len());
    let mut integers = HashMap::new();
    for name in metadata.offset_keys() {
        let Some(info) = metadata.info(&name) else {
            continue; // offset_keys come from the metadata
        };
        let (start, end) = info.data_offsets;
        let bytes = &data[start..end];
        let values = to_f32(info.dtype, bytes).ok_or_else(|| {
            (
                ACCEPTED_DTYPES.to_string(),
                format!("tensor `{name}` of dtype {}", info.dtype),
            )
        })?;
        if info.dtype == Dtype::I64
            && info.shape.is_empty()
            && let Some(value) = bytes.first_chunk::<8>()
        {
            integers.insert(name.clone(), i64::from_le_bytes(*value));
        }
        // The metadata checked each tensor's size against its shape, but an empty tensor
        // may still have extents no array can have (`[0, 2^40, 2^40]`).
        let addressable = info
            .shape
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .is_some_and(|n| n <= isize::MAX as usize / size_of::<f32>());
        let tensor = addressable
            .then(|| Tensor::from_vec(values, &info.shape).ok())
            .flatten()
            .ok_or_else(|| {
                (
                    format!("tensor `{name}` with extents an array can have"),
                    format!("shape {:?}", info.shape),
                )
            })?;
        tensors.push((name, tensor));
    }
    Ok(SafetensorsContents {
        tensors,
        integers,
        metadata: metadata.metadata().clone().unwrap_or_default(),
    })
}

/// Little-endian values of an accepted dtype as f32; `None` for other dtypes.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    fn each<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        bytes
            .chunks_exact(N)
            .map(|b| f(b.try_into().expect("chunks of N bytes")))
            .collect()
    }
    Some(match dtype {
        Dtype::F32 => each(bytes, f32::from_le_bytes),
        Dtype::F64 => each(bytes, |b| f64::from_le_bytes(b) as f32),
        Dtype::F16 => each(bytes, |b| f16_to_f32(u16::from_le_bytes(b))),
        // bf16 is the top half of an f32
        Dtype::BF16 => each(bytes, |b| {
            f32::from_bits(u32::from(u16::from_le_bytes(b)) << 16)
        }),
        Dtype::I64 => each(bytes, |b| i64::from_le_bytes(b) as f32),
        _ => return None,
    })
}

/// IEEE 754 half precision to single precision, exactly (every f16 is an f32).
fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f32::from(bits & 0x3ff);
    match exponent {
        0 => sign * mantissa * 2f32.powi(-24), // zero and subnormals: m · 2^-14 / 2^10
        31 if mantissa == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(exponent - 15),
    }
}

/// One tensor as the safetensors writer sees it: an f32 tensor written as F32 (or as I64 for
/// count buffers), or an exact integer written as a rank-0 I64.
enum TensorBytes<'a> {
    Tensor { tensor: &'a Tensor, dtype: Dtype },
    Integer(i64),
}

impl View for TensorBytes<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            TensorBytes::Tensor { dtype, .. } => *dtype,
            TensorBytes::Integer(_) => Dtype::I64,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            TensorBytes::Tensor { tensor, .. } => tensor.shape(),
            TensorBytes::Integer(_) => &[],
        }
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(match self {
            TensorBytes::Tensor { tensor, dtype } if *dtype == Dtype::I64 => tensor
                .as_slice()
                .iter()
                .flat_map(|&v| (v.round() as i64).to_le_bytes())
                .collect(),
            TensorBytes::Tensor { tensor, .. } => tensor
                .as_slice()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            TensorBytes::Integer(value) => value.to_le_bytes().to_vec(),
        })
    }

    fn data_len(&self) -> usize {
        match self {
            TensorBytes::Tensor { tensor, dtype } => {
                tensor.len() * if *dtype == Dtype::I64 { 8 } else { 4 }
            }
            TensorBytes::Integer(_) => 8,
        }
    }
}

/// Writes tensors to a safetensors file with `metadata` in its header, atomically: the bytes
/// go to a temporary file in the same directory, which is renamed over `path` once complete,
/// so a crash or a full disk never leaves a half-written file. Tensors are written as F32,
/// except buffers named `*.num_batches_tracked`, written as I64 as PyTorch stores them.
///
/// # Errors
///
/// [`Error::Io`] naming the path if it cannot be written; [`Error::InvalidData`] if two
/// tensors share a name.
///
/// # Examples
///
/// ```no_run
/// use striate::Tensor;
///
/// let tensors = vec![("mean".to_string(), Tensor::zeros(&[3]))];
/// striate::io::write_safetensors("stats.safetensors", &tensors, Default::default())?;
/// # Ok::<(), striate::Error>(())
/// ```
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    write_safetensors_with_integers(path.as_ref(), tensors, &[], metadata)
}

/// [`write_safetensors`] with exact integers beside the tensors, each written as a rank-0 I64.
pub(crate) fn write_safetensors_with_integers(
    path: &Path,
    tensors: &[(String, Tensor)],
    integers: &[(String, i64)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut views = HashMap::with_capacity(tensors.len() + integers.len());
    let tensor_views = tensors.iter().map(|(name, tensor)| {
        let is_count = name.rsplit('.').next() == Some(COUNT_BUFFER);
        let dtype = if is_count { Dtype::I64 } else { Dtype::F32 };
        (name, TensorBytes::Tensor { tensor, dtype })
    });
    let integer_views = integers
        .iter()
        .map(|(name, value)| (name, TensorBytes::Integer(*value)));
    for (name, view) in tensor_views.chain(integer_views) {
        if views.insert(name.as_str(), view).is_some() {
            return Err(Error::invalid_data(
                path.display().to_string(),
                "distinct tensor names",
                format!("`{name}` twice"),
            ));
        }
    }
    let metadata = (!metadata.is_empty()).then_some(metadata);
    let bytes = safetensors::serialize(views, metadata).map_err(|e| {
        Error::invalid_data(
            path.display().to_string(),
            "tensors the safetensors format can hold",
            e.to_string(),
        )
    })?;
    write_atomically(path, &bytes)
}

/// Saves a model's parameters and buffers ([`state_dict`]) to a safetensors file, atomically
/// (see [`write_safetensors`]). The names are the model's hierarchical names, which for zoo
/// models are torchvision's, so PyTorch reads the file with `safetensors.torch.load_file` and
/// `model.load_state_dict`.
///
/// # Errors
///
/// [`Error::Io`] naming the path if it cannot be written.
///
/// # Examples
///
/// ```no_run
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::io::{load_weights, save_weights};
/// use striate::models::mnist_cnn;
///
/// let model = mnist_cnn(10, &mut StdRng::seed_from_u64(0));
/// save_weights(&model, "mnist.safetensors")?;
/// let mut copy = mnist_cnn(10, &mut StdRng::seed_from_u64(1));
/// load_weights(&mut copy, "mnist.safetensors")?;
/// # Ok::<(), striate::Error>(())
/// ```
pub fn save_weights(model: &dyn Module, path: impl AsRef<Path>) -> Result<()> {
    write_safetensors(path, &state_dict(model), HashMap::new())
}

/// Loads a safetensors file into a model, strictly: every parameter and buffer of the model
/// must be in the file with its shape, and every tensor of the file must be used. Either all
/// of it loads or nothing does.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be read; [`Error::InvalidData`] naming the file and the
/// problem if it is corrupt, truncated or holds an unsupported dtype (see
/// [`read_safetensors`]); [`Error::StateDict`] naming the model and the file, with every
/// missing key, unexpected key and shape mismatch.
///
/// # Examples
///
/// ```no_run
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::resnet18;
///
/// // A torchvision checkpoint converted with docs/convert_torchvision.md
/// let mut model = resnet18(1000, &mut StdRng::seed_from_u64(0));
/// striate::io::load_weights(&mut model, "resnet18.safetensors")?;
/// # Ok::<(), striate::Error>(())
/// ```
pub fn load_weights(model: &mut dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors = read_safetensors(path)?;
    let plan = LoadPlan::new(model, &tensors);
    if !plan.report.is_complete() {
        return Err(plan.report.into_error(target(model, path)));
    }
    plan.apply(model);
    Ok(())
}

/// Loads the tensors of a safetensors file that fit a model and skips the others (see
/// [`crate::io::load_state_dict_partial`]): the usual start of fine-tuning, where the new head
/// has another number of classes than the pretrained one.
///
/// # Errors
///
/// As [`load_weights`] for the file; [`Error::StateDict`] only if not a single tensor of a
/// non-empty file fits the model (a naming mismatch).
///
/// # Examples
///
/// ```no_run
/// use rand::{SeedableRng, rngs::StdRng};
/// use striate::models::resnet18;
///
/// let mut model = resnet18(10, &mut StdRng::seed_from_u64(0));
/// let report = striate::io::load_weights_partial(&mut model, "resnet18.safetensors")?;
/// println!("{report}"); // ...; mismatched: fc.weight: expected shape [10, 512], found shape [1000, 512], ...
/// # Ok::<(), striate::Error>(())
/// ```
pub fn load_weights_partial(model: &mut dyn Module, path: impl AsRef<Path>) -> Result<LoadReport> {
    let path = path.as_ref();
    let tensors = read_safetensors(path)?;
    let plan = LoadPlan::new(model, &tensors);
    if plan.report.loaded.is_empty() && !tensors.is_empty() {
        return Err(plan.report.into_error(target(model, path)));
    }
    Ok(plan.apply(model))
}

/// How a state-dict error names a model loaded from a file.
pub(crate) fn target(model: &dyn Module, path: &Path) -> String {
    format!("{} from {}", model.describe(), path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversions_are_exact() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        let good = safetensors::serialize(
            [(
                "w",
                TensorBytes::Tensor {
                    tensor: &Tensor::ones(&[2, 3]),
                    dtype: Dtype::F32,
                },
            )],
            None,
        )
        .unwrap();
        assert_eq!(parse(&good).unwrap().tensors[0].1, Tensor::ones(&[2, 3]));
        for len in 0..good.len() {
            assert!(parse(&good[..len]).is_err(), "truncated to {len} bytes");
        }
        for at in 0..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] ^= flip;
                let _ = parse(&bad); // may be valid (a changed value), must not panic
            }
        }
    }
}
