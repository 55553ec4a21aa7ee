//! Property tests of the iptables evaluator: no input makes it panic (arbitrary bytes,
//! arbitrary Unicode, soups of real iptables and ipset tokens), results come in kernel order,
//! comments of any text stay comments, and `boundaries` really splits the address space into
//! pieces on which every address gets the same answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cfa_eval::ipt::Ruleset;
use cfa_eval::{Evaluate, Packet, L4};
use proptest::prelude::*;

fn packets() -> Vec<Packet> {
    let mut out = Vec::new();
    for src in [
        "10.0.0.1",
        "192.0.2.7",
        "0.0.0.0",
        "255.255.255.255",
        "2001:db8::1",
        "::",
    ] {
        for (proto, dport) in [(L4::Tcp, 22), (L4::Udp, 53), (L4::Tcp, 0), (L4::Udp, 65535)] {
            out.push(Packet {
                src: src.parse().unwrap(),
                dport,
                proto,
            });
        }
    }
    out
}

/// Whatever parses must evaluate without panicking, in kernel order, one result per hook.
fn exercise(rs: &Ruleset) {
    for p in packets() {
        let r = rs.evaluate(&p);
        assert!(r.len() <= 7, "{r:#?}");
        assert!(
            r.windows(2).all(|w| w[0].priority <= w[1].priority),
            "{r:#?}"
        );
    }
    for v6 in [false, true] {
        let b = rs.boundaries(v6);
        assert!(b.windows(2).all(|w| w[0] < w[1]));
        assert!(b.iter().all(|a| a.is_ipv6() == v6));
    }
}

fn try_all(a: &str, b: &str, c: &str) {
    for (v4, v6, sets) in [(a, "", ""), ("", a, ""), ("", "", a), (a, b, c)] {
        if let Ok(rs) = Ruleset::parse("iptables-legacy", v4, v6, sets) {
            exercise(&rs);
        }
    }
}

const TOKENS: &[&str] = &[
    "-A INPUT",
    "-A PREROUTING",
    "-A u",
    "-s",
    "! -s",
    "10.0.0.0/8",
    "10.0.0.0/255.0.255.0",
    "2001:db8::/32",
    "::/0",
    "-d",
    "224.0.0.0/4",
    "!",
    "-p",
    "tcp",
    "udp",
    "all",
    "6",
    "icmp",
    "-m",
    "tcp",
    "udp",
    "--dport",
    "--sport",
    "22",
    "1:2",
    ":",
    "65536",
    "multiport",
    "--dports",
    "--ports",
    "80,443,1000:2000",
    "conntrack",
    "--ctstate",
    "state",
    "--state",
    "NEW",
    "INVALID,UNTRACKED",
    "set",
    "--match-set",
    "x",
    "l",
    "src",
    "src,dst",
    "dst",
    "--return-nomatch",
    "mark",
    "connmark",
    "--mark",
    "0x1/0xff",
    "0x",
    "iprange",
    "--src-range",
    "10.0.0.1-10.0.0.9",
    "addrtype",
    "--dst-type",
    "LOCAL",
    "MULTICAST",
    "pkttype",
    "--pkt-type",
    "unicast",
    "rt",
    "limit",
    "--limit",
    "3/min",
    "comment",
    "--comment",
    "\"a b\"",
    "\"",
    "\\",
    "-j",
    "-g",
    "ACCEPT",
    "DROP",
    "REJECT",
    "RETURN",
    "u",
    "LOG",
    "MARK",
    "--set-xmark",
    "CONNMARK",
    "--save-mark",
    "--restore-mark",
    "--nfmask",
    "CT",
    "--notrack",
    "DNAT",
    "SNAT",
    "[1:2]",
    "-c",
    "1",
    "-i",
    "lo",
    "+",
    "eth0",
    "-f",
    "--tcp-flags",
    "SYN,ACK",
    "SYN",
    "--syn",
    "é",
    "\u{0}",
];

const HEADS: &[&str] = &[
    "*filter",
    "*raw",
    "*nat",
    "*mangle",
    "*security",
    ":INPUT DROP [0:0]",
    ":PREROUTING ACCEPT [0:0]",
    ":u - [0:0]",
    "COMMIT",
    "# Table `filter' is incompatible, use 'nft' tool.",
    "# Warning: x",
];

const SET_LINES: &[&str] = &[
    "create x hash:net family inet",
    "create x hash:ip family inet6 netmask 64",
    "create x hash:ip,port family inet",
    "create x hash:net,port family inet",
    "create x bitmap:ip range 10.0.0.0/8",
    "create x hash:ip family inet bitmask 255.255.0.0",
    "create l list:set",
    "add x 10.0.0.0/8 nomatch",
    "add x 10.1.0.0/16",
    "add x 10.0.0.1",
    "add x 2001:db8::1",
    "add x 10.0.0.1,tcp:22",
    "add x 10.0.0.0/24,udp:53",
    "add x 10.0.0.1,icmp:ping",
    "add x garbage",
    "add l x",
    "add l l",
];

fn soup_line() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(HEADS).prop_map(String::from),
        prop::collection::vec(prop::sample::select(TOKENS), 0..12).prop_map(|t| t.join(" ")),
    ]
}

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(soup_line(), 0..30).prop_map(|l| {
        // Mostly well framed, so that rule parsing is reached.
        format!(
            "*filter\n:INPUT DROP [0:0]\n:u - [0:0]\n{}\nCOMMIT\n",
            l.join("\n")
        )
    })
}

/// Whole options, in any order and combination: parse far more often than loose tokens, so
/// that evaluation of odd combinations (and of every table's chains) is exercised too.
const CHUNKS: &[&str] = &[
    "-s 10.0.0.0/8",
    "! -s 10.1.0.0/16",
    "-s 2001:db8::/32",
    "-s 10.0.0.0/255.0.255.0",
    "-d 224.0.0.0/4",
    "! -d 10.0.0.1/32",
    "-p tcp",
    "! -p udp",
    "-p all",
    "-p 200",
    "-m tcp --dport 22",
    "-m tcp ! --dport 1:1024",
    "-m udp --sport 53",
    "-m tcp --syn",
    "-m tcp --tcp-flags ALL NONE",
    "-m multiport --dports 80,443,1000:2000",
    "-m multiport ! --ports 22",
    "-m set --match-set x src",
    "-m set ! --match-set l src,dst",
    "-m set --match-set x src --return-nomatch",
    "-m set --match-set nope src",
    "-m mark --mark 0x1/0xff",
    "-m connmark ! --mark 0x2",
    "-m conntrack --ctstate NEW",
    "-m conntrack ! --ctstate INVALID,UNTRACKED",
    "-m state --state ESTABLISHED",
    "-m conntrack --ctstatus SEEN_REPLY",
    "-m addrtype --dst-type LOCAL",
    "-m addrtype ! --dst-type UNICAST,MULTICAST",
    "-m addrtype --src-type LOCAL",
    "-m pkttype --pkt-type multicast",
    "-m iprange --src-range 10.0.0.1-10.0.0.9",
    "-m iprange ! --src-range 10.0.0.9-10.0.0.1",
    "-m limit --limit 3/min",
    "-m recent --set",
    "-m rt --rt-type 0",
    "-m comment --comment \"a \\\" b\"",
    "-i lo",
    "! -i lo",
    "-i eth+",
    "-i +",
    "-o eth0",
    "-f",
    "! -f",
    "-c 1 2",
    "-j ACCEPT",
    "-j DROP",
    "-j REJECT --reject-with tcp-reset",
    "-j RETURN",
    "-j u",
    "-g u",
    "-j v",
    "-g v",
    "-j LOG --log-prefix \"x \"",
    "-j MARK --set-xmark 0x1/0xff",
    "-j MARK --or-mark 0x4",
    "-j CONNMARK --save-mark --nfmask 0xff --ctmask 0xf",
    "-j CONNMARK --restore-mark",
    "-j CONNMARK --set-mark 0x3",
    "-j CT --notrack",
    "-j NOTRACK",
    "-j CT --zone 1",
    "-j DNAT --to-destination 10.0.0.1",
    "-j REDIRECT",
    "-j SNAT --to-source 10.0.0.2",
    "-j NFQUEUE",
    "-j TPROXY --on-port 1",
];

fn chunk_rule() -> impl Strategy<Value = String> {
    (
        prop::sample::select(&["INPUT", "PREROUTING", "u", "v"][..]),
        prop::collection::vec(prop::sample::select(CHUNKS), 0..6),
    )
        .prop_map(|(chain, c)| format!("-A {chain} {}", c.join(" ")))
}

fn chunk_table(t: &'static str) -> impl Strategy<Value = String> {
    (
        prop::sample::select(&["ACCEPT", "DROP"][..]),
        prop::collection::vec(chunk_rule(), 0..12),
    )
        .prop_map(move |(policy, rules)| {
            // INPUT and PREROUTING in every table (a user chain where not built in).
            format!(
                "*{t}\n:INPUT {policy} [0:0]\n:PREROUTING {policy} [0:0]\n:u - [0:0]\n\
                 :v - [0:0]\n{}\nCOMMIT\n",
                rules.join("\n")
            )
        })
}

fn chunk_save() -> impl Strategy<Value = String> {
    prop::sample::subsequence(&["raw", "mangle", "nat", "filter", "security"][..], 0..=5)
        .prop_flat_map(|names| names.into_iter().map(chunk_table).collect::<Vec<_>>())
        .prop_map(|tables| tables.concat())
}

fn set_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(SET_LINES), 0..12).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(a in prop::collection::vec(any::<u8>(), 0..2048),
                                   b in prop::collection::vec(any::<u8>(), 0..512)) {
        let a = String::from_utf8_lossy(&a);
        let b = String::from_utf8_lossy(&b);
        try_all(&a, &b, &a);
    }

    #[test]
    fn arbitrary_unicode_never_panics(a in "\\PC*", b in "(\\PC|\n)*") {
        try_all(&a, &b, &b);
    }

    #[test]
    fn token_soups_never_panic(v4 in soup(), v6 in soup(), sets in set_soup()) {
        try_all(&v4, &v6, &sets);
        if let Ok(rs) = Ruleset::parse("iptables-nft", &v4, &v6, &sets) {
            exercise(&rs);
        }
    }

    #[test]
    fn option_chunks_parse_and_evaluate(v4 in chunk_save(), v6 in chunk_save(), sets in set_soup()) {
        // Rules for chains the table has always parse; the whole must parse with no sets.
        let rs = Ruleset::parse("iptables-legacy", &v4, &v6, "");
        prop_assert!(rs.is_ok(), "{:?}\n{}\n{}", rs.err(), v4, v6);
        exercise(&rs.unwrap());
        if let Ok(rs) = Ruleset::parse("iptables-legacy", &v4, &v6, &sets) {
            exercise(&rs);
        }
    }

    /// Any comment text (no line break: the format has none) stays inside the comment.
    #[test]
    fn comments_of_any_text_stay_comments(c in "[^\r\n]{0,64}") {
        let escaped = c.replace('\\', "\\\\").replace('"', "\\\"");
        let line = format!("-A INPUT -m comment --comment \"{escaped}\" -j DROP");
        let save = format!("*filter\n:INPUT ACCEPT [0:0]\n{line}\nCOMMIT\n");
        let rs = Ruleset::parse("iptables-legacy", &save, "", "").unwrap();
        let r = rs.evaluate(&packets()[0]);
        prop_assert_eq!(r.len(), 1);
        prop_assert_eq!(&r[0].verdict, &cfa_eval::Verdict::Drop);
        prop_assert_eq!(r[0].rule.as_deref(), Some(line.as_str()));
    }
}

// ---------------------------------------------------------------------------------------------
// Boundaries: valid rulesets matching sources in a small space, so pieces are small enough to
// sample at both ends and in the middle.

#[derive(Debug, Clone)]
enum Src {
    Any,
    Net(u32, u8, bool),
    Range(u32, u32, bool),
    Set(bool),
}

#[derive(Debug, Clone)]
struct RuleSpec {
    src: Src,
    port: Option<u16>,
    target: &'static str,
}

/// Addresses inside 10.0.0.0/20 (the interesting ones) or anywhere.
fn addr_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => (0u32..4096).prop_map(|o| 0x0a00_0000 + o),
        1 => any::<u32>(),
    ]
}

fn rule_strategy() -> impl Strategy<Value = RuleSpec> {
    let src = prop_oneof![
        1 => Just(Src::Any),
        3 => (addr_strategy(), 0u8..=32, any::<bool>()).prop_map(|(a, l, n)| Src::Net(a, l, n)),
        2 => (addr_strategy(), 0u32..600, any::<bool>())
            .prop_map(|(a, w, n)| Src::Range(a, a.saturating_add(w), n)),
        2 => any::<bool>().prop_map(Src::Set),
    ];
    (
        src,
        prop::option::of(prop::sample::select(&[22u16, 80][..])),
        prop::sample::select(&["ACCEPT", "DROP", "REJECT", "RETURN", "u", "LOG"][..]),
    )
        .prop_map(|(src, port, target)| RuleSpec { src, port, target })
}

fn set_strategy() -> impl Strategy<Value = Vec<(u32, u8, bool)>> {
    prop::collection::vec((addr_strategy(), 1u8..=32, any::<bool>()), 0..6)
}

fn render(rules: &[RuleSpec], user: &[RuleSpec], set: &[(u32, u8, bool)]) -> (String, String) {
    let mask = |l: u8| if l == 0 { 0 } else { u32::MAX << (32 - l) };
    let line = |chain: &str, r: &RuleSpec| {
        let mut s = format!("-A {chain}");
        match &r.src {
            Src::Any => {}
            Src::Net(a, l, n) => {
                let bang = if *n { "! " } else { "" };
                s.push_str(&format!(" {bang}-s {}/{l}", Ipv4Addr::from(a & mask(*l))));
            }
            Src::Range(a, b, n) => {
                let bang = if *n { "! " } else { "" };
                s.push_str(&format!(
                    " -m iprange {bang}--src-range {}-{}",
                    Ipv4Addr::from(*a),
                    Ipv4Addr::from(*b)
                ));
            }
            Src::Set(n) => {
                let bang = if *n { "! " } else { "" };
                s.push_str(&format!(" -m set {bang}--match-set x src"));
            }
        }
        if let Some(p) = r.port {
            s.push_str(&format!(" -p tcp -m tcp --dport {p}"));
        }
        let target = if chain == "u" && r.target == "u" {
            "RETURN"
        } else {
            r.target
        };
        s.push_str(&format!(" -j {target}\n"));
        s
    };
    let mut save = "*filter\n:INPUT DROP [0:0]\n:u - [0:0]\n".to_string();
    for r in rules {
        save.push_str(&line("INPUT", r));
    }
    for r in user {
        save.push_str(&line("u", r));
    }
    save.push_str("COMMIT\n");
    let mut sets = "create x hash:net family inet\n".to_string();
    let mut seen = std::collections::BTreeSet::new();
    for (a, l, nomatch) in set {
        let net = (a & mask(*l), *l);
        if seen.insert(net) {
            let nm = if *nomatch { " nomatch" } else { "" };
            sets.push_str(&format!("add x {}/{l}{nm}\n", Ipv4Addr::from(net.0)));
        }
    }
    (save, sets)
}

fn at(rs: &Ruleset, a: u32, dport: u16) -> Vec<cfa_eval::HookResult> {
    rs.evaluate(&Packet {
        src: IpAddr::V4(Ipv4Addr::from(a)),
        dport,
        proto: L4::Tcp,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Between two consecutive boundaries every address gets the same answer (the same
    /// verdict from the same rule): checked at both ends and in the middle of every piece.
    #[test]
    fn one_answer_per_piece(rules in prop::collection::vec(rule_strategy(), 0..8),
                            user in prop::collection::vec(rule_strategy(), 0..4),
                            set in set_strategy()) {
        let (save, sets) = render(&rules, &user, &set);
        let rs = Ruleset::parse("iptables-legacy", &save, "", &sets).unwrap();
        let mut points: Vec<u32> = rs
            .boundaries(false)
            .iter()
            .map(|a| match a {
                IpAddr::V4(a) => u32::from(*a),
                IpAddr::V6(_) => panic!("IPv6 boundary for IPv4"),
            })
            .collect();
        if points.first() != Some(&0) {
            points.insert(0, 0);
        }
        for (k, &start) in points.iter().enumerate() {
            let end = points.get(k + 1).map_or(u32::MAX, |n| n - 1);
            for port in [22, 80, 443] {
                let first = at(&rs, start, port);
                for a in [end, start + (end - start) / 2] {
                    prop_assert_eq!(&at(&rs, a, port), &first, "piece {}..={} port {}\n{}\n{}",
                        Ipv4Addr::from(start), Ipv4Addr::from(end), port, save, sets);
                }
            }
        }
    }

    /// The same for IPv6: boundaries of /0.. /128 prefixes never overflow and split exactly.
    #[test]
    fn ipv6_boundaries_split_exactly(nets in prop::collection::vec((any::<u128>(), 0u8..=128), 1..6)) {
        let mut save = "*filter\n:INPUT ACCEPT [0:0]\n".to_string();
        for (k, (a, l)) in nets.iter().enumerate() {
            let mask = if *l == 0 { 0 } else { u128::MAX << (128 - l) };
            let target = ["DROP", "REJECT", "ACCEPT"][k % 3];
            save.push_str(&format!("-A INPUT -s {}/{l} -j {target}\n", Ipv6Addr::from(a & mask)));
        }
        save.push_str("COMMIT\n");
        let rs = Ruleset::parse("iptables-nft", "", &save, "").unwrap();
        let b: Vec<u128> = rs.boundaries(true).iter().map(|a| match a {
            IpAddr::V6(a) => u128::from(*a),
            IpAddr::V4(_) => panic!("IPv4 boundary for IPv6"),
        }).collect();
        for (a, l) in &nets {
            let mask = if *l == 0 { 0 } else { u128::MAX << (128 - l) };
            let first = a & mask;
            prop_assert!(b.contains(&first));
            if let Some(next) = (first | !mask).checked_add(1) {
                prop_assert!(b.contains(&next));
            }
        }
        let eval = |x: u128| rs.evaluate(&Packet { src: IpAddr::V6(Ipv6Addr::from(x)), dport: 1, proto: L4::Udp });
        let mut points = b.clone();
        if points.first() != Some(&0) {
            points.insert(0, 0);
        }
        for (k, &start) in points.iter().enumerate() {
            let end = points.get(k + 1).map_or(u128::MAX, |n| n - 1);
            prop_assert_eq!(eval(end), eval(start));
        }
    }
}
