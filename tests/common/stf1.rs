//! The binary tensor files the torchvision fixture scripts write (`write_tensor` in
//! `scripts/transform_fixtures.py` and `scripts/imagenet_fixtures.py`): `STF1`, the rank, the
//! dimensions and the f32 values, all little-endian.

use std::path::Path;

use striate::Tensor;

/// Reads the tensor at `path`, panicking with the path on any malformation (fixtures are part
/// of the repository).
pub fn read_tensor(path: &Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..4], b"STF1", "{}: bad magic", path.display());
    let word = |k: usize| u32::from_le_bytes(bytes[4 + 4 * k..8 + 4 * k].try_into().unwrap());
    let rank = word(0) as usize;
    let shape: Vec<usize> = (1..=rank).map(|k| word(k) as usize).collect();
    let data: Vec<f32> = bytes[8 + 4 * rank..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Tensor::from_vec(data, &shape).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
