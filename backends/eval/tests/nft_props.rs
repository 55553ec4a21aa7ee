//! Properties of the nftables evaluator: no input makes it panic, and its boundaries are
//! complete (between two consecutive boundaries every address gets the same answer).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cfa_eval::nft::Ruleset;
use cfa_eval::{Evaluate, Packet, L4};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const WORDS: &[&str] = &[
    "10.0.0.0",
    "10.0.0.1",
    "10.0.0.7",
    "10.0.0.255",
    "10.0.1.0",
    "0.0.0.0",
    "255.255.255.255",
    "2001:db8::",
    "2001:db8::1",
    "2001:db8::ff",
    "::",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "::ffff:10.0.0.1",
    "tcp",
    "udp",
    "icmp",
    "new",
    "established",
    "invalid",
    "untracked",
    "lo",
    "eth0",
    "lo*",
    "@s",
    "@m",
    "@nope",
    "ipv4",
    "ipv6",
    "ip",
    "ip6",
    "local",
    "syn",
    "ack",
    "fin",
    "original",
    "host",
    "loopback",
    "accept",
    "drop",
    "0x1",
    "22",
    "ssh",
    "==",
    "!=",
    "in",
    "<",
    ">=",
    "tcp reset",
    "icmp",
    "icmpv6",
    "icmpx",
    "a",
    "b",
    "c",
    "add",
    "update",
    "dormant",
];

const KEYS: &[&str] = &[
    "match", "left", "right", "op", "payload", "protocol", "field", "meta", "key", "ct", "set",
    "prefix", "addr", "len", "range", "concat", "vmap", "data", "jump", "goto", "target", "accept",
    "drop", "reject", "type", "return", "continue", "counter", "limit", "mangle", "value",
    "notrack", "elem", "val", "fib", "result", "flags", "&", "|", "xt", "snat", "name", "stmt",
    "dir", "expr", "quota", "log",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(Value::from),
        2 => any::<u16>().prop_map(Value::from),
        2 => (0u64..40).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => any::<String>().prop_map(Value::from),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..3).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn addr_word() -> impl Strategy<Value = Value> {
    prop::sample::select(&WORDS[..13]).prop_map(Value::from)
}

/// A right-hand side: scalars, prefixes, ranges, sets, concatenations.
fn right() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![addr_word(), leaf()];
    scalar.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            (addr_word(), 0u64..140).prop_map(|(a, l)| json!({"prefix": {"addr": a, "len": l}})),
            (addr_word(), addr_word()).prop_map(|(a, b)| json!({"range": [a, b]})),
            (0u16..1000, 0u16..1000).prop_map(|(a, b)| json!({"range": [a, b]})),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"set": v})),
            prop::collection::vec(inner.clone(), 2..3).prop_map(|v| json!({"concat": v})),
            inner
                .clone()
                .prop_map(|v| json!({"elem": {"val": v, "timeout": 5}})),
            (inner.clone(), tree()).prop_map(|(k, v)| json!([k, v])),
        ]
    })
}

fn left() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(vec![
            json!({"payload": {"protocol": "ip", "field": "saddr"}}),
            json!({"payload": {"protocol": "ip6", "field": "saddr"}}),
            json!({"payload": {"protocol": "ip", "field": "daddr"}}),
            json!({"payload": {"protocol": "tcp", "field": "dport"}}),
            json!({"payload": {"protocol": "udp", "field": "dport"}}),
            json!({"payload": {"protocol": "th", "field": "dport"}}),
            json!({"payload": {"protocol": "tcp", "field": "flags"}}),
            json!({"payload": {"protocol": "ip", "field": "protocol"}}),
            json!({"payload": {"protocol": "icmp", "field": "type"}}),
            json!({"meta": {"key": "l4proto"}}),
            json!({"meta": {"key": "nfproto"}}),
            json!({"meta": {"key": "iifname"}}),
            json!({"meta": {"key": "mark"}}),
            json!({"ct": {"key": "state"}}),
            json!({"ct": {"key": "mark"}}),
            json!({"fib": {"result": "type", "flags": ["daddr"]}}),
            json!({"concat": [{"payload": {"protocol": "ip", "field": "saddr"}},
                              {"payload": {"protocol": "tcp", "field": "dport"}}]}),
            json!({"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "ack"]]}),
            json!({"&": [{"ct": {"key": "state"}}, 10]}),
        ]),
        1 => tree(),
    ]
}

fn expr() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (prop::sample::select(vec!["==", "!=", "in", "<", ">", "<=", ">=", "~"]), left(), right())
            .prop_map(|(op, l, r)| json!({"match": {"op": op, "left": l, "right": r}})),
        4 => prop::sample::select(vec![
            json!({"accept": null}),
            json!({"drop": null}),
            json!({"reject": {"type": "tcp reset"}}),
            json!({"reject": {"type": "icmpx", "expr": "admin-prohibited"}}),
            json!({"reject": {"type": "icmp", "expr": "port-unreachable"}}),
            json!({"return": null}),
            json!({"continue": null}),
            json!({"jump": {"target": "a"}}),
            json!({"jump": {"target": "b"}}),
            json!({"goto": {"target": "c"}}),
            json!({"jump": {"target": "input"}}),
            json!({"counter": {"packets": 0, "bytes": 0}}),
            json!({"notrack": null}),
            json!({"limit": {"rate": 1, "per": "second"}}),
            json!({"mangle": {"key": {"meta": {"key": "mark"}}, "value": 1}}),
            json!({"mangle": {"key": {"ct": {"key": "mark"}}, "value": 2}}),
            json!({"set": {"op": "add", "elem": {"payload": {"protocol": "ip", "field": "saddr"}}, "set": "@s"}}),
            json!({"xt": {"type": "match", "name": "comment"}}),
        ]),
        1 => (left(), right()).prop_map(|(k, d)| json!({"vmap": {"key": k, "data": d}})),
        1 => (left(), prop::sample::select(vec!["@m", "@s", "@nope"]))
            .prop_map(|(k, d)| json!({"vmap": {"key": k, "data": d}})),
        1 => tree(),
    ]
}

/// A rule: random expressions, or a source-address match and a verdict (the shape that makes
/// answers change with the address).
fn rule() -> impl Strategy<Value = Vec<Value>> {
    let saddr = prop::sample::select(vec![
        json!({"payload": {"protocol": "ip", "field": "saddr"}}),
        json!({"payload": {"protocol": "ip6", "field": "saddr"}}),
    ]);
    let verdict = prop::sample::select(vec![
        json!({"accept": null}),
        json!({"drop": null}),
        json!({"reject": null}),
        json!({"jump": {"target": "a"}}),
    ]);
    prop_oneof![
        prop::collection::vec(expr(), 0..5),
        (
            prop::sample::select(vec!["==", "!="]),
            saddr,
            right(),
            verdict
        )
            .prop_map(|(op, l, r, v)| vec![json!({"match": {"op": op, "left": l, "right": r}}), v]),
    ]
}

/// A whole `nft -j` document of a few tables, chains and sets in nft's shapes, with random
/// contents.
fn document() -> impl Strategy<Value = Value> {
    let family = prop::sample::select(vec!["inet", "ip", "ip6", "inet", "netdev", "bridge", "arp"]);
    let hook = prop::sample::select(vec!["input", "input", "prerouting", "ingress", "forward"]);
    let kind = prop::sample::select(vec!["filter", "filter", "filter", "nat", "route"]);
    let prio = prop_oneof![
        prop::sample::select(vec![-400i64, -300, -200, -150, -100, -10, 0, 0, 5, 100])
            .prop_map(Value::from),
        prop::sample::select(vec!["filter", "raw + 1", "dstnat", "security - 5"])
            .prop_map(Value::from),
    ];
    let chain = (
        prop::sample::select(vec!["input", "input2", "a", "b", "c"]),
        prop::option::of((hook, kind, prio, any::<bool>())),
        prop::collection::vec(rule(), 0..5),
    );
    let table = (
        family,
        prop::sample::select(vec!["t", "u"]),
        prop::collection::vec(chain, 1..4),
        prop::collection::vec(right(), 0..5),
        prop::collection::vec(right(), 0..3),
    );
    prop::collection::vec(table, 1..3).prop_map(|tables| {
        let mut items = vec![json!({"metainfo": {"version": "1.0.6"}})];
        for (family, name, chains, set_elems, map_elems) in tables {
            items.push(json!({"table": {"family": family, "name": name, "handle": 1}}));
            items.push(json!({"set": {"family": family, "table": name, "name": "s",
                                      "type": "ipv4_addr", "elem": set_elems}}));
            items.push(json!({"map": {"family": family, "table": name, "name": "m",
                                      "type": "ipv4_addr", "map": "verdict", "elem": map_elems}}));
            for (chain, base, rules) in chains {
                let mut c = json!({"family": family, "table": name, "name": chain, "handle": 1});
                if let Some((hook, kind, prio, drop)) = base {
                    c["hook"] = hook.into();
                    c["type"] = kind.into();
                    c["prio"] = prio;
                    c["policy"] = if drop { "drop" } else { "accept" }.into();
                }
                items.push(json!({ "chain": c }));
                for (h, expr) in rules.into_iter().enumerate() {
                    items.push(
                        json!({"rule": {"family": family, "table": name, "chain": chain,
                                               "handle": h, "expr": expr}}),
                    );
                }
            }
        }
        json!({ "nftables": items })
    })
}

/// One inet input chain of address rules: where the address logic is all that matters.
fn address_chain() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(rule(), 1..5),
        any::<bool>(),
        prop::collection::vec(right(), 0..4),
    )
        .prop_map(|(rules, drop, elems)| {
            let mut items = vec![
                json!({"table": {"family": "inet", "name": "t"}}),
                json!({"set": {"family": "inet", "table": "t", "name": "s", "elem": elems}}),
                json!({"chain": {"family": "inet", "table": "t", "name": "input", "hook": "input",
                                 "type": "filter", "prio": 0,
                                 "policy": if drop { "drop" } else { "accept" }}}),
                json!({"chain": {"family": "inet", "table": "t", "name": "a"}}),
            ];
            for expr in rules {
                items.push(
                    json!({"rule": {"family": "inet", "table": "t", "chain": "input",
                                           "expr": expr}}),
                );
            }
            json!({ "nftables": items })
        })
}

fn packet_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        addr_word().prop_map(|w| w.as_str().unwrap().parse::<IpAddr>().unwrap()),
        (0u32..1024).prop_map(|n| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))),
        any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        (0u128..1024).prop_map(|n| IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) + n))),
        any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    (
        packet_addr(),
        prop::sample::select(vec![22u16, 80, 443, 7, 999, 0, 65535]),
        any::<bool>(),
    )
        .prop_map(|(src, dport, tcp)| Packet {
            src,
            dport,
            proto: if tcp { L4::Tcp } else { L4::Udp },
        })
}

/// The boundary at or below `a` (the first address of its piece), or the family's first.
fn piece_start(bounds: &[IpAddr], a: IpAddr) -> IpAddr {
    bounds
        .iter()
        .rev()
        .find(|b| **b <= a)
        .copied()
        .unwrap_or(match a {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        })
}

proptest! {
    // PROPTEST_CASES raises it.
    #![proptest_config(ProptestConfig {
        cases: ProptestConfig::default().cases.max(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(rs) = Ruleset::parse(&text) {
            let _ = rs.boundaries(false);
        }
    }

    #[test]
    fn arbitrary_unicode_never_panics(text in any::<String>()) {
        let _ = Ruleset::parse(&text);
        let _ = Ruleset::parse(&format!("{{\"nftables\": [{text}]}}"));
    }

    #[test]
    fn arbitrary_json_never_panics(doc in prop_oneof![tree(), tree().prop_map(|t| json!({"nftables": [t]}))],
                                   p in packet()) {
        if let Ok(rs) = Ruleset::parse(&doc.to_string()) {
            let _ = rs.evaluate(&p);
            let _ = rs.boundaries(p.src.is_ipv6());
        }
    }

    #[test]
    fn address_rules_are_uniform_between_boundaries(doc in address_chain(), p in packet()) {
        let rs = Ruleset::parse(&doc.to_string()).expect("nft-shaped documents parse");
        let bounds = rs.boundaries(p.src.is_ipv6());
        let start = Packet { src: piece_start(&bounds, p.src), ..p };
        prop_assert_eq!(rs.evaluate(&start), rs.evaluate(&p), "{} and {} are in one piece", start.src, p.src);
    }

    /// Every address of a piece between consecutive boundaries gets the answer its first
    /// address gets: what `audit` relies on when it evaluates one address per piece.
    #[test]
    fn nft_shaped_documents_evaluate_and_boundaries_are_complete(doc in document(), p in packet()) {
        let rs = Ruleset::parse(&doc.to_string()).expect("nft-shaped documents parse");
        let got = rs.evaluate(&p);
        let bounds = rs.boundaries(p.src.is_ipv6());
        prop_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(bounds.iter().all(|b| b.is_ipv6() == p.src.is_ipv6()));
        let start = Packet { src: piece_start(&bounds, p.src), ..p };
        prop_assert_eq!(&rs.evaluate(&start), &got, "{} and {} are in one piece", start.src, p.src);
    }
}
