//! Fail2Ban: Cloudflare's ranges in every running jail's `ignoreip`, the operator's entries kept.
//!
//! Fail2Ban 1.0.2 reads `jail.conf`, `jail.d/*.conf`, `jail.local`, `jail.d/*.local` (each group
//! sorted), and a later value of an option simply replaces an earlier one, `[DEFAULT]` included:
//! a drop-in `ignoreip = <ranges>` would wipe the operator's list. `%(known/ignoreip)s` is the
//! value the files read before give the same section, falling back to the final `[DEFAULT]`; it
//! recurses when used in `[DEFAULT]` itself, and a jail with its own `ignoreip` never sees
//! `[DEFAULT]`. So the drop-in (`<dir>/jail.d/zz-cf-allowlist.local`, read last) holds the ranges
//! once, as `[DEFAULT] cf_allowlist_ranges` (a name of ours; nothing else reads it), and for
//! every jail Fail2Ban runs one section:
//!
//! ```ini
//! [sshd]
//! ignoreip = %(known/ignoreip)s %(cf_allowlist_ranges)s
//! ```
//!
//! which is the jail's own earlier value, else `[DEFAULT]`'s, followed by the ranges. Two cases
//! differ, found by letting Fail2Ban itself read the configuration (`fail2ban-client -d`) in a
//! private copy of the directory, with and without the drop-in, before anything is written:
//! - a jail with no `ignoreip` anywhere (stock Debian: jail.conf has it commented out) has no
//!   known value and `%(known/ignoreip)s` fails: it gets `ignoreip = %(cf_allowlist_ranges)s`;
//! - a jail whose `ignoreip` (before or after ours) already uses `%(known/ignoreip)s` cannot be
//!   extended (Fail2Ban keeps one earlier value, and a second reference recurses): it is left
//!   out, with a warning.
//!
//! A file read after ours that sets a jail's `ignoreip` replaces the extension; that is reported
//! at every sync, naming the jail. Apply writes the drop-in, runs `fail2ban-client -t`, then
//! `fail2ban-client reload` (which returns once the jails are reloaded); purge removes it and
//! reloads, which gives every jail back exactly the operator's `ignoreip`.
//!
//! Separately, [`Fail2ban`]'s [`Output::warnings`] lists addresses inside the ranges that a jail
//! has already banned (`fail2ban-client status`, then `get JAIL banip` per jail): `ignoreip`
//! prevents new bans, it does not lift old ones.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cfa_core::{parse_cidr, AllowList, BackendError, Runner};

use crate::{Change, Current, Output, Planned};

/// Fail2Ban's configuration directory by default.
pub const DEFAULT_DIR: &str = "/etc/fail2ban";
/// The drop-in's name by default, inside `<dir>/jail.d/`: a `.local` file sorting after the
/// usual names, because the last file read wins.
pub const DEFAULT_FILE: &str = "zz-cf-allowlist.local";
/// The `[DEFAULT]` option holding the ranges. Part of the compatibility contract.
pub const RANGES_OPTION: &str = "cf_allowlist_ranges";

/// How many files a private copy of the configuration may hold, and how many bytes: far above
/// any real Fail2Ban directory (Debian's has about 200 files, under 1 MiB).
const COPY_MAX_FILES: usize = 20_000;
const COPY_MAX_BYTES: u64 = 256 << 20;
const COPY_MAX_DEPTH: usize = 16;

/// How the Fail2Ban output is set up (`outputs.fail2ban` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail2banOptions {
    /// Fail2Ban's configuration directory (`fail2ban-client -c`).
    pub dir: PathBuf,
    /// The drop-in's file name inside `<dir>/jail.d/`; must end in `.local`.
    pub file: String,
    /// The client program (`fail2ban-client`). It is given `-c <dir>`, and finds the server's
    /// socket in `<dir>/fail2ban.conf` (or `.local`).
    pub client: String,
}

impl Default for Fail2banOptions {
    fn default() -> Self {
        Fail2banOptions {
            dir: PathBuf::from(DEFAULT_DIR),
            file: DEFAULT_FILE.to_string(),
            client: "fail2ban-client".to_string(),
        }
    }
}

/// Why `file` cannot be the drop-in's name, if it cannot.
pub fn file_name_problem(file: &str) -> Option<String> {
    if !file.ends_with(".local") || file.len() <= ".local".len() {
        return Some(format!(
            "{file:?} must end in .local (Fail2Ban reads jail.d/*.local after jail.local; a .conf drop-in loses to jail.local)"
        ));
    }
    if file.starts_with('.')
        || !file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
    {
        return Some(format!(
            "{file:?} must be a plain file name (letters, digits, '-', '_', '.', '~'; not starting with '.')"
        ));
    }
    None
}

/// How one jail's section extends its `ignoreip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Form {
    /// `ignoreip = %(known/ignoreip)s %(cf_allowlist_ranges)s`: the operator's entries, then ours.
    Extends,
    /// `ignoreip = %(cf_allowlist_ranges)s`: the jail had no `ignoreip` at all.
    Only,
}

impl Form {
    fn value(self) -> String {
        match self {
            Form::Extends => format!("%(known/ignoreip)s %({RANGES_OPTION})s"),
            Form::Only => format!("%({RANGES_OPTION})s"),
        }
    }
}

/// What our drop-in says: the ranges and the jails it extends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DropIn {
    /// The ranges.
    pub entries: AllowList,
    /// The jails, sorted by name, and how each is extended.
    pub jails: Vec<(String, Form)>,
}

/// The drop-in for `jails` and `list`. Deterministic: the same input gives the same bytes.
pub fn render(drop_in: &DropIn) -> String {
    let mut s = String::from(crate::HEADER);
    s.push_str(
        "#\n# Each jail's ignoreip is its value from the files read before this one (%(known/ignoreip)s:\n\
         # the jail's own, else [DEFAULT]'s), followed by the ranges.\n",
    );
    s.push_str("[DEFAULT]\n");
    let indent = " ".repeat(RANGES_OPTION.len() + 3);
    s.push_str(RANGES_OPTION);
    s.push_str(" =");
    for (i, net) in drop_in.entries.iter().enumerate() {
        if i == 0 {
            s.push(' ');
        } else {
            s.push('\n');
            s.push_str(&indent);
        }
        s.push_str(&net.to_string());
    }
    s.push('\n');
    for (jail, form) in &drop_in.jails {
        s.push_str(&format!("\n[{jail}]\nignoreip = {}\n", form.value()));
    }
    s
}

/// Reads a drop-in we wrote: what it says and, when it is not exactly what [`render`] gives for
/// that, why. `None` when the bytes lack our header (not ours). Never panics.
pub fn parse(bytes: &[u8]) -> Option<(DropIn, Option<String>)> {
    if !crate::is_ours(bytes) {
        return None;
    }
    let text = String::from_utf8_lossy(bytes);
    let mut drop_in = DropIn::default();
    let mut problems = Vec::new();
    let mut section: Option<String> = None;
    let mut in_ranges = false;
    let known = Form::Extends.value();
    let only = Form::Only.value();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let continuation = raw.starts_with([' ', '\t']) && !line.is_empty();
        if continuation && in_ranges {
            match parse_cidr(line) {
                Ok(net) => {
                    drop_in.entries.insert(net);
                }
                Err(e) => problems.push(format!("line {}: {e}", n + 1)),
            }
            continue;
        }
        in_ranges = false;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_string());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            problems.push(format!("line {} is not ours", n + 1));
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match section.as_deref() {
            Some("DEFAULT") if key == RANGES_OPTION => {
                in_ranges = true;
                for word in value.split_whitespace() {
                    match parse_cidr(word) {
                        Ok(net) => {
                            drop_in.entries.insert(net);
                        }
                        Err(e) => problems.push(format!("line {}: {e}", n + 1)),
                    }
                }
            }
            Some(jail) if jail != "DEFAULT" && key == "ignoreip" && value == known => {
                drop_in.jails.push((jail.to_string(), Form::Extends));
            }
            Some(jail) if jail != "DEFAULT" && key == "ignoreip" && value == only => {
                drop_in.jails.push((jail.to_string(), Form::Only));
            }
            _ => problems.push(format!("line {} is not ours", n + 1)),
        }
    }
    let damaged = if !problems.is_empty() {
        Some(problems.join("; "))
    } else if render(&drop_in).as_bytes() != bytes {
        Some("the file is not as cf-allowlist writes it (edited by hand?)".to_string())
    } else {
        None
    };
    Some((drop_in, damaged))
}

/// Whether a jail name can be written as a section header Fail2Ban reads back as that jail.
fn jail_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.trim() == name
        && !name.eq_ignore_ascii_case("DEFAULT")
        && !name.eq_ignore_ascii_case("INCLUDES")
        && !name.eq_ignore_ascii_case("KNOWN")
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '[' | ']' | '/' | '?' | '%' | '#' | ';'))
}

/// What `fail2ban-client -d` says: the jails it would start and each one's `ignoreip` entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dump {
    /// Jails, in the order Fail2Ban adds them.
    pub jails: Vec<String>,
    /// Each jail's `ignoreip` entries as Fail2Ban read them (not normalised).
    pub ignoreip: BTreeMap<String, Vec<String>>,
}

/// Reads the output of `fail2ban-client -d`: only `['add', JAIL, ...]` and `['set', JAIL,
/// 'addignoreip', ...]` lines matter; anything else is skipped. Never panics.
pub fn parse_dump(text: &str) -> Dump {
    let mut dump = Dump::default();
    for line in text.lines() {
        let Some(items) = parse_py_list(line) else {
            continue;
        };
        match items.as_slice() {
            [add, jail, ..] if add == "add" => dump.jails.push(jail.clone()),
            [set, jail, what, rest @ ..] if set == "set" && what == "addignoreip" => dump
                .ignoreip
                .entry(jail.clone())
                .or_default()
                .extend(rest.iter().cloned()),
            _ => {}
        }
    }
    dump
}

/// A Python list of string literals, as `repr` prints it (`['set', "it's", 'x\n']`); `None` for
/// anything else (numbers, nested lists, a broken line).
pub fn parse_py_list(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('[')?.strip_suffix(']')?;
    let mut chars = inner.chars().peekable();
    let mut items = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None if items.is_empty() => return Some(items),
            None => return None,
            Some('\'' | '"') => items.push(parse_py_string(&mut chars)?),
            Some(_) => return None,
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => return Some(items),
            Some(',') => continue,
            Some(_) => return None,
        }
    }
}

/// One Python string literal at the front of `chars` (the quote included); consumes it.
fn parse_py_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    let quote = chars.next().filter(|q| matches!(q, '\'' | '"'))?;
    let mut s = String::new();
    loop {
        match chars.next()? {
            c if c == quote => return Some(s),
            '\\' => {
                let c = match chars.next()? {
                    '\\' => '\\',
                    '\'' => '\'',
                    '"' => '"',
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'x' => hex_char(chars, 2)?,
                    'u' => hex_char(chars, 4)?,
                    'U' => hex_char(chars, 8)?,
                    _ => return None,
                };
                s.push(c);
            }
            c => s.push(c),
        }
    }
}

fn hex_char(chars: &mut impl Iterator<Item = char>, digits: usize) -> Option<char> {
    let mut value: u32 = 0;
    for _ in 0..digits {
        value = value * 16 + chars.next()?.to_digit(16)?;
    }
    char::from_u32(value)
}

/// The jail a failed `fail2ban-client -d` names in "option 'ignoreip' in section 'JAIL'", if any.
fn failing_jail(stderr: &str) -> Option<String> {
    let marker = "option 'ignoreip' in section ";
    let at = stderr.find(marker)? + marker.len();
    parse_py_string(&mut stderr[at..].chars().peekable())
}

/// The jails `fail2ban-client status` lists (`` `- Jail list:\tsshd, nginx``).
pub fn parse_status(text: &str) -> Vec<String> {
    text.lines()
        .find_map(|l| l.split_once("Jail list:").map(|(_, rest)| rest))
        .map(|rest| {
            rest.split(',')
                .map(str::trim)
                .filter(|j| !j.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The addresses `fail2ban-client get JAIL banip` prints (space separated); words that are not
/// addresses are skipped.
pub fn parse_banip(text: &str) -> Vec<IpAddr> {
    text.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// The Fail2Ban output. See the module documentation.
#[derive(Debug, Clone)]
pub struct Fail2ban {
    options: Fail2banOptions,
    path: PathBuf,
    runner: Runner,
}

/// A failed `fail2ban-client -d`: the jail its error names, if it names one.
struct DumpFailed {
    jail: Option<String>,
    error: Box<BackendError>,
}

impl Fail2ban {
    /// The output for `options`, running the client through `runner`. A bad file name is a
    /// [`BackendError::Conflict`].
    pub fn new(options: Fail2banOptions, runner: Runner) -> Result<Fail2ban, BackendError> {
        if let Some(problem) = file_name_problem(&options.file) {
            return Err(BackendError::Conflict(format!(
                "outputs.fail2ban.file: {problem}"
            )));
        }
        let path = options.dir.join("jail.d").join(&options.file);
        Ok(Fail2ban {
            options,
            path,
            runner: runner.with_timeout(crate::COMMAND_TIMEOUT),
        })
    }

    fn client(&self, dir: &Path, args: &[&str], what: &str) -> Result<String, BackendError> {
        let mut argv = vec![
            self.options.client.clone(),
            "-c".to_string(),
            dir.to_string_lossy().into_owned(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        crate::run(
            &self.runner,
            &argv,
            &format!("{what} (`{}`)", argv.join(" ")),
        )
    }

    /// `fail2ban-client -c DIR -d`: how Fail2Ban reads the configuration in `dir`.
    fn dump(&self, dir: &Path, what: &str) -> Result<Dump, DumpFailed> {
        match self.client(dir, &["-d"], what) {
            Ok(out) => Ok(parse_dump(&out)),
            Err(error) => {
                let jail = match &error {
                    BackendError::Command { source, .. } => source.stderr().and_then(failing_jail),
                    _ => None,
                };
                Err(DumpFailed {
                    jail,
                    error: Box::new(error),
                })
            }
        }
    }

    /// A private copy of the configuration directory without our drop-in (0700, removed on
    /// drop), for reading it with Fail2Ban's own parser without touching the real one.
    fn scratch(&self) -> Result<tempfile::TempDir, BackendError> {
        let tmp = tempfile::Builder::new()
            .prefix("cf-allowlist-fail2ban-")
            .tempdir()
            .map_err(|e| BackendError::io("creating a private copy of", &self.options.dir, e))?;
        let mut budget = (COPY_MAX_FILES, COPY_MAX_BYTES);
        copy_tree(&self.options.dir, tmp.path(), &self.path, &mut budget, 0)
            .map_err(|e| BackendError::io("copying", &self.options.dir, e))?;
        Ok(tmp)
    }

    /// The drop-in for `list` and the warnings about jails it cannot extend, decided by reading
    /// a private copy of the configuration with Fail2Ban itself.
    fn decide(&self, list: &AllowList) -> Result<(DropIn, Vec<String>), BackendError> {
        let scratch = self.scratch()?;
        let dir = self.options.dir.display().to_string();
        let base = self
            .dump(scratch.path(), "reading the Fail2Ban configuration without cf-allowlist's drop-in")
            .map_err(|f| {
                crate::annotate(
                    *f.error,
                    &format!("Fail2Ban cannot read the configuration in {dir} even without cf-allowlist's drop-in: fix it first"),
                )
            })?;
        let mut warnings = Vec::new();
        let mut jails: Vec<(String, Form)> = Vec::new();
        for jail in &base.jails {
            if !jail_name_ok(jail) {
                warnings.push(format!(
                    "fail2ban: jail {jail:?} has a name cf-allowlist cannot write as a section; its ignoreip is not extended"
                ));
                continue;
            }
            // No entries at all: no known value, so %(known/ignoreip)s would not resolve.
            let form = if base.ignoreip.get(jail).is_some_and(|v| !v.is_empty()) {
                Form::Extends
            } else {
                Form::Only
            };
            jails.push((jail.clone(), form));
        }
        jails.sort();
        jails.dedup_by(|a, b| a.0 == b.0);
        let ours = scratch.path().join("jail.d").join(&self.options.file);
        if let Some(parent) = ours.parent() {
            fs::create_dir_all(parent).map_err(|e| BackendError::io("creating", parent, e))?;
        }
        let ranges: Vec<String> = list.iter().map(|n| n.to_string()).collect();
        // Each round either succeeds or leaves out the one jail Fail2Ban named.
        for _ in 0..=jails.len() {
            let drop_in = DropIn {
                entries: list.clone(),
                jails: jails.clone(),
            };
            fs::write(&ours, render(&drop_in))
                .map_err(|e| BackendError::io("writing", &ours, e))?;
            match self.dump(scratch.path(), "reading the Fail2Ban configuration with cf-allowlist's drop-in") {
                Ok(dump) => {
                    for (jail, _) in &jails {
                        let got = dump.ignoreip.get(jail).cloned().unwrap_or_default();
                        let missing = ranges.iter().filter(|r| !got.contains(r)).count();
                        if missing > 0 {
                            warnings.push(format!(
                                "fail2ban: jail {jail}: a file Fail2Ban reads after {} sets its ignoreip again and replaces the extension ({missing} of {} ranges are not ignored): set it in jail.local or a jail.d file sorting before {} instead",
                                self.path.display(),
                                ranges.len(),
                                self.options.file
                            ));
                        }
                    }
                    return Ok((drop_in, warnings));
                }
                Err(DumpFailed {
                    jail: Some(jail),
                    error,
                }) if jails.iter().any(|(j, _)| *j == jail) => {
                    warnings.push(format!(
                        "fail2ban: jail {jail}: its ignoreip cannot be extended (its value in another file already uses %(known/ignoreip)s, and Fail2Ban 1.0.2 keeps only one earlier value): the Cloudflare ranges are not ignored there; add them to that jail by hand or drop %(known/ignoreip)s there ({error})"
                    ));
                    jails.retain(|(j, _)| *j != jail);
                }
                Err(f) => {
                    return Err(crate::annotate(
                        *f.error,
                        "Fail2Ban cannot read the configuration with cf-allowlist's drop-in; nothing was written",
                    ))
                }
            }
        }
        Err(BackendError::Conflict(format!(
            "fail2ban: no drop-in Fail2Ban reads in {dir} could be found; nothing was written"
        )))
    }
}

/// Copies `from` into `to` (directories and the files they hold, links followed), leaving out
/// `skip` and our temporary files, within `budget` (files, bytes) and a depth limit.
fn copy_tree(
    from: &Path,
    to: &Path,
    skip: &Path,
    budget: &mut (usize, u64),
    depth: usize,
) -> io::Result<()> {
    if depth > COPY_MAX_DEPTH {
        return Err(io::Error::other(format!(
            "{} is nested deeper than {COPY_MAX_DEPTH} directories",
            from.display()
        )));
    }
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let source = entry.path();
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if source == skip || (name_text.starts_with('.') && name_text.contains(".cf-allowlist-")) {
            continue;
        }
        let target = to.join(&name);
        // A dangling link or a socket is nothing Fail2Ban reads.
        let Ok(meta) = fs::metadata(&source) else {
            continue;
        };
        if meta.is_dir() {
            fs::create_dir(&target)?;
            copy_tree(&source, &target, skip, budget, depth + 1)?;
        } else if meta.is_file() {
            if budget.0 == 0 || budget.1 < meta.len() {
                return Err(io::Error::other(format!(
                    "more than {COPY_MAX_FILES} files or {COPY_MAX_BYTES} bytes to copy"
                )));
            }
            budget.0 -= 1;
            budget.1 -= meta.len();
            fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

impl Output for Fail2ban {
    fn name(&self) -> &'static str {
        "fail2ban"
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Current, BackendError> {
        let Some(bytes) = crate::read_file(&self.path)? else {
            return Ok(Current::default());
        };
        let (drop_in, damaged) =
            parse(&bytes).ok_or_else(|| crate::not_ours(&self.path, "fail2ban"))?;
        Ok(Current {
            entries: drop_in.entries,
            bytes: Some(bytes),
            damaged,
        })
    }

    fn plan(&self, current: &Current, list: Option<&AllowList>) -> Result<Planned, BackendError> {
        let Some(list) = list else {
            return Ok(Planned {
                change: crate::plan_file(&self.path, current, None, |_| String::new()),
                warnings: Vec::new(),
            });
        };
        let (drop_in, warnings) = self.decide(list)?;
        let text = render(&drop_in);
        Ok(Planned {
            change: crate::plan_file(&self.path, current, Some(list), |_| text),
            warnings,
        })
    }

    /// The drop-in was already read by Fail2Ban in a private copy (by [`Output::plan`]); what is
    /// left is whether the server answers, so that the reload would work.
    fn check(&self, _change: &Change) -> Result<(), BackendError> {
        self.client(
            &self.options.dir,
            &["ping"],
            "asking the Fail2Ban server whether it runs (dry run)",
        )
        .map(drop)
    }

    fn apply(&self, change: &Change) -> Result<(), BackendError> {
        let dir = self.options.dir.clone();
        crate::commit(
            change,
            || {
                self.client(
                    &dir,
                    &["-t"],
                    "testing the Fail2Ban configuration with the new drop-in in place",
                )
                .map(drop)
            },
            || {
                self.client(&dir, &["reload"], "reloading Fail2Ban")
                    .map(drop)
            },
        )
    }

    fn warnings(&self, list: &AllowList) -> Vec<String> {
        let dir = &self.options.dir;
        let status = match self.client(dir, &["status"], "asking Fail2Ban for its jails") {
            Ok(out) => out,
            Err(e) => {
                return vec![format!(
                    "fail2ban: could not check for banned Cloudflare addresses: {e}"
                )]
            }
        };
        let mut warnings = Vec::new();
        for jail in parse_status(&status) {
            let banned = match self.client(
                dir,
                &["get", &jail, "banip"],
                &format!("asking Fail2Ban what jail {jail} has banned"),
            ) {
                Ok(out) => parse_banip(&out),
                Err(e) => {
                    warnings.push(format!(
                        "fail2ban: could not check jail {jail} for banned Cloudflare addresses: {e}"
                    ));
                    continue;
                }
            };
            for addr in banned {
                if let Some(net) = list.iter().find(|n| n.contains(&addr)) {
                    warnings.push(format!(
                        "fail2ban: jail {jail} has banned {addr}, inside the allowlisted {net}: traffic from it (Cloudflare's edge) is refused, and visitors routed through it see Error 521; lift it with `fail2ban-client set {jail} unbanip {addr}` (ignoreip prevents new bans, not old ones)"
                    ));
                }
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfa_core::snapshot;

    #[test]
    fn dump_lines_are_read_as_python_lists() {
        assert_eq!(
            parse_py_list(r#"['set', "it's", 'a\\b', 'x\n', '\x41\u00e9']"#),
            Some(vec![
                "set".into(),
                "it's".into(),
                "a\\b".into(),
                "x\n".into(),
                "Aé".into()
            ])
        );
        assert_eq!(parse_py_list("['set', 'sshd', 'maxretry', 5]"), None);
        assert_eq!(parse_py_list("['a', ['b']]"), None);
        assert_eq!(parse_py_list("[]"), Some(vec![]));
        assert_eq!(parse_py_list("['unterminated"), None);
        assert_eq!(parse_py_list("2026-12-01 WARNING x"), None);
    }

    #[test]
    fn a_dump_gives_jails_and_their_ignoreip() {
        let dump = parse_dump(
            "['set', 'loglevel', 'INFO']\n['add', 'sshd', 'auto']\n['set', 'sshd', 'maxretry', 5]\n\
             ['set', 'sshd', 'addignoreip', '127.0.0.1/8', '::1']\n['add', 'own', 'polling']\n['start', 'sshd']\n",
        );
        assert_eq!(dump.jails, vec!["sshd".to_string(), "own".to_string()]);
        assert_eq!(
            dump.ignoreip.get("sshd").unwrap(),
            &vec!["127.0.0.1/8".to_string(), "::1".to_string()]
        );
        assert!(!dump.ignoreip.contains_key("own"));
    }

    #[test]
    fn the_failing_jail_is_found_in_fail2bans_message() {
        let stderr = "2026-12-01 fail2ban [1]: ERROR   Failed during configuration: Recursion limit exceeded in value substitution: option 'ignoreip' in section 'sshd' contains an interpolation key which cannot be substituted in 10 steps. Raw value: '%(known/ignoreip)s'";
        assert_eq!(failing_jail(stderr).as_deref(), Some("sshd"));
        assert_eq!(
            failing_jail("option 'ignoreip' in section \"it's\" contains").as_deref(),
            Some("it's")
        );
        assert_eq!(failing_jail("option 'logpath' in section 'a'"), None);
    }

    #[test]
    fn status_and_banip_are_read() {
        let status = "Status\n|- Number of jail:\t2\n`- Jail list:\tsshd, nginx-http-auth\n";
        assert_eq!(parse_status(status), vec!["sshd", "nginx-http-auth"]);
        assert_eq!(
            parse_status("Status\n|- Number of jail:\t0\n`- Jail list:\t\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            parse_banip("104.16.0.5 2400:cb00::1 junk\n"),
            vec![
                "104.16.0.5".parse::<IpAddr>().unwrap(),
                "2400:cb00::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn the_drop_in_reads_back() {
        let drop_in = DropIn {
            entries: snapshot::cloudflare(),
            jails: vec![
                ("nginx-http-auth".into(), Form::Only),
                ("sshd".into(), Form::Extends),
            ],
        };
        let text = render(&drop_in);
        assert!(text.starts_with(crate::HEADER_MARK), "{text}");
        assert!(
            text.contains("\n[sshd]\nignoreip = %(known/ignoreip)s %(cf_allowlist_ranges)s\n"),
            "{text}"
        );
        assert!(
            text.contains("\n[nginx-http-auth]\nignoreip = %(cf_allowlist_ranges)s\n"),
            "{text}"
        );
        assert_eq!(parse(text.as_bytes()), Some((drop_in, None)));
        let edited = text.replace("[sshd]", "[sshd]\nbantime = 1h");
        let (_, damaged) = parse(edited.as_bytes()).unwrap();
        assert!(damaged.unwrap().contains("not ours"));
        assert_eq!(parse(b"[DEFAULT]\nignoreip = 1.2.3.4\n"), None);
    }

    #[test]
    fn file_names_are_checked() {
        assert_eq!(file_name_problem(DEFAULT_FILE), None);
        assert!(file_name_problem("cf.conf").unwrap().contains(".local"));
        assert!(file_name_problem(".local").is_some());
        assert!(file_name_problem("../x.local").is_some());
        assert!(file_name_problem(".hidden.local").is_some());
        assert!(Fail2ban::new(
            Fail2banOptions {
                file: "a/b.local".into(),
                ..Fail2banOptions::default()
            },
            Runner::new()
        )
        .is_err());
    }

    #[test]
    fn odd_jail_names_are_not_written() {
        for bad in ["", "DEFAULT", "a]b", "a\nb", " a", "KNOWN", "x/y", "c?d"] {
            assert!(!jail_name_ok(bad), "{bad:?}");
        }
        for good in ["sshd", "nginx-http-auth", "postfix[mode=aggressive]x"] {
            assert_eq!(jail_name_ok(good), !good.contains('['), "{good:?}");
        }
    }
}
