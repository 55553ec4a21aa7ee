//! The nftables backend against the real kernel, each test in its own network namespace.

mod common;

use common::{list, sync};
use std::time::Instant;

use cfa_core::{
    AllowList, Backend, Family, Live, Plan, Protocol, RuleSpec, Runner, Structure, RULE_COMMENT,
};
use cfa_nftables::{parse_table, validate_options, NftOptions, NftablesBackend, SHARED_SETS};
use ipnet::IpNet;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use testkit::NetNs;

#[test]
fn every_rule_shape_reads_back_as_current() {
    // Guards the signature the backend predicts for each shape against what nft really reports.
    let ns = NetNs::new("nftshape");
    let desired = list(&["173.245.48.0/20", "2400:cb00::/32"]);
    for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Both] {
        for ports in [vec![], vec![443], vec![80, 443, 8443]] {
            for restrict in [false, true] {
                if restrict && ports.is_empty() {
                    continue;
                }
                let spec = RuleSpec {
                    ports: ports.clone(),
                    protocol,
                    restrict,
                    ..RuleSpec::default()
                };
                let b = NftablesBackend::new(
                    NftOptions::default(),
                    spec.clone(),
                    Runner::in_netns(ns.name()),
                )
                .unwrap();
                sync(&b, &desired);
                assert!(
                    sync(&b, &desired).is_none(),
                    "second sync of {spec:?} is a no-op"
                );
            }
        }
    }
}

#[test]
fn changed_list_updates_only_elements_and_foreign_tables_stay() {
    let ns = NetNs::new("nftchg");
    ns.exec_ok("nft", &["add table ip other; add chain ip other c { type filter hook input priority 0; policy accept; }; add rule ip other c tcp dport 22 accept"]);
    let before_other = ns.exec_ok("nft", &["list", "table", "ip", "other"]);
    let b = NftablesBackend::new(
        NftOptions::default(),
        RuleSpec::default(),
        Runner::in_netns(ns.name()),
    )
    .unwrap();
    sync(
        &b,
        &list(&["104.16.0.0/12", "173.245.48.0/20", "2405:b500::/32"]),
    )
    .unwrap();
    let plan = sync(
        &b,
        &list(&["104.16.0.0/13", "104.24.0.0/14", "173.245.48.0/20"]),
    )
    .unwrap();
    assert!(plan.rebuild.is_none());
    assert_eq!(plan.remove, list(&["104.16.0.0/12", "2405:b500::/32"]));
    assert_eq!(
        ns.exec_ok("nft", &["list", "table", "ip", "other"]),
        before_other
    );
    b.purge().unwrap();
    assert_eq!(b.read().unwrap(), Live::absent());
    b.purge().unwrap();
    assert_eq!(
        ns.exec_ok("nft", &["list", "table", "ip", "other"]),
        before_other
    );
}

#[test]
fn a_hand_edited_table_is_rebuilt() {
    let ns = NetNs::new("nftedit");
    let b = NftablesBackend::new(
        NftOptions::default(),
        RuleSpec::default(),
        Runner::in_netns(ns.name()),
    )
    .unwrap();
    sync(&b, &list(&["173.245.48.0/20"])).unwrap();
    ns.exec_ok(
        "nft",
        &["add rule inet cf_allowlist input tcp dport 22 accept"],
    );
    let live = b.read().unwrap();
    assert!(matches!(live.structure, Structure::Outdated(_)), "{live:?}");
    let plan = sync(&b, &list(&["173.245.48.0/20"])).unwrap();
    assert!(plan.rebuild.is_some());
}

#[test]
fn check_changes_nothing_and_reports_nft_errors() {
    let ns = NetNs::new("nftcheck");
    let b = NftablesBackend::new(
        NftOptions::default(),
        RuleSpec::default(),
        Runner::in_netns(ns.name()),
    )
    .unwrap();
    let plan = Plan::new(&b.read().unwrap(), &list(&["173.245.48.0/20"])).unwrap();
    b.check(&plan).unwrap();
    assert_eq!(b.read().unwrap(), Live::absent());
    // An element that overlaps one the set already has: the kernel refuses the whole batch.
    sync(&b, &list(&["104.16.0.0/12"])).unwrap();
    let mut bad = Plan::new(
        &b.read().unwrap(),
        &list(&["104.16.0.0/12", "104.16.0.0/13"]),
    )
    .unwrap();
    bad.remove = AllowList::new();
    let err = b.apply(&bad).unwrap_err().to_string();
    assert!(
        err.contains("applying the element changes to inet cf_allowlist")
            && err.contains("adding 104.16.0.0/13 to set inet cf_allowlist allow_v4")
            && err.contains("it overlaps an interval already in the set")
            && err.contains("nothing was applied"),
        "{err}"
    );
    assert_eq!(
        b.read().unwrap().entries,
        list(&["104.16.0.0/12"]),
        "a failed transaction changes nothing"
    );
}

#[test]
fn existing_table_mode_keeps_the_operators_rules() {
    let ns = NetNs::new("nftexist");
    ns.exec_ok(
        "nft",
        &["add table inet filter; add chain inet filter input { type filter hook input priority 0; policy drop; }; \
           add rule inet filter input ct state established,related accept; \
           add rule inet filter input tcp dport 22 accept comment \"ssh\""],
    );
    let opts = NftOptions {
        family: "inet".into(),
        table: "filter".into(),
        chain: Some("input".into()),
    };
    let b = NftablesBackend::new(opts, RuleSpec::default(), Runner::in_netns(ns.name())).unwrap();
    assert_eq!(b.read().unwrap().structure, Structure::Absent);
    let operator_rules = |ns: &NetNs| -> Vec<String> {
        ns.exec_ok("nft", &["list", "chain", "inet", "filter", "input"])
            .lines()
            .filter(|l| !l.contains("cf-allowlist") && !l.contains("cf_allowlist"))
            .map(String::from)
            .collect()
    };
    let before = operator_rules(&ns);
    sync(&b, &list(&["173.245.48.0/20", "2400:cb00::/32"])).unwrap();
    let listing = ns.exec_ok("nft", &["list", "chain", "inet", "filter", "input"]);
    let first_rule = listing.lines().find(|l| l.contains("accept")).unwrap();
    assert!(
        first_rule.contains("@cf_allowlist_v4"),
        "our rule comes first:\n{listing}"
    );
    sync(&b, &list(&["173.245.48.0/20"])).unwrap();
    assert_eq!(operator_rules(&ns), before);
    b.purge().unwrap();
    assert_eq!(b.read().unwrap().structure, Structure::Absent);
    let after = ns.exec_ok("nft", &["list", "table", "inet", "filter"]);
    assert!(
        !after.contains("cf_allowlist") && !after.contains("cf-allowlist"),
        "{after}"
    );
    assert_eq!(operator_rules(&ns), before);
}

#[test]
fn existing_table_that_does_not_exist_is_a_clear_error() {
    let ns = NetNs::new("nftnotbl");
    let opts = NftOptions {
        family: "inet".into(),
        table: "filter".into(),
        chain: Some("input".into()),
    };
    let b = NftablesBackend::new(opts, RuleSpec::default(), Runner::in_netns(ns.name())).unwrap();
    let err = b.read().unwrap_err().to_string();
    assert!(err.contains("inet filter does not exist"), "{err}");
}

/// `(table, kind, name)` of an object in a table (a rule's kind is `rule in CHAIN`, its name its
/// comment).
type Object = (String, String, String);

/// `(family, table)` of every table, and every chain, set and rule in them, in the namespace's
/// ruleset, from `nft -j list ruleset`.
fn objects(ns: &NetNs) -> (Vec<(String, String)>, Vec<Object>) {
    let json: Value = serde_json::from_str(&ns.exec_ok("nft", &["-j", "list", "ruleset"])).unwrap();
    let mut tables = Vec::new();
    let mut inner = Vec::new();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    for item in json["nftables"].as_array().unwrap() {
        if let Some(t) = item.get("table") {
            tables.push((s(t, "family"), s(t, "name")));
        }
        for kind in ["chain", "set", "map", "flowtable"] {
            if let Some(o) = item.get(kind) {
                inner.push((s(o, "table"), kind.to_string(), s(o, "name")));
            }
        }
        if let Some(r) = item.get("rule") {
            inner.push((
                s(r, "table"),
                format!("rule in {}", s(r, "chain")),
                s(r, "comment"),
            ));
        }
    }
    (tables, inner)
}

#[test]
fn injected_names_are_refused_before_anything_reaches_nft() {
    let ns = NetNs::new("nftinj");
    ns.exec_ok(
        "nft",
        &["add table inet victim; add table inet opfilter; \
           add chain inet opfilter input { type filter hook input priority 0; policy accept; }"],
    );
    let before = ns.exec_ok("nft", &["-a", "list", "ruleset"]);
    let cases = [
        (
            "nftables.chain",
            NftOptions {
                family: "inet".into(),
                table: "opfilter".into(),
                chain: Some(
                    "input meta mark 7 drop; delete table inet victim; insert rule inet opfilter input"
                        .into(),
                ),
            },
        ),
        (
            "nftables.family",
            NftOptions {
                family: "inet; flush ruleset".into(),
                table: "opfilter".into(),
                chain: Some("input".into()),
            },
        ),
        (
            "nftables.table",
            NftOptions {
                family: "inet".into(),
                table: "opfilter\ndelete table inet victim\n".into(),
                chain: Some("input".into()),
            },
        ),
        (
            "nftables.chain",
            NftOptions {
                family: "inet".into(),
                table: "opfilter".into(),
                chain: Some("input#".into()),
            },
        ),
    ];
    for (key, opts) in cases {
        assert!(validate_options(&opts).unwrap_err().starts_with(key));
        // With only IPv4 managed the injected chain once applied cleanly (one rule, one copy of
        // the injected statements): the victim table was deleted and a drop rule added.
        let spec = RuleSpec {
            families: vec![Family::V4],
            ..RuleSpec::default()
        };
        let err = NftablesBackend::new(opts.clone(), spec, Runner::in_netns(ns.name()))
            .expect_err("the backend refuses the options itself")
            .to_string();
        assert!(err.starts_with(key), "{opts:?}: {err}");
    }
    assert_eq!(ns.exec_ok("nft", &["-a", "list", "ruleset"]), before);
}

#[test]
fn only_the_managed_families_get_sets_and_rules() {
    let ns = NetNs::new("nftfam");
    let desired = list(&["173.245.48.0/20", "2400:cb00::/32"]);
    for families in [vec![Family::V4], vec![Family::V6], Family::ALL.to_vec()] {
        let spec = RuleSpec {
            families: families.clone(),
            restrict: true,
            ..RuleSpec::default()
        };
        let b =
            NftablesBackend::new(NftOptions::default(), spec, Runner::in_netns(ns.name())).unwrap();
        assert_eq!(b.families().unwrap(), families);
        sync(&b, &desired.only(&families));
        let (_, inner) = objects(&ns);
        let sets: Vec<&str> = inner
            .iter()
            .filter(|(_, k, _)| k == "set")
            .map(|(_, _, n)| n.as_str())
            .collect();
        let wanted: Vec<&str> = families
            .iter()
            .map(|f| match f {
                Family::V4 => "allow_v4",
                Family::V6 => "allow_v6",
            })
            .collect();
        assert_eq!(sets, wanted, "{families:?}");
        let rules = inner
            .iter()
            .filter(|(_, k, _)| k.starts_with("rule"))
            .count();
        assert_eq!(rules, 2 * families.len(), "accept + drop per family");
    }
    // An ip6 table of the operator's with only IPv4 managed would govern nothing: refused.
    let opts = NftOptions {
        family: "ip6".into(),
        table: "filter".into(),
        chain: Some("input".into()),
    };
    let spec = RuleSpec {
        families: vec![Family::V4],
        ..RuleSpec::default()
    };
    let err = NftablesBackend::new(opts, spec, Runner::in_netns(ns.name()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ip6 table cannot hold ipv4"), "{err}");
}

/// `n` distinct IPv4 /24s in 10.0.0.0/8 and up.
fn many_v4(n: u32) -> AllowList {
    (0..n)
        .map(|i| format!("{}.{}.{}.0/24", 10 + (i >> 16), (i >> 8) & 255, i & 255))
        .map(|s| s.parse::<IpNet>().unwrap())
        .collect()
}

#[test]
fn a_20k_set_shrinks_back_to_cloudflare_in_one_transaction() {
    let ns = NetNs::new("nft20k");
    let cf = cfa_core::snapshot::cloudflare();
    let big = many_v4(20_000).union(&cf);
    for opts in [
        NftOptions::default(),
        NftOptions {
            family: "inet".into(),
            table: "filter".into(),
            chain: Some("input".into()),
        },
    ] {
        if opts.chain.is_some() {
            ns.exec_ok("nft", &["add table inet filter; add chain inet filter input { type filter hook input priority 0; policy accept; }"]);
        }
        let b = NftablesBackend::new(
            opts.clone(),
            RuleSpec::default(),
            Runner::in_netns(ns.name()),
        )
        .unwrap();
        let started = Instant::now();
        sync(&b, &big).unwrap();
        let filled = started.elapsed();
        let started = Instant::now();
        let plan = sync(&b, &cf).unwrap();
        let shrunk = started.elapsed();
        assert!(plan.rebuild.is_none(), "an element change, not a rebuild");
        assert_eq!(plan.remove.len(), 20_000);
        // A small change to the refilled set is a difference again.
        let mut next = cf.clone();
        next.insert("192.0.2.0/24".parse().unwrap());
        sync(&b, &next).unwrap();
        eprintln!(
            "{opts:?}: filling 20,022 took {filled:?}; 20,022 -> 22 (read, check, apply, read) took {shrunk:?}"
        );
        b.purge().unwrap();
    }
}

/// Names the validator accepts, mostly plain and some close to keywords.
fn accepted_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z_][a-zA-Z0-9_./-]{0,24}",
        1 => proptest::sample::select(cfa_nftables::KEYWORDS)
            .prop_flat_map(|k| ("[a-zA-Z0-9_./-]{1,3}", any::<bool>())
                .prop_map(move |(x, front)| if front { format!("x{x}{k}") } else { format!("{k}{x}") })),
    ]
    .prop_filter("accepted", |n| cfa_nftables::validate_name("n", n).is_ok())
}

#[test]
fn names_the_validator_accepts_reach_nft_as_exactly_those_names() {
    let ns = NetNs::new("nftnames");
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        proptest::sample::select(cfa_nftables::FAMILIES.to_vec()),
        accepted_name(),
        accepted_name(),
    );
    runner
        .run(&strategy, |(family, table, chain)| {
            // A failed case (or its shrinking) leaves nothing behind for the next one.
            ns.exec_ok("nft", &["flush", "ruleset"]);
            let opts = NftOptions {
                family: family.into(),
                table: table.clone(),
                chain: Some(chain.clone()),
            };
            if validate_options(&opts).is_err() {
                // Only `cf_allowlist` itself, refused with a chain.
                prop_assert_eq!(&table, "cf_allowlist");
                return Ok(());
            }
            // Set up with argument vectors, as an operator would type them.
            ns.exec_ok("nft", &["add", "table", family, &table]);
            ns.exec_ok(
                "nft",
                &[
                    "add",
                    "chain",
                    family,
                    &table,
                    &chain,
                    "{ type filter hook input priority 0; policy accept; }",
                ],
            );
            ns.exec_ok(
                "nft",
                &[
                    "add", "rule", family, &table, &chain, "tcp", "dport", "22", "accept",
                    "comment", "\"ssh\"",
                ],
            );
            let b = NftablesBackend::new(opts, RuleSpec::default(), Runner::in_netns(ns.name()))
                .unwrap();
            let managed = b.families().unwrap();
            let desired = list(&["173.245.48.0/20", "2400:cb00::/32"]).only(&managed);
            sync(&b, &desired).unwrap();
            let (tables, inner) = objects(&ns);
            prop_assert_eq!(tables, vec![(family.to_string(), table.clone())]);
            // `nft -j` lists a table's sets, then its chains, then the rules in order.
            let mut expected = Vec::new();
            for f in &managed {
                let name = match f {
                    Family::V4 => SHARED_SETS[0],
                    Family::V6 => SHARED_SETS[1],
                };
                expected.push((table.clone(), "set".to_string(), name.to_string()));
            }
            expected.push((table.clone(), "chain".into(), chain.clone()));
            for _ in &managed {
                expected.push((
                    table.clone(),
                    format!("rule in {chain}"),
                    RULE_COMMENT.into(),
                ));
            }
            expected.push((table.clone(), format!("rule in {chain}"), "ssh".into()));
            prop_assert_eq!(inner, expected);
            b.purge().unwrap();
            let (_, inner) = objects(&ns);
            prop_assert_eq!(
                inner,
                vec![
                    (table.clone(), "chain".to_string(), chain.clone()),
                    (table.clone(), format!("rule in {chain}"), "ssh".to_string()),
                ]
            );
            ns.exec_ok("nft", &["delete", "table", family, &table]);
            Ok(())
        })
        .unwrap();
}

/// A pool of non-overlapping networks (an interval set refuses overlaps), both families.
fn pool() -> impl Strategy<Value = Vec<IpNet>> {
    let v4 = (any::<u32>(), 8u8..=32)
        .prop_map(|(a, l)| IpNet::V4(ipnet::Ipv4Net::new(a.into(), l).unwrap().trunc()));
    let v6 = (any::<u128>(), 16u8..=128)
        .prop_map(|(a, l)| IpNet::V6(ipnet::Ipv6Net::new(a.into(), l).unwrap().trunc()));
    proptest::collection::vec(prop_oneof![v4, v6], 0..40).prop_map(|nets| {
        let list: AllowList = nets.into_iter().collect();
        list.aggregate().iter().collect()
    })
}

fn spec() -> impl Strategy<Value = RuleSpec> {
    (
        proptest::sample::subsequence(vec![80u16, 443, 8443, 2053], 0..=3),
        proptest::sample::select(vec![Protocol::Tcp, Protocol::Udp, Protocol::Both]),
        any::<bool>(),
        proptest::sample::select(vec![
            vec![Family::V4],
            vec![Family::V6],
            Family::ALL.to_vec(),
        ]),
    )
        .prop_map(|(ports, protocol, restrict, families)| RuleSpec {
            restrict: restrict && !ports.is_empty(),
            ports,
            protocol,
            families,
        })
}

#[test]
fn generated_scripts_read_back_as_the_list() {
    // Generate -> apply in the kernel -> `nft -j` -> our parser gives back the list, for the first
    // sync (a rebuild) and for a change (a difference, or a refill when most entries go).
    let ns = NetNs::new("nftround");
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let mode = proptest::sample::select(vec![None, Some("inet"), Some("ip"), Some("ip6")]);
    let strategy = (mode, spec(), pool()).prop_flat_map(|(mode, spec, pool)| {
        let n = pool.len();
        (
            Just(mode),
            Just(spec),
            Just(pool),
            proptest::collection::vec(any::<bool>(), n),
            proptest::collection::vec(any::<bool>(), n),
        )
    });
    runner
        .run(&strategy, |(mode, spec, pool, first, second)| {
            ns.exec_ok("nft", &["flush", "ruleset"]);
            let opts = match mode {
                None => NftOptions::default(),
                Some(family) => {
                    ns.exec_ok("nft", &["add", "table", family, "filter"]);
                    ns.exec_ok(
                        "nft",
                        &[
                            "add",
                            "chain",
                            family,
                            "filter",
                            "input",
                            "{ type filter hook input priority 0; policy drop; }",
                        ],
                    );
                    NftOptions {
                        family: family.into(),
                        table: "filter".into(),
                        chain: Some("input".into()),
                    }
                }
            };
            let b =
                match NftablesBackend::new(opts.clone(), spec.clone(), Runner::in_netns(ns.name()))
                {
                    Ok(b) => b,
                    Err(e) => {
                        // Only an ip/ip6 table with none of its family managed.
                        prop_assert!(e.to_string().contains("cannot hold"), "{}", e);
                        if let Some(family) = mode {
                            ns.exec_ok("nft", &["delete", "table", family, "filter"]);
                        }
                        return Ok(());
                    }
                };
            let managed = b.families().unwrap();
            let pick = |mask: &[bool]| -> AllowList {
                pool.iter()
                    .zip(mask)
                    .filter(|(_, m)| **m)
                    .map(|(n, _)| *n)
                    .collect::<AllowList>()
                    .only(&managed)
            };
            for desired in [pick(&first), pick(&second), AllowList::new()] {
                sync(&b, &desired);
                let table = opts.table.clone();
                let json = ns.exec_ok("nft", &["-j", "list", "table", &opts.family, &table]);
                let parsed = parse_table(&json, &table).unwrap();
                let mut back = AllowList::new();
                for set in parsed.sets.values() {
                    prop_assert!(set.other.is_empty());
                    back = back.union(&set.nets.iter().copied().collect());
                }
                prop_assert_eq!(&back, &desired, "{:?} {:?}", opts, spec);
                prop_assert_eq!(b.read().unwrap().structure, Structure::Current);
            }
            b.purge().unwrap();
            prop_assert!(b.read().unwrap().entries.is_empty());
            if let Some(family) = mode {
                ns.exec_ok("nft", &["delete", "table", family, "filter"]);
            } else {
                prop_assert_eq!(b.read().unwrap(), Live::absent());
            }
            Ok(())
        })
        .unwrap();
}
