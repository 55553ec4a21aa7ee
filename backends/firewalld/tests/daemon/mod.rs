//! A real firewalld for tests, never the host's: each runs in a network namespace of its own,
//! with a private configuration directory (`/etc/netns/NS/firewalld`, which `ip netns exec`
//! mounts over `/etc/firewalld` for every command in the namespace), a private `/run` and
//! `/var/log` (bind mounts in a private mount namespace: `unshare --mount --propagation private`)
//! and a private D-Bus system bus: a `dbus-daemon` with its own configuration (root allowed,
//! firewalld's bus policy included, no service activation: no polkit either, so firewalld checks
//! that the caller is root) listening on the private `/run/dbus/system_bus_socket`.
//!
//! Clients reach that bus through `DBUS_SYSTEM_BUS_ADDRESS` (the socket's path outside the mount
//! namespace). The daemons are killed by process id when the value is dropped, before the
//! namespace and the directories go.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::NetNs;

/// Binds the private `/run` and `/var/log` (`$1`, `$2`), then becomes the daemon.
const ENTER: &str =
    r#"mount --bind "$1" /run && mount --bind "$2" /var/log && shift 2 && exec "$@""#;

const BUS_CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <deny own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
  </policy>
  <policy user="root">
    <allow own="*"/>
  </policy>
  <include>/usr/share/dbus-1/system.d/FirewallD.conf</include>
</busconfig>
"#;

/// A private bus and firewalld running in a namespace someone else owns (the binary's end to end
/// tests keep theirs in their `Env`). Killed on drop.
pub struct Daemons {
    ns_name: String,
    config_dir: PathBuf,
    dir: tempfile::TempDir,
    dbus: Option<Child>,
    daemon: Option<Child>,
}

/// A running firewalld in a namespace of its own.
pub struct Firewalld {
    daemons: Daemons,
    pub ns: NetNs,
}

impl std::ops::Deref for Firewalld {
    type Target = Daemons;
    fn deref(&self) -> &Daemons {
        &self.daemons
    }
}

impl std::ops::DerefMut for Firewalld {
    fn deref_mut(&mut self) -> &mut Daemons {
        &mut self.daemons
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool, log: impl Fn() -> String) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        // SIGTERM by the child's own id (firewalld cleans up its rules), then wait.
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let start = Instant::now();
        loop {
            match c.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if start.elapsed() > Duration::from_secs(10) => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
    }
}

impl Firewalld {
    /// A new namespace with the stock configuration (a copy of the host's `/etc/firewalld`)
    /// and firewalld running in it.
    pub fn start(tag: &str) -> Firewalld {
        testkit::require_root();
        Self::start_in(NetNs::new(tag))
    }

    /// firewalld in an existing namespace (one a test has linked to a client already).
    pub fn start_in(ns: NetNs) -> Firewalld {
        Firewalld {
            daemons: Daemons::start(&ns),
            ns,
        }
    }
}

impl Daemons {
    /// Starts the bus and firewalld in `ns` (which must outlive the value), with the stock
    /// configuration copied to `/etc/netns/NS/firewalld`.
    pub fn start(ns: &NetNs) -> Daemons {
        testkit::require_root();
        assert!(
            Path::new("/usr/sbin/firewalld").exists(),
            "firewalld is not installed: scripts/test.sh installs it (apt-get install firewalld, \
             never started on the host)"
        );
        ns.overlay_etc(&["firewalld"]);
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["run/dbus", "log"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        fs::write(dir.path().join("bus.conf"), BUS_CONFIG).unwrap();
        let mut fw = Daemons {
            ns_name: ns.name().to_string(),
            config_dir: ns.etc().join("firewalld"),
            dir,
            dbus: None,
            daemon: None,
        };
        let conf = fw.dir.path().join("bus.conf");
        fw.dbus = Some(fw.spawn(
            "dbus",
            &[
                "dbus-daemon",
                "--nofork",
                "--nopidfile",
                &format!("--config-file={}", conf.display()),
            ],
        ));
        let socket = fw.socket();
        wait_for(
            "the private D-Bus socket",
            Duration::from_secs(20),
            || socket.exists(),
            || fw.log("dbus"),
        );
        fw.start_daemon();
        fw
    }

    /// Starts firewalld (again) and waits until it says `running`.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "firewalld already runs");
        self.daemon = Some(self.spawn("firewalld", &["firewalld", "--nofork", "--nopid"]));
        wait_for(
            "firewalld --state running",
            Duration::from_secs(60),
            || self.try_cmd(&["--state"]).1.trim() == "running",
            || self.log("firewalld"),
        );
    }

    /// Stops firewalld (the bus stays): `firewall-cmd` then answers "not running".
    pub fn stop_daemon(&mut self) {
        kill(&mut self.daemon);
    }

    /// `ip netns exec NS program`.
    fn in_ns(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns_name, program]);
        cmd
    }

    fn spawn(&self, tag: &str, argv: &[&str]) -> Child {
        let out = fs::File::create(self.dir.path().join(format!("{tag}.out"))).unwrap();
        let run = self.dir.path().join("run");
        let log = self.dir.path().join("log");
        let mut cmd = self.in_ns("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            ENTER,
            "sh",
        ])
        .arg(&run)
        .arg(&log)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
        cmd.spawn().unwrap_or_else(|e| panic!("start {tag}: {e}"))
    }

    fn log(&self, tag: &str) -> String {
        let out =
            fs::read_to_string(self.dir.path().join(format!("{tag}.out"))).unwrap_or_default();
        let log = fs::read_to_string(self.dir.path().join("log/firewalld")).unwrap_or_default();
        format!("{tag} output: {out}\nfirewalld log: {log}")
    }

    /// firewalld's own log (its private `/var/log/firewalld`).
    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log/firewalld")).unwrap_or_default()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/dbus/system_bus_socket")
    }

    /// The address of the private bus, for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub fn bus(&self) -> String {
        format!("unix:path={}", self.socket().display())
    }

    /// The `firewall-cmd` command vector that reaches this firewalld.
    pub fn command(&self) -> Vec<String> {
        vec![
            "env".into(),
            format!("DBUS_SYSTEM_BUS_ADDRESS={}", self.bus()),
            "firewall-cmd".into(),
        ]
    }

    /// Runs `firewall-cmd args` in the namespace: (success, stdout, stderr).
    pub fn try_cmd(&self, args: &[&str]) -> (bool, String, String) {
        let out = self
            .in_ns("firewall-cmd")
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus())
            .args(args)
            .output()
            .expect("spawn firewall-cmd");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `firewall-cmd args`; panics unless it succeeds; returns stdout.
    #[track_caller]
    pub fn cmd(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_cmd(args);
        assert!(ok, "firewall-cmd {args:?} failed: {err}{out}");
        out
    }

    /// The private configuration directory (`/etc/firewalld` inside the namespace).
    pub fn config_dir(&self) -> PathBuf {
        self.config_dir.clone()
    }

    /// A directory of the test's own, outside the namespace's view of `/etc`.
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Every file of the configuration directory (relative path -> contents: the files are
    /// text, and a mismatch then reads as a diff) that `keep` accepts.
    pub fn files(&self, keep: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let root = self.config_dir();
        let mut paths = Vec::new();
        walk(&root, &mut paths);
        paths
            .into_iter()
            .map(|p| {
                let rel = p.strip_prefix(&root).unwrap().display().to_string();
                (rel, p)
            })
            .filter(|(rel, _)| keep(rel))
            .map(|(rel, p)| {
                let bytes = fs::read(&p).unwrap();
                let text = String::from_utf8(bytes).unwrap_or_else(|e| format!("{e:?}"));
                (rel, text)
            })
            .collect()
    }

    /// Makes a runtime-only change (a port in the unused `block` zone) that any reload drops:
    /// [`Firewalld::marked`] then says whether firewalld reloaded since.
    pub fn mark(&self) {
        self.cmd(&["--zone=block", "--add-port=9/udp"]);
        assert!(self.marked());
    }

    /// Whether the runtime-only change of [`Firewalld::mark`] is still there (no reload since).
    pub fn marked(&self) -> bool {
        self.try_cmd(&["--zone=block", "--query-port=9/udp"])
            .1
            .trim()
            == "yes"
    }

    /// The elements of an nft set in firewalld's table, as nft prints them, sorted.
    pub fn kernel_set(&self, name: &str) -> Vec<String> {
        let out = self
            .in_ns("nft")
            .args(["list", "set", "inet", "firewalld", name])
            .output()
            .expect("spawn nft");
        if !out.status.success() {
            return vec![];
        }
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        let Some(start) = out.find("elements = {") else {
            return vec![];
        };
        let rest = &out[start + "elements = {".len()..];
        let end = rest.find('}').unwrap();
        let mut items: Vec<String> = rest[..end]
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        items.sort();
        items
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        kill(&mut self.daemon);
        kill(&mut self.dbus);
    }
}
