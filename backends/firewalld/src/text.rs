//! What `firewall-cmd` prints, read strictly, and what this backend hands it: rich rules, entry
//! files and the XML of the objects it creates.
//!
//! `firewall-cmd --info-ipset`, `--list-all-policies` and `--list-all-zones` print one block per
//! object: a line with the name (and `(active)`, `(default, active)`), then one `  key: value`
//! line per attribute; attributes with one item per line (rich rules, forward ports) continue on
//! tab-indented lines. Blocks are separated by blank lines.

use std::fmt;
use std::net::IpAddr;

use cfa_core::Family;
use ipnet::IpNet;

/// One attribute of a block: the text after `key:` and the tab-indented lines that follow it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Field {
    /// The key, as printed (`rich rules`, `ingress-zones`).
    pub key: String,
    /// The text after the colon, trimmed.
    pub inline: String,
    /// The continuation lines, trimmed, in order.
    pub lines: Vec<String>,
}

/// One object as `firewall-cmd` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Block {
    /// The object's name: the first word of the header line.
    pub name: String,
    /// Its attributes, in order.
    pub fields: Vec<Field>,
}

impl Block {
    /// The attribute `key`, if printed.
    pub fn field(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.key == key)
    }

    /// The words of attribute `key` (the inline text split at whitespace, then each continuation
    /// line); empty when the attribute is absent.
    pub fn words(&self, key: &str) -> Vec<String> {
        self.field(key)
            .map(|f| {
                f.inline
                    .split_whitespace()
                    .map(String::from)
                    .chain(f.lines.iter().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn required(&self, key: &str) -> Result<&Field, String> {
        self.field(key)
            .ok_or_else(|| format!("`{}` has no `{key}:` line", self.name))
    }
}

/// Reads `firewall-cmd`'s blocks. Anything that is not a header, a `key: value` line, a
/// continuation line or a blank line is an error naming the line: the output of a version we do
/// not understand is refused, never guessed at.
pub fn parse_blocks(text: &str) -> Result<Vec<Block>, String> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut open = false;
    for (n, raw) in text.lines().enumerate() {
        let n = n + 1;
        let line = raw.trim_end();
        if line.trim().is_empty() {
            open = false;
            continue;
        }
        if line.starts_with('\t') {
            let field = blocks
                .last_mut()
                .filter(|_| open)
                .and_then(|b| b.fields.last_mut())
                .ok_or_else(|| format!("line {n}: a continuation line outside an attribute"))?;
            field.lines.push(line.trim().to_string());
        } else if line.starts_with(' ') {
            let block = blocks
                .last_mut()
                .filter(|_| open)
                .ok_or_else(|| format!("line {n}: an attribute line outside an object"))?;
            let (key, value) = line
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("line {n}: expected `key: value`, got {line:?}"))?;
            block.fields.push(Field {
                key: key.trim().to_string(),
                inline: value.trim().to_string(),
                lines: Vec::new(),
            });
        } else {
            let name = line.split_whitespace().next().unwrap_or_default();
            blocks.push(Block {
                name: name.to_string(),
                fields: Vec::new(),
            });
            open = true;
        }
    }
    Ok(blocks)
}

/// An ipset as `firewall-cmd --info-ipset` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsetInfo {
    /// The name.
    pub name: String,
    /// The type (`hash:net`).
    pub kind: String,
    /// The options, as printed (`family=inet`, `maxelem=65536`), sorted.
    pub options: Vec<String>,
    /// The entries, exactly as firewalld stores them (it keeps what it was given: `8.8.8.8`,
    /// `2001:DB8::/32`), in its order.
    pub entries: Vec<String>,
}

impl IpsetInfo {
    /// Reads one `--info-ipset` block.
    pub fn from_block(block: &Block) -> Result<IpsetInfo, String> {
        let kind = block.required("type")?.inline.clone();
        block.required("options")?;
        block.required("entries")?;
        let mut options = block.words("options");
        options.sort();
        Ok(IpsetInfo {
            name: block.name.clone(),
            kind,
            options,
            entries: block.words("entries"),
        })
    }

    /// The text `firewall-cmd --info-ipset` prints for this ipset (for tests of the reader).
    pub fn to_info_text(&self) -> String {
        format!(
            "{}\n  type: {}\n  options: {}\n  entries: {}\n",
            self.name,
            self.kind,
            self.options.join(" "),
            self.entries.join(" ")
        )
    }
}

/// The policy attributes this backend never sets: any of them non-empty in a policy of ours
/// opens something we did not put there.
pub const POLICY_EXTRAS: &[&str] = &[
    "services",
    "ports",
    "protocols",
    "forward-ports",
    "source-ports",
    "icmp-blocks",
];

/// A policy as `firewall-cmd --list-all-policies` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    /// The name.
    pub name: String,
    /// `priority:`.
    pub priority: i32,
    /// `target:` (`CONTINUE`, `ACCEPT`, `DROP`, `REJECT`).
    pub target: String,
    /// `ingress-zones:`.
    pub ingress: Vec<String>,
    /// `egress-zones:`.
    pub egress: Vec<String>,
    /// Attributes this backend never sets that are not empty (`services: ssh`), and `masquerade:
    /// yes`.
    pub extras: Vec<String>,
    /// The rich rules, as printed.
    pub rich_rules: Vec<String>,
}

impl PolicyInfo {
    /// Reads one policy block.
    pub fn from_block(block: &Block) -> Result<PolicyInfo, String> {
        let priority_text = &block.required("priority")?.inline;
        let priority = priority_text.parse::<i32>().map_err(|_| {
            format!(
                "policy `{}`: priority {priority_text:?} is not a number",
                block.name
            )
        })?;
        let target = block.required("target")?.inline.clone();
        block.required("ingress-zones")?;
        block.required("egress-zones")?;
        let mut extras = Vec::new();
        for key in POLICY_EXTRAS {
            let words = block.words(key);
            if !words.is_empty() {
                extras.push(format!("{key}: {}", words.join(" ")));
            }
        }
        if let Some(m) = block.field("masquerade") {
            if m.inline != "no" {
                extras.push(format!("masquerade: {}", m.inline));
            }
        }
        Ok(PolicyInfo {
            name: block.name.clone(),
            priority,
            target,
            ingress: block.words("ingress-zones"),
            egress: block.words("egress-zones"),
            extras,
            rich_rules: block
                .field("rich rules")
                .map(|f| f.lines.clone())
                .unwrap_or_default(),
        })
    }
}

/// Where a zone or policy block uses ipset `name`: as a source (`sources: ipset:NAME`) or in a
/// rich rule (`ipset="NAME"`). Each use is described for a message.
pub fn ipset_uses(block: &Block, name: &str) -> Vec<String> {
    let source = format!("ipset:{name}");
    let quoted = format!("ipset=\"{name}\"");
    let mut uses: Vec<String> = block
        .words("sources")
        .into_iter()
        .filter(|w| *w == source)
        .map(|w| format!("source {w}"))
        .collect();
    uses.extend(
        block
            .field("rich rules")
            .map(|f| f.lines.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|r| r.contains(&quoted))
            .map(|r| format!("rich rule `{r}`")),
    );
    uses
}

/// Every ipset a zone or policy block names: as a source (`ipset:NAME`) or in a rich rule
/// (`ipset="NAME"`), each once, in order.
pub fn ipsets_named(block: &Block) -> Vec<String> {
    let mut names: Vec<String> = block
        .words("sources")
        .into_iter()
        .filter_map(|w| w.strip_prefix("ipset:").map(String::from))
        .collect();
    for rule in block
        .field("rich rules")
        .map(|f| f.lines.as_slice())
        .unwrap_or_default()
    {
        names.extend(ipsets_in_rule(rule));
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The ipsets a rich rule names (`ipset="NAME"`), in order.
pub fn ipsets_in_rule(rule: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = rule;
    while let Some(at) = rest.find("ipset=\"") {
        rest = &rest[at + "ipset=\"".len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        names.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    names
}

/// What a rich rule of ours does to the packets it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// `accept`: the allowlist.
    Accept,
    /// `drop`: restrict.
    Drop,
}

/// A rich rule of the two shapes this backend writes:
///
/// ```text
/// rule family="ipv4" source ipset="cf-allowlist-v4" port port="443" protocol="tcp" accept
/// rule family="ipv4" source NOT ipset="cf-allowlist-v4" port port="443" protocol="tcp" drop
/// rule family="ipv6" source ipset="cf-allowlist-v6" protocol value="udp" accept   (ports: [])
/// ```
///
/// [`Rule::text`] is exactly how firewalld prints the rule back, so live rules compare as text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// The address family.
    pub family: Family,
    /// The ipset matched against the source address.
    pub ipset: String,
    /// `source NOT ipset=...`: every source outside the ipset.
    pub invert: bool,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The destination port; `None`: every port of the protocol.
    pub port: Option<u16>,
    /// Accept or drop.
    pub action: Action,
}

fn family_word(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

impl Rule {
    /// The rule as `firewall-cmd --add-rich-rule` takes it and `--list-all-policies` prints it.
    pub fn text(&self) -> String {
        let matched = match self.port {
            Some(p) => format!("port port=\"{p}\" protocol=\"{}\"", self.protocol),
            None => format!("protocol value=\"{}\"", self.protocol),
        };
        format!(
            "rule family=\"{}\" source {}ipset=\"{}\" {matched} {}",
            family_word(self.family),
            if self.invert { "NOT " } else { "" },
            self.ipset,
            match self.action {
                Action::Accept => "accept",
                Action::Drop => "drop",
            }
        )
    }

    /// Reads a rule of exactly the shapes [`Rule::text`] writes; `None` for any other rule.
    pub fn parse(text: &str) -> Option<Rule> {
        let words: Vec<&str> = text.split(' ').collect();
        let quoted = |word: &str, key: &str| -> Option<String> {
            let value = word
                .strip_prefix(key)?
                .strip_prefix("=\"")?
                .strip_suffix('"')?;
            (!value.is_empty() && !value.contains('"')).then(|| value.to_string())
        };
        let mut it = words.into_iter();
        if it.next()? != "rule" {
            return None;
        }
        let family = match quoted(it.next()?, "family")?.as_str() {
            "ipv4" => Family::V4,
            "ipv6" => Family::V6,
            _ => return None,
        };
        if it.next()? != "source" {
            return None;
        }
        let mut word = it.next()?;
        let invert = word == "NOT";
        if invert {
            word = it.next()?;
        }
        let ipset = quoted(word, "ipset")?;
        let port_word = |w: &str| -> Option<u16> {
            let value = quoted(w, "port")?;
            let port: u16 = value.parse().ok()?;
            (port > 0 && port.to_string() == value).then_some(port)
        };
        let (protocol, port) = match it.next()? {
            "port" => {
                let port = port_word(it.next()?)?;
                (quoted(it.next()?, "protocol")?, Some(port))
            }
            "protocol" => (quoted(it.next()?, "value")?, None),
            _ => return None,
        };
        if protocol != "tcp" && protocol != "udp" {
            return None;
        }
        let action = match it.next()? {
            "accept" => Action::Accept,
            "drop" => Action::Drop,
            _ => return None,
        };
        if it.next().is_some() {
            return None;
        }
        Some(Rule {
            family,
            ipset,
            invert,
            protocol,
            port,
            action,
        })
    }

    /// The rule as a `<rule>` element of a policy's XML, indented for it.
    pub fn xml(&self) -> String {
        let matched = match self.port {
            Some(p) => format!(
                "<port port=\"{p}\" protocol=\"{}\"/>",
                escape(&self.protocol)
            ),
            None => format!("<protocol value=\"{}\"/>", escape(&self.protocol)),
        };
        format!(
            "  <rule family=\"{}\">\n    <source ipset=\"{}\"{}/>\n    {matched}\n    <{}/>\n  </rule>\n",
            family_word(self.family),
            escape(&self.ipset),
            if self.invert { " invert=\"True\"" } else { "" },
            match self.action {
                Action::Accept => "accept",
                Action::Drop => "drop",
            }
        )
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Escapes text for an XML attribute value or element content.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The XML of an ipset for `firewall-cmd --new-ipset-from-file`: type, `short` (the mark that
/// tells our objects from an operator's of the same name), description, options (`key=value` or
/// `key`) and entries.
pub fn ipset_xml(
    kind: &str,
    short: &str,
    description: &str,
    options: &[String],
    entries: &[String],
) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ipset type=\"{}\">\n  <short>{}</short>\n  <description>{}</description>\n",
        escape(kind),
        escape(short),
        escape(description)
    );
    for option in options {
        match option.split_once('=') {
            Some((k, v)) => xml.push_str(&format!(
                "  <option name=\"{}\" value=\"{}\"/>\n",
                escape(k),
                escape(v)
            )),
            None => xml.push_str(&format!("  <option name=\"{}\"/>\n", escape(option))),
        }
    }
    for entry in entries {
        xml.push_str(&format!("  <entry>{}</entry>\n", escape(entry)));
    }
    xml.push_str("</ipset>\n");
    xml
}

/// The XML of a policy for `firewall-cmd --new-policy-from-file`; `rules` are `<rule>` elements
/// ([`Rule::xml`]).
pub fn policy_xml(
    priority: i32,
    target: &str,
    short: &str,
    description: &str,
    ingress: &[String],
    egress: &[String],
    rules: &str,
) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<policy priority=\"{priority}\" target=\"{}\">\n  <short>{}</short>\n  <description>{}</description>\n",
        escape(target),
        escape(short),
        escape(description)
    );
    for zone in ingress {
        xml.push_str(&format!("  <ingress-zone name=\"{}\"/>\n", escape(zone)));
    }
    for zone in egress {
        xml.push_str(&format!("  <egress-zone name=\"{}\"/>\n", escape(zone)));
    }
    xml.push_str(rules);
    xml.push_str("</policy>\n");
    xml
}

/// A file for `--add-entries-from-file` / `--remove-entries-from-file`: one entry a line.
pub fn entries_file(entries: &[String]) -> String {
    entries.iter().map(|e| format!("{e}\n")).collect()
}

/// The entries `firewall-cmd` reads from such a file: each line trimmed, blank lines and lines
/// starting with `#` or `;` skipped, duplicates dropped (first kept).
pub fn read_entries_file(text: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    // Python's `for line in file` splits at `\n` only (universal newlines turn `\r\n` and `\r`
    // into `\n` first), then strip() removes surrounding whitespace.
    for line in text.replace("\r\n", "\n").replace('\r', "\n").split('\n') {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if seen.insert(line.to_string()) {
            out.push(line.to_string());
        }
    }
    out
}

/// The network an ipset entry stands for, read as the kernel reads a `hash:net` entry: an
/// address (a host) or `address/prefix`, host bits cleared. `None` for anything else (a range,
/// an address with leading zeros, garbage): such an entry is not one this backend would write.
pub fn entry_net(entry: &str) -> Option<IpNet> {
    let (addr, prefix) = match entry.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (entry, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().ok()?
        }
        Some(_) => return None,
    };
    IpNet::new(addr, prefix).ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: &str = "allow-host-ipv6 (active)\n  priority: -15000\n  target: CONTINUE\n  ingress-zones: ANY\n  egress-zones: HOST\n  services: \n  ports: \n  protocols: \n  masquerade: no\n  forward-ports: \n  source-ports: \n  icmp-blocks: \n  rich rules: \n\trule family=\"ipv6\" icmp-type name=\"neighbour-advertisement\" accept\n\trule family=\"ipv6\" icmp-type name=\"redirect\" accept\n\ncf-allowlist (active)\n  priority: 32767\n  target: CONTINUE\n  ingress-zones: ANY\n  egress-zones: HOST\n  services: ssh\n  ports: \n  protocols: \n  masquerade: yes\n  forward-ports: \n  source-ports: \n  icmp-blocks: \n  rich rules: \n\trule family=\"ipv4\" source ipset=\"cf-allowlist-v4\" port port=\"443\" protocol=\"tcp\" accept\n\n";

    #[test]
    fn policies_as_firewall_cmd_prints_them() {
        let blocks = parse_blocks(POLICIES).unwrap();
        assert_eq!(blocks.len(), 2);
        let host = PolicyInfo::from_block(&blocks[0]).unwrap();
        assert_eq!(host.name, "allow-host-ipv6");
        assert_eq!(host.priority, -15000);
        assert_eq!(host.rich_rules.len(), 2);
        assert!(host.extras.is_empty());
        let ours = PolicyInfo::from_block(&blocks[1]).unwrap();
        assert_eq!(ours.ingress, ["ANY"]);
        assert_eq!(ours.egress, ["HOST"]);
        assert_eq!(ours.extras, ["services: ssh", "masquerade: yes"]);
        let rule = Rule::parse(&ours.rich_rules[0]).unwrap();
        assert_eq!(rule.port, Some(443));
        assert_eq!(rule.text(), ours.rich_rules[0]);
        assert_eq!(
            ipset_uses(&blocks[1], "cf-allowlist-v4"),
            [format!("rich rule `{}`", ours.rich_rules[0])]
        );
        assert!(ipset_uses(&blocks[0], "cf-allowlist-v4").is_empty());
    }

    #[test]
    fn an_ipset_as_firewall_cmd_prints_it() {
        let text = "cf-allowlist-v6\n  type: hash:net\n  options: maxelem=65536 family=inet6\n  entries: 2001:db8::1/128 2001:DB8:5::/48\n";
        let info = IpsetInfo::from_block(&parse_blocks(text).unwrap()[0]).unwrap();
        assert_eq!(info.kind, "hash:net");
        assert_eq!(info.options, ["family=inet6", "maxelem=65536"]);
        assert_eq!(info.entries, ["2001:db8::1/128", "2001:DB8:5::/48"]);
        let empty = "x\n  type: hash:net\n  options: family=inet\n  entries: \n";
        let info = IpsetInfo::from_block(&parse_blocks(empty).unwrap()[0]).unwrap();
        assert!(info.entries.is_empty());
        let missing = "x\n  type: hash:net\n  options: family=inet\n";
        assert!(IpsetInfo::from_block(&parse_blocks(missing).unwrap()[0]).is_err());
    }

    #[test]
    fn malformed_output_is_refused_with_the_line() {
        assert!(parse_blocks("  type: x\n").unwrap_err().contains("line 1"));
        assert!(parse_blocks("\trule\n").unwrap_err().contains("line 1"));
        assert!(parse_blocks("name\n  no colon here\n")
            .unwrap_err()
            .contains("line 2"));
        // A continuation after a blank line belongs to no attribute.
        assert!(parse_blocks("name\n  rich rules:\n\n\trule x\n").is_err());
    }

    #[test]
    fn entries_are_read_as_the_kernel_reads_them() {
        assert_eq!(entry_net("8.8.8.8"), "8.8.8.8/32".parse().ok());
        assert_eq!(entry_net("2001:DB8:5::/48"), "2001:db8:5::/48".parse().ok());
        assert_eq!(entry_net("10.1.2.3/24"), "10.1.2.0/24".parse().ok());
        for bad in [
            "010.1.2.0/24",
            "1.2.3.4-1.2.3.9",
            "1.2.3.0/33",
            "1.2.3.0/",
            "x",
            "",
        ] {
            assert_eq!(entry_net(bad), None, "{bad}");
        }
    }

    #[test]
    fn other_rules_are_not_ours() {
        for text in [
            "rule family=\"ipv4\" source address=\"1.2.3.4\" accept",
            "rule family=\"ipv4\" source ipset=\"x\" port port=\"443\" protocol=\"tcp\" log accept",
            "rule family=\"ipv4\" source ipset=\"x\" port port=\"0443\" protocol=\"tcp\" accept",
            "rule family=\"ipv4\" source ipset=\"x\" port port=\"80-90\" protocol=\"tcp\" accept",
            "rule family=\"ipv4\" source ipset=\"x\" protocol value=\"icmp\" accept",
            "rule family=\"ipv4\" source ipset=\"x\" service name=\"https\" accept",
            "rule priority=\"-1\" family=\"ipv4\" source ipset=\"x\" protocol value=\"tcp\" accept",
            "rule family=\"ipv4\" source ipset=\"x\" protocol value=\"tcp\" reject",
        ] {
            assert_eq!(Rule::parse(text), None, "{text}");
        }
    }
}
