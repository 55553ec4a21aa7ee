//! Property tests of every parser the binary feeds with outside input (remote lists, the API
//! answer, the configuration, CIDRs, the state file): arbitrary bytes and arbitrary Unicode never
//! panic and never yield an insane result, and what the tool renders parses back to itself.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cf_allowlist::config::{
    BackendKind, ByteSize, Config, FetchSettings, Guards, HumanDuration, IptablesSettings,
    MinEntries, NftSettings, Source, WidestPrefix,
};
use cf_allowlist::sources::{parse_api, parse_plain};
use cf_allowlist::state::{CachedList, State, STATE_FILE};
use cfa_core::cidr::special_purpose;
use cfa_core::{parse_cidr, AllowList, Family, Protocol};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

// ---------------------------------------------------------------------------------------------
// Inputs

/// Arbitrary bytes, decoded the way a lossy reader would (invalid UTF-8 becomes U+FFFD).
fn lossy_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), 0..512)
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Arbitrary Unicode (every scalar value, control characters and line separators included).
fn unicode_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..256).prop_map(|c| c.into_iter().collect())
}

/// Text made of list-like lines: real and broken CIDRs, comments, HTML, odd whitespace. Arbitrary
/// bytes rarely get past the first line; this reaches the line parser and the range checks.
fn listish_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        arb_net().prop_map(|n| n.to_string()),
        arb_net().prop_map(|n| n.addr().to_string()),
        "[0-9a-fA-F:./]{0,44}",
        "[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}/[0-9+ -]{0,4}",
        "#[^\n]{0,20}",
        Just(String::new()),
        Just("<html>".to_string()),
        Just("\u{feff}".to_string()),
        "[ \t\r\u{a0}\u{2028}\u{85}]{0,3}",
        unicode_text().prop_map(|s| s.chars().take(12).collect()),
    ];
    proptest::collection::vec(
        (
            line,
            prop_oneof![Just("\n"), Just("\r\n"), Just("\r"), Just("")],
        ),
        0..24,
    )
    .prop_map(|lines| lines.into_iter().map(|(l, end)| l + end).collect())
}

fn arb_v4() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, p)| Ipv4Net::new(Ipv4Addr::from(a), p).unwrap().trunc())
}

fn arb_v6() -> impl Strategy<Value = Ipv6Net> {
    // Half from 2000::/3 (where real ranges live), half from anywhere (mapped, reserved, ...).
    let addr = prop_oneof![
        any::<u128>(),
        any::<u128>().prop_map(|a| (a >> 3) | (1u128 << 125)),
    ];
    (addr, 0u8..=128).prop_map(|(a, p)| Ipv6Net::new(Ipv6Addr::from(a), p).unwrap().trunc())
}

fn arb_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![arb_v4().prop_map(IpNet::V4), arb_v6().prop_map(IpNet::V6)]
}

fn arb_list(max: usize) -> impl Strategy<Value = AllowList> {
    (
        proptest::collection::btree_set(arb_v4(), 0..max),
        proptest::collection::btree_set(arb_v6(), 0..max),
    )
        .prop_map(|(v4, v6)| AllowList { v4, v6 })
}

/// What a remote list may carry: no special-purpose range, IPv6 only from 2000::/3.
fn remote_ok(net: &IpNet) -> bool {
    let global: Ipv6Net = "2000::/3".parse().unwrap();
    special_purpose(net).is_none()
        && match net {
            IpNet::V4(_) => true,
            IpNet::V6(n) => global.contains(n),
        }
}

fn only_remote_ok(list: &AllowList) -> AllowList {
    list.iter().filter(remote_ok).collect()
}

// ---------------------------------------------------------------------------------------------
// Sanity of results

/// Every entry of a parsed list is canonical: its `Display` parses back to itself, no host bits.
fn assert_canonical(list: &AllowList) -> Result<(), TestCaseError> {
    for net in list.iter() {
        prop_assert_eq!(net.trunc(), net, "host bits in {}", net);
        prop_assert_eq!(parse_cidr(&net.to_string()), Ok(net));
    }
    Ok(())
}

fn check_plain(text: &str, remote: bool) -> Result<(), TestCaseError> {
    match parse_plain(text, remote) {
        Ok(list) => {
            prop_assert!(!list.is_empty(), "an Ok list is never empty: {:?}", text);
            assert_canonical(&list)?;
            if remote {
                for net in list.iter() {
                    prop_assert!(remote_ok(&net), "{} accepted from a remote list", net);
                }
            }
        }
        Err(e) => prop_assert!(!e.trim().is_empty(), "an error says why"),
    }
    Ok(())
}

fn check_api(text: &str) -> Result<(), TestCaseError> {
    match parse_api(text) {
        Ok((list, _etag)) => {
            assert_canonical(&list)?;
            for net in list.iter() {
                prop_assert!(remote_ok(&net), "{} accepted from the API", net);
            }
        }
        Err(e) => prop_assert!(!e.trim().is_empty(), "an error says why"),
    }
    Ok(())
}

/// A configuration that parsed satisfies the rules `validate` promises, and the effective
/// configuration `check-config` prints reads back the same.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    match Config::parse(text, "props.yaml") {
        Ok(c) => {
            prop_assert!(!c.sources.is_empty());
            prop_assert!(!c.families.is_empty());
            prop_assert!(!c.ports.contains(&0));
            prop_assert!(!c.restrict || !c.ports.is_empty());
            prop_assert!((0.0..=1.0).contains(&c.guards.max_removal));
            prop_assert!(c.state_dir.is_absolute() && c.lock_file.is_absolute());
            prop_assert!(!c.fetch.timeout.0.is_zero());
            // What check-config adds on top: the backends' own name checks.
            let _ = cf_allowlist::backends::check_options(&c);
            match Config::parse(&c.to_yaml(), "again.yaml") {
                Ok(again) => prop_assert_eq!(again, c),
                Err(e) => prop_assert!(false, "the effective configuration does not parse: {}", e),
            }
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(
                message.contains("props.yaml"),
                "names the file: {}",
                message
            );
        }
    }
    Ok(())
}

fn check_cidr(text: &str) -> Result<(), TestCaseError> {
    if let Ok(net) = parse_cidr(text) {
        prop_assert_eq!(net.trunc(), net);
        prop_assert_eq!(parse_cidr(&net.to_string()), Ok(net), "from {:?}", text);
    }
    Ok(())
}

/// Writes `bytes` as the state file (mode 0600, in a fresh 0700 directory) and loads it.
fn load_state_from(bytes: &[u8]) -> (State, Option<String>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STATE_FILE);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    State::load(dir.path())
}

fn check_state(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (state, warning) = load_state_from(bytes);
    let direct = std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| serde_json::from_str::<State>(t).ok());
    match (direct, warning) {
        // A file of another schema version is not used (its fields may mean something else).
        (Some(parsed), Some(w)) if parsed.schema != 1 => {
            prop_assert_eq!(state, State::default());
            prop_assert!(w.contains("schema"), "{}", w);
        }
        (Some(parsed), None) => {
            prop_assert_eq!(parsed.schema, 1, "only schema 1 is read");
            prop_assert_eq!(state, parsed)
        }
        (Some(_), Some(w)) => prop_assert!(false, "a valid state file was refused: {}", w),
        (None, Some(w)) => {
            prop_assert_eq!(state, State::default(), "a bad file serves nothing");
            prop_assert!(w.contains(STATE_FILE), "the warning names the file: {}", w);
        }
        (None, None) => prop_assert!(false, "a bad state file was read without a warning"),
    }
    Ok(())
}

/// JSON documents shaped like the API answer or the state file, with random leaves: reaches the
/// field checks that random bytes never get to.
fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        arb_net().prop_map(|n| Value::String(n.to_string())),
        "[0-9a-f:./ ]{0,20}".prop_map(Value::String),
        unicode_text().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    json_leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn apiish_text() -> impl Strategy<Value = String> {
    let cidrs = || {
        prop_oneof![
            proptest::collection::vec(
                prop_oneof![
                    3 => arb_net().prop_map(|n| serde_json::Value::String(n.to_string())),
                    1 => json_leaf(),
                ],
                0..8
            )
            .prop_map(serde_json::Value::Array),
            json_value(),
        ]
    };
    let success = prop_oneof![
        4 => Just(serde_json::Value::Bool(true)),
        1 => json_leaf(),
    ];
    (success, cidrs(), cidrs(), json_leaf(), any::<bool>()).prop_map(
        |(success, v4, v6, etag, pretty)| {
            let v = serde_json::json!({
                "success": success,
                "errors": [],
                "result": { "ipv4_cidrs": v4, "ipv6_cidrs": v6, "etag": etag },
            });
            if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                v.to_string()
            }
        },
    )
}

fn stateish_text() -> impl Strategy<Value = String> {
    let cached = (
        any::<u64>(),
        unicode_text(),
        proptest::option::of(unicode_text()),
        proptest::collection::vec(
            prop_oneof![arb_net().prop_map(|n| n.to_string()), unicode_text()],
            0..6,
        ),
        proptest::option::of(json_value()),
    )
        .prop_map(|(at, url, etag, cidrs, extra)| {
            let mut v = serde_json::json!({ "fetched_at": at, "url": url, "cidrs": cidrs });
            if let Some(etag) = etag {
                v["etag"] = etag.into();
            }
            if let Some(extra) = extra {
                v["extra"] = extra;
            }
            v
        });
    (
        prop_oneof![json_leaf(), any::<u32>().prop_map(serde_json::Value::from)],
        proptest::collection::btree_map("[a-z:/.]{1,16}", prop_oneof![cached, json_value()], 0..3),
    )
        .prop_map(|(schema, sources)| {
            serde_json::json!({ "schema": schema, "sources": sources }).to_string()
        })
}

/// YAML (as JSON, which is YAML) with the configuration's own key names at every level and random
/// values: reaches type errors, range checks and cross-field rules.
fn configish_text() -> impl Strategy<Value = String> {
    use serde_json::Value;
    const KEYS: &[&str] = &[
        "backend",
        "sources",
        "families",
        "ports",
        "protocol",
        "restrict",
        "guards",
        "min_entries",
        "widest_prefix",
        "max_removal",
        "ipv4",
        "ipv6",
        "fetch",
        "timeout",
        "retries",
        "max_bytes",
        "ca_file",
        "state_dir",
        "lock_file",
        "lock_timeout",
        "nftables",
        "table",
        "family",
        "chain",
        "iptables",
        "ipset",
        "variant",
        "ufw",
        "comment",
        "dir",
        "csf",
        "ignore",
        "reload",
        "cloudflare",
        "api_url",
        "text_urls",
        "url",
        "file",
        "cidrs",
        "unknown",
    ];
    let word = prop_oneof![
        Just("auto"),
        Just("nftables"),
        Just("tcp"),
        Just("both"),
        Just("ipv4"),
        Just("ipv6"),
        Just("cloudflare"),
        Just("10s"),
        Just("1MiB"),
        Just("/abs/path"),
        Just("relative"),
        Just("https://example.com/x"),
        Just("http://127.0.0.1:9/x"),
        Just("inet"),
        Just("CF-ALLOWLIST"),
    ]
    .prop_map(|s| Value::String(s.to_string()));
    let leaf = prop_oneof![3 => json_leaf(), 2 => word, 1 => (0u64..70_000).prop_map(Value::from)];
    let key = proptest::sample::select(KEYS);
    let value = leaf.prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..5).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    });
    // Mostly a mapping of top-level keys (as a real file is), sometimes anything at all.
    const TOP: &[&str] = &[
        "backend",
        "sources",
        "families",
        "ports",
        "protocol",
        "restrict",
        "guards",
        "fetch",
        "state_dir",
        "lock_file",
        "lock_timeout",
        "nftables",
        "iptables",
        "ufw",
        "csf",
        "unknown",
    ];
    let top = proptest::sample::select(TOP);
    prop_oneof![
        4 => proptest::collection::btree_map(top, value.clone(), 0..6).prop_map(|m| {
            Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        }),
        1 => value,
    ]
    .prop_map(|v| v.to_string())
}

// ---------------------------------------------------------------------------------------------
// No panic, sane results

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_plain_survives_arbitrary_bytes(text in lossy_text(), remote in any::<bool>()) {
        check_plain(&text, remote)?;
    }

    #[test]
    fn parse_plain_survives_arbitrary_unicode(text in unicode_text(), remote in any::<bool>()) {
        check_plain(&text, remote)?;
    }

    #[test]
    fn parse_plain_survives_list_like_text(text in listish_text(), remote in any::<bool>()) {
        check_plain(&text, remote)?;
    }

    #[test]
    fn parse_api_survives_arbitrary_bytes(text in lossy_text()) {
        check_api(&text)?;
    }

    #[test]
    fn parse_api_survives_arbitrary_unicode(text in unicode_text()) {
        check_api(&text)?;
    }

    #[test]
    fn parse_api_survives_api_like_json(text in apiish_text()) {
        check_api(&text)?;
    }

    #[test]
    fn config_parse_survives_arbitrary_bytes(text in lossy_text()) {
        check_config(&text)?;
    }

    #[test]
    fn config_parse_survives_arbitrary_unicode(text in unicode_text()) {
        check_config(&text)?;
    }

    #[test]
    fn config_parse_survives_config_like_yaml(text in configish_text()) {
        check_config(&text)?;
    }

    #[test]
    fn parse_cidr_survives_arbitrary_unicode_and_ok_round_trips(text in unicode_text()) {
        check_cidr(&text)?;
    }

    #[test]
    fn parse_cidr_survives_arbitrary_bytes_and_ok_round_trips(text in lossy_text()) {
        check_cidr(&text)?;
    }

    #[test]
    fn parse_cidr_near_misses_round_trip(
        text in prop_oneof![
            "[0-9a-fA-F:./]{0,44}",
            "[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}(/[0-9]{0,4})?",
            "::(ffff:)?[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(/[0-9]{1,3})?",
        ]
    ) {
        check_cidr(&text)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn state_load_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_state(&bytes)?;
    }

    #[test]
    fn state_load_survives_arbitrary_unicode(text in unicode_text()) {
        check_state(text.as_bytes())?;
    }

    #[test]
    fn state_load_survives_state_like_json(text in stateish_text()) {
        check_state(text.as_bytes())?;
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical forms and round trips

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The canonical text of any network parses back to the same network and the same text.
    #[test]
    fn canonical_cidr_strings_round_trip(net in arb_net()) {
        let text = net.to_string();
        let back = parse_cidr(&text);
        prop_assert_eq!(&back, &Ok(net));
        prop_assert_eq!(back.unwrap().to_string(), text);
    }

    /// A bare address is the host route; host bits are refused naming the network.
    #[test]
    fn bare_addresses_are_host_routes_and_host_bits_are_refused(
        a in any::<u32>(), b in any::<u128>(), p4 in 0u8..32, p6 in 0u8..128,
    ) {
        let v4 = Ipv4Addr::from(a);
        let v6 = Ipv6Addr::from(b);
        prop_assert_eq!(parse_cidr(&v4.to_string()).map(|n| n.prefix_len()), Ok(32));
        prop_assert_eq!(parse_cidr(&v6.to_string()).map(|n| n.prefix_len()), Ok(128));
        let n4 = Ipv4Net::new(v4, p4).unwrap();
        prop_assert_eq!(parse_cidr(&n4.to_string()).is_ok(), n4.trunc() == n4);
        let n6 = Ipv6Net::new(v6, p6).unwrap();
        prop_assert_eq!(parse_cidr(&n6.to_string()).is_ok(), n6.trunc() == n6);
    }

    /// Octets with a leading zero are refused: nft and iptables would read them as octal.
    #[test]
    fn leading_zero_octets_are_refused(octets in proptest::array::uniform4(0u8..=255), which in 0usize..4, pad in "0{1,2}") {
        let text = octets
            .iter()
            .enumerate()
            .map(|(i, o)| if i == which { format!("{pad}{o}") } else { o.to_string() })
            .collect::<Vec<_>>()
            .join(".");
        prop_assert!(parse_cidr(&text).is_err(), "{} accepted", text);
        prop_assert!(parse_cidr(&format!("{text}/32")).is_err(), "{}/32 accepted", text);
    }

    /// Any list, written as an operator or a mirror would (CRLF, comments, blank lines, a BOM,
    /// no final newline, in any order, with repeats), parses back to the same list.
    #[test]
    fn plain_lists_round_trip(
        list in arb_list(24),
        seed in proptest::collection::vec((0u8..8, "[^\n]{0,12}"), 64),
        bom in any::<bool>(),
        final_newline in any::<bool>(),
    ) {
        prop_assume!(!list.is_empty());
        let text = render_plain(&list, &seed, bom, final_newline);
        prop_assert_eq!(parse_plain(&text, false), Ok(list.clone()), "{:?}", text);
        let remote = only_remote_ok(&list);
        if !remote.is_empty() {
            let text = render_plain(&remote, &seed, bom, final_newline);
            prop_assert_eq!(parse_plain(&text, true), Ok(remote), "{:?}", text);
        }
    }

    /// Any list a remote source may carry, written as Cloudflare's API answer, parses back to the
    /// same list and etag.
    #[test]
    fn api_answers_round_trip(
        list in arb_list(24),
        etag in proptest::option::of("[ -~]{0,40}"),
        pretty in any::<bool>(),
    ) {
        let list = only_remote_ok(&list);
        prop_assume!(!list.is_empty());
        let mut result = serde_json::json!({
            "ipv4_cidrs": list.strings(Family::V4),
            "ipv6_cidrs": list.strings(Family::V6),
        });
        if let Some(etag) = &etag {
            result["etag"] = etag.clone().into();
        }
        let v = serde_json::json!({ "result": result, "success": true, "errors": [], "messages": [] });
        let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
        prop_assert_eq!(parse_api(&text), Ok((list, etag)));
    }
}

/// One line an operator might write around entry `i`: comments, blanks, indentation, CRLF.
fn render_plain(list: &AllowList, seed: &[(u8, String)], bom: bool, final_newline: bool) -> String {
    let mut entries: Vec<String> = list.iter().map(|n| n.to_string()).collect();
    // Repeats and a deterministic shuffle driven by the seed.
    let repeats: Vec<String> = entries.iter().step_by(3).cloned().collect();
    entries.extend(repeats);
    for i in (1..entries.len()).rev() {
        let j = seed[i % seed.len()].0 as usize * 7 % (i + 1);
        entries.swap(i, j);
    }
    let mut text = String::new();
    if bom {
        text.push('\u{feff}');
    }
    for (i, entry) in entries.iter().enumerate() {
        let (kind, comment) = &seed[i % seed.len()];
        let eol = if kind % 2 == 0 { "\r\n" } else { "\n" };
        match kind {
            0 => text.push_str(&format!("# {comment}{eol}")),
            1 => text.push_str(eol),
            2 => text.push_str(&format!("  \t{eol}")),
            _ => {}
        }
        let indent = if kind % 3 == 0 { "\t " } else { "" };
        let trailer = match kind {
            4 => format!(" # {comment}"),
            5 => format!("#{comment}"),
            6 => " \t".to_string(),
            _ => String::new(),
        };
        text.push_str(&format!("{indent}{entry}{trailer}"));
        if i + 1 < entries.len() || final_newline {
            text.push_str(eol);
        }
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The effective configuration reads back the same

fn abs_path() -> impl Strategy<Value = PathBuf> {
    prop_oneof![
        "(/[a-zA-Z0-9._-]{1,12}){1,4}",
        "/[a-zA-Z0-9 ._:#@&*!%|>'\"-]{0,24}",
    ]
    .prop_map(PathBuf::from)
}

/// A name nft and iptables accept, avoiding iptables' built-in chain names.
fn object_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z][a-zA-Z0-9_-]{0,27}",
        // Names a YAML emitter must quote to keep them strings.
        proptest::sample::select(vec![
            "true", "false", "null", "yes", "no", "on", "off", "Null", "NULL", "nan", "inf", "123",
            "0x1F", "0o17", "1e5", "1_000", "12-34",
        ])
        .prop_map(String::from),
    ]
    .prop_filter("built-in chain", |n| {
        !["INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"].contains(&n.as_str())
    })
}

fn url() -> impl Strategy<Value = String> {
    prop_oneof![
        "https://[a-z]{1,10}(\\.[a-z]{2,5}){1,2}(/[a-zA-Z0-9._~-]{0,10}){0,3}",
        "http://127\\.0\\.0\\.1:[1-9][0-9]{0,3}(/[a-z0-9]{0,8}){0,3}",
        "http://localhost(:[1-9][0-9]{0,3})?/[a-z0-9-]{0,8}",
        "http://\\[::1\\]:[1-9][0-9]{0,3}/[a-z0-9-]{0,8}",
    ]
}

fn arb_source() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::cloudflare()),
        (url(), proptest::collection::vec(url(), 0..=2))
            .prop_map(|(api_url, text_urls)| Source::Cloudflare { api_url, text_urls }),
        url().prop_map(Source::Url),
        abs_path().prop_map(Source::File),
        proptest::collection::vec(arb_net().prop_map(|n| n.to_string()), 1..6)
            .prop_map(Source::Cidrs),
    ]
}

fn duration_ms(range: std::ops::RangeInclusive<u64>) -> impl Strategy<Value = HumanDuration> {
    prop_oneof![
        range
            .clone()
            .prop_map(|ms| HumanDuration(Duration::from_millis(ms))),
        // Whole seconds, minutes and hours, which render with their unit.
        (
            1u64..10_000,
            proptest::sample::select(vec![1_000u64, 60_000, 3_600_000])
        )
            .prop_map(|(n, unit)| HumanDuration(Duration::from_millis(n * unit)))
            .prop_filter("in range", move |d| range
                .contains(&(d.0.as_millis() as u64))),
    ]
}

// `..Default` has no effect today; it keeps a field added later at its default.
#[allow(clippy::needless_update)]
fn arb_guards() -> impl Strategy<Value = Guards> {
    (
        any::<usize>(),
        0usize..50,
        8u8..=32,
        16u8..=128,
        prop_oneof![
            Just(0.0f64),
            Just(1.0),
            Just(0.5),
            Just(f64::MIN_POSITIVE),
            0.0f64..=1.0
        ],
    )
        .prop_map(|(v4, v6, w4, w6, max_removal)| {
            // Over the defaults: a key added later keeps its default here.
            Guards {
                min_entries: MinEntries { ipv4: v4, ipv6: v6 },
                widest_prefix: WidestPrefix { ipv4: w4, ipv6: w6 },
                max_removal,
                ..Guards::default()
            }
        })
}

// `..Default` has no effect today; it keeps a field added later at its default.
#[allow(clippy::needless_update)]
fn arb_fetch() -> impl Strategy<Value = FetchSettings> {
    (
        duration_ms(1..=u32::MAX as u64),
        0u32..=10,
        prop_oneof![1024u64..=1 << 40, (1u64..4096).prop_map(|n| n << 20)],
        proptest::option::of(abs_path()),
    )
        .prop_map(|(timeout, retries, max_bytes, ca_file)| FetchSettings {
            timeout,
            retries,
            max_bytes: ByteSize(max_bytes),
            ca_file,
            ..FetchSettings::default()
        })
}

// `..Default` has no effect today; it keeps a field added later at its default.
#[allow(clippy::needless_update)]
fn arb_nftables() -> impl Strategy<Value = NftSettings> {
    prop_oneof![
        Just(NftSettings::default()),
        // Existing-table mode: the operator's table and chain.
        (object_name(), object_name()).prop_map(|(table, chain)| {
            NftSettings {
                table,
                family: "inet".into(),
                chain: Some(chain),
                ..NftSettings::default()
            }
        }),
    ]
}

/// The iptables settings, the enums spelled as an operator writes them (their Rust types belong
/// to the backend crate).
fn arb_iptables() -> impl Strategy<Value = IptablesSettings> {
    (
        object_name(),
        proptest::sample::select(vec!["auto", "always", "never"]),
        proptest::sample::select(vec!["auto", "nft", "legacy"]),
    )
        .prop_map(|(chain, ipset, variant)| {
            let yaml = format!("iptables: {{ ipset: {ipset}, variant: {variant} }}\n");
            let mut settings = Config::parse(&yaml, "iptables.yaml")
                .expect("valid iptables settings")
                .iptables;
            settings.chain = chain;
            settings
        })
}

/// Free text that must survive the emitter: no quotes or newlines (the rules for ufw comments).
fn free_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ._:#@&*!%|>,\\[\\]{}?~`=+-]{1,24}",
        proptest::sample::select(vec![
            "yes", "~", "null", "- x", "#", ": x", "*a", "&a", "!t", "%x", "@x", " lead", "trail ",
            "0.5", "-1", "0o7", "{}", "[]", "? x", "--- x", "...",
        ])
        .prop_map(String::from),
    ]
}

fn arb_config() -> impl Strategy<Value = Config> {
    let core = (
        proptest::sample::select(vec![
            BackendKind::Auto,
            BackendKind::Nftables,
            BackendKind::Iptables,
            BackendKind::Ufw,
            BackendKind::Csf,
            BackendKind::Firewalld,
        ]),
        proptest::collection::vec(arb_source(), 1..5),
        proptest::collection::vec(proptest::sample::select(Family::ALL.to_vec()), 1..4),
        proptest::collection::vec(1u16..=u16::MAX, 0..6),
        proptest::sample::select(vec![Protocol::Tcp, Protocol::Udp, Protocol::Both]),
        any::<bool>(),
        arb_guards(),
    );
    let rest = (
        arb_fetch(),
        abs_path(),
        abs_path(),
        duration_ms(0..=u32::MAX as u64),
        arb_nftables(),
        arb_iptables(),
        (free_text(), abs_path()),
        (
            abs_path(),
            any::<bool>(),
            // The command itself must be named (validation refuses a blank one).
            proptest::collection::vec(free_text(), 1..4)
                .prop_filter("a command", |argv| !argv[0].trim().is_empty()),
        ),
    );
    (core, rest).prop_map(
        |(
            (backend, sources, families, ports, protocol, restrict, guards),
            (fetch, state_dir, lock_file, lock_timeout, nftables, ipt, ufw, csf),
        )| {
            // One source per id, as validation requires.
            let mut seen = BTreeMap::new();
            let sources: Vec<Source> = sources
                .into_iter()
                .filter(|s| seen.insert(s.id(), ()).is_none())
                .collect();
            // Over the defaults: a key added later keeps its default here.
            let mut c = Config {
                backend,
                sources,
                families,
                restrict: restrict && !ports.is_empty(),
                ports,
                protocol,
                guards,
                fetch,
                state_dir,
                lock_file,
                lock_timeout,
                nftables,
                iptables: ipt,
                ..Config::default()
            };
            (c.ufw.comment, c.ufw.dir) = ufw;
            (c.csf.dir, c.csf.ignore, c.csf.reload) = csf;
            c
        },
    )
}

/// A valid configuration's YAML with one line broken: a value replaced by a random one, the line
/// dropped, repeated, indented with a tab, or the file cut short.
fn mutated_config_text() -> impl Strategy<Value = String> {
    (
        arb_config(),
        any::<usize>(),
        0u8..5,
        json_leaf(),
        any::<usize>(),
    )
        .prop_map(|(config, at, how, leaf, cut)| {
            let yaml = config.to_yaml();
            let mut lines: Vec<String> = yaml.lines().map(String::from).collect();
            let i = at % lines.len().max(1);
            match how {
                0 => {
                    if let Some((key, _)) = lines[i].split_once(": ") {
                        lines[i] = format!("{key}: {leaf}");
                    } else {
                        lines[i] = format!("{}{leaf}", lines[i]);
                    }
                }
                1 => {
                    lines.remove(i);
                }
                2 => {
                    let line = lines[i].clone();
                    lines.insert(i, line);
                }
                3 => lines[i].insert(0, '\t'),
                _ => {
                    let text = lines.join("\n");
                    let mut end = cut % (text.len() + 1);
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    return text[..end].to_string();
                }
            }
            lines.join("\n")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// `check-config` prints `to_yaml()`; an operator may save it as the new configuration, so it
    /// must mean exactly the same configuration.
    #[test]
    fn effective_configuration_reads_back_the_same(config in arb_config()) {
        let yaml = config.to_yaml();
        match Config::parse(&yaml, "effective.yaml") {
            Ok(back) => prop_assert_eq!(back, config, "{}", yaml),
            Err(e) => prop_assert!(false, "{}\n---\n{}", e, yaml),
        }
    }

    #[test]
    fn config_parse_survives_mutated_configs(text in mutated_config_text()) {
        check_config(&text)?;
    }

    /// Any state the tool saves, it loads back the same (the file private, schema 1).
    #[test]
    fn saved_state_loads_back_the_same(
        sources in proptest::collection::btree_map(
            "[a-z:/.]{1,24}",
            (
                any::<u64>(),
                "[ -~]{0,30}",
                proptest::option::of("[ -~]{0,20}"),
                proptest::option::of(unicode_text()),
                proptest::option::of("[ -~]{0,20}"),
                proptest::collection::vec(arb_net().prop_map(|n| n.to_string()), 0..8),
            ),
            0..4,
        )
    ) {
        use std::os::unix::fs::PermissionsExt;
        let state = State {
            schema: 1,
            sources: sources
                .into_iter()
                .map(|(id, (fetched_at, url, etag, last_modified, list_etag, cidrs))| {
                    (id, CachedList { fetched_at, url, etag, last_modified, list_etag, cidrs })
                })
                .collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        state.save(&state_dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        prop_assert_eq!(mode(&state_dir), 0o700);
        prop_assert_eq!(mode(&state_dir.join(STATE_FILE)), 0o600);
        let (back, warning) = State::load(&state_dir);
        prop_assert_eq!(warning, None);
        prop_assert_eq!(back, state);
    }
}

/// Characters that would let a name inject into an `nft -f` or `iptables-restore` script.
fn injects(name: &str) -> bool {
    name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ";{}\"'#\\$`|&<>()[]*,!".contains(c))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The backends' name checks (run by check-config) never panic, and a name they accept is a
    /// plain word that cannot splice anything into a ruleset script.
    #[test]
    fn backend_name_checks_accept_only_plain_names(
        table in prop_oneof![unicode_text(), object_name(), Just("cf_allowlist".to_string())],
        family in prop_oneof![unicode_text(), proptest::sample::select(vec!["inet", "ip", "ip6", "arp", "bridge", "netdev", "inet;"]).prop_map(String::from)],
        chain in proptest::option::of(prop_oneof![unicode_text(), object_name()]),
        ipt_chain in prop_oneof![unicode_text(), object_name(), "[A-Z]{1,12}"],
    ) {
        let mut c = Config::default();
        c.nftables.table = table;
        c.nftables.family = family;
        c.nftables.chain = chain;
        c.iptables.chain = ipt_chain;
        if cf_allowlist::backends::check_options(&c).is_ok() {
            prop_assert!(!injects(&c.nftables.table), "{:?}", c.nftables.table);
            prop_assert!(!injects(&c.nftables.family), "{:?}", c.nftables.family);
            if let Some(chain) = &c.nftables.chain {
                prop_assert!(!injects(chain), "{:?}", chain);
            }
            prop_assert!(!injects(&c.iptables.chain), "{:?}", c.iptables.chain);
            prop_assert!(!c.iptables.chain.starts_with('-'), "{:?}", c.iptables.chain);
        }
    }
}

/// SPEC: "An HTML page, JSON with `success: false`, or an empty body is an error, never an empty
/// list." A plain list with no entries is refused by the parser itself; an API answer with two
/// empty arrays is not (only `min_entries` stops it later, and an operator may set it to 0).
#[test]
fn an_api_answer_without_ranges_is_an_error_never_an_empty_list() {
    let e = parse_api(r#"{"success":true,"result":{"ipv4_cidrs":[],"ipv6_cidrs":[]}}"#);
    assert!(e.is_err(), "{e:?}");
    assert!(parse_plain("# nothing\n", true).is_err());
}
