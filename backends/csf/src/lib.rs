//! The csf backend: ConfigServer Security & Firewall, driven by files plus a reload command.
//!
//! Objects this backend owns (a compatibility contract: renaming them orphans old files):
//! - `<dir>/cf-allowlist.allow` ([`ALLOW_FILE`]): generated, with a do-not-edit header; one
//!   advanced filter `tcp|in|d=PORT|s=CIDR` per range, protocol and port, or with `ports: []` one
//!   `tcp|in|d=1_65535|s=CIDR` per range and protocol (every port of that protocol, inbound only;
//!   never a plain CIDR, which csf turns into accept-everything in *and* out);
//! - one `Include <dir>/cf-allowlist.allow` line in `csf.allow`;
//! - with `ignore: true`, `<dir>/cf-allowlist.ignore` ([`IGNORE_FILE`]: the same ranges as plain
//!   CIDRs) and one `Include <dir>/cf-allowlist.ignore` line in `csf.ignore`. lfd reads csf.ignore
//!   as plain addresses only and logs every advanced filter there as an invalid entry, so
//!   including the allow file in csf.ignore would exempt nothing. An `Include` of the allow file
//!   found in csf.ignore (what the first spec asked for) is repaired to the ignore file.
//!
//! - `<dir>/cf-allowlist.pending` ([`PENDING_FILE`]) while csf has not loaded what our files
//!   say: written before the first file changes, removed once a reload (or the recovery) has
//!   succeeded. A run killed between writing and reloading leaves it, and the next run reloads
//!   even though the files are already current.
//!
//! Every other byte of csf.allow and csf.ignore is kept. Our `Include` line goes on the first
//! line of the file (see [`text::set_include`]), so `purge` gives the files back byte for byte.
//! A file at one of our paths that lacks our header was not written by us: every operation
//! refuses to overwrite or delete it ([`BackendError::Conflict`]).
//!
//! csf is unforgiving: one line it cannot use (an operator's `tcp|in|d=99999|s=...`) makes a
//! FASTSTART restart fail, open the firewall (ACCEPT all), write `<dir>/csf.error`, and from then
//! on refuse `csf -ra` until a `csf -r` succeeds. So:
//! - before anything is written, every line of csf.allow and csf.ignore (and of the files they
//!   `Include`) is checked the way csf reads it ([`text::line_problem`]); one it cannot use is
//!   refused, naming the file, the line and why;
//! - a reload succeeded when it exited 0 and left no `csf.error` (csf prints `*Error*` lines for
//!   things that do not stop it, like a missing `/etc/crontab`, so its words decide nothing);
//! - a failed reload restores the previous files (keeping lines a `csf -a` added meanwhile), then
//!   runs [`CsfOptions::recover`] (`csf -r`) when `csf.error` exists (csf refuses `-ra` then),
//!   else the reload again.
//!
//! `restrict: true` holds through csf's own DROP policy plus our allow lines, as long as csf.conf
//! does not open a governed port to everyone (`TCP_IN`, `TCP6_IN`, `UDP_IN`, `UDP6_IN`): such a
//! configuration is refused before anything is written; without `restrict`, it is a warning.

pub mod text;

use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cfa_core::process::{CommandError, CommandErrorKind};
use cfa_core::{AllowList, Backend, BackendError, Family, Live, Plan, RuleSpec, Runner, Structure};

use text::{Kind, List};

/// Our generated allow file, inside the csf directory. Part of the compatibility contract.
pub const ALLOW_FILE: &str = "cf-allowlist.allow";
/// Our generated ignore file (plain CIDRs for lfd), inside the csf directory.
pub const IGNORE_FILE: &str = "cf-allowlist.ignore";

const CSF_CONF: &str = "csf.conf";
const CSF_ERROR: &str = "csf.error";
/// Present while csf may not have loaded our files (see the crate documentation). Part of the
/// compatibility contract.
pub const PENDING_FILE: &str = "cf-allowlist.pending";
/// How many list files (csf.allow, csf.ignore and what they include) are checked at most: csf
/// follows nested includes, and a loop of them must not hang us.
const MAX_LIST_FILES: usize = 256;
/// How many unusable lines one refusal quotes.
const MAX_QUOTED_LINES: usize = 10;
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
    /// The recovery command's argument vector (default `["csf", "-r"]`), run after a failed reload
    /// when `<dir>/csf.error` exists: csf then refuses `-ra` but still runs `-r`, which with the
    /// previous files restored brings the firewall back up with its DROP policy.
    pub recover: Vec<String>,
}

impl Default for CsfOptions {
    fn default() -> Self {
        CsfOptions {
            dir: PathBuf::from("/etc/csf"),
            ignore: true,
            reload: vec!["csf".to_string(), "-ra".to_string()],
            recover: vec!["csf".to_string(), "-r".to_string()],
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
        if self.options.recover.is_empty() {
            return Err(BackendError::Conflict(
                "csf recovery command is empty".to_string(),
            ));
        }
        // A /0 is every address: csf's checkip() does not range-check a prefix of 0 (Perl reads
        // "0" as false), so csf would let everyone through.
        if let Some(net) = entries.iter().find(|n| n.prefix_len() == 0) {
            return Err(BackendError::Conflict(format!(
                "{net} cannot be written to csf (a /0 matches every address); list narrower ranges"
            )));
        }
        Ok(())
    }

    /// `restrict: true` is refused while csf.conf opens a governed port to every source: csf
    /// accepts those before its DROP policy, so the allowlist would restrict nothing.
    fn check_restrict(&self) -> Result<(), BackendError> {
        if !self.spec.restrict {
            return Ok(());
        }
        let path = self.path(CSF_CONF);
        let Some(conf) = self.read_file(&path)? else {
            return Err(BackendError::Conflict(format!(
                "restrict: true, but {} does not exist: cannot check that csf leaves the governed \
                 ports closed to other sources",
                path.display()
            )));
        };
        let conf = String::from_utf8_lossy(&conf);
        match text::restrict_problem(&conf, &self.spec, &path.display().to_string()) {
            Some(why) => Err(BackendError::Conflict(why)),
            None => Ok(()),
        }
    }

    /// Every line csf cannot use in csf.allow, csf.ignore and the files they include (nested, as
    /// csf follows them), as `<file> line N "<line>": why`. csf.allow and csf.ignore are read as
    /// they are now (our changes to them only add or remove our `Include` line, and the line
    /// numbers must be the ones the operator sees); our generated files and any other file about
    /// to change are checked as they will be. An included file that is missing or unreadable is
    /// skipped (csf reads nothing from it either), as is a relative include path (relative to
    /// csf's working directory, which is not ours to guess).
    fn bad_lines(&self, changes: &[Change]) -> Result<Vec<(List, String)>, BackendError> {
        // (file, list grammar, whether it is csf.allow / csf.ignore itself)
        let mut queue = VecDeque::from([
            (self.path(Kind::Allow.includer()), List::Allow, true),
            (self.path(Kind::Ignore.includer()), List::Ignore, true),
        ]);
        let ours = [self.path(ALLOW_FILE), self.path(IGNORE_FILE)];
        queue.push_back((ours[0].clone(), List::Allow, false));
        queue.push_back((ours[1].clone(), List::Ignore, false));
        let mut seen = HashSet::new();
        let mut bad = Vec::new();
        while let Some((path, list, top)) = queue.pop_front() {
            if seen.len() >= MAX_LIST_FILES || !seen.insert((path.clone(), list)) {
                continue;
            }
            let change = changes.iter().find(|c| c.path == path);
            let (current, future) = if top {
                let current = self.read_file(&path)?;
                let future = change.map_or_else(|| current.clone(), |c| c.after.clone());
                (current, future)
            } else {
                let bytes = match change {
                    Some(change) => change.after.clone(),
                    None => fs::read(&path)
                        .inspect_err(|e| {
                            tracing::debug!(path = %path.display(), error = %e, "included csf file not read")
                        })
                        .ok(),
                };
                (bytes.clone(), bytes)
            };
            // Which files csf will read: from the lists as they will be (our Include line added
            // or removed, a legacy one repaired).
            for line in text::csf_lines(future.as_deref().unwrap_or_default()) {
                let Some(target) = text::include_target(line.raw) else {
                    continue;
                };
                let target = PathBuf::from(OsStr::from_bytes(target));
                // Our own files are checked each with its own grammar (queued above), whichever
                // list includes them (a legacy Include of the allow file in csf.ignore is
                // repaired, not reported line by line).
                if target.is_absolute() && !ours.contains(&target) {
                    queue.push_back((target, list, false));
                }
            }
            // The entry lines: the same now and then (our edits touch only our Include lines),
            // numbered as the operator sees them now.
            for line in text::csf_lines(current.as_deref().unwrap_or_default()) {
                if let Some(why) = text::line_problem(list, line.raw) {
                    bad.push((
                        list,
                        format!(
                            "{} line {} {:?}: {why}",
                            path.display(),
                            line.number,
                            String::from_utf8_lossy(line.raw).trim()
                        ),
                    ));
                }
            }
        }
        Ok(bad)
    }

    /// Refuses `changes` when csf could not use a line of its lists once they are made: reloading
    /// then would fail, open the firewall and leave csf refusing `csf -ra`.
    fn check_lists(&self, changes: &[Change]) -> Result<(), BackendError> {
        // Only csf.allow's grammar can make csf fail to start; a bad csf.ignore line is skipped
        // by lfd and only warned about (by `read`), it does not stop a sync.
        let bad: Vec<String> = self
            .bad_lines(changes)?
            .into_iter()
            .filter(|(list, _)| *list == List::Allow)
            .map(|(_, line)| line)
            .collect();
        if bad.is_empty() {
            return Ok(());
        }
        let more = bad.len().saturating_sub(MAX_QUOTED_LINES);
        let mut quoted = bad
            .into_iter()
            .take(MAX_QUOTED_LINES)
            .collect::<Vec<_>>()
            .join("; ");
        if more > 0 {
            quoted.push_str(&format!("; and {more} more"));
        }
        Err(BackendError::Conflict(format!(
            "refusing to change csf's files and reload it: csf cannot use {quoted}. A line csf \
             cannot use makes it fail to start and leave the firewall open (or is silently \
             skipped): fix or remove it, then sync again"
        )))
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
        self.check_restrict()?;
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
        let changes: Vec<Change> = writes
            .into_iter()
            .chain(edits)
            .chain(deletes)
            .filter(|c| c.before != c.after)
            .collect();
        if !changes.is_empty() {
            self.check_lists(&changes)?;
        }
        Ok(changes)
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
        let changes: Vec<Change> = changes
            .into_iter()
            .filter(|c| c.before != c.after)
            .collect();
        if !changes.is_empty() {
            self.check_lists(&changes)?;
        }
        Ok(changes)
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

    /// Writes `changes`, reloads csf, and on a failed reload restores the files and brings csf
    /// back up: with the recovery command when csf left `csf.error` (it refuses `-ra` then), else
    /// with the reload command.
    fn commit(&self, changes: &[Change], what: &str) -> Result<(), BackendError> {
        let pending = self.path(PENDING_FILE);
        let was_pending = pending.exists();
        if changes.is_empty() && !was_pending {
            tracing::debug!("csf files already up to date; no reload");
            return Ok(());
        }
        self.refuse_failed_csf()?;
        if !was_pending {
            put(
                &pending,
                Some(b"# cf-allowlist: csf has not been reloaded since cf-allowlist changed its files\n"),
            )?;
        }
        let loaded = || put(&pending, None);
        for (done, change) in changes.iter().enumerate() {
            if let Err(e) = put(&change.path, change.after.as_deref()) {
                // Nothing was reloaded yet: putting the files back is enough.
                return Err(match restore(&changes[..done]) {
                    Ok(()) if was_pending => e,
                    Ok(()) => match loaded() {
                        Ok(()) => e,
                        Err(undo) => BackendError::undo_failed(e, undo),
                    },
                    Err(undo) => BackendError::undo_failed(e, undo),
                });
            }
        }
        let Err(failed) = self.run_csf(&self.options.reload, what) else {
            return loaded();
        };
        let restored = restore(changes);
        let (again, how) = if self.path(CSF_ERROR).exists() {
            let recover = self.options.recover.join(" ");
            (
                self.run_csf(
                    &self.options.recover,
                    "recovering csf with the previous files restored",
                ),
                format!("csf recovered with `{recover}`"),
            )
        } else {
            (
                self.run_csf(
                    &self.options.reload,
                    "reloading csf with the previous files restored",
                ),
                "csf reloaded".to_string(),
            )
        };
        // csf has loaded the files as they now are: nothing is pending any more.
        let again = again.and_then(|()| loaded());
        Err(match (restored, again) {
            (Ok(()), Ok(())) => annotate(
                failed,
                &format!("the previous files were restored and {how}"),
            ),
            (Err(undo), Ok(())) => {
                BackendError::undo_failed(annotate(failed, &format!("{how} afterwards")), undo)
            }
            (Ok(()), Err(undo)) => BackendError::undo_failed(
                annotate(failed, "the previous files were restored"),
                undo,
            ),
            (Err(restore), Err(again)) => {
                BackendError::undo_failed(failed, BackendError::undo_failed(restore, again))
            }
        })
    }

    /// Runs a csf command (`argv`) and decides whether it worked from its exit status and
    /// `csf.error` only: csf prints `*Error*` lines for things that do not stop it (a missing
    /// `/etc/crontab`) and exits 0 with the firewall up, while a failed start exits 1 and writes
    /// `csf.error`. csf's own error lines are quoted in the failure message.
    fn run_csf(&self, argv: &[String], what: &str) -> Result<(), BackendError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(BackendError::Conflict(format!(
                "{what}: the command is empty"
            )));
        };
        let command = argv.join(" ");
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
            .filter(|l| l.to_ascii_lowercase().contains("error"))
            .take(5)
            .collect();
        let error_path = self.path(CSF_ERROR);
        let csf_error = self.read_file(&error_path)?;
        if status.success() && csf_error.is_none() {
            if !said.is_empty() {
                tracing::warn!(
                    "`{command}` exited 0 and left no csf.error, but said: {}",
                    said.join(" | ")
                );
            }
            return Ok(());
        }
        let mut why = if status.success() {
            "it exited 0".to_string()
        } else {
            "it failed".to_string()
        };
        if let Some(bytes) = &csf_error {
            why.push_str(&format!(
                " and csf wrote {} ({})",
                error_path.display(),
                String::from_utf8_lossy(bytes).trim()
            ));
        }
        if !said.is_empty() {
            why.push_str(&format!("; csf said: {}", said.join(" | ")));
        }
        Err(BackendError::command(
            format!("{what}: {why}"),
            CommandError {
                command,
                kind: CommandErrorKind::Failed {
                    status,
                    stdout: out.stdout,
                    stderr: out.stderr,
                },
            },
        ))
    }
}

/// Adds what happened next to a failed command's action; other errors are returned as they are.
fn annotate(err: BackendError, note: &str) -> BackendError {
    match err {
        BackendError::Command { action, source } => BackendError::Command {
            action: format!("{action} ({note})"),
            source,
        },
        other => {
            tracing::error!("{other}: {note}");
            other
        }
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
        if let Err(e) = restore_one(change) {
            tracing::error!(error = %e, "restoring a csf file");
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// Puts back the `before` bytes of one file, but only over what we wrote: `csf -a` (an operator,
/// or lfd) may have appended a line while csf was reloading, and putting the old bytes back would
/// lose it. A file that grew past what we wrote gets the previous bytes plus what was added; one
/// changed otherwise is left as it is, and the error says so.
fn restore_one(change: &Change) -> Result<(), BackendError> {
    let current = match fs::read(&change.path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(BackendError::io("reading", &change.path, e)),
    };
    if current == change.before {
        return Ok(());
    }
    if current == change.after {
        return put(&change.path, change.before.as_deref());
    }
    if let (Some(current), Some(after)) = (&current, &change.after) {
        if let Some(added) = current.strip_prefix(after.as_slice()) {
            let mut merged = change.before.clone().unwrap_or_default();
            merged.extend_from_slice(added);
            tracing::info!(
                path = %change.path.display(),
                "keeping {} byte(s) added to the file during the reload",
                added.len()
            );
            return put(&change.path, Some(&merged));
        }
    }
    Err(BackendError::Conflict(format!(
        "{} changed while csf was reloading (not only appended to), so it was not restored and \
         still holds cf-allowlist's change: compare it with its previous content and fix it by hand",
        change.path.display()
    )))
}

impl Backend for CsfBackend {
    fn name(&self) -> &'static str {
        "csf"
    }

    /// IPv4, and IPv6 only when csf.conf has `IPV6 = "1"` (csf skips IPv6 lines otherwise; `read`
    /// warns), of the families the spec manages.
    fn families(&self) -> Result<Vec<Family>, BackendError> {
        let conf = self.read_file(&self.path(CSF_CONF))?;
        let v6 = conf.is_some_and(|c| text::ipv6_enabled(&String::from_utf8_lossy(&c)));
        Ok(self
            .spec
            .families
            .iter()
            .copied()
            .filter(|f| *f == Family::V4 || v6)
            .collect())
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
        for (list, bad) in self.bad_lines(&[])?.into_iter().take(MAX_QUOTED_LINES) {
            warnings.push(match list {
                List::Allow => format!(
                    "csf cannot use {bad}: fix it, or csf's next restart fails and leaves the firewall open"
                ),
                List::Ignore => format!("lfd skips {bad}"),
            });
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

        if self.path(PENDING_FILE).exists() {
            present = true;
            reasons.push(format!(
                "{dir}/{PENDING_FILE} exists: an earlier run changed the files but csf was not \
                 reloaded (the run was interrupted)"
            ));
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
