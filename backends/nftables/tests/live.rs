//! The nftables backend against the real kernel, each test in its own network namespace.

use cfa_core::{AllowList, Backend, Live, Plan, Protocol, RuleSpec, Runner, Structure};
use cfa_nftables::{NftOptions, NftablesBackend};
use testkit::NetNs;

fn list(items: &[&str]) -> AllowList {
    items.iter().map(|s| s.parse().unwrap()).collect()
}

fn sync(backend: &NftablesBackend, desired: &AllowList) -> Option<Plan> {
    let live = backend.read().unwrap();
    let plan = Plan::new(&live, desired)?;
    backend.check(&plan).unwrap();
    backend.apply(&plan).unwrap();
    let after = backend.read().unwrap();
    assert_eq!(after.structure, Structure::Current, "after applying {plan}");
    assert_eq!(&after.entries, desired);
    Some(plan)
}

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
    // An element the set already has, added again to an interval set: nft refuses the overlap.
    sync(&b, &list(&["104.16.0.0/12"])).unwrap();
    let mut bad = Plan::new(
        &b.read().unwrap(),
        &list(&["104.16.0.0/12", "104.16.0.0/13"]),
    )
    .unwrap();
    bad.remove = AllowList::new();
    let err = b.apply(&bad).unwrap_err().to_string();
    assert!(
        err.contains("applying the nftables transaction") && err.contains("overlap"),
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
