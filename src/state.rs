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
    /// Reads `dir/state.json`. A missing file is an empty state; an unreadable or corrupt one is
    /// also treated as empty (it is only a fallback), with the reason returned for a warning.
    pub fn load(dir: &Path) -> (State, Option<String>) {
        let path = dir.join(STATE_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<State>(&text) {
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

    /// Writes `dir/state.json` atomically, creating `dir` if needed.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            action: "creating state directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(STATE_FILE);
        let mut text = serde_json::to_string_pretty(&State {
            schema: 1,
            ..self.clone()
        })
        .expect("state serializes");
        text.push('\n');
        cfa_core::files::write_atomic(&path, text.as_bytes(), 0o644).map_err(|source| {
            StateError::Io {
                action: "writing",
                path,
                source,
            }
        })
    }
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
    fn ages() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(3 * 86_400 + 4 * 3600), "3d 4h");
    }
}
