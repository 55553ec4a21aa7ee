//! The nftables evaluator on real `nft -j list ruleset` output (nft 1.0.6, captured from the
//! `.nft` files beside each fixture, loaded into a network namespace).

use std::net::IpAddr;

use cfa_eval::nft::{Ruleset, HOOK_STEP};
use cfa_eval::{combine, Decision, Evaluate, Packet, Verdict, L4};

fn fixture(name: &str) -> Ruleset {
    let path = format!(
        "{}/tests/fixtures/nft/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Ruleset::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `"tcp 192.0.2.1 443"` as a packet.
fn packet(spec: &str) -> Packet {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    Packet {
        proto: if parts[0] == "tcp" { L4::Tcp } else { L4::Udp },
        src: parts[1].parse().unwrap(),
        dport: parts[2].parse().unwrap(),
    }
}

fn decide(rs: &Ruleset, spec: &str) -> Decision {
    combine(&rs.evaluate(&packet(spec)))
}

fn rule_of(d: &Decision) -> String {
    d.by.as_ref()
        .and_then(|b| b.rule.clone())
        .unwrap_or_default()
}

fn unknown_why(d: &Decision) -> String {
    match &d.verdict {
        Verdict::Unknown(why) => why.clone(),
        other => panic!("expected unknown, got {other} ({d:?})"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn own_table_in_restrict_mode_lets_cloudflare_in_and_keeps_strangers_out() {
    let rs = fixture("cf-restrict");
    assert_eq!(
        rs.tables(),
        vec![("inet".to_string(), "cf_allowlist".to_string())]
    );
    let hooks = rs.evaluate(&packet("tcp 104.16.5.5 443"));
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].chain, "inet cf_allowlist input (priority -10)");
    assert_eq!(hooks[0].priority, -10);
    assert_eq!(hooks[0].verdict, Verdict::Accept);
    let rule = hooks[0].rule.clone().unwrap();
    assert!(
        rule.starts_with("inet cf_allowlist input handle ") && rule.contains("@allow_v4 accept"),
        "{rule}"
    );
    assert!(rule.ends_with("comment \"cf-allowlist\""), "{rule}");

    let d = decide(&rs, "tcp 203.0.113.1 443");
    assert_eq!(d.verdict, Verdict::Drop);
    assert!(rule_of(&d).contains("ip saddr != @allow_v4 drop"), "{d:?}");
    assert_eq!(decide(&rs, "tcp 2606:4700::1 80").verdict, Verdict::Accept);
    assert_eq!(decide(&rs, "tcp 2001:db8::1 80").verdict, Verdict::Drop);
    // Ports and protocols the table does not manage pass (policy accept).
    let d = decide(&rs, "tcp 203.0.113.1 22");
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(decide(&rs, "udp 203.0.113.1 443").verdict, Verdict::Accept);
    let hooks = rs.evaluate(&packet("tcp 203.0.113.1 22"));
    assert_eq!(
        hooks[0].rule.as_deref(),
        Some("inet cf_allowlist input: policy accept")
    );

    let b4 = rs.boundaries(false);
    for a in [
        "104.16.0.0",
        "104.24.0.0",
        "104.28.0.0",
        "173.245.48.0",
        "173.245.64.0",
    ] {
        assert!(b4.contains(&ip(a)), "{a} missing from {b4:?}");
    }
    assert!(b4.iter().all(IpAddr::is_ipv4));
    let b6 = rs.boundaries(true);
    for a in ["2606:4700::", "2606:4701::", "2a06:98c0::", "2a06:98c8::"] {
        assert!(b6.contains(&ip(a)), "{a} missing from {b6:?}");
    }
    assert!(b6.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
}

#[test]
fn a_host_with_fail2ban_and_an_open_web_port() {
    let rs = fixture("host");
    // A Fail2Ban ban on a Cloudflare address is a refusal, named by its set.
    let d = decide(&rs, "tcp 104.16.5.5 443");
    assert_eq!(d.verdict, Verdict::Reject);
    let by = d.by.clone().unwrap();
    assert_eq!(by.chain, "inet f2b-table f2b-chain (priority -1)");
    assert!(rule_of(&d).contains("@addr-set-nginx reject"), "{d:?}");
    assert_eq!(decide(&rs, "tcp 104.16.5.6 443").verdict, Verdict::Accept);
    let b4 = rs.boundaries(false);
    for a in ["104.16.5.5", "104.16.5.6", "198.51.100.0", "198.51.101.0"] {
        assert!(b4.contains(&ip(a)), "{a} missing from {b4:?}");
    }
    // The operator's accept for 443 lets strangers in: every chain accepts.
    let hooks = rs.evaluate(&packet("tcp 203.0.113.1 443"));
    assert_eq!(combine(&hooks).verdict, Verdict::Accept);
    let filter = hooks
        .iter()
        .find(|h| h.chain == "inet filter input (priority 0)")
        .unwrap();
    assert!(
        filter
            .rule
            .as_deref()
            .unwrap()
            .ends_with("tcp dport { 80, 443 } accept"),
        "{filter:?}"
    );
    // Order: cf_allowlist (-10), f2b (-1), filter (0); forward/output chains do not count.
    let chains: Vec<&str> = hooks.iter().map(|h| h.chain.as_str()).collect();
    assert_eq!(chains.len(), 3, "{chains:?}");
    let d = decide(&rs, "tcp 203.0.113.1 8080");
    assert_eq!(d.verdict, Verdict::Reject);
    assert!(rule_of(&d).contains("reject with icmpx admin-prohibited"));
    assert_eq!(decide(&rs, "tcp 198.51.100.7 22").verdict, Verdict::Reject);
    assert_eq!(decide(&rs, "tcp 198.51.100.7 443").verdict, Verdict::Accept);
    assert_eq!(decide(&rs, "udp 1.1.1.1 53").verdict, Verdict::Reject);
    assert_eq!(decide(&rs, "tcp 2001:db8::5 443").verdict, Verdict::Accept);
}

#[test]
fn features_notrack_marks_maps_concatenations_jumps_and_nat() {
    let rs = fixture("features");
    // raw prerouting notracks 192.0.2.0/24: in input it is `ct state untracked`.
    assert_eq!(decide(&rs, "tcp 192.0.2.5 22").verdict, Verdict::Accept);
    // ... and marks 192.0.2.66, which input drops.
    let d = decide(&rs, "tcp 192.0.2.66 443");
    assert_eq!(d.verdict, Verdict::Drop);
    assert!(rule_of(&d).contains("meta mark 66 drop"), "{d:?}");
    // Verdict map on saddr.
    let d = decide(&rs, "tcp 100.64.1.1 443");
    assert_eq!(d.verdict, Verdict::Drop);
    assert!(rule_of(&d).contains("ip saddr vmap @vm"), "{d:?}");
    assert_eq!(decide(&rs, "udp 1.1.1.1 9").verdict, Verdict::Accept);
    // Concatenation set.
    assert_eq!(decide(&rs, "tcp 10.1.1.1 22").verdict, Verdict::Accept);
    // vmap jump: smtp accepts 8.8.8.8; returns for @s4, after which fib saddr (rpfilter,
    // undecidable) drops or the policy does: drop either way.
    assert_eq!(decide(&rs, "tcp 8.8.8.8 25").verdict, Verdict::Accept);
    let d = decide(&rs, "tcp 10.0.0.1 25");
    assert_eq!(d.verdict, Verdict::Drop);
    assert!(rule_of(&d).contains("fib saddr . iif oif"), "{d:?}");
    assert!(rule_of(&d).contains("policy drop"), "{d:?}");
    // vmap goto: web drops 9.9.9.9; its end goes back to the base chain's policy.
    assert_eq!(decide(&rs, "tcp 9.9.9.9 8443").verdict, Verdict::Drop);
    assert_eq!(decide(&rs, "tcp 7.7.7.7 8443").verdict, Verdict::Drop);
    assert_eq!(decide(&rs, "tcp 7.7.7.7 23").verdict, Verdict::Drop);
    // An undecidable rule that changes the verdict: unknown, naming it.
    let why = unknown_why(&decide(&rs, "tcp 7.7.7.7 443"));
    assert!(why.contains("fib saddr . iif oif"), "{why}");
    assert!(why.contains("inet t input handle"), "{why}");
    let why = unknown_why(&decide(&rs, "tcp 7.7.7.7 3306"));
    assert!(why.contains("ip daddr 192.0.2.1"), "{why}");
    // The limit rule is for port 9000: undecided, but it does nothing to this packet.
    assert!(!why.contains("limit"), "{why}");
    // An input chain left open and a nat chain that drops: the drop decides.
    let d = decide(&rs, "tcp 203.0.113.50 22");
    assert_eq!(d.verdict, Verdict::Drop);
    assert_eq!(
        d.by.unwrap().chain,
        "inet t nat_in (nat input, priority 100)"
    );
    // ip / ip6 tables see only their family; reject with tcp reset only TCP.
    let d = decide(&rs, "tcp 2001:db8:bad::1 443");
    assert_eq!(d.verdict, Verdict::Drop);
    assert_eq!(d.by.unwrap().chain, "ip6 legacy6 i (priority -5)");
    assert_eq!(decide(&rs, "udp 2001:db8::1 1234").verdict, Verdict::Drop);
    assert_eq!(decide(&rs, "tcp 7.7.7.7 2222").verdict, Verdict::Reject);
    // The prerouting chain runs first, a hook below input.
    let hooks = rs.evaluate(&packet("tcp 7.7.7.7 22"));
    assert_eq!(
        hooks[0].chain,
        "inet t raw (filter prerouting, priority -300)"
    );
    assert_eq!(hooks[0].priority, -300 - HOOK_STEP);

    let b4 = rs.boundaries(false);
    for a in [
        "192.168.1.1",
        "192.168.1.21",
        "100.64.0.0",
        "100.128.0.0",
        "1.1.1.1",
        "1.1.1.2",
        "5.5.5.5",
        "5.5.5.10",
        "203.0.113.50",
        "203.0.113.51",
        "8.8.8.8",
        "192.0.2.0",
        "192.0.3.0",
    ] {
        assert!(b4.contains(&ip(a)), "{a} missing from {b4:?}");
    }
    assert!(rs.boundaries(true).contains(&ip("2001:db8:bae::")));
}

#[test]
fn iptables_nft_tables_are_unknown_until_left_out() {
    let rs = fixture("iptables-nft");
    assert!(rs.tables().contains(&("ip".into(), "filter".into())));
    let why = unknown_why(&decide(&rs, "tcp 203.0.113.5 443"));
    assert!(why.contains("xt"), "{why}");
    let rs = rs.without_tables(&[("ip".into(), "filter".into())]);
    assert!(!rs.tables().contains(&("ip".into(), "filter".into())));
    assert_eq!(rs.tables().len(), 3);
    assert_eq!(decide(&rs, "tcp 203.0.113.5 443").verdict, Verdict::Accept);
    // Leaving out a table that is not there changes nothing.
    let rs = rs.without_tables(&[("ip6".into(), "nope".into())]);
    assert_eq!(rs.tables().len(), 3);
}

#[test]
fn a_syn_that_may_ask_for_ecn() {
    let rs = fixture("edge-ecn");
    assert_eq!(decide(&rs, "tcp 192.0.2.1 22").verdict, Verdict::Accept);
    let why = unknown_why(&decide(&rs, "tcp 192.0.2.1 443"));
    assert!(why.contains("tcp flags != syn"), "{why}");
    assert_eq!(decide(&rs, "udp 192.0.2.1 443").verdict, Verdict::Accept);
}

#[test]
fn chains_at_one_priority_whose_order_matters_are_unknown() {
    let rs = fixture("edge-order");
    let d = decide(&rs, "tcp 192.0.2.1 22");
    let why = unknown_why(&d);
    assert!(why.contains("order"), "{why}");
    assert!(
        why.contains("inet a p") && why.contains("inet b p"),
        "{why}"
    );
    // Where the order does not matter, the answer stands.
    assert_eq!(decide(&rs, "tcp 192.0.2.1 443").verdict, Verdict::Drop);
    assert_eq!(decide(&rs, "tcp 192.0.2.1 80").verdict, Verdict::Accept);
}

#[test]
fn a_nat_chain_without_conntrack_is_unknown_not_a_drop() {
    let rs = fixture("edge-nat");
    let why = unknown_why(&decide(&rs, "tcp 192.0.2.1 22"));
    assert!(why.contains("conntrack"), "{why}");
    // IPv6 packets do not meet an ip table.
    assert!(rs.evaluate(&packet("tcp 2001:db8::1 22")).is_empty());
}

/// Newer nft prints `"flags": ["dormant"]`; 1.0.6 prints the family instead (and sometimes
/// breaks the document): a dormant table hooks nothing, unreadable flags leave it open.
#[test]
fn dormant_tables() {
    let doc = |flags: &str| {
        format!(
            r#"{{"nftables": [{{"table": {{"family": "inet", "name": "d", "handle": 1{flags}}}}},
            {{"chain": {{"family": "inet", "table": "d", "name": "i", "handle": 1, "type": "filter",
              "hook": "input", "prio": 0, "policy": "drop"}}}}]}}"#
        )
    };
    let rs = Ruleset::parse(&doc(r#", "flags": ["dormant"]"#)).unwrap();
    assert!(rs.evaluate(&packet("tcp 192.0.2.1 22")).is_empty());
    let rs = Ruleset::parse(&doc(r#", "flags": "inet""#)).unwrap();
    let why = unknown_why(&decide(&rs, "tcp 192.0.2.1 22"));
    assert!(why.contains("dormant"), "{why}");
    let rs = Ruleset::parse(&doc(r#", "flags": ["owner"]"#)).unwrap();
    assert_eq!(decide(&rs, "tcp 192.0.2.1 22").verdict, Verdict::Drop);
    let rs = Ruleset::parse(&doc("")).unwrap();
    assert_eq!(decide(&rs, "tcp 192.0.2.1 22").verdict, Verdict::Drop);
    // What nft 1.0.6 printed for one dormant table: an error naming the cause, no panic.
    let broken = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": "t0", "handle": 1, "flags": "#;
    let err = Ruleset::parse(broken).unwrap_err();
    assert!(err.contains("not JSON"), "{err}");
}

#[test]
fn malformed_documents_are_errors_naming_the_object() {
    for (doc, want) in [
        ("[]", "no \"nftables\" array"),
        (
            r#"{"nftables": [{"chain": {"family": "inet", "table": "t"}}]}"#,
            "name",
        ),
        (
            r#"{"nftables": [{"chain": {"family": "inet", "table": "t", "name": "c", "hook": "input", "prio": "soon"}}]}"#,
            "priority",
        ),
        (
            r#"{"nftables": [{"chain": {"family": "inet", "table": "t", "name": "c", "hook": "input", "prio": 0, "policy": "maybe"}}]}"#,
            "policy maybe",
        ),
        (
            r#"{"nftables": [{"rule": {"family": "inet", "table": "t"}}]}"#,
            "chain",
        ),
    ] {
        let err = Ruleset::parse(doc).unwrap_err();
        assert!(err.contains(want), "{doc}: {err}");
    }
    // An empty ruleset: nothing on the hook, accepted.
    let rs = Ruleset::parse(r#"{"nftables": []}"#).unwrap();
    assert_eq!(decide(&rs, "tcp 192.0.2.1 22").verdict, Verdict::Accept);
    assert!(rs.boundaries(false).is_empty());
}

#[test]
fn sets_filled_on_the_way() {
    let rs = fixture("edge-dynset");
    let d = decide(&rs, "tcp 198.51.100.1 22");
    assert_eq!(d.verdict, Verdict::Drop);
    assert!(rule_of(&d).contains("ip saddr @seen drop"), "{d:?}");
    assert_eq!(decide(&rs, "tcp 192.0.2.9 80").verdict, Verdict::Drop);
    assert_eq!(decide(&rs, "tcp 198.51.100.1 80").verdict, Verdict::Accept);
    let why = unknown_why(&decide(&rs, "tcp 198.51.100.1 2222"));
    assert!(why.contains("limit rate over 3/minute"), "{why}");
}
