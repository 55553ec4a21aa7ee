//! What nginx and Apache share: a file of one directive per trusted range plus the header
//! directive, tested with the server's own configuration test and applied with a reload.

use std::path::{Path, PathBuf};

use cfa_core::{parse_cidr, AllowList, BackendError, Runner};

use crate::{Change, Current, Output, Planned};

/// How one server spells the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dialect {
    /// `nginx` or `apache`: the output's name.
    pub name: &'static str,
    /// What the operator calls the server, for messages.
    pub server: &'static str,
    /// Lines before the ranges.
    pub before: &'static [&'static str],
    /// One range: the text before the CIDR and after it.
    pub entry: (&'static str, &'static str),
    /// Lines after the ranges.
    pub after: &'static [&'static str],
    /// A hint for a failed configuration test mentioning one of our directives.
    pub hint: &'static str,
}

impl Dialect {
    /// The file for `list`: the header, then the fixed lines and one line per range, sorted,
    /// IPv4 first.
    pub fn render(&self, list: &AllowList) -> String {
        let mut s = String::from(crate::HEADER);
        for line in self.before {
            s.push_str(line);
            s.push('\n');
        }
        for net in list.iter() {
            s.push_str(self.entry.0);
            s.push_str(&net.to_string());
            s.push_str(self.entry.1);
            s.push('\n');
        }
        for line in self.after {
            s.push_str(line);
            s.push('\n');
        }
        s
    }

    /// Reads a file we wrote: its ranges and, when it is not exactly what [`Dialect::render`]
    /// gives for them, why. `None` when the file lacks our header (not ours). Never panics.
    pub fn parse(&self, bytes: &[u8]) -> Option<(AllowList, Option<String>)> {
        if !crate::is_ours(bytes) {
            return None;
        }
        let text = String::from_utf8_lossy(bytes);
        let mut entries = AllowList::new();
        let mut problems = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || self.is_fixed(line) {
                continue;
            }
            let cidr = line
                .strip_prefix(self.entry.0)
                .and_then(|rest| rest.strip_suffix(self.entry.1))
                .map(str::trim);
            match cidr.map(parse_cidr) {
                Some(Ok(net)) => {
                    entries.insert(net);
                }
                _ => problems.push(format!("line {} {:?} is not ours", n + 1, truncate(line))),
            }
        }
        let damaged = if !problems.is_empty() {
            Some(problems.join("; "))
        } else if self.render(&entries).as_bytes() != bytes {
            Some("the file is not as cf-allowlist writes it (edited by hand?)".to_string())
        } else {
            None
        };
        Some((entries, damaged))
    }

    fn is_fixed(&self, line: &str) -> bool {
        self.before.iter().chain(self.after).any(|f| *f == line)
    }
}

/// At most 80 characters of a line, for messages.
fn truncate(line: &str) -> String {
    line.chars().take(80).collect()
}

/// The test and reload commands of a server, and the file it includes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// The generated file.
    pub path: PathBuf,
    /// The command that tests the server's whole configuration (an argument vector).
    pub test: Vec<String>,
    /// The command that makes the running server load it (an argument vector).
    pub reload: Vec<String>,
}

/// An nginx or Apache real-IP output (built by [`crate::nginx::output`] and
/// [`crate::apache::output`]).
#[derive(Debug, Clone)]
pub struct RealIp {
    dialect: Dialect,
    options: ServerOptions,
    runner: Runner,
}

impl RealIp {
    pub(crate) fn new(dialect: Dialect, options: ServerOptions, runner: Runner) -> RealIp {
        RealIp {
            dialect,
            options,
            runner: runner.with_timeout(crate::COMMAND_TIMEOUT),
        }
    }

    fn test(&self, when: &str) -> Result<(), BackendError> {
        let what = format!(
            "testing the {} configuration {when} (`{}`)",
            self.dialect.server,
            self.options.test.join(" ")
        );
        crate::run(&self.runner, &self.options.test, &what)
            .map(drop)
            .map_err(|e| {
                let text = e.to_string();
                let ours = [self.dialect.entry.0.trim()]
                    .into_iter()
                    .chain(self.dialect.before.iter().copied())
                    .chain(self.dialect.after.iter().copied())
                    .filter_map(|l| l.split_whitespace().next())
                    .any(|directive| text.contains(directive));
                if ours {
                    crate::annotate(e, self.dialect.hint)
                } else {
                    e
                }
            })
    }

    fn reload(&self) -> Result<(), BackendError> {
        let what = format!(
            "reloading {} (`{}`)",
            self.dialect.server,
            self.options.reload.join(" ")
        );
        crate::run(&self.runner, &self.options.reload, &what).map(drop)
    }
}

impl Output for RealIp {
    fn name(&self) -> &'static str {
        self.dialect.name
    }

    fn path(&self) -> &Path {
        &self.options.path
    }

    fn read(&self) -> Result<Current, BackendError> {
        let path = &self.options.path;
        let Some(bytes) = crate::read_file(path)? else {
            return Ok(Current::default());
        };
        let (entries, damaged) = self
            .dialect
            .parse(&bytes)
            .ok_or_else(|| crate::not_ours(path, self.dialect.name))?;
        Ok(Current {
            entries,
            bytes: Some(bytes),
            damaged,
        })
    }

    fn plan(&self, current: &Current, list: Option<&AllowList>) -> Result<Planned, BackendError> {
        Ok(Planned {
            change: crate::plan_file(&self.options.path, current, list, |l| {
                self.dialect.render(l)
            }),
            warnings: Vec::new(),
        })
    }

    /// The server's configuration as it is passes its test (so a real run could reload). The
    /// new file is not put in place: a dry run changes nothing, so it cannot see a conflict
    /// between the new file and the rest of the configuration; the real run tests that.
    fn check(&self, _change: &Change) -> Result<(), BackendError> {
        self.test("as it is now (dry run: the new file is not put in place)")
    }

    fn apply(&self, change: &Change) -> Result<(), BackendError> {
        crate::commit(
            change,
            || self.test("with the new file in place"),
            || self.reload(),
        )
    }
}
