//! The IDX file format of MNIST and Fashion-MNIST, raw or gzip-compressed.
//!
//! An IDX file is a 4-byte magic number — two zero bytes, a type code (`0x08` for unsigned
//! bytes) and the rank — then one big-endian `u32` per dimension, then the elements row-major.
//! Only the unsigned-byte type is read: it is the one every MNIST-family file uses.
//!
//! Every check that fails returns an [`Error::InvalidData`] naming the file, what was expected
//! and what was found: a wrong magic number, a rank other than the caller's, a header cut short,
//! fewer elements than the dimensions promise (a truncated file) or more (trailing bytes).
//!
//! Reading is bounded by the header: a header declaring more data than the file can hold (its
//! size, or 1032 times its size when compressed, deflate's largest ratio) is refused before
//! anything is allocated, and decompression stops one byte past the declared size, so a gzip
//! bomb costs no more memory than the size its header declares.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// The IDX type code of unsigned bytes, the element type of MNIST-family files.
const TYPE_U8: u8 = 0x08;

/// The two bytes every gzip stream starts with; an IDX file starts with two zero bytes, so the
/// two never collide and the format can be told from the content, whatever the file is called.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The most a deflate stream expands: 1032 output bytes per input byte (RFC 1951's longest
/// match, 258 bytes, per 2-bit code, with the block overhead). A gzip file declaring more data
/// than `1032 ×` its size is cut short, whatever its bytes.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Allocation made up front for the elements of a stream of unknown size (1 MiB); past it the
/// buffer grows as bytes arrive, so a corrupt header that promises terabytes fails on the
/// short read, not on the allocation.
const STREAM_PREALLOCATION: usize = 1 << 20;

/// What is known about the size of an IDX stream before it is read, to refuse impossible
/// headers before allocating and to allocate no more than the bytes that can arrive.
#[derive(Clone, Copy, Debug)]
struct Bound {
    /// The most data bytes the stream can hold.
    max_data: u64,
    /// How many bytes to allocate before any arrive (the rest as they do).
    preallocate: usize,
    /// The size of the file, for messages: `None` for a stream.
    file_len: Option<u64>,
    compressed: bool,
}

/// The contents of an IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The extent of each axis, from the header (for MNIST images `[n, 28, 28]`).
    pub dims: Vec<usize>,
    /// The elements, row-major; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes with `rank` dimensions, raw or gzip-compressed.
///
/// Compression is recognised from the content, not the file name.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be opened or read; [`Error::InvalidData`], naming the file
/// and saying what was expected and what was found, if the magic number, element type or rank
/// is wrong, the header or the data is cut short, bytes follow the data, or the gzip stream is
/// corrupt.
///
/// # Examples
///
/// ```no_run
/// use striate::data::read_idx;
///
/// let labels = read_idx("data/mnist/t10k-labels-idx1-ubyte.gz", 1)?;
/// assert_eq!(labels.dims, [10_000]);
/// # Ok::<(), striate::Error>(())
/// ```
pub fn read_idx(path: impl AsRef<Path>, rank: usize) -> Result<IdxArray> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io_at(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io_at(path, e))?.len();
    let mut file = BufReader::new(file);
    let mut first = [0u8; 2];
    let peeked = read_up_to(&mut file, &mut first).map_err(|e| Error::io_at(path, e))?;
    let head = io::Cursor::new(first[..peeked].to_vec());
    let origin = path.display().to_string();
    if first == GZIP_MAGIC {
        // The elements come to the decoder as they are inflated; a file of honest data
        // expands a few times, so four times its size is allocated first, the rest as it
        // arrives.
        let bound = Bound {
            max_data: file_len.saturating_mul(MAX_DEFLATE_RATIO),
            preallocate: usize::try_from(file_len.saturating_mul(4)).unwrap_or(usize::MAX),
            file_len: Some(file_len),
            compressed: true,
        };
        decode(MultiGzDecoder::new(head.chain(file)), &origin, rank, bound)
    } else {
        let header = 4 + 4 * rank as u64;
        let bound = Bound {
            max_data: file_len.saturating_sub(header),
            preallocate: usize::MAX,
            file_len: Some(file_len),
            compressed: false,
        };
        decode(head.chain(file), &origin, rank, bound)
    }
}

/// Decodes an uncompressed IDX stream of unsigned bytes with `rank` dimensions.
///
/// `origin` names the data in error messages (a file name or URL).
///
/// # Errors
///
/// As [`read_idx`]: [`Error::InvalidData`] for a bad header, a short or overlong body, or a
/// corrupt compressed stream underneath; [`Error::Io`] for other read failures.
///
/// # Examples
///
/// ```
/// use striate::data::decode_idx;
///
/// // Magic 0x00000801 (unsigned bytes, rank 1), one dimension of 3, then the elements.
/// let bytes = [0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1];
/// let labels = decode_idx(&bytes[..], "labels", 1).unwrap();
/// assert_eq!(labels.dims, [3]);
/// assert_eq!(labels.data, [7, 2, 1]);
///
/// let err = decode_idx(&bytes[..10], "labels", 1).unwrap_err();
/// assert_eq!(err.to_string(), "labels: expected 3 data bytes for dimensions [3], found 2 (truncated)");
/// ```
pub fn decode_idx(reader: impl Read, origin: &str, rank: usize) -> Result<IdxArray> {
    let bound = Bound {
        max_data: u64::MAX,
        preallocate: STREAM_PREALLOCATION,
        file_len: None,
        compressed: false,
    };
    decode(reader, origin, rank, bound)
}

/// [`decode_idx`] within what `bound` says the stream can hold.
fn decode(mut reader: impl Read, origin: &str, rank: usize, bound: Bound) -> Result<IdxArray> {
    let read_error = |e: io::Error| stream_error(origin, e);

    let mut magic = [0u8; 4];
    let got = read_up_to(&mut reader, &mut magic).map_err(read_error)?;
    if got < magic.len() {
        return Err(Error::invalid_data(
            origin,
            "a 4-byte IDX magic number",
            format!("a file of {got} bytes"),
        ));
    }
    let expected_magic = u32::from_be_bytes([0, 0, TYPE_U8, rank as u8]);
    if magic[..3] != [0, 0, TYPE_U8] || usize::from(magic[3]) != rank {
        return Err(Error::invalid_data(
            origin,
            format!("IDX magic {expected_magic:#010x} (unsigned bytes, rank {rank})"),
            format!("{:#010x}", u32::from_be_bytes(magic)),
        ));
    }

    let mut header = vec![0u8; 4 * rank];
    let got = read_up_to(&mut reader, &mut header).map_err(read_error)?;
    if got < header.len() {
        return Err(Error::invalid_data(
            origin,
            format!("{rank} dimensions ({} header bytes)", header.len()),
            format!("{got} header bytes (truncated)"),
        ));
    }
    let dims: Vec<usize> = header
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::invalid_data(
                origin,
                "dimensions whose product fits in memory",
                format!("{dims:?}"),
            )
        })?;

    if len as u64 > bound.max_data {
        let found = match (bound.file_len, bound.compressed) {
            (Some(file_len), true) => format!(
                "a gzip file of {file_len} bytes, which inflates to at most {} (truncated)",
                bound.max_data
            ),
            _ => format!("{} (truncated)", bound.max_data),
        };
        return Err(Error::invalid_data(
            origin,
            format!("{len} data bytes for dimensions {dims:?}"),
            found,
        ));
    }

    let data = read_exactly(&mut reader, len, bound.preallocate).map_err(read_error)?;
    if data.len() < len {
        return Err(Error::invalid_data(
            origin,
            format!("{len} data bytes for dimensions {dims:?}"),
            format!("{} (truncated)", data.len()),
        ));
    }
    // One byte more than the header declares is enough to know the file is wrong: nothing
    // after it is inflated or read.
    let mut extra = [0u8; 1];
    if read_up_to(&mut reader, &mut extra).map_err(read_error)? > 0 {
        return Err(Error::invalid_data(
            origin,
            format!("{len} data bytes for dimensions {dims:?}"),
            "more bytes after them",
        ));
    }
    Ok(IdxArray { dims, data })
}

/// Reads up to `len` bytes, fewer if the stream ends first. `preallocate` bytes (at most `len`)
/// are allocated up front; beyond them the buffer doubles as bytes arrive, never past `len`,
/// so no allocation exceeds `len` or twice what has arrived.
fn read_exactly(reader: &mut impl Read, len: usize, preallocate: usize) -> io::Result<Vec<u8>> {
    let mut data: Vec<u8> = Vec::with_capacity(len.min(preallocate));
    let mut chunk = [0u8; 1 << 14];
    while data.len() < len {
        let want = (len - data.len()).min(chunk.len());
        let n = match reader.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if data.len() + n > data.capacity() {
            let grown = (data.capacity() * 2).max(data.len() + n).min(len);
            data.reserve_exact(grown - data.len());
        }
        data.extend_from_slice(&chunk[..n]);
    }
    Ok(data)
}

/// Fills as much of `buf` as the stream holds; returns how many bytes were read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A decoder complaining about its input means a corrupt or truncated file, not an I/O fault.
fn stream_error(origin: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
            Error::invalid_data(origin, "a valid gzip stream", format!("corrupt data ({e})"))
        }
        io::ErrorKind::UnexpectedEof => Error::invalid_data(
            origin,
            "a complete gzip stream",
            format!("one cut short ({e})"),
        ),
        _ => Error::io_at(origin, e),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0, 0, TYPE_U8, dims.len() as u8];
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(data);
        bytes
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn invalid(result: Result<IdxArray>) -> (String, String, String) {
        match result {
            Err(Error::InvalidData {
                origin,
                expected,
                found,
            }) => (origin, expected, found),
            other => panic!("expected InvalidData, got {other:?}"),
        }
    }

    #[test]
    fn decodes_images() {
        let data: Vec<u8> = (0..24).collect();
        let array = decode_idx(&idx_bytes(&[2, 3, 4], &data)[..], "x", 3).unwrap();
        assert_eq!(array.dims, [2, 3, 4]);
        assert_eq!(array.data, data);
    }

    #[test]
    fn rejects_wrong_rank_and_type() {
        let bytes = idx_bytes(&[3], &[1, 2, 3]);
        let (origin, expected, found) = invalid(decode_idx(&bytes[..], "labels.idx", 3));
        assert_eq!(origin, "labels.idx");
        assert_eq!(expected, "IDX magic 0x00000803 (unsigned bytes, rank 3)");
        assert_eq!(found, "0x00000801");

        let mut floats = bytes.clone();
        floats[2] = 0x0d;
        let (_, _, found) = invalid(decode_idx(&floats[..], "f", 1));
        assert_eq!(found, "0x00000d01");
    }

    #[test]
    fn rejects_short_header_and_body_and_trailing_bytes() {
        let bytes = idx_bytes(&[2, 2, 2], &[0; 8]);
        let (_, _, found) = invalid(decode_idx(&bytes[..2], "f", 3));
        assert_eq!(found, "a file of 2 bytes");
        let (_, expected, found) = invalid(decode_idx(&bytes[..9], "f", 3));
        assert_eq!(expected, "3 dimensions (12 header bytes)");
        assert_eq!(found, "5 header bytes (truncated)");
        let (_, expected, found) = invalid(decode_idx(&bytes[..bytes.len() - 1], "f", 3));
        assert_eq!(expected, "8 data bytes for dimensions [2, 2, 2]");
        assert_eq!(found, "7 (truncated)");

        let mut long = bytes.clone();
        long.extend_from_slice(&[9, 9, 9]);
        let (_, _, found) = invalid(decode_idx(&long[..], "f", 3));
        assert_eq!(found, "more bytes after them");
    }

    #[test]
    fn huge_header_fails_on_the_data_not_the_allocation() {
        let bytes = idx_bytes(&[u32::MAX, u32::MAX], &[1, 2]);
        let (_, _, found) = invalid(decode_idx(&bytes[..], "f", 2));
        assert_eq!(found, "2 (truncated)");
    }

    #[test]
    fn dimensions_whose_product_overflows_are_an_error() {
        let bytes = idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[1]);
        let (_, expected, found) = invalid(decode_idx(&bytes[..], "f", 3));
        assert_eq!(expected, "dimensions whose product fits in memory");
        assert_eq!(found, format!("{:?}", [u32::MAX; 3]));
    }

    #[test]
    fn reads_raw_and_gzip_files_and_reports_the_path() {
        let dir = std::env::temp_dir().join(format!("striate-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = idx_bytes(&[4], &[3, 1, 4, 1]);
        let raw = dir.join("labels-raw");
        let gz = dir.join("labels.gz");
        std::fs::write(&raw, &bytes).unwrap();
        std::fs::write(&gz, gzip(&bytes)).unwrap();
        assert_eq!(read_idx(&raw, 1).unwrap().data, [3, 1, 4, 1]);
        assert_eq!(read_idx(&gz, 1).unwrap(), read_idx(&raw, 1).unwrap());

        // A gzip file cut in the middle of its deflate stream or of its CRC trailer.
        let compressed = gzip(&idx_bytes(&[4096], &[7; 4096]));
        for cut in [compressed.len() / 2, compressed.len() - 3] {
            std::fs::write(&gz, &compressed[..cut]).unwrap();
            let (origin, _, _) = invalid(read_idx(&gz, 1));
            assert_eq!(origin, gz.display().to_string());
        }
        // Corrupt deflate data.
        let mut corrupt = compressed.clone();
        for b in &mut corrupt[12..20] {
            *b ^= 0xa5;
        }
        std::fs::write(&gz, &corrupt).unwrap();
        let (_, _, found) = invalid(read_idx(&gz, 1));
        assert!(found.starts_with("corrupt data"), "{found}");

        let missing = dir.join("missing");
        match read_idx(&missing, 1) {
            Err(Error::Io {
                path: Some(path), ..
            }) => assert_eq!(path, missing),
            other => panic!("expected Io, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
