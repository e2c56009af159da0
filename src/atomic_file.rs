//! Writing a file so that it appears whole or not at all: the bytes go to a temporary file in
//! the same directory (same filesystem, so the rename is atomic), which is synced and then
//! renamed over the target. A failure at any point removes the temporary file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically.
///
/// # Errors
///
/// [`Error::Io`] naming the path if the temporary file cannot be created, written, synced or
/// renamed; nothing is left behind in that case.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = temporary_path(path);
    let result = (|| {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&temporary);
        Error::io_at(path, e)
    })
}

/// A sibling of `path` that no other writer in this process uses: `.<name>.<pid>.<n>.tmp`.
fn temporary_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unique = format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    path.with_file_name(unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_cleans_up_on_failure() {
        let dir = std::env::temp_dir().join(format!("striate-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("out.txt");
        write_atomically(&target, b"hello").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"hello");
        // A directory in the way makes the rename fail: the error names the target and no
        // temporary file remains.
        let blocked = dir.join("blocked");
        fs::create_dir_all(blocked.join("inner")).unwrap();
        let err = write_atomically(&blocked, b"x").unwrap_err();
        assert!(err.to_string().contains("blocked"), "{err}");
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
