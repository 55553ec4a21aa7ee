//! Test harness for cf-allowlist: throwaway network namespaces (deleted even when a test
//! panics), a root check that fails loudly, and a loopback HTTP server (see [`http`]).
//!
//! Tests never touch the host's firewall or `/etc`: everything runs inside a namespace made for
//! the test, and `ip netns exec NS` mounts `/etc/netns/NS/*` over `/etc/*` for tools like ufw.

#![allow(missing_docs)]

pub mod http;
pub mod tcp;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Fails the test unless it runs as root. Root-only tests must not pass silently elsewhere.
pub fn require_root() {
    // SAFETY-free: geteuid has no preconditions; libc exposes it as unsafe only by convention.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test drives real firewalls in a network namespace and needs root (CAP_NET_ADMIN); \
         run the suite as root (CI does)"
    );
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace that exists for the life of the value, with `lo` up.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a uniquely named namespace `cfa-<tag>-<pid>-<n>` (names stay under 32 bytes).
    pub fn new(tag: &str) -> NetNs {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(8)
            .collect();
        let name = format!("cfa-{tag}-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        ns.exec_ok("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/etc/netns/<name>`: files put here replace `/etc/...` for commands run in the namespace.
    /// Created on first use; removed with the namespace.
    pub fn etc(&self) -> PathBuf {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns overlay");
        dir
    }

    /// Copies the host's `/etc/<entry>` (file or directory) into the overlay for each entry, so
    /// commands in the namespace get a private copy to change (ufw: `["ufw", "default"]`).
    pub fn overlay_etc(&self, entries: &[&str]) {
        let etc = self.etc();
        for entry in entries {
            let from = PathBuf::from("/etc").join(entry);
            let out = Command::new("cp")
                .arg("-a")
                .arg(&from)
                .arg(etc.join(entry))
                .output()
                .unwrap_or_else(|e| panic!("spawn cp: {e}"));
            assert!(
                out.status.success(),
                "copying {} into {}: {}",
                from.display(),
                etc.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Runs a command in the namespace; returns (success, stdout, stderr).
    pub fn exec(&self, program: &str, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("spawn ip netns exec {program}: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a command in the namespace with `input` on its standard input (`nft -f -`,
    /// `iptables-restore`); returns (success, stdout, stderr).
    pub fn exec_input(&self, program: &str, args: &[&str], input: &str) -> (bool, String, String) {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self
            .command(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn ip netns exec {program}: {e}"));
        // A tool that refuses its input early closes the pipe: its answer is in the output.
        let _ = child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes());
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait for {program}: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a command in the namespace, panics unless it succeeds, returns stdout.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let (ok, out, err) = self.exec(program, args);
        assert!(ok, "{program} {args:?} failed in {}: {err}{out}", self.name);
        out
    }

    /// A `Command` for `ip netns exec <name> <program>`, to add args, env and stdin.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a fresh thread that has entered this namespace, so that sockets it creates
    /// (a test HTTP server's listener) live in the namespace; returns what `f` returns.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in the namespace panicked")
    }

    /// Connects this namespace to `other` with a veth pair and gives each end an address
    /// (CIDR notation, e.g. `192.0.2.1/24`); returns the interface names (this side, other side).
    pub fn link(&self, other: &NetNs, here: &[&str], there: &[&str]) -> (String, String) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let a = format!("va{}x{n}", std::process::id() % 100000);
        let b = format!("vb{}x{n}", std::process::id() % 100000);
        run(
            "ip",
            &[
                "link",
                "add",
                &a,
                "netns",
                &self.name,
                "type",
                "veth",
                "peer",
                "name",
                &b,
                "netns",
                &other.name,
            ],
        );
        for addr in here {
            self.exec_ok("ip", &["addr", "add", addr, "dev", &a, "nodad"]);
        }
        for addr in there {
            other.exec_ok("ip", &["addr", "add", addr, "dev", &b, "nodad"]);
        }
        self.exec_ok("ip", &["link", "set", &a, "up"]);
        other.exec_ok("ip", &["link", "set", &b, "up"]);
        (a, b)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
