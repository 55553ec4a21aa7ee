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
}
