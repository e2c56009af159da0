//! Fetching dataset files from a list of mirrors, each file checked against its published MD5.

use std::time::Duration;

/// Where dataset files are downloaded from and the MD5 each must have: mirrors are tried in
/// order until one serves a file whose checksum matches.
///
/// # Examples
///
/// ```
/// use striate::data::{Downloader, Mnist};
///
/// // The official configuration, or one pointing at your own mirror.
/// assert!(Mnist::downloader().mirrors()[0].starts_with("https://"));
/// let local = Downloader::new(["http://127.0.0.1:8000/mnist/"])
///     .checksum("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c");
/// assert_eq!(local.urls("t10k-labels-idx1-ubyte.gz"), ["http://127.0.0.1:8000/mnist/t10k-labels-idx1-ubyte.gz"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Downloader {
    mirrors: Vec<String>,
    checksums: Vec<(String, String)>,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl Downloader {
    /// A downloader trying `mirrors` (base URLs; a file's URL is the base, a `/`, the file name)
    /// in order, with no checksums yet: add one per file with [`checksum`](Self::checksum).
    pub fn new<S: Into<String>>(mirrors: impl IntoIterator<Item = S>) -> Self {
        Downloader {
            mirrors: mirrors.into_iter().map(Into::into).collect(),
            checksums: Vec::new(),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(30),
        }
    }

    /// Records the MD5 (hex) that `file` must have; a file without one is never downloaded.
    pub fn checksum(mut self, file: impl Into<String>, md5: impl Into<String>) -> Self {
        let file = file.into();
        let md5 = md5.into().to_ascii_lowercase();
        self.checksums.retain(|(name, _)| *name != file);
        self.checksums.push((file, md5));
        self
    }

    /// Sets how long connecting to a mirror may take, and how long a read may wait for bytes
    /// (a stalled transfer), before that mirror counts as failed. Defaults: 15 s and 30 s.
    pub fn timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self
    }

    /// The mirrors, in the order they are tried.
    pub fn mirrors(&self) -> &[String] {
        &self.mirrors
    }

    /// The MD5 recorded for `file`, if any.
    pub fn expected_md5(&self, file: &str) -> Option<&str> {
        self.checksums
            .iter()
            .find(|(name, _)| name == file)
            .map(|(_, md5)| md5.as_str())
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
    use std::fs::{self, File};
    use std::io::{self, Read, Write};
    use std::path::{Path, PathBuf};

    use md5::{Digest, Md5};

    use super::Downloader;
    use crate::error::{Error, Result};

    impl Downloader {
        /// Downloads `file` into `dir` (created if needed) and returns its path.
        ///
        /// Mirrors are tried in order; a mirror that fails — unreachable, an HTTP error, a body
        /// cut short, a checksum that does not match — is noted and the next one is tried. The
        /// bytes go to a temporary file in `dir` that is renamed to `file` only once complete
        /// and verified, so `dir` never holds a partial file, whatever happens.
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
            let md5 = self.expected_md5(file).ok_or_else(|| {
                Error::Config(format!(
                    "no checksum recorded for {file}: a download cannot be verified without one"
                ))
            })?;
            fs::create_dir_all(dir).map_err(|e| Error::io_at(dir, e))?;
            let target = dir.join(file);
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_connect(Some(self.connect_timeout))
                .timeout_per_read(Some(self.read_timeout))
                .build()
                .into();
            let mut attempts = Vec::new();
            for url in self.urls(file) {
                match fetch_one(&agent, &url, md5, &target) {
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
    }

    /// Why one mirror did not deliver: its fault (try the next) or ours (stop).
    enum Failure {
        Remote(String),
        Local(Error),
    }

    /// A temporary file that is deleted unless it is renamed into place: every early return
    /// and every panic between creation and rename cleans up after itself.
    struct TempFile {
        path: PathBuf,
        file: Option<File>,
    }

    impl TempFile {
        fn create(target: &Path) -> Result<Self> {
            use std::sync::atomic::{AtomicU64, Ordering};
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let name = target.file_name().unwrap_or_default().to_string_lossy();
            // Unique per process and call, so concurrent downloads never share a temp file.
            let path = target.with_file_name(format!(
                ".{name}.{}-{}.part",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let file = File::create(&path).map_err(|e| Error::io_at(&path, e))?;
            Ok(TempFile {
                path,
                file: Some(file),
            })
        }

        fn persist(mut self, target: &Path) -> Result<()> {
            let file = self.file.take().expect("open until persisted");
            file.sync_all().map_err(|e| Error::io_at(&self.path, e))?;
            drop(file);
            fs::rename(&self.path, target).map_err(|e| Error::io_at(target, e))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            drop(self.file.take());
            let _ = fs::remove_file(&self.path);
        }
    }

    fn fetch_one(agent: &ureq::Agent, url: &str, md5: &str, target: &Path) -> Result<(), Failure> {
        let response = agent
            .get(url)
            .call()
            .map_err(|e| Failure::Remote(e.to_string()))?;
        let declared: Option<u64> = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut body = response.into_body().into_reader();

        let mut temp = TempFile::create(target).map_err(Failure::Local)?;
        let mut hasher = Md5::new();
        let mut received: u64 = 0;
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = match body.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let of = declared.map_or(String::new(), |d| format!(" of {d}"));
                    return Err(Failure::Remote(format!(
                        "transfer failed after {received}{of} bytes: {e}"
                    )));
                }
            };
            hasher.update(&buffer[..n]);
            let file = temp.file.as_mut().expect("open until persisted");
            file.write_all(&buffer[..n])
                .map_err(|e| Failure::Local(Error::io_at(&temp.path, e)))?;
            received += n as u64;
        }
        // The client checks this too; checking here keeps the guarantee whatever it does.
        if let Some(declared) = declared.filter(|&d| d != received) {
            return Err(Failure::Remote(format!(
                "body cut short: expected {declared} bytes, found {received}"
            )));
        }
        let found = hex(&hasher.finalize());
        if found != md5 {
            return Err(Failure::Remote(format!(
                "checksum mismatch: expected MD5 {md5}, found {found} ({received} bytes)"
            )));
        }
        temp.persist(target).map_err(Failure::Local)
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
