//! Property tests: every reader takes arbitrary bytes and Unicode without panicking, and every
//! generated file reads back to what it was generated from.

use cfa_core::AllowList;
use cfa_outputs::fail2ban::{self, DropIn, Form};
use cfa_outputs::{apache, nginx, HEADER_MARK};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

fn nets() -> impl Strategy<Value = AllowList> {
    let v4 = (any::<u32>(), 0u8..=32).prop_map(|(a, p)| {
        IpNet::V4(
            Ipv4Net::new(std::net::Ipv4Addr::from(a), p)
                .unwrap()
                .trunc(),
        )
    });
    let v6 = (any::<u128>(), 0u8..=128).prop_map(|(a, p)| {
        IpNet::V6(
            Ipv6Net::new(std::net::Ipv6Addr::from(a), p)
                .unwrap()
                .trunc(),
        )
    });
    prop::collection::vec(prop_oneof![v4, v6], 0..40).prop_map(|v| v.into_iter().collect())
}

/// Python's `repr` of a string, as `fail2ban-client -d` prints it.
fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() && (c as u32) <= 0xffff => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\U{:08x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn nginx_and_apache_files_read_back(list in nets()) {
        let text = nginx::render(&list);
        prop_assert_eq!(nginx::parse(text.as_bytes()), Some((list.clone(), None)));
        let text = apache::render(&list);
        prop_assert_eq!(apache::parse(text.as_bytes()), Some((list, None)));
    }

    #[test]
    fn readers_take_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut ours = HEADER_MARK.as_bytes().to_vec();
        ours.extend_from_slice(&bytes);
        for b in [&bytes, &ours] {
            let _ = nginx::parse(b);
            let _ = apache::parse(b);
            let _ = fail2ban::parse(b);
        }
    }

    #[test]
    fn readers_take_arbitrary_unicode(text in "\\PC*", lines in prop::collection::vec("\\PC{0,40}", 0..12)) {
        let joined = format!("{HEADER_MARK}\n{}\n{text}", lines.join("\n"));
        let _ = nginx::parse(joined.as_bytes());
        let _ = apache::parse(joined.as_bytes());
        let _ = fail2ban::parse(joined.as_bytes());
        let _ = fail2ban::parse_dump(&joined);
        let _ = fail2ban::parse_status(&joined);
        let _ = fail2ban::parse_banip(&joined);
        for line in &lines {
            let _ = fail2ban::parse_py_list(line);
            let _ = fail2ban::parse_py_list(&format!("['{line}']"));
        }
    }

    #[test]
    fn a_damaged_file_is_never_read_as_current(list in nets(), junk in "[a-z_]{1,12} [a-z0-9./:]{0,20};?") {
        let text = format!("{}{junk}\n", nginx::render(&list));
        let (_, damaged) = nginx::parse(text.as_bytes()).unwrap();
        prop_assert!(damaged.is_some());
    }

    #[test]
    fn fail2ban_drop_ins_read_back(
        list in nets(),
        jails in prop::collection::btree_map("[a-z][a-z0-9_-]{0,16}", any::<bool>(), 0..8),
    ) {
        let drop_in = DropIn {
            entries: list,
            jails: jails
                .into_iter()
                .map(|(j, extends)| (j, if extends { Form::Extends } else { Form::Only }))
                .collect(),
        };
        let text = fail2ban::render(&drop_in);
        prop_assert_eq!(fail2ban::parse(text.as_bytes()), Some((drop_in, None)));
    }

    #[test]
    fn python_lists_read_back(items in prop::collection::vec("\\PC{0,20}|[\\x00-\\x7f]{0,20}", 0..8)) {
        let line = format!(
            "[{}]",
            items.iter().map(|s| py_repr(s)).collect::<Vec<_>>().join(", ")
        );
        prop_assert_eq!(fail2ban::parse_py_list(&line), Some(items));
    }
}
