//! Fetching dataset files from a list of mirrors, each file checked against its published size
//! and MD5, within a deadline that a dripping server cannot stretch.

use std::time::Duration;

/// How many bytes a file of unknown size may have (when no size is recorded and the server
/// sends no `Content-Length`): 1 GiB, far beyond any dataset file this crate knows.
const UNKNOWN_SIZE_LIMIT: u64 = 1 << 30;

/// What a file must be: its MD5 (hex) and, when known, its size in bytes.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    file: String,
    md5: String,
    size: Option<u64>,
}

/// Where dataset files are downloaded from and what each must be: mirrors are tried in order
/// until one serves a file of the recorded size whose MD5 matches.
///
/// Every download is bounded: in size (a file never grows past its recorded size; a
/// `Content-Length` that disagrees with it is refused before the body is read) and in time (a
/// deadline of a fixed grace period plus the size at a minimum throughput, so a server that
/// drips a byte at a time fails in bounded time, as does one that stalls).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use striate::data::{Downloader, Mnist};
///
/// // The official configuration, or one pointing at your own mirror.
/// assert!(Mnist::downloader().mirrors()[0].starts_with("https://"));
/// let local = Downloader::new(["http://127.0.0.1:8000/mnist/"])
///     .expected("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4542)
///     .min_throughput(1000)
///     .grace(Duration::from_secs(10));
/// assert_eq!(local.urls("t10k-labels-idx1-ubyte.gz"), ["http://127.0.0.1:8000/mnist/t10k-labels-idx1-ubyte.gz"]);
/// // 10 s of grace, plus 4542 bytes at 1000 bytes/s.
/// assert_eq!(local.deadline(4542), Duration::from_millis(14_542));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Downloader {
    mirrors: Vec<String>,
    expected: Vec<Expected>,
    connect_timeout: Duration,
    read_timeout: Duration,
    min_throughput: u64,
    grace: Duration,
}

impl Downloader {
    /// A downloader trying `mirrors` (base URLs; a file's URL is the base, a `/`, the file name)
    /// in order, with no files yet: record each with [`expected`](Self::expected).
    pub fn new<S: Into<String>>(mirrors: impl IntoIterator<Item = S>) -> Self {
        Downloader {
            mirrors: mirrors.into_iter().map(Into::into).collect(),
            expected: Vec::new(),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(30),
            min_throughput: 32 * 1024,
            grace: Duration::from_secs(30),
        }
    }

    /// Records the MD5 (hex) and the size in bytes that `file` must have; a file without an
    /// MD5 is never downloaded. A mirror whose `Content-Length` differs from `size` is skipped
    /// before its body is read, and one that sends more than `size` bytes is cut off at once.
    pub fn expected(self, file: impl Into<String>, md5: impl Into<String>, size: u64) -> Self {
        self.record(file.into(), md5.into(), Some(size))
    }

    /// Records the MD5 (hex) that `file` must have, without a size: then the `Content-Length`
    /// the server sends bounds the download, or else 1 GiB. Prefer
    /// [`expected`](Self::expected), which bounds it before the server says anything.
    pub fn checksum(self, file: impl Into<String>, md5: impl Into<String>) -> Self {
        self.record(file.into(), md5.into(), None)
    }

    fn record(mut self, file: String, md5: String, size: Option<u64>) -> Self {
        self.expected.retain(|e| e.file != file);
        self.expected.push(Expected {
            file,
            md5: md5.to_ascii_lowercase(),
            size,
        });
        self
    }

    /// Sets how long connecting to a mirror may take, and how long a read may wait for bytes
    /// (a stalled transfer), before that mirror counts as failed. Defaults: 15 s and 30 s.
    pub fn timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self
    }

    /// Sets the slowest transfer accepted, in bytes per second (default 32 KiB/s): a file
    /// must arrive within the [`grace`](Self::grace) period plus its size at this rate.
    ///
    /// # Panics
    ///
    /// If `bytes_per_second` is 0 (a download without a deadline).
    pub fn min_throughput(mut self, bytes_per_second: u64) -> Self {
        assert!(
            bytes_per_second > 0,
            "Downloader::min_throughput: the rate must be positive, found 0"
        );
        self.min_throughput = bytes_per_second;
        self
    }

    /// Sets the fixed part of every download's deadline (default 30 s): connecting, the
    /// server's first answer and slow starts.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The time a download of `size` bytes may take from its request to its last byte: the
    /// grace period plus `size` at the minimum throughput.
    pub fn deadline(&self, size: u64) -> Duration {
        let transfer = Duration::from_secs_f64(size as f64 / self.min_throughput as f64);
        self.grace.saturating_add(transfer)
    }

    /// The mirrors, in the order they are tried.
    pub fn mirrors(&self) -> &[String] {
        &self.mirrors
    }

    /// The MD5 recorded for `file`, if any.
    pub fn expected_md5(&self, file: &str) -> Option<&str> {
        self.find(file).map(|e| e.md5.as_str())
    }

    /// The size recorded for `file`, if any.
    pub fn expected_size(&self, file: &str) -> Option<u64> {
        self.find(file).and_then(|e| e.size)
    }

    fn find(&self, file: &str) -> Option<&Expected> {
        self.expected.iter().find(|e| e.file == file)
    }

    /// The URL of `file` on each mirror, in the order they are tried.
    pub fn urls(&self, file: &str) -> Vec<String> {
        self.mirrors
            .iter()
            .map(|base| format!("{}/{file}", base.trim_end_matches('/')))
            .collect()
    }
}

#[cfg(feature = "download")]
mod fetch {
    use std::fs;
    use std::io::{self, IsTerminal, Read, Write};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use indicatif::{ProgressBar, ProgressStyle};
    use md5::{Digest, Md5};

    use super::{Downloader, Expected, UNKNOWN_SIZE_LIMIT};
    use crate::error::{Error, Result};
    use crate::util::atomic_file::AtomicFile;

    impl Downloader {
        /// Downloads `file` into `dir` (created if needed) and returns its path.
        ///
        /// Mirrors are tried in order; a mirror that fails — unreachable, an HTTP error, a
        /// `Content-Length` other than the recorded size, more bytes than that size, a body
        /// cut short, a missed deadline, a checksum that does not match — is noted and the
        /// next one is tried. The bytes are written atomically (see
        /// [`AtomicFile`](crate::io::AtomicFile)) and put in place only once complete and
        /// verified, so `dir` never holds a partial file, even if the process is killed. A
        /// progress bar is drawn when stderr is a terminal.
        ///
        /// # Errors
        ///
        /// [`Error::Config`] if no checksum is recorded for `file`; [`Error::Download`],
        /// listing each URL tried and why it failed, if no mirror delivered it;
        /// [`Error::Io`] if `dir` cannot be created or written.
        ///
        /// # Examples
        ///
        /// ```no_run
        /// use striate::data::Mnist;
        ///
        /// let path = Mnist::downloader().fetch("t10k-labels-idx1-ubyte.gz", "data/mnist".as_ref())?;
        /// # Ok::<(), striate::Error>(())
        /// ```
        pub fn fetch(&self, file: &str, dir: &Path) -> Result<PathBuf> {
            let expected = self.find(file).ok_or_else(|| {
                Error::Config(format!(
                    "no checksum recorded for {file}: a download cannot be verified without one"
                ))
            })?;
            fs::create_dir_all(dir).map_err(|e| Error::io_at(dir, e))?;
            let target = dir.join(file);
            let mut attempts = Vec::new();
            for url in self.urls(file) {
                match self.fetch_one(&url, expected, &target) {
                    Ok(()) => return Ok(target),
                    Err(Failure::Local(error)) => return Err(error),
                    Err(Failure::Remote(reason)) => attempts.push(format!("{url}: {reason}")),
                }
            }
            Err(Error::Download {
                file: file.to_string(),
                attempts,
            })
        }

        fn fetch_one(&self, url: &str, expected: &Expected, target: &Path) -> Result<(), Failure> {
            let start = Instant::now();
            // Until the server says how long the body is, the recorded size (or the limit for
            // files of unknown size) bounds the time.
            let mut limit = expected.size.unwrap_or(UNKNOWN_SIZE_LIMIT);
            let mut deadline = self.deadline(limit);
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_connect(Some(self.connect_timeout))
                .timeout_per_read(Some(self.read_timeout))
                .timeout_global(Some(deadline))
                .build()
                .into();
            let response = agent
                .get(url)
                .call()
                .map_err(|e| Failure::Remote(e.to_string()))?;
            let declared: Option<u64> = response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            match (expected.size, declared) {
                (Some(size), Some(declared)) if declared != size => {
                    return Err(Failure::Remote(format!(
                        "wrong size: expected {size} bytes, found Content-Length {declared} \
                         (nothing downloaded)"
                    )));
                }
                (None, Some(declared)) if declared > UNKNOWN_SIZE_LIMIT => {
                    return Err(Failure::Remote(format!(
                        "too large: expected at most {UNKNOWN_SIZE_LIMIT} bytes, found \
                         Content-Length {declared} (nothing downloaded)"
                    )));
                }
                (None, Some(declared)) => {
                    limit = declared;
                    deadline = self.deadline(limit);
                }
                _ => {}
            }
            let mut body = response.into_body().into_reader();
            let progress = progress_bar(target, limit);

            let local = |e: io::Error| Failure::Local(Error::io_at(target, e));
            let mut out = AtomicFile::create(target).map_err(Failure::Local)?;
            let mut hasher = Md5::new();
            let mut received: u64 = 0;
            let mut buffer = vec![0u8; 1 << 16];
            let of = declared.map_or(String::new(), |d| format!(" of {d}"));
            loop {
                if start.elapsed() > deadline {
                    return Err(Failure::Remote(self.too_slow(received, limit, deadline)));
                }
                let n = match body.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) if start.elapsed() >= deadline => {
                        return Err(Failure::Remote(self.too_slow(received, limit, deadline)));
                    }
                    Err(e) => {
                        return Err(Failure::Remote(format!(
                            "transfer failed after {received}{of} bytes: {e}"
                        )));
                    }
                };
                if received + n as u64 > limit {
                    return Err(Failure::Remote(format!(
                        "too long: expected {limit} bytes, found more (stopped after {})",
                        received + n as u64
                    )));
                }
                hasher.update(&buffer[..n]);
                out.write_all(&buffer[..n]).map_err(local)?;
                received += n as u64;
                progress.inc(n as u64);
            }
            progress.finish_and_clear();
            // The client checks this too; checking here keeps the guarantee whatever it does.
            if let Some(declared) = declared.filter(|&d| d != received) {
                return Err(Failure::Remote(format!(
                    "body cut short: expected {declared} bytes, found {received}"
                )));
            }
            if let Some(size) = expected.size.filter(|&s| s != received) {
                return Err(Failure::Remote(format!(
                    "body cut short: expected {size} bytes, found {received}"
                )));
            }
            let found = hex(&hasher.finalize());
            if found != expected.md5 {
                return Err(Failure::Remote(format!(
                    "checksum mismatch: expected MD5 {}, found {found} ({received} bytes)",
                    expected.md5
                )));
            }
            out.commit().map_err(Failure::Local)
        }

        fn too_slow(&self, received: u64, limit: u64, deadline: Duration) -> String {
            format!(
                "too slow: {received} of {limit} bytes within the deadline of {:.1} s \
                 ({:.1} s grace, then at least {} bytes/s)",
                deadline.as_secs_f64(),
                self.grace.as_secs_f64(),
                self.min_throughput
            )
        }
    }

    /// Why one mirror did not deliver: its fault (try the next) or ours (stop).
    enum Failure {
        Remote(String),
        Local(Error),
    }

    /// A bar for a download of `len` bytes on a terminal; a hidden one otherwise.
    fn progress_bar(target: &Path, len: u64) -> ProgressBar {
        if !io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        bar.set_message(name.into_owned());
        bar
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
