//! The fault matrix: every fetch fault against every backend, and a failure or a SIGKILL at every
//! tool call of an apply, for every backend.
//!
//! Invariants checked in every case:
//! - a bad answer fails the run (exit 1, `kind: source` or `guard`) and the firewall is byte for
//!   byte as it was; an outage serves the fallback and only ever adds (here: changes nothing,
//!   since the firewall already holds the list);
//! - a tool failing at any call: exit 1 with the firewall exactly as before or exactly at the
//!   target (never between), or exit 0 at the target; the next run converges;
//! - a SIGKILL before any tool call: the next run converges, the one after is a no-op;
//! - foreign objects are never touched; no run panics (the harness asserts exit != 101).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::http::Reply;

use crate::util::*;

/// The backends under test, set up in a namespace with foreign objects of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nftables,
    Iptables,
    Ufw,
    Csf,
}

const ALL: [Kind; 4] = [Kind::Nftables, Kind::Iptables, Kind::Ufw, Kind::Csf];

/// Tools a backend may run, wrapped (by name, first on PATH) so a test can fail or pause a call.
const WRAPPED: &[&str] = &[
    "nft",
    "ipset",
    "iptables",
    "ip6tables",
    "iptables-save",
    "ip6tables-save",
    "iptables-restore",
    "ip6tables-restore",
    "iptables-nft",
    "ip6tables-nft",
    "iptables-nft-save",
    "ip6tables-nft-save",
    "iptables-nft-restore",
    "ip6tables-nft-restore",
    "iptables-legacy",
    "ip6tables-legacy",
    "iptables-legacy-save",
    "ip6tables-legacy-save",
    "iptables-legacy-restore",
    "ip6tables-legacy-restore",
    "ufw",
    "csf",
];

struct Rig {
    env: Env,
    kind: Kind,
    bin: PathBuf,
}

impl Rig {
    fn new(kind: Kind, tag: &str) -> Rig {
        let env = Env::new(tag);
        let bin = env.path("bin");
        std::fs::create_dir(&bin).unwrap();
        for tool in WRAPPED {
            let real = match tool {
                &"csf" => env.path("csf-real"),
                other => match ["/usr/sbin", "/sbin"]
                    .iter()
                    .map(|d| Path::new(d).join(other))
                    .find(|p| p.exists())
                {
                    Some(p) => p,
                    None => continue,
                },
            };
            write_script(
                &bin.join(tool),
                &format!(
                    "#!/bin/sh\n\
                     n=$(( $(cat {d}/calls 2>/dev/null || echo 0) + 1 )); echo $n > {d}/calls\n\
                     echo \"$n {tool} $*\" >> {d}/calls.log\n\
                     if [ \"$n\" = \"$(cat {d}/pause-at 2>/dev/null)\" ]; then touch {d}/paused; sleep 60; fi\n\
                     if [ \"$n\" = \"$(cat {d}/fail-at 2>/dev/null)\" ]; then echo \"injected failure of {tool}\" >&2; exit 1; fi\n\
                     exec {real} \"$@\"\n",
                    d = env.dir.path().display(),
                    real = real.display()
                ),
            );
        }
        let rig = Rig { env, kind, bin };
        rig.setup();
        rig
    }

    fn setup(&self) {
        let env = &self.env;
        let fetch = "fetch: { timeout: 1s, retries: 1 }\n";
        match self.kind {
            Kind::Nftables => {
                add_foreign_table(&env.ns);
                env.config(&format!("backend: nftables\n{fetch}"));
            }
            Kind::Iptables => {
                env.ns.exec_ok(
                    "iptables-nft",
                    &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
                );
                env.config(&format!(
                    "backend: iptables\niptables: {{ variant: nft, ipset: always }}\n{fetch}"
                ));
            }
            Kind::Ufw => {
                env.ns.overlay_etc(&["ufw", "default"]);
                env.ns.exec_ok("ufw", &["--force", "enable"]);
                env.ns.exec_ok("ufw", &["allow", "22/tcp"]);
                env.config(&format!("backend: ufw\n{fetch}"));
            }
            Kind::Csf => {
                let dir = env.path("csf");
                std::fs::create_dir(&dir).unwrap();
                std::fs::write(
                    dir.join("csf.conf"),
                    "TESTING = \"0\"\nIPV6 = \"1\"\nTCP_IN = \"22\"\nTCP6_IN = \"22\"\n",
                )
                .unwrap();
                std::fs::write(
                    dir.join("csf.allow"),
                    "# operator\ntcp|in|d=22|s=192.0.2.10\n",
                )
                .unwrap();
                std::fs::write(dir.join("csf.ignore"), "127.0.0.1\n").unwrap();
                // The stand-in csf records what it loaded: the firewall csf would have built.
                write_script(
                    &env.path("csf-real"),
                    &format!(
                        "#!/bin/sh\ncat {d}/cf-allowlist.allow {d}/csf.allow 2>/dev/null | md5sum > {d}/loaded\n",
                        d = dir.display()
                    ),
                );
                env.config(&format!(
                    "backend: csf\ncsf: {{ dir: {}, reload: [csf, -ra] }}\n{fetch}",
                    dir.display()
                ));
            }
        }
    }

    /// Runs the binary with the wrapped tools first on PATH.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.env.ns.name()])
            .arg(env!("CARGO_BIN_EXE_cf-allowlist"))
            .arg("-c")
            .arg(self.env.path("config.yaml"))
            .args(args)
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin",
                    self.bin.display()
                ),
            )
            .env_remove("CF_ALLOWLIST_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        Out::from(self.command(args).output().unwrap())
    }

    fn sync(&self) -> Out {
        self.run(&["sync", "--output", "json"])
    }

    fn control(&self, name: &str) -> PathBuf {
        self.env.dir.path().join(name)
    }

    fn reset_calls(&self) {
        for f in ["calls", "calls.log", "pause-at", "fail-at", "paused"] {
            let _ = std::fs::remove_file(self.control(f));
        }
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.control("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Everything the firewall (and, for csf, what csf last loaded) holds, foreign objects
    /// included, without handles or counters.
    fn snapshot(&self) -> String {
        let ns = &self.env.ns;
        match self.kind {
            Kind::Nftables => ns.exec_ok("nft", &["list", "ruleset"]),
            Kind::Iptables => {
                let mut s = String::new();
                for tool in ["iptables-nft-save", "ip6tables-nft-save"] {
                    s.push_str(&strip_counters(&ns.exec_ok(tool, &[])));
                }
                // The hash seed (`initval`) is random per set: not part of the state.
                let mut sets: Vec<String> = ns
                    .exec_ok("ipset", &["save"])
                    .lines()
                    .map(|l| match l.find(" initval ") {
                        Some(i) => l[..i].to_string(),
                        None => l.to_string(),
                    })
                    .collect();
                sets.sort();
                s + &sets.join("\n")
            }
            Kind::Ufw => {
                // ufw appends a re-added rule at the end: our allow rules' order is not state
                // (they never overlap the operator's), so each file's lines are compared sorted.
                let etc = ns.etc();
                let mut s = String::new();
                let sorted = |text: String| {
                    let mut lines: Vec<&str> = text.lines().collect();
                    lines.sort();
                    lines.join("\n") + "\n"
                };
                for f in ["ufw/user.rules", "ufw/user6.rules"] {
                    s.push_str(&sorted(std::fs::read_to_string(etc.join(f)).unwrap()));
                }
                for tool in ["iptables-save", "ip6tables-save"] {
                    s.push_str(&sorted(strip_counters(&ns.exec_ok(tool, &[]))));
                }
                s
            }
            Kind::Csf => {
                let dir = self.env.path("csf");
                let mut s = String::new();
                for f in [
                    "cf-allowlist.allow",
                    "cf-allowlist.ignore",
                    "csf.allow",
                    "csf.ignore",
                    "loaded",
                ] {
                    s.push_str(&format!(
                        "== {f}\n{}",
                        std::fs::read_to_string(dir.join(f)).unwrap_or_default()
                    ));
                }
                s
            }
        }
    }

    /// Serves the 2020 list (A) or today's (B) on every Cloudflare URL.
    fn serve(&self, today: bool) {
        let server = self.env.server();
        if today {
            server.route(API_PATH, vec![Reply::ok(API).header("ETag", "\"b\"")]);
            server.route("/ips-v4", vec![Reply::ok(V4)]);
        } else {
            let v4_2020 = V4.replace("104.16.0.0/13\n104.24.0.0/14\n", "104.16.0.0/12\n");
            assert_ne!(v4_2020, V4);
            server.route(
                API_PATH,
                vec![Reply::ok(api_2020()).header("ETag", "\"a\"")],
            );
            server.route("/ips-v4", vec![Reply::ok(v4_2020)]);
        }
        server.route("/ips-v6", vec![Reply::ok(V6)]);
    }

    /// Puts the firewall at state A (the 2020 list), converged; returns its snapshot.
    fn at_a(&self) -> String {
        self.reset_calls();
        self.serve(false);
        self.sync().expect(0);
        let a = self.snapshot();
        let j = self.sync().expect(0).json();
        assert_eq!(
            j["changed"], false,
            "{:?}: A is a fixed point: {j}",
            self.kind
        );
        assert_eq!(self.snapshot(), a);
        self.reset_calls();
        a
    }
}

/// The lines that differ between two snapshots, for a readable failure.
fn diff(a: &str, b: &str) -> String {
    let only = |x: &str, y: &str| -> Vec<String> {
        let ys: std::collections::BTreeSet<&str> = y.lines().collect();
        x.lines()
            .filter(|l| !ys.contains(l))
            .map(String::from)
            .collect()
    };
    format!(
        "only in the first: {:?}\nonly in the second: {:?}",
        only(a, b),
        only(b, a)
    )
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn strip_counters(save: &str) -> String {
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(i)) => format!("{}\n", &l[..i]),
            _ => format!("{l}\n"),
        })
        .collect()
}

/// One fetch fault: what the three Cloudflare URLs answer, and what the run must do.
struct FetchCase {
    name: &'static str,
    api: Vec<Reply>,
    v4: Vec<Reply>,
    v6: Vec<Reply>,
    expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exit 1 with this error kind; the firewall untouched.
    Fails(&'static str),
    /// Exit 0, degraded (a fallback served); nothing removed.
    Degraded,
    /// Exit 0, not degraded.
    Serves,
}

fn fetch_cases() -> Vec<FetchCase> {
    let html =
        || Reply::ok("<!DOCTYPE html><html><body>Attention Required! | Cloudflare</body></html>");
    let all = |r: fn() -> Reply| (vec![r()], vec![r()], vec![r()]);
    let case = |name, (api, v4, v6): (Vec<Reply>, Vec<Reply>, Vec<Reply>), expect| FetchCase {
        name,
        api,
        v4,
        v6,
        expect,
    };
    let one_v6 = V6.lines().next().unwrap().to_string();
    let all_v6: Vec<String> = V6.lines().map(|l| format!("\"{}\"", l.trim())).collect();
    let shrunk = api_with(&[(&all_v6.join(", "), &format!("\"{one_v6}\""))]);
    let big = "173.245.48.0/20\n".repeat(80_000);
    vec![
        case(
            "5xx everywhere",
            all(|| Reply::status(503)),
            Expect::Degraded,
        ),
        case(
            "timeout everywhere",
            all(|| Reply::ok(V4).delay(Duration::from_millis(1500))),
            Expect::Degraded,
        ),
        case(
            "truncated everywhere",
            all(|| Reply::ok(API).truncate(40)),
            Expect::Degraded,
        ),
        case(
            "5xx then success",
            (
                vec![Reply::status(502), Reply::ok(API)],
                vec![Reply::ok(V4)],
                vec![Reply::ok(V6)],
            ),
            Expect::Serves,
        ),
        case(
            "HTML everywhere",
            (vec![html()], vec![html()], vec![html()]),
            Expect::Fails("source"),
        ),
        case(
            "success: false, text lists HTML",
            (
                vec![Reply::ok(
                    r#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"result":null}"#,
                )],
                vec![html()],
                vec![html()],
            ),
            Expect::Fails("source"),
        ),
        case(
            "empty everywhere",
            all(|| Reply::ok("")),
            Expect::Fails("source"),
        ),
        case(
            "invalid UTF-8 everywhere",
            all(|| Reply::ok(vec![0xff, 0xfe, b'1', b'.', 0x80])),
            Expect::Fails("source"),
        ),
        case(
            "over the size cap",
            (
                vec![Reply::ok(big.clone())],
                vec![Reply::ok(big.clone())],
                vec![Reply::ok(big)],
            ),
            Expect::Fails("source"),
        ),
        case(
            "special ranges",
            (
                vec![Reply::ok(api_with(&[(
                    "\"173.245.48.0/20\"",
                    "\"10.0.0.0/8\"",
                )]))],
                vec![Reply::ok(format!("10.0.0.0/8\n{V4}"))],
                vec![Reply::ok(V6)],
            ),
            Expect::Fails("source"),
        ),
        case(
            "an eighth of IPv4",
            (
                vec![Reply::ok(api_with(&[(
                    "\"173.245.48.0/20\"",
                    "\"32.0.0.0/3\"",
                )]))],
                vec![Reply::ok(format!("32.0.0.0/3\n{V4}"))],
                vec![Reply::ok(V6)],
            ),
            Expect::Fails("source"),
        ),
        case(
            "redirect loop everywhere",
            (
                vec![Reply::redirect(302, API_PATH)],
                vec![Reply::redirect(302, "/ips-v4")],
                vec![Reply::redirect(302, "/ips-v6")],
            ),
            Expect::Fails("source"),
        ),
        case(
            "https to http redirect",
            (
                vec![Reply::redirect(301, "http://cf-allowlist.invalid/ips")],
                vec![Reply::redirect(301, "http://cf-allowlist.invalid/ips-v4")],
                vec![Reply::redirect(301, "http://cf-allowlist.invalid/ips-v6")],
            ),
            Expect::Fails("source"),
        ),
        case(
            "API HTML, text lists down",
            (
                vec![html()],
                vec![Reply::status(503)],
                vec![Reply::status(503)],
            ),
            Expect::Fails("source"),
        ),
        case(
            "API down, IPv4 list down, IPv6 list HTML",
            (
                vec![Reply::status(503)],
                vec![Reply::status(503)],
                vec![html()],
            ),
            Expect::Fails("source"),
        ),
        case(
            "IPv6 shrinks past the guard",
            (
                vec![Reply::ok(shrunk)],
                vec![Reply::ok(V4)],
                vec![Reply::ok(one_v6)],
            ),
            Expect::Fails("guard"),
        ),
    ]
}

fn fetch_matrix(kind: Kind, tag: &str) -> usize {
    let rig = Rig::new(kind, tag);
    rig.serve(true);
    rig.sync().expect(0);
    let converged = rig.snapshot();
    let mut ran = 0;
    for case in fetch_cases() {
        let server = rig.env.server();
        server.route(API_PATH, case.api);
        server.route("/ips-v4", case.v4);
        server.route("/ips-v6", case.v6);
        let out = rig.sync();
        let ctx = format!("{kind:?} / {}: {}\n{}", case.name, out.stdout, out.stderr);
        match case.expect {
            Expect::Fails(kind) => {
                assert_eq!(out.code, 1, "{ctx}");
                assert_eq!(out.json()["error"]["kind"], kind, "{ctx}");
                assert!(!out.stderr.trim().is_empty(), "an error is logged: {ctx}");
            }
            Expect::Degraded | Expect::Serves => {
                assert_eq!(out.code, 0, "{ctx}");
                let j = out.json();
                assert_eq!(j["degraded"], case.expect == Expect::Degraded, "{ctx}");
                assert_eq!(j["removed"]["ipv4"], serde_json::json!([]), "{ctx}");
                assert_eq!(j["removed"]["ipv6"], serde_json::json!([]), "{ctx}");
                if case.expect == Expect::Degraded {
                    assert!(
                        out.stderr.contains("add-only"),
                        "the fallback is warned about: {ctx}"
                    );
                }
            }
        }
        assert_eq!(
            rig.snapshot(),
            converged,
            "the firewall is as it was: {ctx}"
        );
        ran += 1;
        rig.serve(true);
    }
    // 304 with a cache: current, not degraded; without a cache: a bad answer.
    rig.sync().expect(0); // caches the answer with its ETag
    rig.env.server().route(API_PATH, vec![Reply::status(304)]);
    let j = rig.sync().expect(0).json();
    assert_eq!(j["source"][0]["from"], "not_modified", "{kind:?}: {j}");
    std::fs::remove_file(rig.env.state_file()).unwrap();
    for path in ["/ips-v4", "/ips-v6"] {
        rig.env.server().route(path, vec![Reply::status(304)]);
    }
    let out = rig.sync();
    assert_eq!(out.expect(1).json()["error"]["kind"], "source");
    assert!(out.stderr.contains("not conditional"), "{}", out.stderr);
    assert_eq!(rig.snapshot(), converged, "{kind:?}: 304 without a cache");
    ran + 2
}

#[test]
fn fetch_faults_nftables() {
    let n = fetch_matrix(Kind::Nftables, "fxnft");
    eprintln!("fetch fault matrix, nftables: {n} cases");
}

#[test]
fn fetch_faults_iptables() {
    let n = fetch_matrix(Kind::Iptables, "fxipt");
    eprintln!("fetch fault matrix, iptables: {n} cases");
}

#[test]
fn fetch_faults_ufw() {
    let n = fetch_matrix(Kind::Ufw, "fxufw");
    eprintln!("fetch fault matrix, ufw: {n} cases");
}

#[test]
fn fetch_faults_csf() {
    let n = fetch_matrix(Kind::Csf, "fxcsf");
    eprintln!("fetch fault matrix, csf: {n} cases");
}

/// Where the change under test starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The 2020 list applied: A -> B changes entries only.
    OldList,
    /// Nothing of ours (after a purge): A -> B is a first sync, which builds the structure.
    Empty,
}

impl Rig {
    /// Puts the firewall at `start`; returns its snapshot, with the call log reset.
    fn at(&self, start: Start) -> String {
        match start {
            Start::OldList => self.at_a(),
            Start::Empty => {
                self.reset_calls();
                self.run(&["purge", "--output", "json"]).expect(0);
                let a = self.snapshot();
                self.reset_calls();
                a
            }
        }
    }
}

/// Every tool call of the change A -> B fails once, in turn; then every call is preceded by a
/// SIGKILL of the whole run, in turn.
fn apply_matrix(kind: Kind, tag: &str) -> (usize, usize) {
    apply_matrix_from(kind, tag, Start::OldList, None)
}

/// [`apply_matrix`] from `start`, with `config` (the whole file, but for the state and the
/// sources) instead of the rig's own.
fn apply_matrix_from(kind: Kind, tag: &str, start: Start, config: Option<&str>) -> (usize, usize) {
    let rig = Rig::new(kind, tag);
    if let Some(config) = config {
        rig.env.config(config);
    }
    // One warm-up round A -> B first: ufw completes its own IPv6 chains on its first reload.
    rig.at(start);
    rig.serve(true);
    rig.sync().expect(0);
    let a = rig.at(start);
    rig.serve(true);
    rig.sync().expect(0);
    let b = rig.snapshot();
    assert_ne!(a, b, "{kind:?}: the change is visible");
    let a_again = rig.at(start);
    assert!(
        a_again == a,
        "{kind:?}: A -> B -> A is deterministic\n{}",
        diff(&a, &a_again)
    );

    // How many tool calls a clean A -> B run makes.
    rig.serve(true);
    rig.sync().expect(0);
    let calls = rig.calls();
    if kind == Kind::Nftables && start == Start::OldList {
        // Element changes (and every read) go over netlink from the process: there is no tool
        // call to fail or to kill before. The kernel applies the batch whole or not at all
        // (backends/nftables/tests/netlink.rs: a refused batch changes nothing).
        assert!(
            calls.is_empty(),
            "an nftables element change runs no tool: {calls:?}"
        );
        return (0, 0);
    }
    assert!(!calls.is_empty(), "{kind:?}: the wrapped tools are used");
    let n = calls.len();

    for k in 1..=n {
        let again = rig.at(start);
        assert!(again == a, "{kind:?}: back at A\n{}", diff(&a, &again));
        rig.serve(true);
        std::fs::write(rig.control("fail-at"), k.to_string()).unwrap();
        let out = rig.sync();
        let failed = rig.calls().get(k - 1).cloned().unwrap_or_default();
        let ctx = format!(
            "{kind:?}: call {k}/{n} ({failed}) failed\n{}\n{}",
            out.stdout, out.stderr
        );
        let now = rig.snapshot();
        match out.code {
            0 => assert_eq!(now, b, "exit 0 means converged: {ctx}"),
            1 => {
                assert!(
                    now == a || now == b,
                    "exit 1 leaves A or B, never between: {ctx}\n{now}"
                );
                let j: Value = out.json();
                assert!(
                    j["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()),
                    "{ctx}"
                );
            }
            other => panic!("exit {other}: {ctx}"),
        }
        let _ = std::fs::remove_file(rig.control("fail-at"));
        rig.sync().expect(0);
        let now = rig.snapshot();
        assert!(
            now == b,
            "the next run converges: {ctx}\n{}",
            diff(&b, &now)
        );
    }

    for k in 1..=n {
        let again = rig.at(start);
        assert!(again == a, "{kind:?}: back at A\n{}", diff(&a, &again));
        rig.serve(true);
        std::fs::write(rig.control("pause-at"), k.to_string()).unwrap();
        let mut child = rig.command(&["sync"]).process_group(0).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if rig.control("paused").exists() {
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break; // fewer calls this time: nothing to kill
            }
            assert!(Instant::now() < deadline, "{kind:?}: call {k} never came");
            std::thread::sleep(Duration::from_millis(5));
        }
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.wait();
        let _ = std::fs::remove_file(rig.control("pause-at"));
        let out = rig.sync();
        let ctx = format!(
            "{kind:?}: killed before call {k}/{n}\n{}\n{}",
            out.stdout, out.stderr
        );
        assert_eq!(out.code, 0, "{ctx}");
        let now = rig.snapshot();
        assert!(
            now == b,
            "the next run converges: {ctx}\n{}",
            diff(&b, &now)
        );
        let j = rig.sync().expect(0).json();
        assert_eq!(j["changed"], false, "then a no-op: {ctx}");
    }
    (n, n)
}

#[test]
fn apply_faults_nftables() {
    let (f, k) = apply_matrix(Kind::Nftables, "axnft");
    assert_eq!((f, k), (0, 0), "an element change calls no tool");
    // A first sync builds the table with `nft -f` (empty sets, the accepts), fills the sets over
    // netlink, then appends the restrict rules with `nft -f`: each call fails, and is killed
    // before, in turn; a failure after the first deletes the table again.
    let restrict = "backend: nftables\nrestrict: true\nfetch: { timeout: 1s, retries: 1 }\n";
    let (f, k) = apply_matrix_from(Kind::Nftables, "axnfb", Start::Empty, Some(restrict));
    assert_eq!(f, 2, "two nft calls: the table, the restrict rules");
    eprintln!("apply fault matrix, nftables first sync: {f} failures, {k} kills");
}

#[test]
fn apply_faults_iptables() {
    let (f, k) = apply_matrix(Kind::Iptables, "axipt");
    eprintln!("apply fault matrix, iptables: {f} failures, {k} kills");
}

#[test]
fn apply_faults_ufw() {
    let (f, k) = apply_matrix(Kind::Ufw, "axufw");
    eprintln!("apply fault matrix, ufw: {f} failures, {k} kills");
}

#[test]
fn apply_faults_csf() {
    let (f, k) = apply_matrix(Kind::Csf, "axcsf");
    eprintln!("apply fault matrix, csf: {f} failures, {k} kills");
}

/// Dry runs write nothing anywhere, for every backend, whatever the plan.
#[test]
fn dry_run_writes_nothing_anywhere() {
    for (i, kind) in ALL.into_iter().enumerate() {
        let rig = Rig::new(kind, &format!("dry{i}"));
        let a = rig.at_a();
        let state = std::fs::read(rig.env.state_file()).unwrap();
        rig.serve(true);
        let j = rig
            .run(&["sync", "--dry-run", "--output", "json"])
            .expect(0)
            .json();
        assert_eq!(j["changed"], true, "{kind:?}");
        assert_eq!(rig.snapshot(), a, "{kind:?}");
        assert_eq!(
            std::fs::read(rig.env.state_file()).unwrap(),
            state,
            "{kind:?}"
        );
        let j = rig
            .run(&["purge", "--dry-run", "--output", "json"])
            .expect(0)
            .json();
        assert_eq!(j["changed"], true, "{kind:?}");
        assert_eq!(j["degraded"], false, "{kind:?}");
        assert_eq!(rig.snapshot(), a, "{kind:?}");
    }
}

/// A missing tool and a run without privileges are clear errors that change nothing.
#[test]
fn missing_tool_and_not_root() {
    for (i, kind) in [Kind::Nftables, Kind::Iptables, Kind::Ufw]
        .into_iter()
        .enumerate()
    {
        let rig = Rig::new(kind, &format!("tool{i}"));
        rig.at_a();
        rig.serve(true);
        // /usr/sbin (and /sbin, a link to it on Debian) hidden behind an empty tmpfs.
        let without_sbin = |args: &[&str]| -> (Option<i32>, Value) {
            let out = Command::new("ip")
                .args(["netns", "exec", rig.env.ns.name()])
                .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
                .arg("mount -t tmpfs none /usr/sbin && exec \"$0\" \"$@\"")
                .arg(env!("CARGO_BIN_EXE_cf-allowlist"))
                .arg("-c")
                .arg(rig.env.path("config.yaml"))
                .args(args)
                .env("PATH", "/usr/sbin:/usr/bin:/bin")
                .output()
                .unwrap();
            assert_ne!(out.status.code(), Some(101), "{out:?}");
            let j = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{kind:?}: not JSON ({e}): {out:?}"));
            (out.status.code(), j)
        };
        if kind == Kind::Nftables {
            // Reads and element changes need no nft (netlink from the process) ...
            let (code, j) = without_sbin(&["sync", "--output", "json"]);
            assert_eq!(code, Some(0), "an element change without nft: {j}");
            assert_eq!(j["changed"], true, "{j}");
            let (code, j) = without_sbin(&["sync", "--output", "json"]);
            assert_eq!((code, &j["changed"]), (Some(0), &Value::Bool(false)), "{j}");
            // ... building the table does.
            rig.run(&["purge", "--output", "json"]).expect(0);
            let empty = rig.snapshot();
            let (code, j) = without_sbin(&["sync", "--output", "json"]);
            assert_eq!(code, Some(1), "{j}");
            let message = j["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("`nft") && message.contains("not found"),
                "the missing tool is named: {message}"
            );
            assert_eq!(rig.snapshot(), empty);
        }
        let a = rig.at_a();
        rig.serve(true);
        if kind != Kind::Nftables {
            let (code, j) = without_sbin(&["sync", "--output", "json"]);
            assert_eq!(code, Some(1), "{kind:?}: {j}");
            let message = j["error"]["message"].as_str().unwrap().to_string();
            assert!(
                message.contains("not found") || message.contains("not installed"),
                "{kind:?}: the missing tool is named: {message}"
            );
            assert_eq!(rig.snapshot(), a, "{kind:?}");
        }
        if kind == Kind::Nftables {
            // `auto` with no tool at all says what it looked for and what to install.
            let (code, j) = without_sbin(&["-b", "auto", "sync", "--output", "json"]);
            assert_eq!(code, Some(1), "{j}");
            let message = j["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("found no firewall tool") && message.contains("install nftables"),
                "{message}"
            );
        }

        // Not root: a config, state and lock the user can reach, so that the run gets as far as
        // the firewall, which refuses it; nothing changes.
        let mine = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(mine.path(), Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(mine.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let config: String = std::fs::read_to_string(rig.env.path("config.yaml"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("state_dir:") && !l.starts_with("lock_file:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let config_path = mine.path().join("config.yaml");
        std::fs::write(
            &config_path,
            format!(
                "{config}state_dir: {d}/state\nlock_file: {d}/lock\n",
                d = mine.path().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", rig.env.ns.name()])
            .args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ])
            .arg(env!("CARGO_BIN_EXE_cf-allowlist"))
            .arg("-c")
            .arg(&config_path)
            .args(["sync", "--output", "json"])
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(101));
        assert_eq!(out.status.code(), Some(1), "{kind:?}: {out:?}");
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            j["error"]["kind"], "backend",
            "{kind:?}: the firewall refused: {j}"
        );
        assert!(!j["error"]["message"].as_str().unwrap().is_empty());
        assert_eq!(rig.snapshot(), a, "{kind:?}");
    }
}
