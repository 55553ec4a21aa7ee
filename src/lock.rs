//! One run at a time: an exclusive `flock` on the lock file, waited for a bounded time.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Taking the lock failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be opened.
    #[error("cannot open lock file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another run held the lock for the whole wait.
    #[error("another cf-allowlist run holds {path}; gave up after waiting {waited}s")]
    Busy {
        /// The file.
        path: PathBuf,
        /// How long we waited.
        waited: u64,
    },
}

/// Holds the lock until dropped (closing the file releases it).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// How a run takes the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A run that may change something: the file (and its directory) is created when missing,
    /// mode 0600 whatever the umask.
    Create,
    /// A dry run, which writes nothing anywhere: a missing file means no run holds it, so there
    /// is nothing to wait for and nothing is created.
    IfPresent,
}

impl Mode {
    /// [`Mode::IfPresent`] for a dry run, else [`Mode::Create`].
    pub fn for_dry_run(dry_run: bool) -> Mode {
        if dry_run {
            Mode::IfPresent
        } else {
            Mode::Create
        }
    }
}

/// Takes the lock, waiting up to `timeout` for another run to finish; `None` when `mode` is
/// [`Mode::IfPresent`] and there is no lock file. A lock file that is a symbolic link is refused
/// (a run as root would otherwise create or lock whatever it points at).
pub fn acquire(path: &Path, timeout: Duration, mode: Mode) -> Result<Option<RunLock>, LockError> {
    let mut options = OpenOptions::new();
    options.custom_flags(libc::O_NOFOLLOW);
    match mode {
        Mode::Create => {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            options.create(true).truncate(false).write(true).mode(0o600);
        }
        // flock works on a descriptor opened for reading.
        Mode::IfPresent => {
            options.read(true);
        }
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if mode == Mode::IfPresent && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(source) => {
            return Err(LockError::Open {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let start = Instant::now();
    let mut logged = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(RunLock { _file: file })),
            Err(TryLockError::WouldBlock) => {
                if start.elapsed() >= timeout {
                    return Err(LockError::Busy {
                        path: path.to_path_buf(),
                        waited: timeout.as_secs(),
                    });
                }
                if !logged {
                    tracing::info!(lock = %path.display(), "another run is in progress; waiting");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::Error(source)) => {
                return Err(LockError::Open {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_waits_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = acquire(&path, Duration::from_secs(1), Mode::Create).unwrap();
        let err = acquire(&path, Duration::from_millis(300), Mode::Create).unwrap_err();
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
        // A dry run waits for a real one too.
        let err = acquire(&path, Duration::from_millis(300), Mode::IfPresent).unwrap_err();
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
        drop(held);
        acquire(&path, Duration::from_millis(300), Mode::Create).unwrap();
    }

    #[test]
    fn the_lock_file_is_private_and_never_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/lock");
        drop(acquire(&path, Duration::from_secs(1), Mode::Create).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let target = dir.path().join("elsewhere");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for mode in [Mode::Create, Mode::IfPresent] {
            let err = acquire(&link, Duration::from_secs(1), mode).unwrap_err();
            assert!(matches!(err, LockError::Open { .. }), "{err}");
        }
        assert!(!target.exists(), "nothing created through the link");
    }

    #[test]
    fn a_dry_run_creates_no_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/lock");
        let lock = acquire(&path, Duration::from_secs(1), Mode::IfPresent).unwrap();
        assert!(lock.is_none());
        assert!(!dir.path().join("run").exists(), "no directory, no file");
        drop(acquire(&path, Duration::from_secs(1), Mode::Create).unwrap());
        assert!(acquire(&path, Duration::from_secs(1), Mode::IfPresent)
            .unwrap()
            .is_some());
    }
}
