//! The one atomic file writer of the crate: a file appears whole, with its final content, or
//! not at all, and a process killed while writing leaves nothing behind.
//!
//! How, on Linux: the bytes go to an unnamed file (`O_TMPFILE`) in the target's directory, so
//! the same filesystem; [`AtomicFile::commit`] syncs it, gives it a name with `linkat`
//! (through `/proc/self/fd/N`, since `linkat` cannot replace a file), renames that name over
//! the target and syncs the directory. A process killed before the commit leaves no name at
//! all: the kernel frees the unnamed file with its last descriptor.
//!
//! Elsewhere, or where the filesystem has no `O_TMPFILE`, the bytes go to a named temporary
//! file `.<target name>.striate-<pid>-<n>.tmp` beside the target. A kill leaves that file, so
//! every write in a directory first removes the ones whose owner process is gone (on Unix;
//! other systems cannot tell and keep them). The same clean-up covers the instant between
//! `linkat` and `rename` on Linux, when the unnamed file briefly has such a name.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// What a named temporary file's name has between the target's name and the owner's pid.
const TEMP_MARK: &str = ".striate-";
/// How a named temporary file's name ends.
const TEMP_SUFFIX: &str = ".tmp";
/// Symbolic links followed before giving up (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// How the temporary file is kept until the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// An unnamed file (`O_TMPFILE`) where the platform and filesystem offer one, else a named
    /// temporary file.
    Best,
    /// Always a named temporary file (the fallback, chosen explicitly to test it).
    #[cfg_attr(not(test), allow(dead_code))]
    Named,
}

/// A file being written atomically: `write_all` into it, then [`commit`](Self::commit).
/// Dropped without a commit, it discards everything and the target is unchanged.
///
/// The target keeps its permissions when it exists (a `0600` file stays `0600`); a new file
/// gets `0666` less the umask, as `File::create` gives. The owner is the writing process's
/// user either way (the file is a new one, renamed into place). A symbolic link is followed: the file
/// it points to is replaced and the link stays a link, as most editors do (a dangling link
/// makes its target appear).
///
/// Errors name the path given to [`create`](Self::create), never the temporary file's.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use striate::io::AtomicFile;
///
/// let path = std::env::temp_dir().join(format!("striate-doc-atomic-{}.txt", std::process::id()));
/// let mut file = AtomicFile::create(&path)?;
/// file.write_all(b"all or nothing")?;
/// file.commit()?;
/// assert_eq!(std::fs::read(&path)?, b"all or nothing");
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AtomicFile {
    /// The path as the caller gave it, for messages.
    path: PathBuf,
    /// The file that is replaced: `path` with symbolic links followed.
    destination: PathBuf,
    /// The directory of `destination`.
    dir: PathBuf,
    file: File,
    /// The temporary file's name, if it has one (the fallback); `None` for an unnamed file.
    temp: Option<PathBuf>,
    committed: bool,
}

impl AtomicFile {
    /// Starts writing `path` atomically; nothing is visible at `path` until
    /// [`commit`](Self::commit).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming `path` if its directory cannot be written or `path` is a directory
    /// or a loop of symbolic links.
    pub fn create(path: impl AsRef<Path>) -> Result<AtomicFile> {
        Self::create_with(path.as_ref(), Strategy::Best)
    }

    pub(crate) fn create_with(path: &Path, strategy: Strategy) -> Result<AtomicFile> {
        let fail = |e: io::Error| Error::io_at(path, e);
        let destination = resolve_symlinks(path).map_err(fail)?;
        let Some(name) = destination.file_name().map(OsString::from) else {
            return Err(fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file path",
            )));
        };
        let dir = match destination.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Permissions to keep; `None` for a new file, which gets 0666 less the umask.
        let existing = match fs::metadata(&destination) {
            Ok(meta) if meta.is_dir() => {
                return Err(fail(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "is a directory",
                )));
            }
            Ok(meta) => Some(meta.permissions()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(fail(e)),
        };
        remove_stale_temporaries(&dir);

        let unnamed = match strategy {
            Strategy::Best => open_unnamed(&dir).map_err(fail)?,
            Strategy::Named => None,
        };
        let (file, temp) = match unnamed {
            Some(file) => (file, None),
            None => {
                let (file, temp) = open_named(&dir, &name).map_err(fail)?;
                (file, Some(temp))
            }
        };
        let atomic = AtomicFile {
            path: path.to_path_buf(),
            destination,
            dir,
            file,
            temp,
            committed: false,
        };
        if let Some(permissions) = existing {
            atomic.file.set_permissions(permissions).map_err(fail)?;
        }
        Ok(atomic)
    }

    /// The path given to [`create`](Self::create), which errors name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the written bytes the content of the path: syncs the file to disk, puts it in
    /// place of the target in one rename, and syncs the directory so the rename survives a
    /// power cut.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the path if the data cannot be synced or the file cannot be put
    /// in place; the target is then unchanged and nothing is left behind. (If only the final
    /// sync of the directory fails, the new content is in place but may not survive a power
    /// cut; that too is an error.)
    pub fn commit(mut self) -> Result<()> {
        let path = self.path.clone();
        let fail = |e: io::Error| Error::io_at(&path, e);
        self.file.flush().map_err(fail)?;
        self.file.sync_all().map_err(fail)?;
        let temp = match &self.temp {
            Some(temp) => temp.clone(),
            None => {
                let name = self.destination.file_name().unwrap_or_default();
                let temp = link_unnamed(&self.file, &self.dir, name).map_err(fail)?;
                // From here a failure must remove the name just given.
                self.temp = Some(temp.clone());
                temp
            }
        };
        fs::rename(&temp, &self.destination).map_err(fail)?;
        self.committed = true;
        sync_dir(&self.dir).map_err(fail)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed
            && let Some(temp) = &self.temp
        {
            let _ = fs::remove_file(temp);
        }
    }
}

/// Writes `bytes` to `path` atomically (see [`AtomicFile`]): afterwards `path` holds exactly
/// `bytes`, or, on error, what it held before.
///
/// # Errors
///
/// [`Error::Io`] naming `path` if it cannot be written.
///
/// # Examples
///
/// ```
/// let path = std::env::temp_dir().join(format!("striate-doc-write-{}.txt", std::process::id()));
/// striate::io::write_atomically(&path, b"whole")?;
/// assert_eq!(std::fs::read(&path)?, b"whole");
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_atomically(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).map_err(|e| Error::io_at(path, e))?;
    file.commit()
}

/// `path` with every symbolic link followed, also in the last component of a link's target;
/// a dangling link resolves to the missing file it names.
fn resolve_symlinks(path: &Path) -> io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&current)?;
                current = match current.parent() {
                    Some(parent) => parent.join(target),
                    None => target,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(io::Error::other(format!(
        "more than {MAX_SYMLINKS} symbolic links to follow"
    )))
}

/// A named temporary file beside the target, created exclusively.
fn open_named(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(File, PathBuf)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let temp = dir.join(temp_name(name, NEXT.fetch_add(1, Ordering::Relaxed)));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((file, temp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `.<name>.striate-<pid>-<n>.tmp`: hidden, and recognisable as ours with its owner's pid.
fn temp_name(name: &std::ffi::OsStr, n: u64) -> OsString {
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(
        "{TEMP_MARK}{}-{n}{TEMP_SUFFIX}",
        std::process::id()
    ));
    temp
}

/// The pid in a name made by [`temp_name`], if it is one.
fn temp_owner(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    let (_, tail) = rest.rsplit_once(TEMP_MARK)?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Removes the temporary files in `dir` left by processes that no longer run (killed while
/// writing). Best effort: a directory that cannot be listed is left alone.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_owner) else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // SAFETY: kill with signal 0 only checks whether the process exists; it sends nothing.
    let status = unsafe { libc::kill(pid, 0) };
    // EPERM: it exists but belongs to someone else.
    status == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    // Without a way to ask, every owner counts as alive: nothing is removed that may be in use.
    true
}

/// An unnamed file in `dir`, or `None` where the platform or filesystem has none.
#[cfg(target_os = "linux")]
fn open_unnamed(dir: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    // linkat needs /proc/self/fd to name the file without privileges.
    if !Path::new("/proc/self/fd").is_dir() {
        return Ok(None);
    }
    let opened = OpenOptions::new()
        .write(true)
        .mode(0o666)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match opened {
        Ok(file) => Ok(Some(file)),
        // Kernels and filesystems without O_TMPFILE answer with one of these.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOSYS)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_unnamed(_dir: &Path) -> io::Result<Option<File>> {
    Ok(None)
}

/// Gives the unnamed `file` a temporary name in `dir` and returns it.
#[cfg(target_os = "linux")]
fn link_unnamed(file: &File, dir: &Path, name: &std::ffi::OsStr) -> io::Result<PathBuf> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let source =
        CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL in a number");
    loop {
        let temp = dir.join(temp_name(name, NEXT.fetch_add(1, Ordering::Relaxed)));
        let target = CString::new(temp.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        // SAFETY: both paths are NUL-terminated strings that outlive the call.
        let status = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                source.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if status == 0 {
            return Ok(temp);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::AlreadyExists {
            return Err(error);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn link_unnamed(_file: &File, _dir: &Path, _name: &std::ffi::OsStr) -> io::Result<PathBuf> {
    unreachable!("unnamed files are only opened on Linux")
}

/// Syncs a directory, so a rename in it is on disk.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories cannot be opened as files here; the rename is as durable as the OS makes it.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty directory under the system temp dir.
    fn temp_dir(tag: &str) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("striate-atomic-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn write_with(path: &Path, strategy: Strategy, bytes: &[u8]) -> Result<()> {
        let mut file = AtomicFile::create_with(path, strategy)?;
        file.write_all(bytes).unwrap();
        file.commit()
    }

    #[test]
    fn both_strategies_write_whole_files_and_leave_nothing_else() {
        for strategy in [Strategy::Best, Strategy::Named] {
            let dir = temp_dir("whole");
            let target = dir.join("out.bin");
            write_with(&target, strategy, b"first").unwrap();
            write_with(&target, strategy, b"second").unwrap();
            assert_eq!(fs::read(&target).unwrap(), b"second");
            // Dropped uncommitted: the target is unchanged and nothing is left.
            let mut file = AtomicFile::create_with(&target, strategy).unwrap();
            file.write_all(b"discarded").unwrap();
            drop(file);
            assert_eq!(fs::read(&target).unwrap(), b"second");
            assert_eq!(listing(&dir), ["out.bin"], "{strategy:?}");
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_writes_through_an_unnamed_file() {
        let dir = temp_dir("unnamed");
        let file = AtomicFile::create(dir.join("x")).unwrap();
        assert!(
            file.temp.is_none(),
            "O_TMPFILE unsupported in {}",
            dir.display()
        );
        assert!(listing(&dir).is_empty());
        drop(file);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_given_path() {
        let dir = temp_dir("errors");
        let in_missing_dir = dir.join("no-such-dir").join("w.safetensors");
        let blocked = dir.join("blocked");
        fs::create_dir_all(blocked.join("inner")).unwrap();
        for strategy in [Strategy::Best, Strategy::Named] {
            for path in [&in_missing_dir, &blocked] {
                match write_with(path, strategy, b"x") {
                    Err(Error::Io { path: Some(p), .. }) => assert_eq!(&p, path),
                    other => panic!("expected an I/O error naming {path:?}, got {other:?}"),
                }
            }
        }
        assert_eq!(listing(&dir), ["blocked"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn permissions_of_an_existing_file_are_kept_and_new_files_follow_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        for strategy in [Strategy::Best, Strategy::Named] {
            let dir = temp_dir("modes");
            let secret = dir.join("secret");
            fs::write(&secret, b"old").unwrap();
            fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
            write_with(&secret, strategy, b"new").unwrap();
            let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{strategy:?}");

            // A new file gets what File::create gives: 0666 less the umask.
            let reference = dir.join("reference");
            File::create(&reference).unwrap();
            let fresh = dir.join("fresh");
            write_with(&fresh, strategy, b"x").unwrap();
            let mode_of = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode_of(&fresh), mode_of(&reference), "{strategy:?}");
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_written_through_and_stays_a_link() {
        for strategy in [Strategy::Best, Strategy::Named] {
            let dir = temp_dir("symlink");
            fs::create_dir_all(dir.join("real")).unwrap();
            let real = dir.join("real").join("weights");
            fs::write(&real, b"old").unwrap();
            let link = dir.join("link");
            std::os::unix::fs::symlink("real/weights", &link).unwrap();
            write_with(&link, strategy, b"new").unwrap();
            assert!(
                fs::symlink_metadata(&link)
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );
            assert_eq!(fs::read(&real).unwrap(), b"new");
            assert_eq!(listing(&dir.join("real")), ["weights"]);

            // A dangling link makes its target appear.
            let dangling = dir.join("dangling");
            std::os::unix::fs::symlink("real/later", &dangling).unwrap();
            write_with(&dangling, strategy, b"later").unwrap();
            assert_eq!(fs::read(dir.join("real").join("later")).unwrap(), b"later");
            assert!(
                fs::symlink_metadata(&dangling)
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );

            // A loop of links is an error naming the given path.
            std::os::unix::fs::symlink("loop-b", dir.join("loop-a")).unwrap();
            std::os::unix::fs::symlink("loop-a", dir.join("loop-b")).unwrap();
            match write_with(&dir.join("loop-a"), strategy, b"x") {
                Err(Error::Io { path: Some(p), .. }) => assert_eq!(p, dir.join("loop-a")),
                other => panic!("expected an I/O error, got {other:?}"),
            }
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn temporary_names_carry_their_owner() {
        let name = temp_name("train.ckpt".as_ref(), 7);
        assert_eq!(temp_owner(name.to_str().unwrap()), Some(std::process::id()));
        assert_eq!(temp_owner(".train.ckpt.tmp"), None);
        assert_eq!(temp_owner("train.ckpt"), None);
        assert_eq!(temp_owner(".a.striate-12-x.tmp"), None);
    }

    /// The environment variable that turns [`child_writer`] into a writer to be killed.
    const CHILD_ENV: &str = "STRIATE_ATOMIC_CHILD";

    /// Not a test of its own: re-run by the kill tests in a child process, with
    /// `STRIATE_ATOMIC_CHILD=<strategy>:<path>`, it writes a big file forever.
    #[test]
    fn child_writer() {
        let Ok(spec) = std::env::var(CHILD_ENV) else {
            return;
        };
        let (strategy, path) = spec.split_once(':').unwrap();
        let strategy = match strategy {
            "named" => Strategy::Named,
            _ => Strategy::Best,
        };
        let mut file = AtomicFile::create_with(Path::new(path), strategy).unwrap();
        let chunk = vec![0x5a; 1 << 16];
        // Signal the parent once bytes are on their way, then write until killed (at most
        // 64 MB/s, to spare the disk of a shared machine).
        fs::write(format!("{path}.started"), b"").unwrap();
        loop {
            file.write_all(&chunk).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Starts a child writing `path` with `strategy` ("best" or "named"), waits until it has
    /// written some megabytes, and kills it with SIGKILL.
    #[cfg(unix)]
    fn kill_a_writer(path: &Path, strategy: &str) {
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};
        let started = PathBuf::from(format!("{}.started", path.display()));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "util::atomic_file::tests::child_writer",
                "--nocapture",
            ])
            .env(CHILD_ENV, format!("{strategy}:{}", path.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !started.exists() {
            assert!(Instant::now() < deadline, "the child writer never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Let it write some megabytes.
        std::thread::sleep(Duration::from_millis(150));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        fs::remove_file(started).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_killed_writer_leaves_nothing_behind() {
        let dir = temp_dir("kill");
        let target = dir.join("big.bin");
        fs::write(&target, b"before").unwrap();
        for _ in 0..3 {
            kill_a_writer(&target, "best");
            assert_eq!(listing(&dir), ["big.bin"]);
            assert_eq!(fs::read(&target).unwrap(), b"before");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_fallback_removes_what_a_killed_writer_left() {
        let dir = temp_dir("stale");
        let target = dir.join("big.bin");
        kill_a_writer(&target, "named");
        let left = listing(&dir);
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].starts_with(".big.bin.striate-"), "{left:?}");
        let size = fs::metadata(dir.join(&left[0])).unwrap().len();
        println!("the killed writer left {} ({size} bytes)", left[0]);
        assert!(size > 0);
        // A temporary file of this (running) process is not touched; the dead one's is.
        let mine = dir.join(temp_name("other".as_ref(), 99));
        fs::write(&mine, b"in use").unwrap();
        write_with(&dir.join("next"), Strategy::Named, b"x").unwrap();
        let mut expected = vec![mine.file_name().unwrap().to_string_lossy().into_owned()];
        expected.push("next".into());
        expected.sort();
        assert_eq!(listing(&dir), expected);
        fs::remove_dir_all(&dir).unwrap();
    }
}
