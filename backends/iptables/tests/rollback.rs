//! A failing step in the middle of an apply: every step before it is undone, and on `Err` the
//! firewall is exactly as it was (rules, sets, members, no temporary set), or the error says
//! that the undo failed too ([`BackendError::UndoFailed`]).
//!
//! Faults are injected with wrapper scripts given to the backend through
//! [`IptablesBackend::with_tool_override`] (not through `PATH`, which every test thread shares).
//! Each runs in a fresh network namespace.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cfa_core::{AllowList, Backend, BackendError, Plan, RuleSpec, Runner, Structure};
use cfa_iptables::{IpsetMode, IptablesBackend, IptablesOptions, Variant, SET_V4, SET_V6};
use ipnet::IpNet;
use testkit::NetNs;

fn list(items: &[&str]) -> AllowList {
    items.iter().map(|s| s.parse::<IpNet>().unwrap()).collect()
}

fn old_list() -> AllowList {
    list(&[
        "173.245.48.0/20",
        "103.21.244.0/22",
        "2400:cb00::/32",
        "2606:4700::/32",
    ])
}

fn new_list() -> AllowList {
    list(&[
        "104.16.0.0/13",
        "103.21.244.0/22",
        "162.158.0.0/15",
        "2606:4700::/32",
        "2803:f800::/32",
        "2405:b500::/32",
    ])
}

fn backend(ns: &NetNs, variant: Variant, spec: RuleSpec) -> IptablesBackend {
    let options = IptablesOptions {
        variant,
        ipset: IpsetMode::Always,
        ..IptablesOptions::default()
    };
    IptablesBackend::new(options, spec, Runner::in_netns(ns.name())).unwrap()
}

fn tool_prefix(variant: Variant) -> &'static str {
    match variant {
        Variant::Legacy => "legacy",
        _ => "nft",
    }
}

/// Everything an apply could change: both families' tables and every set with its members
/// (without `#` lines). A set swapped back is the original set object, so even its `create`
/// line (with its `initval`) is the same.
fn firewall(ns: &NetNs, variant: Variant) -> String {
    let v = tool_prefix(variant);
    let mut out = String::new();
    for tool in [format!("iptables-{v}-save"), format!("ip6tables-{v}-save")] {
        out.push_str(&ns.exec_ok(&tool, &[]));
    }
    out.push_str(&ns.exec_ok("ipset", &["save"]));
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn sync(b: &IptablesBackend, desired: &AllowList) {
    let plan = Plan::new(&b.read().unwrap(), desired).unwrap();
    b.apply(&plan).unwrap();
    let live = b.read().unwrap();
    assert_eq!(live.structure, Structure::Current, "{live:?}");
    assert_eq!(live.entries, *desired);
}

/// How much of its input the failing `ipset restore` call passes to the real ipset.
#[derive(Debug, Clone, Copy)]
enum Keep {
    /// The first n lines.
    Lines(usize),
    /// Every line up to and including the first `swap`.
    ThroughSwap,
    /// All of it (the tool did everything, then failed).
    All,
}

/// A fault-injecting `ipset` in a private directory: runs the real one, except that
/// `ipset restore` call number `fail` gets only part of its input (`keep`) and then exits 1;
/// with `undo_fails`, every later `ipset restore` fails without doing anything. Records each
/// restore input as `input-N`.
struct FaultyIpset {
    dir: tempfile::TempDir,
}

impl FaultyIpset {
    fn new(fail: usize, keep: Keep, undo_fails: bool) -> FaultyIpset {
        let real = cfa_core::process::resolve("ipset").expect("ipset is installed");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let keep = match keep {
            Keep::Lines(n) => format!("head -n {n}"),
            Keep::ThroughSwap => "sed '/^swap /q'".to_string(),
            Keep::All => "cat".to_string(),
        };
        let script = format!(
            r#"#!/bin/sh
real='{real}'
dir='{d}'
[ "$1" = restore ] || exec "$real" "$@"
n=$(( $(cat "$dir/calls") + 1 ))
echo "$n" > "$dir/calls"
cat > "$dir/input-$n"
if [ "$n" -lt {fail} ]; then exec "$real" restore < "$dir/input-$n"; fi
if [ "$n" -gt {fail} ]; then
  if [ {undo_fails} = 1 ]; then echo "ipset: injected failure of restore call $n" >&2; exit 1; fi
  exec "$real" restore < "$dir/input-$n"
fi
{keep} < "$dir/input-$n" > "$dir/kept-$n"
"$real" restore < "$dir/kept-$n" || exit 1
echo "ipset: injected failure of restore call $n" >&2
exit 1
"#,
            real = real.display(),
            undo_fails = u8::from(undo_fails),
        );
        std::fs::write(dir.path().join("calls"), "0\n").unwrap();
        let path = dir.path().join("ipset");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        FaultyIpset { dir }
    }

    fn path(&self) -> String {
        self.dir.path().join("ipset").display().to_string()
    }

    fn input(&self, n: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("input-{n}"))).unwrap_or_default()
    }
}

/// An executable that fails like a tool refusing its input.
fn failing_tool(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("#!/bin/sh\ncat >/dev/null\necho '{name}: injected failure' >&2\nexit 1\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[test]
fn a_failing_ipset_swap_leaves_every_set_as_it_was() {
    // (call that fails, how much of it runs): the reported case (the tool fails right after
    // the IPv4 swap); the IPv6 swap failing before its first line, in the middle of its input,
    // and after having done all of it; and the last call, destroying the temporary sets (the
    // old members), failing before it destroyed any, after one, after both.
    for (fail, keep) in [
        (1, Keep::ThroughSwap),
        (2, Keep::Lines(0)),
        (2, Keep::Lines(3)),
        (2, Keep::All),
        (3, Keep::Lines(0)),
        (3, Keep::Lines(1)),
        (3, Keep::All),
    ] {
        let ns = NetNs::new("iptswapf");
        sync(
            &backend(&ns, Variant::Nft, RuleSpec::default()),
            &old_list(),
        );
        let before = firewall(&ns, Variant::Nft);

        let faulty = FaultyIpset::new(fail, keep, false);
        let b = backend(&ns, Variant::Nft, RuleSpec::default())
            .with_tool_override("ipset", faulty.path());
        let plan = Plan::new(&b.read().unwrap(), &new_list()).unwrap();
        let err = b.apply(&plan).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("injected failure"), "{fail} {keep:?}: {msg}");
        assert!(
            !matches!(err, BackendError::UndoFailed { .. }),
            "{fail} {keep:?}: {msg}"
        );
        let what = match fail {
            1 => SET_V4,
            2 => SET_V6,
            _ => "destroying the temporary ipsets",
        };
        assert!(msg.contains(what), "{fail} {keep:?}: {msg}");
        assert_eq!(
            firewall(&ns, Variant::Nft),
            before,
            "{fail} {keep:?}: the firewall changed"
        );
        // One restore per family: the first holds no IPv6 line.
        assert!(faulty.input(1).contains(SET_V4), "{}", faulty.input(1));
        assert!(!faulty.input(1).contains(SET_V6), "{}", faulty.input(1));
        let live = b.read().unwrap();
        assert_eq!(live.entries, old_list());
        assert_eq!(live.structure, Structure::Current);
        assert!(live.warnings.is_empty(), "{:?}", live.warnings);

        // Nothing left in the way: with the real tool the same plan applies.
        sync(
            &backend(&ns, Variant::Nft, RuleSpec::default()),
            &new_list(),
        );
    }
}

/// Ten IPv4 ranges and two IPv6 ones, and the same with one IPv4 range replaced by two: a
/// difference smaller than the list, so the IPv4 set is changed in place.
fn big_lists() -> (AllowList, AllowList) {
    let mut old: Vec<String> = (0..10).map(|i| format!("198.18.{i}.0/24")).collect();
    old.extend(["2400:cb00::/32".to_string(), "2606:4700::/32".to_string()]);
    let refs: Vec<&str> = old.iter().map(String::as_str).collect();
    let old = list(&refs);
    let mut new = old.clone();
    new.v4.remove(&"198.18.3.0/24".parse().unwrap());
    new.insert("203.0.113.0/24".parse().unwrap());
    new.insert("192.0.2.0/24".parse().unwrap());
    (old, new)
}

#[test]
fn a_small_change_updates_the_set_in_place_additions_first() {
    let (old, new) = big_lists();
    let ns = NetNs::new("iptinpl");
    sync(&backend(&ns, Variant::Nft, RuleSpec::default()), &old);
    let create = |ns: &NetNs| {
        ns.exec_ok("ipset", &["save", SET_V4])
            .lines()
            .find(|l| l.starts_with("create "))
            .unwrap()
            .to_string()
    };
    let before = create(&ns);
    // A recording ipset that fails nothing (its failing call is never reached).
    let faulty = FaultyIpset::new(99, Keep::All, false);
    let b =
        backend(&ns, Variant::Nft, RuleSpec::default()).with_tool_override("ipset", faulty.path());
    sync(&b, &new);
    assert_eq!(
        faulty.input(1),
        format!(
            "add {SET_V4} 192.0.2.0/24\nadd {SET_V4} 203.0.113.0/24\ndel {SET_V4} 198.18.3.0/24\n"
        ),
        "one restore: the additions, then the deletion, in the live set"
    );
    assert_eq!(faulty.input(2), "", "no temporary set to destroy");
    // The same set object (its create line carries the random initval): no swap happened.
    assert_eq!(create(&ns), before);
}

#[test]
fn a_failing_in_place_update_puts_the_members_back() {
    let (old, new) = big_lists();
    for keep in [Keep::Lines(0), Keep::Lines(1), Keep::Lines(2), Keep::All] {
        let ns = NetNs::new("iptinplf");
        sync(&backend(&ns, Variant::Nft, RuleSpec::default()), &old);
        let before = firewall(&ns, Variant::Nft);
        let faulty = FaultyIpset::new(1, keep, false);
        let b = backend(&ns, Variant::Nft, RuleSpec::default())
            .with_tool_override("ipset", faulty.path());
        let plan = Plan::new(&b.read().unwrap(), &new).unwrap();
        let err = b.apply(&plan).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("injected failure") && msg.contains("in place"),
            "{keep:?}: {msg}"
        );
        assert!(
            !matches!(err, BackendError::UndoFailed { .. }),
            "{keep:?}: {msg}"
        );
        assert_eq!(
            firewall(&ns, Variant::Nft),
            before,
            "{keep:?}: the firewall changed"
        );
        assert_eq!(b.read().unwrap().entries, old, "{keep:?}");
        sync(&backend(&ns, Variant::Nft, RuleSpec::default()), &new);
    }
}

#[test]
fn a_failing_first_swap_creates_nothing() {
    for variant in [Variant::Nft, Variant::Legacy] {
        let ns = NetNs::new("iptswapn");
        // The IPv6 set is created, then filling it fails: the IPv4 set made just before goes too.
        let faulty = FaultyIpset::new(2, Keep::Lines(2), false);
        let b =
            backend(&ns, variant, RuleSpec::default()).with_tool_override("ipset", faulty.path());
        let plan = Plan::new(&b.read().unwrap(), &new_list()).unwrap();
        // After the read: iptables-legacy creates the (empty) filter table when it is first read.
        let before = firewall(&ns, variant);
        let err = b.apply(&plan).unwrap_err().to_string();
        assert!(err.contains("injected failure"), "{err}");
        assert_eq!(firewall(&ns, variant), before, "{variant}");
        assert_eq!(b.read().unwrap().structure, Structure::Absent);
    }
}

#[test]
fn a_failing_undo_is_reported_with_both_causes() {
    let ns = NetNs::new("iptundof");
    sync(
        &backend(&ns, Variant::Nft, RuleSpec::default()),
        &old_list(),
    );
    // The IPv6 swap fails after its lines ran, and so does every restore of the undo.
    let faulty = FaultyIpset::new(2, Keep::All, true);
    let b =
        backend(&ns, Variant::Nft, RuleSpec::default()).with_tool_override("ipset", faulty.path());
    let plan = Plan::new(&b.read().unwrap(), &new_list()).unwrap();
    let err = b.apply(&plan).unwrap_err();
    let BackendError::UndoFailed { cause, undo } = &err else {
        panic!("expected UndoFailed, got {err:?}")
    };
    assert!(cause.to_string().contains(SET_V6), "{cause}");
    assert!(
        cause
            .to_string()
            .contains("injected failure of restore call 2"),
        "{cause}"
    );
    // The IPv6 set is undone first (last step first), and fails.
    assert!(undo.to_string().contains(SET_V6), "{undo}");
    assert!(
        undo.to_string()
            .contains("injected failure of restore call 3"),
        "{undo}"
    );
    assert!(err.to_string().contains("ALSO FAILED"), "{err}");
}

#[test]
fn a_failing_ip6tables_restore_undoes_the_ipv4_rules_and_both_swaps() {
    for variant in [Variant::Nft, Variant::Legacy] {
        let ns = NetNs::new("iptv6f");
        sync(&backend(&ns, variant, RuleSpec::default()), &old_list());
        let before = firewall(&ns, variant);

        // A new list (both sets are swapped) and a new spec (both chains are rewritten): the
        // IPv4 swap, the IPv6 swap and the IPv4 rules are in when ip6tables-restore fails.
        let spec = RuleSpec {
            ports: vec![443],
            restrict: true,
            ..RuleSpec::default()
        };
        let tools = tempfile::tempdir().unwrap();
        let restore = format!("ip6tables-{}-restore", tool_prefix(variant));
        let b = backend(&ns, variant, spec.clone())
            .with_tool_override(&restore, failing_tool(tools.path(), &restore));
        let plan = Plan::new(&b.read().unwrap(), &new_list()).unwrap();
        let err = b.apply(&plan).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("ipv6") && msg.contains("injected failure"),
            "{msg}"
        );
        assert!(
            !matches!(err, BackendError::UndoFailed { .. }),
            "{variant}: {msg}"
        );
        assert_eq!(firewall(&ns, variant), before, "{variant}");

        let b = backend(&ns, variant, spec);
        let live = b.read().unwrap();
        assert_eq!(live.entries, old_list());
        assert!(matches!(live.structure, Structure::Outdated(_)));
        sync(&b, &new_list());
    }
}
