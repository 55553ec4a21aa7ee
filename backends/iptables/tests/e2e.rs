//! End to end through the `Backend` trait against the real tools, each test in a fresh network
//! namespace, for the four combinations (nft, legacy) x (ipset, no ipset) and both families.

use cfa_core::{AllowList, Backend, Family, Plan, Protocol, RuleSpec, Runner, Structure};
use cfa_iptables::{
    input_has_rules, IpsetMode, IptablesBackend, IptablesOptions, Tools, Variant, SET_V4, SET_V6,
    TMP_SET_V4, TMP_SET_V6,
};
use ipnet::IpNet;
use testkit::tcp::{connect, Lab};
use testkit::NetNs;

const COMBOS: [(Variant, IpsetMode); 4] = [
    (Variant::Nft, IpsetMode::Always),
    (Variant::Nft, IpsetMode::Never),
    (Variant::Legacy, IpsetMode::Always),
    (Variant::Legacy, IpsetMode::Never),
];

fn tool_prefix(variant: Variant) -> &'static str {
    match variant {
        Variant::Legacy => "legacy",
        _ => "nft",
    }
}

fn backend(ns: &NetNs, variant: Variant, ipset: IpsetMode, spec: RuleSpec) -> IptablesBackend {
    let options = IptablesOptions {
        variant,
        ipset,
        ..IptablesOptions::default()
    };
    IptablesBackend::new(options, spec, Runner::in_netns(ns.name())).unwrap()
}

/// Cloudflare's 22 published ranges (captured from the published lists).
fn cloudflare() -> AllowList {
    cfa_core::snapshot::cloudflare()
}

fn list(items: &[&str]) -> AllowList {
    items.iter().map(|s| s.parse::<IpNet>().unwrap()).collect()
}

/// Foreign rules and chains an operator (or fail2ban) might have, in both families.
fn add_foreign_rules(ns: &NetNs, variant: Variant) {
    let v = tool_prefix(variant);
    for (tool, src) in [
        (format!("iptables-{v}"), "192.0.2.0/24"),
        (format!("ip6tables-{v}"), "2001:db8:99::/48"),
    ] {
        ipt(ns, &tool, &["-N", "f2b-sshd"]);
        ipt(ns, &tool, &["-A", "f2b-sshd", "-s", src, "-j", "DROP"]);
        ipt(ns, &tool, &["-A", "f2b-sshd", "-j", "RETURN"]);
        ipt(
            ns,
            &tool,
            &[
                "-A",
                "INPUT",
                "-p",
                "tcp",
                "--dport",
                "22",
                "-m",
                "comment",
                "--comment",
                "ssh \"guard\"",
                "-j",
                "f2b-sshd",
            ],
        );
        ipt(ns, &tool, &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"]);
        ipt(
            ns,
            &tool,
            &[
                "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "81", "-j", "RETURN",
            ],
        );
    }
    ns.exec_ok("ipset", &["create", "foreign", "hash:ip"]);
    ns.exec_ok("ipset", &["add", "foreign", "192.0.2.9"]);
}

/// Runs an iptables tool with `-w`: other tests' restores hold the (host-wide) xtables lock
/// for a moment, and without `-w` iptables-legacy fails at once instead of waiting.
fn ipt(ns: &NetNs, tool: &str, args: &[&str]) -> String {
    let mut all = vec!["-w", "10"];
    all.extend_from_slice(args);
    ns.exec_ok(tool, &all)
}

/// Every table of both families, without counters and `#` lines; optionally without our lines.
fn dump(ns: &NetNs, variant: Variant, without_ours: bool) -> String {
    let v = tool_prefix(variant);
    let mut out = String::new();
    for tool in [format!("iptables-{v}-save"), format!("ip6tables-{v}-save")] {
        out.push_str(&ns.exec_ok(&tool, &[]));
    }
    out.push_str(&ns.exec_ok("ipset", &["save", "foreign"]));
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| !(without_ours && l.contains("CF-ALLOWLIST")))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn sync(b: &IptablesBackend, desired: &AllowList) -> Option<Plan> {
    let live = b.read().unwrap();
    let plan = Plan::new(&live, desired)?;
    b.check(&plan).unwrap();
    b.apply(&plan).unwrap();
    let after = b.read().unwrap();
    assert_eq!(after.structure, Structure::Current, "{:?}", after);
    assert_eq!(after.entries, *desired);
    Some(plan)
}

fn our_sets(ns: &NetNs) -> Vec<String> {
    ns.exec_ok("ipset", &["list", "-n"])
        .lines()
        .filter(|l| l.starts_with("cf-allowlist"))
        .map(str::to_string)
        .collect()
}

fn lifecycle(variant: Variant, ipset: IpsetMode) {
    let ns = NetNs::new("iptlife");
    add_foreign_rules(&ns, variant);
    let before = dump(&ns, variant, false);
    let b = backend(&ns, variant, ipset, RuleSpec::default());
    let live = b.read().unwrap();
    assert_eq!(live.structure, Structure::Absent);
    assert!(live.entries.is_empty());

    // First sync.
    let desired = cloudflare();
    assert_eq!(desired.len(), 22);
    let plan = sync(&b, &desired).expect("first sync plans");
    assert!(plan.rebuild.is_some());
    assert_eq!(dump(&ns, variant, true), before, "foreign rules changed");
    for tool in ["iptables", "ip6tables"] {
        let save = ns.exec_ok(&format!("{tool}-{}-save", tool_prefix(variant)), &[]);
        let first_input = save.lines().find(|l| l.starts_with("-A INPUT")).unwrap();
        assert_eq!(
            first_input,
            "-A INPUT -m comment --comment cf-allowlist -j CF-ALLOWLIST"
        );
    }
    let sets = our_sets(&ns);
    if ipset == IpsetMode::Always {
        assert_eq!(sets, [SET_V4, SET_V6]);
    } else {
        assert!(sets.is_empty(), "{sets:?}");
    }

    // No-op.
    assert_eq!(Plan::new(&b.read().unwrap(), &desired), None);

    // Changed list: one range gone, one added, in each family.
    let mut changed = desired.clone();
    changed.v4.remove(&"173.245.48.0/20".parse().unwrap());
    changed.v6.remove(&"2400:cb00::/32".parse().unwrap());
    changed.insert("198.51.100.0/24".parse().unwrap());
    changed.insert("2001:db8:1::/64".parse().unwrap());
    let plan = sync(&b, &changed).expect("changed list plans");
    assert_eq!(plan.rebuild, None);
    assert_eq!(plan.add.len(), 2);
    assert_eq!(plan.remove.len(), 2);
    assert_eq!(dump(&ns, variant, true), before, "foreign rules changed");
    assert_eq!(Plan::new(&b.read().unwrap(), &changed), None);

    // Purge leaves exactly what was there before.
    b.purge().unwrap();
    assert_eq!(b.read().unwrap().structure, Structure::Absent);
    assert_eq!(dump(&ns, variant, false), before);
    assert!(our_sets(&ns).is_empty());
    b.purge().unwrap();
}

#[test]
fn lifecycle_nft_ipset() {
    lifecycle(Variant::Nft, IpsetMode::Always);
}

#[test]
fn lifecycle_nft_per_range() {
    lifecycle(Variant::Nft, IpsetMode::Never);
}

#[test]
fn lifecycle_legacy_ipset() {
    lifecycle(Variant::Legacy, IpsetMode::Always);
}

#[test]
fn lifecycle_legacy_per_range() {
    lifecycle(Variant::Legacy, IpsetMode::Never);
}

fn restrict_drops_strangers(variant: Variant, ipset: IpsetMode) {
    let server = NetNs::new("iptsrv");
    let client = NetNs::new("iptcli");
    // Before the allowlist, everyone connects: a drop later is ours.
    let _lab = Lab::new(&server, &client, &[443]);

    let spec = RuleSpec {
        restrict: true,
        ..RuleSpec::default()
    };
    let b = backend(&server, variant, ipset, spec);
    let mut desired = cloudflare();
    for net in Lab::ALLOWED_NETS {
        desired.insert(net.parse().unwrap());
    }
    sync(&b, &desired).unwrap();

    for (src, dst) in Lab::ALLOWED {
        assert_eq!(connect(&client, src, dst, 443), "ok", "allowlisted {src}");
    }
    for (src, dst) in Lab::STRANGERS {
        assert_eq!(connect(&client, src, dst, 443), "timeout", "stranger {src}");
    }

    b.purge().unwrap();
    for (src, dst) in Lab::STRANGERS {
        assert_eq!(connect(&client, src, dst, 443), "ok", "after purge {src}");
    }
}

#[test]
fn restrict_nft_ipset() {
    restrict_drops_strangers(Variant::Nft, IpsetMode::Always);
}

#[test]
fn restrict_nft_per_range() {
    restrict_drops_strangers(Variant::Nft, IpsetMode::Never);
}

#[test]
fn restrict_legacy_ipset() {
    restrict_drops_strangers(Variant::Legacy, IpsetMode::Always);
}

#[test]
fn restrict_legacy_per_range() {
    restrict_drops_strangers(Variant::Legacy, IpsetMode::Never);
}

#[test]
fn check_changes_nothing_and_rejects_what_ipset_cannot_hold() {
    for (variant, ipset) in COMBOS {
        let ns = NetNs::new("iptcheck");
        add_foreign_rules(&ns, variant);
        let before = dump(&ns, variant, false);
        let b = backend(&ns, variant, ipset, RuleSpec::default());
        let plan = Plan::new(&b.read().unwrap(), &cloudflare()).unwrap();
        b.check(&plan).unwrap();
        assert_eq!(dump(&ns, variant, false), before);
        assert!(our_sets(&ns).is_empty());
        assert_eq!(b.read().unwrap().structure, Structure::Absent);
        if ipset == IpsetMode::Always {
            let everyone = Plan::new(&b.read().unwrap(), &list(&["0.0.0.0/0"])).unwrap();
            let err = b.check(&everyone).unwrap_err().to_string();
            assert!(err.contains("0.0.0.0/0"), "{err}");
            assert!(b.apply(&everyone).is_err());
            assert_eq!(dump(&ns, variant, false), before);
        }
    }
}

#[test]
fn a_changed_spec_is_outdated_and_rebuilt() {
    for (variant, ipset) in COMBOS {
        let ns = NetNs::new("iptspec");
        let desired = cloudflare();
        sync(&backend(&ns, variant, ipset, RuleSpec::default()), &desired).unwrap();

        let narrower = RuleSpec {
            ports: vec![443],
            restrict: true,
            ..RuleSpec::default()
        };
        let b = backend(&ns, variant, ipset, narrower);
        let live = b.read().unwrap();
        assert!(
            matches!(&live.structure, Structure::Outdated(why) if why.contains("rules in chain")),
            "{:?}",
            live.structure
        );
        assert_eq!(live.entries, desired);
        let plan = sync(&b, &desired).unwrap();
        assert!(plan.rebuild.is_some() && plan.add.is_empty() && plan.remove.is_empty());
        let save = ns.exec_ok(&format!("iptables-{}-save", tool_prefix(variant)), &[]);
        assert!(save.contains("--dports 443 -j DROP"), "{save}");

        // Both protocols, every port, and more than multiport's 15 ports: what the tools print
        // back is still what we generate (a sync ends Current, a second plans nothing).
        for spec in [
            RuleSpec {
                ports: vec![],
                protocol: Protocol::Both,
                restrict: true,
                ..RuleSpec::default()
            },
            RuleSpec {
                ports: (8000..8020).collect(),
                ..RuleSpec::default()
            },
        ] {
            let b = backend(&ns, variant, ipset, spec);
            sync(&b, &desired).unwrap();
            assert_eq!(Plan::new(&b.read().unwrap(), &desired), None);
        }
        b.purge().unwrap();
    }
}

#[test]
fn switching_ipset_mode_rebuilds_and_purge_removes_leftover_sets() {
    let ns = NetNs::new("iptswitch");
    let desired = cloudflare();
    let with = backend(&ns, Variant::Nft, IpsetMode::Always, RuleSpec::default());
    sync(&with, &desired).unwrap();
    let without = backend(&ns, Variant::Nft, IpsetMode::Never, RuleSpec::default());
    let live = without.read().unwrap();
    assert!(matches!(live.structure, Structure::Outdated(_)));
    sync(&without, &desired).unwrap();
    let live = without.read().unwrap();
    assert!(
        live.warnings.iter().any(|w| w.contains(SET_V4)),
        "{:?}",
        live.warnings
    );
    without.purge().unwrap();
    assert!(our_sets(&ns).is_empty());
    assert!(!ns
        .exec_ok("iptables-nft-save", &[])
        .contains("CF-ALLOWLIST"));
}

#[test]
fn missing_jump_and_duplicates_are_repaired() {
    let ns = NetNs::new("iptjump");
    let b = backend(&ns, Variant::Legacy, IpsetMode::Never, RuleSpec::default());
    let desired = cloudflare();
    sync(&b, &desired).unwrap();
    ipt(&ns, "iptables-legacy", &["-D", "INPUT", "1"]);
    ipt(
        &ns,
        "ip6tables-legacy",
        &["-A", "INPUT", "-j", "CF-ALLOWLIST"],
    );
    let live = b.read().unwrap();
    let Structure::Outdated(why) = &live.structure else {
        panic!("{:?}", live.structure)
    };
    assert!(why.contains("ipv4: the INPUT jump"), "{why}");
    assert!(why.contains("ipv6: INPUT holds 2 jump(s)"), "{why}");
    sync(&b, &desired).unwrap();
    let v6 = ns.exec_ok("ip6tables-legacy-save", &[]);
    assert_eq!(v6.matches("-j CF-ALLOWLIST").count(), 1, "{v6}");
}

#[test]
fn only_managed_families_are_touched() {
    let ns = NetNs::new("iptfam");
    let spec = RuleSpec {
        families: vec![Family::V4],
        ..RuleSpec::default()
    };
    let b = backend(&ns, Variant::Nft, IpsetMode::Always, spec);
    let desired = cloudflare().only(&[Family::V4]);
    sync(&b, &desired).unwrap();
    assert!(!ns
        .exec_ok("ip6tables-nft-save", &[])
        .contains("CF-ALLOWLIST"));
    assert_eq!(our_sets(&ns), [SET_V4]);
    b.purge().unwrap();
    assert!(our_sets(&ns).is_empty());
}

#[test]
fn an_ipv4_only_spec_reads_and_writes_no_ipv6_object() {
    for ipset in [IpsetMode::Always, IpsetMode::Never] {
        let ns = NetNs::new("iptv4only");
        // IPv6 objects of ours, as an earlier configuration with both families left them.
        sync(
            &backend(&ns, Variant::Nft, ipset, RuleSpec::default()),
            &cloudflare(),
        )
        .unwrap();
        let v6 = || {
            let mut out = ns.exec_ok("ip6tables-nft-save", &[]);
            if ipset == IpsetMode::Always {
                out.push_str(&ns.exec_ok("ipset", &["save", SET_V6]));
            }
            out.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        };
        let v6_before = v6();
        assert!(v6_before.contains("CF-ALLOWLIST"), "{v6_before}");

        let spec = RuleSpec {
            families: vec![Family::V4],
            ..RuleSpec::default()
        };
        let b = backend(&ns, Variant::Nft, ipset, spec);
        assert_eq!(Backend::families(&b).unwrap(), [Family::V4]);
        let live = b.read().unwrap();
        assert!(live.entries.v6.is_empty(), "{:?}", live.entries);
        assert_eq!(live.structure, Structure::Current);

        let mut changed = cloudflare().only(&[Family::V4]);
        changed.v4.remove(&"173.245.48.0/20".parse().unwrap());
        let plan = Plan::new(&live, &changed).unwrap();
        assert!(plan.after.v6.is_empty() && plan.remove.v6.is_empty());
        b.check(&plan).unwrap();
        b.apply(&plan).unwrap();
        let after = b.read().unwrap();
        assert_eq!(after.structure, Structure::Current);
        assert_eq!(after.entries, changed);
        assert_eq!(v6(), v6_before, "{ipset:?}: IPv6 objects changed");
        assert!(!our_sets(&ns)
            .iter()
            .any(|s| s.starts_with(SET_V6) && s != SET_V6));
    }
}

#[test]
fn everyone_and_ipv4_compatible_addresses_read_back_as_written() {
    // iptables-save omits `-s 0.0.0.0/0` and prints `::1.2.3.4` where Rust writes `::102:304`:
    // rules generated otherwise are read back as outdated on every run.
    for variant in [Variant::Nft, Variant::Legacy] {
        let ns = NetNs::new("iptevery");
        let b = backend(&ns, variant, IpsetMode::Never, RuleSpec::default());
        let desired = list(&["0.0.0.0/0", "::/0", "::1.2.3.4/128", "::0.1.0.0/112"]);
        sync(&b, &desired).unwrap();
        assert_eq!(Plan::new(&b.read().unwrap(), &desired), None, "{variant}");

        let b = backend(&ns, variant, IpsetMode::Always, RuleSpec::default());
        let desired = list(&["198.51.100.0/24", "::1.2.3.4/128", "::0.1.0.0/112"]);
        sync(&b, &desired).unwrap();
        assert_eq!(Plan::new(&b.read().unwrap(), &desired), None, "{variant}");
        b.purge().unwrap();
    }
}

#[test]
fn ipv6_is_left_out_when_ip6tables_is_missing() {
    let ns = NetNs::new("iptnov6");
    let b = backend(&ns, Variant::Nft, IpsetMode::Always, RuleSpec::default())
        .with_tool_override("ip6tables-nft-save", "/nonexistent/ip6tables-nft-save");
    assert_eq!(Backend::families(&b).unwrap(), [Family::V4]);
    let live = b.read().unwrap();
    assert!(
        live.warnings
            .iter()
            .any(|w| w.contains("ipv6 ranges are not managed")
                && w.contains("/nonexistent/ip6tables-nft-save")),
        "{:?}",
        live.warnings
    );
    let desired = cloudflare().only(&[Family::V4]);
    let plan = Plan::new(&live, &desired).unwrap();
    b.apply(&plan).unwrap();
    assert_eq!(b.read().unwrap().entries, desired);
    assert!(!ns
        .exec_ok("ip6tables-nft-save", &[])
        .contains("CF-ALLOWLIST"));
    assert_eq!(our_sets(&ns), [SET_V4]);
    b.purge().unwrap();
    assert!(our_sets(&ns).is_empty());
}

#[test]
fn auto_variant_follows_the_rules_and_input_has_rules_sees_them() {
    let ns = NetNs::new("iptauto");
    let runner = Runner::in_netns(ns.name());
    assert!(!input_has_rules(&runner));
    let auto = |ns: &NetNs| backend(ns, Variant::Auto, IpsetMode::Auto, RuleSpec::default());
    assert_eq!(auto(&ns).tools(), Tools::Nft, "a tie picks nft");
    assert!(auto(&ns).uses_ipset());
    ipt(
        &ns,
        "iptables-legacy",
        &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
    );
    assert!(input_has_rules(&runner));
    assert_eq!(auto(&ns).tools(), Tools::Legacy);
    for _ in 0..2 {
        ipt(
            &ns,
            "ip6tables-nft",
            &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
        );
    }
    assert_eq!(auto(&ns).tools(), Tools::Nft);
}

#[test]
fn bad_chain_names_are_refused() {
    for chain in [
        "",
        "INPUT",
        "POSTROUTING",
        "ACCEPT",
        "LOG",
        "MARK",
        "-x",
        "!x",
        "has space",
        "A234567890123456789012345678X",
    ] {
        let options = IptablesOptions {
            chain: chain.to_string(),
            ..IptablesOptions::default()
        };
        let err = IptablesBackend::new(options, RuleSpec::default(), Runner::new()).unwrap_err();
        assert!(err.to_string().contains("chain name"), "{err}");
        assert!(
            err.to_string().contains(&format!("`{chain}`")),
            "{chain}: {err}"
        );
        assert_eq!(
            cfa_iptables::validate_chain_name(chain).unwrap_err(),
            err.to_string()
        );
    }
}

#[test]
fn a_stale_temporary_set_is_reported_and_replaced() {
    let ns = NetNs::new("iptstale");
    // Left by an interrupted run, even with other parameters than the ones we create.
    ns.exec_ok("ipset", &["create", TMP_SET_V4, "hash:ip"]);
    let b = backend(&ns, Variant::Nft, IpsetMode::Always, RuleSpec::default());
    let live = b.read().unwrap();
    assert!(
        live.warnings.iter().any(|w| w.contains(TMP_SET_V4)),
        "{:?}",
        live.warnings
    );
    sync(&b, &cloudflare()).unwrap();
    assert_eq!(our_sets(&ns), [SET_V4, SET_V6]);
    assert!(b.read().unwrap().warnings.is_empty());

    // Left by a run killed after its swaps, with the allowlist in place: the entries are right,
    // but only an apply removes the set, so the structure is outdated and the next run does.
    ns.exec_ok(
        "ipset",
        &["create", TMP_SET_V6, "hash:net", "family", "inet6"],
    );
    let live = b.read().unwrap();
    assert_eq!(live.entries, cloudflare());
    assert!(
        matches!(&live.structure, Structure::Outdated(why) if why.contains(TMP_SET_V6)),
        "{:?}",
        live.structure
    );
    let plan = sync(&b, &cloudflare()).expect("a leftover temporary set plans an apply");
    assert!(plan.add.is_empty() && plan.remove.is_empty());
    assert_eq!(our_sets(&ns), [SET_V4, SET_V6]);
    assert!(b.read().unwrap().warnings.is_empty());
}

#[test]
fn a_tampered_chain_is_outdated_and_rewritten() {
    for (variant, ipset) in COMBOS {
        let ns = NetNs::new("ipttamper");
        let b = backend(&ns, variant, ipset, RuleSpec::default());
        let desired = cloudflare();
        sync(&b, &desired).unwrap();
        let tool = format!("iptables-{}", tool_prefix(variant));
        ipt(
            &ns,
            &tool,
            &[
                "-I",
                "CF-ALLOWLIST",
                "1",
                "-s",
                "192.0.2.0/24",
                "-j",
                "ACCEPT",
            ],
        );
        let live = b.read().unwrap();
        assert!(
            matches!(&live.structure, Structure::Outdated(why) if why.contains("ipv4")),
            "{:?}",
            live.structure
        );
        sync(&b, &desired).unwrap();
        assert!(!ns
            .exec_ok(&format!("{tool}-save"), &[])
            .contains("192.0.2.0"));
    }
}

#[test]
fn purge_refuses_to_break_foreign_references_and_wrong_sets_are_not_swapped() {
    let ns = NetNs::new("iptref");
    let b = backend(&ns, Variant::Nft, IpsetMode::Always, RuleSpec::default());
    sync(&b, &cloudflare()).unwrap();
    ipt(&ns, "iptables-nft", &["-N", "web"]);
    ipt(&ns, "iptables-nft", &["-A", "web", "-j", "CF-ALLOWLIST"]);
    let save = || -> String {
        let out = ns.exec_ok("iptables-nft-save", &[]);
        out.lines().filter(|l| !l.starts_with('#')).collect()
    };
    let before = save();
    let err = b.purge().unwrap_err().to_string();
    assert!(err.contains("-A web -j CF-ALLOWLIST"), "{err}");
    assert_eq!(save(), before);
    ipt(&ns, "iptables-nft", &["-F", "web"]);
    b.purge().unwrap();

    // A set of ours with another type cannot be swapped: refused before anything changes.
    ns.exec_ok("ipset", &["create", SET_V6, "hash:ip", "family", "inet6"]);
    let live = b.read().unwrap();
    assert!(
        matches!(&live.structure, Structure::Outdated(why) if why.contains("hash:ip")),
        "{:?}",
        live.structure
    );
    let plan = Plan::new(&live, &cloudflare()).unwrap();
    let err = b.apply(&plan).unwrap_err().to_string();
    assert!(err.contains("cannot be swapped"), "{err}");
    assert!(!ns
        .exec_ok("iptables-nft-save", &[])
        .contains("CF-ALLOWLIST"));
    b.purge().unwrap();
    assert!(our_sets(&ns).is_empty());
}

#[test]
fn a_failing_family_rolls_back_the_families_and_sets_applied_before_it() {
    for ipset in [IpsetMode::Always, IpsetMode::Never] {
        let ns = NetNs::new("iptroll");
        // An nft base chain named like ours in ip6 filter: ip6tables-nft-save hides it, and
        // ip6tables-nft-restore then fails on it, after the IPv4 step has succeeded.
        ns.exec_ok("nft", &["add", "table", "ip6", "filter"]);
        ns.exec_ok(
            "nft",
            &[
                "add",
                "chain",
                "ip6",
                "filter",
                "CF-ALLOWLIST",
                "{ type filter hook input priority 10; policy accept; }",
            ],
        );
        add_foreign_rules(&ns, Variant::Nft);
        let before = dump(&ns, Variant::Nft, false);
        let b = backend(&ns, Variant::Nft, ipset, RuleSpec::default());
        let live = b.read().unwrap();
        assert!(
            live.warnings
                .iter()
                .any(|w| w.contains("ipv6: the filter table holds base chains")),
            "{:?}",
            live.warnings
        );
        let plan = Plan::new(&live, &cloudflare()).unwrap();
        let err = b.apply(&plan).unwrap_err().to_string();
        assert!(
            err.contains("ipv6") && err.contains("CF-ALLOWLIST"),
            "{err}"
        );
        assert!(!err.contains("rolling back also failed"), "{err}");
        // The tool's stderr is in the error.
        assert!(err.contains("CHAIN_USER_ADD failed"), "{err}");
        assert_eq!(dump(&ns, Variant::Nft, false), before, "{ipset:?}");
        assert!(our_sets(&ns).is_empty(), "{ipset:?}");
    }
}
