//! ufw's own record of a rule: the `### tuple ###` lines in `user.rules` and `user6.rules`.
//!
//! ufw keeps every user rule twice in those files: a tuple line (what the rule *is*) followed by
//! the iptables lines it generates. ufw itself rebuilds its rule list from the tuple lines only
//! (`UFWBackendIptables._read_rules`), so those are what we read. The layout, as ufw writes it:
//!
//! ```text
//! ### tuple ### ACTION[_LOG] PROTO DPORT DST SPORT SRC [DAPP SAPP] DIRECTION[_IFACE] [comment=HEX]
//! ### tuple ### allow tcp 80,443 0.0.0.0/0 any 173.245.48.0/20 in comment=63662d616c6c6f776c697374
//! ### tuple ### route:allow udp 53 0.0.0.0/0 any 192.0.2.0/24 in_lo!out_lo
//! ### tuple ### allow_log tcp 80 0.0.0.0/0 any 10.1.0.0/16 WWW - in comment=77656220617070
//! ```
//!
//! Application names have spaces escaped as `%20`; a missing application is `-`; a host address
//! is written without its `/32` or `/128`; ports are sorted; the comment is hex-encoded UTF-8.

use std::fmt;

use cfa_core::parse_cidr;

const TUPLE_MARK: &str = "### tuple ###";

/// One ufw rule as its tuple line records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    /// `allow`, `deny`, `reject` or `limit`.
    pub action: String,
    /// `log` or `log-all` when the rule logs (the tuple's `_log` / `_log-all` action suffix).
    pub log: Option<String>,
    /// A `route` (FORWARD) rule.
    pub forward: bool,
    /// `tcp`, `udp`, `any`, ... as ufw wrote it.
    pub protocol: String,
    /// Destination port(s) (`80,443`, `8000:8100`) or `any`.
    pub dport: String,
    /// Destination address or network (`0.0.0.0/0` for anywhere).
    pub dst: String,
    /// Source port(s) or `any`.
    pub sport: String,
    /// Source address or network.
    pub src: String,
    /// Destination application profile (unescaped), if any.
    pub dapp: Option<String>,
    /// Source application profile (unescaped), if any.
    pub sapp: Option<String>,
    /// `in` or `out`.
    pub direction: String,
    /// `in on IFACE`.
    pub iface_in: Option<String>,
    /// `out on IFACE`.
    pub iface_out: Option<String>,
    /// The comment exactly as stored (hex), so that a line renders back byte for byte.
    pub comment_hex: Option<String>,
    /// Read from `user6.rules`.
    pub v6: bool,
}

/// How ufw tells two rules apart: everything but the action, the log type and the comment.
///
/// ufw's `UFWRule.match` treats a new rule with the same key as an *update* of the existing one
/// ("Rule updated"): adding our rule over an operator's rule with the same key would rewrite the
/// operator's rule. Addresses are normalised (`1.2.3.4` and `1.2.3.4/32` are one key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    forward: bool,
    v6: bool,
    protocol: String,
    dport: String,
    dst: String,
    sport: String,
    src: String,
    dapp: Option<String>,
    sapp: Option<String>,
    direction: String,
    iface_in: Option<String>,
    iface_out: Option<String>,
}

/// Why a tuple line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct TupleError {
    /// 1-based line number in the file.
    pub line: usize,
    /// What was wrong.
    pub reason: &'static str,
    /// The line.
    pub text: String,
}

/// Reads every tuple line of a `user.rules` (`v6 = false`) or `user6.rules` (`v6 = true`) text,
/// in file order (which is ufw's rule order).
pub fn parse_rules(text: &str, v6: bool) -> Result<Vec<Tuple>, TupleError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix(TUPLE_MARK) else {
            continue;
        };
        let err = |reason| TupleError {
            line: n + 1,
            reason,
            text: line.to_string(),
        };
        // ufw: "comment= should always be last, so just strip it out".
        let (body, comment_hex) = match rest.split_once(" comment=") {
            Some((body, hex)) => (body, Some(hex.trim().to_string())),
            None => (rest, None),
        };
        let f: Vec<&str> = body.split_whitespace().collect();
        if !matches!(f.len(), 7 | 9) {
            // ufw also accepts 6 and 8 fields (files from before ufw 0.30, with no direction);
            // it rewrites them with a direction on its next write. Refuse rather than guess.
            return Err(err("expected 7 or 9 fields"));
        }
        let (action_field, forward) = match f[0].strip_prefix("route:") {
            Some(a) => (a, true),
            None => (f[0], false),
        };
        let (action, log) = match action_field.split_once('_') {
            Some((a, l)) => (a.to_string(), Some(l.to_string())),
            None => (action_field.to_string(), None),
        };
        let app = |s: &str| (s != "-").then(|| s.replace("%20", " "));
        let (dapp, sapp) = if f.len() == 9 {
            (app(f[6]), app(f[7]))
        } else {
            (None, None)
        };
        let (direction, iface_in, iface_out) = parse_direction(f[f.len() - 1])
            .ok_or_else(|| err("unknown direction or interface field"))?;
        if let Some(hex) = &comment_hex {
            if decode_hex(hex).is_none() {
                return Err(err("comment is not hex-encoded UTF-8"));
            }
        }
        out.push(Tuple {
            action,
            log,
            forward,
            protocol: f[1].to_string(),
            dport: f[2].to_string(),
            dst: f[3].to_string(),
            sport: f[4].to_string(),
            src: f[5].to_string(),
            dapp,
            sapp,
            direction,
            iface_in,
            iface_out,
            comment_hex,
            v6,
        });
    }
    Ok(out)
}

/// `in`, `out`, `in_eth0`, `out_eth0`, `in_eth0!out_eth1`.
fn parse_direction(field: &str) -> Option<(String, Option<String>, Option<String>)> {
    if let Some((a, b)) = field.split_once('!') {
        let i = a.strip_prefix("in_")?;
        let o = b.strip_prefix("out_")?;
        return Some(("in".into(), Some(i.into()), Some(o.into())));
    }
    match field.split_once('_') {
        None if field == "in" || field == "out" => Some((field.into(), None, None)),
        None => None,
        Some(("in", i)) => Some(("in".into(), Some(i.into()), None)),
        Some(("out", o)) => Some(("out".into(), None, Some(o.into()))),
        Some(_) => None,
    }
}

impl Tuple {
    /// The decoded comment, if the rule has one.
    pub fn comment(&self) -> Option<String> {
        self.comment_hex.as_deref().and_then(decode_hex)
    }

    /// Whether the rule carries exactly `comment`.
    pub fn has_comment(&self, comment: &str) -> bool {
        self.comment().as_deref() == Some(comment)
    }

    /// What ufw compares to decide whether two rules are "the same rule".
    pub fn key(&self) -> Key {
        Key {
            forward: self.forward,
            v6: self.v6,
            protocol: self.protocol.clone(),
            dport: self.dport.clone(),
            dst: normalise_addr(&self.dst),
            sport: self.sport.clone(),
            src: normalise_addr(&self.src),
            dapp: self.dapp.clone(),
            sapp: self.sapp.clone(),
            direction: self.direction.clone(),
            iface_in: self.iface_in.clone(),
            iface_out: self.iface_out.clone(),
        }
    }

    /// The `ufw` arguments that describe this rule (after `ufw`, before nothing): what `ufw` is
    /// given to add it, and, after `delete` or `insert N`, to delete or insert it.
    ///
    /// `op` goes between `route` (for route rules) and the action: `[]`, `["delete"]` or
    /// `["insert", "3"]`. Addresses are re-parsed and passed in canonical form; a tuple whose
    /// addresses or ports do not parse is refused.
    pub fn cli_args(&self, op: &[&str]) -> Result<Vec<String>, String> {
        let mut a: Vec<String> = Vec::new();
        if self.forward {
            a.push("route".into());
        }
        a.extend(op.iter().map(|s| s.to_string()));
        a.push(self.action.clone());
        if self.forward {
            if let Some(i) = &self.iface_in {
                a.extend(["in".into(), "on".into(), i.clone()]);
            }
            if let Some(o) = &self.iface_out {
                a.extend(["out".into(), "on".into(), o.clone()]);
            }
        } else if self.iface_in.is_some() || self.iface_out.is_some() || self.direction != "in" {
            a.push(self.direction.clone());
            if let Some(i) = self.iface_in.as_ref().or(self.iface_out.as_ref()) {
                a.extend(["on".into(), i.clone()]);
            }
        }
        if let Some(l) = &self.log {
            a.push(l.clone());
        }
        let apps = self.dapp.is_some() || self.sapp.is_some();
        if self.protocol != "any" && !apps {
            a.extend(["proto".into(), self.protocol.clone()]);
        }
        let any_net = if self.v6 { "::/0" } else { "0.0.0.0/0" };
        let src = canonical_addr(&self.src)?;
        a.extend(["from".into(), src.clone()]);
        push_port(&mut a, &self.sport, &self.sapp)?;
        // `to any` is what an operator types; it is only unambiguous when the source already
        // names the family (otherwise ufw would add the rule for both families).
        let dst = canonical_addr(&self.dst)?;
        if dst == any_net && src != any_net {
            a.extend(["to".into(), "any".into()]);
        } else {
            a.extend(["to".into(), dst]);
        }
        push_port(&mut a, &self.dport, &self.dapp)?;
        if let Some(c) = self.comment() {
            a.extend(["comment".into(), c]);
        }
        Ok(a)
    }
}

fn push_port(a: &mut Vec<String>, port: &str, app: &Option<String>) -> Result<(), String> {
    if let Some(app) = app {
        a.extend(["app".into(), app.clone()]);
    } else if port != "any" {
        let ok = !port.is_empty()
            && port
                .split(',')
                .all(|p| p.split(':').all(|n| n.parse::<u16>().is_ok()));
        if !ok {
            return Err(format!("unexpected port list {port:?}"));
        }
        a.extend(["port".into(), port.to_string()]);
    }
    Ok(())
}

/// A network in canonical `Display` form, whether ufw wrote it with or without the prefix.
fn canonical_addr(text: &str) -> Result<String, String> {
    parse_cidr(text)
        .map(|n| n.to_string())
        .map_err(|e| format!("unexpected address {text:?}: {e}"))
}

fn normalise_addr(text: &str) -> String {
    canonical_addr(text).unwrap_or_else(|_| text.to_string())
}

impl fmt::Display for Tuple {
    /// The tuple line exactly as ufw writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TUPLE_MARK} ")?;
        if self.forward {
            f.write_str("route:")?;
        }
        f.write_str(&self.action)?;
        if let Some(l) = &self.log {
            write!(f, "_{l}")?;
        }
        write!(
            f,
            " {} {} {} {} {}",
            self.protocol, self.dport, self.dst, self.sport, self.src
        )?;
        if self.dapp.is_some() || self.sapp.is_some() {
            let app = |a: &Option<String>| a.as_deref().unwrap_or("-").replace(' ', "%20");
            write!(f, " {} {}", app(&self.dapp), app(&self.sapp))?;
        }
        match (&self.iface_in, &self.iface_out) {
            (Some(i), Some(o)) => write!(f, " in_{i}!out_{o}")?,
            (Some(i), None) => write!(f, " in_{i}")?,
            (None, Some(o)) => write!(f, " out_{o}")?,
            (None, None) => write!(f, " {}", self.direction)?,
        }
        if let Some(c) = &self.comment_hex {
            write!(f, " comment={c}")?;
        }
        Ok(())
    }
}

/// Lower-case hex of the UTF-8 bytes, as ufw stores comments.
pub fn encode_hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The text of a hex-encoded comment; `None` unless it is valid hex of valid UTF-8.
pub fn decode_hex(hex: &str) -> Option<String> {
    if hex.len() & 1 == 1 || !hex.is_ascii() {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED_V4: &str = include_str!("../tests/fixtures/mixed-user.rules");
    const MIXED_V6: &str = include_str!("../tests/fixtures/mixed-user6.rules");
    const STOCK_V4: &str = include_str!("../tests/fixtures/stock-user.rules");
    const STOCK_V6: &str = include_str!("../tests/fixtures/stock-user6.rules");

    fn tuple_lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.starts_with(TUPLE_MARK)).collect()
    }

    #[test]
    fn stock_files_have_no_rules() {
        assert_eq!(parse_rules(STOCK_V4, false).unwrap(), vec![]);
        assert_eq!(parse_rules(STOCK_V6, true).unwrap(), vec![]);
    }

    #[test]
    fn captured_files_round_trip_line_for_line() {
        for (text, v6) in [(MIXED_V4, false), (MIXED_V6, true)] {
            let rules = parse_rules(text, v6).unwrap();
            let rendered: Vec<String> = rules.iter().map(Tuple::to_string).collect();
            assert_eq!(rendered, tuple_lines(text));
            assert!(rules.iter().all(|r| r.v6 == v6));
        }
    }

    #[test]
    fn captured_files_parse_into_fields() {
        let v4 = parse_rules(MIXED_V4, false).unwrap();
        let v6 = parse_rules(MIXED_V6, true).unwrap();
        insta::assert_debug_snapshot!("mixed_v4", v4);
        insta::assert_debug_snapshot!("mixed_v6", v6);
    }

    #[test]
    fn captured_files_become_ufw_commands() {
        let mut all = parse_rules(MIXED_V4, false).unwrap();
        all.extend(parse_rules(MIXED_V6, true).unwrap());
        let cmds: Vec<String> = all
            .iter()
            .map(|t| format!("ufw {}", t.cli_args(&[]).unwrap().join(" ")))
            .collect();
        insta::assert_snapshot!("mixed_commands", cmds.join("\n"));
    }

    #[test]
    fn comments_decode_and_encode() {
        assert_eq!(encode_hex("cf-allowlist"), "63662d616c6c6f776c697374");
        assert_eq!(
            decode_hex("736d747020226f757422").as_deref(),
            Some("smtp \"out\"")
        );
        assert_eq!(decode_hex("6"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("ff"), None, "not UTF-8");
    }

    #[test]
    fn host_address_and_prefix_form_are_one_key() {
        let line = "### tuple ### allow tcp 80,443 0.0.0.0/0 any 1.2.3.4 in";
        let a = parse_rules(line, false).unwrap().remove(0);
        let mut b = a.clone();
        b.src = "1.2.3.4/32".into();
        b.action = "deny".into();
        b.comment_hex = Some(encode_hex("x"));
        assert_eq!(a.key(), b.key());
        b.dport = "443".into();
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn malformed_tuples_are_refused_with_the_line() {
        for bad in [
            "### tuple ### allow tcp 80 0.0.0.0/0 any",
            "### tuple ### allow tcp 80 0.0.0.0/0 any 1.2.3.0/24 sideways",
            "### tuple ### allow tcp 80 0.0.0.0/0 any 1.2.3.0/24 in comment=zz",
        ] {
            let err = parse_rules(&format!("*filter\n{bad}\n"), false).unwrap_err();
            assert_eq!(err.line, 2, "{bad}");
        }
    }

    #[test]
    fn unparsable_addresses_are_never_passed_to_ufw() {
        let mut t = parse_rules(
            "### tuple ### allow tcp 80 0.0.0.0/0 any 010.1.2.0/24 in",
            false,
        )
        .unwrap()
        .remove(0);
        assert!(t.cli_args(&[]).is_err());
        t.src = "10.1.2.0/24".into();
        t.dport = "80;reboot".into();
        assert!(t.cli_args(&[]).is_err());
    }
}
