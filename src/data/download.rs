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
