//! Parsing `nft -j list table FAMILY NAME` output.

use std::collections::BTreeMap;

use cfa_core::{parse_cidr, BackendError};
use ipnet::IpNet;
use serde_json::Value;

/// One table as `nft -j` reports it, reduced to what the backend reasons about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftTable {
    /// Sets by name.
    pub sets: BTreeMap<String, NftSet>,
    /// Chains by name.
    pub chains: BTreeMap<String, NftChain>,
}

/// A named set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftSet {
    /// Element type (`ipv4_addr`).
    pub kind: String,
    /// Flags (`interval`, ...).
    pub flags: Vec<String>,
    /// Elements that are networks or addresses.
    pub nets: Vec<IpNet>,
    /// Elements that are not (ranges, unparsable), as JSON text.
    pub other: Vec<String>,
}

/// A chain and its rules in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftChain {
    /// `filter hook input prio -10 policy accept` for a base chain; empty for a regular chain.
    pub base: String,
    /// The rules, in order.
    pub rules: Vec<NftRule>,
}

/// A rule reduced to a comparable signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRule {
    /// The kernel's handle, for deleting it.
    pub handle: u64,
    /// The rule's comment.
    pub comment: Option<String>,
    /// A normalized rendering of its expressions (see [`signature`]).
    pub signature: String,
}

fn parse_err(table: &str, reason: impl Into<String>) -> BackendError {
    BackendError::Parse {
        what: format!("nft -j list table ... {table}"),
        reason: reason.into(),
    }
}

/// Parses the JSON `nft -j list table` prints for the table `name`.
pub fn parse_table(json: &str, name: &str) -> Result<NftTable, BackendError> {
    let root: Value = serde_json::from_str(json).map_err(|e| parse_err(name, e.to_string()))?;
    let items = root
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| parse_err(name, "no \"nftables\" array"))?;
    let mut table = NftTable::default();
    let mut rules: Vec<(String, NftRule)> = Vec::new();
    for item in items {
        if let Some(set) = item.get("set") {
            if set.get("table").and_then(Value::as_str) != Some(name) {
                continue;
            }
            let set_name =
                str_field(set, "name").ok_or_else(|| parse_err(name, "set without a name"))?;
            let mut parsed = NftSet {
                kind: set.get("type").map(render).unwrap_or_default(),
                flags: set
                    .get("flags")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
                ..NftSet::default()
            };
            for elem in set
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match element(elem) {
                    Some(net) => parsed.nets.push(net),
                    None => parsed.other.push(elem.to_string()),
                }
            }
            table.sets.insert(set_name.to_string(), parsed);
        } else if let Some(chain) = item.get("chain") {
            if chain.get("table").and_then(Value::as_str) != Some(name) {
                continue;
            }
            let chain_name =
                str_field(chain, "name").ok_or_else(|| parse_err(name, "chain without a name"))?;
            let base = match chain.get("hook") {
                Some(hook) => format!(
                    "{} hook {} prio {} policy {}",
                    chain.get("type").map(render).unwrap_or_default(),
                    render(hook),
                    chain.get("prio").map(render).unwrap_or_default(),
                    chain.get("policy").map(render).unwrap_or_default(),
                ),
                None => String::new(),
            };
            table.chains.entry(chain_name.to_string()).or_default().base = base;
        } else if let Some(rule) = item.get("rule") {
            if rule.get("table").and_then(Value::as_str) != Some(name) {
                continue;
            }
            let chain =
                str_field(rule, "chain").ok_or_else(|| parse_err(name, "rule without a chain"))?;
            let handle = rule
                .get("handle")
                .and_then(Value::as_u64)
                .ok_or_else(|| parse_err(name, "rule without a handle"))?;
            let exprs = rule
                .get("expr")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            rules.push((
                chain.to_string(),
                NftRule {
                    handle,
                    comment: str_field(rule, "comment").map(String::from),
                    signature: signature(exprs),
                },
            ));
        }
    }
    for (chain, rule) in rules {
        table.chains.entry(chain).or_default().rules.push(rule);
    }
    Ok(table)
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A set element as a network: `"1.2.3.4"` or `{"prefix": {"addr": .., "len": ..}}`, strictly parsed.
fn element(elem: &Value) -> Option<IpNet> {
    // Elements with timeouts or comments come wrapped: {"elem": {"val": ..}}.
    let elem = elem.get("elem").and_then(|e| e.get("val")).unwrap_or(elem);
    match elem {
        Value::String(s) => parse_cidr(s).ok(),
        Value::Object(o) => {
            let prefix = o.get("prefix")?;
            let text = format!(
                "{}/{}",
                prefix.get("addr")?.as_str()?,
                prefix.get("len")?.as_u64()?
            );
            parse_cidr(&text).ok()
        }
        _ => None,
    }
}

/// Renders a rule's expressions as one normalized line, e.g.
/// `tcp dport == {443,80} ; ip saddr == @allow_v4 ; accept`. Set members are sorted so that
/// element order does not matter; anything unknown is rendered as its JSON, so it never matches
/// what we generate.
pub fn signature(exprs: &[Value]) -> String {
    exprs
        .iter()
        .map(|e| match e.get("match") {
            Some(m) => format!(
                "{} {} {}",
                m.get("left").map(render).unwrap_or_default(),
                m.get("op").map(render).unwrap_or_default(),
                m.get("right").map(render).unwrap_or_default(),
            ),
            None => match e.as_object() {
                Some(o) if o.len() == 1 && o.values().next() == Some(&Value::Null) => {
                    o.keys().next().cloned().unwrap_or_default()
                }
                _ => e.to_string(),
            },
        })
        .collect::<Vec<_>>()
        .join(" ; ")
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(p) = o.get("payload") {
                format!(
                    "{} {}",
                    p.get("protocol").map(render).unwrap_or_default(),
                    p.get("field").map(render).unwrap_or_default()
                )
            } else if let Some(m) = o.get("meta") {
                format!("meta {}", m.get("key").map(render).unwrap_or_default())
            } else if let Some(Value::Array(items)) = o.get("set") {
                let mut parts: Vec<String> = items.iter().map(render).collect();
                parts.sort();
                format!("{{{}}}", parts.join(","))
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = include_str!("../tests/fixtures/own-table.json");
    const FOREIGN: &str = include_str!("../tests/fixtures/existing-table.json");

    #[test]
    fn parses_our_table() {
        let t = parse_table(OWN, "cf_allowlist").unwrap();
        insta::assert_debug_snapshot!(t);
    }

    #[test]
    fn parses_an_operator_table_with_our_sets_and_rule() {
        let t = parse_table(FOREIGN, "filter").unwrap();
        insta::assert_debug_snapshot!(t);
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert!(matches!(
            parse_table("<html>", "t"),
            Err(BackendError::Parse { .. })
        ));
        assert!(matches!(
            parse_table("{}", "t"),
            Err(BackendError::Parse { .. })
        ));
    }

    #[test]
    fn elements_are_parsed_strictly() {
        assert_eq!(
            element(&serde_json::json!("1.2.3.4")),
            Some("1.2.3.4/32".parse().unwrap())
        );
        assert_eq!(
            element(&serde_json::json!({"prefix": {"addr": "2400:cb00::", "len": 32}})),
            Some("2400:cb00::/32".parse().unwrap())
        );
        assert_eq!(
            element(&serde_json::json!({"range": ["1.2.3.4", "1.2.3.9"]})),
            None
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_table(&deep, "t").is_err());
        let deep_set = format!(
            r#"{{"nftables":[{{"rule":{{"table":"t","chain":"c","handle":1,"expr":[{{"match":{{"left":{}1{}}}}}]}}}}]}}"#,
            r#"{"set":["#.repeat(60),
            "]}".repeat(60)
        );
        let t = parse_table(&deep_set, "t").unwrap();
        assert_eq!(t.chains["c"].rules.len(), 1);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use cfa_core::{AllowList, Family};
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;
    use serde_json::json;

    /// Keys `nft -j` uses, so that arbitrary objects often reach the deeper branches.
    const KEYS: &[&str] = &[
        "nftables", "set", "chain", "rule", "table", "name", "type", "flags", "elem", "val",
        "prefix", "addr", "len", "hook", "prio", "policy", "handle", "expr", "match", "left", "op",
        "right", "payload", "protocol", "field", "meta", "key", "comment", "range", "accept",
    ];

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => proptest::sample::select(KEYS).prop_map(String::from),
            1 => any::<String>(),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
            proptest::sample::select(
                &[
                    "t",
                    "1.2.3.4",
                    "2400:cb00::",
                    "10.0.0.0",
                    "interval",
                    "ipv4_addr",
                    "c"
                ][..]
            )
            .prop_map(|s| Value::String(s.into())),
            (0u64..300).prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 96, 8, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..8).prop_map(Value::Array),
                btree_map(key(), inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// An `nft -j` item of a known kind, in table `t`, with arbitrary fields.
    fn item() -> impl Strategy<Value = Value> {
        (
            proptest::sample::select(&["set", "chain", "rule", "table", "map"][..]),
            btree_map(key(), json_value(), 0..10),
            any::<bool>(),
        )
            .prop_map(|(kind, fields, in_t)| {
                let mut obj: serde_json::Map<String, Value> = fields.into_iter().collect();
                if in_t {
                    obj.insert("table".into(), json!("t"));
                }
                json!({ kind: Value::Object(obj) })
            })
    }

    fn nets() -> impl Strategy<Value = AllowList> {
        let v4 = (any::<u32>(), 0u8..=32)
            .prop_map(|(a, l)| IpNet::V4(ipnet::Ipv4Net::new(a.into(), l).unwrap().trunc()));
        let v6 = (any::<u128>(), 0u8..=128)
            .prop_map(|(a, l)| IpNet::V6(ipnet::Ipv6Net::new(a.into(), l).unwrap().trunc()));
        vec(prop_oneof![v4, v6], 0..40).prop_map(|v| v.into_iter().collect())
    }

    /// A set element the way `nft -j` prints it: a host as a bare address, else a prefix.
    fn as_nft_json(net: &IpNet) -> Value {
        if net.prefix_len() == net.max_prefix_len() {
            json!(net.addr().to_string())
        } else {
            json!({"prefix": {"addr": net.addr().to_string(), "len": net.prefix_len()}})
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512), name in any::<String>()) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_table(&text, &name);
            let _ = parse_table(&text, "t");
        }

        #[test]
        fn arbitrary_unicode_never_panics(text in any::<String>(), name in any::<String>()) {
            let _ = parse_table(&text, &name);
            let wrapped = format!("{{\"nftables\":[{text}]}}");
            let _ = parse_table(&wrapped, &name);
        }

        #[test]
        fn arbitrary_json_never_panics(value in json_value()) {
            let text = value.to_string();
            let _ = parse_table(&text, "t");
            let wrapped = json!({ "nftables": value }).to_string();
            let _ = parse_table(&wrapped, "t");
        }

        /// Sets as `nft -j` prints them read back as exactly the networks in them, whatever the
        /// element order and with the `{"elem": {"val": ..}}` wrapping.
        #[test]
        fn set_elements_round_trip(list in nets(), wrap in any::<bool>(), reverse in any::<bool>()) {
            let mut items = vec![json!({"metainfo": {"json_schema_version": 1}}), json!({"table": {"family": "inet", "name": "t"}})];
            for (family, name, kind) in [(Family::V4, "allow_v4", "ipv4_addr"), (Family::V6, "allow_v6", "ipv6_addr")] {
                let mut elems: Vec<Value> = list.iter_family(family).map(|n| as_nft_json(&n)).collect();
                if reverse {
                    elems.reverse();
                }
                if wrap {
                    elems = elems.into_iter().map(|e| json!({"elem": {"val": e, "comment": "x"}})).collect();
                }
                let mut set = json!({"family": "inet", "name": name, "table": "t", "type": kind, "flags": ["interval"]});
                if !elems.is_empty() {
                    set["elem"] = Value::Array(elems);
                }
                items.push(json!({ "set": set }));
            }
            let t = parse_table(&json!({ "nftables": items }).to_string(), "t").unwrap();
            let mut back = AllowList::new();
            for set in t.sets.values() {
                prop_assert!(set.other.is_empty(), "{:?}", set.other);
                prop_assert!(set.kind == "ipv4_addr" || set.kind == "ipv6_addr", "{}", set.kind);
                for net in &set.nets {
                    prop_assert!(back.insert(*net), "duplicate {}", net);
                }
            }
            prop_assert_eq!(back, list);
        }
    }

    proptest! {
        // Each case is a dozen nested objects: fewer cases keep this under a few seconds.
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn arbitrary_nft_items_never_panic(items in vec(item(), 0..10)) {
            let text = json!({ "nftables": items }).to_string();
            if let Ok(t) = parse_table(&text, "t") {
                prop_assert!(t.sets.len() + t.chains.len() <= items.len());
            }
        }

    }
}
