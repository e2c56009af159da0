//! Downloads against a real HTTP server on 127.0.0.1, written here with `TcpListener`, that
//! serves the files of `$STRIATE_DATA/mnist` (or `../shared/data/mnist`) under four routes:
//! `/good/` as they are, `/bad/` with wrong bytes, `/truncated/` with a body cut short of its
//! Content-Length, `/missing/` answering 404, and three hostile ones: `/drip/` sending one byte
//! every 250 ms, `/endless/` sending the file and then zeros without end (no Content-Length),
//! and `/wrong-length/` declaring twice the file's length and then waiting. A CIFAR-10 archive
//! written by the test is served the same way, from a directory of its own.
#![cfg(feature = "download")]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use striate::Error;
use striate::data::{Cifar10, DATA_ENV, Dataset, Downloader, Mnist, Split};

const LABELS: &str = "t10k-labels-idx1-ubyte.gz";

/// The directory of MNIST files to serve, or `None` (and a line saying so) if there is none.
fn mnist_dir(test: &str) -> Option<PathBuf> {
    let root = std::env::var_os(DATA_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let dir = root.join("mnist");
    if dir.join(LABELS).is_file() {
        Some(dir)
    } else {
        println!("{test}: skipped, no MNIST files in {}", dir.display());
        None
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh, empty directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("striate-download-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The names in `dir`: after any download, finished files only — never a partial or temp file.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A one-thread HTTP server on 127.0.0.1 that stops when dropped, or by itself after a minute.
struct Server {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(files: PathBuf) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            // One thread per connection, so a hostile route (which ends by
                            // itself within seconds) holds up no other request.
                            let (files, requests) = (files.clone(), Arc::clone(&requests));
                            std::thread::spawn(move || serve(stream, &files, &requests));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Server {
            base,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn mirror(&self, route: &str) -> String {
        format!("{}/{route}/", self.base)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one request and closes the connection, noting the path asked for in `requests`.
fn serve(stream: TcpStream, files: &Path, requests: &Mutex<Vec<String>>) -> Option<()> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1)?.to_string();
    requests.lock().unwrap().push(path.clone());
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (route, name) = (parts.next()?, parts.next().unwrap_or(""));
    let content = std::fs::read(files.join(name))
        .ok()
        .filter(|_| !name.contains(".."));
    let mut out = stream;
    let respond = |out: &mut TcpStream, status: &str, length: usize, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {length}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
        );
        out.write_all(head.as_bytes())?;
        out.write_all(body)?;
        out.flush()
    };
    let _ = match (route, content) {
        ("good", Some(bytes)) => respond(&mut out, "200 OK", bytes.len(), &bytes),
        ("bad", Some(mut bytes)) => {
            // Same length, different bytes: only the checksum can tell.
            bytes.reverse();
            respond(&mut out, "200 OK", bytes.len(), &bytes)
        }
        ("truncated", Some(bytes)) => {
            respond(&mut out, "200 OK", bytes.len(), &bytes[..bytes.len() / 2])
        }
        ("drip", Some(bytes)) => drip(&mut out, &bytes),
        ("endless", Some(bytes)) => endless(&mut out, &bytes),
        ("wrong-length", Some(bytes)) => wrong_length(&mut out, &bytes),
        _ => respond(&mut out, "404 Not Found", 9, b"not found"),
    };
    let _ = out.shutdown(std::net::Shutdown::Both);
    Some(())
}

/// A body of the right length sent one byte every 250 ms (for at most 10 s: the client is
/// meant to give up long before).
fn drip(out: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", bytes.len());
    out.write_all(head.as_bytes())?;
    for byte in bytes.iter().take(40) {
        out.write_all(&[*byte])?;
        out.flush()?;
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

/// The file and then zeros, without a Content-Length (at most 256 MiB: the client is meant to
/// hang up right after the file's size).
fn endless(out: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
    out.write_all(bytes)?;
    let zeros = vec![0u8; 1 << 16];
    for _ in 0..4096 {
        out.write_all(&zeros)?;
    }
    Ok(())
}

/// A Content-Length of twice the file's, then 3 s of silence before the body: a client that
/// read the body would wait; one that checks the length first has hung up already.
fn wrong_length(out: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        2 * bytes.len()
    );
    out.write_all(head.as_bytes())?;
    out.flush()?;
    std::thread::sleep(Duration::from_secs(3));
    out.write_all(bytes)
}

/// A downloader for `mirrors` that knows the true MD5 of the local labels file.
fn downloader(mirrors: &[String], files: &Path) -> Downloader {
    let md5 = md5_hex(&std::fs::read(files.join(LABELS)).unwrap());
    Downloader::new(mirrors.iter().cloned())
        .checksum(LABELS, md5)
        .timeouts(Duration::from_secs(5), Duration::from_secs(5))
}

/// The files to serve, a server for them and an empty directory to download into (removed
/// when the fixture is dropped); `None` when there are no files here.
struct Fixture {
    files: PathBuf,
    server: Server,
    dir: PathBuf,
}

fn fixture(test: &str) -> Option<Fixture> {
    let files = mnist_dir(test)?;
    Some(Fixture {
        server: Server::start(files.clone()),
        dir: temp_dir(test),
        files,
    })
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn download_error(result: striate::Result<PathBuf>) -> (String, Vec<String>) {
    match result {
        Err(Error::Download { file, attempts }) => (file, attempts),
        other => panic!("expected Error::Download, got {other:?}"),
    }
}

#[test]
fn success_writes_the_verified_file_and_nothing_else() {
    let Some(Fixture { files, server, dir }) =
        &fixture("success_writes_the_verified_file_and_nothing_else")
    else {
        return;
    };
    let target = dir.join("nested");
    let path = downloader(&[server.mirror("good")], files)
        .fetch(LABELS, &target)
        .unwrap();
    assert_eq!(path, target.join(LABELS));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(files.join(LABELS)).unwrap()
    );
    assert_eq!(listing(&target), [LABELS]);
}

#[test]
fn checksum_mismatch_is_an_error_and_leaves_nothing() {
    let Some(Fixture { files, server, dir }) =
        &fixture("checksum_mismatch_is_an_error_and_leaves_nothing")
    else {
        return;
    };
    let result = downloader(&[server.mirror("bad")], files).fetch(LABELS, dir);
    let (file, attempts) = download_error(result);
    assert_eq!(file, LABELS);
    assert_eq!(attempts.len(), 1);
    assert!(
        attempts[0].starts_with(&format!(
            "{}{LABELS}: checksum mismatch",
            server.mirror("bad")
        )),
        "{attempts:?}"
    );
    assert!(listing(dir).is_empty(), "{:?}", listing(dir));
}

#[test]
fn truncated_body_is_an_error_and_leaves_nothing() {
    let Some(Fixture { files, server, dir }) =
        &fixture("truncated_body_is_an_error_and_leaves_nothing")
    else {
        return;
    };
    let (_, attempts) =
        download_error(downloader(&[server.mirror("truncated")], files).fetch(LABELS, dir));
    assert_eq!(attempts.len(), 1);
    let size = std::fs::metadata(files.join(LABELS)).unwrap().len();
    let cut = format!(
        "truncated/{LABELS}: transfer failed after {} of {size} bytes",
        size / 2
    );
    assert!(attempts[0].contains(&cut), "{attempts:?}");
    assert!(listing(dir).is_empty(), "{:?}", listing(dir));
}

#[test]
fn not_found_moves_on_to_the_next_mirror() {
    let Some(Fixture { files, server, dir }) = &fixture("not_found_moves_on_to_the_next_mirror")
    else {
        return;
    };
    let mirrors = [server.mirror("missing"), server.mirror("good")];
    downloader(&mirrors, files).fetch(LABELS, dir).unwrap();
    assert_eq!(
        server.requests(),
        [format!("/missing/{LABELS}"), format!("/good/{LABELS}")]
    );
    assert_eq!(listing(dir), [LABELS]);
}

#[test]
fn all_mirrors_failing_gives_one_error_listing_each() {
    let Some(Fixture { files, server, dir }) =
        &fixture("all_mirrors_failing_gives_one_error_listing_each")
    else {
        return;
    };
    let mirrors = [
        server.mirror("missing"),
        server.mirror("bad"),
        server.mirror("truncated"),
        // Nothing listens on port 9 of the loopback: the connection is refused.
        "http://127.0.0.1:9/".to_string(),
    ];
    let (_, attempts) = download_error(downloader(&mirrors, files).fetch(LABELS, dir));
    println!("{attempts:#?}");
    assert_eq!(attempts.len(), 4, "{attempts:#?}");
    for (attempt, mirror) in attempts.iter().zip(&mirrors) {
        assert!(
            attempt.starts_with(&format!("{mirror}{LABELS}: ")),
            "{attempt}"
        );
    }
    assert!(attempts[0].contains("404"), "{}", attempts[0]);
    assert!(attempts[1].contains("checksum mismatch"), "{}", attempts[1]);
    assert!(listing(dir).is_empty(), "{:?}", listing(dir));

    // No checksum for a file: refused before any request.
    let before = server.requests().len();
    let err = downloader(&mirrors, files)
        .fetch("other.gz", dir)
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert_eq!(server.requests().len(), before);
}

#[test]
fn mnist_downloads_a_missing_split_with_the_official_checksums() {
    let Some(Fixture {
        files: _,
        server,
        dir,
    }) = &fixture("mnist_downloads_a_missing_split_with_the_official_checksums")
    else {
        return;
    };
    // Official sums; the local test files are byte-identical to the official ones.
    let official = Mnist::FILES
        .iter()
        .fold(
            Downloader::new([server.mirror("missing"), server.mirror("good")]),
            |d, f| d.expected(f.name, f.md5, f.size),
        )
        .timeouts(Duration::from_secs(5), Duration::from_secs(5));
    let source = Mnist::source().dir(dir).search(false).downloader(official);
    let test = source.load(Split::Test).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(
        listing(dir),
        ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    );
    // Found now: a second load asks the server nothing.
    let before = server.requests().len();
    source.load(Split::Test).unwrap();
    assert_eq!(server.requests().len(), before);

    // The local training files are a 10,000-digit subset, so they fail the official checksum:
    // the error says where it looked, why the download failed, the files and the URLs.
    let err = source.load(Split::Train).unwrap_err();
    assert!(matches!(err, Error::DatasetNotFound { .. }));
    let message = err.to_string();
    println!("{message}");
    for needle in [
        "MNIST (train split) not found",
        &format!(
            "{} (given directory: missing train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz])",
            dir.display()
        ),
        "Download failed: could not download train-images-idx3-ubyte.gz from any mirror",
        "404",
        // Refused on its Content-Length, before a byte of the body was read.
        "wrong size: expected 9912422 bytes, found Content-Length 1613301 (nothing downloaded)",
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz",
        &format!("{}train-labels-idx1-ubyte.gz", server.mirror("good")),
    ] {
        assert!(message.contains(needle), "{needle:?} not in:\n{message}");
    }
    assert_eq!(
        listing(dir),
        ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    );
}

/// A downloader for `mirror` that knows the true MD5 and size of the local labels file, with a
/// deadline of 1 s plus the size at 2000 bytes/s (3.3 s for the 4542 bytes of the file).
fn sized_downloader(mirror: String, files: &Path) -> (Downloader, u64) {
    let bytes = std::fs::read(files.join(LABELS)).unwrap();
    let size = bytes.len() as u64;
    let downloader = Downloader::new([mirror])
        .expected(LABELS, md5_hex(&bytes), size)
        .timeouts(Duration::from_secs(5), Duration::from_secs(5))
        .min_throughput(2000)
        .grace(Duration::from_secs(1));
    (downloader, size)
}

#[test]
fn a_dripping_server_fails_within_the_deadline() {
    let Some(Fixture { files, server, dir }) =
        &fixture("a_dripping_server_fails_within_the_deadline")
    else {
        return;
    };
    let (downloader, size) = sized_downloader(server.mirror("drip"), files);
    let deadline = downloader.deadline(size);
    let start = Instant::now();
    let (_, attempts) = download_error(downloader.fetch(LABELS, dir));
    let elapsed = start.elapsed();
    println!("{elapsed:?} {attempts:?}");
    assert!(attempts[0].contains("too slow"), "{attempts:?}");
    assert!(attempts[0].contains(&format!("of {size} bytes within the deadline of 3.3 s")));
    assert!(elapsed >= deadline, "{elapsed:?} < {deadline:?}");
    assert!(elapsed < deadline + Duration::from_secs(1), "{elapsed:?}");
    assert!(listing(dir).is_empty(), "{:?}", listing(dir));
}

#[test]
fn an_endless_body_stops_right_after_the_expected_size() {
    let Some(Fixture { files, server, dir }) =
        &fixture("an_endless_body_stops_right_after_the_expected_size")
    else {
        return;
    };
    let (downloader, size) = sized_downloader(server.mirror("endless"), files);
    let start = Instant::now();
    let (_, attempts) = download_error(downloader.fetch(LABELS, dir));
    println!("{:?} {attempts:?}", start.elapsed());
    let prefix = format!("too long: expected {size} bytes, found more (stopped after ");
    let stopped_after: u64 = attempts[0]
        .split_once(&prefix)
        .and_then(|(_, rest)| rest.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("{attempts:?}"));
    // Stopped at the first read past the size: one read buffer (64 KiB) at most.
    assert!(stopped_after <= size + 65536, "{stopped_after}");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(listing(dir).is_empty(), "{:?}", listing(dir));
}

#[test]
fn a_content_length_other_than_the_size_is_refused_before_the_body() {
    let Some(Fixture { files, server, dir }) =
        &fixture("a_content_length_other_than_the_size_is_refused_before_the_body")
    else {
        return;
    };
    let (downloader, size) = sized_downloader(server.mirror("wrong-length"), files);
    let start = Instant::now();
    let (_, attempts) = download_error(downloader.fetch(LABELS, dir));
    // The server sends no body for 3 s: an answer before that never waited for one.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        attempts[0].ends_with(&format!(
            "wrong size: expected {size} bytes, found Content-Length {} (nothing downloaded)",
            2 * size
        )),
        "{attempts:?}"
    );
    assert!(listing(dir).is_empty(), "{:?}", listing(dir));
}

/// A miniature CIFAR-10 binary archive: `per_file` records in each of the six batch files,
/// record `i` of batch `b` labelled `(b + i) % 10` with every pixel `i`.
fn cifar10_archive(path: &Path, per_file: usize) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for (b, name) in names.iter().enumerate() {
        let mut bytes = Vec::new();
        for i in 0..per_file {
            bytes.push(((b + i) % 10) as u8);
            bytes.extend(std::iter::repeat_n(i as u8, 3072));
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("cifar-10-batches-bin/{name}"),
            &bytes[..],
        )
        .unwrap();
    }
    let meta = b"airplane\nautomobile\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(meta.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(
        &mut header,
        "cifar-10-batches-bin/batches.meta.txt",
        &meta[..],
    )
    .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn cifar10_downloads_verifies_and_unpacks_its_archive() {
    let served = temp_dir("cifar-served");
    let archive = served.join("cifar-10-binary.tar.gz");
    cifar10_archive(&archive, 7);
    let bytes = std::fs::read(&archive).unwrap();
    let server = Server::start(served.clone());
    let downloader = |mirrors: [String; 2]| {
        Downloader::new(mirrors)
            .expected(
                "cifar-10-binary.tar.gz",
                md5_hex(&bytes),
                bytes.len() as u64,
            )
            .timeouts(Duration::from_secs(5), Duration::from_secs(5))
    };

    // A mirror with wrong bytes: an error that says why, and nothing left behind.
    let dir = temp_dir("cifar-download-bad");
    let source = Cifar10::source().dir(&dir).search(false);
    let err = source
        .clone()
        .downloader(downloader([server.mirror("missing"), server.mirror("bad")]))
        .load(Split::Test)
        .unwrap_err();
    assert!(matches!(err, Error::DatasetNotFound { .. }));
    let message = err.to_string();
    assert!(
        message.contains("CIFAR-10 (test split) not found"),
        "{message}"
    );
    assert!(message.contains("checksum mismatch"), "{message}");
    assert!(listing(&dir).is_empty(), "{:?}", listing(&dir));

    // The good mirror: the archive is fetched, checked, unpacked flat and removed.
    let source = source.downloader(downloader([
        server.mirror("missing"),
        server.mirror("good"),
    ]));
    let test = source.load(Split::Test).unwrap();
    assert_eq!(test.len(), 7);
    assert_eq!(test.image_shape(), [3, 32, 32]);
    // Record 3 of the test batch (batch index 5).
    assert_eq!(test.label(3), 8);
    assert_eq!(
        listing(&dir),
        [
            "batches.meta.txt",
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin"
        ]
    );
    // The training split is there now too: loading it asks the server nothing.
    let before = server.requests().len();
    let train = source.load(Split::Train).unwrap();
    assert_eq!(train.len(), 35);
    assert_eq!(server.requests().len(), before);
    // The official configuration names the official archive.
    assert_eq!(
        Cifar10::downloader().urls("cifar-10-binary.tar.gz"),
        ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
    );
    assert_eq!(
        Cifar10::downloader().expected_md5("cifar-10-binary.tar.gz"),
        Some("c32a1d4ab5d03f1284b67883e8d87530")
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&served).unwrap();
}
