//! Checking the names the configuration puts into `nft` input.
//!
//! The table, chain and family from `nftables:` are written into the `nft -f` script and passed to
//! `nft -j list table` as arguments. nft (up to 1.0.6 at least) takes no quoted table, chain or set
//! names: an identifier is its scanner's unquoted `string` token,
//! `({letter}|[_.])({letter}|{digit}|[/\-_\.])*`, and a word equal to one of its keywords is
//! scanned as that keyword instead. So a name is accepted only when nft will read it back as
//! exactly one identifier: anything else (`;`, blanks, newlines, `#`, quotes, braces, `$`, `@`)
//! could end the statement and start another, and a keyword would be a syntax error.

use crate::{NftOptions, CHAIN, TABLE, TABLE_FAMILY};

/// The table families the backend works with.
///
/// Our rules sit in a base chain on the `input` hook and match `ip saddr`/`ip6 saddr`: `inet`
/// holds both families, `ip` only IPv4, `ip6` only IPv6. `arp` tables see ARP packets, never IP;
/// `bridge` tables see frames crossing a bridge, not traffic delivered to this host's sockets on
/// other interfaces; `netdev` has no `input` hook (only per-device `ingress`/`egress`). In any of
/// those the allowlist would silently govern nothing, so they are refused.
pub const FAMILIES: [&str; 3] = ["inet", "ip", "ip6"];

/// The longest name the kernel keeps (`NFT_NAME_MAXLEN` is 256 bytes with the terminating NUL).
pub const MAX_NAME_LEN: usize = 255;

/// Every word nft's scanner turns into a keyword, in any scanner state (collected from
/// `src/scanner.l` of nftables 0.4, 0.6, 1.0.2, 1.0.6 and a newer upstream one with `destroy` and
/// `tunnel`). Sorted, for binary search.
///
/// Most of these are keywords only after a particular word (`saddr` after `ip`), but which state
/// the scanner is in where a name appears depends on the statement and the nft version; refusing
/// them all is the rule that holds everywhere, and none of them is a plausible table or chain name.
pub const KEYWORDS: &[&str] = &[
    "a-rwnd",
    "abort",
    "accept",
    "ackseq",
    "add",
    "addr",
    "ah",
    "alert",
    "all",
    "and",
    "arp",
    "asconf",
    "asconf-ack",
    "auto-merge",
    "avgpkt",
    "bridge",
    "burst",
    "bypass",
    "bytes",
    "cfi",
    "cgroup",
    "cgroupv2",
    "chain",
    "chains",
    "check",
    "checksum",
    "chunk",
    "class",
    "classid",
    "code",
    "comment",
    "comp",
    "constant",
    "continue",
    "cookie-ack",
    "cookie-echo",
    "count",
    "counter",
    "counters",
    "cpi",
    "cpu",
    "create",
    "crit",
    "csumcov",
    "ct",
    "cum-tsn-ack",
    "cwr",
    "daddr",
    "data",
    "day",
    "dccp",
    "debug",
    "define",
    "dei",
    "delete",
    "describe",
    "destroy",
    "device",
    "devices",
    "direction",
    "dnat",
    "doff",
    "dport",
    "drop",
    "dscp",
    "dst",
    "dup",
    "dynamic",
    "echo",
    "ecn",
    "ecne",
    "egress",
    "element",
    "elements",
    "emerg",
    "eol",
    "eq",
    "err",
    "error",
    "erspan",
    "esp",
    "ether",
    "event",
    "exists",
    "expectation",
    "expiration",
    "expires",
    "export",
    "exthdr",
    "fanout",
    "fastopen",
    "fib",
    "flags",
    "flow",
    "flowlabel",
    "flowtable",
    "flowtables",
    "flush",
    "forward-tsn",
    "frag",
    "frag-off",
    "fullcone",
    "fully-random",
    "fwd",
    "gateway",
    "gbp",
    "gc-interval",
    "ge",
    "geneve",
    "get",
    "goto",
    "gre",
    "gretap",
    "group",
    "gt",
    "handle",
    "hbh",
    "hdrlength",
    "heartbeat",
    "heartbeat-ack",
    "helper",
    "helpers",
    "hlen",
    "hook",
    "hooks",
    "hoplimit",
    "hour",
    "htype",
    "ibriport",
    "ibrname",
    "icmp",
    "icmpv6",
    "icmpx",
    "id",
    "igmp",
    "iif",
    "iifgroup",
    "iifname",
    "iiftype",
    "import",
    "in",
    "inc",
    "include",
    "index",
    "inet",
    "info",
    "ingress",
    "init",
    "init-ack",
    "init-tag",
    "initial-tsn",
    "insert",
    "interval",
    "ip",
    "ip6",
    "ipsec",
    "jhash",
    "json",
    "jump",
    "l3proto",
    "l4proto",
    "label",
    "last",
    "last-entry",
    "le",
    "left",
    "length",
    "level",
    "limit",
    "limits",
    "list",
    "ll",
    "log",
    "lowest-tsn",
    "lshift",
    "lsrr",
    "lt",
    "map",
    "maps",
    "mark",
    "masquerade",
    "max-delay",
    "maxseg",
    "md5sig",
    "memory",
    "meta",
    "meter",
    "meters",
    "mh",
    "microsecond",
    "millisecond",
    "minute",
    "missing",
    "mod",
    "monitor",
    "more-fragments",
    "mptcp",
    "mrt",
    "mss",
    "mtu",
    "name",
    "nanosecond",
    "ne",
    "netdev",
    "never",
    "new-cum-tsn",
    "nexthdr",
    "nexthop",
    "nfproto",
    "nftrace",
    "nh",
    "noop",
    "nop",
    "not",
    "notice",
    "notrack",
    "num",
    "num-dup-tsns",
    "num-gap-ack-blocks",
    "num-inbound-streams",
    "num-outbound-streams",
    "numgen",
    "obriport",
    "obrname",
    "offload",
    "offset",
    "oif",
    "oifgroup",
    "oifname",
    "oiftype",
    "operation",
    "opt-type",
    "option",
    "options",
    "or",
    "original",
    "osf",
    "out",
    "over",
    "packets",
    "param-problem",
    "path",
    "pcp",
    "performance",
    "persistent",
    "pkttype",
    "plen",
    "policy",
    "port",
    "position",
    "ppid",
    "prefix",
    "priority",
    "proto-dst",
    "proto-src",
    "protocol",
    "ptr",
    "ptype",
    "queue",
    "queue-threshold",
    "quota",
    "quotas",
    "ra",
    "random",
    "rate",
    "redefine",
    "redirect",
    "reject",
    "rename",
    "replace",
    "reply",
    "reqid",
    "reserved",
    "reserved2",
    "reset",
    "return",
    "right",
    "rr",
    "rshift",
    "rt",
    "rt0",
    "rt2",
    "rtclassid",
    "rule",
    "rules",
    "ruleset",
    "sack",
    "sack-perm",
    "sack-permitted",
    "sack0",
    "sack1",
    "sack2",
    "sack3",
    "saddr",
    "sctp",
    "secmark",
    "secmarks",
    "second",
    "seed",
    "seg-left",
    "seqno",
    "sequence",
    "set",
    "sets",
    "shutdown",
    "shutdown-ack",
    "shutdown-complete",
    "sid",
    "size",
    "skgid",
    "skuid",
    "snaplen",
    "snat",
    "socket",
    "spi",
    "spnum",
    "sport",
    "srh",
    "ssn",
    "ssrr",
    "state",
    "status",
    "stream",
    "subtype",
    "symhash",
    "synproxy",
    "synproxys",
    "table",
    "tables",
    "taddr",
    "tag",
    "tcp",
    "th",
    "time",
    "timeout",
    "timestamp",
    "to",
    "tos",
    "tproxy",
    "trace",
    "transparent",
    "tsecr",
    "tsn",
    "tsval",
    "ttl",
    "tunnel",
    "tunnels",
    "type",
    "typeof",
    "udp",
    "udplite",
    "undefine",
    "until",
    "update",
    "urgptr",
    "used",
    "value",
    "version",
    "vlan",
    "vm",
    "vmap",
    "vni",
    "vtag",
    "vxlan",
    "warn",
    "week",
    "wildcard",
    "window",
    "with",
    "wscale",
    "xml",
    "xor",
    "xt",
    "zone",
];

/// Whether the scanner reads `word` as a keyword rather than a name.
pub fn is_keyword(word: &str) -> bool {
    KEYWORDS.binary_search(&word).is_ok()
}

/// A value for messages: quoted and escaped (no raw newline reaches a log), cut after 80 chars.
fn shown(value: &str) -> String {
    if value.chars().count() > 80 {
        let head: String = value.chars().take(80).collect();
        format!("{head:?}...")
    } else {
        format!("{value:?}")
    }
}

/// Checks a table family: one of [`FAMILIES`]. `key` names the setting in the message.
pub fn validate_family(key: &str, family: &str) -> Result<(), String> {
    if FAMILIES.contains(&family) {
        return Ok(());
    }
    Err(format!(
        "{key}: {} is not a table family this backend can use: use inet, ip or ip6 \
         (arp, bridge and netdev tables never see the IP traffic delivered to this host's input hook)",
        shown(family)
    ))
}

/// Checks a table or chain name (`key` names the setting in the message): 1 to
/// [`MAX_NAME_LEN`] bytes, a letter or `_` first, then letters, digits, `_`, `.`, `/` or `-`, and
/// not an nft keyword ([`KEYWORDS`]). Such a name is always one nft token, never an option (no
/// leading `-`), and cannot end the statement it is written in.
pub fn validate_name(key: &str, name: &str) -> Result<(), String> {
    let rule = "a name nft reads unquoted: a letter or '_' first, then letters, digits, '_', '.', '/' or '-'";
    let Some(first) = name.chars().next() else {
        return Err(format!("{key}: the name is empty; it must be {rule}"));
    };
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{key}: {} is {} bytes long; the kernel keeps at most {MAX_NAME_LEN}",
            shown(name),
            name.len()
        ));
    }
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err(format!(
            "{key}: {} starts with {first:?}; it must be {rule}",
            shown(name)
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')))
    {
        return Err(format!(
            "{key}: {} contains {bad:?}; it must be {rule}",
            shown(name)
        ));
    }
    if is_keyword(name) {
        return Err(format!(
            "{key}: {} is an nft keyword, which nft does not accept as a name (nor quoted); rename it",
            shown(name)
        ));
    }
    Ok(())
}

/// Checks the whole `nftables:` setting, as the configuration check and [`crate::NftablesBackend::new`]
/// do: the family, the table and chain names (see [`validate_name`]), and the mode.
///
/// - Without a chain the backend uses its own table, which is always `inet cf_allowlist`: another
///   table needs its chain named (`nftables.chain`).
/// - With a chain the table is an operator's, so it may not be `cf_allowlist`: that name belongs to
///   our own table, which sync rebuilds and purge deletes whole, and whose chain is always `input`.
///
/// The message names the setting and the value refused.
pub fn validate_options(opts: &NftOptions) -> Result<(), String> {
    validate_family("nftables.family", &opts.family)?;
    validate_name("nftables.table", &opts.table)?;
    match &opts.chain {
        None => {
            if opts.table != TABLE {
                return Err(format!(
                    "nftables.table: {} is not our own table ({TABLE}); to keep the allowlist in a table \
                     of yours, also name its chain (nftables.chain), or remove nftables.table",
                    shown(&opts.table)
                ));
            }
            if opts.family != TABLE_FAMILY {
                return Err(format!(
                    "nftables.family: {} is not the family of our own table, which is always \
                     {TABLE_FAMILY} {TABLE}; remove nftables.family, or name a table of yours and its \
                     chain (nftables.table, nftables.chain)",
                    shown(&opts.family)
                ));
            }
        }
        Some(chain) => {
            validate_name("nftables.chain", chain)?;
            if opts.table == TABLE {
                return Err(format!(
                    "nftables.chain: {} is set, but table {TABLE} is our own table (its chain is always \
                     {CHAIN}, and sync rebuilds it whole); remove nftables.chain to use our own table, \
                     or name a table of yours in nftables.table",
                    shown(chain)
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opts(family: &str, table: &str, chain: Option<&str>) -> NftOptions {
        NftOptions {
            family: family.into(),
            table: table.into(),
            chain: chain.map(String::from),
        }
    }

    #[test]
    fn the_keyword_list_is_sorted_and_has_no_duplicates() {
        assert!(KEYWORDS.windows(2).all(|w| w[0] < w[1]));
        for word in [
            "accept", "ip", "ip6", "inet", "table", "flush", "ruleset", "saddr", "tcp",
        ] {
            assert!(is_keyword(word), "{word}");
        }
    }

    #[test]
    fn the_injection_examples_are_refused_naming_key_and_value() {
        let chain =
            "input meta mark 7 drop; delete table inet victim; insert rule inet opfilter input";
        let err = validate_options(&opts("inet", "opfilter", Some(chain))).unwrap_err();
        assert!(err.starts_with("nftables.chain: "), "{err}");
        assert!(
            err.contains("\"input meta mark 7 drop; delete table"),
            "{err}"
        );
        assert!(err.contains("' '"), "names the character: {err}");

        let err =
            validate_options(&opts("inet; flush ruleset", "filter", Some("input"))).unwrap_err();
        assert!(err.starts_with("nftables.family: "), "{err}");
        assert!(err.contains("\"inet; flush ruleset\""), "{err}");

        let err =
            validate_options(&opts("inet", "filter\nflush ruleset", Some("input"))).unwrap_err();
        assert!(err.starts_with("nftables.table: "), "{err}");
        assert!(
            err.contains(r#""filter\nflush ruleset""#),
            "escaped, one line: {err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn families_outside_inet_ip_ip6_are_refused() {
        for family in ["arp", "bridge", "netdev", "INET", "", "inet ", "ip4"] {
            let err = validate_options(&opts(family, "filter", Some("input"))).unwrap_err();
            assert!(err.starts_with("nftables.family: "), "{family:?}: {err}");
        }
        for family in FAMILIES {
            validate_options(&opts(family, "filter", Some("input"))).unwrap();
        }
    }

    #[test]
    fn plain_names_pass_and_others_are_refused() {
        for name in [
            "filter",
            "input",
            "INPUT",
            "web",
            "_x",
            "a.b/c-d",
            "f2b-table",
            "nat",
        ] {
            validate_name("nftables.chain", name).unwrap();
        }
        for (name, why) in [
            ("", "empty"),
            ("accept", "keyword"),
            ("ip", "keyword"),
            ("-a", "starts with '-'"),
            (".x", "starts with '.'"),
            ("1filter", "starts with '1'"),
            ("a b", "contains ' '"),
            ("a\"b", "contains '\"'"),
            ("a;b", "contains ';'"),
            ("a#b", "contains '#'"),
            ("a{b", "contains '{'"),
            ("a$b", "contains '$'"),
            ("a@b", "contains '@'"),
            ("a\\b", "contains '\\\\'"),
            ("filtér", "contains 'é'"),
        ] {
            let err = validate_name("nftables.chain", name).unwrap_err();
            assert!(err.starts_with("nftables.chain: "), "{name:?}: {err}");
            assert!(err.contains(why), "{name:?} ({why}): {err}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(validate_name("nftables.table", &long)
            .unwrap_err()
            .contains("256 bytes"));
        validate_name("nftables.table", &long[1..]).unwrap();
    }

    #[test]
    fn own_table_and_operator_table_modes() {
        validate_options(&NftOptions::default()).unwrap();
        let err = validate_options(&opts("inet", "filter", None)).unwrap_err();
        assert!(
            err.starts_with("nftables.table: ") && err.contains("nftables.chain"),
            "a table of theirs needs the chain: {err}"
        );
        let err = validate_options(&opts("ip", TABLE, None)).unwrap_err();
        assert!(err.starts_with("nftables.family: "), "{err}");
        let err = validate_options(&opts("inet", TABLE, Some("input"))).unwrap_err();
        assert!(
            err.starts_with("nftables.chain: "),
            "our own table takes no chain: {err}"
        );
        let err = validate_options(&opts("ip", TABLE, Some("INPUT"))).unwrap_err();
        assert!(err.starts_with("nftables.chain: "), "{err}");
        validate_options(&opts("ip", "filter", Some("INPUT"))).unwrap();
    }

    /// A character that could end a name, a statement or a quoted string in nft input.
    fn breaks_out(c: char) -> bool {
        c.is_whitespace() || c.is_control() || ";\"'#{}$@\\`,:|&<>()[]=!*".contains(c)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn accepted_names_hold_only_name_characters(name in any::<String>()) {
            if validate_name("nftables.table", &name).is_ok() {
                prop_assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN);
                prop_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c)), "{:?}", name);
                prop_assert!(!is_keyword(&name));
            }
        }

        #[test]
        fn a_name_with_a_breaking_character_is_refused(
            head in "[a-zA-Z_][a-zA-Z0-9_./-]{0,8}",
            bad in any::<char>().prop_filter("breaks out", |c| breaks_out(*c)),
            tail in any::<String>(),
        ) {
            let name = format!("{head}{bad}{tail}");
            for key in ["nftables.table", "nftables.chain"] {
                let err = validate_name(key, &name);
                prop_assert!(err.is_err(), "{:?} accepted", name);
            }
            prop_assert!(validate_options(&opts("inet", "filter", Some(&name))).is_err());
            prop_assert!(validate_options(&opts("inet", &name, Some("input"))).is_err());
            prop_assert!(validate_options(&opts(&name, "filter", Some("input"))).is_err());
        }

        #[test]
        fn names_of_name_characters_pass_unless_keywords(name in "[a-zA-Z_][a-zA-Z0-9_./-]{0,40}") {
            prop_assert_eq!(validate_name("nftables.chain", &name).is_ok(), !is_keyword(&name));
        }
    }
}
