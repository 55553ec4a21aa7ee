//! A held xtables lock: `iptables-restore -w N` waits a bounded time, then apply fails with a
//! clear error and leaves the firewall as it was (including the ipset members it had already
//! swapped).
//!
//! Its own test binary, because it points iptables-legacy at a private lock file with
//! `XTABLES_LOCKFILE` (process-wide) instead of holding the host's `/run/xtables.lock`, which
//! would stall every other iptables user on the machine.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cfa_core::{AllowList, Backend, Plan, RuleSpec, Runner, Structure};
use cfa_iptables::{IpsetMode, IptablesBackend, IptablesOptions, Variant};
use ipnet::IpNet;
use testkit::NetNs;

fn list(items: &[&str]) -> AllowList {
    items.iter().map(|s| s.parse::<IpNet>().unwrap()).collect()
}

#[test]
fn a_held_lock_waits_then_fails_clearly_and_rolls_back_the_sets() {
    testkit::require_root();
    let lock = tempfile::NamedTempFile::new().unwrap();
    // The only test in this binary: nothing else reads the environment concurrently.
    std::env::set_var("XTABLES_LOCKFILE", lock.path());

    let ns = NetNs::new("iptlock");
    let make = |spec: RuleSpec| {
        let options = IptablesOptions {
            variant: Variant::Legacy,
            ipset: IpsetMode::Always,
            ..IptablesOptions::default()
        };
        IptablesBackend::new(options, spec, Runner::in_netns(ns.name()))
            .unwrap()
            .with_lock_wait(Duration::from_secs(1))
    };
    let old = list(&["173.245.48.0/20", "2400:cb00::/32"]);
    let first = make(RuleSpec::default());
    let plan = Plan::new(&first.read().unwrap(), &old).unwrap();
    first.apply(&plan).unwrap();
    let save_before = ns.exec_ok("iptables-legacy-save", &[]);
    let sets_before = ns.exec_ok("ipset", &["save"]);

    // A new spec (the chain must be rebuilt) and a new list (the sets must be swapped).
    let spec = RuleSpec {
        ports: vec![443],
        ..RuleSpec::default()
    };
    let b = make(spec);
    let new = list(&["104.16.0.0/13", "2606:4700::/32"]);
    let plan = Plan::new(&b.read().unwrap(), &new).unwrap();

    // `-o`: flock itself holds the lock (not `sleep`), so killing it releases the lock.
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(lock.path())
        .args(["sleep", "5"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let err = b.apply(&plan).unwrap_err().to_string();
    let waited = start.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();

    assert!(err.contains("xtables lock"), "{err}");
    assert!(err.contains("1s"), "{err}");
    // The tool's own stderr is kept.
    assert!(err.contains("Stopped waiting after 1s"), "{err}");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    // Nothing changed: the rules, and the set members swapped before the iptables step failed.
    let filter = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("create"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        filter(&ns.exec_ok("iptables-legacy-save", &[])),
        filter(&save_before)
    );
    assert_eq!(
        filter(&ns.exec_ok("ipset", &["save"])),
        filter(&sets_before)
    );
    let live = b.read().unwrap();
    assert_eq!(live.entries, old);
    assert!(matches!(live.structure, Structure::Outdated(_)));

    // With the lock free, the same plan applies.
    b.apply(&plan).unwrap();
    let live = b.read().unwrap();
    assert_eq!(live.structure, Structure::Current);
    assert_eq!(live.entries, new);
}
