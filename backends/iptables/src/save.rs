//! Parsers for what the tools print: `iptables-save` / `ip6tables-save` and `ipset save`.
//!
//! They take text and do no I/O, so the tests feed them captured output.

use std::collections::BTreeMap;

use cfa_core::{parse_cidr, BackendError, Family};
use ipnet::IpNet;

/// One table of an `iptables-save` dump: its chains (in order) and its rules, without counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Chain names as declared (`:NAME POLICY [p:b]`), in order.
    pub chains: Vec<String>,
    /// Rules in order, as `iptables-save` prints them without the `[p:b]` counters
    /// (`-A INPUT -p tcp ... -j ACCEPT`).
    pub rules: Vec<Rule>,
    /// iptables-nft said the table holds base chains it cannot show (added with `nft`): they
    /// filter packets too, and one named like ours makes our restore fail.
    pub hidden_base_chains: bool,
}

/// One rule of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The chain it is appended to.
    pub chain: String,
    /// The whole line without counters, starting with `-A`.
    pub text: String,
    /// The line split like a shell would (quotes removed), starting with `-A CHAIN`.
    pub tokens: Vec<String>,
}

impl Rule {
    /// The value following `flag` (`-s`, `-j`, ...), if the rule has it.
    pub fn value(&self, flag: &str) -> Option<&str> {
        self.tokens
            .iter()
            .position(|t| t == flag)
            .and_then(|i| self.tokens.get(i + 1))
            .map(String::as_str)
    }

    /// Where the rule sends packets: its `-j` or `-g` target.
    pub fn target(&self) -> Option<&str> {
        self.value("-j").or_else(|| self.value("-g"))
    }
}

impl Table {
    /// Whether chain `name` is declared.
    pub fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c == name)
    }

    /// The rules of chain `name`, in order.
    pub fn rules_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| r.chain == name)
    }
}

/// Parses an `iptables-save` dump (with or without `-c` counters) and returns table `wanted`
/// (`filter`); an empty table when the dump does not contain it (iptables-nft prints nothing
/// for a table that was never created).
pub fn parse_save(text: &str, wanted: &str, what: &str) -> Result<Table, BackendError> {
    let err = |n: usize, reason: String| BackendError::Parse {
        what: what.to_string(),
        reason: format!("line {}: {reason}", n + 1),
    };
    let mut current: Option<String> = None;
    let mut table = Table::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line
            .strip_prefix("# Table `")
            .and_then(|rest| rest.strip_suffix("' is incompatible, use 'nft' tool."))
        {
            if name == wanted {
                // iptables-nft prints nothing else for a table holding rules it cannot express:
                // reading it as empty would make us add a jump on every run.
                return Err(BackendError::Conflict(format!(
                    "{what}: the {wanted} table holds rules iptables-nft cannot read (written \
                     with nft); manage this host with the nftables backend instead"
                )));
            }
        }
        if line.starts_with(&format!(
            "# Table `{wanted}' contains incompatible base-chains"
        )) {
            table.hidden_base_chains = true;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            current = Some(name.to_string());
            continue;
        }
        if line == "COMMIT" {
            current = None;
            continue;
        }
        let Some(name) = current.as_deref() else {
            return Err(err(n, format!("`{line}` outside a table")));
        };
        if name != wanted {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let chain = decl.split_whitespace().next().unwrap_or_default();
            if chain.is_empty() {
                return Err(err(n, "chain declaration without a name".into()));
            }
            table.chains.push(chain.to_string());
            continue;
        }
        // `[packets:bytes] -A ...` with -c.
        let line = match line.strip_prefix('[') {
            Some(rest) => rest
                .split_once(']')
                .map(|(_, r)| r.trim_start())
                .ok_or_else(|| err(n, "unterminated counters".into()))?,
            None => line,
        };
        let tokens = tokenize(line).map_err(|e| err(n, e))?;
        if tokens.len() < 2 || tokens[0] != "-A" {
            return Err(err(n, format!("expected `-A CHAIN ...`, found `{line}`")));
        }
        table.rules.push(Rule {
            chain: tokens[1].clone(),
            text: line.to_string(),
            tokens,
        });
    }
    Ok(table)
}

/// Splits a rule line into words: whitespace separates, double quotes group, and a backslash
/// escapes the next character inside quotes (`--comment "say \"hi\""`), as iptables-save writes.
pub fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => match chars.next() {
                Some(next) => word.push(next),
                None => return Err("backslash at end of line".into()),
            },
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// One set from `ipset save`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    /// The words after the name in its `create` line: type and options
    /// (`hash:net family inet hashsize 1024 ...`).
    pub create: Vec<String>,
    /// Its members, parsed (hosts are printed without a prefix length).
    pub entries: Vec<IpNet>,
}

impl IpSet {
    /// The set type (`hash:net`).
    pub fn kind(&self) -> &str {
        self.create.first().map(String::as_str).unwrap_or_default()
    }

    /// The `family` option (`inet`, `inet6`).
    pub fn family(&self) -> Option<&str> {
        self.create
            .iter()
            .position(|w| w == "family")
            .and_then(|i| self.create.get(i + 1))
            .map(String::as_str)
    }

    /// Whether the set is a `hash:net` of `family`, the only kind we create and swap.
    pub fn fits(&self, family: Family) -> bool {
        self.kind() == "hash:net" && self.family() == Some(ipset_family(family))
    }
}

/// The `ipset` family name for an address family.
pub fn ipset_family(family: Family) -> &'static str {
    match family {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    }
}

/// Parses `ipset save` output, keeping only the sets named in `names` (all others are skipped
/// unparsed: foreign sets may hold entry types we do not know).
pub fn parse_ipset_save(
    text: &str,
    names: &[&str],
    what: &str,
) -> Result<BTreeMap<String, IpSet>, BackendError> {
    let err = |n: usize, reason: String| BackendError::Parse {
        what: what.to_string(),
        reason: format!("line {}: {reason}", n + 1),
    };
    let mut sets: BTreeMap<String, IpSet> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["create", name, rest @ ..] if names.contains(name) => {
                sets.insert(
                    name.to_string(),
                    IpSet {
                        create: rest.iter().map(|w| w.to_string()).collect(),
                        entries: Vec::new(),
                    },
                );
            }
            ["add", name, entry, ..] if names.contains(name) => {
                let set = sets
                    .get_mut(*name)
                    .ok_or_else(|| err(n, format!("`add {name}` before `create {name}`")))?;
                let full = if entry.contains('/') {
                    entry.to_string()
                } else if entry.contains(':') {
                    format!("{entry}/128")
                } else {
                    format!("{entry}/32")
                };
                let net = parse_cidr(&full).map_err(|e| err(n, format!("entry `{entry}`: {e}")))?;
                set.entries.push(net);
            }
            ["create" | "add", ..] => {}
            _ => return Err(err(n, format!("unexpected line `{line}`"))),
        }
    }
    Ok(sets)
}

/// The names of `ipset list -n` output (one a line) that are among `ours`, in output order.
pub fn parse_ipset_names(text: &str, ours: &[&str]) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|n| ours.contains(n))
        .map(str::to_string)
        .collect()
}

/// The sources our chain's accept rules (saved `-A` lines) allow, sorted and without
/// duplicates: each `-s NET`, and the whole `family` (`0.0.0.0/0`, `::/0`) for an accept rule
/// without `-s`, since iptables-save omits a zero-length source. Rules that match a set, or
/// negate anything, allow no range of their own and are skipped, like unparsable ones.
pub fn accepted_sources(rules: &[String], family: Family) -> Vec<IpNet> {
    let everyone = match family {
        Family::V4 => "0.0.0.0/0",
        Family::V6 => "::/0",
    };
    let mut nets: Vec<IpNet> = rules
        .iter()
        .filter_map(|text| tokenize(text).ok())
        .filter(|t| {
            t.windows(2).any(|w| w[0] == "-j" && w[1] == "ACCEPT")
                && !t.iter().any(|w| w == "!" || w == "--match-set")
        })
        .filter_map(|t| match t.iter().position(|w| w == "-s") {
            Some(i) => parse_cidr(t.get(i + 1)?).ok(),
            None => parse_cidr(everyone).ok(),
        })
        .filter(|net| {
            matches!(
                (net, family),
                (IpNet::V4(_), Family::V4) | (IpNet::V6(_), Family::V6)
            )
        })
        .collect();
    nets.sort();
    nets.dedup();
    nets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_handles_quotes_and_escapes() {
        let t = tokenize(r#"-A INPUT -m comment --comment "say \"hi\" there" -j X"#).unwrap();
        assert_eq!(
            t,
            [
                "-A",
                "INPUT",
                "-m",
                "comment",
                "--comment",
                r#"say "hi" there"#,
                "-j",
                "X"
            ]
        );
        assert!(tokenize(r#"-A X --comment "open"#).is_err());
    }

    #[test]
    fn rules_outside_a_table_are_an_error() {
        let e = parse_save("-A INPUT -j ACCEPT\n", "filter", "test").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn accepted_sources_reads_omitted_zero_prefixes_and_skips_sets_and_negations() {
        let rules: Vec<String> = [
            "-A C -s 192.0.2.0/24 -p tcp -j ACCEPT",
            "-A C -p tcp -m multiport --dports 80,443 -j ACCEPT",
            "-A C -p tcp -m set --match-set cf-allowlist-v4 src -j ACCEPT",
            "-A C ! -s 198.51.100.0/24 -p tcp -j ACCEPT",
            "-A C -s 203.0.113.0/24 -p tcp -j DROP",
            "-A C -s 192.0.2.0/24 -p udp -j ACCEPT",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            accepted_sources(&rules, Family::V4),
            ["0.0.0.0/0", "192.0.2.0/24"].map(|s| s.parse::<IpNet>().unwrap())
        );
        let v6 = vec!["-A C -s ::1.2.3.4/128 -p tcp -j ACCEPT".to_string()];
        assert_eq!(
            accepted_sources(&v6, Family::V6),
            ["::1.2.3.4/128".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn missing_table_is_empty() {
        let t = parse_save("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", "filter", "t").unwrap();
        assert_eq!(t, Table::default());
    }
}
