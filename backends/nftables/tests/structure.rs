//! The netlink fast path for the structure against the real kernel: it confirms what we write,
//! for every rule shape, and never calls a hand-edited table current when `nft -j` does not.

mod common;

use cfa_core::{Backend, Live, Protocol, RuleSpec, Runner, Structure};
use cfa_nftables::{NftOptions, NftablesBackend};
use common::{list, sync};
use testkit::NetNs;

/// The fast path confirms (`Ok`), with exactly the JSON path's verdict and entries.
fn confirmed(b: &NftablesBackend, what: &str) -> Live {
    let json = b.read_with_nft().unwrap();
    match b.read_fast().unwrap() {
        Ok(fast) => {
            assert_eq!(fast, json, "{what}: fast path and nft -j disagree");
            fast
        }
        Err(why) => panic!("{what}: the fast path could not confirm: {why}"),
    }
}

#[test]
fn every_shape_is_confirmed_over_netlink() {
    let ns = NetNs::new("nftqshape");
    ns.exec_ok("nft", &["add table inet filter; add chain inet filter input { type filter hook input priority 0; policy drop; }; add rule inet filter input ct state established accept; add table ip f4; add chain ip f4 input; add table ip6 f6; add chain ip6 f6 input { type filter hook input priority 0; policy accept; }"]);
    let tables: [(&str, &str, Option<&str>); 4] = [
        ("inet", "cf_allowlist", None),
        ("inet", "filter", Some("input")),
        ("ip", "f4", Some("input")),
        ("ip6", "f6", Some("input")),
    ];
    for (family, table, chain) in tables {
        let desired = match family {
            "ip" => list(&["173.245.48.0/20"]),
            "ip6" => list(&["2400:cb00::/32"]),
            _ => list(&["173.245.48.0/20", "2400:cb00::/32"]),
        };
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
                    let opts = NftOptions {
                        family: family.into(),
                        table: table.into(),
                        chain: chain.map(String::from),
                    };
                    let b = NftablesBackend::new(opts, spec.clone(), Runner::in_netns(ns.name()))
                        .unwrap();
                    sync(&b, &desired);
                    let what = format!("{family} {table} {spec:?}");
                    let live = confirmed(&b, &what);
                    assert_eq!(live.structure, Structure::Current, "{what}");
                }
            }
        }
    }
}

/// The fast path either cannot confirm, or agrees with `nft -j` exactly; `read` agrees too.
fn never_hides(b: &NftablesBackend, what: &str) -> Option<String> {
    let json = b.read_with_nft().unwrap();
    assert_eq!(b.read().unwrap(), json, "{what}: read and nft -j disagree");
    match b.read_fast().unwrap() {
        Ok(fast) => {
            assert_eq!(fast, json, "{what}: the fast path hides a difference");
            None
        }
        Err(why) => Some(why),
    }
}

/// Replaces our table by its own listing edited with `edit`.
fn reload_edited(ns: &NetNs, table: &str, edit: impl Fn(&str) -> String) {
    let listing = ns.exec_ok("nft", &["list", "table", "inet", table]);
    let edited = edit(&listing);
    assert_ne!(edited, listing, "the edit changes something");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.nft");
    std::fs::write(&path, format!("delete table inet {table}\n{edited}")).unwrap();
    ns.exec_ok("nft", &["-f", path.to_str().unwrap()]);
}

#[test]
fn hand_edits_are_never_confirmed_as_current() {
    let ns = NetNs::new("nftqedit");
    let desired = list(&["173.245.48.0/20", "2400:cb00::/32"]);
    let spec = RuleSpec {
        ports: vec![80, 443],
        restrict: true,
        ..RuleSpec::default()
    };
    let b = NftablesBackend::new(
        NftOptions::default(),
        spec.clone(),
        Runner::in_netns(ns.name()),
    )
    .unwrap();
    type Edit = (&'static str, Box<dyn Fn(&NetNs)>);
    let text = |from: &'static str, to: &'static str| -> Box<dyn Fn(&NetNs)> {
        Box::new(move |ns: &NetNs| reload_edited(ns, "cf_allowlist", |l| l.replacen(from, to, 1)))
    };
    let cmd = |c: &'static str| -> Box<dyn Fn(&NetNs)> {
        Box::new(move |ns: &NetNs| {
            ns.exec_ok("nft", &[c]);
        })
    };
    let edits: Vec<Edit> = vec![
        ("a port changed", text("{ 80, 443 }", "{ 80, 444 }")),
        ("one port of two removed", text("{ 80, 443 }", "443")),
        (
            "a rule added",
            cmd("add rule inet cf_allowlist input tcp dport 22 accept"),
        ),
        (
            "a tagged rule added",
            cmd("add rule inet cf_allowlist input tcp dport 22 accept comment \"cf-allowlist\""),
        ),
        (
            "all rules removed",
            cmd("flush chain inet cf_allowlist input"),
        ),
        (
            "rules reordered",
            Box::new(|ns: &NetNs| {
                reload_edited(ns, "cf_allowlist", |l| {
                    let mut lines: Vec<&str> = l.lines().collect();
                    let rules: Vec<usize> = (0..lines.len())
                        .filter(|i| lines[*i].contains("comment \"cf-allowlist\""))
                        .collect();
                    lines.swap(rules[0], rules[1]);
                    lines.join("\n") + "\n"
                })
            }),
        ),
        (
            "a rule removed",
            Box::new(|ns: &NetNs| {
                reload_edited(ns, "cf_allowlist", |l| {
                    let drop = l.lines().position(|x| x.contains("drop comment")).unwrap();
                    l.lines()
                        .enumerate()
                        .filter(|(i, _)| *i != drop)
                        .map(|(_, x)| x)
                        .collect::<Vec<_>>()
                        .join("\n")
                        + "\n"
                })
            }),
        ),
        (
            "a counter in a rule",
            text("saddr @allow_v4 accept", "saddr @allow_v4 counter accept"),
        ),
        (
            "a comment changed",
            text("comment \"cf-allowlist\"", "comment \"cf-allowlist2\""),
        ),
        (
            "drop turned into reject",
            text("!= @allow_v4 drop", "!= @allow_v4 reject"),
        ),
        (
            "set flag added",
            text("flags interval", "flags interval,timeout"),
        ),
        (
            "set auto-merge",
            text("flags interval", "flags interval\n\t\tauto-merge"),
        ),
        ("set typeof", text("type ipv4_addr", "typeof ip saddr")),
        (
            "set size",
            text("flags interval", "flags interval\n\t\tsize 100000"),
        ),
        (
            "set comment",
            text("flags interval", "flags interval\n\t\tcomment \"x\""),
        ),
        (
            "chain priority",
            text("priority filter - 10", "priority filter - 11"),
        ),
        ("chain policy", text("policy accept", "policy drop")),
        ("chain hook", text("hook input", "hook forward")),
        (
            "chain comment",
            cmd("add chain inet cf_allowlist input { comment \"x\"; }"),
        ),
        (
            "table dormant",
            cmd("add table inet cf_allowlist { flags dormant; }"),
        ),
        (
            "table comment",
            cmd("add table inet cf_allowlist { comment \"x\"; }"),
        ),
        (
            "an extra set",
            cmd("add set inet cf_allowlist extra { type ipv4_addr; }"),
        ),
        ("an extra chain", cmd("add chain inet cf_allowlist other")),
        ("a counter object", cmd("add counter inet cf_allowlist c1")),
        (
            "a set deleted",
            Box::new(|ns: &NetNs| {
                ns.exec_ok("nft", &["flush chain inet cf_allowlist input"]);
                ns.exec_ok("nft", &["delete set inet cf_allowlist allow_v6"]);
            }),
        ),
    ];
    let mut unsure = 0;
    for (what, edit) in &edits {
        let _ = ns.exec("nft", &["delete table inet cf_allowlist"]);
        sync(&b, &desired);
        assert_eq!(
            b.read_fast().unwrap(),
            Ok(b.read_with_nft().unwrap()),
            "before {what}"
        );
        edit(&ns);
        if *what == "table dormant" {
            // nft 1.0.6 crashes listing a dormant table as JSON ("corrupted double-linked list").
            let why = b
                .read_fast()
                .unwrap()
                .expect_err("a dormant table is not confirmed");
            assert!(why.contains("dormant"), "{why}");
            unsure += 1;
            continue;
        }
        // (nft -j calls some edits current: a changed comment in our own table.)
        if let Some(why) = never_hides(&b, what) {
            unsure += 1;
            eprintln!("{what}: unsure: {why}");
        }
        // And the next sync repairs it without the fast path getting in the way.
        sync(&b, &desired);
    }
    eprintln!("{unsure} of {} edits fell back to nft -j", edits.len());
}

#[test]
fn hand_edits_in_an_operators_table() {
    let ns = NetNs::new("nftqop");
    let base = "add table inet filter; add chain inet filter input { type filter hook input priority 0; policy drop; }; add rule inet filter input ct state established accept; add rule inet filter input tcp dport 22 accept comment \"ssh\"";
    let opts = NftOptions {
        family: "inet".into(),
        table: "filter".into(),
        chain: Some("input".into()),
    };
    let b = NftablesBackend::new(opts, RuleSpec::default(), Runner::in_netns(ns.name())).unwrap();
    let desired = list(&["173.245.48.0/20", "2400:cb00::/32"]);
    let edits: Vec<(&str, &str, bool)> = vec![
        // (what, nft command, still current per nft -j)
        (
            "operator rule added at the end",
            "add rule inet filter input udp dport 53 accept",
            true,
        ),
        (
            "operator set and chain added",
            "add set inet filter theirs { type ipv4_addr; }; add chain inet filter other",
            true,
        ),
        (
            "operator rule above ours",
            "insert rule inet filter input tcp dport 25 accept",
            false,
        ),
        (
            "a tagged rule changed",
            "insert rule inet filter input tcp dport 22 accept comment \"cf-allowlist\"",
            false,
        ),
        (
            "one of our rules deleted",
            "delete rule inet filter input handle HANDLE",
            false,
        ),
    ];
    for (what, command, current) in edits {
        let _ = ns.exec("nft", &["delete table inet filter"]);
        ns.exec_ok("nft", &[base]);
        sync(&b, &desired);
        assert_eq!(
            b.read_fast().unwrap(),
            Ok(b.read_with_nft().unwrap()),
            "before {what}"
        );
        let command = if command.contains("HANDLE") {
            // Our first rule's handle: delete it, so that our rules no longer match.
            let listing = ns.exec_ok("nft", &["-a", "list", "chain", "inet", "filter", "input"]);
            let line = listing
                .lines()
                .find(|l| l.contains("cf-allowlist"))
                .unwrap();
            let handle = line.rsplit(' ').next().unwrap().to_string();
            command.replace("HANDLE", &handle)
        } else {
            command.to_string()
        };
        ns.exec_ok("nft", &[&command]);
        let json = b.read_with_nft().unwrap();
        assert_eq!(
            json.structure == Structure::Current,
            current,
            "{what}: {json:?}"
        );
        if let Some(why) = never_hides(&b, what) {
            assert!(
                !current,
                "{what}: a current operator table is confirmed: {why}"
            );
            eprintln!("{what}: unsure: {why}");
        }
    }
}
