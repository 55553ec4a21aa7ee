//! How the backend's `ufw` commands run: one `ufw` process per command ([`Driver::Cli`]), or all
//! the commands of one apply in one Python process that drives ufw's own frontend
//! ([`Driver::Frontend`], the default).
//!
//! ufw has no batch mode, and each `ufw` process is a Python start (~0.2 s): a first sync of
//! Cloudflare's 22 ranges took ~4.4 s through the CLI. The frontend driver (`driver.py`, embedded
//! here) is given the very argument vectors the CLI would get, as JSON on stdin, and runs each one
//! as `/usr/sbin/ufw`'s `__main__` does (`parse_command`, a fresh `UFWFrontend`, `do_action`,
//! exit code and output kept apart per command), so ufw writes `user.rules`/`user6.rules` and
//! updates its running chains itself, exactly as its CLI does. It stops at the first command that
//! fails or answers unexpectedly and reports one result per command that ran, so the caller knows
//! which steps were applied and can undo them. What it does differently from one process per
//! command, all of it about cost, none about what ufw decides or writes (`driver.py` has the
//! details): ufw's lock is held around the whole batch; the netfilter capability probe,
//! `iptables -V` and the application profiles are read once per batch; and ufw's "are my
//! chains loaded" check asks one `iptables -S` instead of five `iptables -L` (only on the ufw
//! version whose check that was written against). `tests/driver.rs` applies the same plans with
//! both drivers and compares the rules files byte for byte and the running rulesets.
//!
//! The interpreter is the one on ufw's `#!` line (ufw's modules live in that Python's path, not
//! necessarily in the first `python3` on `PATH`). When the driver cannot start (no interpreter,
//! ufw's modules not importable or not of the shape it drives), nothing has run yet: the batch
//! falls back to the CLI with a warning, so a ufw this driver does not know still gets the same
//! commands, only slower. A failure after a command started is never retried: it is reported, and
//! the caller undoes what went through.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::str::FromStr;

use cfa_core::process::{resolve, CommandErrorKind};
use cfa_core::{BackendError, CommandError, Runner};

/// The Python program that drives ufw's frontend (see the module documentation).
pub const DRIVER_SCRIPT: &str = include_str!("driver.py");

/// The `python3 -c` program: reads the request (with the driver script in it) from stdin and
/// runs the script. The working directory leaves `sys.path` before anything is imported, so a
/// `json.py` or `ufw/` there is never loaded (the ufw script itself has `/usr/sbin` there).
const BOOTSTRAP: &str = "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; \
    import json; r = json.load(sys.stdin); \
    exec(compile(r['script'], 'cf-allowlist-ufw-driver', 'exec'), \
    {'__name__': '__main__', 'REQUEST': r})";

/// How the backend runs its `ufw` commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Driver {
    /// All the commands of one apply (or undo) in one Python process running ufw's own
    /// frontend code; falls back to [`Driver::Cli`] with a warning when that process cannot load
    /// ufw's modules.
    #[default]
    Frontend,
    /// One `ufw` process per command.
    Cli,
}

impl Driver {
    /// The name used in configuration: `frontend` or `cli`.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Frontend => "frontend",
            Driver::Cli => "cli",
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Driver {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "frontend" => Ok(Driver::Frontend),
            "cli" => Ok(Driver::Cli),
            other => Err(format!(
                "unknown ufw driver `{other}` (expected `frontend` or `cli`)"
            )),
        }
    }
}

/// One `ufw` command: its arguments, and the answers that mean ufw did it (ufw exits 0 also
/// when it skipped an existing rule or could not find the rule to delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub args: Vec<String>,
    pub expect: &'static [&'static str],
}

impl Call {
    /// `ufw ARGS...`, for messages.
    fn line(&self) -> String {
        format!("ufw {}", self.args.join(" "))
    }
}

/// A batch that stopped: how many commands went through before `error`.
#[derive(Debug)]
pub(crate) struct Stopped {
    pub done: usize,
    pub error: BackendError,
}

/// Runs `calls` in order with `driver`, stopping at the first that fails.
pub(crate) fn run(runner: &Runner, driver: Driver, calls: &[Call]) -> Result<(), Stopped> {
    if calls.is_empty() {
        return Ok(());
    }
    match driver {
        Driver::Cli => run_cli(runner, calls),
        Driver::Frontend => match run_frontend(runner, calls) {
            Ok(result) => result,
            Err(why) => {
                tracing::warn!(
                    reason = %why,
                    "the ufw frontend driver could not start; running one `ufw` process per \
                     command instead"
                );
                run_cli(runner, calls)
            }
        },
    }
}

/// Whether the frontend driver starts here: ufw found, its interpreter run, ufw's modules
/// loaded (an empty batch: nothing is changed). `Err` says why not; [`Driver::Frontend`] then
/// falls back to the CLI.
pub fn frontend_available(runner: &Runner) -> Result<(), String> {
    match run_frontend(runner, &[]) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(stopped)) => Err(stopped.error.to_string()),
        Err(why) => Err(why.to_string()),
    }
}

fn run_cli(runner: &Runner, calls: &[Call]) -> Result<(), Stopped> {
    for (done, call) in calls.iter().enumerate() {
        let result = match runner.run("ufw", &call.args, None) {
            Ok(out) => check(call, &out.stdout, &out.stderr),
            Err(e) => Err(BackendError::command(
                format!("running `{}`", call.line()),
                e,
            )),
        };
        result.map_err(|error| Stopped { done, error })?;
    }
    Ok(())
}

/// What ufw printed for a command that exited 0: `Ok` when it is one of the expected answers.
fn check(call: &Call, stdout: &str, stderr: &str) -> Result<(), BackendError> {
    let ok = stdout.lines().any(|l| {
        let l = l.trim().trim_end_matches(" (v6)");
        call.expect.contains(&l)
    });
    if ok {
        Ok(())
    } else {
        Err(BackendError::Conflict(format!(
            "`{}` did not do what was asked: {}{}",
            call.line(),
            stdout.trim(),
            stderr.trim()
        )))
    }
}

/// One line of the driver's output.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Reply {
    Start { start_error: String },
    Result(Outcome),
}

/// What one command did, as the CLI would have shown it.
#[derive(Debug, serde::Deserialize)]
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Why the frontend driver did not start (then nothing ran).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// `ufw` is not on `PATH` nor in the sbin directories.
    #[error("`ufw` not found")]
    NoUfw,
    /// ufw's script has no usable `#!` line.
    #[error("reading the interpreter from {path}: {reason}")]
    Shebang { path: PathBuf, reason: String },
    /// The interpreter could not be run at all.
    #[error("{0}")]
    Spawn(CommandError),
    /// The interpreter ran but could not load ufw's modules.
    #[error("loading ufw's modules: {0}")]
    Import(String),
}

/// The interpreter and its leading arguments from a `#!` line (`#! /usr/bin/python3`,
/// `#!/usr/bin/env python3`).
pub(crate) fn interpreter(script: &Path, text: &str) -> Result<Vec<String>, StartError> {
    let bad = |reason: &str| StartError::Shebang {
        path: script.to_path_buf(),
        reason: reason.to_string(),
    };
    let first = text.lines().next().unwrap_or_default();
    let rest = first
        .strip_prefix("#!")
        .ok_or_else(|| bad("the first line is no `#!` line"))?;
    let words: Vec<String> = rest.split_whitespace().map(String::from).collect();
    // `/usr/bin/python3` or `/usr/bin/env python3`: the program that runs the script is a Python.
    let python = |word: &str| {
        Path::new(word)
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("python"))
    };
    let runs_python = match words.as_slice() {
        [env, program, ..] if Path::new(env).file_name() == Some("env".as_ref()) => python(program),
        [program, ..] => python(program),
        [] => false,
    };
    match words.first() {
        Some(program) if !program.starts_with('/') => {
            Err(bad("the interpreter is not an absolute path"))
        }
        Some(_) if !runs_python => Err(bad(
            "ufw is not a Python script here (a wrapper?), so its frontend cannot be driven",
        )),
        Some(_) => Ok(words),
        None => Err(bad("the `#!` line names no interpreter")),
    }
}

/// Runs the batch in one driver process. `Err` when the driver did not start (nothing ran);
/// `Ok(result)` once it did.
fn run_frontend(runner: &Runner, calls: &[Call]) -> Result<Result<(), Stopped>, StartError> {
    let ufw = resolve("ufw").ok_or(StartError::NoUfw)?;
    // The script's first line is all we need; ufw is a small text file.
    let text = std::fs::read(&ufw).map_err(|e| StartError::Shebang {
        path: ufw.clone(),
        reason: e.to_string(),
    })?;
    let head = String::from_utf8_lossy(&text[..text.len().min(256)]).into_owned();
    let mut argv = interpreter(&ufw, &head)?;
    let program = argv.remove(0);
    argv.extend(["-c".to_string(), BOOTSTRAP.to_string()]);
    let request = serde_json::json!({
        "script": DRIVER_SCRIPT,
        "ufw": ufw.to_string_lossy(),
        "commands": calls
            .iter()
            .map(|c| serde_json::json!({ "args": c.args, "expect": c.expect }))
            .collect::<Vec<_>>(),
    });
    // `ufw ARGS` of command `i`, for messages (an empty batch only probes the driver).
    let line = |i: usize| {
        calls
            .get(i)
            .map_or_else(|| "an empty batch".to_string(), Call::line)
    };
    let what = |done: usize| {
        format!(
            "running `{}` through ufw's frontend ({program} -c <cf-allowlist's ufw driver>)",
            line(done)
        )
    };
    let (status, out) = match runner.run_status(&program, &argv, Some(&request.to_string())) {
        Ok(v) => v,
        Err(e) if e.is_not_found() => return Err(StartError::Spawn(e)),
        // Killed or unreachable after it started: which commands went through is unknown.
        Err(e) => {
            return Ok(Err(Stopped {
                done: 0,
                error: BackendError::command(
                    format!(
                        "{} (and the {} command(s) after it; which of them ufw applied is \
                         unknown: check `ufw status` and run a new sync)",
                        what(0),
                        calls.len().saturating_sub(1)
                    ),
                    e,
                ),
            }))
        }
    };
    let mut done = 0;
    for text in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let reply: Reply = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                return Ok(Err(Stopped {
                    done,
                    error: BackendError::Parse {
                        what: format!("the ufw driver's answer for `{}`", line(done)),
                        reason: format!("{e}: {text:?}"),
                    },
                }))
            }
        };
        match reply {
            Reply::Start { start_error } if done == 0 => {
                return Err(StartError::Import(start_error))
            }
            Reply::Start { start_error } => {
                return Ok(Err(Stopped {
                    done,
                    error: BackendError::Parse {
                        what: "the ufw driver's answers".into(),
                        reason: format!("a start error after {done} command(s): {start_error}"),
                    },
                }))
            }
            Reply::Result(outcome) => {
                let Some(call) = calls.get(done) else {
                    return Ok(Err(Stopped {
                        done,
                        error: BackendError::Parse {
                            what: "the ufw driver's answers".into(),
                            reason: format!("more answers than the {} command(s)", calls.len()),
                        },
                    }));
                };
                let result = if outcome.code == 0 {
                    check(call, &outcome.stdout, &outcome.stderr)
                } else {
                    // The error the CLI gives for this command, word for word.
                    Err(BackendError::command(
                        format!("running `{}`", call.line()),
                        CommandError {
                            command: call.line(),
                            kind: CommandErrorKind::Failed {
                                status: ExitStatus::from_raw((outcome.code & 0xff) << 8),
                                stdout: outcome.stdout,
                                stderr: outcome.stderr,
                            },
                        },
                    ))
                };
                if let Err(error) = result {
                    return Ok(Err(Stopped { done, error }));
                }
                done += 1;
            }
        }
    }
    if done == calls.len() {
        return Ok(Ok(()));
    }
    // The driver ended without answering for every command (it crashed or was killed).
    Ok(Err(Stopped {
        done,
        error: BackendError::command(
            what(done),
            CommandError {
                command: format!("{program} -c <cf-allowlist's ufw driver>"),
                kind: CommandErrorKind::Failed {
                    status,
                    stdout: String::new(),
                    stderr: format!(
                        "the driver stopped after {done} of {} command(s) without an answer for \
                         the next: {}",
                        calls.len(),
                        out.stderr.trim()
                    ),
                },
            },
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpreter_comes_from_the_shebang() {
        let p = Path::new("/usr/sbin/ufw");
        assert_eq!(
            interpreter(p, "#! /usr/bin/python3\n#\n").unwrap(),
            ["/usr/bin/python3"]
        );
        assert_eq!(
            interpreter(p, "#!/usr/bin/env python3\n").unwrap(),
            ["/usr/bin/env", "python3"]
        );
        for bad in [
            "",
            "import ufw\n",
            "#!\n",
            "#!python3\n",
            "#!/bin/sh\n",
            "#!/usr/bin/env bash\n",
        ] {
            assert!(interpreter(p, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn driver_names_round_trip() {
        for d in [Driver::Frontend, Driver::Cli] {
            assert_eq!(d.to_string().parse::<Driver>(), Ok(d));
        }
        assert!("python".parse::<Driver>().is_err());
        assert_eq!(Driver::default(), Driver::Frontend);
    }

    #[test]
    fn an_unexpected_answer_is_a_failure_naming_the_command() {
        let call = Call {
            args: vec!["allow".into(), "22/tcp".into()],
            expect: &["Rule added", "Rules updated"],
        };
        assert!(check(&call, "Rule added (v6)\n", "").is_ok());
        let err = check(&call, "Skipping adding existing rule\n", "").unwrap_err();
        assert!(
            err.to_string()
                .contains("`ufw allow 22/tcp` did not do what was asked: Skipping"),
            "{err}"
        );
    }
}
