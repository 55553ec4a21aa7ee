//! The one place that runs external tools.
//!
//! Tools are resolved to absolute paths before spawning (cron's `PATH` lacks `/usr/sbin`, where
//! `nft`, `iptables` and `ufw` live), get an argument vector (never a shell), and a failure
//! carries the tool's stderr.

use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Directories searched after `PATH`, so that a run from cron finds the sbin tools.
const SBIN_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/sbin",
    "/sbin",
    "/usr/local/bin",
    "/usr/bin",
    "/bin",
];

/// How long a tool may run before it is killed. Firewall tools answer in milliseconds; a tool
/// still running after this is stuck (a held lock without `-w`, a hung reload).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Why running a tool failed.
#[derive(Debug, thiserror::Error)]
pub struct CommandError {
    /// The command line, for the message (arguments joined with spaces, for reading only).
    pub command: String,
    /// What went wrong.
    pub kind: CommandErrorKind,
}

/// The ways a tool can fail.
#[derive(Debug)]
pub enum CommandErrorKind {
    /// The program is not installed (not on `PATH` nor in the sbin directories).
    NotFound,
    /// Spawning or talking to the process failed.
    Io(std::io::Error),
    /// The tool ran longer than its timeout and was killed.
    Timeout(Duration),
    /// The tool exited unsuccessfully.
    Failed {
        /// Its exit status.
        status: ExitStatus,
        /// Its standard output.
        stdout: String,
        /// Its standard error.
        stderr: String,
    },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CommandErrorKind::NotFound => write!(f, "`{}`: program not found", self.command),
            CommandErrorKind::Io(e) => write!(f, "`{}`: {e}", self.command),
            CommandErrorKind::Timeout(d) => {
                write!(
                    f,
                    "`{}`: killed after {}s without finishing",
                    self.command,
                    d.as_secs()
                )
            }
            CommandErrorKind::Failed {
                status,
                stdout,
                stderr,
            } => {
                write!(f, "`{}` {status}", self.command)?;
                let detail = if stderr.trim().is_empty() {
                    stdout
                } else {
                    stderr
                };
                let detail = detail.trim();
                if !detail.is_empty() {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
        }
    }
}

impl CommandError {
    /// The tool's stderr when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match &self.kind {
            CommandErrorKind::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }

    /// Whether the program is missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, CommandErrorKind::NotFound)
    }
}

/// What a successful run printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Standard output.
    pub stdout: String,
    /// Standard error (tools warn there even on success).
    pub stderr: String,
}

/// Runs tools, optionally inside a network namespace (`ip netns exec NS`), which is how the
/// backends' own tests reach a namespace without touching the host.
#[derive(Debug, Clone)]
pub struct Runner {
    netns: Option<String>,
    timeout: Duration,
}

impl Default for Runner {
    fn default() -> Self {
        Runner {
            netns: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl Runner {
    /// Runs tools directly on this host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs every tool as `ip netns exec NAME tool ...`.
    pub fn in_netns(name: impl Into<String>) -> Self {
        Runner {
            netns: Some(name.into()),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The network namespace tools run in (`ip netns exec NAME`), if any: code that talks to the
    /// kernel itself (netlink) must enter the same namespace to see the same firewall.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Sets the timeout for each tool run.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether `program` can be found.
    pub fn has(&self, program: &str) -> bool {
        resolve(program).is_some()
    }

    /// Runs `program args...`, feeding `stdin` if given; `Err` unless it exits 0.
    pub fn run<S: AsRef<str>>(
        &self,
        program: &str,
        args: &[S],
        stdin: Option<&str>,
    ) -> Result<Output, CommandError> {
        let (status, stdout, stderr) = self.spawn(program, args, stdin)?;
        if status.success() {
            Ok(Output { stdout, stderr })
        } else {
            Err(CommandError {
                command: command_line(program, args),
                kind: CommandErrorKind::Failed {
                    status,
                    stdout,
                    stderr,
                },
            })
        }
    }

    /// Runs a tool and returns its status and output whatever the status (for tools whose exit
    /// code is an answer, like `nft -c` or `ipset list`).
    pub fn run_status<S: AsRef<str>>(
        &self,
        program: &str,
        args: &[S],
        stdin: Option<&str>,
    ) -> Result<(ExitStatus, Output), CommandError> {
        let (status, stdout, stderr) = self.spawn(program, args, stdin)?;
        Ok((status, Output { stdout, stderr }))
    }

    fn spawn<S: AsRef<str>>(
        &self,
        program: &str,
        args: &[S],
        stdin: Option<&str>,
    ) -> Result<(ExitStatus, String, String), CommandError> {
        let err = |kind| CommandError {
            command: command_line(program, args),
            kind,
        };
        let resolved = resolve(program).ok_or_else(|| err(CommandErrorKind::NotFound))?;
        let mut argv: Vec<OsString> = Vec::new();
        let exe = match &self.netns {
            Some(ns) => {
                let ip = resolve("ip").ok_or_else(|| err(CommandErrorKind::NotFound))?;
                argv.extend([
                    "netns".into(),
                    "exec".into(),
                    ns.into(),
                    resolved.into_os_string(),
                ]);
                ip
            }
            None => resolved,
        };
        argv.extend(args.iter().map(|a| OsString::from(a.as_ref())));
        tracing::debug!(command = %command_line(program, args), "running");
        let mut child = Command::new(&exe)
            .args(&argv)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C")
            .spawn()
            .map_err(|e| err(CommandErrorKind::Io(e)))?;

        let writer = stdin.map(|input| {
            let mut pipe = child.stdin.take().expect("stdin piped");
            let input = input.to_owned();
            std::thread::spawn(move || pipe.write_all(input.as_bytes()))
        });
        let out_reader = Collector::start(child.stdout.take().expect("stdout piped"));
        let err_reader = Collector::start(child.stderr.take().expect("stderr piped"));

        let deadline = Instant::now() + self.timeout;
        // Poll with a short, growing pause: firewall tools finish in milliseconds, and each
        // millisecond slept here is paid once per tool call (ufw makes one call per rule).
        let mut pause = Duration::from_micros(50);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(err(CommandErrorKind::Timeout(self.timeout)));
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(2));
                }
                Err(e) => return Err(err(CommandErrorKind::Io(e))),
            }
        };
        if let Some(w) = writer {
            // A tool may exit without reading all its input (after an error); that is not ours to report.
            let _ = w.join();
        }
        // A tool that started a daemon (csf -ra starts lfd) may leave it holding our pipes: what
        // was printed until shortly after the tool exited is its output; we do not wait for the
        // daemon to close them.
        let grace = Instant::now() + PIPE_GRACE;
        let stdout = out_reader
            .finish(grace)
            .map_err(|e| err(CommandErrorKind::Io(e)))?;
        let stderr = err_reader
            .finish(grace)
            .map_err(|e| err(CommandErrorKind::Io(e)))?;
        Ok((
            status,
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        ))
    }
}

/// How long output is still collected after a tool exited, for pipes a daemon it started keeps.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Reads one pipe to its end on a thread of its own, keeping what arrived so far.
struct Collector {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    done: std::sync::mpsc::Receiver<std::io::Result<()>>,
}

impl Collector {
    fn start(mut pipe: impl Read + Send + 'static) -> Collector {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, done) = std::sync::mpsc::channel();
        let shared = std::sync::Arc::clone(&buf);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            let result = loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break Ok(()),
                    Ok(n) => shared
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let _ = tx.send(result);
        });
        Collector { buf, done }
    }

    /// What was read: everything when the pipe closes before `until`, else what arrived by then.
    fn finish(self, until: Instant) -> std::io::Result<Vec<u8>> {
        match self
            .done
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            Ok(Err(e)) => return Err(e),
            Ok(Ok(())) => {}
            Err(_) => tracing::debug!("a pipe stayed open after the tool exited; not waiting"),
        }
        let buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        Ok(buf.clone())
    }
}

/// Finds `program` on `PATH`, then in the sbin directories. A name with a `/` is used as is.
pub fn resolve(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn command_line<S: AsRef<str>>(program: &str, args: &[S]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(AsRef::as_ref))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_stdout_and_feeds_stdin() {
        let out = Runner::new()
            .run("cat", &[] as &[&str], Some("hello\n"))
            .unwrap();
        assert_eq!(out.stdout, "hello\n");
    }

    #[test]
    fn failure_carries_stderr_and_command() {
        let err = Runner::new()
            .run("sh", &["-c", "echo boom >&2; exit 3"], None)
            .unwrap_err();
        assert_eq!(err.stderr(), Some("boom\n"));
        let msg = err.to_string();
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn missing_program_is_not_found() {
        let err = Runner::new()
            .run("cf-allowlist-no-such-tool", &["x"], None)
            .unwrap_err();
        assert!(err.is_not_found());
    }

    #[test]
    fn a_stuck_tool_is_killed() {
        let err = Runner::new()
            .with_timeout(Duration::from_millis(200))
            .run("sleep", &["5"], None)
            .unwrap_err();
        assert!(matches!(err.kind, CommandErrorKind::Timeout(_)));
    }

    #[test]
    fn sbin_tools_resolve_without_path() {
        // `ip` is in /usr/sbin or /sbin on Debian; the fallback list finds it whatever PATH says.
        // PATH is read per call, so a child process with an empty PATH shows the fallback alone.
        if std::env::var_os("CFA_RESOLVE_CHILD").is_some() {
            assert_eq!(std::env::var_os("PATH").unwrap_or_default(), "");
            let ip = resolve("ip").expect("ip found through the sbin fallback");
            assert!(
                ip.starts_with("/usr/sbin") || ip.starts_with("/sbin"),
                "{ip:?}"
            );
            return;
        }
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "process::tests::sbin_tools_resolve_without_path"])
            .env("PATH", "")
            .env("CFA_RESOLVE_CHILD", "1")
            .status()
            .unwrap();
        assert!(status.success(), "the child with an empty PATH failed");
    }

    #[test]
    fn a_daemon_holding_the_pipe_does_not_hang_the_run() {
        // The shell exits at once but leaves a background sleep holding stdout.
        let started = Instant::now();
        let out = Runner::new()
            .with_timeout(Duration::from_secs(30))
            .run("sh", &["-c", "echo started; sleep 20 & exit 0"], None)
            .unwrap();
        assert_eq!(out.stdout, "started\n");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
