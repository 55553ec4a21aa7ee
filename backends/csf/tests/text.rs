//! Fixture tests of the csf file formats: what we generate (insta snapshots), how we read it
//! back, and the Include line edits on real-looking csf.allow / csf.ignore files.

use cfa_core::{parse_cidr, AllowList, Family, Protocol, RuleSpec};
use cfa_csf::text::{self, Kind};

const ALLOW: &[u8] = include_bytes!("fixtures/csf.allow");
const ALLOW_CRLF: &[u8] = include_bytes!("fixtures/csf.allow.crlf");
const ALLOW_DAMAGED: &[u8] = include_bytes!("fixtures/csf.allow.damaged");
const IGNORE: &[u8] = include_bytes!("fixtures/csf.ignore");
const CONF_TESTING: &str = include_str!("fixtures/csf.conf");
const CONF_PRODUCTION: &str = include_str!("fixtures/csf.conf.production");
const CONF_RESTRICTED: &str = include_str!("fixtures/csf.conf.restricted");

fn cloudflare() -> AllowList {
    cfa_core::snapshot::cloudflare()
}

fn spec(ports: &[u16], protocol: Protocol) -> RuleSpec {
    RuleSpec {
        ports: ports.to_vec(),
        protocol,
        ..RuleSpec::default()
    }
}

const ORIGIN: Option<&str> = Some("cloudflare api, fetched 2026-11-27T09:40:00Z");

#[test]
fn allow_file_for_web_ports() {
    let out = text::render(
        Kind::Allow,
        "/etc/csf",
        &cloudflare(),
        &RuleSpec::default(),
        ORIGIN,
    );
    insta::assert_snapshot!(out);
}

#[test]
fn allow_file_for_both_protocols() {
    let list: AllowList = ["173.245.48.0/20", "2400:cb00::/32"]
        .iter()
        .map(|s| parse_cidr(s).unwrap())
        .collect();
    let out = text::render(
        Kind::Allow,
        "/etc/csf",
        &list,
        &spec(&[443, 443, 80], Protocol::Both),
        None,
    );
    insta::assert_snapshot!(out);
}

/// `ports: []`: every port of the protocol, inbound only, never a plain CIDR (which csf turns
/// into accept-everything in and out).
#[test]
fn allow_file_for_every_port() {
    let out = text::render(
        Kind::Allow,
        "/etc/csf",
        &cloudflare(),
        &spec(&[], Protocol::Tcp),
        ORIGIN,
    );
    assert!(out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .all(|l| l.starts_with("tcp|in|d=1_65535|s=")));
    insta::assert_snapshot!(out);
}

#[test]
fn ignore_file_is_plain_cidrs() {
    let out = text::render(
        Kind::Ignore,
        "/etc/csf",
        &cloudflare(),
        &RuleSpec::default(),
        ORIGIN,
    );
    insta::assert_snapshot!(out);
}

#[test]
fn generated_files_read_back_to_the_same_entries() {
    for spec in [
        RuleSpec::default(),
        spec(&[], Protocol::Tcp),
        spec(&[], Protocol::Both),
        spec(&[8443], Protocol::Both),
    ] {
        for kind in [Kind::Allow, Kind::Ignore] {
            let out = text::render(kind, "/etc/csf", &cloudflare(), &spec, ORIGIN);
            let parsed = text::parse_generated(out.as_bytes()).expect("our header");
            assert_eq!(parsed.entries, cloudflare(), "{kind:?} {spec:?}");
            assert!(parsed.unknown.is_empty());
            match kind {
                Kind::Allow => assert_eq!(text::allow_mismatch(&parsed, &spec), None),
                Kind::Ignore => assert_eq!(text::ignore_mismatch(&parsed, &cloudflare()), None),
            }
        }
    }
}

#[test]
fn allow_file_for_other_ports_is_outdated_naming_both() {
    let out = text::render(
        Kind::Allow,
        "/etc/csf",
        &cloudflare(),
        &spec(&[22], Protocol::Tcp),
        None,
    );
    let parsed = text::parse_generated(out.as_bytes()).unwrap();
    let why = text::allow_mismatch(&parsed, &RuleSpec::default()).unwrap();
    assert_eq!(
        why,
        "cf-allowlist.allow was written for tcp/22 but the configuration asks for tcp/80,tcp/443"
    );
    let plain = text::render(
        Kind::Allow,
        "/etc/csf",
        &cloudflare(),
        &spec(&[], Protocol::Tcp),
        None,
    );
    let parsed = text::parse_generated(plain.as_bytes()).unwrap();
    assert!(text::allow_mismatch(&parsed, &RuleSpec::default())
        .unwrap()
        .contains("every port"));
}

#[test]
fn hand_edited_generated_file_is_outdated() {
    let mut out = text::render(
        Kind::Allow,
        "/etc/csf",
        &cloudflare(),
        &RuleSpec::default(),
        None,
    );
    out.push_str("tcp|in|d=80|s=010.1.2.0/24\n");
    let parsed = text::parse_generated(out.as_bytes()).unwrap();
    assert_eq!(
        parsed.entries,
        cloudflare(),
        "the octal-looking line is not an entry"
    );
    let why = text::allow_mismatch(&parsed, &RuleSpec::default()).unwrap();
    assert!(why.contains("010.1.2.0/24"), "{why}");
}

#[test]
fn file_without_our_header_is_not_ours() {
    assert_eq!(text::parse_generated(b"173.245.48.0/20\n"), None);
    assert_eq!(text::parse_generated(b""), None);
    assert_eq!(text::parse_generated(ALLOW), None);
}

fn edit(bytes: &[u8], kind: Kind) -> Vec<u8> {
    text::set_include(bytes, &text::include_line("/etc/csf", kind))
}

#[test]
fn include_in_csf_allow() {
    let out = edit(ALLOW, Kind::Allow);
    assert!(out.ends_with(ALLOW), "every operator byte kept");
    insta::assert_snapshot!(String::from_utf8(out).unwrap());
}

#[test]
fn include_in_crlf_file_without_final_newline() {
    let out = edit(ALLOW_CRLF, Kind::Allow);
    assert_eq!(
        &out[..],
        [b"Include /etc/csf/cf-allowlist.allow\r\n", ALLOW_CRLF].concat()
    );
    insta::assert_debug_snapshot!(String::from_utf8(out).unwrap());
}

#[test]
fn include_in_csf_ignore() {
    let out = edit(IGNORE, Kind::Ignore);
    assert_eq!(
        &out[..],
        [b"Include /etc/csf/cf-allowlist.ignore\n", IGNORE].concat()
    );
    insta::assert_debug_snapshot!(String::from_utf8(out).unwrap());
}

#[test]
fn include_edits_are_idempotent_and_undone_byte_for_byte() {
    for (name, original) in [
        ("csf.allow", ALLOW),
        ("csf.allow.crlf", ALLOW_CRLF),
        ("csf.ignore", IGNORE),
        ("empty", b"" as &[u8]),
        ("one line, no newline", b"1.2.3.4"),
        ("only a newline", b"\n"),
    ] {
        for kind in [Kind::Allow, Kind::Ignore] {
            let once = edit(original, kind);
            assert_eq!(
                edit(&once, kind),
                once,
                "{name}: second edit changes nothing"
            );
            assert_eq!(text::find_includes(&once).len(), 1, "{name}");
            assert_eq!(
                text::remove_includes(&once),
                original,
                "{name}: undone exactly"
            );
        }
    }
}

#[test]
fn damaged_includes_are_repaired_not_multiplied() {
    let found = text::find_includes(ALLOW_DAMAGED);
    assert_eq!(found.len(), 4, "{found:?}");
    let out = edit(ALLOW_DAMAGED, Kind::Allow);
    let found = text::find_includes(&out);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].line, "Include /etc/csf/cf-allowlist.allow");
    insta::assert_snapshot!(String::from_utf8(out).unwrap());
}

#[test]
fn include_of_the_allow_file_in_csf_ignore_is_replaced() {
    let legacy = [b"Include /etc/csf/cf-allowlist.allow\n" as &[u8], IGNORE].concat();
    assert!(!text::include_is_current(
        &legacy,
        &text::include_line("/etc/csf", Kind::Ignore)
    ));
    assert_eq!(edit(&legacy, Kind::Ignore), edit(IGNORE, Kind::Ignore));
}

#[test]
fn include_moved_by_the_operator_is_left_where_it_is() {
    let moved = [ALLOW, b"Include /etc/csf/cf-allowlist.allow\n"].concat();
    assert_eq!(edit(&moved, Kind::Allow), moved);
    assert_eq!(text::remove_includes(&moved), ALLOW);
}

#[test]
fn remove_takes_the_newline_before_a_last_line_without_one() {
    assert_eq!(
        text::remove_includes(b"a\nInclude /etc/csf/cf-allowlist.allow"),
        b"a"
    );
    assert_eq!(
        text::remove_includes(b"a\r\nInclude /etc/csf/cf-allowlist.allow"),
        b"a"
    );
    assert_eq!(
        text::remove_includes(b"Include /etc/csf/cf-allowlist.allow"),
        b""
    );
}

#[test]
fn non_utf8_operator_bytes_survive() {
    let latin1 = b"1.2.3.4 # caf\xe9 du coin\n";
    let out = edit(latin1, Kind::Allow);
    assert!(out.ends_with(latin1));
    assert_eq!(text::remove_includes(&out), latin1);
}

#[test]
fn conf_warnings_for_testing_mode_and_disabled_ipv6() {
    let warnings = text::conf_warnings(CONF_TESTING, &RuleSpec::default(), "/etc/csf/csf.conf");
    insta::assert_debug_snapshot!(warnings);
    assert!(text::conf_warnings(CONF_RESTRICTED, &RuleSpec::default(), "c").is_empty());
    let v4_only = RuleSpec {
        families: vec![Family::V4],
        ..RuleSpec::default()
    };
    let warnings = text::conf_warnings(CONF_TESTING, &v4_only, "c");
    assert_eq!(
        warnings.len(),
        2,
        "IPv6 off is fine when IPv6 is not managed"
    );
    assert!(warnings[0].contains("TESTING"));
    assert!(warnings[1].starts_with("the allowlist does not restrict: in c TCP_IN opens 80,443"));
}

#[test]
fn conf_values_read_as_csf_reads_them() {
    assert_eq!(
        text::conf_value(CONF_TESTING, "TESTING").as_deref(),
        Some("1")
    );
    assert_eq!(
        text::conf_value(CONF_TESTING, "TESTING_INTERVAL").as_deref(),
        Some("5")
    );
    assert_eq!(text::conf_value("# TESTING = \"1\"\n", "TESTING"), None);
    assert_eq!(
        text::conf_value("TESTING=\"1\"\nTESTING = \"0\"\n", "TESTING").as_deref(),
        Some("0"),
        "last one wins"
    );
}

#[test]
fn governed_ports_open_to_everyone_in_csf_conf() {
    let restrict = |ports: &[u16], protocol| RuleSpec {
        restrict: true,
        ..spec(ports, protocol)
    };
    assert_eq!(
        text::open_to_all(CONF_PRODUCTION, &RuleSpec::default()),
        vec![("TCP_IN", vec![80, 443]), ("TCP6_IN", vec![80, 443])]
    );
    assert_eq!(
        text::open_to_all(CONF_TESTING, &RuleSpec::default()),
        vec![("TCP_IN", vec![80, 443])],
        "TCP6_IN is not read while IPV6 = \"0\""
    );
    assert!(text::open_to_all(CONF_RESTRICTED, &RuleSpec::default()).is_empty());
    assert_eq!(
        text::open_to_all(
            CONF_RESTRICTED,
            &spec(&[53, 443, 30000, 35000, 35001], Protocol::Both)
        ),
        vec![
            ("TCP_IN", vec![53]),
            ("TCP6_IN", vec![53]),
            ("UDP_IN", vec![53, 30000, 35000])
        ],
        "ranges a:b expanded; no UDP6_IN in the file"
    );
    assert!(text::open_to_all(CONF_PRODUCTION, &spec(&[], Protocol::Tcp)).is_empty());
    let why = text::restrict_problem(
        CONF_PRODUCTION,
        &restrict(&[443], Protocol::Tcp),
        "/etc/csf/csf.conf",
    )
    .unwrap();
    assert_eq!(
        why,
        "restrict: true cannot be honoured: in /etc/csf/csf.conf TCP_IN opens 443 and TCP6_IN \
         opens 443, to every source, and csf accepts them before its DROP policy; remove those \
         ports from TCP_IN and TCP6_IN and restart csf (`csf -r`), then sync again (or set \
         restrict: false)"
    );
    assert_eq!(
        text::restrict_problem(CONF_RESTRICTED, &restrict(&[80, 443], Protocol::Tcp), "c"),
        None
    );
    assert_eq!(
        text::restrict_problem(CONF_PRODUCTION, &RuleSpec::default(), "c"),
        None,
        "without restrict, only a warning"
    );
    assert_eq!(
        text::conf_ports(" 20, 21 ,30000:35000,x,9:1"),
        [(20, 20), (21, 21), (30000, 35000), (1, 9)]
    );
}

fn problem(list: text::List, line: &str) -> Option<String> {
    text::line_problem(list, line.as_bytes())
}

/// What csf accepts in csf.allow, as its `linefilter` reads it, and what it would fail on (or
/// silently skip).
#[test]
fn allow_lines_csf_can_use_are_accepted() {
    for line in [
        "",
        "   ",
        "# comment Офис",
        "   # indented comment",
        "1.2.3.4",
        "1.2.3.4 # Straße",
        "1.2.3.4\t# tab",
        "1.2.3.0/24",
        "1.2.3.4/24",
        "2001:db8::1",
        "2001:DB8::/32 # upper case",
        "::ffff:1.2.3.4",
        "127.0.0.1",
        "::1",
        "example.com # host names are ignored by csf",
        "note: a stray word with a colon, skipped by csf",
        ":",
        "Include /etc/csf/cpanel.allow",
        "1.2.3.4 # Include'd by hand: lines with Include are skipped",
        "tcp|in|d=22|s=192.0.2.10",
        "TCP|IN|D=22|S=192.0.2.10",
        "tcp|in|d=2083,2087|s=192.0.2.10",
        "udp|out|d=53|d=9.9.9.9",
        "tcp|in|d=1_65535|s=2400:cb00::/32",
        "tcp|in|d=1000:2000|s=192.0.2.0/24",
        "tcp|in|d=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15|s=192.0.2.10",
        "tcp:in:d=22:s=192.0.2.10",
        "d=22|s=192.0.2.10",
        "in|d=22|s=192.0.2.10",
        "tcp|in|s=1024_65535|s=192.0.2.10",
        "icmp|in|d=ping|s=192.0.2.10",
        "icmp|in|d=8/0|s=192.0.2.10",
        "tcp|out|d=25|u=0",
        "tcp|out|d=25|g=mail",
        "sctp|in|d=22|s=192.0.2.10",
        "tcp|in|d=22|s=192.0.2.10|extra fields are ignored by csf",
    ] {
        assert_eq!(problem(text::List::Allow, line), None, "{line:?}");
    }
}

#[test]
fn allow_lines_csf_cannot_use_are_refused_with_the_reason() {
    for (line, why) in [
        (
            "tcp|in|d=99999|s=192.0.2.10",
            "the port 99999 is out of range (1-65535)",
        ),
        ("tcp|in|d=0|s=192.0.2.10", "the port 0 is out of range"),
        (
            "tcp|in|d=22,65536|s=192.0.2.10",
            "the port 65536 is out of range",
        ),
        (
            "tcp|in|d=2000_1000|s=192.0.2.10",
            "the port range 2000:1000 runs backwards",
        ),
        ("tcp|in|d=080|s=192.0.2.10", "leading zero"),
        ("tcp|in|d=ssh|s=192.0.2.10", "\"ssh\" is not a port number"),
        ("tcp|in|d=|s=192.0.2.10", "\"\" is not a port number"),
        ("tcp|in|d=22,|s=192.0.2.10", "\"\" is not a port number"),
        (
            "tcp|in|d=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16|s=192.0.2.10",
            "at most 15",
        ),
        (
            "tcp|in|d=22|s=192.0.2.300",
            "\"192.0.2.300\" is not an IPv4 or IPv6 address",
        ),
        (
            "tcp|in|d=22|s=010.0.2.1",
            "leading zero, which iptables reads as octal",
        ),
        (
            "tcp|in|d=22|s=192.0.2.0/33",
            "/33 is out of range for IPv4 (1-32)",
        ),
        (
            "tcp|in|d=22|s=192.0.2.0/0",
            "a /0 prefix matches every address",
        ),
        ("tcp|in|d=22|s=192.0.2.0/08", "leading zero"),
        ("tcp|in|d=22|s=192.0.2.0/", "is not a prefix length"),
        (
            "tcp|in|d=22|s=2001:db8::/129",
            "out of range for IPv6 (1-128)",
        ),
        ("tcp|in|d=22|s=fe80::1%eth0", "zone index"),
        (
            "tcp:in:d=22:s=2001:db8::1",
            "is not an IPv4 or IPv6 address",
        ),
        ("tcp|in|d=22", "csf makes no rule of it"),
        ("tcp|in|s=192.0.2.10", "is not a port number"),
        ("icmp|in|d=8,0|s=192.0.2.10", "is not an ICMP type"),
        ("tcp|out|d=25|u=", "is not a user or group id"),
        ("1.2.3.4/0", "a /0 prefix matches every address"),
        ("1.2.3.4/33", "out of range for IPv4"),
        ("1.2.3.4/", "is not a prefix length"),
        ("01.2.3.4", "leading zero"),
        ("1.2.3", "is not an IPv4 or IPv6 address"),
        ("2001:db8:::1", "is not an IPv4 or IPv6 address"),
        (
            "  tcp|in|d=99999|s=192.0.2.10   # trimmed like csf",
            "99999",
        ),
    ] {
        let got = problem(text::List::Allow, line);
        assert!(
            got.as_deref().is_some_and(|g| g.contains(why)),
            "{line:?}: {got:?}, wanted {why:?}"
        );
    }
}

#[test]
fn ignore_lines_are_plain_addresses() {
    for line in [
        "127.0.0.1",
        "::1",
        "192.0.2.10 # bastion",
        "203.0.113.0/28",
        "host.example",
    ] {
        assert_eq!(problem(text::List::Ignore, line), None, "{line:?}");
    }
    for (line, why) in [
        (
            "tcp|in|d=22|s=192.0.2.10",
            "lfd reads csf.ignore as plain addresses only",
        ),
        ("192.0.2.0/33", "out of range"),
        ("192.0.2.0/0", "/0"),
        ("2001:db8::zz", "is not an IPv4 or IPv6 address"),
    ] {
        let got = problem(text::List::Ignore, line);
        assert!(
            got.as_deref().is_some_and(|g| g.contains(why)),
            "{line:?}: {got:?}"
        );
    }
}

/// csf's `slurp` splits on CR LF, CR, LF, VT, FF and the byte 0x85; an `Include` is one only at
/// the very start of the untrimmed line.
#[test]
fn lines_and_includes_as_csf_reads_them() {
    let bytes = b"a\r\nb\rc\x0bd\x0ce\nf\x85g\n\nlast";
    let lines: Vec<(usize, &[u8])> = text::csf_lines(bytes)
        .iter()
        .map(|l| (l.number, l.raw))
        .collect();
    assert_eq!(
        lines,
        [
            (1, b"a" as &[u8]),
            (2, b"b"),
            (2, b"c"),
            (2, b"d"),
            (2, b"e"),
            (3, b"f"),
            (3, b"g"),
            (4, b""),
            (5, b"last"),
        ]
    );
    // "# Å" ends in the byte 0x85: csf reads what follows as a line of its own.
    let split = "# Å1.2.3.4/0\n".as_bytes();
    let lines = text::csf_lines(split);
    assert_eq!(lines[1].raw, b"1.2.3.4/0");
    assert!(problem(text::List::Allow, "# Å1.2.3.4/0").is_none());
    assert!(text::line_problem(text::List::Allow, lines[1].raw).is_some());

    assert_eq!(
        text::include_target(b"Include /etc/csf/cpanel.allow"),
        Some(b"/etc/csf/cpanel.allow" as &[u8])
    );
    assert_eq!(
        text::include_target(b"Include\t /x "),
        Some(b"/x " as &[u8])
    );
    assert_eq!(text::include_target(b" Include /x"), None);
    assert_eq!(text::include_target(b"include /x"), None);
}

#[test]
fn rendered_lines_are_lines_csf_can_use() {
    for spec in [
        RuleSpec::default(),
        spec(&[], Protocol::Both),
        spec(&[1, 65535], Protocol::Udp),
    ] {
        for (kind, list) in [
            (Kind::Allow, text::List::Allow),
            (Kind::Ignore, text::List::Ignore),
        ] {
            let out = text::render(kind, "/etc/csf", &cloudflare(), &spec, ORIGIN);
            for line in text::csf_lines(out.as_bytes()) {
                assert_eq!(text::line_problem(list, line.raw), None, "{line:?}");
            }
        }
    }
}

/// What the backend must never do again: slice an operator's line by bytes.
#[test]
fn non_ascii_lines_are_not_ours_and_do_not_panic() {
    for line in [
        "# Офис",
        "1.2.3.4 # Straße",
        "İnclude /etc/csf/cf-allowlist.allow",
        "ééééééééé",
    ] {
        let file = format!("{line}\n");
        assert!(text::find_includes(file.as_bytes()).is_empty(), "{line}");
        assert_eq!(text::remove_includes(file.as_bytes()), file.as_bytes());
        let out = edit(file.as_bytes(), Kind::Allow);
        assert_eq!(text::remove_includes(&out), file.as_bytes());
    }
}
