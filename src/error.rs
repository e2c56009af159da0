//! `Error`: the only home of `Result` in striate.
//!
//! A broken shape contract is a programmer error and panics (see [`crate::tensor::check`]).
//! Anything that comes from outside the program — files, downloads, weights, configuration —
//! returns `Result<_, Error>`, and every variant says what was expected and what was found.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The error type of every fallible operation in striate.
///
/// Its `Debug` form is its message (as anyhow's and eyre's errors), so `fn main() ->
/// striate::Result<()>` prints what went wrong in words, not as a struct dump:
///
/// ```
/// let error = striate::Error::invalid_data("labels.idx", "magic 2049", "magic 2051");
/// assert_eq!(format!("{error:?}"), "labels.idx: expected magic 2049, found magic 2051");
/// ```
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error, with the path it happened on when there is one.
    Io {
        /// The file or directory involved, if known.
        path: Option<PathBuf>,
        /// The underlying error.
        source: io::Error,
    },
    /// Data that does not have the expected form: a corrupt or truncated file, a bad header,
    /// a buffer whose length does not match its shape.
    InvalidData {
        /// Where the data came from (a file name, `"from_vec"`, ...).
        origin: String,
        /// What was expected.
        expected: String,
        /// What was found instead.
        found: String,
    },
    /// A download that failed on every mirror; each attempt is listed with its reason (a
    /// checksum or size that differs from the published one is such a reason).
    Download {
        /// The file that could not be fetched.
        file: String,
        /// One line per mirror tried: the URL and why it failed.
        attempts: Vec<String>,
    },
    /// A dataset found in none of the places searched, and not downloaded.
    ///
    /// Its message says where the files were looked for, which files are needed and where to
    /// download them, so a program can stop with it and the user knows what to do.
    DatasetNotFound {
        /// What was looked for, such as `"MNIST (train)"`.
        dataset: String,
        /// One line per place searched: the directory and why it did not qualify.
        searched: Vec<String>,
        /// The file names the dataset consists of.
        files: Vec<String>,
        /// Where the files can be downloaded from.
        urls: Vec<String>,
        /// Why the download failed; `None` if no download was attempted.
        download: Option<Box<Error>>,
    },
    /// A request that the environment refused, such as configuring the thread pool twice.
    Config(String),
    /// Replicas of a data-parallel job that cannot train together (different models, data or
    /// run lengths, a checkpoint of another world size), or a group that could not be set up.
    /// The message names the ranks involved.
    Distributed(String),
    /// A state dict that does not fit what it is loaded into. Every problem is listed, and
    /// nothing was loaded.
    StateDict {
        /// What the state was loaded into (`"Adam"`, a model).
        target: String,
        /// Keys the target needs that the state dict lacks.
        missing: Vec<String>,
        /// Keys in the state dict that the target has no place for.
        unexpected: Vec<String>,
        /// Keys whose tensor does not fit, each as `key: expected ..., found ...`.
        mismatched: Vec<String>,
    },
    /// Training or evaluation asked to run on no data: an empty dataset, or `drop_last` with
    /// fewer samples than one batch. A loss and accuracy of 0 would look like a result.
    EmptyData {
        /// What found no data, such as `"Fit::run: the training loader"`.
        what: String,
    },
    /// A quantity computed during training (a loss, a gradient norm) that is NaN or infinite.
    /// With anomaly detection on, `what` names the op and layer where the first non-finite
    /// value appeared.
    NonFinite {
        /// What was computed, such as `"total gradient norm"`.
        what: String,
        /// The value found.
        value: f32,
    },
    /// A request that striate cannot carry out for this input, such as exporting a layer that
    /// has no ONNX form.
    Unsupported {
        /// What was asked, such as `"ONNX export"`.
        operation: String,
        /// What it could not be done for, such as a layer's type name.
        what: String,
    },
}

impl Error {
    /// Builds an [`Error::InvalidData`].
    pub fn invalid_data(
        origin: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Error::InvalidData {
            origin: origin.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// Builds an [`Error::Unsupported`].
    pub fn unsupported(operation: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Unsupported {
            operation: operation.into(),
            what: what.into(),
        }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io_at(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: Some(path.into()),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io {
                path: Some(path),
                source,
            } => write!(f, "{}: {source}", path.display()),
            Error::Io { path: None, source } => write!(f, "I/O error: {source}"),
            Error::InvalidData {
                origin,
                expected,
                found,
            } => write!(f, "{origin}: expected {expected}, found {found}"),
            Error::Download { file, attempts } => {
                write!(f, "could not download {file} from any mirror")?;
                for attempt in attempts {
                    write!(f, "\n  {attempt}")?;
                }
                Ok(())
            }
            Error::DatasetNotFound {
                dataset,
                searched,
                files,
                urls,
                download,
            } => {
                write!(f, "{dataset} not found. Searched:")?;
                for place in searched {
                    write!(f, "\n  {place}")?;
                }
                match download {
                    Some(error) => write!(f, "\nDownload failed: {error}")?,
                    None => write!(f, "\nNo download was attempted (downloads are off).")?,
                }
                write!(
                    f,
                    "\nPut the files {} in one of the directories above. Download them from:",
                    files.join(", ")
                )?;
                for url in urls {
                    write!(f, "\n  {url}")?;
                }
                Ok(())
            }
            Error::Config(message) | Error::Distributed(message) => f.write_str(message),
            Error::StateDict {
                target,
                missing,
                unexpected,
                mismatched,
            } => {
                write!(f, "cannot load state into {target}")?;
                let mut sep = ": ";
                for (label, keys) in [
                    ("missing keys", missing),
                    ("unexpected keys", unexpected),
                    ("mismatched", mismatched),
                ] {
                    if !keys.is_empty() {
                        write!(f, "{sep}{label} {}", keys.join(", "))?;
                        sep = "; ";
                    }
                }
                Ok(())
            }
            Error::EmptyData { what } => write!(
                f,
                "{what} yields no samples (an empty dataset, or drop_last with fewer samples \
                 than one batch)"
            ),
            Error::NonFinite { what, value } => write!(f, "{what} is not finite ({value})"),
            Error::Unsupported { operation, what } => write!(f, "{operation}: unsupported {what}"),
        }
    }
}

/// The message, as `Display`: this is what a `main` returning `Result` prints on error.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::DatasetNotFound {
                download: Some(error),
                ..
            } => Some(error.as_ref()),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(source: io::Error) -> Self {
        Error::Io { path: None, source }
    }
}

/// `Result` with [`Error`] as its error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_expected_and_found() {
        let e = Error::invalid_data("train-images-idx3-ubyte", "magic 2051", "magic 2049");
        assert_eq!(
            e.to_string(),
            "train-images-idx3-ubyte: expected magic 2051, found magic 2049"
        );
        let e = Error::Download {
            file: "t10k-labels".into(),
            attempts: vec!["http://a: 404".into(), "http://b: timeout".into()],
        };
        assert!(e.to_string().contains("\n  http://b: timeout"));
        let e = Error::StateDict {
            target: "Adam".into(),
            missing: vec!["a.step".into()],
            unexpected: vec!["b.step".into(), "c".into()],
            mismatched: vec![],
        };
        assert_eq!(
            e.to_string(),
            "cannot load state into Adam: missing keys a.step; unexpected keys b.step, c"
        );
    }
}
