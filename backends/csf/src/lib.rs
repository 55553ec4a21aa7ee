//! The csf backend: ConfigServer Security & Firewall, driven by files plus a reload command.
//!
//! Objects this backend owns (a compatibility contract: renaming them orphans old files):
//! - `<dir>/cf-allowlist.allow` ([`ALLOW_FILE`]): generated, with a do-not-edit header; one
//!   advanced filter `tcp|in|d=PORT|s=CIDR` per range, protocol and port, or plain `CIDR` lines
//!   when `ports: []` (everything from those ranges);
//! - one `Include <dir>/cf-allowlist.allow` line in `csf.allow`;
//! - with `ignore: true`, `<dir>/cf-allowlist.ignore` ([`IGNORE_FILE`]: the same ranges as plain
//!   CIDRs) and one `Include <dir>/cf-allowlist.ignore` line in `csf.ignore`. lfd reads csf.ignore
//!   as plain addresses only and logs every advanced filter there as an invalid entry, so
//!   including the allow file in csf.ignore would exempt nothing. An `Include` of the allow file
//!   found in csf.ignore (what the first spec asked for) is repaired to the ignore file.
//!
//! Every other byte of csf.allow and csf.ignore is kept. Our `Include` line goes on the first
//! line of the file (see [`text::set_include`]), so `purge` gives the files back byte for byte.
//! A file at one of our paths that lacks our header was not written by us: every operation
//! refuses to overwrite or delete it ([`BackendError::Conflict`]).
//!
//! csf is unforgiving (one line it cannot use makes a FASTSTART restart fail and leave the
//! firewall open), so only canonical entries are written, and the reload's exit code, its output
//! (`Error`) and `<dir>/csf.error` are all checked; a failed reload restores the previous files
//! and reloads again.

pub mod text;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use cfa_core::process::{CommandError, CommandErrorKind};
use cfa_core::{AllowList, Backend, BackendError, Live, Plan, RuleSpec, Runner, Structure};

use text::Kind;

/// Our generated allow file, inside the csf directory. Part of the compatibility contract.
pub const ALLOW_FILE: &str = "cf-allowlist.allow";
/// Our generated ignore file (plain CIDRs for lfd), inside the csf directory.
pub const IGNORE_FILE: &str = "cf-allowlist.ignore";

const CSF_CONF: &str = "csf.conf";
const CSF_ERROR: &str = "csf.error";
/// csf keeps its files `0600`; new files of ours get the same.
const FILE_MODE: u32 = 0o600;
/// How long the reload may run. `csf -ra` rebuilds the whole ruleset and restarts lfd; with large
/// deny lists or blocklists and no ipset that takes minutes, and killing it halfway leaves a
/// half-built firewall, so it gets far longer than the runner's default.
pub const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// How the csf backend is set up (`csf:` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsfOptions {
    /// csf's configuration directory (default `/etc/csf`).
    pub dir: PathBuf,
    /// Also exempt the ranges from lfd's blocking through `csf.ignore` (default `true`):
    /// csf.allow entries alone can still be blocked by lfd.
    pub ignore: bool,
    /// The reload command's argument vector (default `["csf", "-ra"]`: restart csf and lfd).
    pub reload: Vec<String>,
}

impl Default for CsfOptions {
    fn default() -> Self {
        CsfOptions {
            dir: PathBuf::from("/etc/csf"),
            ignore: true,
            reload: vec!["csf".to_string(), "-ra".to_string()],
        }
    }
}

/// Whether csf is installed (for the engine's `backend: auto`): `<dir>/csf.conf` exists.
pub fn is_installed(dir: &Path) -> bool {
    dir.join(CSF_CONF).is_file()
}

/// The csf backend. See the crate documentation for what it owns.
#[derive(Debug, Clone)]
pub struct CsfBackend {
    options: CsfOptions,
    spec: RuleSpec,
    runner: Runner,
}

/// One file to change: its bytes before and after (`None`: absent).
#[derive(Debug, Clone)]
struct Change {
    path: PathBuf,
    before: Option<Vec<u8>>,
    after: Option<Vec<u8>>,
}

impl CsfBackend {
    /// A backend for the csf directory and reload command in `options`, writing rules for `spec`,
    /// running the reload through `runner`.
    /// The reload may run up to [`RELOAD_TIMEOUT`].
    pub fn new(options: CsfOptions, spec: RuleSpec, runner: Runner) -> Self {
        CsfBackend {
            options,
            spec,
            runner: runner.with_timeout(RELOAD_TIMEOUT),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.options.dir.join(name)
    }

    /// The directory as it goes into `Include` lines: absolute (csf's working directory is not
    /// ours to guess), UTF-8, and nothing that would end or blur a line.
    fn dir_text(&self) -> Result<String, BackendError> {
        let dir = &self.options.dir;
        let text = dir.to_str().ok_or_else(|| {
            BackendError::Conflict(format!("csf dir {} is not valid UTF-8", dir.display()))
        })?;
        let text = text.trim_end_matches('/');
        if !dir.is_absolute()
            || text.is_empty()
            || text.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(BackendError::Conflict(format!(
                "csf dir {:?} must be an absolute path without blanks or control characters \
                 (it is written into Include lines)",
                dir
            )));
        }
        Ok(text.to_string())
    }

    /// What csf would refuse or silently drop, refused before anything is written.
    fn validate(&self, entries: &AllowList) -> Result<(), BackendError> {
        if self.spec.ports.contains(&0) {
            return Err(BackendError::Conflict(
                "port 0 cannot be written to csf: an out-of-range port makes `csf -r` fail and \
                 leave the firewall open"
                    .to_string(),
            ));
        }
        if self.options.reload.is_empty() {
            return Err(BackendError::Conflict(
                "csf reload command is empty".to_string(),
            ));
        }
        // csf's checkip() rejects a /0 prefix and would silently drop the line.
        if let Some(net) = entries.iter().find(|n| n.prefix_len() == 0) {
            return Err(BackendError::Conflict(format!(
                "{net} cannot be written to csf (it ignores /0 networks); list narrower ranges"
            )));
        }
        Ok(())
    }

    fn read_file(&self, path: &Path) -> Result<Option<Vec<u8>>, BackendError> {
        match fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::io("reading", path, e)),
        }
    }

    /// Reads one of our generated files; a file there without our header is a conflict.
    fn read_generated(&self, kind: Kind) -> Result<Option<text::Generated>, BackendError> {
        let path = self.path(kind.file_name());
        match self.read_file(&path)? {
            None => Ok(None),
            Some(bytes) => text::parse_generated(&bytes).map(Some).ok_or_else(|| {
                BackendError::Conflict(format!(
                    "{} exists but was not written by cf-allowlist (no {:?} header); \
                     refusing to overwrite or delete it: move it away, then sync again",
                    path.display(),
                    text::HEADER_MARK
                ))
            }),
        }
    }

    /// The state of one includer file (csf.allow or csf.ignore) against what we want in it.
    fn include_state(
        &self,
        includer: &str,
        want: Option<&str>,
        reasons: &mut Vec<String>,
    ) -> Result<bool, BackendError> {
        let bytes = self.read_file(&self.path(includer))?.unwrap_or_default();
        let found = text::find_includes(&bytes);
        match want {
            Some(line) if found.is_empty() => {
                reasons.push(format!("{includer} has no {line:?} line"));
            }
            Some(line) if !text::include_is_current(&bytes, line) => {
                let lines: Vec<&str> = found.iter().map(|f| f.line.as_str()).collect();
                reasons.push(format!(
                    "{includer} has {} include line(s) of ours ({lines:?}) instead of exactly {line:?}",
                    found.len()
                ));
            }
            Some(_) => {}
            None if !found.is_empty() => {
                reasons.push(format!(
                    "{includer} includes a cf-allowlist file but ignore is false"
                ));
            }
            None => {}
        }
        Ok(!found.is_empty())
    }

    /// Every file change that makes the directory hold `entries` (for [`Backend::apply`] and
    /// [`Backend::check`]), only the files whose bytes change, in a safe order: our files are
    /// written before an `Include` names them, and deleted after no `Include` does.
    fn changes_for(
        &self,
        entries: &AllowList,
        origin: Option<&str>,
    ) -> Result<Vec<Change>, BackendError> {
        let dir = self.dir_text()?;
        self.validate(entries)?;
        // Refuse a foreign file at our paths before computing anything else.
        self.read_generated(Kind::Allow)?;
        self.read_generated(Kind::Ignore)?;
        let mut writes = Vec::new();
        let mut edits = Vec::new();
        let mut deletes = Vec::new();
        for kind in [Kind::Allow, Kind::Ignore] {
            let wanted = kind == Kind::Allow || self.options.ignore;
            let file = self.path(kind.file_name());
            let includer = self.path(kind.includer());
            if wanted {
                let body = text::render(kind, &dir, entries, &self.spec, origin);
                writes.push(self.change(&file, Some(body.into_bytes()))?);
                let before = self.read_file(&includer)?;
                let after = text::set_include(
                    before.as_deref().unwrap_or_default(),
                    &text::include_line(&dir, kind),
                );
                edits.push(Change {
                    path: includer,
                    before,
                    after: Some(after),
                });
            } else {
                edits.push(self.without_includes(&includer)?);
                deletes.push(self.change(&file, None)?);
            }
        }
        Ok(writes
            .into_iter()
            .chain(edits)
            .chain(deletes)
            .filter(|c| c.before != c.after)
            .collect())
    }

    /// The changes that remove everything of ours (for [`Backend::purge`]).
    fn purge_changes(&self) -> Result<Vec<Change>, BackendError> {
        self.read_generated(Kind::Allow)?;
        self.read_generated(Kind::Ignore)?;
        let mut changes = Vec::new();
        for kind in [Kind::Allow, Kind::Ignore] {
            changes.push(self.without_includes(&self.path(kind.includer()))?);
        }
        for kind in [Kind::Allow, Kind::Ignore] {
            changes.push(self.change(&self.path(kind.file_name()), None)?);
        }
        Ok(changes
            .into_iter()
            .filter(|c| c.before != c.after)
            .collect())
    }

    fn change(&self, path: &Path, after: Option<Vec<u8>>) -> Result<Change, BackendError> {
        Ok(Change {
            path: path.to_path_buf(),
            before: self.read_file(path)?,
            after,
        })
    }

    /// An includer without our lines; a missing includer stays missing.
    fn without_includes(&self, includer: &Path) -> Result<Change, BackendError> {
        let before = self.read_file(includer)?;
        let after = before.as_deref().map(text::remove_includes);
        Ok(Change {
            path: includer.to_path_buf(),
            before,
            after,
        })
    }

    /// A stale `csf.error` makes `csf -ra` refuse to run, and means the firewall is already open:
    /// the operator must look before we change anything.
    fn refuse_failed_csf(&self) -> Result<(), BackendError> {
        let path = self.path(CSF_ERROR);
        if let Some(bytes) = self.read_file(&path)? {
            return Err(BackendError::Conflict(format!(
                "{} exists: csf failed to start earlier ({}); fix that and restart csf \
                 (`csf -r`) before cf-allowlist changes its files",
                path.display(),
                String::from_utf8_lossy(&bytes).trim()
            )));
        }
        Ok(())
    }

    /// Writes `changes`, reloads csf, and on a failed reload restores the files and reloads again.
    fn commit(&self, changes: &[Change], what: &str) -> Result<(), BackendError> {
        if changes.is_empty() {
            tracing::debug!("csf files already up to date; no reload");
            return Ok(());
        }
        self.refuse_failed_csf()?;
        for (done, change) in changes.iter().enumerate() {
            if let Err(e) = put(&change.path, change.after.as_deref()) {
                // Nothing was reloaded yet: putting the files back is enough.
                let restore = restore(&changes[..done]);
                return Err(match restore {
                    Ok(()) => e,
                    Err(r) => BackendError::Conflict(format!(
                        "{e}; restoring the files written before it also failed: {r}"
                    )),
                });
            }
        }
        let Err(reload_err) = self.reload(what) else {
            return Ok(());
        };
        let restored = restore(changes);
        let again = self.reload("reloading csf with the previous files restored");
        let mut note = match (&restored, &again) {
            (Ok(()), Ok(())) => "the previous files were restored and csf reloaded".to_string(),
            (Err(e), _) => format!("restoring the previous files FAILED ({e})"),
            (Ok(()), Err(e)) => {
                format!("the previous files were restored but reloading csf again FAILED ({e})")
            }
        };
        if restored.is_err() || again.is_err() {
            note.push_str(": check the firewall now");
        }
        Err(match reload_err {
            BackendError::Command { action, source } => BackendError::Command {
                action: format!("{action} ({note})"),
                source,
            },
            other => BackendError::Conflict(format!("{other} ({note})")),
        })
    }

    /// Runs the reload command and decides whether it worked: exit status, `Error` in its output
    /// (csf reports some failures and still exits 0), and a `csf.error` file left behind.
    fn reload(&self, what: &str) -> Result<(), BackendError> {
        let (program, args) = self
            .options
            .reload
            .split_first()
            .expect("validated non-empty");
        let command = self.options.reload.join(" ");
        let (status, out) = self
            .runner
            .run_status(program, args, None)
            .map_err(|e| BackendError::command(format!("{what}: `{command}`"), e))?;
        // csf prints its errors on stdout, and CommandError shows stderr when there is any:
        // quote csf's own error lines in the message so they are never lost.
        let said: Vec<&str> = out
            .stdout
            .lines()
            .chain(out.stderr.lines())
            .map(str::trim)
            .filter(|l| l.contains("Error"))
            .take(5)
            .collect();
        let said = if said.is_empty() {
            String::new()
        } else {
            format!("; csf said: {}", said.join(" | "))
        };
        let failed = |status: ExitStatus, why: String| {
            BackendError::command(
                format!("{what}: {why}{said}"),
                CommandError {
                    command: command.clone(),
                    kind: CommandErrorKind::Failed {
                        status,
                        stdout: out.stdout.clone(),
                        stderr: out.stderr.clone(),
                    },
                },
            )
        };
        if !status.success() {
            return Err(failed(status, "the reload failed".to_string()));
        }
        let error_path = self.path(CSF_ERROR);
        if let Some(bytes) = self.read_file(&error_path)? {
            return Err(failed(
                status,
                format!(
                    "csf wrote {} ({})",
                    error_path.display(),
                    String::from_utf8_lossy(&bytes).trim()
                ),
            ));
        }
        if out.stdout.contains("Error") || out.stderr.contains("Error") {
            return Err(failed(
                status,
                "the reload exited 0 but its output reports an Error".to_string(),
            ));
        }
        Ok(())
    }
}

/// Writes `contents` atomically, or removes the file for `None`.
fn put(path: &Path, contents: Option<&[u8]>) -> Result<(), BackendError> {
    match contents {
        Some(bytes) => cfa_core::files::write_atomic(path, bytes, FILE_MODE)
            .map_err(|e| BackendError::io("writing", path, e)),
        None => match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::io("removing", path, e)),
        },
    }
}

/// Puts back the `before` bytes of `changes`, last first; tries every file, reports the first
/// failure.
fn restore(changes: &[Change]) -> Result<(), BackendError> {
    let mut first = Ok(());
    for change in changes.iter().rev() {
        if let Err(e) = put(&change.path, change.before.as_deref()) {
            tracing::error!(error = %e, "restoring a csf file");
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

impl Backend for CsfBackend {
    fn name(&self) -> &'static str {
        "csf"
    }

    fn read(&self) -> Result<Live, BackendError> {
        let dir = self.dir_text()?;
        let mut warnings = Vec::new();
        let conf_path = self.path(CSF_CONF);
        match self.read_file(&conf_path)? {
            Some(conf) => warnings.extend(text::conf_warnings(
                &String::from_utf8_lossy(&conf),
                &self.spec,
                &conf_path.display().to_string(),
            )),
            None => warnings.push(format!(
                "{} not found: is csf installed in {dir}?",
                conf_path.display()
            )),
        }
        if let Some(bytes) = self.read_file(&self.path(CSF_ERROR))? {
            warnings.push(format!(
                "{dir}/{CSF_ERROR} exists: csf failed to start ({}) and the firewall may be open",
                String::from_utf8_lossy(&bytes).trim()
            ));
        }

        let allow = self.read_generated(Kind::Allow)?;
        let ignore = self.read_generated(Kind::Ignore)?;
        let mut reasons = Vec::new();
        let mut present = allow.is_some() || ignore.is_some();

        let entries = allow
            .as_ref()
            .map(|f| f.entries.clone())
            .unwrap_or_default();
        match &allow {
            Some(file) => reasons.extend(text::allow_mismatch(file, &self.spec)),
            None => reasons.push(format!("{dir}/{ALLOW_FILE} does not exist")),
        }
        present |= self.include_state(
            Kind::Allow.includer(),
            Some(&text::include_line(&dir, Kind::Allow)),
            &mut reasons,
        )?;
        let want_ignore = self
            .options
            .ignore
            .then(|| text::include_line(&dir, Kind::Ignore));
        present |= self.include_state(
            Kind::Ignore.includer(),
            want_ignore.as_deref(),
            &mut reasons,
        )?;
        match (&ignore, self.options.ignore) {
            (Some(file), true) => reasons.extend(text::ignore_mismatch(file, &entries)),
            (None, true) => reasons.push(format!("{dir}/{IGNORE_FILE} does not exist")),
            (Some(_), false) => {
                reasons.push(format!("{dir}/{IGNORE_FILE} exists but ignore is false"))
            }
            (None, false) => {}
        }

        let structure = Structure::judge(present, &reasons);
        Ok(Live {
            entries,
            structure,
            warnings,
        })
    }

    fn check(&self, plan: &Plan) -> Result<(), BackendError> {
        let changes = self.changes_for(&plan.after, plan.origin.as_deref())?;
        if !changes.is_empty() {
            self.refuse_failed_csf()?;
        }
        Ok(())
    }

    fn apply(&self, plan: &Plan) -> Result<(), BackendError> {
        let changes = self.changes_for(&plan.after, plan.origin.as_deref())?;
        self.commit(&changes, "reloading csf after writing the allowlist")
    }

    fn purge(&self) -> Result<(), BackendError> {
        let changes = self.purge_changes()?;
        self.commit(&changes, "reloading csf after removing the allowlist")
    }
}
