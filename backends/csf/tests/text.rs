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

#[test]
fn allow_file_for_every_port_is_plain_cidrs() {
    let out = text::render(
        Kind::Allow,
        "/etc/csf",
        &cloudflare(),
        &spec(&[], Protocol::Tcp),
        ORIGIN,
    );
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
    assert!(text::conf_warnings(CONF_PRODUCTION, &RuleSpec::default(), "c").is_empty());
    let v4_only = RuleSpec {
        families: vec![Family::V4],
        ..RuleSpec::default()
    };
    let warnings = text::conf_warnings(CONF_TESTING, &v4_only, "c");
    assert_eq!(
        warnings.len(),
        1,
        "IPv6 off is fine when IPv6 is not managed"
    );
    assert!(warnings[0].contains("TESTING"));
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
