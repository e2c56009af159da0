//! What reading a file from outside may cost, measured with a counting global allocator (in a
//! test binary of its own, so no other test runs under it):
//!
//! - a gzip bomb — a valid IDX header declaring a small size, then hundreds of megabytes of
//!   zeros compressed to a fraction of a megabyte — costs at most twice the declared size;
//! - a header declaring more data than its file can hold is refused before any allocation;
//! - thousands of seeded mutations (bit flips, truncations, extensions) of a real IDX file, a
//!   safetensors weights file and a training checkpoint each end in `Ok` or `Err` — never a
//!   panic — with no allocation above four times the file's size (or the IDX data's size), and
//!   every error names the file.
//!
//! The allocator counts per thread, so tests running side by side do not disturb each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use flate2::Compression;
use flate2::write::GzEncoder;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use striate::Tape;
use striate::data::read_idx;
use striate::io::{TrainingProgress, load_checkpoint, load_weights, save_checkpoint, save_weights};
use striate::nn::{BatchNorm2d, Conv2dConfig, Dense, Flatten, Module, Relu, Sequential};
use striate::optim::{Adam, AdamConfig, Optimizer};

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            LIVE.with(|live| {
                live.set(live.get() + size as isize);
                PEAK.with(|peak| peak.set(peak.get().max(live.get())));
            });
            LARGEST.with(|largest| largest.set(largest.get().max(size)));
        }
    });
}

fn note_free(size: usize) {
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            LIVE.with(|live| live.set(live.get() - size as isize));
        }
    });
}

// SAFETY: every call is passed on to the system allocator unchanged; the counting touches only
// const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a move: both blocks live for a moment.
        note_alloc(new_size);
        note_free(layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What `f` allocated on this thread: the peak of live bytes above the start, and the largest
/// single allocation.
struct Cost {
    peak: usize,
    largest: usize,
}

fn measure<T>(f: impl FnOnce() -> T) -> (T, Cost) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    let cost = Cost {
        peak: PEAK.with(Cell::get).max(0) as usize,
        largest: LARGEST.with(Cell::get),
    };
    (out, cost)
}

/// A fresh, empty directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("striate-limits-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn idx_header(dims: &[u32]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn a_gzip_bomb_costs_no_more_than_twice_its_declared_size() {
    let dir = temp_dir("bomb");
    let path = dir.join("bomb-idx3-ubyte.gz");
    let dims = [1000u32, 28, 28];
    let declared = 1000 * 28 * 28;
    let zeros_mb = 256;
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(&idx_header(&dims)).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..zeros_mb {
        encoder.write_all(&chunk).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    println!("{zeros_mb} MB of zeros in {} bytes of gzip", bomb.len());
    assert!(bomb.len() < 1 << 20);
    std::fs::write(&path, &bomb).unwrap();

    let start = Instant::now();
    let (result, cost) = measure(|| read_idx(&path, 3));
    let message = result.unwrap_err().to_string();
    println!(
        "{:?}, peak {} bytes, largest allocation {} bytes: {message}",
        start.elapsed(),
        cost.peak,
        cost.largest
    );
    assert!(
        message.ends_with(&format!(
            "expected {declared} data bytes for dimensions [1000, 28, 28], found more bytes after them"
        )),
        "{message}"
    );
    assert!(message.starts_with(&path.display().to_string()));
    assert!(cost.peak < 2 * declared, "peak {} bytes", cost.peak);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_header_promising_more_than_the_file_holds_is_refused_before_allocating() {
    let dir = temp_dir("promise");
    // 2^32 - 1 images of 28 × 28: 3 TB, in a file of a few bytes, raw and compressed.
    let mut bytes = idx_header(&[u32::MAX, 28, 28]);
    bytes.extend_from_slice(&[1, 2, 3]);
    let raw = dir.join("raw-idx3-ubyte");
    let gz = dir.join("gz-idx3-ubyte.gz");
    std::fs::write(&raw, &bytes).unwrap();
    std::fs::write(&gz, gzip(&bytes)).unwrap();
    for path in [&raw, &gz] {
        let (result, cost) = measure(|| read_idx(path, 3));
        let message = result.unwrap_err().to_string();
        println!("largest allocation {} bytes: {message}", cost.largest);
        assert!(message.contains("(truncated)"), "{message}");
        assert!(cost.largest < 1 << 16, "{} bytes", cost.largest);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small network with every kind of state: convolution, batch norm (with its I64
/// `num_batches_tracked`), dense.
fn small_model(seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .push(Conv2dConfig::new(1, 2, 3).init(&mut rng))
        .push(BatchNorm2d::new(2))
        .push(Relu)
        .push(Flatten::new())
        .push(Dense::new(2 * 4 * 4, 3, &mut rng))
}

/// The files to mutate: an IDX file of images (a slice of real MNIST when `$STRIATE_DATA` has
/// it), raw and compressed, saved weights and a checkpoint, each with the size its reader
/// may allocate up to four times.
fn originals(dir: &Path) -> Vec<(&'static str, Vec<u8>, usize)> {
    let images = 24u32;
    let real = std::env::var_os("STRIATE_DATA")
        .map(|root| Path::new(&root).join("mnist/t10k-images-idx3-ubyte.gz"))
        .filter(|p| p.is_file())
        .and_then(|p| read_idx(p, 3).ok());
    let pixels: Vec<u8> = match real {
        Some(array) => array.data[..images as usize * 784].to_vec(),
        None => {
            // Blobs of ink on black, like digits, so the compressed file is not trivial.
            let mut rng = StdRng::seed_from_u64(11);
            (0..images as usize * 784)
                .map(|i| {
                    let (y, x) = ((i % 784) / 28, i % 28);
                    let ink = (8..20).contains(&y) && (10..18).contains(&x);
                    if ink { rng.random_range(128..=255) } else { 0 }
                })
                .collect()
        }
    };
    let mut idx = idx_header(&[images, 28, 28]);
    idx.extend_from_slice(&pixels);
    let declared = pixels.len();

    let mut net = small_model(0);
    let weights = dir.join("weights.safetensors");
    save_weights(&net, &weights).unwrap();
    let mut adam = Adam::new(AdamConfig::default());
    let tape = Tape::training();
    let x = striate::Tensor::rand_uniform(&[2, 1, 6, 6], -1.0, 1.0, &mut StdRng::seed_from_u64(3));
    let grads = net.forward(tape.input(x)).cross_entropy(&[0, 2]).backward();
    adam.step(&mut net, &grads);
    drop(tape);
    let checkpoint = dir.join("run.ckpt");
    let progress = TrainingProgress {
        epoch: 1,
        step: 1,
        seed: 5,
    };
    save_checkpoint(&checkpoint, &net, &adam, progress).unwrap();

    let weights = std::fs::read(weights).unwrap();
    let checkpoint = std::fs::read(checkpoint).unwrap();
    let (weights_len, checkpoint_len) = (weights.len(), checkpoint.len());
    vec![
        ("idx", idx.clone(), declared.max(idx.len())),
        ("idx.gz", gzip(&idx), declared.max(idx.len())),
        ("weights", weights, weights_len),
        ("checkpoint", checkpoint, checkpoint_len),
    ]
}

/// Reads `path` as the file of kind `kind`; `Err` carries the error's message.
fn load(kind: &str, path: &Path) -> Result<(), String> {
    let result = match kind {
        "idx" | "idx.gz" => read_idx(path, 3).map(drop),
        "weights" => load_weights(&mut small_model(1), path),
        _ => load_checkpoint(
            path,
            &mut small_model(1),
            &mut Adam::new(AdamConfig::default()),
        )
        .map(drop),
    };
    result.map_err(|e| e.to_string())
}

#[test]
fn thousands_of_mutated_files_are_errors_or_values_never_panics() {
    let dir = temp_dir("mutations");
    let files = originals(&dir);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut problems = Vec::new();
    let (mut ok, mut err, mut largest_ratio) = (0usize, 0usize, 0f64);
    let start = Instant::now();
    for (kind, original, budget) in &files {
        let path = dir.join(format!("mutant.{kind}"));
        // The original itself loads.
        std::fs::write(&path, original).unwrap();
        assert_eq!(load(kind, &path), Ok(()), "{kind}");
        for trial in 0..1000 {
            let mut bytes = original.clone();
            let what = match trial % 10 {
                // Bit flips, most of them near the start where the headers are.
                0..=6 => {
                    let flips = 1 + trial % 3;
                    let mut at = Vec::new();
                    for _ in 0..flips {
                        let span = if rng.random_bool(0.5) {
                            bytes.len().min(256)
                        } else {
                            bytes.len()
                        };
                        let i = rng.random_range(0..span);
                        let bit = rng.random_range(0..8);
                        bytes[i] ^= 1 << bit;
                        at.push(format!("byte {i} bit {bit}"));
                    }
                    format!("flip {}", at.join(", "))
                }
                7 | 8 => {
                    let len = rng.random_range(0..bytes.len());
                    bytes.truncate(len);
                    format!("truncate to {len} bytes")
                }
                _ => {
                    let extra = rng.random_range(1..64);
                    let fill: u8 = rng.random();
                    bytes.extend(std::iter::repeat_n(fill, extra));
                    format!("extend by {extra} bytes of {fill:#04x}")
                }
            };
            std::fs::write(&path, &bytes).unwrap();
            let (outcome, cost) = measure(|| catch_unwind(AssertUnwindSafe(|| load(kind, &path))));
            match outcome {
                Err(_) => problems.push(format!("{kind}: {what}: panicked")),
                Ok(Ok(())) => ok += 1,
                Ok(Err(message)) => {
                    err += 1;
                    if !message.contains(&path.display().to_string()) {
                        problems.push(format!("{kind}: {what}: error without the path: {message}"));
                    }
                }
            }
            let ratio = cost.largest as f64 / *budget as f64;
            largest_ratio = largest_ratio.max(ratio);
            if ratio > 4.0 {
                problems.push(format!(
                    "{kind}: {what}: allocated {} bytes at once, {ratio:.1}x its {budget}",
                    cost.largest
                ));
            }
        }
    }
    println!(
        "{} mutants in {:?}: {ok} loaded, {err} errors; largest allocation {largest_ratio:.2}x the file or data size",
        ok + err,
        start.elapsed()
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
