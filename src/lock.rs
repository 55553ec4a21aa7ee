//! One run at a time: an exclusive `flock` on the lock file, waited for a bounded time.

use std::fs::{File, OpenOptions, TryLockError};
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

/// Takes the lock, waiting up to `timeout` for another run to finish.
pub fn acquire(path: &Path, timeout: Duration) -> Result<RunLock, LockError> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let start = Instant::now();
    let mut logged = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(RunLock { _file: file }),
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
        let held = acquire(&path, Duration::from_secs(1)).unwrap();
        let err = acquire(&path, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
        drop(held);
        acquire(&path, Duration::from_millis(300)).unwrap();
    }
}
