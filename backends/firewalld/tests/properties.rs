//! Property tests of what the firewalld backend reads and writes: the readers of firewall-cmd's
//! output survive arbitrary bytes and arbitrary Unicode; what we generate (rich rules, entry
//! files, `--info-ipset` text, XML text) reads back as what it was made from.

use cfa_core::Family;
use cfa_firewalld::text::{
    entries_file, entry_net, escape, ipset_uses, ipsets_named, parse_blocks, read_entries_file,
    Action, IpsetInfo, PolicyInfo, Rule,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

/// A line: any Unicode, printable ASCII, or a fragment of what firewall-cmd prints.
fn line() -> impl Strategy<Value = String> {
    let fragments = prop::sample::select(vec![
        "cf-allowlist (active)",
        "public (default, active)",
        "  priority: -32768",
        "  priority: 99999999999",
        "  target: CONTINUE",
        "  ingress-zones: ANY",
        "  egress-zones: HOST",
        "  services: ssh",
        "  masquerade: yes",
        "  rich rules: ",
        "\trule family=\"ipv4\" source ipset=\"cf-allowlist-v4\" port port=\"443\" protocol=\"tcp\" accept",
        "\trule family=\"ipv6\" source NOT ipset=\"cf-allowlist-v6\" protocol value=\"udp\" drop",
        "\trule family=\"ipv4\" source ipset=\"",
        "  type: hash:net",
        "  options: family=inet maxelem=65536",
        "  entries: 173.245.48.0/20 2400:cb00::/32 8.8.8.8 010.1.2.0/24",
        "  sources: ipset:cf-allowlist-v4 10.0.0.0/8",
        "  no colon",
        " :",
        "\t",
        "",
    ])
    .prop_map(String::from);
    prop_oneof![
        2 => any::<String>(),
        2 => "[ -~\t]{0,40}",
        4 => fragments,
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(line(), 0..16).prop_map(|l| l.join("\n"))
}

fn v4() -> impl Strategy<Value = IpNet> {
    (any::<[u8; 4]>(), 0u8..=32)
        .prop_map(|(a, p)| IpNet::V4(Ipv4Net::new(a.into(), p).unwrap().trunc()))
}

fn v6() -> impl Strategy<Value = IpNet> {
    (any::<[u8; 16]>(), 0u8..=128)
        .prop_map(|(a, p)| IpNet::V6(Ipv6Net::new(a.into(), p).unwrap().trunc()))
}

fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![v4(), v6()]
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        any::<bool>(),
        "[a-zA-Z][a-zA-Z0-9_-]{0,31}",
        any::<bool>(),
        prop::sample::select(vec!["tcp", "udp"]),
        prop::option::of(1u16..),
        any::<bool>(),
    )
        .prop_map(|(v6, ipset, invert, protocol, port, drop)| Rule {
            family: if v6 { Family::V6 } else { Family::V4 },
            ipset,
            invert,
            protocol: protocol.to_string(),
            port,
            action: if drop { Action::Drop } else { Action::Accept },
        })
}

/// The inverse of `escape`, for the round trip.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Arbitrary text, and arbitrary bytes read as firewall-cmd's output is read (lossy UTF-8),
    /// never panic any reader.
    #[test]
    fn readers_never_panic(text in text(), bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        for input in [text, String::from_utf8_lossy(&bytes).into_owned()] {
            if let Ok(blocks) = parse_blocks(&input) {
                for b in &blocks {
                    let _ = IpsetInfo::from_block(b);
                    let _ = PolicyInfo::from_block(b);
                    let _ = ipset_uses(b, "cf-allowlist-v4");
                    let _ = ipsets_named(b);
                    for w in b.words("entries") {
                        let _ = entry_net(&w);
                    }
                    for w in b.words("rich rules") {
                        let _ = Rule::parse(&w);
                    }
                }
            }
            for l in input.lines() {
                let _ = Rule::parse(l);
                let _ = entry_net(l);
            }
            let _ = read_entries_file(&input);
        }
    }

    /// A rule reads back from its text as itself, and its text holds no newline (one rule a
    /// line in firewall-cmd's listings).
    #[test]
    fn rules_round_trip(r in rule()) {
        let text = r.text();
        prop_assert!(!text.contains('\n'));
        prop_assert_eq!(Rule::parse(&text), Some(r.clone()));
        let listed = format!("x (active)\n  rich rules: \n\t{text}\n");
        let blocks = parse_blocks(&listed).unwrap();
        prop_assert_eq!(&blocks[0].field("rich rules").unwrap().lines, &vec![text]);
        prop_assert_eq!(ipsets_named(&blocks[0]), vec![r.ipset.clone()]);
    }

    /// An entries file reads back (as firewall-cmd reads it) as the entries it was made from,
    /// and every canonical entry reads back as its network.
    #[test]
    fn entries_round_trip(nets in prop::collection::vec(net(), 0..40)) {
        let mut entries: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        let mut seen = std::collections::BTreeSet::new();
        entries.retain(|e| seen.insert(e.clone()));
        prop_assert_eq!(read_entries_file(&entries_file(&entries)), entries);
        for n in &nets {
            prop_assert_eq!(entry_net(&n.to_string()), Some(*n));
        }
    }

    /// `--info-ipset` text as firewall-cmd prints it reads back as the ipset it describes.
    #[test]
    fn ipset_info_round_trips(
        name in "[a-zA-Z][a-zA-Z0-9_.:-]{0,31}",
        kind in prop::sample::select(vec!["hash:net", "hash:ip", "hash:ip,port"]),
        options in prop::collection::btree_set("[a-z]{1,8}(=[a-z0-9]{1,8})?", 0..4),
        nets in prop::collection::vec(net(), 0..20),
    ) {
        let info = IpsetInfo {
            name,
            kind: kind.to_string(),
            options: options.into_iter().collect(),
            entries: nets.iter().map(|n| n.to_string()).collect(),
        };
        let blocks = parse_blocks(&info.to_info_text()).unwrap();
        prop_assert_eq!(blocks.len(), 1);
        prop_assert_eq!(IpsetInfo::from_block(&blocks[0]).unwrap(), info);
    }

    /// Escaped text holds no character that ends an XML attribute or element, and unescapes to
    /// itself.
    #[test]
    fn escaping_round_trips(s in any::<String>()) {
        let e = escape(&s);
        prop_assert!(!e.contains(['<', '>', '"', '\'']));
        prop_assert_eq!(unescape(&e), s);
    }
}
