//! The harness: a namespace, an HTTP server inside it, a temp directory, and the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use testkit::http::{Reply, Server};
use testkit::NetNs;

pub const API: &str = include_str!("../fixtures/cloudflare/api-client-v4-ips.json");
pub const V4: &str = include_str!("../fixtures/cloudflare/ips-v4");
pub const V6: &str = include_str!("../fixtures/cloudflare/ips-v6");
pub const API_PATH: &str = "/client/v4/ips";

/// The API answer with `replace` applied to the JSON text (`(from, to)` pairs).
pub fn api_with(replace: &[(&str, &str)]) -> String {
    let mut s = API.to_string();
    for (from, to) in replace {
        assert!(s.contains(from), "fixture has {from}");
        s = s.replace(from, to);
    }
    s
}

/// The 2021 list: 104.16.0.0/12 before Cloudflare split it into /13 + /14.
pub fn api_2020() -> String {
    api_with(&[("\"104.16.0.0/13\", \"104.24.0.0/14\"", "\"104.16.0.0/12\"")])
}

pub struct Env {
    server: Option<Server>,
    pub ns: NetNs,
    pub dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        // The server's listener lives in the namespace; stop it from there before the namespace goes.
        if let Some(server) = self.server.take() {
            self.ns.run_in(move || drop(server));
        }
    }
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Out {
    /// The output of a finished run; a panic (exit 101) fails the test, wherever it happens.
    fn from(out: std::process::Output) -> Out {
        assert_ne!(
            out.status.code(),
            Some(101),
            "cf-allowlist panicked (exit 101): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Env {
    /// A namespace with a server answering like Cloudflare today, and a config using it.
    pub fn new(tag: &str) -> Env {
        let ns = NetNs::new(tag);
        let server = ns.run_in(Server::start);
        let env = Env {
            server: Some(server),
            ns,
            dir: tempfile::tempdir().unwrap(),
        };
        env.serve_api(Reply::ok(API).header("ETag", "\"v1\""));
        env.server().route("/ips-v4", vec![Reply::ok(V4)]);
        env.server().route("/ips-v6", vec![Reply::ok(V6)]);
        env.config("");
        env
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    pub fn serve_api(&self, reply: Reply) {
        self.server().route(API_PATH, vec![reply]);
    }

    /// Makes every Cloudflare URL fail with `status`.
    pub fn cloudflare_down(&self, status: u16) {
        for p in [API_PATH, "/ips-v4", "/ips-v6"] {
            self.server().route(p, vec![Reply::status(status)]);
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn state_file(&self) -> PathBuf {
        self.path("state/state.json")
    }

    /// Writes the config: nftables, our server as Cloudflare, state and lock in the temp dir,
    /// then `extra` YAML (keys not already set).
    pub fn config(&self, extra: &str) {
        let base = self.server().url("");
        let has = |k: &str| extra.lines().any(|l| l.starts_with(k));
        let mut yaml = String::new();
        if !has("backend:") {
            yaml.push_str("backend: nftables\n");
        }
        if !has("sources:") {
            yaml.push_str(&format!(
                "sources:\n  - cloudflare: {{ api_url: \"{base}{API_PATH}\", text_urls: [\"{base}/ips-v4\", \"{base}/ips-v6\"] }}\n"
            ));
        }
        if !has("fetch:") {
            yaml.push_str("fetch: { timeout: 2s, retries: 1 }\n");
        }
        yaml.push_str(&format!("state_dir: {}\n", self.path("state").display()));
        if !has("lock_file:") {
            yaml.push_str(&format!("lock_file: {}\n", self.path("lock").display()));
        }
        yaml.push_str(extra);
        std::fs::write(self.path("config.yaml"), yaml).unwrap();
    }

    /// Runs the binary in the namespace with our config.
    pub fn run(&self, args: &[&str]) -> Out {
        let config = self.path("config.yaml");
        run_in(&self.ns, &config, args)
    }

    /// `nft list ruleset` in the namespace.
    pub fn ruleset(&self) -> String {
        self.ns.exec_ok("nft", &["-a", "list", "ruleset"])
    }

    /// The elements of one of our sets, canonical, sorted.
    pub fn elements(&self, table: &str, set: &str) -> Vec<String> {
        let (ok, out, _) = self
            .ns
            .exec("nft", &["-j", "list", "set", "inet", table, set]);
        if !ok {
            return vec![];
        }
        let v: Value = serde_json::from_str(&out).unwrap();
        let mut items: Vec<String> = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i.get("set"))
            .flat_map(|s| s["elem"].as_array().cloned().unwrap_or_default())
            .map(|e| match e {
                Value::String(s) => {
                    if s.contains('/') {
                        s
                    } else if s.contains(':') {
                        format!("{s}/128")
                    } else {
                        format!("{s}/32")
                    }
                }
                other => format!(
                    "{}/{}",
                    other["prefix"]["addr"].as_str().unwrap(),
                    other["prefix"]["len"]
                ),
            })
            .collect();
        items.sort();
        items
    }
}

pub fn run_in(ns: &NetNs, config: &Path, args: &[&str]) -> Out {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            env!("CARGO_BIN_EXE_cf-allowlist"),
            "-c",
        ])
        .arg(config)
        .args(args)
        .env_remove("CF_ALLOWLIST_LOG")
        .output()
        .expect("run cf-allowlist");
    Out::from(out)
}

/// Sorted canonical lines of a fixture list.
pub fn lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

/// A foreign table that must stay byte-identical through everything we do.
pub fn add_foreign_table(ns: &NetNs) -> String {
    ns.exec_ok(
        "nft",
        &["add table inet web; add chain inet web input { type filter hook input priority 0; policy accept; }; \
           add set inet web blocked { type ipv4_addr; flags interval; elements = { 192.0.2.0/24 } }; \
           add rule inet web input ip saddr @blocked drop; add rule inet web input tcp dport 22 accept comment \"ssh\""],
    );
    ns.exec_ok("nft", &["-a", "list", "table", "inet", "web"])
}

// Helpers for the fault matrices (config_faults.rs, host_faults.rs).

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cf-allowlist")
}

/// Runs `cmd` with stdout and stderr captured, killing it if it has not finished within
/// `limit`. Returns the output and how long it ran; `None` for the output when it was killed.
/// A panic (exit 101) fails the test, as in [`run_in`].
pub fn run_bounded(
    mut cmd: Command,
    limit: std::time::Duration,
) -> (Option<Out>, std::time::Duration) {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::Instant;
    let started = Instant::now();
    let mut child = cmd
        .env_remove("CF_ALLOWLIST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        return (None, elapsed);
    };
    assert_ne!(
        status.code(),
        Some(101),
        "cf-allowlist panicked (exit 101): {stderr}"
    );
    let out = Out {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    };
    (Some(out), elapsed)
}

/// Every path under `dir` (relative, sorted, `/` appended to directories): to show that a run
/// wrote nothing.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                out.push(format!("{rel}/"));
                walk(base, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

impl Env {
    /// Runs the binary in the namespace inside a private mount namespace of its own, between
    /// `setup` and `after` (`sh` scripts; mounts made there vanish with the run), bounded by
    /// `limit`. The exit code is the binary's. `None` when the run had to be killed.
    pub fn run_with_mounts(
        &self,
        setup: &str,
        after: &str,
        args: &[&str],
        limit: std::time::Duration,
    ) -> Option<Out> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns.name()])
            .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "set -e\n{setup}\nset +e\n\"$0\" \"$@\"\nrc=$?\n{after}\nexit $rc"
            ))
            .arg(bin())
            .arg("-c")
            .arg(self.path("config.yaml"))
            .args(args);
        run_bounded(cmd, limit).0
    }

    /// Points `state_dir` in the config at `dir` (the config otherwise as [`Env::config`] wrote it).
    pub fn set_state_dir(&self, dir: &Path) {
        let path = self.path("config.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("state_dir:") {
                    format!("state_dir: {}\n", dir.display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(path, text).unwrap();
    }

    /// Starts the binary in the namespace without waiting (for concurrent runs).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new("ip")
            .args(["netns", "exec", self.ns.name(), bin(), "-c"])
            .arg(self.path("config.yaml"))
            .args(args)
            .env_remove("CF_ALLOWLIST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn cf-allowlist")
    }
}

/// The output of a spawned run (see [`Env::spawn`]), failing the test on a panic.
pub fn finish(child: std::process::Child) -> Out {
    let out = child.wait_with_output().expect("wait for cf-allowlist");
    Out::from(out)
}
