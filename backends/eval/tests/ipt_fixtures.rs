//! The iptables evaluator on output captured from the real tools (tests/fixtures/ipt/, made by
//! its capture.sh in throwaway namespaces): ufw's stock chains on iptables-nft and
//! iptables-legacy, and a ruleset using every table on the input path, ipsets of each type,
//! marks, notrack, jumps, gotos and returns.

use std::net::IpAddr;

use cfa_eval::ipt::{real_priority, Ruleset, PREROUTING_OFFSET};
use cfa_eval::{combine, Decision, Evaluate, HookResult, Packet, Verdict, L4};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/ipt/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn packet(src: &str, proto: L4, dport: u16) -> Packet {
    Packet {
        src: src.parse::<IpAddr>().unwrap(),
        dport,
        proto,
    }
}

fn decide(rs: &Ruleset, src: &str, proto: L4, dport: u16) -> (Decision, Vec<HookResult>) {
    let results = rs.evaluate(&packet(src, proto, dport));
    (combine(&results), results)
}

fn result<'a>(results: &'a [HookResult], chain: &str) -> &'a HookResult {
    results
        .iter()
        .find(|r| r.chain == chain)
        .unwrap_or_else(|| panic!("no result for {chain} in {results:#?}"))
}

fn ufw(variant: &str, counters: bool) -> Ruleset {
    let v4 = if counters {
        fixture(&format!("ufw-{variant}-v4-counters.txt"))
    } else {
        fixture(&format!("ufw-{variant}-v4.txt"))
    };
    let v6 = fixture(&format!("ufw-{variant}-v6.txt"));
    Ruleset::parse(&format!("iptables-{variant}"), &v4, &v6, "").unwrap()
}

#[track_caller]
fn assert_decided(rs: &Ruleset, src: &str, proto: L4, dport: u16, verdict: Verdict, rule: &str) {
    let (d, results) = decide(rs, src, proto, dport);
    assert_eq!(d.verdict, verdict, "{src} {proto:?} {dport}: {results:#?}");
    let decider = match d.by {
        Some(r) => r,
        None => results
            .iter()
            .find(|r| r.chain.ends_with("filter INPUT"))
            .cloned()
            .expect("a filter INPUT result"),
    };
    assert_eq!(
        decider.rule.as_deref(),
        Some(rule),
        "{src} {proto:?} {dport}: {results:#?}"
    );
}

#[test]
fn ufw_stock_chains_on_both_variants() {
    for variant in ["nft", "legacy"] {
        for counters in [false, true] {
            let rs = ufw(variant, counters);
            let ssh = "-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT";
            assert_decided(&rs, "192.0.2.1", L4::Tcp, 22, Verdict::Accept, ssh);
            // ufw's order: the allow for 22 comes before the later deny of one address.
            assert_decided(&rs, "203.0.113.7", L4::Tcp, 22, Verdict::Accept, ssh);
            assert_decided(
                &rs,
                "203.0.113.7",
                L4::Tcp,
                80,
                Verdict::Drop,
                "-A ufw-user-input -s 203.0.113.7/32 -j DROP",
            );
            // Through the rate-limited LOG rules to the policy: never unknown.
            assert_decided(
                &rs,
                "192.0.2.1",
                L4::Tcp,
                80,
                Verdict::Drop,
                "-P INPUT DROP",
            );
            assert_decided(
                &rs,
                "192.0.2.1",
                L4::Tcp,
                443,
                Verdict::Drop,
                "-P INPUT DROP",
            );
            for proto in [L4::Tcp, L4::Udp] {
                let (d, r) = decide(&rs, "198.51.100.9", proto, 443);
                assert_eq!(d.verdict, Verdict::Accept, "{r:#?}");
                assert!(
                    result(&r, &format!("iptables-{variant} filter INPUT"))
                        .rule
                        .as_deref()
                        .unwrap()
                        .starts_with("-A ufw-user-input -s 198.51.100.0/24 -p"),
                    "{r:#?}"
                );
            }
            // The multicast-only ACCEPT for mDNS cannot apply to a local address.
            assert_decided(
                &rs,
                "192.0.2.1",
                L4::Udp,
                5353,
                Verdict::Drop,
                "-P INPUT DROP",
            );
            // Netbios goes to ufw-skip-to-policy-input.
            assert_decided(
                &rs,
                "192.0.2.1",
                L4::Udp,
                137,
                Verdict::Drop,
                "-A ufw-skip-to-policy-input -j DROP",
            );
            // `ufw limit`: a recent match decides between the REJECT and the ACCEPT.
            let (d, _) = decide(&rs, "192.0.2.1", L4::Tcp, 2222);
            match d.verdict {
                Verdict::Unknown(why) => assert!(why.contains("-m recent --update"), "{why}"),
                v => panic!("limit rule: {v}"),
            }
            // The DHCP client rule depends on the source port: unknown for udp 68 only.
            let (d, _) = decide(&rs, "192.0.2.1", L4::Udp, 68);
            match d.verdict {
                Verdict::Unknown(why) => assert!(why.contains("--sport 67"), "{why}"),
                v => panic!("dhcp rule: {v}"),
            }

            // IPv6: ufw6 chains, `-m rt` fails on a packet without a routing header.
            let ssh6 = "-A ufw6-user-input -p tcp -m tcp --dport 22 -j ACCEPT";
            assert_decided(&rs, "2001:db8:2::1", L4::Tcp, 22, Verdict::Accept, ssh6);
            assert_decided(
                &rs,
                "2001:db8:1::5",
                L4::Tcp,
                443,
                Verdict::Accept,
                "-A ufw6-user-input -s 2001:db8:1::/64 -p tcp -m tcp --dport 443 -j ACCEPT",
            );
            assert_decided(
                &rs,
                "2001:db8:2::1",
                L4::Tcp,
                443,
                Verdict::Drop,
                "-P INPUT DROP",
            );
            assert_decided(
                &rs,
                "2001:db8:1::5",
                L4::Udp,
                443,
                Verdict::Drop,
                "-P INPUT DROP",
            );
            let (_, r) = decide(&rs, "2001:db8:2::1", L4::Tcp, 22);
            assert_eq!(r.len(), 1, "ufw uses the filter table only: {r:#?}");
            assert_eq!(r[0].chain, format!("ip6tables-{variant} filter INPUT"));
            assert_eq!(r[0].priority, 0);
            // DHCPv6 from a link-local server: depends on the local address and source port.
            let (d, _) = decide(&rs, "fe80::1", L4::Udp, 546);
            assert!(matches!(d.verdict, Verdict::Unknown(_)), "{d:?}");
            assert_decided(
                &rs,
                "2001:db8::1",
                L4::Udp,
                546,
                Verdict::Drop,
                "-A ufw6-skip-to-policy-input -j DROP",
            );
        }
    }
}

#[test]
fn counters_prefixes_parse_to_the_same_answers() {
    for variant in ["nft", "legacy"] {
        let plain = ufw(variant, false);
        let counted = ufw(variant, true);
        let tables = Ruleset::parse(
            "x",
            &fixture(&format!("tables-{variant}-v4.txt")),
            "",
            &fixture("tables-ipset.txt"),
        )
        .unwrap();
        let tables_c = Ruleset::parse(
            "x",
            &fixture(&format!("tables-{variant}-v4-counters.txt")),
            "",
            &fixture("tables-ipset.txt"),
        )
        .unwrap();
        for src in [
            "192.0.2.1",
            "198.51.100.9",
            "203.0.113.7",
            "10.99.0.1",
            "172.16.5.1",
        ] {
            for port in [22, 80, 443, 2222, 8000, 8443] {
                for proto in [L4::Tcp, L4::Udp] {
                    let p = packet(src, proto, port);
                    assert_eq!(plain.evaluate(&p), counted.evaluate(&p), "{p}");
                    assert_eq!(tables.evaluate(&p), tables_c.evaluate(&p), "{p}");
                }
            }
        }
        assert_eq!(plain.boundaries(false), counted.boundaries(false));
    }
}

fn tables(variant: &str) -> Ruleset {
    Ruleset::parse(
        &format!("iptables-{variant}"),
        &fixture(&format!("tables-{variant}-v4.txt")),
        &fixture(&format!("tables-{variant}-v6.txt")),
        &fixture("tables-ipset.txt"),
    )
    .unwrap()
}

#[test]
fn every_table_on_the_input_path_in_kernel_order() {
    for variant in ["nft", "legacy"] {
        let rs = tables(variant);
        let r = rs.evaluate(&packet("203.0.113.10", L4::Tcp, 22));
        let names: Vec<(String, i64)> = r.iter().map(|r| (r.chain.clone(), r.priority)).collect();
        let l = format!("iptables-{variant}");
        assert_eq!(
            names,
            vec![
                (format!("{l} raw PREROUTING"), PREROUTING_OFFSET - 300),
                (format!("{l} mangle PREROUTING"), PREROUTING_OFFSET - 150),
                (format!("{l} nat PREROUTING"), PREROUTING_OFFSET - 100),
                (format!("{l} mangle INPUT"), -150),
                (format!("{l} filter INPUT"), 0),
                (format!("{l} security INPUT"), 50),
                (format!("{l} nat INPUT"), 100),
            ]
        );
        let mut sorted = r.clone();
        sorted.sort_by_key(|r| r.priority);
        assert_eq!(sorted, r, "priorities sort in kernel order");
        assert_eq!(real_priority(r[0].priority), ("PREROUTING", -300));
        assert_eq!(real_priority(r[3].priority), ("INPUT", -150));
        assert!(r.iter().all(|r| r.verdict == Verdict::Accept), "{r:#?}");
        assert_eq!(
            r[4].rule.as_deref(),
            Some("-A f2b-sshd -j ACCEPT"),
            "the accept inside the user chain decides"
        );
        assert_eq!(r[0].rule.as_deref(), Some("-P PREROUTING ACCEPT"));
    }
}

#[test]
fn tables_fixture_verdicts() {
    use Verdict::*;
    for variant in ["nft", "legacy"] {
        let rs = tables(variant);
        let l = format!("iptables-{variant}");
        let chain = |c: &str| format!("{l} {c}");
        let cases: &[(&str, L4, u16, Verdict, &str, &str)] = &[
            // raw: notrack makes the filter table see UNTRACKED, and nat is skipped.
            (
                "10.99.1.1",
                L4::Tcp,
                9999,
                Accept,
                "filter INPUT",
                "-A INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT",
            ),
            // raw runs before conntrack: every packet there is INVALID.
            (
                "10.98.1.1",
                L4::Tcp,
                22,
                Drop,
                "raw PREROUTING",
                "-A PREROUTING -s 10.98.0.0/16 -m conntrack --ctstate INVALID -j DROP",
            ),
            // A mark set in mangle PREROUTING is seen in mangle INPUT.
            (
                "10.50.1.1",
                L4::Tcp,
                80,
                Drop,
                "mangle INPUT",
                "-A INPUT -p tcp -m mark --mark 0x7/0xff -m tcp --dport 80 -j DROP",
            ),
            ("10.50.1.1", L4::Tcp, 81, Drop, "filter INPUT", "-P INPUT DROP"),
            (
                "10.51.1.1",
                L4::Udp,
                53,
                Drop,
                "mangle INPUT",
                "-A INPUT -m connmark --mark 0x2 -j DROP",
            ),
            (
                "203.0.113.9",
                L4::Tcp,
                22,
                Reject,
                "filter INPUT",
                "-A f2b-sshd -m set --match-set f2b-sshd src -j REJECT --reject-with icmp-port-unreachable",
            ),
            // list:set of a hash:ip and a hash:net with a nomatch /25 around a /32.
            (
                "192.0.2.5",
                L4::Tcp,
                443,
                Drop,
                "filter INPUT",
                "-A web -m set --match-set both src -j DROP",
            ),
            ("192.0.2.130", L4::Tcp, 443, Drop, "filter INPUT", "-P INPUT DROP"),
            (
                "192.0.2.200",
                L4::Tcp,
                443,
                Drop,
                "filter INPUT",
                "-A web -m set --match-set both src -j DROP",
            ),
            (
                "198.51.100.77",
                L4::Tcp,
                80,
                Drop,
                "filter INPUT",
                "-A web -m set --match-set both src -j DROP",
            ),
            // hash:ip with netmask 24.
            (
                "100.64.5.77",
                L4::Tcp,
                443,
                Reject,
                "filter INPUT",
                "-A web -p tcp -m set --match-set masked src -j REJECT --reject-with tcp-reset",
            ),
            ("100.64.6.1", L4::Tcp, 443, Drop, "filter INPUT", "-P INPUT DROP"),
            ("100.100.0.15", L4::Tcp, 443, Drop, "filter INPUT", "-P INPUT DROP"),
            (
                "173.245.48.1",
                L4::Tcp,
                8050,
                Accept,
                "filter INPUT",
                "-A web -s 173.245.48.0/20 -m comment --comment \"cloudflare \\\"edge\\\" range\" -j ACCEPT",
            ),
            // hash:ip,port and hash:net,port with src,dst.
            (
                "198.51.100.5",
                L4::Tcp,
                8443,
                Accept,
                "filter INPUT",
                "-A INPUT -m set --match-set webports src,dst -j ACCEPT",
            ),
            ("198.51.100.5", L4::Udp, 8443, Drop, "filter INPUT", "-P INPUT DROP"),
            ("198.51.100.6", L4::Tcp, 8443, Drop, "filter INPUT", "-P INPUT DROP"),
            (
                "10.20.3.4",
                L4::Udp,
                53,
                Accept,
                "filter INPUT",
                "-A INPUT -p udp -m set --match-set netports src,dst -j ACCEPT",
            ),
            ("10.20.3.4", L4::Tcp, 53, Drop, "filter INPUT", "-P INPUT DROP"),
            // A goto returns to the caller of the chain it left: here the policy, past the LOG.
            (
                "172.16.5.9",
                L4::Tcp,
                5,
                Accept,
                "filter INPUT",
                "-A gone -s 172.16.5.0/24 -j ACCEPT",
            ),
            ("172.16.6.1", L4::Tcp, 5, Drop, "filter INPUT", "-P INPUT DROP"),
            // security INPUT drops after filter accepted.
            (
                "198.18.0.1",
                L4::Tcp,
                22,
                Drop,
                "security INPUT",
                "-A INPUT -s 198.18.0.0/15 -j DROP",
            ),
            // IPv6.
            (
                "2001:db8::1",
                L4::Tcp,
                443,
                Accept,
                "filter INPUT",
                "-A INPUT -p tcp -m tcp --dport 443 -m addrtype --dst-type LOCAL -j ACCEPT",
            ),
            (
                "2001:db8:bad::1",
                L4::Tcp,
                443,
                Drop,
                "filter INPUT",
                "-A INPUT -m set --match-set f2b6 src -j DROP",
            ),
            (
                "2001:db8:bad:1::1",
                L4::Tcp,
                443,
                Accept,
                "filter INPUT",
                "-A INPUT -p tcp -m tcp --dport 443 -m addrtype --dst-type LOCAL -j ACCEPT",
            ),
            (
                "2001:db8::1",
                L4::Tcp,
                22,
                Reject,
                "filter INPUT",
                "-A INPUT -p tcp -m tcp --dport 22 -j REJECT --reject-with icmp6-adm-prohibited",
            ),
            (
                "2001:db8:dead::1",
                L4::Tcp,
                443,
                Drop,
                "mangle INPUT",
                "-A INPUT -s 2001:db8:dead::/48 -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j DROP",
            ),
            ("2001:db8:dead::1", L4::Udp, 5353, Drop, "filter INPUT", "-P INPUT DROP"),
            (
                "2001:db8:5::1",
                L4::Udp,
                53,
                Accept,
                "filter INPUT",
                "-A INPUT -s 2001:db8:5::/48 -p udp -m udp --dport 53 -j ACCEPT",
            ),
        ];
        for (src, proto, port, verdict, by, rule) in cases {
            let (d, r) = decide(&rs, src, *proto, *port);
            assert_eq!(&d.verdict, verdict, "{src} {proto:?} {port}: {r:#?}");
            let fam = if src.contains(':') {
                "ip6tables"
            } else {
                "iptables"
            };
            let by_chain = format!("{fam}-{variant} {by}");
            let res = result(&r, &by_chain);
            assert_eq!(&res.verdict, verdict, "{src} {port}: {r:#?}");
            assert_eq!(res.rule.as_deref(), Some(*rule), "{src} {port}: {r:#?}");
            if verdict.is_refusal() {
                assert_eq!(
                    d.by.as_ref().map(|b| b.chain.as_str()),
                    Some(by_chain.as_str())
                );
            }
        }
        // nat is not traversed by an untracked packet.
        let r = rs.evaluate(&packet("10.99.1.1", L4::Tcp, 8080));
        assert_eq!(result(&r, &chain("nat PREROUTING")).verdict, Accept);
        assert_eq!(combine(&r).verdict, Accept, "{r:#?}");
    }
}

#[test]
fn what_the_tables_fixture_cannot_decide() {
    for variant in ["nft", "legacy"] {
        let rs = tables(variant);
        let l = format!("iptables-{variant}");
        // REDIRECT changes the destination port: nat is unknown and so is every later chain.
        let r = rs.evaluate(&packet("203.0.113.10", L4::Tcp, 8080));
        let nat = result(&r, &format!("{l} nat PREROUTING"));
        assert!(
            matches!(&nat.verdict, Verdict::Unknown(w) if w.contains("REDIRECT")),
            "{nat:?}"
        );
        assert_eq!(
            nat.rule.as_deref(),
            Some("-A PREROUTING -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 80")
        );
        let filter = result(&r, &format!("{l} filter INPUT"));
        assert!(matches!(&filter.verdict, Verdict::Unknown(w) if w.contains("REDIRECT")));
        // Earlier chains are unaffected.
        assert_eq!(
            result(&r, &format!("{l} raw PREROUTING")).verdict,
            Verdict::Accept
        );
        // The source port decides the 8000:8100 rule.
        let (d, _) = decide(&rs, "203.0.113.10", L4::Tcp, 8000);
        assert!(
            matches!(&d.verdict, Verdict::Unknown(w) if w.contains("--sport 1024:65535")),
            "{d:?}"
        );
        // A refusal in an earlier chain stays final even when a later one is unknown.
        let (d, _) = decide(&rs, "10.98.0.1", L4::Tcp, 8080);
        assert_eq!(d.verdict, Verdict::Drop);
    }
}

#[test]
fn boundaries_of_the_tables_fixture() {
    let rs = tables("legacy");
    let b: Vec<String> = rs
        .boundaries(false)
        .iter()
        .map(ToString::to_string)
        .collect();
    for want in [
        "10.99.0.0",
        "10.100.0.0",
        "10.98.0.0",
        "192.0.2.0",
        "192.0.2.128",
        "192.0.2.200",
        "192.0.2.201",
        "192.0.3.0",
        "100.64.5.0",
        "100.64.6.0",
        "100.100.0.10",
        "100.100.0.21",
        "198.51.100.5",
        "198.51.100.6",
        "198.51.100.77",
        "198.51.100.78",
        "10.20.0.0",
        "10.21.0.0",
        "172.16.0.0",
        "172.32.0.0",
        "198.18.0.0",
        "198.20.0.0",
    ] {
        assert!(b.contains(&want.to_string()), "{want} missing from {b:?}");
    }
    assert!(b.iter().all(|a| !a.contains(':')));
    let b6: Vec<String> = rs
        .boundaries(true)
        .iter()
        .map(ToString::to_string)
        .collect();
    for want in [
        "2001:db8:bad::",
        "2001:db8:bad:1::",
        "2001:db8:bad:2::",
        "2001:db8:bae::",
        "2001:db8:dead::",
        "2001:db8:5::",
    ] {
        assert!(b6.contains(&want.to_string()), "{want} missing from {b6:?}");
    }
    // Sorted and without duplicates.
    let mut sorted = rs.boundaries(false);
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, rs.boundaries(false));
}

#[test]
fn an_incompatible_iptables_nft_table_is_unknown_not_absent() {
    let rs = Ruleset::parse("iptables-nft", &fixture("incompatible-nft-v4.txt"), "", "").unwrap();
    let r = rs.evaluate(&packet("192.0.2.1", L4::Tcp, 22));
    let filter = result(&r, "iptables-nft filter INPUT");
    assert!(
        matches!(&filter.verdict, Verdict::Unknown(w) if w.contains("incompatible")),
        "{filter:?}"
    );
    assert!(matches!(combine(&r).verdict, Verdict::Unknown(_)));
    // The other family is not affected.
    assert!(rs.evaluate(&packet("2001:db8::1", L4::Tcp, 22)).is_empty());
}

#[test]
fn an_empty_ruleset_has_no_chains() {
    let rs = Ruleset::parse("iptables-legacy", "", "", "").unwrap();
    assert!(rs.evaluate(&packet("192.0.2.1", L4::Tcp, 22)).is_empty());
    assert!(rs.boundaries(false).is_empty());
    assert_eq!(
        combine(&rs.evaluate(&packet("192.0.2.1", L4::Tcp, 22))).verdict,
        Verdict::Accept
    );
}
