//! Parsing captured `iptables-save` / `ip6tables-save` / `ipset save` output (both variants, with
//! foreign chains, quoted comments, counters and a nat table), and snapshots of what we generate.

use cfa_core::{Family, Protocol, RuleSpec};
use cfa_iptables::rules::{self, SetUpdate, Sources};
use cfa_iptables::save::{parse_ipset_save, parse_save, IpSet};
use cfa_iptables::{DEFAULT_CHAIN, SET_V4, SET_V6, TMP_SET_V4, TMP_SET_V6};
use ipnet::IpNet;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn nets(items: &[&str]) -> Vec<IpNet> {
    items.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn save_output_of_every_variant_and_family_parses_the_same_way() {
    for tool in [
        "iptables-nft",
        "iptables-legacy",
        "ip6tables-nft",
        "ip6tables-legacy",
    ] {
        let plain = parse_save(&fixture(&format!("{tool}-save.txt")), "filter", tool).unwrap();
        let counted = parse_save(
            &fixture(&format!("{tool}-save-counters.txt")),
            "filter",
            tool,
        )
        .unwrap();
        // Counters are stripped: the same rules either way.
        assert_eq!(plain, counted, "{tool}");
        assert_eq!(
            plain.chains,
            ["INPUT", "FORWARD", "OUTPUT", DEFAULT_CHAIN, "f2b-sshd"],
            "{tool}"
        );
        // The nat table's rule is not part of the filter table.
        assert!(plain.rules.iter().all(|r| !r.text.contains("REDIRECT")));
        let input: Vec<_> = plain.rules_of("INPUT").collect();
        assert_eq!(input.len(), 4, "{tool}");
        assert_eq!(input[0].text, rules::jump_rule(DEFAULT_CHAIN), "{tool}");
        assert_eq!(input[0].target(), Some(DEFAULT_CHAIN));
        // A quoted comment with escaped quotes comes back as one word.
        assert_eq!(input[1].value("--comment"), Some(r#"ssh from "anywhere""#));
        assert_eq!(input[1].target(), Some("f2b-sshd"));
        assert_eq!(plain.rules_of(DEFAULT_CHAIN).count(), 4, "{tool}");
        assert_eq!(plain.rules_of("f2b-sshd").count(), 2, "{tool}");
    }
}

#[test]
fn generated_rules_are_what_iptables_save_prints() {
    // The captured chains were written by hand with `iptables -A`; what we generate for the
    // same spec must be byte-identical to what the tools print back, or every read would
    // report our chain as outdated.
    let spec = RuleSpec {
        restrict: true,
        ..RuleSpec::default()
    };
    for (tool, family, ranges) in [
        (
            "iptables-nft",
            Family::V4,
            ["103.21.244.0/22", "173.245.48.0/20", "198.51.100.7/32"],
        ),
        (
            "iptables-legacy",
            Family::V4,
            ["103.21.244.0/22", "173.245.48.0/20", "198.51.100.7/32"],
        ),
        (
            "ip6tables-nft",
            Family::V6,
            ["2606:4700::/32", "2400:cb00::/32", "2001:db8::7/128"],
        ),
        (
            "ip6tables-legacy",
            Family::V6,
            ["2606:4700::/32", "2400:cb00::/32", "2001:db8::7/128"],
        ),
    ] {
        let table = parse_save(&fixture(&format!("{tool}-save.txt")), "filter", tool).unwrap();
        let live: Vec<String> = table
            .rules_of(DEFAULT_CHAIN)
            .map(|r| r.text.clone())
            .collect();
        let ranges = nets(&ranges);
        assert_eq!(
            live,
            rules::chain_rules(DEFAULT_CHAIN, &spec, Sources::Ranges(&ranges)),
            "{tool}"
        );

        let table =
            parse_save(&fixture(&format!("{tool}-save-ipset.txt")), "filter", tool).unwrap();
        let live: Vec<String> = table
            .rules_of(DEFAULT_CHAIN)
            .map(|r| r.text.clone())
            .collect();
        let set = if family == Family::V4 { SET_V4 } else { SET_V6 };
        assert_eq!(
            live,
            rules::chain_rules(DEFAULT_CHAIN, &spec, Sources::Set(set)),
            "{tool}"
        );
    }
}

#[test]
fn ipset_save_keeps_only_our_sets_and_reads_hosts_as_full_prefixes() {
    let sets = parse_ipset_save(
        &fixture("ipset-save.txt"),
        &[SET_V4, SET_V6, TMP_SET_V4],
        "ipset save",
    )
    .unwrap();
    assert_eq!(sets.keys().collect::<Vec<_>>(), [SET_V4, SET_V6]);
    let v4 = &sets[SET_V4];
    assert!(v4.fits(Family::V4) && !v4.fits(Family::V6));
    let mut entries = v4.entries.clone();
    entries.sort();
    assert_eq!(
        entries,
        nets(&["103.21.244.0/22", "173.245.48.0/20", "198.51.100.7/32"])
    );
    let v6 = &sets[SET_V6];
    assert!(v6.fits(Family::V6));
    assert!(v6.entries.contains(&"2001:db8::7/128".parse().unwrap()));
    assert_eq!(v6.entries.len(), 3);
}

#[test]
fn ipset_save_errors_name_the_line() {
    let err = parse_ipset_save(
        "create cf-allowlist-v4 hash:net family inet\nadd cf-allowlist-v4 010.1.2.0/24\n",
        &[SET_V4],
        "ipset save cf-allowlist-v4",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("ipset save cf-allowlist-v4"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

fn sample() -> (Vec<IpNet>, Vec<IpNet>) {
    (
        nets(&["103.21.244.0/22", "173.245.48.0/20"]),
        nets(&["2400:cb00::/32"]),
    )
}

#[test]
fn snapshot_restore_input_per_range_restrict_both_protocols() {
    let (v4, _) = sample();
    let spec = RuleSpec {
        protocol: Protocol::Both,
        restrict: true,
        ..RuleSpec::default()
    };
    let rules = rules::chain_rules(DEFAULT_CHAIN, &spec, Sources::Ranges(&v4));
    let stale = "-A INPUT -j CF-ALLOWLIST".to_string();
    insta::assert_snapshot!(rules::restore_input(DEFAULT_CHAIN, &rules, true, &[stale]));
}

#[test]
fn snapshot_restore_input_ipset_every_port() {
    let spec = RuleSpec {
        ports: vec![],
        ..RuleSpec::default()
    };
    let rules = rules::chain_rules(DEFAULT_CHAIN, &spec, Sources::Set(SET_V6));
    insta::assert_snapshot!(rules::restore_input(DEFAULT_CHAIN, &rules, false, &[]));
}

#[test]
fn more_than_fifteen_ports_split_over_multiport_rules() {
    let spec = RuleSpec {
        ports: (8000..8020).collect(),
        ..RuleSpec::default()
    };
    let rules = rules::chain_rules(DEFAULT_CHAIN, &spec, Sources::Set(SET_V4));
    assert_eq!(rules.len(), 2);
    assert!(rules[0].contains("--dports 8000,8001,"), "{}", rules[0]);
    assert!(rules[1].contains("--dports 8015,8016,8017,8018,8019 "));
}

#[test]
fn snapshot_purge_input() {
    insta::assert_snapshot!(rules::purge_input(
        DEFAULT_CHAIN,
        &[
            rules::jump_rule(DEFAULT_CHAIN),
            r#"-A INPUT -m comment --comment "old \"one\"" -j CF-ALLOWLIST"#.to_string()
        ],
        true
    ));
}

#[test]
fn snapshot_ipset_swap_finish_and_undo() {
    let (v4, v6) = sample();
    let updates = [
        SetUpdate {
            family: Family::V4,
            set: SET_V4,
            tmp: TMP_SET_V4,
            exists: false,
            stale_tmp: false,
            entries: &v4,
            in_place: None,
        },
        SetUpdate {
            family: Family::V6,
            set: SET_V6,
            tmp: TMP_SET_V6,
            exists: true,
            stale_tmp: true,
            entries: &v6,
            in_place: None,
        },
    ];
    let set = |entries: &[IpNet], family: &str| IpSet {
        create: format!("hash:net family {family} hashsize 1024 maxelem 65536 bucketsize 12")
            .split(' ')
            .map(String::from)
            .collect(),
        entries: entries.to_vec(),
    };
    let (v4, v6) = (set(&v4, "inet"), set(&v6, "inet6"));
    // The old members, in another order than `ipset save` might print them.
    let old_v6 = set(&nets(&["2606:4700::/32", "2400:cb00::/32"]), "inet6");
    let undo = |u: &SetUpdate<'_>, old: Option<&IpSet>, now: Option<&IpSet>, tmp: bool| {
        rules::undo_set_input(u, old, now, tmp).unwrap_or_else(|e| format!("Err: {e}\n"))
    };
    let [new_set, old_set] = &updates;
    insta::assert_snapshot!(format!(
        "# apply v4\n{}# apply v6\n{}# finish\n{}\
         # undo v4 (created), swapped\n{}\
         # undo v4 (created), failed before anything\n{}\
         # undo v6, swapped\n{}\
         # undo v6, failed before the swap\n{}\
         # undo v6, failed before its first line\n{}\
         # undo v6, swapped and finished (the temporary set is gone)\n{}\
         # undo v6, the set is gone\n{}",
        rules::ipset_swap_input(std::slice::from_ref(new_set)),
        rules::ipset_swap_input(std::slice::from_ref(old_set)),
        rules::finish_sets(&updates),
        undo(new_set, None, Some(&v4), true),
        undo(new_set, None, None, false),
        undo(old_set, Some(&old_v6), Some(&v6), true),
        undo(old_set, Some(&old_v6), Some(&old_v6), true),
        undo(old_set, Some(&old_v6), Some(&old_v6), false),
        undo(old_set, Some(&old_v6), Some(&v6), false),
        undo(old_set, Some(&old_v6), None, false),
    ));
}

#[test]
fn set_sizes_leave_headroom() {
    assert_eq!(rules::set_sizes(22), (1024, 65536));
    assert_eq!(rules::set_sizes(100_000), (131072, 262144));
}

#[test]
fn a_table_iptables_nft_cannot_read_is_refused_not_read_as_empty() {
    let text = fixture("ip6tables-nft-save-incompatible.txt");
    let err = parse_save(&text, "filter", "ip6tables-nft-save -t filter")
        .unwrap_err()
        .to_string();
    assert!(err.contains("nftables backend"), "{err}");
    // Another table's incompatibility is not ours to refuse.
    assert!(parse_save(&text, "nat", "ip6tables-nft-save").is_ok());
}

#[test]
fn option_names_round_trip() {
    use cfa_iptables::{IpsetMode, Variant};
    for mode in [IpsetMode::Auto, IpsetMode::Always, IpsetMode::Never] {
        assert_eq!(mode.to_string().parse::<IpsetMode>(), Ok(mode));
    }
    for variant in [Variant::Auto, Variant::Nft, Variant::Legacy] {
        assert_eq!(variant.to_string().parse::<Variant>(), Ok(variant));
    }
    let err = "iptables".parse::<Variant>().unwrap_err();
    assert!(err.contains("auto, nft or legacy"), "{err}");
    assert!("sometimes".parse::<IpsetMode>().is_err());
}
