//! The state directory: the last good list of each remote source, with its validators, written
//! atomically. It serves when a source cannot be reached, and carries the ETag for `If-None-Match`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cfa_core::{parse_cidr, AllowList};
use serde::{Deserialize, Serialize};

/// The state file's name inside `state_dir`.
pub const STATE_FILE: &str = "state.json";

/// Reading or writing the state failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state file or directory is not safe to trust: a symbolic link, writable by others,
    /// or owned by another user. A list from it could widen the firewall in an outage.
    #[error("{path} {why}; refusing to use it (make it a directory/file owned by this user, not writable by group or others)")]
    Unsafe {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// I/O on the state file or directory.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The last good answer of one remote source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedList {
    /// When it was fetched (seconds since the Unix epoch).
    pub fetched_at: u64,
    /// The URL that served it.
    pub url: String,
    /// The HTTP `ETag` of that answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The HTTP `Last-Modified` of that answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// The list's own `etag` (Cloudflare's API carries one in its result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_etag: Option<String>,
    /// The ranges, canonical.
    pub cidrs: Vec<String>,
}

impl CachedList {
    /// The ranges, parsed again (a hand-edited cache must still be strict).
    pub fn list(&self) -> Result<AllowList, String> {
        self.cidrs
            .iter()
            .map(|c| parse_cidr(c).map_err(|e| e.to_string()))
            .collect()
    }
}

/// Everything kept between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub schema: u32,
    /// Last good lists by source id.
    #[serde(default)]
    pub sources: BTreeMap<String, CachedList>,
}

impl State {
    /// Reads `dir/state.json`. A missing file is an empty state; an unreadable, corrupt or
    /// unsafe one (see [`StateError::Unsafe`]) is also treated as empty (it is only a fallback),
    /// with the reason returned for a warning.
    pub fn load(dir: &Path) -> (State, Option<String>) {
        let path = dir.join(STATE_FILE);
        if let Err(e) = check_safe(dir, false).and_then(|()| check_safe(&path, true)) {
            return (State::default(), Some(e.to_string()));
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<State>(&text) {
                // A newer version's file may mean something else by the same fields.
                Ok(s) if s.schema != 1 => (
                    State::default(),
                    Some(format!(
                        "ignoring state file {}: schema {} is not 1 (written by another version of cf-allowlist)",
                        path.display(),
                        s.schema
                    )),
                ),
                Ok(s) => (s, None),
                Err(e) => (
                    State::default(),
                    Some(format!(
                        "ignoring corrupt state file {}: {e}",
                        path.display()
                    )),
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (State::default(), None),
            Err(e) => (
                State::default(),
                Some(format!("cannot read state file {}: {e}", path.display())),
            ),
        }
    }

    /// Writes `dir/state.json` atomically with mode `0600`, creating `dir` (`0700`) if needed.
    /// An unsafe directory or file (see [`StateError::Unsafe`]) is refused, not written through.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StateError::Io {
                action: "creating state directory",
                path: dir.to_path_buf(),
                source,
            })?;
        let path = dir.join(STATE_FILE);
        check_safe(dir, false)?;
        check_safe(&path, true)?;
        let mut text = serde_json::to_string_pretty(&State {
            schema: 1,
            ..self.clone()
        })
        .expect("state serializes");
        text.push('\n');
        cfa_core::files::write_atomic(&path, text.as_bytes(), STATE_MODE).map_err(|source| {
            StateError::Io {
                action: "writing",
                path,
                source,
            }
        })
    }
}

/// The state file's mode: it steers the firewall in an outage, so only its owner reads it.
const STATE_MODE: u32 = 0o600;

/// Refuses a state directory or file (`file`: a missing one is fine) that is a symbolic link,
/// writable by group or others, or owned by a user other than this process's.
fn check_safe(path: &Path, file: bool) -> Result<(), StateError> {
    use std::os::unix::fs::MetadataExt;
    let unsafe_because = |why: String| StateError::Unsafe {
        path: path.to_path_buf(),
        why,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StateError::Io {
                action: "inspecting",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if meta.file_type().is_symlink() {
        return Err(unsafe_because("is a symbolic link".into()));
    }
    if file && !meta.is_file() {
        return Err(unsafe_because("is not a regular file".into()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_because(format!(
            "is writable by group or others (mode {:04o})",
            meta.mode() & 0o7777
        )));
    }
    // /proc/self belongs to this process's effective user.
    if let Ok(me) = std::fs::metadata("/proc/self") {
        if meta.uid() != me.uid() {
            return Err(unsafe_because(format!(
                "is owned by uid {}, not by this user (uid {})",
                meta.uid(),
                me.uid()
            )));
        }
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `3d 4h`, `2h 5m`, `40s`: an age for messages.
pub fn human_age(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (empty, warn) = State::load(dir.path());
        assert_eq!(empty, State::default());
        assert!(warn.is_none());
        let mut s = State::default();
        s.sources.insert(
            "cloudflare".into(),
            CachedList {
                fetched_at: 1,
                url: "https://x".into(),
                etag: Some("\"abc\"".into()),
                last_modified: None,
                list_etag: None,
                cidrs: vec!["173.245.48.0/20".into()],
            },
        );
        s.save(&dir.path().join("sub")).unwrap();
        let (back, _) = State::load(&dir.path().join("sub"));
        assert_eq!(back.sources, s.sources);
        std::fs::write(dir.path().join("sub").join(STATE_FILE), "{not json").unwrap();
        let (bad, warn) = State::load(&dir.path().join("sub"));
        assert_eq!(bad, State::default());
        assert!(warn.unwrap().contains("corrupt"));
    }

    #[test]
    fn the_state_file_is_private_and_never_written_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        State::default().save(&state_dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state_dir.join(STATE_FILE)), 0o600);
        assert_eq!(mode(&state_dir), 0o700);

        // A link to a world-writable file elsewhere: refused, the target untouched.
        let target = dir.path().join("elsewhere.json");
        std::fs::write(&target, "{}").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::fs::remove_file(state_dir.join(STATE_FILE)).unwrap();
        std::os::unix::fs::symlink(&target, state_dir.join(STATE_FILE)).unwrap();
        let e = State::default().save(&state_dir).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}");
        assert_eq!(mode(&target), 0o666);
        let (_, warn) = State::load(&state_dir);
        assert!(warn.unwrap().contains("symbolic link"));
    }

    #[test]
    fn a_state_writable_by_others_is_neither_read_nor_written() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::default();
        s.sources.insert(
            "cloudflare".into(),
            CachedList {
                fetched_at: 1,
                url: "https://x".into(),
                etag: None,
                last_modified: None,
                list_etag: None,
                cidrs: vec!["173.245.48.0/20".into()],
            },
        );
        s.save(dir.path()).unwrap();
        let file = dir.path().join(STATE_FILE);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let (loaded, warn) = State::load(dir.path());
        assert!(loaded.sources.is_empty());
        assert!(warn.unwrap().contains("writable by group or others"));
        assert!(s.save(dir.path()).is_err());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let (_, warn) = State::load(dir.path());
        assert!(warn.unwrap().contains("writable by group or others"));
    }

    #[test]
    fn ages() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(3 * 86_400 + 4 * 3600), "3d 4h");
    }
}
