//! What our objects should look like, how the live table compares, and the `nft -f` transactions.

use std::fmt::Write;

use cfa_core::{AllowList, Family, Live, Protocol, Structure, RULE_COMMENT};

use crate::parse::NftTable;
use crate::{Layout, CHAIN_PRIORITY};

/// One rule we own: its `nft` text (without the comment) and the signature `nft -j` will report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleText {
    pub(crate) text: String,
    pub(crate) signature: String,
    /// A restrict rule (`!= @set drop`), as opposed to an accept.
    pub(crate) drop: bool,
}

fn saddr(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

pub(crate) fn set_type(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

/// The rules we own, in order: an accept per family, then (restrict) a drop per family.
pub(crate) fn rules(layout: &Layout) -> Vec<RuleText> {
    let spec = &layout.spec;
    let ports: Vec<String> = spec.ports.iter().map(u16::to_string).collect();
    let ports_text = match ports.len() {
        0 => None,
        1 => Some(ports[0].clone()),
        _ => Some(format!("{{ {} }}", ports.join(", "))),
    };
    let mut sorted = ports.clone();
    sorted.sort();
    let ports_sig = match sorted.len() {
        0 => None,
        1 => Some(sorted[0].clone()),
        _ => Some(format!("{{{}}}", sorted.join(","))),
    };
    // nft prints `meta l4proto tcp th dport X` back as `tcp dport X`; we write it that way.
    let (proto_text, proto_sig) = match (spec.protocol, &ports_text, &ports_sig) {
        (Protocol::Both, Some(pt), Some(ps)) => (
            format!("meta l4proto {{ tcp, udp }} th dport {pt}"),
            format!("meta l4proto == {{tcp,udp}} ; th dport == {ps}"),
        ),
        (Protocol::Both, _, _) => (
            "meta l4proto { tcp, udp }".into(),
            "meta l4proto == {tcp,udp}".into(),
        ),
        (p, Some(pt), Some(ps)) => {
            let name = p.name();
            (
                format!("{name} dport {pt}"),
                format!("{name} dport == {ps}"),
            )
        }
        (p, _, _) => (
            format!("meta l4proto {}", p.name()),
            format!("meta l4proto == {}", p.name()),
        ),
    };
    let mut out = Vec::new();
    for (negate, verdict) in [(false, "accept"), (true, "drop")] {
        if negate && !spec.restrict {
            continue;
        }
        for &family in &layout.families {
            let set = layout.set_name(family);
            let (op_text, op_sig) = if negate { ("!= ", "!=") } else { ("", "==") };
            out.push(RuleText {
                drop: negate,
                text: format!(
                    "{proto_text} {} saddr {op_text}@{set} {verdict}",
                    saddr(family)
                ),
                signature: format!(
                    "{proto_sig} ; {} saddr {op_sig} @{set} ; {verdict}",
                    saddr(family)
                ),
            });
        }
    }
    out
}

/// Compares the live table with what `layout` wants: our entries, and whether the structure is right.
pub(crate) fn inspect(layout: &Layout, table: &NftTable) -> Live {
    let mut entries = AllowList::new();
    let mut problems: Vec<String> = Vec::new();
    for family in Family::ALL {
        let name = layout.set_name(family);
        let wanted = layout.families.contains(&family);
        match table.sets.get(name) {
            Some(set) => {
                if !wanted {
                    problems.push(format!("set {name} exists but {family} is not managed"));
                    continue;
                }
                if set.kind != set_type(family) || !set.flags.iter().any(|f| f == "interval") {
                    problems.push(format!(
                        "set {name} is not an interval set of {}",
                        set_type(family)
                    ));
                }
                if !set.other.is_empty() {
                    problems.push(format!(
                        "set {name} holds elements we do not write: {}",
                        set.other.join(", ")
                    ));
                }
                for net in &set.nets {
                    if Family::of(net) == family {
                        entries.insert(*net);
                    }
                }
            }
            None if wanted => problems.push(format!("set {name} is missing")),
            None => {}
        }
    }
    let expected: Vec<String> = rules(layout).into_iter().map(|r| r.signature).collect();
    match table.chains.get(&layout.chain) {
        None => problems.push(format!("chain {} is missing", layout.chain)),
        Some(chain) if layout.owned => {
            let base = format!("filter hook input prio {CHAIN_PRIORITY} policy accept");
            if chain.base != base {
                problems.push(format!(
                    "chain {} is `{}`, not `{base}`",
                    layout.chain, chain.base
                ));
            }
            let live: Vec<&str> = chain.rules.iter().map(|r| r.signature.as_str()).collect();
            if live != expected {
                problems.push(format!(
                    "chain {} does not hold the rules for this configuration",
                    layout.chain
                ));
            }
        }
        Some(chain) => {
            // In an operator's chain our rules are the tagged ones, and they must come first.
            let ours: Vec<(usize, &str)> = chain
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.comment.as_deref() == Some(RULE_COMMENT))
                .map(|(i, r)| (i, r.signature.as_str()))
                .collect();
            let sigs: Vec<&str> = ours.iter().map(|(_, s)| *s).collect();
            if sigs != expected {
                problems.push(format!(
                    "our rules in chain {} do not match this configuration",
                    layout.chain
                ));
            } else if ours.iter().enumerate().any(|(i, (pos, _))| i != *pos) {
                problems.push(format!(
                    "our rules are not at the top of chain {}",
                    layout.chain
                ));
            }
        }
    }
    if layout.owned {
        let extra: Vec<&String> = table
            .sets
            .keys()
            .filter(|n| {
                !Family::ALL
                    .iter()
                    .any(|f| layout.set_name(*f) == n.as_str())
            })
            .chain(table.chains.keys().filter(|n| **n != layout.chain))
            .collect();
        if !extra.is_empty() {
            problems.push(format!("table holds objects we did not create: {extra:?}"));
        }
    }
    let nothing_of_ours = entries.is_empty()
        && Family::ALL
            .iter()
            .all(|f| !table.sets.contains_key(layout.set_name(*f)))
        && (!layout.owned || table.chains.is_empty())
        && (layout.owned
            || table.chains.get(&layout.chain).is_none_or(|c| {
                c.rules
                    .iter()
                    .all(|r| r.comment.as_deref() != Some(RULE_COMMENT))
            }));
    let structure = Structure::judge(layout.owned || !nothing_of_ours, &problems);
    Live {
        entries,
        structure,
        warnings: Vec::new(),
    }
}

fn elements(list: &AllowList, family: Family) -> String {
    list.strings(family).join(", ")
}

/// The longest comment nft takes (`NFTNL_UDATA_COMMENT_MAXLEN`).
pub(crate) const MAX_COMMENT_LEN: usize = 128;

/// `text` as an nft quoted string: the one way any text of ours goes into a script.
///
/// nft's quoted string is `"[^"]*"` with no escapes, so the only way out of it is a `"`; a `\`
/// or a control character (newline) inside is refused or misread by some versions. Those become
/// `_`, and the text is cut at [`MAX_COMMENT_LEN`] bytes (on a character boundary), so whatever
/// `text` holds, the result is one token and nft accepts its length.
pub(crate) fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    let mut len = 0;
    for c in text.chars() {
        let c = if c == '"' || c == '\\' || c.is_control() {
            '_'
        } else {
            c
        };
        len += c.len_utf8();
        if len > MAX_COMMENT_LEN {
            break;
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A first sync of our own table in stages, each of which opens and closes nothing compared with
/// having no table: (1) this script builds the table with empty sets and only the accept rules
/// (they match nobody yet); (2) the elements go in over netlink (now Cloudflare is accepted by us,
/// nobody is dropped by us); (3) [`drop_rules_script`] appends the restrict rules, if any. nft
/// then parses no elements at all: with 60,000 ranges that was most of a first sync's time
/// (~0.3 s) and memory (~50 MB).
pub(crate) fn staged_table_script(layout: &Layout) -> String {
    let accepts: Vec<RuleText> = rules(layout).into_iter().filter(|r| !r.drop).collect();
    own_table_script(layout, &AllowList::new(), &accepts)
}

/// Stage 3 of [`staged_table_script`]: the restrict rules appended after the accepts; `None`
/// without restrict.
pub(crate) fn drop_rules_script(layout: &Layout) -> Option<String> {
    let t = layout.table_ref();
    let comment = quoted(RULE_COMMENT);
    let mut s = String::new();
    for rule in rules(layout).into_iter().filter(|r| r.drop) {
        let _ = writeln!(
            s,
            "add rule {t} {} {} comment {comment}",
            layout.chain, rule.text
        );
    }
    (!s.is_empty()).then_some(s)
}

/// Our own table holding `after`, with `rules`, replacing whatever table of that name exists, in one
/// transaction.
fn own_table_script(layout: &Layout, after: &AllowList, rules: &[RuleText]) -> String {
    let t = layout.table_ref();
    let comment = quoted(RULE_COMMENT);
    let mut s = String::new();
    // Replace the whole table in one transaction: `add` makes the `delete` safe when it is absent.
    let _ = writeln!(s, "add table {t}");
    let _ = writeln!(s, "delete table {t}");
    let _ = writeln!(s, "table {t} {{");
    for family in &layout.families {
        let _ = writeln!(s, "\tset {} {{", layout.set_name(*family));
        let _ = writeln!(s, "\t\ttype {}", set_type(*family));
        let _ = writeln!(s, "\t\tflags interval");
        if after.len_of(*family) > 0 {
            let _ = writeln!(s, "\t\telements = {{ {} }}", elements(after, *family));
        }
        let _ = writeln!(s, "\t}}");
    }
    let _ = writeln!(s, "\tchain {} {{", layout.chain);
    let _ = writeln!(
        s,
        "\t\ttype filter hook input priority filter - {}; policy accept;",
        -CHAIN_PRIORITY
    );
    for rule in rules {
        let _ = writeln!(s, "\t\t{} comment {comment}", rule.text);
    }
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
    s
}

/// The transaction that builds (or rebuilds) our objects holding `after`: the whole table when it
/// is ours, our sets and tagged rules in an operator's table. Element changes alone do not go
/// through nft (see the crate documentation).
pub(crate) fn rebuild_script(layout: &Layout, after: &AllowList, live: &NftTable) -> String {
    // Only the layout's families are written: `elements` is asked for those alone.
    let t = layout.table_ref();
    let comment = quoted(RULE_COMMENT);
    let mut s = String::new();
    if layout.owned {
        return own_table_script(layout, after, &rules(layout));
    }
    // An operator's table: remove our tagged rules, (re)fill our sets, insert our rules at the top.
    let chain = &layout.chain;
    if let Some(c) = live.chains.get(chain) {
        for r in c
            .rules
            .iter()
            .filter(|r| r.comment.as_deref() == Some(RULE_COMMENT))
        {
            let _ = writeln!(s, "delete rule {t} {chain} handle {}", r.handle);
        }
    }
    for family in Family::ALL {
        let set = layout.set_name(family);
        if layout.families.contains(&family) {
            let _ = writeln!(
                s,
                "add set {t} {set} {{ type {}; flags interval; }}",
                set_type(family)
            );
            let _ = writeln!(s, "flush set {t} {set}");
            if after.len_of(family) > 0 {
                let _ = writeln!(s, "add element {t} {set} {{ {} }}", elements(after, family));
            }
        } else if live.sets.contains_key(set) {
            let _ = writeln!(s, "delete set {t} {set}");
        }
    }
    // `insert` puts a rule first: insert in reverse to keep our order.
    for rule in rules(layout).iter().rev() {
        let _ = writeln!(s, "insert rule {t} {chain} {} comment {comment}", rule.text);
    }
    s
}

/// The transaction that removes everything of ours; `None` when nothing is there.
pub(crate) fn purge_script(layout: &Layout, live: &NftTable) -> Option<String> {
    let t = layout.table_ref();
    if layout.owned {
        return Some(format!("delete table {t}\n"));
    }
    let mut s = String::new();
    if let Some(c) = live.chains.get(&layout.chain) {
        for r in c
            .rules
            .iter()
            .filter(|r| r.comment.as_deref() == Some(RULE_COMMENT))
        {
            let _ = writeln!(s, "delete rule {t} {} handle {}", layout.chain, r.handle);
        }
    }
    for family in Family::ALL {
        let set = layout.set_name(family);
        if live.sets.contains_key(set) {
            let _ = writeln!(s, "delete set {t} {set}");
        }
    }
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cfa_core::{Plan, RuleSpec};

    fn layout(spec: RuleSpec, owned: bool) -> Layout {
        Layout {
            family: "inet".into(),
            table: if owned {
                "cf_allowlist".into()
            } else {
                "filter".into()
            },
            chain: "input".into(),
            owned,
            families: spec.families.clone(),
            spec,
        }
    }

    fn list(items: &[&str]) -> AllowList {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn cloudflare() -> AllowList {
        cfa_core::snapshot::cloudflare()
    }

    #[test]
    fn first_sync_builds_the_whole_table() {
        let l = layout(RuleSpec::default(), true);
        let plan = Plan::new(&Live::absent(), &cloudflare()).unwrap();
        insta::assert_snapshot!(rebuild_script(&l, &plan.after, &NftTable::default()));
    }

    #[test]
    fn restrict_both_protocols_one_port() {
        let spec = RuleSpec {
            ports: vec![443],
            protocol: Protocol::Both,
            restrict: true,
            ..RuleSpec::default()
        };
        let plan = Plan::new(&Live::absent(), &list(&["173.245.48.0/20"])).unwrap();
        insta::assert_snapshot!(rebuild_script(
            &layout(spec, true),
            &plan.after,
            &NftTable::default()
        ));
    }

    #[test]
    fn a_staged_first_sync_builds_no_elements_and_appends_the_drops_last() {
        let spec = RuleSpec {
            ports: vec![443],
            restrict: true,
            ..RuleSpec::default()
        };
        let l = layout(spec, true);
        let table = staged_table_script(&l);
        assert!(!table.contains("elements"), "{table}");
        assert!(!table.contains("drop"), "{table}");
        assert!(table.contains("ip saddr @allow_v4 accept"), "{table}");
        insta::assert_snapshot!(drop_rules_script(&l).unwrap(), @r#"
        add rule inet cf_allowlist input tcp dport 443 ip saddr != @allow_v4 drop comment "cf-allowlist"
        add rule inet cf_allowlist input tcp dport 443 ip6 saddr != @allow_v6 drop comment "cf-allowlist"
        "#);
        // Stages 1 and 3 together are the whole table's rules, in its order.
        let whole = rebuild_script(&l, &AllowList::new(), &NftTable::default());
        let drops = drop_rules_script(&l).unwrap();
        let mut rules: Vec<&str> = table.lines().filter(|x| x.contains("saddr")).collect();
        let added: Vec<String> = drops
            .lines()
            .map(|x| {
                x.trim_start_matches("add rule inet cf_allowlist input ")
                    .to_string()
            })
            .collect();
        rules.extend(added.iter().map(|x| x.as_str()));
        let expected: Vec<&str> = whole.lines().filter(|x| x.contains("saddr")).collect();
        let trimmed: Vec<&str> = rules.iter().map(|x| x.trim()).collect();
        let expected: Vec<&str> = expected.iter().map(|x| x.trim()).collect();
        assert_eq!(trimmed, expected);
        assert!(drop_rules_script(&layout(RuleSpec::default(), true)).is_none());
    }

    #[test]
    fn text_goes_into_a_script_as_one_quoted_string() {
        assert_eq!(quoted(RULE_COMMENT), "\"cf-allowlist\"");
        assert_eq!(
            quoted("a\"; flush ruleset; #\n"),
            "\"a_; flush ruleset; #_\""
        );
        assert_eq!(quoted("back\\slash\r\t"), "\"back_slash__\"");
        let long = "é".repeat(100);
        let q = quoted(&long);
        assert_eq!(q.len(), 2 + MAX_COMMENT_LEN, "cut at a character boundary");
    }

    #[test]
    fn existing_table_rebuild_touches_only_tagged_rules() {
        let json = include_str!("../tests/fixtures/existing-table.json");
        let live = crate::parse_table(json, "filter").unwrap();
        let l = layout(RuleSpec::default(), false);
        let plan = Plan::new(&Live::absent(), &cloudflare()).unwrap();
        insta::assert_snapshot!(rebuild_script(&l, &plan.after, &live));
        insta::assert_snapshot!(purge_script(&l, &live).unwrap());
    }

    #[test]
    fn captured_own_table_is_current_for_its_configuration() {
        let json = include_str!("../tests/fixtures/own-table.json");
        let live = crate::parse_table(json, "cf_allowlist").unwrap();
        let got = inspect(&layout(RuleSpec::default(), true), &live);
        assert_eq!(got.structure, Structure::Current);
        assert_eq!(got.entries, cloudflare());
        let other = RuleSpec {
            ports: vec![443],
            ..RuleSpec::default()
        };
        assert!(matches!(
            inspect(&layout(other, true), &live).structure,
            Structure::Outdated(_)
        ));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::parse::{NftChain, NftRule, NftSet};
    use crate::{validate_options, NftOptions};
    use cfa_core::{Plan, RuleSpec};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn quoted_text_cannot_leave_its_string(text in any::<String>()) {
            let q = quoted(&text);
            prop_assert!(q.len() >= 2 && q.len() <= MAX_COMMENT_LEN + 2);
            prop_assert!(q.starts_with('"') && q.ends_with('"'));
            let inner = &q[1..q.len() - 1];
            prop_assert!(!inner.contains(['"', '\\']), "{:?}", q);
            prop_assert!(!inner.chars().any(char::is_control), "{:?}", q);
        }

        /// Whatever strings the configuration holds: either the validator refuses them, or every
        /// line of the generated scripts is exactly one of the statements we mean, naming the
        /// configured family, table and chain as single words.
        #[test]
        fn configured_strings_never_add_a_statement(
            family in prop_oneof![Just("inet".to_string()), Just("ip".to_string()), Just("ip6".to_string()), any::<String>()],
            table in prop_oneof!["[a-zA-Z_][a-zA-Z0-9_./-]{0,12}", "[a-z]{1,6}[ ;#\"{}\n\r\t$@][ -~]{0,20}", any::<String>()],
            chain in prop_oneof!["[a-zA-Z_][a-zA-Z0-9_./-]{0,12}", "[a-z]{1,6}[ ;#\"{}\n\r\t$@][ -~]{0,20}", any::<String>()],
            tagged in proptest::collection::vec(any::<u64>(), 0..3),
            stale_v6 in any::<bool>(),
        ) {
            let opts = NftOptions { family: family.clone(), table: table.clone(), chain: Some(chain.clone()) };
            if validate_options(&opts).is_err() {
                return Ok(());
            }
            let families: Vec<Family> = match family.as_str() {
                "ip" => vec![Family::V4],
                "ip6" => vec![Family::V6],
                _ => Family::ALL.to_vec(),
            };
            let spec = RuleSpec { families: families.clone(), ..RuleSpec::default() };
            let l = Layout { family: family.clone(), table: table.clone(), chain: chain.clone(), owned: false, families: families.clone(), spec };
            let mut live = NftTable::default();
            live.chains.insert(chain.clone(), NftChain {
                base: String::new(),
                rules: tagged.iter().map(|h| NftRule { handle: *h, comment: Some(RULE_COMMENT.into()), signature: String::new() }).collect(),
            });
            if stale_v6 {
                live.sets.insert(l.set_name(Family::V6).into(), NftSet::default());
            }
            let plan = Plan::new(&Live::absent(), &cfa_core::snapshot::cloudflare()).unwrap();
            let script = rebuild_script(&l, &plan.after, &live);
            let lines: Vec<&str> = script.lines().collect();
            let stale = usize::from(stale_v6 && !families.contains(&Family::V6));
            // delete rule per tagged rule; add set + flush set + add element per family; delete set
            // of a family no longer managed; one insert rule per family.
            prop_assert_eq!(lines.len(), tagged.len() + 3 * families.len() + stale + families.len(), "{}", script);
            for line in &lines {
                let words: Vec<&str> = line.split(' ').collect();
                prop_assert!(words.len() >= 5, "{}", line);
                prop_assert_eq!(words[2], family.as_str());
                prop_assert_eq!(words[3], table.as_str());
                let tail = words[4..].join(" ");
                let ok = match (words[0], words[1]) {
                    ("delete", "rule") => words[4] == chain && words.len() == 7 && words[5] == "handle",
                    ("insert", "rule") => words[4] == chain && line.ends_with(" accept comment \"cf-allowlist\""),
                    ("add", "set") => SHARED_SETS_SUFFIXES.iter().any(|s| tail == *s),
                    ("flush", "set") | ("delete", "set") => words.len() == 5 && crate::SHARED_SETS.contains(&words[4]),
                    ("add", "element") => crate::SHARED_SETS.contains(&words[4]) && words[5] == "{" && line.ends_with(" }") && !line.contains(';'),
                    _ => false,
                };
                prop_assert!(ok, "unexpected statement {:?} in\n{}", line, script);
            }
            let purge = purge_script(&l, &live).unwrap_or_default();
            prop_assert_eq!(purge.lines().count(), tagged.len() + live.sets.len());
            for line in purge.lines() {
                let words: Vec<&str> = line.split(' ').collect();
                prop_assert!(words[0] == "delete" && words[2] == family && words[3] == table, "{}", line);
            }
        }
    }

    const SHARED_SETS_SUFFIXES: [&str; 2] = [
        "cf_allowlist_v4 { type ipv4_addr; flags interval; }",
        "cf_allowlist_v6 { type ipv6_addr; flags interval; }",
    ];
}
