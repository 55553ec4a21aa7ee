//! The iptables evaluator rule by rule: each semantic the module documents, on small
//! hand-written `*-save` texts, and every structural error it must refuse.

use std::net::IpAddr;

use cfa_eval::ipt::Ruleset;
use cfa_eval::{combine, Evaluate, HookResult, Packet, Verdict, L4};

fn packet(src: &str, proto: L4, dport: u16) -> Packet {
    Packet {
        src: src.parse::<IpAddr>().unwrap(),
        dport,
        proto,
    }
}

/// A filter table with INPUT's policy, user chains, and rules (without `-A`'s table).
fn filter(policy: &str, chains: &[&str], rules: &[&str]) -> String {
    let mut s =
        format!("*filter\n:INPUT {policy} [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for c in chains {
        s.push_str(&format!(":{c} - [0:0]\n"));
    }
    for r in rules {
        s.push_str(r);
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

fn v4(save: &str, sets: &str) -> Ruleset {
    Ruleset::parse("iptables-legacy", save, "", sets).unwrap_or_else(|e| panic!("{e}\n{save}"))
}

fn only(rs: &Ruleset, p: Packet) -> HookResult {
    let mut r = rs.evaluate(&p);
    assert_eq!(r.len(), 1, "{r:#?}");
    r.remove(0)
}

fn verdict(rs: &Ruleset, src: &str, proto: L4, port: u16) -> Verdict {
    combine(&rs.evaluate(&packet(src, proto, port))).verdict
}

fn unknown_naming(v: &Verdict, what: &str) -> bool {
    matches!(v, Verdict::Unknown(w) if w.contains(what))
}

#[test]
fn sources_protocols_and_ports() {
    let rs = v4(
        &filter(
            "DROP",
            &[],
            &[
                "-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT",
                "-A INPUT ! -s 198.51.100.0/24 -p udp -m udp --dport 1000:2000 -j ACCEPT",
                "-A INPUT -p tcp -m multiport --dports 80,443,8000:8010 -j ACCEPT",
                "-A INPUT -p 17 -m multiport ! --dports 53 -j REJECT --reject-with icmp-port-unreachable",
                "-A INPUT ! -p tcp -j ACCEPT",
            ],
        ),
        "",
    );
    assert_eq!(verdict(&rs, "192.0.2.9", L4::Tcp, 22), Verdict::Accept);
    assert_eq!(verdict(&rs, "192.0.3.9", L4::Tcp, 22), Verdict::Drop);
    assert_eq!(verdict(&rs, "192.0.3.9", L4::Udp, 1500), Verdict::Accept);
    assert_eq!(verdict(&rs, "198.51.100.1", L4::Udp, 1500), Verdict::Reject);
    assert_eq!(verdict(&rs, "198.51.100.1", L4::Udp, 53), Verdict::Accept);
    assert_eq!(verdict(&rs, "203.0.113.1", L4::Tcp, 8005), Verdict::Accept);
    assert_eq!(verdict(&rs, "203.0.113.1", L4::Tcp, 8011), Verdict::Drop);
    let r = only(&rs, packet("203.0.113.1", L4::Tcp, 8011));
    assert_eq!(r.rule.as_deref(), Some("-P INPUT DROP"));
    assert_eq!(r.chain, "iptables-legacy filter INPUT");
}

#[test]
fn jumps_returns_gotos_and_policies() {
    let rs = v4(
        &filter(
            "DROP",
            &["a", "b", "c"],
            &[
                "-A INPUT -j a",
                "-A INPUT -s 10.0.0.0/8 -g b",
                "-A INPUT -j ACCEPT",
                "-A a -s 10.1.0.0/16 -j DROP",
                "-A a -s 10.2.0.0/16 -j RETURN",
                "-A a -s 10.3.0.0/16 -j c",
                "-A a -s 10.3.0.0/16 -j ACCEPT",
                "-A b -s 10.4.0.0/16 -j ACCEPT",
                "-A c -j RETURN",
                "-A c -j DROP",
            ],
        ),
        "",
    );
    assert_eq!(verdict(&rs, "10.1.0.1", L4::Tcp, 1), Verdict::Drop);
    // RETURN from a: goes on in INPUT, to the goto into b, whose end returns past INPUT's
    // remaining rules to the policy.
    let r = only(&rs, packet("10.2.0.1", L4::Tcp, 1));
    assert_eq!(
        (r.verdict, r.rule.as_deref()),
        (Verdict::Drop, Some("-P INPUT DROP"))
    );
    assert_eq!(verdict(&rs, "10.4.0.1", L4::Tcp, 1), Verdict::Accept);
    // c returns at once; a then accepts.
    let r = only(&rs, packet("10.3.0.1", L4::Tcp, 1));
    assert_eq!(r.rule.as_deref(), Some("-A a -s 10.3.0.0/16 -j ACCEPT"));
    // Outside 10/8: past the goto to the final ACCEPT.
    assert_eq!(verdict(&rs, "192.0.2.1", L4::Tcp, 1), Verdict::Accept);
    // RETURN in a built-in chain is its policy.
    let rs = v4(
        &filter("DROP", &[], &["-A INPUT -j RETURN", "-A INPUT -j ACCEPT"]),
        "",
    );
    assert_eq!(verdict(&rs, "192.0.2.1", L4::Tcp, 1), Verdict::Drop);
}

#[test]
fn conntrack_state_per_table() {
    let save = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        -A PREROUTING -s 10.9.0.0/16 -m conntrack --ctstate NEW -j DROP\n\
        -A PREROUTING -s 10.8.0.0/16 -j CT --notrack\n\
        -A PREROUTING -s 10.8.1.0/24 -m state --state UNTRACKED -j DROP\n\
        COMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        :POSTROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1:8080\nCOMMIT\n"
        .to_string()
        + &filter(
            "DROP",
            &[],
            &[
                "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A INPUT -m conntrack --ctstate INVALID -j DROP",
                "-A INPUT -s 10.8.0.0/16 -m conntrack ! --ctstate NEW -j ACCEPT",
                "-A INPUT -m state --state NEW -p tcp -m tcp --dport 22 -j ACCEPT",
            ],
        );
    let rs = v4(&save, "");
    // Before conntrack (raw) a packet has no state: INVALID, not NEW.
    assert_eq!(verdict(&rs, "10.9.0.1", L4::Tcp, 22), Verdict::Accept);
    assert_eq!(verdict(&rs, "192.0.2.1", L4::Tcp, 22), Verdict::Accept);
    // Untracked: later matches see UNTRACKED (not NEW), and nat is never traversed.
    assert_eq!(verdict(&rs, "10.8.0.1", L4::Tcp, 80), Verdict::Accept);
    assert_eq!(verdict(&rs, "10.8.1.1", L4::Tcp, 80), Verdict::Drop);
    // A DNAT that applies: nat and every later chain are unknown; raw is not.
    let r = rs.evaluate(&packet("192.0.2.1", L4::Tcp, 80));
    assert_eq!(r[0].verdict, Verdict::Accept);
    assert!(unknown_naming(&r[1].verdict, "DNAT"), "{r:#?}");
    assert!(unknown_naming(&r[2].verdict, "DNAT"), "{r:#?}");
    assert!(unknown_naming(&combine(&r).verdict, "DNAT"));
}

#[test]
fn interfaces_addrtype_pkttype_fragments_and_destinations() {
    let rs = v4(
        &filter(
            "ACCEPT",
            &[],
            &[
                "-A INPUT -i lo -j DROP",
                "-A INPUT -i + -p udp -m udp --dport 1 -j DROP",
                "-A INPUT ! -i lo -p udp -m udp --dport 2 -j DROP",
                "-A INPUT -i eth0 -p udp -m udp --dport 3 -j DROP",
                "-A INPUT -m addrtype --dst-type LOCAL -p udp -m udp --dport 4 -j DROP",
                "-A INPUT -m addrtype ! --dst-type LOCAL -j DROP",
                "-A INPUT -m addrtype --dst-type UNICAST -j DROP",
                "-A INPUT -m pkttype --pkt-type broadcast -j DROP",
                "-A INPUT -m pkttype --pkt-type unicast -p udp -m udp --dport 5 -j DROP",
                "-A INPUT -f -j DROP",
                "-A INPUT -d 224.0.0.251/32 -j DROP",
                "-A INPUT -d 192.0.2.1/32 -p udp -m udp --dport 6 -j DROP",
                "-A INPUT -m addrtype --src-type LOCAL -p udp -m udp --dport 7 -j DROP",
            ],
        ),
        "",
    );
    let v = |port| verdict(&rs, "198.51.100.1", L4::Udp, port);
    assert_eq!(v(1), Verdict::Drop);
    assert_eq!(v(2), Verdict::Drop);
    assert!(unknown_naming(&v(3), "-i eth0"));
    assert_eq!(v(4), Verdict::Drop);
    assert_eq!(v(5), Verdict::Drop);
    assert!(unknown_naming(&v(6), "-d 192.0.2.1/32"));
    assert!(unknown_naming(&v(7), "--src-type"));
    assert_eq!(v(8), Verdict::Accept);

    // IPv6 addrtype follows xt_addrtype's match_type6: every listed class must hold.
    let rs6 = Ruleset::parse(
        "iptables-nft",
        "",
        &filter(
            "ACCEPT",
            &[],
            &[
                "-A INPUT -m addrtype --dst-type LOCAL,MULTICAST -p udp -m udp --dport 1 -j DROP",
                "-A INPUT -m addrtype --dst-type UNICAST -p udp -m udp --dport 2 -j DROP",
                "-A INPUT -m addrtype --dst-type ANYCAST -p udp -m udp --dport 3 -j DROP",
                "-A INPUT -m rt --rt-type 0 -j DROP",
                "-A INPUT -m frag --fragid 0 -j DROP",
                "-A INPUT -d ff02::1/128 -j DROP",
            ],
        ),
        "",
    )
    .unwrap();
    let v6 = |port| verdict(&rs6, "2001:db8::1", L4::Udp, port);
    assert_eq!(v6(1), Verdict::Accept);
    assert_eq!(v6(2), Verdict::Drop);
    assert_eq!(v6(3), Verdict::Accept);
    assert_eq!(v6(4), Verdict::Accept);
    let r = only(&rs6, packet("2001:db8::1", L4::Tcp, 9));
    assert_eq!(r.chain, "ip6tables-nft filter INPUT");
}

#[test]
fn tcp_flags() {
    let rs = v4(
        &filter(
            "ACCEPT",
            &[],
            &[
                "-A INPUT -p tcp -m tcp --dport 1 --tcp-flags FIN,SYN,RST,ACK SYN -j DROP",
                "-A INPUT -p tcp -m tcp --dport 2 ! --syn -j DROP",
                "-A INPUT -p tcp -m tcp --dport 3 --tcp-flags ALL SYN -j DROP",
            ],
        ),
        "",
    );
    assert_eq!(verdict(&rs, "192.0.2.1", L4::Tcp, 1), Verdict::Drop);
    assert_eq!(verdict(&rs, "192.0.2.1", L4::Tcp, 2), Verdict::Accept);
    // ALL includes ECE and CWR, which a client may set on its SYN.
    assert!(unknown_naming(
        &verdict(&rs, "192.0.2.1", L4::Tcp, 3),
        "--tcp-flags ALL SYN"
    ));
    assert_eq!(verdict(&rs, "192.0.2.1", L4::Udp, 1), Verdict::Accept);
}

#[test]
fn marks_and_connmarks_flow_between_tables() {
    let save = "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
        :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
        -A PREROUTING -s 10.1.0.0/16 -j MARK --set-xmark 0x5/0xff\n\
        -A PREROUTING -s 10.2.0.0/16 -j CONNMARK --set-xmark 0x3/0xffffffff\n\
        -A INPUT -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff\n\
        COMMIT\n"
        .to_string()
        + &filter(
            "ACCEPT",
            &[],
            &[
                "-A INPUT -m mark --mark 0x5/0xff -j DROP",
                "-A INPUT -m connmark --mark 0x3 -j REJECT",
                "-A INPUT -m mark ! --mark 0x0 -j DROP",
            ],
        );
    let rs = v4(&save, "");
    assert_eq!(verdict(&rs, "10.1.0.1", L4::Tcp, 1), Verdict::Drop);
    // save-mark copied the (zero) packet mark over the connmark 3.
    assert_eq!(verdict(&rs, "10.2.0.1", L4::Tcp, 1), Verdict::Accept);
    assert_eq!(verdict(&rs, "10.3.0.1", L4::Tcp, 1), Verdict::Accept);
}

#[test]
fn undecidable_matches_are_followed_both_ways() {
    let rs = v4(
        &filter(
            "DROP",
            &["logonly", "deny"],
            &[
                "-A INPUT -m limit --limit 3/min -j LOG --log-prefix \"x \"",
                "-A INPUT -m limit --limit 3/min -j logonly",
                "-A INPUT -p tcp -m tcp --sport 1024:65535 --dport 1 -j DROP",
                "-A INPUT -p tcp -m tcp --dport 2 -m recent --update --seconds 60 -j deny",
                "-A INPUT -p tcp -m tcp --dport 3 -m hashlimit --hashlimit-above 5/sec --hashlimit-name h -j DROP",
                "-A INPUT -p tcp -m tcp --dport 3 -j ACCEPT",
                "-A INPUT -p tcp -m tcp --dport 4 -m string --string x --algo bm -j ACCEPT",
                "-A logonly -j LOG",
                "-A logonly -j RETURN",
                "-A deny -j DROP",
            ],
        ),
        "",
    );
    // Both ways end in a DROP: decided.
    assert_eq!(verdict(&rs, "192.0.2.1", L4::Tcp, 1), Verdict::Drop);
    assert_eq!(verdict(&rs, "192.0.2.1", L4::Tcp, 2), Verdict::Drop);
    assert_eq!(verdict(&rs, "192.0.2.1", L4::Tcp, 80), Verdict::Drop);
    assert!(unknown_naming(
        &verdict(&rs, "192.0.2.1", L4::Tcp, 3),
        "-m hashlimit"
    ));
    assert!(unknown_naming(
        &verdict(&rs, "192.0.2.1", L4::Tcp, 4),
        "-m string"
    ));
    let r = only(&rs, packet("192.0.2.1", L4::Tcp, 4));
    assert_eq!(
        r.rule.as_deref(),
        Some("-A INPUT -p tcp -m tcp --dport 4 -m string --string x --algo bm -j ACCEPT")
    );
}

#[test]
fn ipsets() {
    let sets = "create h hash:ip family inet hashsize 1024 maxelem 65536\n\
        add h 192.0.2.7\n\
        create n hash:net family inet hashsize 1024 maxelem 65536\n\
        add n 10.0.0.0/8\n\
        add n 10.1.0.0/16 nomatch\n\
        add n 10.1.1.0/24\n\
        create n6 hash:net family inet6\n\
        add n6 2001:db8::/32\n\
        create m hash:ip,mark family inet\n\
        add m 192.0.2.8,0x1\n\
        create l list:set size 8\n\
        add l h\n\
        add l n6\n";
    let rs = v4(
        &filter(
            "ACCEPT",
            &[],
            &[
                "-A INPUT -p tcp -m tcp --dport 1 -m set --match-set h src -j DROP",
                "-A INPUT -p tcp -m tcp --dport 2 -m set --match-set n src -j DROP",
                "-A INPUT -p tcp -m tcp --dport 3 -m set --match-set n src --return-nomatch -j DROP",
                "-A INPUT -p tcp -m tcp --dport 4 -m set ! --match-set l src -j DROP",
                "-A INPUT -p tcp -m tcp --dport 5 -m set --match-set n6 src -j DROP",
                "-A INPUT -p tcp -m tcp --dport 6 -m set --match-set m src,dst -j DROP",
                "-A INPUT -p tcp -m tcp --dport 7 -m set --match-set gone src -j DROP",
                "-A INPUT -p tcp -m tcp --dport 8 -m set --match-set h dst -j DROP",
            ],
        ),
        sets,
    );
    let v = |src, port| verdict(&rs, src, L4::Tcp, port);
    assert_eq!(v("192.0.2.7", 1), Verdict::Drop);
    assert_eq!(v("192.0.2.6", 1), Verdict::Accept);
    // The most specific element decides: /8 matches, the nomatch /16 does not, the /24 does.
    assert_eq!(v("10.2.0.1", 2), Verdict::Drop);
    assert_eq!(v("10.1.2.1", 2), Verdict::Accept);
    assert_eq!(v("10.1.1.1", 2), Verdict::Drop);
    // --return-nomatch inverts the element's answer.
    assert_eq!(v("10.2.0.1", 3), Verdict::Accept);
    assert_eq!(v("10.1.2.1", 3), Verdict::Drop);
    assert_eq!(v("192.0.2.1", 3), Verdict::Accept);
    // A list:set matches if a member does (the IPv6 member never matches IPv4).
    assert_eq!(v("192.0.2.7", 4), Verdict::Accept);
    assert_eq!(v("192.0.2.1", 4), Verdict::Drop);
    // A set of the other family never matches.
    assert_eq!(v("192.0.2.1", 5), Verdict::Accept);
    assert!(unknown_naming(&v("192.0.2.8", 6), "hash:ip,mark"));
    assert!(unknown_naming(
        &v("192.0.2.8", 7),
        "`gone` is not in `ipset save`"
    ));
    assert!(unknown_naming(&v("192.0.2.7", 8), "destination"));
    let b: Vec<String> = rs
        .boundaries(false)
        .iter()
        .map(ToString::to_string)
        .collect();
    for want in [
        "10.0.0.0",
        "11.0.0.0",
        "10.1.0.0",
        "10.2.0.0",
        "10.1.1.0",
        "10.1.2.0",
        "192.0.2.7",
        "192.0.2.8",
    ] {
        assert!(b.contains(&want.to_string()), "{want} not in {b:?}");
    }
    assert!(rs.boundaries(true).contains(&"2001:db8::".parse().unwrap()));
}

#[test]
fn counters_quotes_and_tool_comments() {
    let save = "# Generated by iptables-nft-save v1.8.9 (nf_tables)\n\
        # Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n\
        *filter\n:INPUT DROP [12:3456]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        [5:300] -A INPUT -m comment --comment \"-j ACCEPT \\\"here\\\"\" -j DROP\n\
        -A INPUT -c 1 2 -p tcp -m tcp --dport 22 -j ACCEPT\n\
        COMMIT\n# Completed\n";
    let rs = v4(save, "");
    let r = only(&rs, packet("192.0.2.1", L4::Tcp, 22));
    assert_eq!(r.verdict, Verdict::Drop);
    assert_eq!(
        r.rule.as_deref(),
        Some("-A INPUT -m comment --comment \"-j ACCEPT \\\"here\\\"\" -j DROP")
    );
}

#[test]
fn boundaries_skip_overflow_and_cover_ranges() {
    let rs = v4(
        &filter(
            "ACCEPT",
            &[],
            &[
                "-A INPUT -s 255.255.255.0/24 -j DROP",
                "-A INPUT -m iprange --src-range 10.0.0.5-10.0.0.9 -j DROP",
                "-A INPUT -s 0.0.0.0/1 -j ACCEPT",
            ],
        ),
        "",
    );
    let b: Vec<String> = rs
        .boundaries(false)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        b,
        [
            "0.0.0.0",
            "10.0.0.5",
            "10.0.0.10",
            "128.0.0.0",
            "255.255.255.0"
        ]
    );
}

#[test]
fn structural_damage_is_an_error_naming_the_line() {
    let cases: &[(&str, &str)] = &[
        ("-A INPUT -j DROP\n", "line 1"),
        (
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\n",
            "no COMMIT",
        ),
        (
            "*filter\n:INPUT ACCEPT [0:0]\n-A OTHER -j DROP\nCOMMIT\n",
            "`OTHER`",
        ),
        (
            "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n*filter\nCOMMIT\n",
            "appears twice",
        ),
        (
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment \"x\nCOMMIT\n",
            "line 3",
        ),
        (
            "*filter\n:INPUT ACCEPT [0:0]\n-I INPUT -j DROP\nCOMMIT\n",
            "not an iptables-save line",
        ),
        (
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s\nCOMMIT\n",
            "without a value",
        ),
        ("*filter\n*nat\n", "before table `filter`"),
        ("*filter\n:INPUT\nCOMMIT\n", "no policy"),
    ];
    for (text, want) in cases {
        let e = Ruleset::parse("iptables-legacy", text, "", "").unwrap_err();
        assert!(e.contains(want), "{text:?}: {e}");
        assert!(e.starts_with("iptables-legacy iptables-save: "), "{e}");
        let e6 = Ruleset::parse("iptables-legacy", "", text, "").unwrap_err();
        assert!(e6.contains("ip6tables-save"), "{e6}");
    }
    for (sets, want) in [
        ("add x 1.2.3.4\n", "before its `create`"),
        ("create x hash:ip\ncreate x hash:ip\n", "created twice"),
        ("flush\n", "not an `ipset save` line"),
        ("create x hash:ip netmask 40\n", "netmask"),
    ] {
        let e = Ruleset::parse("iptables-legacy", "", "", sets).unwrap_err();
        assert!(
            e.contains(want) && e.starts_with("ipset save: line"),
            "{sets:?}: {e}"
        );
    }
}

#[test]
fn a_chain_loop_is_unknown_not_a_hang() {
    // The kernel refuses loops; a damaged save must still not hang the evaluator.
    let rs = v4(
        &filter(
            "ACCEPT",
            &["a", "b"],
            &["-A INPUT -j a", "-A a -j b", "-A b -j a"],
        ),
        "",
    );
    let r = only(&rs, packet("192.0.2.1", L4::Tcp, 1));
    assert!(unknown_naming(&r.verdict, "a loop?"), "{r:?}");
    // A goto loop through undecidable matches: followed both ways at every step, it once
    // recursed until the stack overflowed.
    let rs = v4(
        &filter(
            "ACCEPT",
            &["a", "b"],
            &[
                "-A INPUT -j a",
                "-A a -m limit --limit 1/sec -g b",
                "-A a -j DROP",
                "-A b -m limit --limit 2/sec -g a",
                "-A b -j ACCEPT",
            ],
        ),
        "",
    );
    let r = only(&rs, packet("192.0.2.1", L4::Tcp, 1));
    assert!(matches!(r.verdict, Verdict::Unknown(_)), "{r:?}");
    let rs = v4(
        &filter("ACCEPT", &["a"], &["-A INPUT -j a", "-A a -g a"]),
        "",
    );
    let r = only(&rs, packet("192.0.2.1", L4::Tcp, 1));
    assert!(unknown_naming(&r.verdict, "rule visits"), "{r:?}");
}
